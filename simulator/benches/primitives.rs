//! The hand-written primitives on the simulator's hot path against the
//! maintained crates that do the same: the latency histogram against
//! `hdrhistogram` (2 significant figures, the same ~1 % resolution), and the
//! ziggurat exponential against `rand_distr`'s `Exp1` (also a ziggurat).
//! Every request records two latencies and draws at least one exponential
//! gap. (Normals were hand-written too, until this benchmark found
//! `rand_distr`'s `StandardNormal` 1.9 times as fast; they now use it, and
//! the benchmark keeps the call through Spillway's wrapper beside it.)
//!
//! `cargo bench -p spillway-sim --bench primitives`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Exp1, StandardNormal};
use rand_pcg::Pcg64Mcg;
use spillway_sim::hist::Histogram;
use spillway_sim::traffic::sample::{standard_normal, unit_exponential};

const N: u64 = 100_000;

/// Latencies in µs spread over five decades, as TTFT and end-to-end times are.
fn latencies() -> Vec<i64> {
    let mut rng = Pcg64Mcg::seed_from_u64(7);
    (0..N)
        .map(|_| {
            let decades: f64 = rng.random::<f64>() * 5.0;
            #[allow(clippy::cast_possible_truncation)]
            let us = (1_000.0 * 10f64.powf(decades)) as i64;
            us
        })
        .collect()
}

fn histograms(c: &mut Criterion) {
    let data = latencies();
    let mut g = c.benchmark_group("histogram record");
    g.throughput(Throughput::Elements(N));
    g.bench_function("spillway hist", |b| {
        b.iter(|| {
            let mut h = Histogram::default();
            for &us in &data {
                h.record(black_box(us));
            }
            black_box(h.quantile_s(0.95))
        });
    });
    g.bench_function("hdrhistogram (2 sig. figures)", |b| {
        b.iter(|| {
            let mut h = hdrhistogram::Histogram::<u64>::new(2).unwrap();
            for &us in &data {
                h.record(black_box(us).unsigned_abs()).unwrap();
            }
            black_box(h.value_at_quantile(0.95))
        });
    });
    g.finish();
}

fn samplers(c: &mut Criterion) {
    let mut g = c.benchmark_group("variates");
    g.throughput(Throughput::Elements(N));
    g.bench_function("exponential: spillway ziggurat", |b| {
        let mut rng = Pcg64Mcg::seed_from_u64(1);
        b.iter(|| (0..N).map(|_| unit_exponential(&mut rng)).sum::<f64>());
    });
    g.bench_function("exponential: rand_distr Exp1", |b| {
        let mut rng = Pcg64Mcg::seed_from_u64(1);
        b.iter(|| {
            (0..N)
                .map(|_| -> f64 { Exp1.sample(&mut rng) })
                .sum::<f64>()
        });
    });
    g.bench_function("normal: spillway (rand_distr through its wrapper)", |b| {
        let mut rng = Pcg64Mcg::seed_from_u64(1);
        b.iter(|| (0..N).map(|_| standard_normal(&mut rng)).sum::<f64>());
    });
    g.bench_function("normal: rand_distr StandardNormal", |b| {
        let mut rng = Pcg64Mcg::seed_from_u64(1);
        b.iter(|| {
            (0..N)
                .map(|_| -> f64 { StandardNormal.sample(&mut rng) })
                .sum::<f64>()
        });
    });
    g.finish();
}

criterion_group!(benches, histograms, samplers);
criterion_main!(benches);
