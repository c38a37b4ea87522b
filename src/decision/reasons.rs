//! Rejected nodes with their reasons, as a Filter outcome carries them.
//!
//! A Filter over thousands of nodes rejects most of them for one of a
//! handful of reasons (one per unit), so each distinct reason is stored
//! once and nodes refer to it; entries keep the order they were added in
//! (the request's node order) and borrow the node names from the request,
//! so rejecting thousands of nodes copies no name. It serializes as a JSON
//! object `{node: reason}`, the wire form of `FailedNodes`.

use std::ops::Index;

use serde::ser::{Serialize, SerializeMap, Serializer};

/// Nodes and the reason each was rejected.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeReasons<'n> {
    nodes: Vec<(&'n str, u32)>,
    reasons: Vec<String>,
}

impl<'n> NodeReasons<'n> {
    /// No nodes.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `node` rejected for `reason`. The scheduler names each node
    /// once per request; a node added again is looked up by its last entry.
    pub fn insert(&mut self, node: &'n str, reason: &str) {
        let id = self.intern(reason);
        self.push(node, id);
    }

    /// The id of `reason`, stored once (for callers rejecting many nodes
    /// for the same reason: [`Self::push`] them with the id).
    pub fn intern(&mut self, reason: &str) -> u32 {
        let i = if let Some(i) = self.reasons.iter().rposition(|r| r == reason) {
            i
        } else {
            self.reasons.push(reason.to_owned());
            self.reasons.len() - 1
        };
        u32::try_from(i).unwrap_or(u32::MAX)
    }

    /// Room for `additional` more nodes without reallocating.
    pub fn reserve(&mut self, additional: usize) {
        self.nodes.reserve(additional);
    }

    /// Adds `node` rejected for the reason `id` from [`Self::intern`].
    pub fn push(&mut self, node: &'n str, id: u32) {
        self.nodes.push((node, id));
    }

    /// The reason `node` was rejected (a linear search: for tests and
    /// reports, not per-node loops).
    #[must_use]
    pub fn get(&self, node: &str) -> Option<&String> {
        self.nodes
            .iter()
            .rev()
            .find(|(n, _)| *n == node)
            .and_then(|(_, r)| self.reasons.get(*r as usize))
    }

    /// True when `node` was rejected.
    #[must_use]
    pub fn contains_key(&self, node: &str) -> bool {
        self.get(node).is_some()
    }

    /// Number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when no node was rejected.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// `(node, reason)` in the order added.
    pub fn iter(&self) -> impl Iterator<Item = (&'n str, &String)> {
        self.nodes
            .iter()
            .filter_map(|(n, r)| Some((*n, self.reasons.get(*r as usize)?)))
    }

    /// Rejected nodes in the order added.
    pub fn keys(&self) -> impl Iterator<Item = &'n str> + '_ {
        self.nodes.iter().map(|(n, _)| *n)
    }

    /// The distinct reasons, each once.
    #[must_use]
    pub fn distinct(&self) -> &[String] {
        &self.reasons
    }

    /// `(node, index into [`Self::distinct`])` in the order added (for
    /// writers that encode each distinct reason once).
    pub fn entries(&self) -> impl Iterator<Item = (&'n str, usize)> + '_ {
        self.nodes.iter().map(|(n, r)| (*n, *r as usize))
    }

    /// The reason of every entry, in the order added.
    pub fn values(&self) -> impl Iterator<Item = &String> {
        self.iter().map(|(_, r)| r)
    }
}

impl Index<&str> for NodeReasons<'_> {
    type Output = String;

    /// The reason of `node`.
    ///
    /// # Panics
    /// When `node` was not rejected (as a map's index does).
    fn index(&self, node: &str) -> &String {
        self.get(node)
            .unwrap_or_else(|| panic!("node {node:?} was not rejected"))
    }
}

impl<'a, 'n> IntoIterator for &'a NodeReasons<'n> {
    type Item = (&'n str, &'a String);
    type IntoIter = Box<dyn Iterator<Item = (&'n str, &'a String)> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl Serialize for NodeReasons<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.nodes.len()))?;
        for (node, reason) in self {
            map.serialize_entry(node, reason)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_shared_and_entries_keep_their_order() {
        let mut r = NodeReasons::new();
        for (n, why) in [
            ("b", "full"),
            ("a", "full"),
            ("c", "later unit"),
            ("d", "full"),
        ] {
            r.insert(n, why);
        }
        assert_eq!(r.reasons.len(), 2);
        assert_eq!(r.len(), 4);
        assert_eq!(r["a"], "full");
        assert_eq!(r.get("c").map(String::as_str), Some("later unit"));
        assert!(!r.contains_key("z"));
        assert_eq!(r.keys().collect::<Vec<_>>(), ["b", "a", "c", "d"]);
        // Serialized as a JSON object.
        let json: std::collections::BTreeMap<String, String> =
            serde_json::from_str(&serde_json::to_string(&r).unwrap_or_default())
                .unwrap_or_default();
        assert_eq!(json.len(), 4);
        assert_eq!(json["c"], "later unit");
    }
}
