//! The kube-scheduler extender: wire types and the mapping between the
//! scheduler's JSON and the decision core.
//!
//! ```text
//!  kube-scheduler ──POST {prefix}/{filter,prioritize,bind,preempt}──► wire (PascalCase JSON)
//!        ▲                                                              │ index::convert (pod)
//!        └──────── ExtenderFilterResult / HostPriorityList / … ◄── core decision (filter, scores, …)
//! ```
//!
//! [`wire`] holds the upstream types (`k8s.io/kube-scheduler/extender/v1`,
//! which carry no json tags, hence PascalCase keys) and the pure functions
//! that turn core decisions into answers the scheduler accepts;
//! [`backend`] holds the index, the reservations and the binder; [`server`]
//! is the axum router. Adapters stay thin: decode, call the core, encode.

pub mod backend;
pub mod metrics;
pub mod server;
pub mod wire;
