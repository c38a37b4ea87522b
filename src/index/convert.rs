//! Conversion of Kubernetes API objects into the decision core's types.
//!
//! Only what decisions read is kept: a pod keeps its labels, the annotations
//! Spillway reads, its effective requests, node, phase, priority and times —
//! not its spec — so tens of thousands of pods stay small in memory.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as k8s;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::decision::quantity::{Resources, parse_quantity};
use crate::decision::snapshot::{Labels, Node, Pod, PodPhase};
use crate::decision::time::{Time, parse_rfc3339};

/// Pod annotation holding the pod's wait clock (RFC 3339): when it first had
/// to wait under `TimeoutOrExceedMax`, `ExceedMax`, `LackResourceAndNoTerminating`
/// or `BeforeNextUnit`. Stored in the API server so restarts keep it.
pub const WAIT_SINCE_ANNOTATION: &str = "scheduling.spillway.io/wait-since";

/// Annotations never kept in the index (large, and never read by decisions).
const DROPPED_ANNOTATIONS: [&str; 1] = ["kubectl.kubernetes.io/last-applied-configuration"];

/// Why an object could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// A required metadata field is missing.
    #[error("{kind} has no metadata.{field}")]
    MissingField {
        /// Object kind.
        kind: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// A resource quantity does not parse.
    #[error("{kind} {name}: {field}: {source}")]
    Quantity {
        /// Object kind.
        kind: &'static str,
        /// Object name.
        name: String,
        /// Which quantity.
        field: String,
        /// The parse error.
        #[source]
        source: crate::decision::quantity::QuantityError,
    },
}

impl ConvertError {
    /// A stable label for metrics.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::MissingField { .. } => "missing_field",
            Self::Quantity { .. } => "bad_quantity",
        }
    }
}

fn labels(map: Option<&BTreeMap<String, String>>) -> Labels {
    map.cloned().unwrap_or_default()
}

fn resources(
    kind: &'static str,
    name: &str,
    field: &str,
    list: Option<&BTreeMap<String, Quantity>>,
) -> Result<Resources, ConvertError> {
    let mut out = Resources::new();
    for (res, q) in list.into_iter().flatten() {
        let v = parse_quantity(&q.0).map_err(|source| ConvertError::Quantity {
            kind,
            name: name.to_owned(),
            field: format!("{field}[{res}]"),
            source,
        })?;
        out.set(res, v);
    }
    Ok(out)
}

fn time(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> Time {
    Time::from_millis(t.0.as_millisecond())
}

/// Converts a Node.
///
/// # Errors
/// [`ConvertError`] for a nameless node or a malformed allocatable quantity.
pub fn node(n: &k8s::Node) -> Result<Node, ConvertError> {
    let name = n.metadata.name.clone().ok_or(ConvertError::MissingField {
        kind: "Node",
        field: "name",
    })?;
    let allocatable = resources(
        "Node",
        &name,
        "status.allocatable",
        n.status.as_ref().and_then(|s| s.allocatable.as_ref()),
    )?;
    Ok(Node {
        labels: labels(n.metadata.labels.as_ref()),
        allocatable,
        unschedulable: n
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false),
        name,
    })
}

/// A container's requests, with limits standing in for missing requests the
/// way the API server defaults them (GPUs are often given as limits only).
fn container_requests(
    pod: &str,
    field: &str,
    c: &k8s::Container,
) -> Result<Resources, ConvertError> {
    let res = c.resources.as_ref();
    let mut out = resources(
        "Pod",
        pod,
        &format!("{field}.resources.limits"),
        res.and_then(|r| r.limits.as_ref()),
    )?;
    let requests = resources(
        "Pod",
        pod,
        &format!("{field}.resources.requests"),
        res.and_then(|r| r.requests.as_ref()),
    )?;
    for (k, v) in requests.iter() {
        out.set(k, v);
    }
    Ok(out)
}

/// Effective requests of a pod spec, as kube-scheduler computes them: the
/// larger of (app containers + restartable init "sidecars") and, for each
/// regular init container, its requests plus the sidecars started before it;
/// plus pod overhead.
fn pod_requests(name: &str, spec: &k8s::PodSpec) -> Result<Resources, ConvertError> {
    let mut sum = Resources::new();
    for (i, c) in spec.containers.iter().enumerate() {
        sum.add(&container_requests(
            name,
            &format!("spec.containers[{i}]"),
            c,
        )?);
    }
    let mut sidecars = Resources::new();
    let mut init_peak = Resources::new();
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let r = container_requests(name, &format!("spec.initContainers[{i}]"), c)?;
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars.add(&r);
            sum.add(&r);
        } else {
            let mut during = sidecars.clone();
            during.add(&r);
            for (k, v) in during.iter() {
                if v > init_peak.get(k) {
                    init_peak.set(k, v);
                }
            }
        }
    }
    for (k, v) in init_peak.iter() {
        if v > sum.get(k) {
            sum.set(k, v);
        }
    }
    sum.add(&resources(
        "Pod",
        name,
        "spec.overhead",
        spec.overhead.as_ref(),
    )?);
    Ok(sum)
}

/// Converts a Pod. A pod without a UID (a manifest file, not an API object)
/// gets `fallback_uid`; without a creation time it is taken as created at
/// `fallback_created`.
///
/// # Errors
/// [`ConvertError`] for a nameless pod or a malformed quantity.
pub fn pod(
    p: &k8s::Pod,
    fallback_uid: Option<&str>,
    fallback_created: Time,
) -> Result<Pod, ConvertError> {
    let meta = &p.metadata;
    let name = meta.name.clone().ok_or(ConvertError::MissingField {
        kind: "Pod",
        field: "name",
    })?;
    let uid = meta
        .uid
        .clone()
        .or_else(|| fallback_uid.map(str::to_owned))
        .ok_or(ConvertError::MissingField {
            kind: "Pod",
            field: "uid",
        })?;
    let spec = p.spec.clone().unwrap_or_default();
    let requests = pod_requests(&name, &spec)?;
    let phase = match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Running") => PodPhase::Running,
        Some("Succeeded") => PodPhase::Succeeded,
        Some("Failed") => PodPhase::Failed,
        Some("Unknown") => PodPhase::Unknown,
        _ => PodPhase::Pending,
    };
    let mut annotations = labels(meta.annotations.as_ref());
    for a in DROPPED_ANNOTATIONS {
        annotations.remove(a);
    }
    Ok(Pod {
        uid,
        namespace: meta
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned()),
        name,
        labels: labels(meta.labels.as_ref()),
        annotations,
        requests,
        node: spec.node_name.clone().filter(|n| !n.is_empty()),
        phase,
        priority: spec.priority.unwrap_or(0),
        created: meta
            .creation_timestamp
            .as_ref()
            .map_or(fallback_created, time),
        deleting: meta.deletion_timestamp.as_ref().map(time),
        never_preempts: spec.preemption_policy.as_deref() == Some("Never"),
        controlled: meta
            .owner_references
            .as_ref()
            .is_some_and(|o| o.iter().any(|r| r.controller == Some(true))),
    })
}

/// The pod's persisted wait clock, if it has a valid one. A malformed value
/// is ignored (the clock restarts) rather than trusted.
#[must_use]
pub fn wait_since(pod: &Pod) -> Option<Time> {
    pod.annotations
        .get(WAIT_SINCE_ANNOTATION)
        .and_then(|v| parse_rfc3339(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::quantity::GPU;

    fn pod_json(v: serde_json::Value) -> k8s::Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn gpu_limits_stand_in_for_missing_requests() {
        let p = pod_json(serde_json::json!({
            "metadata": {"name": "a", "uid": "u"},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "2"}, "requests": {"cpu": "500m"}}}]}
        }));
        let got = pod(&p, None, Time::default()).unwrap();
        assert_eq!(got.requests.get(GPU), 2000);
        assert_eq!(got.requests.get("cpu"), 500);
        assert_eq!(got.namespace, "default");
    }

    #[test]
    fn init_containers_and_sidecars_follow_the_scheduler_rule() {
        let p = pod_json(serde_json::json!({
            "metadata": {"name": "a", "uid": "u"},
            "spec": {
                "initContainers": [
                    {"name": "sidecar", "restartPolicy": "Always", "resources": {"requests": {"cpu": "1"}}},
                    {"name": "download", "resources": {"requests": {"cpu": "4"}}}
                ],
                "containers": [{"name": "c", "resources": {"requests": {"cpu": "2", "nvidia.com/gpu": "1"}}}],
                "overhead": {"cpu": "100m"}
            }
        }));
        let got = pod(&p, None, Time::default()).unwrap();
        // max(app 2 + sidecar 1 = 3, init 4 + sidecar 1 = 5) + overhead 0.1
        assert_eq!(got.requests.get("cpu"), 5100);
        assert_eq!(got.requests.get(GPU), 1000);
    }

    #[test]
    fn malformed_objects_are_errors_not_panics() {
        let p = pod_json(serde_json::json!({"metadata": {"uid": "u"}}));
        assert!(matches!(
            pod(&p, None, Time::default()),
            Err(ConvertError::MissingField { field: "name", .. })
        ));
        let p = pod_json(serde_json::json!({
            "metadata": {"name": "a", "uid": "u"},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"nvidia.com/gpu": "lots"}}}]}
        }));
        let e = pod(&p, None, Time::default()).unwrap_err();
        assert_eq!(e.metric_label(), "bad_quantity");
        assert!(
            e.to_string()
                .contains("spec.containers[0].resources.requests[nvidia.com/gpu]"),
            "{e}"
        );
    }

    #[test]
    fn real_scheduler_fixture_nodes_convert() {
        let raw = include_str!("../../tests/fixtures/nodes-np-local-np-cloud.json");
        let list: k8s_openapi::List<k8s::Node> = serde_json::from_str(raw).unwrap();
        let nodes: Vec<Node> = list.items.iter().map(|n| node(n).unwrap()).collect();
        assert_eq!(nodes.len(), 3);
        assert!(nodes.iter().all(|n| n.allocatable.get(GPU) == 8000));
        let local = nodes.iter().find(|n| n.name == "gpu-local-1").unwrap();
        assert_eq!(local.labels["alibabacloud.com/nodepool-id"], "np-local");
    }
}
