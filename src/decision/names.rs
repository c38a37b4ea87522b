//! A compact table of node names: each name gets a row number, names live
//! in one contiguous arena and the index is one open-addressing array of
//! cache-line slots holding a hash tag, the name's row and place in the
//! arena, and the name itself when it fits (node names almost always do).
//! Looking up thousands of names per request touches one cache line per
//! name, instead of thousands of separately allocated strings. A lookup
//! always compares the stored name, so hash collisions cost a probe, never
//! a wrong row.

/// foldhash (word at a time) with a fixed seed: the same name hashes the
/// same in every process, and a hostile set of names can only lengthen
/// probes, never give a wrong row.
fn hash(name: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x5b11_1a7e).hash_one(name)
}

const FREE: u32 = u32::MAX;

/// Bytes of a name kept in its slot: names this long or shorter (cloud node
/// names are 30–45 bytes) are compared without reading the arena.
const INLINE: usize = 48;

/// One index slot, one cache line. `tag` is [`EMPTY`], [`GONE`] (a removed
/// name; probes go on past it) or the high half of the name's hash, never
/// below 2.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Slot {
    tag: u32,
    row: u32,
    off: u32,
    len: u32,
    /// The name's bytes when it fits ([`INLINE`]).
    inline: [u8; INLINE],
}

const EMPTY: u32 = 0;
const GONE: u32 = 1;
const VACANT: Slot = Slot {
    tag: EMPTY,
    row: 0,
    off: 0,
    len: 0,
    inline: [0; INLINE],
};

impl Slot {
    fn new(h: u64, row: u32, (off, len): (u32, u32), name: &[u8]) -> Self {
        let mut inline = [0; INLINE];
        if let Some(dst) = inline.get_mut(..name.len()) {
            dst.copy_from_slice(name);
        }
        Slot {
            tag: tag_of(h),
            row,
            off,
            len,
            inline,
        }
    }

    /// True when this slot holds `name` (hashing to `tag`).
    fn holds(&self, tag: u32, name: &[u8], arena: &[u8]) -> bool {
        self.tag == tag
            && self.len as usize == name.len()
            && match self.inline.get(..name.len()) {
                Some(inline) => inline == name,
                None => arena.get(self.off as usize..(self.off + self.len) as usize) == Some(name),
            }
    }
}

#[allow(clippy::cast_possible_truncation)] // the high half of the hash
fn tag_of(h: u64) -> u32 {
    ((h >> 32) as u32).max(2)
}

#[allow(clippy::cast_possible_truncation)] // masked to the table size
fn home(h: u64, mask: usize) -> usize {
    (h as usize) & mask
}

/// Node name → row.
#[derive(Clone, Debug, Default)]
pub(crate) struct NameTable {
    /// Every name hashes alike (tests of the collision path).
    colliding: bool,
    arena: String,
    /// Row → (offset, length) in `arena`; length [`FREE`] for a free row.
    spans: Vec<(u32, u32)>,
    /// Linear-probing index, a power of two in size (or empty).
    slots: Vec<Slot>,
    /// Slots not [`EMPTY`] (names and [`GONE`] marks).
    used: usize,
    free: Vec<u32>,
    garbage: usize,
}

impl NameTable {
    /// [`hash`], called directly so it inlines into the lookup loops; tests
    /// set `colliding` to give every name the same hash.
    #[inline]
    fn hash_of(&self, name: &str) -> u64 {
        if self.colliding { 7 } else { hash(name) }
    }

    /// The slot index holding `name`.
    fn find(&self, name: &str) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let h = self.hash_of(name);
        self.probe(name, h, home(h, self.slots.len() - 1))
    }

    /// The slot holding `name` (hashing to `h`), probing from slot `at` (its
    /// home slot, or one a caller already read past). The table is never
    /// full (see `insert`), so an empty slot ends every probe.
    fn probe(&self, name: &str, h: u64, mut at: usize) -> Option<usize> {
        let (tag, mask) = (tag_of(h), self.slots.len() - 1);
        loop {
            let s = &self.slots[at];
            if s.tag == EMPTY {
                return None;
            }
            if s.holds(tag, name.as_bytes(), self.arena.as_bytes()) {
                return Some(at);
            }
            at = (at + 1) & mask;
        }
    }

    /// The row of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<u32> {
        self.find(name).map(|i| self.slots[i].row)
    }

    /// The rows of `names`, in order, passed to `each`. Same
    /// answers as [`NameTable::get`] name by name, but a group of names has
    /// its hashes computed and its home slots (name inline) read before any
    /// is compared, so their cache misses overlap instead of following one
    /// another: a 5,000-name request finds the table cold, evicted by the
    /// request's own bytes.
    pub(crate) fn get_many(&self, names: &[&str], mut each: impl FnMut(Option<u32>)) {
        const GROUP: usize = 16;
        if self.slots.is_empty() {
            for _ in names {
                each(None);
            }
            return;
        }
        let mask = self.slots.len() - 1;
        for group in names.chunks(GROUP) {
            let mut first = [(0u64, 0usize); GROUP];
            // Hashes and home slots first: the slots' loads are independent.
            let mut touched = 0u32;
            for (f, name) in first.iter_mut().zip(group) {
                let h = self.hash_of(name);
                let at = home(h, mask);
                touched ^= self.slots[at].tag;
                *f = (h, at);
            }
            std::hint::black_box(touched);
            for (&(h, at), name) in first.iter().zip(group) {
                each(self.probe(name, h, at).map(|i| self.slots[i].row));
            }
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
        // Keep at least 30 % of the slots empty, names and marks counted.
        if (self.used + 1) * 10 > self.slots.len() * 7 {
            self.rebuild(self.live() + 1);
        }
        let (off, len) = self.push(name);
        let row = if let Some(r) = self.free.pop() {
            self.spans[r as usize] = (off, len);
            r
        } else {
            self.spans.push((off, len));
            u32::try_from(self.spans.len() - 1).unwrap_or(FREE)
        };
        let h = self.hash_of(name);
        self.place(Slot::new(h, row, (off, len), name.as_bytes()), h);
        row
    }

    fn live(&self) -> usize {
        self.spans.len() - self.free.len()
    }

    /// Puts `slot` (a name not in the index, hashing to `h`) at the first
    /// empty or removed place of its probe sequence.
    fn place(&mut self, slot: Slot, h: u64) {
        let mask = self.slots.len() - 1;
        let mut i = home(h, mask);
        while self.slots[i].tag > GONE {
            i = (i + 1) & mask;
        }
        if self.slots[i].tag == EMPTY {
            self.used += 1;
        }
        self.slots[i] = slot;
    }

    /// Re-lays the index out for `names` names (dropping removal marks).
    fn rebuild(&mut self, names: usize) {
        let size = (names * 10 / 7 + 1).next_power_of_two().max(16);
        self.slots = vec![VACANT; size];
        self.used = 0;
        let spans = std::mem::take(&mut self.spans);
        for (row, &(off, len)) in spans.iter().enumerate() {
            if len != FREE {
                let name = self
                    .arena
                    .get(off as usize..(off + len) as usize)
                    .unwrap_or_default();
                let h = self.hash_of(name);
                let row = u32::try_from(row).unwrap_or(FREE);
                let slot = Slot::new(h, row, (off, len), name.as_bytes());
                self.place(slot, h);
            }
        }
        self.spans = spans;
    }

    fn push(&mut self, name: &str) -> (u32, u32) {
        let off = u32::try_from(self.arena.len()).unwrap_or(FREE);
        self.arena.push_str(name);
        (off, u32::try_from(name.len()).unwrap_or(FREE))
    }

    /// Removes `name`; returns its row (free for reuse).
    pub(crate) fn remove(&mut self, name: &str) -> Option<u32> {
        let i = self.find(name)?;
        let row = self.slots[i].row;
        self.slots[i].tag = GONE;
        self.garbage += name.len();
        self.spans[row as usize] = (0, FREE);
        self.free.push(row);
        if self.garbage > 4096 && self.garbage * 2 > self.arena.len() {
            self.compact();
        }
        Some(row)
    }

    /// Drops removed names from the arena; the index follows the new offsets.
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
        self.rebuild(self.live());
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
            let mut probe: Vec<&str> = model.keys().map(String::as_str).collect();
            probe.push("absent");
            probe.extend(model.keys().rev().map(String::as_str));
            let mut rows = Vec::new();
            t.get_many(&probe, |r| rows.push(r));
            let one_by_one: Vec<Option<u32>> = probe.iter().map(|n| t.get(n)).collect();
            prop_assert_eq!(rows, one_by_one);
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
            let mut t = NameTable { colliding: true, ..NameTable::default() };
            check(&mut t, ops)?;
        }
    }
}
