//! The index: Kubernetes objects converted once into the core's snapshot
//! types ([`convert`]). Everything past this module sees plain structs.
//!
//! ```text
//!  k8s_openapi Node / Pod, ResourcePolicy (either group) ──convert──► decision::{Node, Pod, Policy}
//! ```
//!
//! A malformed object is reported as a [`convert::ConvertError`]; callers log
//! it and skip the object, never fail on it.

pub mod convert;
pub mod feed;
