//! cluster-autoscaler's request, decoded into the core's terms.
//!
//! Node templates and pending pods arrive as Kubernetes protobuf (`v1.Node`,
//! `v1.Pod`), either as bytes (`nodeBytesMap`, `podBytes`) or embedded (the
//! deprecated `nodeMap`, `pod`). Both are turned into the `k8s-openapi`
//! objects the watches deliver and converted by the same
//! [`crate::index::convert`] functions, so a pod's effective requests
//! (init containers, sidecars, overhead, limits standing in for requests)
//! are computed once, the same way everywhere.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1 as k8s;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as k8s_meta;
use prost::Message;

use super::proto::grpcplugin::BestOptionsRequest;
use super::proto::k8s::io::api::core::v1 as pb;
use super::proto::k8s::io::apimachinery::pkg::api::resource::Quantity;
use super::proto::k8s::io::apimachinery::pkg::apis::meta::v1 as pb_meta;
use crate::decision::expand::{ExpansionOption, NodeGroup, node_price_micros};
use crate::decision::quantity::GPU;
use crate::decision::snapshot::Pod;
use crate::decision::time::Time;
use crate::index::convert;

/// Why a request cannot be ranked. The expander then answers every option
/// unranked, as cluster-autoscaler would choose without it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// An option names a node group with no template node in the request.
    #[error(
        "options[{index}] names node group {group:?}, which has no template node in nodeBytesMap or nodeMap"
    )]
    UnknownGroup {
        /// Position of the option.
        index: usize,
        /// The node group.
        group: String,
    },
    /// A template node's bytes are not a `v1.Node`.
    #[error("nodeBytesMap[{group:?}] is not a protobuf v1.Node: {error}")]
    NodeBytes {
        /// The node group.
        group: String,
        /// The protobuf error.
        error: String,
    },
    /// A pending pod's bytes are not a `v1.Pod`.
    #[error("options[{index}] ({group:?}) podBytes[{pod}] is not a protobuf v1.Pod: {error}")]
    PodBytes {
        /// Position of the option.
        index: usize,
        /// Its node group.
        group: String,
        /// Position of the pod.
        pod: usize,
        /// The protobuf error.
        error: String,
    },
    /// A decoded object the core cannot take (no name, a bad quantity).
    #[error("{what}: {error}")]
    Convert {
        /// Which object.
        what: String,
        /// The conversion error.
        error: String,
    },
    /// A negative node count.
    #[error("options[{index}] ({group:?}) nodeCount is {count}; it must be 0 or more")]
    NodeCount {
        /// Position of the option.
        index: usize,
        /// Its node group.
        group: String,
        /// The count.
        count: i32,
    },
}

/// The request in the core's terms.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Node groups by id, from their template nodes.
    pub groups: BTreeMap<String, NodeGroup>,
    /// CA's options, pods named by UID.
    pub options: Vec<ExpansionOption>,
    /// Every pod the options name, once.
    pub pods: Vec<Pod>,
}

fn quantities(m: &HashMap<String, Quantity>) -> Option<BTreeMap<String, K8sQuantity>> {
    (!m.is_empty()).then(|| {
        m.iter()
            .map(|(k, v)| (k.clone(), K8sQuantity(v.string.clone().unwrap_or_default())))
            .collect()
    })
}

fn strings(m: &HashMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!m.is_empty()).then(|| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

fn time(t: &pb_meta::Time) -> Option<k8s_meta::Time> {
    let ts =
        k8s_openapi::jiff::Timestamp::new(t.seconds.unwrap_or(0), t.nanos.unwrap_or(0)).ok()?;
    Some(k8s_meta::Time(ts))
}

fn meta(m: Option<&pb_meta::ObjectMeta>) -> k8s_meta::ObjectMeta {
    let Some(m) = m else {
        return k8s_meta::ObjectMeta::default();
    };
    k8s_meta::ObjectMeta {
        name: m.name.clone(),
        generate_name: m.generate_name.clone(),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        creation_timestamp: m.creation_timestamp.as_ref().and_then(time),
        deletion_timestamp: m.deletion_timestamp.as_ref().and_then(time),
        labels: strings(&m.labels),
        annotations: strings(&m.annotations),
        owner_references: (!m.owner_references.is_empty()).then(|| {
            m.owner_references
                .iter()
                .map(|o| k8s_meta::OwnerReference {
                    api_version: o.api_version.clone().unwrap_or_default(),
                    kind: o.kind.clone().unwrap_or_default(),
                    name: o.name.clone().unwrap_or_default(),
                    uid: o.uid.clone().unwrap_or_default(),
                    controller: o.controller,
                    ..k8s_meta::OwnerReference::default()
                })
                .collect()
        }),
        ..k8s_meta::ObjectMeta::default()
    }
}

fn container(c: &pb::Container) -> k8s::Container {
    k8s::Container {
        name: c.name.clone().unwrap_or_default(),
        resources: c.resources.as_ref().map(|r| k8s::ResourceRequirements {
            limits: quantities(&r.limits),
            requests: quantities(&r.requests),
            ..k8s::ResourceRequirements::default()
        }),
        restart_policy: c.restart_policy.clone(),
        ..k8s::Container::default()
    }
}

/// A protobuf `v1.Node` as the API object (the fields Spillway reads).
#[must_use]
pub fn node_object(n: &pb::Node) -> k8s::Node {
    k8s::Node {
        metadata: meta(n.metadata.as_ref()),
        spec: n.spec.as_ref().map(|s| k8s::NodeSpec {
            unschedulable: s.unschedulable,
            ..k8s::NodeSpec::default()
        }),
        status: n.status.as_ref().map(|s| k8s::NodeStatus {
            allocatable: quantities(&s.allocatable).or_else(|| quantities(&s.capacity)),
            capacity: quantities(&s.capacity),
            ..k8s::NodeStatus::default()
        }),
    }
}

/// A protobuf `v1.Pod` as the API object (the fields Spillway reads).
#[must_use]
pub fn pod_object(p: &pb::Pod) -> k8s::Pod {
    let spec = p.spec.as_ref().map(|s| k8s::PodSpec {
        containers: s.containers.iter().map(container).collect(),
        init_containers: (!s.init_containers.is_empty())
            .then(|| s.init_containers.iter().map(container).collect()),
        node_selector: strings(&s.node_selector),
        node_name: s.node_name.clone(),
        priority: s.priority,
        preemption_policy: s.preemption_policy.clone(),
        overhead: quantities(&s.overhead),
        ..k8s::PodSpec::default()
    });
    k8s::Pod {
        metadata: meta(p.metadata.as_ref()),
        spec,
        status: p.status.as_ref().map(|s| k8s::PodStatus {
            phase: s.phase.clone(),
            ..k8s::PodStatus::default()
        }),
    }
}

/// Decodes `req`. `price` gives a node group's price per GPU-hour (0 when
/// none is configured); `now` stands in for pods without a creation time.
///
/// # Errors
/// [`DecodeError`] for anything that cannot be judged: bytes that are not
/// protobuf, a template without a name, a malformed quantity, an option of
/// a group without a template.
pub fn decode(
    req: &BestOptionsRequest,
    price: impl Fn(&str) -> f64,
    now: Time,
) -> Result<Decoded, DecodeError> {
    let mut out = Decoded::default();
    let mut templates: BTreeMap<&str, (&str, k8s::Node)> = BTreeMap::new();
    #[allow(deprecated)]
    for (group, n) in &req.node_map {
        templates.insert(group, ("nodeMap", node_object(n)));
    }
    // The current field wins where both are sent.
    for (group, bytes) in &req.node_bytes_map {
        let n = pb::Node::decode(bytes.as_slice()).map_err(|e| DecodeError::NodeBytes {
            group: group.clone(),
            error: e.to_string(),
        })?;
        templates.insert(group, ("nodeBytesMap", node_object(&n)));
    }
    for (group, (field, n)) in templates {
        let node = convert::node(&n).map_err(|e| DecodeError::Convert {
            what: format!("{field}[{group:?}]"),
            error: e.to_string(),
        })?;
        let per_gpu_hour = price(group);
        out.groups.insert(
            group.to_owned(),
            NodeGroup {
                id: group.to_owned(),
                price_per_node_hour_micros: node_price_micros(
                    per_gpu_hour,
                    node.allocatable.get(GPU),
                ),
                labels: node.labels,
                allocatable: node.allocatable,
            },
        );
    }
    // Every option names its pods again (the same pending pod in each of
    // hundreds of options): each distinct pod is decoded and converted once.
    let mut by_bytes: foldhash::HashMap<&[u8], String> = foldhash::HashMap::default();
    let mut by_uid: BTreeSet<String> = BTreeSet::new();
    let convert_pod = |index: usize, group: &str, field: &str, i: usize, p: &pb::Pod| {
        let obj = pod_object(p);
        let fallback = format!(
            "{}/{}",
            obj.metadata.namespace.as_deref().unwrap_or("default"),
            obj.metadata.name.as_deref().unwrap_or_default()
        );
        let pod = convert::pod(&obj, Some(&fallback), now).map_err(|e| DecodeError::Convert {
            what: format!("options[{index}] ({group:?}) {field}[{i}]"),
            error: e.to_string(),
        })?;
        Ok::<Pod, DecodeError>(pod)
    };
    let keep = |pod: Pod, pods: &mut Vec<Pod>, by_uid: &mut BTreeSet<String>| {
        let uid = pod.uid.clone();
        if by_uid.insert(uid.clone()) {
            pods.push(pod);
        }
        uid
    };
    for (index, o) in req.options.iter().enumerate() {
        let group = o.node_group_id.as_str();
        if !out.groups.contains_key(group) {
            return Err(DecodeError::UnknownGroup {
                index,
                group: group.to_owned(),
            });
        }
        let node_count = u32::try_from(o.node_count).map_err(|_| DecodeError::NodeCount {
            index,
            group: group.to_owned(),
            count: o.node_count,
        })?;
        let mut uids: Vec<String> = Vec::new();
        let mut named: foldhash::HashSet<String> = foldhash::HashSet::default();
        let mut add = |uid: String| {
            if named.insert(uid.clone()) {
                uids.push(uid);
            }
        };
        #[allow(deprecated)]
        for (i, p) in o.pod.iter().enumerate() {
            match p.metadata.as_ref().and_then(|m| m.uid.as_ref()) {
                Some(uid) if by_uid.contains(uid) => add(uid.clone()),
                _ => add(keep(
                    convert_pod(index, group, "pod", i, p)?,
                    &mut out.pods,
                    &mut by_uid,
                )),
            }
        }
        for (i, bytes) in o.pod_bytes.iter().enumerate() {
            if let Some(uid) = by_bytes.get(bytes.as_slice()) {
                add(uid.clone());
                continue;
            }
            let p = pb::Pod::decode(bytes.as_slice()).map_err(|e| DecodeError::PodBytes {
                index,
                group: group.to_owned(),
                pod: i,
                error: e.to_string(),
            })?;
            let uid = keep(
                convert_pod(index, group, "podBytes", i, &p)?,
                &mut out.pods,
                &mut by_uid,
            );
            by_bytes.insert(bytes.as_slice(), uid.clone());
            add(uid);
        }
        out.options.push(ExpansionOption {
            group: group.to_owned(),
            node_count,
            pods: uids,
        });
    }
    Ok(out)
}
