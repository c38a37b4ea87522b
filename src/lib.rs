//! Spillway schedules GPU inference pods on hybrid Kubernetes clusters:
//! data-center / edge GPU pools first, elastic cloud pools only when those
//! are full, and back again when the peak is over.
//!
//! ```text
//!             watch events                         HTTP / gRPC / ticks
//!  API server ─────────────► index (plain structs) ───────┐
//!                                                         ▼
//!                                       decision core  (pure, sync, no I/O, time is a parameter)
//!                                         placement · unit accounting · deletion cost
//!                                                         │  decisions as data
//!                        ┌────────────────┬───────────────┴──────────┬─────────────────┐
//!                        ▼                ▼                          ▼                 ▼
//!                    extender        controllers                 expander         simulator world
//! ```
//!
//! - [`decision`] — the pure core every driver calls (always built).
//! - [`crd`] — the ResourcePolicy API types and their conversion into the
//!   core's [`decision::Policy`] (always built; the Kubernetes schema derive
//!   only with the `runtime` feature).
//! - `index`, `extender`, `scaler`, `serve`, `cli`, `explain` — Kubernetes-facing code behind the `runtime`
//!   feature, so the simulator links the core alone.

pub mod crd;
pub mod decision;

#[cfg(feature = "runtime")]
pub mod cli;
#[cfg(feature = "runtime")]
pub mod expander;
#[cfg(feature = "runtime")]
pub mod explain;
#[cfg(feature = "runtime")]
pub mod extender;
#[cfg(feature = "runtime")]
pub mod index;
#[cfg(feature = "runtime")]
pub mod load;
#[cfg(feature = "runtime")]
pub mod scaler;
#[cfg(feature = "runtime")]
pub mod serve;
