//! Small builders for core tests (`mk_node`, `mk_pod`, `unit`).

use super::policy::{ResourceKind, Unit};
use super::quantity::{GPU, Resources};
use super::snapshot::{Labels, Node, Pod, PodPhase};
use super::time::Time;

pub fn t(secs: i64) -> Time {
    Time::from_secs(secs)
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub fn mk_node(name: &str, l: &[(&str, &str)], gpus: i64) -> Node {
    Node {
        name: name.to_owned(),
        labels: labels(l),
        allocatable: Resources::new().with(GPU, gpus).with("cpu", 64),
        unschedulable: false,
    }
}

/// A pending pod in namespace `ns` whose UID is its name, created at t=1000 s.
pub fn mk_pod(name: &str, l: &[(&str, &str)], gpus: i64) -> Pod {
    Pod {
        uid: name.to_owned(),
        namespace: "ns".to_owned(),
        name: name.to_owned(),
        labels: labels(l),
        requests: Resources::new().with(GPU, gpus),
        phase: PodPhase::Pending,
        created: t(1000),
        ..Pod::default()
    }
}

pub fn bound(mut pod: Pod, node: &str) -> Pod {
    pod.node = Some(node.to_owned());
    pod.phase = PodPhase::Running;
    pod
}

/// An assumed (not yet bound) one-GPU reservation of pod `pod` in unit
/// `unit` of policy `ns/llm`, live until `expires`.
pub fn assumed(pod: &str, unit: usize, expires: Time) -> super::ledger::Reservation {
    super::ledger::Reservation {
        namespace: "ns".into(),
        pod_name: pod.into(),
        policy: super::policy::PolicyKey {
            namespace: "ns".into(),
            name: "llm".into(),
        },
        unit,
        group: super::policy::GroupKey::default(),
        requests: Resources::new().with(GPU, 1),
        node: None,
        expires,
    }
}

pub fn unit(name: &str, selector: &[(&str, &str)], max: Option<u32>) -> Unit {
    Unit {
        name: name.to_owned(),
        resource: ResourceKind::Ecs,
        node_selector: labels(selector),
        max,
        max_resources: Resources::new(),
        pod_labels: Labels::new(),
        pod_annotations: Labels::new(),
    }
}
