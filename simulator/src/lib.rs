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
