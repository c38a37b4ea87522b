//! A cluster-autoscaler scale-up for the expander's benchmark: the
//! synthetic cluster of [`crate::load`], `pending` pending replicas of its
//! governed workload, and a BestOptions request over `groups` node groups
//! (one in five a data-center group, the rest cloud groups at different
//! prices), every option naming every pending pod, as cluster-autoscaler
//! sends them when every group could host every pod.

use prost::Message;

use crate::decision::time::Time;
use crate::expander::decode::pod_object;
use crate::expander::proto::grpcplugin::{BestOptionsRequest, Option as PbOption};
use crate::expander::proto::k8s::io::api::core::v1 as pb;
use crate::expander::proto::k8s::io::apimachinery::pkg::api::resource::Quantity;
use crate::expander::proto::k8s::io::apimachinery::pkg::apis::meta::v1 as meta;
use crate::extender::backend::Index;
use crate::index::convert;

/// The clock of the benchmark.
pub const NOW: Time = Time::from_secs(1_800_000_000);

fn q(s: &str) -> Quantity {
    Quantity {
        string: Some(s.to_owned()),
    }
}

fn strings(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Node group `i`'s id and pool.
#[must_use]
pub fn group(i: usize) -> (String, &'static str) {
    let pool = if i.is_multiple_of(5) { "dc" } else { "cloud" };
    (format!("eks-gpu-{pool}-{i:03}"), pool)
}

/// The template node of node group `i`, as cluster-autoscaler builds it.
#[must_use]
pub fn template(i: usize) -> pb::Node {
    let (id, pool) = group(i);
    let name = format!("template-node-for-{id}-{i}");
    let res: std::collections::HashMap<String, Quantity> = [
        ("cpu", "96"),
        ("memory", "1152Gi"),
        ("nvidia.com/gpu", "8"),
        ("pods", "110"),
        ("ephemeral-storage", "7000Gi"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), q(v)))
    .collect();
    pb::Node {
        metadata: Some(meta::ObjectMeta {
            name: Some(name.clone()),
            labels: strings(&[
                ("kubernetes.io/arch", "amd64"),
                ("kubernetes.io/os", "linux"),
                ("kubernetes.io/hostname", &name),
                ("node.kubernetes.io/instance-type", "p4d.24xlarge"),
                ("topology.kubernetes.io/region", "us-west-2"),
                ("nvidia.com/gpu.product", "NVIDIA-A100-SXM4-40GB"),
                ("eks.amazonaws.com/nodegroup", &id),
                ("spillway.io/pool", pool),
            ]),
            ..meta::ObjectMeta::default()
        }),
        spec: Some(pb::NodeSpec::default()),
        status: Some(pb::NodeStatus {
            capacity: res.clone(),
            allocatable: res,
        }),
    }
}

/// Pending replica `k` of the governed workload, as cluster-autoscaler
/// sends it.
#[must_use]
pub fn pending(k: usize) -> pb::Pod {
    let hash = "7d9f6c5b4";
    let container = |name: &str, cpu: &str, mem: &str, gpu: Option<&str>| pb::Container {
        name: Some(name.to_owned()),
        resources: Some(pb::ResourceRequirements {
            requests: [("cpu", cpu), ("memory", mem)]
                .iter()
                .chain(gpu.map(|g| ("nvidia.com/gpu", g)).iter())
                .map(|(k, v)| ((*k).to_owned(), q(v)))
                .collect(),
            limits: gpu
                .map(|g| [("nvidia.com/gpu".to_owned(), q(g))].into())
                .unwrap_or_default(),
        }),
        restart_policy: None,
    };
    pb::Pod {
        metadata: Some(meta::ObjectMeta {
            name: Some(format!("qwen-chat-{hash}-{k:05}")),
            generate_name: Some(format!("qwen-chat-{hash}-")),
            namespace: Some(super::NAMESPACE.to_owned()),
            uid: Some(format!("44444444-0000-4000-8000-{k:012}")),
            creation_timestamp: Some(meta::Time {
                seconds: Some(NOW.as_millis() / 1000 - 600 + i64::try_from(k).unwrap_or(0)),
                nanos: Some(0),
            }),
            labels: strings(&[
                ("app", "qwen-chat"),
                ("app.kubernetes.io/name", "qwen-chat"),
                ("pod-template-hash", hash),
            ]),
            annotations: strings(&[
                ("prometheus.io/scrape", "true"),
                ("prometheus.io/port", "8000"),
            ]),
            owner_references: vec![meta::OwnerReference {
                kind: Some("ReplicaSet".to_owned()),
                name: Some(format!("qwen-chat-{hash}")),
                uid: Some("22222222-0000-4000-8000-000000000000".to_owned()),
                api_version: Some("apps/v1".to_owned()),
                controller: Some(true),
            }],
            ..meta::ObjectMeta::default()
        }),
        spec: Some(pb::PodSpec {
            containers: vec![
                container("server", "4", "32Gi", Some("1")),
                container("metrics", "100m", "64Mi", None),
            ],
            priority: Some(0),
            ..pb::PodSpec::default()
        }),
        status: Some(pb::PodStatus {
            phase: Some("Pending".to_owned()),
        }),
    }
}

/// The index (`nodes` nodes of the synthetic cluster with `pods_per_node`
/// pods each, its policy, and the `pending` pods) and the request.
#[must_use]
pub fn scale_up(
    nodes: usize,
    pods_per_node: usize,
    groups: usize,
    pending_pods: usize,
) -> (Index, BestOptionsRequest) {
    let mut index = Index::default();
    super::fill(&mut index, nodes, pods_per_node);
    let pods: Vec<pb::Pod> = (0..pending_pods).map(pending).collect();
    for p in &pods {
        if let Ok(pod) = convert::pod(&pod_object(p), None, NOW) {
            index.snapshot.upsert_pod(pod);
        }
    }
    let pod_bytes: Vec<Vec<u8>> = pods.iter().map(Message::encode_to_vec).collect();
    let req = BestOptionsRequest {
        options: (0..groups)
            .map(|i| PbOption {
                node_group_id: group(i).0,
                node_count: i32::try_from(pending_pods.div_ceil(8)).unwrap_or(i32::MAX),
                debug: String::new(),
                pod_bytes: pod_bytes.clone(),
                ..PbOption::default()
            })
            .collect(),
        node_bytes_map: (0..groups)
            .map(|i| (group(i).0, template(i).encode_to_vec()))
            .collect(),
        ..BestOptionsRequest::default()
    };
    (index, req)
}
