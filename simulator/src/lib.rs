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
