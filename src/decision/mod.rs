//! The decision core: every ResourcePolicy rule, once.
//!
//! ```text
//!   Snapshot (nodes, pods, policies) ─┐         ┌─► FilterOutcome  (extender /filter, simulator placement)
//!   Ledger (assumed placements)  ─────┼─► rule ─┼─► NodeScore      (extender /prioritize)
//!   request data, now ────────────────┘         ├─► PreemptOutcome (extender /preempt)
//!                                               └─► deletion costs (policy controller, simulator scale-in)
//! ```
//!
//! Synchronous, deterministic, no I/O and no clock: time arrives as `now`.
//! It depends on std, serde and thiserror only and never sees Kubernetes API
//! types; [`crate::index`] and [`crate::crd`] convert those once, at the
//! boundary. The extender, the controllers, the autoscaler hook and the
//! simulator all call these functions, so what the simulator predicts is
//! what production does.
//!
//! Where each rule lives:
//!
//! | rule | function |
//! |---|---|
//! | which policy governs a pod; conflicts | [`governance::governing_policy`] |
//! | which unit a node belongs to | [`policy::Policy::unit_of_node`] |
//! | `matchLabelKeys` groups; missing keys | [`policy::Policy::group_of`] |
//! | what counts in a unit (`ignore*Pod`, reservations); kept incrementally | [`usage::unit_usage`], [`usage::Counts`] |
//! | `max` / `maxResources` | [`admission::cap_reached`] |
//! | `whenTryNextUnits`, `strategy`, wait clock | [`admission::admissible_unit`] |
//! | Filter: eligible / failed / unresolvable with reasons | [`filter::filter`] |
//! | `preemptPolicy` | [`filter::preempt`], [`filter::preemption_may_help`] |
//! | scores: unit bands, GPU bin-packing | [`score::scores`] |
//! | reservations with TTL; caps re-checked at Bind | [`ledger::Ledger`], [`filter::admit_bind`] |
//! | scale-in order | [`deletion::deletion_costs`] |
//! | controller writes: deletion costs, unit labels, per-unit status | [`reconcile::reconcile`] |
//! | spill-back: which pod moves to an earlier unit, and when | [`spillback::spill_back`] |
//! | replicas: HPA v2 recommendation, latency objectives | [`hpa::recommend_replicas`] |
//! | scaler queries, observations, drain-aware scale-down order | [`scaler::observe`], [`scaler::scale_down_order`] |
//! | resource fit (for drivers without a scheduler) | [`fit::feasible_nodes`] |
//! | which node group cluster-autoscaler grows | [`expand::best_options`] |
//! | one cloud node ahead of demand (`spec.headroom`) | [`headroom::headroom_ask`] |
#![deny(missing_docs)]

pub mod admission;
pub mod deletion;
pub mod expand;
pub mod filter;
pub mod fit;
pub mod governance;
pub mod headroom;
pub mod hpa;
pub mod ledger;
mod names;
pub mod policy;
pub mod quantity;
pub mod reasons;
pub mod reconcile;
pub mod scaler;
pub mod score;
pub mod snapshot;
pub mod spillback;
pub mod time;
pub mod usage;

#[cfg(test)]
mod counts_tests;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
pub(crate) mod testutil;

pub use admission::{Admission, Skip, Skipped, UnitState, WaitCause, admissible_unit, cap_reached};
pub use deletion::{CostClass, DELETION_COST_ANNOTATION, deletion_cost, deletion_costs};
pub use filter::{
    Decision, FilterOutcome, FilterRequest, PreemptOutcome, admit_bind, filter, filter_counted,
    preempt,
};
pub use fit::{Unfit, feasible_nodes, fit, fitting_nodes};
pub use governance::{Governance, governing_policy, governing_policy_in};
pub use ledger::{BIND_TTL, FILTER_TTL, Ledger, Reservation, UNBOUND_GRACE};
pub use policy::{
    FieldError, GroupKey, NextUnitPolicy, Policy, PolicyKey, PreemptPolicy, ResourceKind, Strategy,
    Unit,
};
pub use quantity::{GPU, Resources, parse_quantity};
pub use score::{NodeScore, scores};
pub use snapshot::{Labels, Node, Pod, PodPhase, Snapshot};
pub use time::{Time, parse_duration};
pub use usage::{Placement, UnitUsage, unit_usage};
