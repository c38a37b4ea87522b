//! Filter and prioritize cost at 100 / 1,000 / 5,000 nodes (10 pods per
//! node indexed) of the synthetic cluster in `spillway::load`, for both
//! scheduler modes, through the same functions the HTTP handlers call
//! (decode, core decision with reservation, encode):
//! - `names`: `nodeCacheCapable`, the request carries node names;
//! - `full`: the request carries every Node object (the scheduler's
//!   non-cache mode), so decoding dominates.
//!
//! `cargo bench --bench extender` prints the time per request; the loopback
//! HTTP numbers come from `spillway-load http`.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use spillway::decision::time::Time;
use spillway::extender::backend::{BindError, BindRequest, Binder, Extender, Index};
use spillway::extender::server::{answer_filter, answer_prioritize};
use spillway::load;

struct NoBinder;

impl Binder for NoBinder {
    async fn bind(&self, _: BindRequest) -> Result<(), BindError> {
        Ok(())
    }
}

fn extender(c: &mut Criterion) {
    for verb in ["filter", "prioritize"] {
        let mut group = c.benchmark_group(verb);
        group.sample_size(20);
        for n in [100, 1_000, 5_000] {
            let mut index = Index::default();
            load::fill(&mut index, n, 10);
            let ext = Extender::new(index, NoBinder, Box::new(|| Time::from_secs(1_800_000_000)));
            // The index is filled by hand: no watch will mark it synced.
            ext.set_ready(true);
            let answer = |body: &[u8]| match verb {
                "filter" => answer_filter(&ext, body),
                _ => answer_prioritize(&ext, body),
            };
            for (mode, full) in [("names", false), ("full", true)] {
                let body = load::request(n, full);
                assert!(answer(&body).is_ok());
                group.bench_with_input(BenchmarkId::new(mode, n), &body, |b, body| {
                    b.iter(|| answer(body).map(|v| v.len()));
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, extender);
criterion_main!(benches);
