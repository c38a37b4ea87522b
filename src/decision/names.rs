//! A compact table of node names: each name gets a row number, names live
//! in one contiguous arena and the index is keyed by a 64-bit hash of the
//! name, so looking up thousands of names per request touches a few small,
//! dense arrays instead of thousands of separately allocated strings. A
//! lookup always compares the stored name, so hash collisions cost a
//! detour, never a wrong row.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// foldhash (word at a time) with a fixed seed: the same name hashes the
/// same in every process, and a hostile set of names can only cost a
/// detour through `collided`, never a wrong row.
fn hash(name: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x5b11_1a7e).hash_one(name)
}

/// Passes an already computed hash through.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

const FREE: u32 = u32::MAX;

/// Node name → row.
#[derive(Clone, Debug)]
pub(crate) struct NameTable {
    /// The hash function ([`hash`]; tests use a colliding one).
    hash: fn(&str) -> u64,
    arena: String,
    /// Row → (offset, length) in `arena`; length [`FREE`] for a free row.
    spans: Vec<(u32, u32)>,
    /// First row of each hash.
    index: HashMap<u64, u32, BuildHasherDefault<Identity>>,
    /// Rows whose hash another name already holds in `index`.
    collided: HashMap<String, u32>,
    free: Vec<u32>,
    garbage: usize,
}

impl Default for NameTable {
    fn default() -> Self {
        Self {
            hash,
            arena: String::new(),
            spans: Vec::new(),
            index: HashMap::default(),
            collided: HashMap::new(),
            free: Vec::new(),
            garbage: 0,
        }
    }
}

impl NameTable {
    fn name(&self, row: u32) -> Option<&str> {
        let (off, len) = *self.spans.get(row as usize)?;
        if len == FREE {
            return None;
        }
        self.arena.get(off as usize..(off + len) as usize)
    }

    /// The row of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<u32> {
        let row = *self.index.get(&(self.hash)(name))?;
        if self.name(row) == Some(name) {
            Some(row)
        } else {
            self.collided.get(name).copied()
        }
    }

    /// Number of rows handed out (free rows included).
    pub(crate) fn rows(&self) -> usize {
        self.spans.len()
    }

    /// The row of `name`, adding it if absent.
    pub(crate) fn insert(&mut self, name: &str) -> u32 {
        if let Some(row) = self.get(name) {
            return row;
        }
        let span = self.push(name);
        let row = if let Some(r) = self.free.pop() {
            self.spans[r as usize] = span;
            r
        } else {
            self.spans.push(span);
            u32::try_from(self.spans.len() - 1).unwrap_or(FREE)
        };
        let h = (self.hash)(name);
        if let std::collections::hash_map::Entry::Vacant(e) = self.index.entry(h) {
            e.insert(row);
        } else {
            self.collided.insert(name.to_owned(), row);
        }
        row
    }

    fn push(&mut self, name: &str) -> (u32, u32) {
        let off = u32::try_from(self.arena.len()).unwrap_or(FREE);
        self.arena.push_str(name);
        (off, u32::try_from(name.len()).unwrap_or(FREE))
    }

    /// Removes `name`; returns its row (free for reuse).
    pub(crate) fn remove(&mut self, name: &str) -> Option<u32> {
        let row = self.get(name)?;
        let h = (self.hash)(name);
        if self.collided.remove(name).is_none() {
            self.index.remove(&h);
            // Promote a name that shares the hash, if any.
            let promoted = self
                .collided
                .iter()
                .find(|(n, _)| (self.hash)(n) == h)
                .map(|(n, r)| (n.clone(), *r));
            if let Some((n, r)) = promoted {
                self.collided.remove(&n);
                self.index.insert(h, r);
            }
        }
        self.garbage += name.len();
        self.spans[row as usize] = (0, FREE);
        self.free.push(row);
        if self.garbage > 4096 && self.garbage * 2 > self.arena.len() {
            self.compact();
        }
        Some(row)
    }

    fn compact(&mut self) {
        let old = std::mem::take(&mut self.arena);
        for span in &mut self.spans {
            if span.1 != FREE {
                let (off, len) = (span.0 as usize, span.1 as usize);
                let start = u32::try_from(self.arena.len()).unwrap_or(FREE);
                self.arena.push_str(&old[off..off + len]);
                span.0 = start;
            }
        }
        self.garbage = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(t: &mut NameTable, ops: Vec<(bool, u8)>) -> Result<(), TestCaseError> {
        let mut model: std::collections::BTreeMap<String, u32> = std::collections::BTreeMap::new();
        for (add, n) in ops {
            let name = format!("node-{n}-{}", "x".repeat(usize::from(n % 7) * 40));
            if add {
                let row = t.insert(&name);
                if let Some(r) = model.get(&name) {
                    prop_assert_eq!(*r, row);
                }
                model.insert(name, row);
            } else {
                prop_assert_eq!(t.remove(&name), model.remove(&name));
            }
            for (k, r) in &model {
                prop_assert_eq!(t.get(k), Some(*r));
            }
            prop_assert_eq!(t.get("absent"), None);
            let rows: std::collections::BTreeSet<u32> = model.values().copied().collect();
            prop_assert_eq!(rows.len(), model.len(), "rows are distinct");
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn rows_follow_a_naive_map(ops in proptest::collection::vec((any::<bool>(), 0u8..40), 1..300)) {
            check(&mut NameTable::default(), ops)?;
        }

        #[test]
        fn rows_follow_a_naive_map_when_every_hash_collides(ops in proptest::collection::vec((any::<bool>(), 0u8..40), 1..300)) {
            let mut t = NameTable { hash: |_| 7, ..NameTable::default() };
            check(&mut t, ops)?;
        }
    }
}
