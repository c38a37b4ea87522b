//! Simulator throughput: simulated events per second of wall time.
//!
//! `cargo bench -p spillway-sim` runs two cases and prints criterion's
//! throughput (elements = simulated events):
//! - `builtin-6h`: the built-in hybrid-edge scenario, 6 simulated hours;
//! - `m-large-1h`: the 2,000-GPU benchmark scenario (`scenarios/m-large-14d.yaml`),
//!   one simulated hour at the ServeGen m-large rate.
//!
//! The full 14-day run is timed by `spillway-sim run scenarios/m-large-14d.yaml`,
//! which prints events/s itself.

use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use spillway_sim::scenario::{self, Compiled, Dur};

fn case(c: &mut Criterion, name: &str, compiled: &Compiled) {
    let events = spillway_sim::simulate(compiled, &mut |_| {}).map_or(0, |o| o.summary.events);
    let mut group = c.benchmark_group("engine");
    group.sample_size(10);
    group.throughput(Throughput::Elements(events));
    group.bench_function(name, |b| {
        b.iter(|| spillway_sim::simulate(compiled, &mut |_| {}).map(|o| o.summary.events));
    });
    group.finish();
}

fn engine(c: &mut Criterion) {
    if let Ok(mut builtin) = scenario::builtin() {
        builtin.scenario.duration = Dur::secs(6 * 3600);
        case(c, "builtin-6h", &builtin);
    }
    let big = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/m-large-14d.yaml");
    if let Ok(mut m) = scenario::load(&big) {
        m.scenario.duration = Dur::secs(3600);
        case(c, "m-large-1h", &m);
    }
}

criterion_group!(benches, engine);
criterion_main!(benches);
