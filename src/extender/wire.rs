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
    Borrowed {
        /// The names, in request order.
        names: Vec<&'a str>,
        /// The text they were split from (the answer copies them from
        /// there with their quotes).
        source: &'a str,
    },
    /// Names that had escapes, decoded.
    Owned(Vec<String>),
}

impl Default for NodeNames<'_> {
    fn default() -> Self {
        NodeNames::Borrowed {
            names: Vec::new(),
            source: "",
        }
    }
}

impl NodeNames<'_> {
    /// The names, in request order.
    #[must_use]
    pub fn as_strs(&self) -> Cow<'_, [&str]> {
        match self {
            NodeNames::Borrowed { names, .. } => Cow::Borrowed(names.as_slice()),
            NodeNames::Owned(v) => Cow::Owned(v.iter().map(String::as_str).collect()),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for NodeNames<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: &'de RawValue = Deserialize::deserialize(d)?;
        match split_plain_strings(raw.get(), 0) {
            Some((names, end)) if end == raw.get().len() => Ok(NodeNames::Borrowed {
                names,
                source: raw.get(),
            }),
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

/// True for the bytes that end a plain stretch of a JSON string: `"`,
/// `\\` and control characters (below 0x20, never allowed raw).
fn is_special(c: u8) -> bool {
    matches!(c, b'"' | b'\\' | 0..=0x1f)
}

/// Bit `k` set when byte `k` of `block` is special ([`is_special`]).
/// SSE2 (in every x86-64 CPU): 16 bytes per compare, through `safe_arch`'s
/// safe wrappers.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline]
fn special_mask(block: &[u8; 64]) -> u64 {
    use safe_arch::{
        cmp_eq_mask_i8_m128i, load_unaligned_m128i, min_u8_m128i, move_mask_i8_m128i,
        set_splat_i8_m128i,
    };
    #[allow(clippy::cast_possible_wrap)] // byte patterns, not numbers
    let (quote, backslash, control) = (
        set_splat_i8_m128i(b'"' as i8),
        set_splat_i8_m128i(b'\\' as i8),
        set_splat_i8_m128i(0x1f),
    );
    let (lanes, _) = block.as_chunks::<16>();
    let mut mask = 0;
    for (k, lane) in lanes.iter().enumerate() {
        let x = load_unaligned_m128i(lane);
        let hits = cmp_eq_mask_i8_m128i(x, quote)
            | cmp_eq_mask_i8_m128i(x, backslash)
            // min(x, 0x1f) == x exactly when x <= 0x1f, unsigned.
            | cmp_eq_mask_i8_m128i(min_u8_m128i(x, control), x);
        // The mask has 16 bits, one per byte.
        #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
        let bits = u64::from(move_mask_i8_m128i(hits) as u16);
        mask |= bits << (16 * k);
    }
    mask
}

/// [`special_mask`] elsewhere: eight bytes per step (SWAR), each byte's
/// test exact (no borrow crosses bytes), gathered into bits by a multiply.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline]
fn special_mask(block: &[u8; 64]) -> u64 {
    special_mask_swar(block)
}

#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
#[inline]
fn special_mask_swar(block: &[u8; 64]) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const LOW: u64 = ONES * 0x7f;
    // High bit of each byte of `t` that is zero.
    let zero = |t: u64| !(((t & LOW) + LOW) | t | LOW);
    let (words, _) = block.as_chunks::<8>();
    let mut mask = 0;
    for (k, word) in words.iter().enumerate() {
        let x = u64::from_le_bytes(*word);
        // Below 0x20: high bit clear, and the low seven bits plus 0x60 stay
        // below 0x80.
        let control = !(((x & LOW) + ONES * 0x60) | x | LOW);
        let hits =
            zero(x ^ (ONES * u64::from(b'"'))) | zero(x ^ (ONES * u64::from(b'\\'))) | control;
        // Bit 8k+7 of `hits` to bit k: the products land in the top byte
        // without carries between them.
        mask |= ((hits >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) << (8 * k);
    }
    mask
}

/// The 64 bytes of `b` from `at`, when there are that many.
#[inline]
fn window(b: &[u8], at: usize) -> Option<&[u8; 64]> {
    b.get(at..at.checked_add(64)?)
        .and_then(|w| <&[u8; 64]>::try_from(w).ok())
}

/// [`special_mask`] of the 64 bytes of `b` from `base`, padded with spaces
/// (not special) past the end.
#[inline]
fn special_mask_at(b: &[u8], base: usize) -> u64 {
    if let Some(block) = window(b, base) {
        return special_mask(block);
    }
    let mut block = [b' '; 64];
    let rest = b.get(base..).unwrap_or_default();
    block[..rest.len()].copy_from_slice(rest);
    special_mask(&block)
}

/// The escape-free JSON string whose opening quote is byte `i` of `s`: its
/// contents and the index just past its closing quote; `None` for anything
/// else (escapes, control characters, no string there).
fn plain_string(s: &str, i: usize) -> Option<(&str, usize)> {
    let b = s.as_bytes();
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let end = i + 1 + b.get(i + 1..)?.iter().position(|&c| is_special(c))?;
    if b[end] != b'"' {
        return None;
    }
    Some((s.get(i + 1..end)?, end + 1))
}

/// Splits the JSON array of escape-free strings that starts at byte `start`
/// of `s` into borrowed names, returning them and the index just past the
/// closing bracket; `None` for anything else (escapes, control characters,
/// other values, malformed JSON), which the caller hands to serde_json.
///
/// One pass over 64-byte blocks: each block's quotes, backslashes and
/// control characters become a bit mask ([`special_mask`]), and the names
/// are read off its set bits, two per name. The bytes between a closing
/// quote and the next opening one are checked directly.
fn split_plain_strings(s: &str, start: usize) -> Option<(Vec<&str>, usize)> {
    let b = s.as_bytes();
    if b.get(start) != Some(&b'[') {
        return None;
    }
    let mut out = Vec::with_capacity(b.len().saturating_sub(start) / 24);
    // Where the next name's opening quote must be, and the opening quote of
    // the name being read, if any.
    let mut expect = skip_ws(b, start + 1);
    let mut open = None;
    if b.get(expect) == Some(&b']') {
        return Some((out, expect + 1));
    }
    let mut base = expect;
    while base < b.len() {
        let mut mask = special_mask_at(b, base);
        while mask != 0 {
            let p = base + mask.trailing_zeros() as usize;
            mask &= mask - 1;
            match open {
                // Whitespace between names, already checked.
                None if p < expect => {}
                None if p == expect && b[p] == b'"' => open = Some(p),
                None => return None,
                // An escape or a control character: serde_json's job.
                Some(_) if b[p] != b'"' => return None,
                Some(o) => {
                    out.push(s.get(o + 1..p)?);
                    open = None;
                    // Compact arrays, as the scheduler's encoder writes
                    // them, need no whitespace skipping: `","`.
                    let after = if b.get(p + 1) == Some(&b',') {
                        p + 1
                    } else {
                        skip_ws(b, p + 1)
                    };
                    match b.get(after) {
                        Some(b',') if b.get(after + 1) == Some(&b'"') => expect = after + 1,
                        Some(b',') => expect = skip_ws(b, after + 1),
                        Some(b']') => return Some((out, after + 1)),
                        _ => return None,
                    }
                }
            }
        }
        base += 64;
    }
    None
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
            return Ok(Some(NodeNames::Borrowed {
                names,
                source: self.s,
            }));
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

/// Bytes [`push_name`] and [`Reasons::push`] may write past the end of
/// what they keep (the size of a [`window`]).
const COPY: usize = 64;

/// Appends the first `len` bytes of `block` (at most [`COPY`]): a
/// fixed-size copy the compiler inlines, cut back to length — where a copy
/// of `len` bytes is a library call.
#[inline]
fn push_prefix(out: &mut Vec<u8>, block: &[u8; COPY], len: usize) {
    let end = out.len() + len.min(COPY);
    out.extend_from_slice(block);
    out.truncate(end);
}

/// Appends `name` as a JSON string. A name the request scanner split from
/// `source` is copied from there with its quotes ([`push_prefix`]);
/// anything else goes through [`push_str`].
#[inline]
fn push_name(out: &mut Vec<u8>, name: &str, source: Option<&[u8]>) {
    if let Some(src) = source {
        // The opening quote's place in `src`, when `name` lies inside it.
        let at = (name.as_ptr() as usize)
            .wrapping_sub(src.as_ptr() as usize)
            .wrapping_sub(1);
        if let Some(block) = window(src, at)
            && name.len() + 2 <= COPY
            && block[0] == b'"'
            && block[name.len() + 1] == b'"'
        {
            push_prefix(out, block, name.len() + 2);
            return;
        }
    }
    push_str(out, name, source.is_some());
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
    /// `:"reason"` for each distinct reason, and its length: the bytes are
    /// padded with spaces to at least [`COPY`], so a short one is written
    /// by [`push_prefix`].
    encoded: Vec<(Vec<u8>, usize)>,
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
                let len = e.len();
                e.resize(len.max(COPY), b' ');
                (e, len)
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
            .and_then(|(e, len)| e.get(..*len))
            .unwrap_or(b":\"\"")
    }

    /// Appends [`Reasons::encoded`] of reason `r`.
    #[inline]
    fn push_encoded(&self, out: &mut Vec<u8>, r: usize) {
        match self.encoded.get(r) {
            Some((padded, len)) if *len <= COPY => {
                if let Some(block) = window(padded, 0) {
                    push_prefix(out, block, *len);
                    return;
                }
            }
            _ => {}
        }
        out.extend_from_slice(self.encoded(r));
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
    fn push(&self, out: &mut Vec<u8>, source: Option<&[u8]>) {
        if self.map.is_empty() {
            return;
        }
        out.extend_from_slice(b",\"");
        out.extend_from_slice(self.key.as_bytes());
        out.extend_from_slice(b"\":{");
        push_joined(out, self.map.entries(), |out, (node, r)| {
            push_name(out, node, source);
            self.push_encoded(out, r);
        });
        out.push(b'}');
    }
}

/// The filter answer (`ExtenderFilterResult` JSON) in the form the
/// scheduler used: names for names, a NodeList for a NodeList (the passing
/// Node objects echoed as sent), always a subset of the request in its
/// order, then the rejected nodes with their reasons. Written directly:
/// a 5,000-node answer is up to a few hundred kilobytes of names and a
/// handful of distinct reasons.
///
/// `FailedNodes` (rejected where preemption or time may help) is sent only
/// when no node passes. kube-scheduler reads an extender's rejected nodes
/// into the statuses it uses for an unschedulable pod's message and for
/// preemption. With Spillway the only (or last) extender that filters, as
/// `deploy/` configures it, a passing node means the pod is scheduled and
/// those statuses are dropped unread (only their count reaches a log line).
/// Every cycle of a burst would otherwise carry, encode and decode a reason
/// for each node of the later units: two thirds of the answer in the load
/// tool's two-unit cluster. Should a later extender reject every node
/// Spillway passed, the nodes Spillway rejected retryably (later units,
/// nodes outside every unit, nodes not yet in its cache) have no status
/// from it: their reasons are missing from the pod's message, and
/// kube-scheduler 1.32 and later treats such nodes as unresolvable, so
/// preemption does not try them. `FailedAndUnresolvableNodes` is always
/// sent, so that nodes Spillway rejects for good stay out of preemption's
/// candidates on every version.
#[must_use]
pub fn filter_answer(args: &ExtenderArgs<'_>, outcome: &FilterOutcome<'_>) -> Vec<u8> {
    let none = NodeReasons::new();
    let failed = Reasons::new(
        "FailedNodes",
        if outcome.eligible.is_empty() {
            &outcome.failed
        } else {
            &none
        },
    );
    let unresolvable = Reasons::new("FailedAndUnresolvableNodes", &outcome.unresolvable);
    // Names the request scanner split need no escaping, and are copied
    // from the request with their quotes.
    let source = match &args.node_names {
        Some(NodeNames::Borrowed { source, .. }) => Some(source.as_bytes()),
        _ => None,
    };
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
            64 + COPY
                + metadata.len()
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
            64 + COPY
                + outcome.eligible.iter().map(|n| n.len() + 3).sum::<usize>()
                + failed.len()
                + unresolvable.len(),
        );
        out.extend_from_slice(b"{\"NodeNames\":[");
        push_joined(&mut out, &outcome.eligible, |out, n| {
            push_name(out, n, source);
        });
        out.push(b']');
    }
    failed.push(&mut out, source);
    unresolvable.push(&mut out, source);
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

    /// [`special_mask`], one byte at a time.
    fn byte_mask(block: &[u8; 64]) -> u64 {
        (0..64)
            .filter(|&k| is_special(block[k]))
            .map(|k| 1 << k)
            .sum()
    }

    /// Bytes dense in quotes, backslashes, control characters and bytes
    /// next to them (0x1f, 0x20, 0x21, 0x7f, 0x80, 0xff).
    fn tricky_byte() -> impl proptest::strategy::Strategy<Value = u8> {
        proptest::sample::select(vec![
            b'a', b'"', b'\\', 0x00, 0x01, 0x1f, 0x20, 0x21, b'!', b'[', b']', b',', 0x7f, 0x80,
            0xa0, 0xdf, 0xe0, 0xff,
        ])
    }

    /// A JSON array of names: long plain names (so arrays span many
    /// 64-byte blocks), now and then an escape, a raw control character, a
    /// non-ASCII name or a non-string, in compact or spaced spelling.
    fn names_array() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let name = prop_oneof![
            12 => "[a-z0-9.-]{1,70}".prop_map(|n| format!("\"{n}\"")),
            1 => "[a-z]{0,20}".prop_map(|n| format!("\"{n}\\\"x\"")),
            1 => "[a-z]{0,20}".prop_map(|n| format!("\"{n}\tx\"")),
            // A raw control character where a closing quote would fit.
            1 => "[a-z]{0,20}".prop_map(|n| format!("\"{n}\t,\"x\"")),
            1 => Just("\"n\u{e9}\"".to_owned()),
            1 => Just("7".to_owned()),
        ];
        let sep =
            prop_oneof![8 => Just(","), 1 => Just(" , "), 1 => Just(",\n  "), 1 => Just(",,")];
        (proptest::collection::vec((name, sep), 0..40), any::<bool>()).prop_map(|(items, pad)| {
            let ws = if pad { " \n" } else { "" };
            let mut out = format!("[{ws}");
            for (k, (n, sep)) in items.iter().enumerate() {
                if k > 0 {
                    out.push_str(sep);
                }
                out.push_str(n);
            }
            out.push_str(ws);
            out.push(']');
            out
        })
    }

    proptest::proptest! {
        /// The block masks agree with a byte-by-byte test.
        #[test]
        fn special_masks_match_a_byte_test(
            bytes in proptest::collection::vec(tricky_byte(), 64),
        ) {
            let block: [u8; 64] = bytes.try_into().unwrap();
            proptest::prop_assert_eq!(special_mask(&block), byte_mask(&block));
            proptest::prop_assert_eq!(special_mask_swar(&block), byte_mask(&block));
        }

        /// The splitter reads what serde_json reads whenever it answers,
        /// answers for every valid array of plain names, and ends at the
        /// closing bracket.
        #[test]
        fn split_names_match_serde(array in names_array(), tail in "[ ,}\"a]{0,3}") {
            let text = format!("{array}{tail}");
            let theirs = serde_json::from_str::<Vec<String>>(&array).ok();
            let plain = !array.contains('\\') && !array.contains('\t');
            match split_plain_strings(&text, 0) {
                Some((names, end)) => {
                    proptest::prop_assert_eq!(end, array.len());
                    proptest::prop_assert_eq!(Some(names.iter().map(|&n| n.to_owned()).collect()), theirs);
                }
                None => proptest::prop_assert!(theirs.is_none() || !plain, "{} not split", array),
            }
        }
    }
}
