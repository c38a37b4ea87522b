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
    heap: Vec<u32>,
    /// Position of each replica in `heap`, `u32::MAX` when it has no timer.
    pos: Vec<u32>,
    key: Vec<Key>,
}

const ABSENT: u32 = u32::MAX;

impl Timers {
    fn ensure(&mut self, r: usize) {
        if self.pos.len() <= r {
            self.pos.resize(r + 1, ABSENT);
            self.key.resize(r + 1, (0, 0));
        }
    }

    /// The earliest timer: its key and replica.
    #[must_use]
    pub fn peek(&self) -> Option<(Key, u32)> {
        self.heap.first().map(|&r| (self.key[r as usize], r))
    }

    /// Sets (or moves) replica `r`'s timer.
    pub fn set(&mut self, r: u32, key: Key) {
        let i = r as usize;
        self.ensure(i);
        self.key[i] = key;
        if self.pos[i] == ABSENT {
            self.pos[i] = u32::try_from(self.heap.len()).unwrap_or(ABSENT);
            self.heap.push(r);
        }
        let at = self.pos[i] as usize;
        let at = self.sift_up(at);
        self.sift_down(at);
    }

    /// Cancels replica `r`'s timer, if any.
    pub fn cancel(&mut self, r: u32) {
        let i = r as usize;
        if i >= self.pos.len() || self.pos[i] == ABSENT {
            return;
        }
        let at = self.pos[i] as usize;
        self.pos[i] = ABSENT;
        let last = self.heap.pop().unwrap_or(r);
        if at < self.heap.len() {
            self.heap[at] = last;
            self.pos[last as usize] = u32::try_from(at).unwrap_or(ABSENT);
            let at = self.sift_up(at);
            self.sift_down(at);
        }
    }

    /// Removes and returns the earliest timer's replica.
    pub fn pop(&mut self) -> Option<u32> {
        let r = *self.heap.first()?;
        self.cancel(r);
        Some(r)
    }

    fn less(&self, a: usize, b: usize) -> bool {
        self.key[self.heap[a] as usize] < self.key[self.heap[b] as usize]
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.pos[self.heap[a] as usize] = u32::try_from(a).unwrap_or(ABSENT);
        self.pos[self.heap[b] as usize] = u32::try_from(b).unwrap_or(ABSENT);
    }

    fn sift_up(&mut self, mut at: usize) -> usize {
        while at > 0 {
            let parent = (at - 1) / 2;
            if !self.less(at, parent) {
                break;
            }
            self.swap(at, parent);
            at = parent;
        }
        at
    }

    fn sift_down(&mut self, mut at: usize) -> usize {
        loop {
            let (l, r) = (2 * at + 1, 2 * at + 2);
            let mut best = at;
            if l < self.heap.len() && self.less(l, best) {
                best = l;
            }
            if r < self.heap.len() && self.less(r, best) {
                best = r;
            }
            if best == at {
                return at;
            }
            self.swap(at, best);
            at = best;
        }
    }
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
}
