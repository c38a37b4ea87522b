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

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as k8s;
use serde::{Deserialize, Serialize};

use crate::decision::filter::FilterOutcome;
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
    /// The candidate node names, whichever form the scheduler used.
    #[must_use]
    pub fn candidate_names(&self) -> Vec<String> {
        match (&self.node_names, &self.nodes) {
            (Some(names), _) => names.clone(),
            (None, Some(list)) => list
                .items
                .iter()
                .filter_map(|n| n.metadata.name.clone())
                .collect(),
            (None, None) => Vec::new(),
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

/// The filter answer for `args` from the core's outcome: eligible nodes in
/// the scheduler's form and order, the two failure maps, no error.
#[must_use]
pub fn filter_result(args: &ExtenderArgs, outcome: &FilterOutcome) -> ExtenderFilterResult {
    let eligible: std::collections::BTreeSet<&str> =
        outcome.eligible.iter().map(String::as_str).collect();
    let mut out = ExtenderFilterResult {
        failed_nodes: outcome.failed.clone(),
        failed_and_unresolvable_nodes: outcome.unresolvable.clone(),
        ..ExtenderFilterResult::default()
    };
    match (&args.node_names, &args.nodes) {
        (Some(names), _) => {
            out.node_names = Some(
                names
                    .iter()
                    .filter(|n| eligible.contains(n.as_str()))
                    .cloned()
                    .collect(),
            );
        }
        (None, Some(list)) => {
            out.nodes = Some(NodeList {
                metadata: list.metadata.clone(),
                items: list
                    .items
                    .iter()
                    .filter(|n| {
                        n.metadata
                            .name
                            .as_deref()
                            .is_some_and(|x| eligible.contains(x))
                    })
                    .cloned()
                    .collect(),
            });
        }
        (None, None) => out.node_names = Some(Vec::new()),
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
