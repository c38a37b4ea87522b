//! `spillway-sim`: a discrete-event capacity planner that replays real traffic
//! through Spillway's decision core.
//!
//! ```text
//!  scenario.yaml ─► scenario::load ─► world::World (engine + cluster model) ─► outcome ─► report
//!                                        │ calls
//!                                        ▼
//!                    spillway::decision (filter, scores, deletion costs, HPA, expander)
//! ```
//!
//! The simulator links the decision core without the runtime feature, so
//! every placement, scaling and node-group decision it makes is the one the
//! cluster components make.

mod csv_text;
pub mod hist;
pub mod outcome;
pub mod perf;
pub mod plan;
pub mod prefetch;
pub mod probe;
pub mod profile;
pub mod report;
pub mod router;
pub mod scenario;
pub mod timers;
pub mod traffic;
pub mod world;

/// Runs a compiled scenario to completion.
///
/// # Errors
/// [`world::SimError`] when a traffic source cannot be opened.
pub fn simulate(
    compiled: &scenario::Compiled,
    progress: &mut dyn FnMut(f64),
) -> Result<outcome::Outcome, world::SimError> {
    Ok(world::World::new(compiled)?.run(progress))
}

/// [`simulate`], and for each Spillway extension a policy enables, the same
/// scenario and seed again without it, so the summary says what it changed:
/// for `spillBack`, the cloud GPU-hours and cost it saved for the evictions
/// it made; for `headroom`, the pending time and latency it gained and the
/// cost it paid.
///
/// # Errors
/// [`world::SimError`] when a traffic source cannot be opened.
pub fn simulate_with_baseline(
    compiled: &scenario::Compiled,
    progress: &mut dyn FnMut(f64),
) -> Result<outcome::Outcome, world::SimError> {
    let spill_back = compiled.policies.iter().any(|p| p.spill_back.is_some());
    let headroom = compiled.policies.iter().any(|p| p.headroom.is_some());
    let runs = 1.0 + f64::from(u8::from(spill_back)) + f64::from(u8::from(headroom));
    let mut done = 0.0;
    let step = |progress: &mut dyn FnMut(f64), f: f64| progress((done + f) / runs);
    let mut outcome = simulate(compiled, &mut |f| step(progress, f))?;
    done += 1.0;
    if spill_back {
        let mut without = compiled.clone();
        for p in &mut without.policies {
            p.spill_back = None;
        }
        let mut step = |f: f64| progress((done + f) / runs);
        let baseline = simulate(&without, &mut step)?;
        done += 1.0;
        fill_spill_back(&mut outcome.summary, &baseline.summary);
    }
    if headroom {
        let mut without = compiled.clone();
        for p in &mut without.policies {
            p.headroom = None;
        }
        let mut step = |f: f64| progress((done + f) / runs);
        let baseline = simulate(&without, &mut step)?;
        fill_headroom(&mut outcome.summary, &baseline.summary);
    }
    Ok(outcome)
}

fn fill_spill_back(sum: &mut outcome::Summary, baseline: &outcome::Summary) {
    let cloud = |s: &outcome::Summary| -> (f64, f64) {
        s.pools
            .iter()
            .filter(|p| p.kind == "cloud")
            .fold((0.0, 0.0), |(used, billed), p| {
                (used + p.gpu_hours_used, billed + p.gpu_hours)
            })
    };
    let (used, billed) = cloud(sum);
    let (base_used, base_billed) = cloud(baseline);
    let cost_total = sum.cost_total;
    if let Some(sb) = sum.spill_back.as_mut() {
        sb.cloud_gpu_hours_used = used;
        sb.baseline_cloud_gpu_hours_used = base_used;
        sb.cloud_gpu_hours = billed;
        sb.baseline_cloud_gpu_hours = base_billed;
        sb.baseline_cost_total = baseline.cost_total;
        sb.cost_saved = baseline.cost_total - cost_total;
        sb.baseline_slo_attainment = baseline.services.iter().map(|s| s.slo.attainment).collect();
    }
}

fn fill_headroom(sum: &mut outcome::Summary, baseline: &outcome::Summary) {
    let (cost_total, pending) = (sum.cost_total, sum.pending_time);
    let ttft: Vec<f64> = sum.services.iter().map(|s| s.ttft.p95).collect();
    let slo: Vec<f64> = sum.services.iter().map(|s| s.slo.attainment).collect();
    if let Some(h) = sum.headroom.as_mut() {
        h.cost_total = cost_total;
        h.baseline_cost_total = baseline.cost_total;
        h.cost_paid = cost_total - baseline.cost_total;
        h.pending_time = pending;
        h.baseline_pending_time = baseline.pending_time;
        h.ttft_p95_s = ttft;
        h.baseline_ttft_p95_s = baseline.services.iter().map(|s| s.ttft.p95).collect();
        h.slo_attainment = slo;
        h.baseline_slo_attainment = baseline.services.iter().map(|s| s.slo.attainment).collect();
    }
}

/// Runs a compiled scenario with each service's requests drawn ahead on a
/// producer thread (`true`) or inline (`false`), whatever the run's length.
/// [`simulate`] chooses by itself; the outputs are the same either way.
///
/// # Errors
/// [`world::SimError`] when a traffic source cannot be opened.
pub fn simulate_drawing_ahead(
    compiled: &scenario::Compiled,
    ahead: bool,
    progress: &mut dyn FnMut(f64),
) -> Result<outcome::Outcome, world::SimError> {
    Ok(world::World::with_drawing(compiled, Some(ahead))?.run(progress))
}
