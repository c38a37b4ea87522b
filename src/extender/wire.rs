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

/// `NodeNames` of a request. The array is split by a scanner that handles
/// what schedulers send (strings without escapes) without per-element
/// decoder calls, into names borrowed from the body; any other valid array
/// (escapes, odd whitespace) goes through serde_json, which also names what
/// is wrong with an invalid one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeNames<'a> {
    /// Names borrowed from the request body.
    Borrowed(Vec<&'a str>),
    /// Names that had escapes, decoded.
    Owned(Vec<String>),
}

impl Default for NodeNames<'_> {
    fn default() -> Self {
        NodeNames::Borrowed(Vec::new())
    }
}

impl NodeNames<'_> {
    /// The names, in request order.
    #[must_use]
    pub fn as_strs(&self) -> Cow<'_, [&str]> {
        match self {
            NodeNames::Borrowed(v) => Cow::Borrowed(v.as_slice()),
            NodeNames::Owned(v) => Cow::Owned(v.iter().map(String::as_str).collect()),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for NodeNames<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: &'de RawValue = Deserialize::deserialize(d)?;
        match split_plain_strings(raw.get(), 0) {
            Some((names, end)) if end == raw.get().len() => Ok(NodeNames::Borrowed(names)),
            _ => serde_json::from_str::<Vec<NodeName<'_>>>(raw.get())
                .map(|v| NodeNames::Owned(v.into_iter().map(|n| n.0.into_owned()).collect()))
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

/// The index of the first byte at or after `i` that is `"`, `\\` or a
/// control character (below 0x20), or `b.len()`. Eight bytes at a time
/// (SWAR), two words per step: node names are a few dozen bytes, too short
/// for a vector search's set-up to pay off. (Wider steps measured slower:
/// the compiler moves them through vector registers and back, which
/// lengthens the chain from one name's end to the next name's search.)
#[inline]
fn next_special(b: &[u8], mut i: usize) -> usize {
    while let Some(w) = b.get(i..i + 16) {
        let (words, _) = w.as_chunks::<8>();
        let h0 = special_bytes(u64::from_le_bytes(words[0]));
        let h1 = special_bytes(u64::from_le_bytes(words[1]));
        if h0 | h1 != 0 {
            let bit = if h0 != 0 {
                h0.trailing_zeros()
            } else {
                64 + h1.trailing_zeros()
            };
            return i + (bit / 8) as usize;
        }
        i += 16;
    }
    while let Some(chunk) = b.get(i..i + 8) {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let hit = special_bytes(u64::from_le_bytes(word));
        if hit != 0 {
            return i + (hit.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while b
        .get(i)
        .is_some_and(|&c| !matches!(c, b'"' | b'\\' | 0..=0x1f))
    {
        i += 1;
    }
    i.min(b.len())
}

/// The high bit of each byte of `x` (little-endian) that is `"`, `\\` or
/// below 0x20, and of no byte before the first such byte; bits above the
/// first may be spurious (borrows only propagate upwards), so only the
/// lowest set bit is exact.
#[inline]
fn special_bytes(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const QUOTE: u64 = ONES * b'"' as u64;
    const BACKSLASH: u64 = ONES * b'\\' as u64;
    let (q, s) = (x ^ QUOTE, x ^ BACKSLASH);
    ((q.wrapping_sub(ONES) & !q) | (s.wrapping_sub(ONES) & !s) | (x.wrapping_sub(ONES * 0x20) & !x))
        & HIGH
}

/// The escape-free JSON string whose opening quote is byte `i` of `s`: its
/// contents and the index just past its closing quote; `None` for anything
/// else (escapes, control characters, no string there).
// Always inlined: called once per node name, and as a call it measured 10 %
// slower to split 5,000 names (46 vs 51 µs).
#[allow(clippy::inline_always)]
#[inline(always)]
fn plain_string(s: &str, i: usize) -> Option<(&str, usize)> {
    let b = s.as_bytes();
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let end = next_special(b, i + 1);
    if b.get(end) != Some(&b'"') {
        return None;
    }
    Some((s.get(i + 1..end)?, end + 1))
}

/// Splits the JSON array of escape-free strings that starts at byte `start`
/// of `s` into borrowed names, returning them and the index just past the
/// closing bracket; `None` for anything else (escapes, control characters,
/// other values, malformed JSON), which the caller hands to serde_json.
fn split_plain_strings(s: &str, start: usize) -> Option<(Vec<&str>, usize)> {
    let b = s.as_bytes();
    if b.get(start) != Some(&b'[') {
        return None;
    }
    let mut i = skip_ws(b, start + 1);
    let mut out = Vec::with_capacity(b.len().saturating_sub(start) / 24);
    if b.get(i) == Some(&b']') {
        return Some((out, i + 1));
    }
    loop {
        let (name, next) = plain_string(s, i)?;
        out.push(name);
        // Compact arrays, as the scheduler's encoder writes them: `","`.
        if b.get(next) == Some(&b',') && b.get(next + 1) == Some(&b'"') {
            i = next + 1;
            continue;
        }
        i = skip_ws(b, next);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b']') => return Some((out, i + 1)),
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

impl<'a> ExtenderArgs<'a> {
    /// Decodes a filter or prioritize body: the same value as serde_json
    /// decoding the derived `Deserialize` from a JSON object (the shape
    /// schedulers send), with the same errors for missing, duplicate and
    /// malformed fields, each naming the field.
    ///
    /// The body is checked as UTF-8 once, and the `NodeNames` array —
    /// nearly all of a `nodeCacheCapable` request — is split by one scan
    /// instead of being read by the JSON parser and then split again. Other
    /// fields go through serde_json as they are.
    ///
    /// # Errors
    /// A body that is not UTF-8 or not a JSON object, or a field serde_json
    /// rejects.
    pub fn from_slice(body: &'a [u8]) -> Result<Self, serde_json::Error> {
        let text = std::str::from_utf8(body)
            .map_err(|e| de::Error::custom(format!("the request body is not UTF-8: {e}")))?;
        let mut w = Walker { s: text, i: 0 };
        let mut pod: Option<Box<k8s::Pod>> = None;
        let mut nodes: Option<Option<RawNodeList<'a>>> = None;
        let mut node_names: Option<Option<NodeNames<'a>>> = None;
        w.expect(b'{', "a JSON object")?;
        if !w.eat(b'}') {
            loop {
                let key = w.key()?;
                w.expect(b':', "`:` after a key")?;
                match key.as_ref() {
                    "Pod" => set_once(&mut pod, "Pod", w.value("Pod")?)?,
                    "Nodes" => set_once(&mut nodes, "Nodes", w.value("Nodes")?)?,
                    "NodeNames" => {
                        let names = w.node_names()?;
                        set_once(&mut node_names, "NodeNames", names)?;
                    }
                    other => {
                        w.value::<de::IgnoredAny>(other)?;
                    }
                }
                if w.eat(b',') {
                    continue;
                }
                w.expect(b'}', "`,` or `}` after a field")?;
                break;
            }
        }
        w.i = skip_ws(w.s.as_bytes(), w.i);
        if w.i != text.len() {
            return Err(de::Error::custom(format!(
                "trailing characters at byte {} after the request object",
                w.i
            )));
        }
        Ok(ExtenderArgs {
            pod: pod.ok_or_else(|| de::Error::missing_field("Pod"))?,
            nodes: nodes.flatten(),
            node_names: node_names.flatten(),
        })
    }

    /// The candidate node names, whichever form the scheduler used, in its
    /// order.
    #[must_use]
    pub fn candidate_names(&self) -> Cow<'_, [&str]> {
        match (&self.node_names, &self.nodes) {
            (Some(names), _) => names.as_strs(),
            (None, Some(list)) => list.items.iter().map(|n| n.name.0.as_ref()).collect(),
            (None, None) => Cow::Borrowed(&[]),
        }
    }
}

fn set_once<T>(
    slot: &mut Option<T>,
    field: &'static str,
    value: T,
) -> Result<(), serde_json::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(field));
    }
    *slot = Some(value);
    Ok(())
}

/// A cursor over the top level of a request object.
struct Walker<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Walker<'a> {
    /// Skips whitespace, then consumes `c` if it is next.
    fn eat(&mut self, c: u8) -> bool {
        self.i = skip_ws(self.s.as_bytes(), self.i);
        let hit = self.s.as_bytes().get(self.i) == Some(&c);
        self.i += usize::from(hit);
        hit
    }

    fn expect(&mut self, c: u8, what: &str) -> Result<(), serde_json::Error> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(de::Error::custom(format!(
                "expected {what} at byte {}",
                self.i
            )))
        }
    }

    /// One value of type `T` from here; errors name `field`.
    fn value<T: Deserialize<'a>>(&mut self, field: &str) -> Result<T, serde_json::Error> {
        self.i = skip_ws(self.s.as_bytes(), self.i);
        let rest = self.s.get(self.i..).unwrap_or_default();
        let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<T>();
        match stream.next() {
            Some(Ok(v)) => {
                self.i += stream.byte_offset();
                Ok(v)
            }
            Some(Err(e)) => Err(de::Error::custom(format!("{field}: {e}"))),
            None => Err(de::Error::custom(format!("{field}: no value"))),
        }
    }

    /// An object key: plain keys read directly, escaped ones by serde_json.
    fn key(&mut self) -> Result<Cow<'a, str>, serde_json::Error> {
        self.i = skip_ws(self.s.as_bytes(), self.i);
        if let Some((k, next)) = plain_string(self.s, self.i) {
            self.i = next;
            return Ok(Cow::Borrowed(k));
        }
        self.value::<String>("a field name").map(Cow::Owned)
    }

    /// `NodeNames`: split in one scan when plain, else by serde_json.
    fn node_names(&mut self) -> Result<Option<NodeNames<'a>>, serde_json::Error> {
        self.i = skip_ws(self.s.as_bytes(), self.i);
        if let Some((names, end)) = split_plain_strings(self.s, self.i) {
            self.i = end;
            return Ok(Some(NodeNames::Borrowed(names)));
        }
        self.value("NodeNames")
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
/// escaping; anything else goes through serde_json's escaper. `plain`: the
/// caller knows `s` needs none (a name the request scanner split).
#[allow(clippy::needless_bitwise_bool)] // branch-free, so the check vectorises
fn push_str(out: &mut Vec<u8>, s: &str, plain: bool) {
    let plain = plain
        || !s.bytes().fold(false, |bad, b| {
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

/// One reasons map of a filter answer, each distinct reason JSON-encoded
/// once, with the `:` that joins it to its node.
struct Reasons<'r, 'n> {
    key: &'static str,
    map: &'r NodeReasons<'n>,
    /// `:"reason"` for each distinct reason.
    encoded: Vec<Vec<u8>>,
}

impl<'r, 'n> Reasons<'r, 'n> {
    fn new(key: &'static str, reasons: &'r NodeReasons<'n>) -> Self {
        let encoded = reasons
            .distinct()
            .iter()
            .map(|r| {
                let mut e = vec![b':'];
                // Writing into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut e, r);
                e
            })
            .collect();
        Reasons {
            key,
            map: reasons,
            encoded,
        }
    }

    fn encoded(&self, r: usize) -> &[u8] {
        self.encoded
            .get(r)
            .map_or(b":\"\"".as_slice(), Vec::as_slice)
    }

    /// Bytes [`Reasons::push`] writes for plain names.
    fn len(&self) -> usize {
        if self.map.is_empty() {
            return 0;
        }
        self.key.len()
            + 6
            + self
                .map
                .entries()
                .map(|(n, r)| n.len() + 3 + self.encoded(r).len())
                .sum::<usize>()
    }

    /// Appends `,"Key":{node: reason, …}` unless empty.
    fn push(&self, out: &mut Vec<u8>, plain: bool) {
        if self.map.is_empty() {
            return;
        }
        out.extend_from_slice(b",\"");
        out.extend_from_slice(self.key.as_bytes());
        out.extend_from_slice(b"\":{");
        push_joined(out, self.map.entries(), |out, (node, r)| {
            push_str(out, node, plain);
            out.extend_from_slice(self.encoded(r));
        });
        out.push(b'}');
    }
}

/// The filter answer (`ExtenderFilterResult` JSON) in the form the
/// scheduler used: names for names, a NodeList for a NodeList (the passing
/// Node objects echoed as sent), always a subset of the request in its
/// order, then the rejected nodes with their reasons. Written directly:
/// a 5,000-node answer is a few hundred kilobytes of names and a handful of
/// distinct reasons.
#[must_use]
pub fn filter_answer(args: &ExtenderArgs<'_>, outcome: &FilterOutcome<'_>) -> Vec<u8> {
    let failed = Reasons::new("FailedNodes", &outcome.failed);
    let unresolvable = Reasons::new("FailedAndUnresolvableNodes", &outcome.unresolvable);
    // Names the request scanner split are known to need no escaping.
    let plain = matches!(args.node_names, Some(NodeNames::Borrowed(_)));
    let mut out = Vec::new();
    if let (None, Some(list)) = (&args.node_names, &args.nodes) {
        // `eligible` is a subsequence of the items' names, in order.
        let mut want = outcome.eligible.iter().peekable();
        let passing: Vec<&RawNode<'_>> = list
            .items
            .iter()
            .filter(|item| want.next_if(|&&n| n == item.name.0.as_ref()).is_some())
            .collect();
        let metadata = list.metadata.map_or("{}", RawValue::get);
        out.reserve(
            64 + metadata.len()
                + passing.iter().map(|i| i.raw.get().len() + 1).sum::<usize>()
                + failed.len()
                + unresolvable.len(),
        );
        out.extend_from_slice(b"{\"Nodes\":{\"metadata\":");
        out.extend_from_slice(metadata.as_bytes());
        out.extend_from_slice(b",\"items\":[");
        push_joined(&mut out, passing, |out, item| {
            out.extend_from_slice(item.raw.get().as_bytes());
        });
        out.extend_from_slice(b"]}");
    } else {
        // The core's eligible list is the request's names, filtered, in order.
        out.reserve(
            64 + outcome.eligible.iter().map(|n| n.len() + 3).sum::<usize>()
                + failed.len()
                + unresolvable.len(),
        );
        out.extend_from_slice(b"{\"NodeNames\":[");
        push_joined(&mut out, &outcome.eligible, |out, n| {
            push_str(out, n, plain);
        });
        out.push(b']');
    }
    failed.push(&mut out, plain);
    unresolvable.push(&mut out, plain);
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
        push_str(out, s.node, false);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// [`next_special`], one byte at a time.
    fn byte_scan(bytes: &[u8], start: usize) -> usize {
        (start..bytes.len())
            .find(|&i| matches!(bytes[i], b'"' | b'\\' | 0..=0x1f))
            .unwrap_or(bytes.len())
            .max(start.min(bytes.len()))
    }

    proptest::proptest! {
        /// The word-at-a-time search finds what a byte-by-byte one finds,
        /// from any start, over bytes dense in quotes, backslashes, control
        /// characters and bytes next to them (0x1f, 0x20, 0x21, 0x7f, 0x80, 0xff).
        #[test]
        fn next_special_matches_a_byte_scan(
            bytes in proptest::collection::vec(proptest::sample::select(
                vec![b'a', b'"', b'\\', 0x00, 0x01, 0x1f, 0x20, 0x21, b'!', 0x7f, 0x80, 0xa0, 0xff]), 0..160),
            start in 0usize..170,
        ) {
            proptest::prop_assert_eq!(next_special(&bytes, start), byte_scan(&bytes, start));
        }

        /// The same over long plain runs with a rare special byte, so the
        /// two-word steps both skip and stop.
        #[test]
        fn next_special_matches_a_byte_scan_over_long_runs(
            bytes in proptest::collection::vec(proptest::prop_oneof![
                60 => proptest::strategy::Just(b'a'),
                1 => proptest::sample::select(vec![b'"', b'\\', 0x00, 0x1f, 0x20, 0x80, 0xff]),
            ], 0..200),
            start in 0usize..210,
        ) {
            proptest::prop_assert_eq!(next_special(&bytes, start), byte_scan(&bytes, start));
        }
    }
}
