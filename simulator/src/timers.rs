//! One pending timer per replica, in an indexed binary heap.
//!
//! A replica's next internal event (end of prefill, next completion) moves
//! whenever its batch changes. Keeping exactly one entry per replica and
//! moving it in place — instead of pushing a new event and skipping stale
//! ones — keeps the queue as small as the number of busy replicas.
//! Keys are `(time, sequence)`, the same order as the world's event queue.

/// Key of a timer: time, then the global sequence number (ties in insertion order).
pub type Key = (i64, u64);

/// Indexed min-heap of replica timers.
#[derive(Clone, Debug, Default)]
pub struct Timers {
    /// (key, replica) with keys inline, so sifting compares without indirection.
    heap: Vec<(Key, u32)>,
    /// Position of each replica in `heap`, `u32::MAX` when it has no timer.
    pos: Vec<u32>,
}

const ABSENT: u32 = u32::MAX;

impl Timers {
    fn ensure(&mut self, r: usize) {
        if self.pos.len() <= r {
            self.pos.resize(r + 1, ABSENT);
        }
    }

    /// The earliest timer: its key and replica.
    #[must_use]
    pub fn peek(&self) -> Option<(Key, u32)> {
        self.heap.first().copied()
    }

    /// Sets (or moves) replica `r`'s timer.
    pub fn set(&mut self, r: u32, key: Key) {
        let i = r as usize;
        self.ensure(i);
        if self.pos[i] == ABSENT {
            self.heap.push((key, r));
            let at = self.heap.len() - 1;
            self.sift_up(at);
            return;
        }
        let at = self.pos[i] as usize;
        let old = self.heap[at].0;
        self.heap[at].0 = key;
        if key < old {
            self.sift_up(at);
        } else {
            self.sift_down(at);
        }
    }

    /// Cancels replica `r`'s timer, if any.
    pub fn cancel(&mut self, r: u32) {
        let i = r as usize;
        if i >= self.pos.len() || self.pos[i] == ABSENT {
            return;
        }
        let at = self.pos[i] as usize;
        self.pos[i] = ABSENT;
        let Some(last) = self.heap.pop() else { return };
        if at < self.heap.len() {
            let old = self.heap[at].0;
            self.heap[at] = last;
            if last.0 < old {
                self.sift_up(at);
            } else {
                self.sift_down(at);
            }
        }
    }

    /// Removes and returns the earliest timer's replica.
    pub fn pop(&mut self) -> Option<u32> {
        let (_, r) = *self.heap.first()?;
        self.cancel(r);
        Some(r)
    }

    fn place(&mut self, at: usize, item: (Key, u32)) {
        self.heap[at] = item;
        self.pos[item.1 as usize] = position(at);
    }

    /// Moves the item at `at` towards the root, shifting parents down into
    /// the hole instead of swapping.
    fn sift_up(&mut self, mut at: usize) {
        let item = self.heap[at];
        while at > 0 {
            let parent = (at - 1) / ARITY;
            if item.0 >= self.heap[parent].0 {
                break;
            }
            self.place(at, self.heap[parent]);
            at = parent;
        }
        self.place(at, item);
    }

    /// Moves the item at `at` towards the leaves the same way.
    fn sift_down(&mut self, mut at: usize) {
        let item = self.heap[at];
        let len = self.heap.len();
        loop {
            let first = at * ARITY + 1;
            if first >= len {
                break;
            }
            let last = (first + ARITY).min(len);
            let mut best = first;
            for c in first + 1..last {
                if self.heap[c].0 < self.heap[best].0 {
                    best = c;
                }
            }
            if self.heap[best].0 >= item.0 {
                break;
            }
            self.place(at, self.heap[best]);
            at = best;
        }
        self.place(at, item);
    }
}

/// Children per heap node: a 4-ary heap is half as deep as a binary one.
const ARITY: usize = 4;

/// A heap index as stored in `pos` (far below `u32::MAX`: one per replica).
fn position(at: usize) -> u32 {
    u32::try_from(at).unwrap_or(ABSENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_key_order_after_moves_and_cancels() {
        let mut t = Timers::default();
        for (r, time) in [(0, 50), (1, 10), (2, 30), (3, 20), (4, 40)] {
            t.set(r, (time, u64::from(r)));
        }
        t.set(1, (60, 9)); // moved later
        t.set(4, (5, 10)); // moved earlier
        t.cancel(2);
        t.cancel(2);
        let mut order = Vec::new();
        while let Some(r) = t.pop() {
            order.push(r);
        }
        assert_eq!(order, [4, 3, 0, 1]);
        assert!(t.peek().is_none());
    }

    proptest::proptest! {
        /// Against a naive model (a sorted set of (key, replica)): any sequence
        /// of sets, cancels and pops gives the same earliest timer every time.
        #[test]
        fn matches_a_sorted_set_model(ops in proptest::collection::vec((0u32..20, 0i64..50, 0u8..3), 1..300)) {
            let mut t = Timers::default();
            let mut model: std::collections::BTreeMap<u32, Key> = std::collections::BTreeMap::new();
            for (seq, (r, time, op)) in ops.into_iter().enumerate() {
                let key = (time, seq as u64);
                match op {
                    0 => { t.set(r, key); model.insert(r, key); }
                    1 => { t.cancel(r); model.remove(&r); }
                    _ => {
                        let want = model.iter().min_by_key(|(_, k)| **k).map(|(r, _)| *r);
                        proptest::prop_assert_eq!(t.pop(), want);
                        if let Some(r) = want { model.remove(&r); }
                    }
                }
                let want = model.iter().min_by_key(|(_, k)| **k).map(|(r, k)| (*k, *r));
                proptest::prop_assert_eq!(t.peek(), want);
            }
        }
    }
}
