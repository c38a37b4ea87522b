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
use std::collections::BTreeMap;
use std::io::Write;

use k8s_openapi::api::core::v1 as k8s;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::decision::filter::FilterOutcome;
use crate::decision::reasons::NodeReasons;
use crate::decision::score::NodeScore;

/// A node name from a request: borrowed from the body unless the JSON
/// string had escapes (node names never need any in practice).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeName<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for NodeName<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NodeName<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a node name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(NodeName(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(NodeName(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// `NodeNames` of a request. The array is taken raw and split by a scanner
/// that handles what schedulers send (strings without escapes) without
/// per-element decoder calls; any other valid array (escapes, odd
/// whitespace) goes through serde_json, which also names what is wrong with
/// an invalid one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeNames<'a>(pub Vec<NodeName<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for NodeNames<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: &'de RawValue = Deserialize::deserialize(d)?;
        match split_plain_strings(raw.get()) {
            Some(names) => Ok(NodeNames(names)),
            None => serde_json::from_str(raw.get())
                .map(NodeNames)
                .map_err(de::Error::custom),
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b
        .get(i)
        .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
    {
        i += 1;
    }
    i
}

/// Splits a JSON array of escape-free strings (`s` is valid JSON: a raw
/// value) into borrowed names; `None` for anything else.
fn split_plain_strings(s: &str) -> Option<Vec<NodeName<'_>>> {
    let b = s.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'[') {
        return None;
    }
    i = skip_ws(b, i + 1);
    let mut out = Vec::with_capacity(b.len() / 24);
    if b.get(i) == Some(&b']') {
        return Some(out);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let start = i + 1;
        let end = start + memchr::memchr2(b'"', b'\\', b.get(start..)?)?;
        if b.get(end) != Some(&b'"') {
            return None;
        }
        out.push(NodeName(Cow::Borrowed(s.get(start..end)?)));
        i = skip_ws(b, end + 1);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b']') => return Some(out),
            _ => return None,
        }
    }
}

/// One Node of a full-NodeList request, kept as the scheduler's raw JSON
/// (echoed byte for byte when it passes, so no field of a newer Kubernetes
/// is lost) with its name read out.
#[derive(Clone, Debug)]
pub struct RawNode<'a> {
    /// The Node object as sent.
    pub raw: &'a RawValue,
    /// Its `metadata.name`.
    pub name: NodeName<'a>,
}

impl<'de: 'a, 'a> Deserialize<'de> for RawNode<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Meta<'a> {
            #[serde(borrow, default)]
            name: Option<NodeName<'a>>,
        }
        #[derive(Deserialize)]
        struct Head<'a> {
            #[serde(borrow, default)]
            metadata: Option<Meta<'a>>,
        }
        let raw: &'de RawValue = Deserialize::deserialize(d)?;
        let head: Head<'de> = serde_json::from_str(raw.get()).map_err(de::Error::custom)?;
        let name = head
            .metadata
            .and_then(|m| m.name)
            .ok_or_else(|| de::Error::custom("a node without metadata.name"))?;
        Ok(RawNode { raw, name })
    }
}

/// `v1.NodeList` of a request, nodes kept raw.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawNodeList<'a> {
    /// List metadata (empty in practice), echoed as sent.
    #[serde(borrow, default)]
    pub metadata: Option<&'a RawValue>,
    /// The nodes.
    #[serde(borrow, default)]
    pub items: Vec<RawNode<'a>>,
}

/// `ExtenderArgs`: the body of filter and prioritize calls, borrowing node
/// names and Node objects from the request body.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderArgs<'a> {
    /// The pod being scheduled.
    pub pod: Box<k8s::Pod>,
    /// Candidate nodes, when the extender is not `nodeCacheCapable`.
    #[serde(borrow, default)]
    pub nodes: Option<RawNodeList<'a>>,
    /// Candidate node names, when it is.
    #[serde(borrow, default)]
    pub node_names: Option<NodeNames<'a>>,
}

impl ExtenderArgs<'_> {
    /// The candidate node names, whichever form the scheduler used, in its
    /// order.
    #[must_use]
    pub fn candidate_names(&self) -> Vec<&str> {
        match (&self.node_names, &self.nodes) {
            (Some(names), _) => names.0.iter().map(|n| n.0.as_ref()).collect(),
            (None, Some(list)) => list.items.iter().map(|n| n.name.0.as_ref()).collect(),
            (None, None) => Vec::new(),
        }
    }
}

/// `v1.NodeList` as a client decodes an answer (`metadata` and `items`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeList {
    /// List metadata (empty in practice).
    #[serde(default)]
    pub metadata: serde_json::Value,
    /// The nodes.
    #[serde(default)]
    pub items: Vec<k8s::Node>,
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
    pub fn candidate_names(&self) -> Vec<&str> {
        match (&self.node_name_to_meta_victims, &self.node_name_to_victims) {
            (Some(m), _) => m.keys().map(String::as_str).collect(),
            (None, Some(v)) => v.keys().map(String::as_str).collect(),
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

/// Appends `s` as a JSON string. Node names are DNS subdomains and need no
/// escaping; anything else goes through serde_json's escaper.
#[allow(clippy::needless_bitwise_bool)] // branch-free, so the check vectorises
fn push_str(out: &mut Vec<u8>, s: &str) {
    let plain = !s.bytes().fold(false, |bad, b| {
        bad | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if plain {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// Appends each item with `write`, commas between.
fn push_joined<T>(
    out: &mut Vec<u8>,
    items: impl IntoIterator<Item = T>,
    mut write: impl FnMut(&mut Vec<u8>, T),
) {
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(out, item);
    }
}

/// Appends `"Key":{node: reason, …}` (with a leading comma) unless empty;
/// each distinct reason is escaped once.
fn push_reasons(out: &mut Vec<u8>, key: &str, reasons: &NodeReasons<'_>) {
    if reasons.is_empty() {
        return;
    }
    let encoded: Vec<Vec<u8>> = reasons
        .distinct()
        .iter()
        .map(|r| serde_json::to_vec(r).unwrap_or_else(|_| b"\"\"".to_vec()))
        .collect();
    out.reserve(
        key.len()
            + 6
            + reasons
                .entries()
                .map(|(n, r)| n.len() + 4 + encoded.get(r).map_or(2, Vec::len))
                .sum::<usize>(),
    );
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":{");
    push_joined(out, reasons.entries(), |out, (node, r)| {
        push_str(out, node);
        out.push(b':');
        out.extend_from_slice(encoded.get(r).map_or(b"\"\"".as_slice(), Vec::as_slice));
    });
    out.push(b'}');
}

/// The filter answer (`ExtenderFilterResult` JSON) in the form the
/// scheduler used: names for names, a NodeList for a NodeList (the passing
/// Node objects echoed as sent), always a subset of the request in its
/// order, then the rejected nodes with their reasons. Written directly:
/// a 5,000-node answer is a few hundred kilobytes of names and a handful of
/// distinct reasons.
#[must_use]
pub fn filter_answer(args: &ExtenderArgs<'_>, outcome: &FilterOutcome<'_>) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(64 + outcome.eligible.iter().map(|n| n.len() + 3).sum::<usize>());
    if let (None, Some(list)) = (&args.node_names, &args.nodes) {
        out.extend_from_slice(b"{\"Nodes\":{\"metadata\":");
        out.extend_from_slice(list.metadata.map_or("{}", RawValue::get).as_bytes());
        out.extend_from_slice(b",\"items\":[");
        // `eligible` is a subsequence of the items' names, in order.
        let mut want = outcome.eligible.iter().peekable();
        let passing = list
            .items
            .iter()
            .filter(|item| want.next_if(|&&n| n == item.name.0.as_ref()).is_some());
        push_joined(&mut out, passing, |out, item| {
            out.extend_from_slice(item.raw.get().as_bytes());
        });
        out.extend_from_slice(b"]}");
    } else {
        // The core's eligible list is the request's names, filtered, in order.
        out.extend_from_slice(b"{\"NodeNames\":[");
        push_joined(&mut out, &outcome.eligible, |out, n| push_str(out, n));
        out.push(b']');
    }
    push_reasons(&mut out, "FailedNodes", &outcome.failed);
    push_reasons(
        &mut out,
        "FailedAndUnresolvableNodes",
        &outcome.unresolvable,
    );
    out.push(b'}');
    out
}

/// The prioritize answer (`HostPriorityList` JSON, a bare array) from core
/// scores.
#[must_use]
pub fn priority_answer(scores: &[NodeScore<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + scores.len() * 56);
    out.push(b'[');
    push_joined(&mut out, scores, |out, s| {
        out.extend_from_slice(b"{\"Host\":");
        push_str(out, s.node);
        // Writing into a Vec cannot fail.
        let _ = write!(out, ",\"Score\":{}}}", s.score);
    });
    out.push(b']');
    out
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
