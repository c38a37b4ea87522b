//! Writes ResourcePolicy `status.conditions` (the `Ready` condition) from
//! the policy watch, off the request path: an invalid policy that reached
//! the API server (CEL cannot check everything the core does) is reported
//! on the object itself, with every bad field named.
//!
//! ```text
//!  policy watch ──StatusWrite──► unbounded channel ──► this task ──► PATCH …/resourcepolicies/NAME/status
//! ```
//!
//! A write comes back as a watch event; [`crate::index::feed::policy_event_reporting`]
//! then finds the condition in place and asks for nothing, so there is no
//! write loop.

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::crd::{COMPAT_GROUP, GROUP, KIND, VERSION};
use crate::extender::metrics::Metrics;
use crate::index::feed::{Group, StatusWrite};

/// The status subresource patch for `w`: the `Ready` condition and the
/// generation it describes (a merge patch: `units` are left alone).
#[must_use]
pub fn status_patch(w: &StatusWrite) -> serde_json::Value {
    json!({"status": {"observedGeneration": w.generation, "conditions": [w.condition]}})
}

/// Performs one status write.
///
/// # Errors
/// The API server's answer when the patch fails.
pub async fn write(client: kube::Client, w: &StatusWrite) -> Result<(), kube::Error> {
    let group = match w.group {
        Group::Spillway => GROUP,
        Group::Compat => COMPAT_GROUP,
    };
    let gvk = GroupVersionKind::gvk(group, VERSION, KIND);
    let ar = ApiResource::from_gvk_with_plural(&gvk, "resourcepolicies");
    let api: Api<DynamicObject> = Api::namespaced_with(client, &w.namespace, &ar);
    api.patch_status(
        &w.name,
        &PatchParams::default(),
        &Patch::Merge(status_patch(w)),
    )
    .await
    .map(|_| ())
}

/// Runs until the channel closes, one write at a time (policies change rarely).
pub async fn run(
    client: kube::Client,
    mut writes: UnboundedReceiver<StatusWrite>,
    metrics: Metrics,
) {
    while let Some(w) = writes.recv().await {
        match write(client.clone(), &w).await {
            Ok(()) => metrics
                .api_writes
                .with_label_values(&["policy_status", "ok"])
                .inc(),
            Err(e) => {
                metrics
                    .api_writes
                    .with_label_values(&["policy_status", "error"])
                    .inc();
                tracing::warn!(policy = %format!("{}/{}", w.namespace, w.name), error = %e, "status write failed");
            }
        }
    }
}
