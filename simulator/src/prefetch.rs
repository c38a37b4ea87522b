//! Drawing a service's requests ahead of the simulation, on another core.
//!
//! Generating arrivals (ziggurat draws, token sampling, trace rows) is about
//! a tenth of a long run's work and depends on nothing the world does, so a
//! producer thread can draw them in batches while the simulation consumes
//! the previous batch. The sequence is the stream's own, so outputs are
//! byte-identical with and without prefetching; only wall time changes.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use crate::traffic::Request;

/// Requests per batch: large enough that handing a batch over costs
/// nothing per request, small enough to stay in cache.
const BATCH: usize = 8192;
/// Batches in flight between producer and consumer.
const DEPTH: usize = 4;

/// A request stream, drawn inline or by a producer thread.
pub enum Feed<S> {
    /// Drawn on the simulation's thread.
    Inline(S),
    /// Drawn ahead by a producer thread.
    Prefetched(Prefetch),
}

impl<S: Iterator<Item = Request> + Send + 'static> Feed<S> {
    /// Prefetches when `ahead` (the caller's choice: a long run on a machine
    /// with a spare core) and a thread can be started; inline otherwise.
    pub fn new(stream: S, ahead: bool) -> Self {
        if ahead {
            Prefetch::start(stream)
        } else {
            Feed::Inline(stream)
        }
    }
}

impl<S: Iterator<Item = Request>> Iterator for Feed<S> {
    type Item = Request;

    #[inline]
    fn next(&mut self) -> Option<Request> {
        match self {
            Feed::Inline(s) => s.next(),
            Feed::Prefetched(p) => p.next(),
        }
    }
}

/// The consumer side of a producer thread.
pub struct Prefetch {
    batch: Vec<Request>,
    at: usize,
    full: Receiver<Vec<Request>>,
    /// Consumed batches go back for reuse.
    empty: SyncSender<Vec<Request>>,
    done: bool,
    producer: Option<JoinHandle<()>>,
}

impl Prefetch {
    fn start<S: Iterator<Item = Request> + Send + 'static>(mut stream: S) -> Feed<S> {
        let (full_tx, full) = sync_channel::<Vec<Request>>(DEPTH);
        let (empty, empty_rx) = sync_channel::<Vec<Request>>(DEPTH + 1);
        // The stream moves into the producer; if the thread cannot start it
        // comes back through the closure's drop and is lost, so keep one
        // here until the spawn succeeded.
        let (stream_tx, stream_rx) = sync_channel::<S>(1);
        let spawned = std::thread::Builder::new()
            .name("spillway-traffic".into())
            .spawn(move || {
                let Ok(mut stream) = stream_rx.recv() else {
                    return;
                };
                loop {
                    let mut batch = empty_rx.try_recv().unwrap_or_default();
                    batch.clear();
                    batch.reserve(BATCH);
                    batch.extend(stream.by_ref().take(BATCH));
                    let last = batch.len() < BATCH;
                    // A closed channel means the simulation stopped early.
                    if full_tx.send(batch).is_err() || last {
                        return;
                    }
                }
            });
        match spawned {
            Ok(producer) => {
                if let Err(back) = stream_tx.send(stream) {
                    stream = back.0;
                    return Feed::Inline(stream);
                }
                Feed::Prefetched(Prefetch {
                    batch: Vec::new(),
                    at: 0,
                    full,
                    empty,
                    done: false,
                    producer: Some(producer),
                })
            }
            Err(_) => Feed::Inline(stream),
        }
    }

    #[inline]
    fn next(&mut self) -> Option<Request> {
        if let Some(&r) = self.batch.get(self.at) {
            self.at += 1;
            return Some(r);
        }
        self.refill()
    }

    #[cold]
    fn refill(&mut self) -> Option<Request> {
        if self.done {
            return None;
        }
        let used = std::mem::take(&mut self.batch);
        // The producer may have finished; a full return channel only means
        // it has spare batches already.
        let _ = self.empty.try_send(used);
        let Ok(batch) = self.full.recv() else {
            self.done = true;
            return None;
        };
        self.done = batch.len() < BATCH;
        self.batch = batch;
        let first = self.batch.first().copied();
        self.at = usize::from(first.is_some());
        first
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        // Unblock a producer waiting to hand over a batch, then wait for it
        // so no thread outlives the run.
        let (_, closed) = sync_channel(0);
        self.full = closed;
        if let Some(p) = self.producer.take() {
            let _ = p.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests(n: usize) -> impl Iterator<Item = Request> + Send + 'static {
        (0..n).map(|i| Request {
            arrival_us: i64::try_from(i).unwrap_or(0) * 3,
            prompt_tokens: u32::try_from(i % 1000).unwrap_or(0),
            output_tokens: u32::try_from(i % 7).unwrap_or(0) + 1,
        })
    }

    #[test]
    fn prefetched_stream_is_the_inline_stream() {
        // Empty, shorter than a batch, exactly one batch, several batches.
        for n in [0, 1, BATCH - 1, BATCH, BATCH + 1, 5 * BATCH + 17] {
            let inline: Vec<Request> = Feed::new(requests(n), false).collect();
            let ahead: Vec<Request> = Feed::new(requests(n), true).collect();
            assert!(matches!(Feed::new(requests(n), true), Feed::Prefetched(_)));
            assert_eq!(inline.len(), n);
            assert_eq!(ahead, inline, "n = {n}");
        }
    }

    #[test]
    fn dropping_a_feed_early_stops_its_producer() {
        // An endless stream: the producer blocks once the channel is full;
        // dropping the consumer must end it (the drop joins the thread).
        let mut feed = Feed::new(requests(usize::MAX), true);
        assert_eq!(feed.next().map(|r| r.arrival_us), Some(0));
        assert_eq!(
            feed.nth(BATCH * 2).map(|r| r.arrival_us),
            Some(3 * (2 * 8192 + 1))
        );
        drop(feed);
    }
}
