//! Wire types of the scheduler-extender protocol and the answers built from
//! core decisions.
//!
//! Field names are Go's (the upstream structs have no json tags); embedded
//! Pods and Nodes are ordinary Kubernetes JSON. Two request shapes exist:
//! with `nodeCacheCapable: true` the scheduler sends node names
//! (`NodeNames`) and expects names back; otherwise it sends full Nodes
//! (`Nodes.items`) and expects a NodeList back. Every answer is a subset of
//! the nodes the scheduler sent, in its order — the scheduler rejects
//! anything else.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1 as k8s;
use serde::{Deserialize, Serialize};

use crate::decision::filter::FilterOutcome;
use crate::decision::reasons::NodeReasons;
use crate::decision::score::NodeScore;

/// `v1.NodeList` as the scheduler sends it (`metadata` and `items` only).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeList {
    /// List metadata (empty in practice).
    #[serde(default)]
    pub metadata: serde_json::Value,
    /// The nodes.
    #[serde(default)]
    pub items: Vec<k8s::Node>,
}

/// `ExtenderArgs`: the body of filter and prioritize calls.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderArgs {
    /// The pod being scheduled.
    pub pod: Box<k8s::Pod>,
    /// Candidate nodes, when the extender is not `nodeCacheCapable`.
    #[serde(default)]
    pub nodes: Option<NodeList>,
    /// Candidate node names, when it is.
    #[serde(default)]
    pub node_names: Option<Vec<String>>,
}

impl ExtenderArgs {
    /// The candidate node names, whichever form the scheduler used
    /// (borrowed when it sent names).
    #[must_use]
    pub fn candidate_names(&self) -> Cow<'_, [String]> {
        match (&self.node_names, &self.nodes) {
            (Some(names), _) => Cow::Borrowed(names.as_slice()),
            (None, Some(list)) => Cow::Owned(
                list.items
                    .iter()
                    .filter_map(|n| n.metadata.name.clone())
                    .collect(),
            ),
            (None, None) => Cow::Borrowed(&[]),
        }
    }
}

/// `ExtenderFilterResult`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderFilterResult {
    /// Passing nodes as a NodeList (not `nodeCacheCapable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodeList>,
    /// Passing node names (`nodeCacheCapable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_names: Option<Vec<String>>,
    /// Nodes that failed, with reasons; preemption may help.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed_nodes: BTreeMap<String, String>,
    /// Nodes that failed where preemption cannot help.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed_and_unresolvable_nodes: BTreeMap<String, String>,
    /// A call-level error (fails scheduling of the pod).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// One entry of the prioritize answer (`HostPriorityList` is a bare array).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostPriority {
    /// Node name.
    pub host: String,
    /// 0..=10.
    pub score: i64,
}

/// `ExtenderBindingArgs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderBindingArgs {
    /// Pod name.
    pub pod_name: String,
    /// Pod namespace.
    pub pod_namespace: String,
    /// Pod UID.
    #[serde(rename = "PodUID")]
    pub pod_uid: String,
    /// The node chosen.
    pub node: String,
}

/// `ExtenderBindingResult`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderBindingResult {
    /// Empty on success.
    #[serde(default)]
    pub error: String,
}

/// `Victims`: full pods (not `nodeCacheCapable`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Victims {
    /// Pods to evict.
    #[serde(default)]
    pub pods: Vec<k8s::Pod>,
    /// PodDisruptionBudget violations.
    #[serde(default, rename = "NumPDBViolations")]
    pub num_pdb_violations: i64,
}

/// A victim by UID.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaPod {
    /// Pod UID.
    #[serde(rename = "UID")]
    pub uid: String,
}

/// `MetaVictims`: victims by UID.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MetaVictims {
    /// Pods to evict.
    #[serde(default)]
    pub pods: Vec<MetaPod>,
    /// PodDisruptionBudget violations.
    #[serde(default, rename = "NumPDBViolations")]
    pub num_pdb_violations: i64,
}

/// `ExtenderPreemptionArgs`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderPreemptionArgs {
    /// The preemptor.
    pub pod: Box<k8s::Pod>,
    /// Candidates with full victim pods (not `nodeCacheCapable`).
    #[serde(default)]
    pub node_name_to_victims: Option<BTreeMap<String, Victims>>,
    /// Candidates with victim UIDs (`nodeCacheCapable`).
    #[serde(default)]
    pub node_name_to_meta_victims: Option<BTreeMap<String, MetaVictims>>,
}

impl ExtenderPreemptionArgs {
    /// Candidate node names in either form.
    #[must_use]
    pub fn candidate_names(&self) -> Vec<String> {
        match (&self.node_name_to_meta_victims, &self.node_name_to_victims) {
            (Some(m), _) => m.keys().cloned().collect(),
            (None, Some(v)) => v.keys().cloned().collect(),
            (None, None) => Vec::new(),
        }
    }
}

/// `ExtenderPreemptionResult`: always the Meta (UID) form.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderPreemptionResult {
    /// Candidates the extender keeps.
    #[serde(default)]
    pub node_name_to_meta_victims: BTreeMap<String, MetaVictims>,
}

/// `ExtenderFilterResult` as it is written: borrowed from the request and
/// the outcome, so a 5,000-node answer copies no node and no reason.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct FilterAnswer<'a> {
    /// Passing nodes as a NodeList (not `nodeCacheCapable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodeListRef<'a>>,
    /// Passing node names (`nodeCacheCapable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_names: Option<&'a [String]>,
    /// Nodes that failed, with reasons; preemption may help.
    #[serde(skip_serializing_if = "no_nodes")]
    pub failed_nodes: &'a NodeReasons,
    /// Nodes that failed where preemption cannot help.
    #[serde(skip_serializing_if = "no_nodes")]
    pub failed_and_unresolvable_nodes: &'a NodeReasons,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde passes a reference to the field
fn no_nodes(r: &&NodeReasons) -> bool {
    r.is_empty()
}

/// A `v1.NodeList` of borrowed nodes.
#[derive(Debug, Serialize)]
pub struct NodeListRef<'a> {
    /// The request's list metadata.
    pub metadata: &'a serde_json::Value,
    /// The passing nodes, in request order.
    pub items: Vec<&'a k8s::Node>,
}

/// The filter answer in the form the scheduler used: names for names, a
/// NodeList for a NodeList, always a subset of the request in its order.
#[must_use]
pub fn filter_result<'a>(args: &'a ExtenderArgs, outcome: &'a FilterOutcome) -> FilterAnswer<'a> {
    let mut out = FilterAnswer {
        nodes: None,
        node_names: None,
        failed_nodes: &outcome.failed,
        failed_and_unresolvable_nodes: &outcome.unresolvable,
    };
    match (&args.node_names, &args.nodes) {
        // The core's eligible list is the request's names, filtered, in order.
        (Some(_), _) | (None, None) => out.node_names = Some(&outcome.eligible),
        (None, Some(list)) => {
            let eligible: HashSet<&str> = outcome.eligible.iter().map(String::as_str).collect();
            out.nodes = Some(NodeListRef {
                metadata: &list.metadata,
                items: list
                    .items
                    .iter()
                    .filter(|n| {
                        n.metadata
                            .name
                            .as_deref()
                            .is_some_and(|x| eligible.contains(x))
                    })
                    .collect(),
            });
        }
    }
    out
}

/// The prioritize answer from core scores.
#[must_use]
pub fn priority_list(scores: &[NodeScore]) -> Vec<HostPriority> {
    scores
        .iter()
        .map(|s| HostPriority {
            host: s.node.clone(),
            score: i64::from(s.score),
        })
        .collect()
}

/// The preempt answer: the candidates the core allows, victims as UIDs.
#[must_use]
pub fn preemption_result(
    args: &ExtenderPreemptionArgs,
    allowed: &[String],
) -> ExtenderPreemptionResult {
    let keep = |n: &String| allowed.contains(n);
    let mut out = BTreeMap::new();
    if let Some(meta) = &args.node_name_to_meta_victims {
        for (node, v) in meta.iter().filter(|(n, _)| keep(n)) {
            out.insert(node.clone(), v.clone());
        }
    } else if let Some(full) = &args.node_name_to_victims {
        for (node, v) in full.iter().filter(|(n, _)| keep(n)) {
            out.insert(
                node.clone(),
                MetaVictims {
                    pods: v
                        .pods
                        .iter()
                        .filter_map(|p| p.metadata.uid.clone())
                        .map(|uid| MetaPod { uid })
                        .collect(),
                    num_pdb_violations: v.num_pdb_violations,
                },
            );
        }
    }
    ExtenderPreemptionResult {
        node_name_to_meta_victims: out,
    }
}
