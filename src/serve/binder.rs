//! The binder that writes to the API server: the unit's labels and
//! annotations are patched onto the pod, then its `pods/binding` is created
//! (what kube-scheduler's default binder does, plus the patch).
//!
//! Each bind is its own pair of API calls on a shared client; nothing here
//! queues or rate-limits binds, so a burst binds as fast as the API server
//! answers.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::extender::backend::{BindError, BindRequest, Binder};

/// Binds through a kube-rs client.
#[derive(Clone)]
pub struct KubeBinder {
    client: kube::Client,
}

impl KubeBinder {
    /// A binder over `client`.
    #[must_use]
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

/// The merge patch that puts the unit's labels and annotations on the pod.
/// It names the pod's UID, so a pod deleted and re-created under the same
/// name is not patched by mistake.
#[must_use]
pub fn unit_patch(req: &BindRequest) -> serde_json::Value {
    json!({
        "metadata": {
            "uid": req.uid,
            "labels": req.labels,
            "annotations": req.annotations,
        }
    })
}

/// The `pods/binding` body: the pod (with its UID as precondition) to the node.
#[must_use]
pub fn binding(req: &BindRequest) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": req.name, "namespace": req.namespace, "uid": req.uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": req.node},
    })
}

/// Maps an API error of a bind to its [`BindError`]: the pod gone (404) or
/// changed / already bound (409) is a conflict; anything else is the API's.
/// (A vanished node is caught before the call, by the core's bind check
/// against the index.)
fn bind_error(req: &BindRequest, e: kube::Error) -> BindError {
    let pod = format!("{}/{}", req.namespace, req.name);
    match &e {
        kube::Error::Api(status) if status.code == 404 || status.code == 409 => {
            BindError::Conflict(pod)
        }
        _ => BindError::Api(format!("{pod}: {e}")),
    }
}

impl Binder for KubeBinder {
    async fn bind(&self, req: BindRequest) -> Result<(), BindError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &req.namespace);
        if !req.labels.is_empty() || !req.annotations.is_empty() {
            pods.patch(
                &req.name,
                &PatchParams::default(),
                &Patch::Merge(unit_patch(&req)),
            )
            .await
            .map_err(|e| bind_error(&req, e))?;
        }
        pods.create_subresource::<_, serde_json::Value>(
            "binding",
            &req.name,
            &PostParams::default(),
            &binding(&req),
        )
        .await
        .map_err(|e| bind_error(&req, e))?;
        Ok(())
    }
}
