//! Least-outstanding-requests routing in O(1) per request.
//!
//! Ready replicas sit in buckets by their outstanding request count; a
//! request goes to a replica of the lowest non-empty bucket, and each
//! arrival or completion moves one replica to a neighbouring bucket. Ties go
//! to the most recently moved replica of the bucket — an arbitrary but
//! deterministic choice (real gateways break ties arbitrarily too).

/// Buckets of replica ids by outstanding count.
#[derive(Clone, Debug, Default)]
pub struct Router {
    buckets: Vec<Vec<u32>>,
    /// Lowest possibly non-empty bucket.
    min: usize,
    len: usize,
}

/// Where a replica sits in the router: its bucket and index in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Outstanding requests (the bucket).
    pub load: usize,
    /// Index within the bucket.
    pub index: usize,
}

impl Router {
    /// Number of replicas held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no replica is ready.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds replica `id` with `load` outstanding requests; returns its slot.
    pub fn insert(&mut self, id: u32, load: usize) -> Slot {
        if self.buckets.len() <= load {
            self.buckets.resize_with(load + 1, Vec::new);
        }
        self.buckets[load].push(id);
        self.min = self.min.min(load);
        self.len += 1;
        Slot {
            load,
            index: self.buckets[load].len() - 1,
        }
    }

    /// Removes the replica at `slot`; returns the id that moved into its
    /// index (whose slot the caller must update), if any.
    pub fn remove(&mut self, slot: Slot) -> Option<u32> {
        let bucket = &mut self.buckets[slot.load];
        bucket.swap_remove(slot.index);
        self.len -= 1;
        bucket.get(slot.index).copied()
    }

    /// The least-loaded replica and its load.
    pub fn least(&mut self) -> Option<(u32, usize)> {
        if self.len == 0 {
            return None;
        }
        while self.buckets.get(self.min).is_some_and(Vec::is_empty) {
            self.min += 1;
        }
        self.buckets
            .get(self.min)
            .and_then(|b| b.last())
            .map(|&id| (id, self.min))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_loaded_replica_is_found_after_moves() {
        let mut r = Router::default();
        let mut slots = [r.insert(0, 0), r.insert(1, 0), r.insert(2, 0)];
        // Load replica 2 twice and replica 1 once.
        for (id, times) in [(2usize, 2), (1, 1)] {
            for _ in 0..times {
                let s = slots[id];
                if let Some(moved) = r.remove(s) {
                    slots[moved as usize] = s;
                }
                slots[id] = r.insert(u32::try_from(id).unwrap(), s.load + 1);
            }
        }
        assert_eq!(r.least(), Some((0, 0)));
        let s = slots[0];
        r.remove(s);
        assert_eq!(r.least(), Some((1, 1)));
        assert_eq!(r.len(), 2);
    }

    proptest::proptest! {
        /// Against a naive model (loads in a map, scanned for the minimum):
        /// after any sequence of moves and removals the router's least load
        /// is the true minimum.
        #[test]
        fn least_load_matches_a_scan(ops in proptest::collection::vec((0usize..12, 0u8..3), 1..300)) {
            let mut r = Router::default();
            let mut slots: std::collections::BTreeMap<usize, Slot> = std::collections::BTreeMap::new();
            for (id, op) in ops {
                let id32 = u32::try_from(id).unwrap();
                match (op, slots.get(&id).copied()) {
                    (0, None) => { slots.insert(id, r.insert(id32, 0)); }
                    (0 | 1, Some(s)) => {
                        if let Some(moved) = r.remove(s) {
                            slots.insert(moved as usize, s);
                        }
                        let load = if op == 0 { s.load + 1 } else { s.load.saturating_sub(1) };
                        slots.insert(id, r.insert(id32, load));
                    }
                    (2, Some(s)) => {
                        if let Some(moved) = r.remove(s) {
                            slots.insert(moved as usize, s);
                        }
                        slots.remove(&id);
                    }
                    _ => {}
                }
                let min = slots.values().map(|s| s.load).min();
                let got = r.least();
                proptest::prop_assert_eq!(got.map(|(_, l)| l), min);
                if let Some((id, load)) = got {
                    proptest::prop_assert_eq!(slots[&(id as usize)].load, load);
                }
                proptest::prop_assert_eq!(r.len(), slots.len());
            }
        }
    }
}
