//! The binder that writes to the API server: one `pods/binding` create per
//! pod, carrying the unit's `podAnnotations` and the pod's deletion cost
//! ([`crate::decision::reconcile::bind_annotations`]; the API server copies
//! a Binding's annotations onto the pod in the same update that sets its
//! node, so they need no call of their own). The unit's `podLabels` cannot
//! travel that way; the policy controller patches them on at its next
//! reconcile (`--reconcile-period`, 1 s).
//!
//! Each bind is its own API call on a shared client; nothing here queues or
//! rate-limits binds, so a burst binds as fast as the API server answers.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
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

/// The `pods/binding` body: the pod (with its UID as precondition, so a pod
/// deleted and re-created under the same name is not bound by mistake) to
/// the node, with the unit's annotations for the API server to put on the
/// pod.
#[must_use]
pub fn binding(req: &BindRequest) -> serde_json::Value {
    let mut metadata = json!({"name": req.name, "namespace": req.namespace, "uid": req.uid});
    if !req.annotations.is_empty() {
        metadata["annotations"] = json!(req.annotations);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": metadata,
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
