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

pub mod hist;
pub mod outcome;
pub mod perf;
pub mod plan;
pub mod prefetch;
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

/// [`simulate`], and when a policy enables `spillBack`, the same scenario
/// and seed again with spill-back removed from every policy, so that the
/// summary's `spill_back` says what it saved (cloud GPU-hours, cost) for the
/// evictions it made.
///
/// # Errors
/// [`world::SimError`] when a traffic source cannot be opened.
pub fn simulate_with_baseline(
    compiled: &scenario::Compiled,
    progress: &mut dyn FnMut(f64),
) -> Result<outcome::Outcome, world::SimError> {
    if compiled.policies.iter().all(|p| p.spill_back.is_none()) {
        return simulate(compiled, progress);
    }
    let mut outcome = simulate(compiled, &mut |f| progress(f / 2.0))?;
    let mut without = compiled.clone();
    for p in &mut without.policies {
        p.spill_back = None;
    }
    let baseline = simulate(&without, &mut |f| progress(0.5 + f / 2.0))?;
    let cloud = |s: &outcome::Summary| -> (f64, f64) {
        s.pools
            .iter()
            .filter(|p| p.kind == "cloud")
            .fold((0.0, 0.0), |(used, billed), p| {
                (used + p.gpu_hours_used, billed + p.gpu_hours)
            })
    };
    let (used, billed) = cloud(&outcome.summary);
    let (base_used, base_billed) = cloud(&baseline.summary);
    let sum = &mut outcome.summary;
    if let Some(sb) = sum.spill_back.as_mut() {
        sb.cloud_gpu_hours_used = used;
        sb.baseline_cloud_gpu_hours_used = base_used;
        sb.cloud_gpu_hours = billed;
        sb.baseline_cloud_gpu_hours = base_billed;
        sb.baseline_cost_total = baseline.summary.cost_total;
        sb.cost_saved = baseline.summary.cost_total - sum.cost_total;
        sb.baseline_slo_attainment = baseline
            .summary
            .services
            .iter()
            .map(|s| s.slo.attainment)
            .collect();
    }
    Ok(outcome)
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
