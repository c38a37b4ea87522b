//! The adapters that write to the API server (the kube-rs binder and the
//! notice writer), driven against an in-process fake of the few API calls
//! they make: it records each request and answers as the API server would.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{Request, Response};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{Value, json};
use spillway::decision::time::Time;
use spillway::extender::backend::{BindError, BindRequest, Binder, Notice, PodRef};
use spillway::extender::metrics::Metrics;
use spillway::serve::binder::KubeBinder;
use spillway::serve::writer;

/// One recorded API call.
#[derive(Clone, Debug)]
struct Call {
    method: String,
    path: String,
    content_type: String,
    body: Value,
}

/// The fake API server: records calls; answers `binding` POSTs with
/// `binding_status` (201 unless set).
#[derive(Clone, Default)]
struct FakeApi {
    calls: Arc<Mutex<Vec<Call>>>,
    binding_status: Arc<Mutex<Option<u16>>>,
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
           "status": if code < 300 { "Success" } else { "Failure" },
           "message": message, "reason": reason, "code": code})
}

impl FakeApi {
    fn client(&self) -> kube::Client {
        let api = self.clone();
        let svc = tower::service_fn(move |req: Request<Body>| {
            let api = api.clone();
            async move {
                let (parts, body) = req.into_parts();
                let bytes = body.collect().await.unwrap().to_bytes();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let call = Call {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_owned(),
                    content_type: parts
                        .headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned(),
                    body: body.clone(),
                };
                api.calls.lock().unwrap().push(call.clone());
                let (code, answer) = api.answer(&call);
                Ok::<_, Infallible>(
                    Response::builder()
                        .status(code)
                        .header("content-type", "application/json")
                        .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                        .unwrap(),
                )
            }
        });
        kube::Client::new(svc, "default")
    }

    fn answer(&self, call: &Call) -> (u16, Value) {
        let segments: Vec<&str> = call.path.trim_matches('/').split('/').collect();
        match (call.method.as_str(), segments.as_slice()) {
            ("PATCH", ["api", "v1", "namespaces", ns, "pods", name]) => (
                200,
                json!({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": name, "namespace": ns,
                                    "labels": call.body["metadata"]["labels"],
                                    "annotations": call.body["metadata"]["annotations"]}}),
            ),
            ("POST", ["api", "v1", "namespaces", _, "pods", name, "binding"]) => {
                match *self.binding_status.lock().unwrap() {
                    Some(code) => (
                        code,
                        status_body(code, "Conflict", &format!("pod {name} is already assigned")),
                    ),
                    None => (201, status_body(201, "", "")),
                }
            }
            ("POST", ["apis", "events.k8s.io", "v1", "namespaces", _, "events"]) => {
                (201, call.body.clone())
            }
            (
                "PATCH",
                [
                    "apis",
                    group,
                    version,
                    "namespaces",
                    ns,
                    "resourcepolicies",
                    name,
                    "status",
                ],
            ) => (
                200,
                json!({"apiVersion": format!("{group}/{version}"), "kind": "ResourcePolicy",
                       "metadata": {"name": name, "namespace": ns},
                       "status": call.body["status"]}),
            ),
            _ => (
                404,
                status_body(404, "NotFound", "no such route in the fake"),
            ),
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

fn request(annotations: &[(&str, &str)]) -> BindRequest {
    BindRequest {
        namespace: "ml".into(),
        name: "qwen-0".into(),
        uid: "uid-0".into(),
        node: "gpu-dc-1".into(),
        annotations: annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

#[tokio::test]
async fn bind_is_one_binding_that_carries_the_unit_annotations() {
    let api = FakeApi::default();
    let binder = KubeBinder::new(api.client());
    binder
        .bind(request(&[("example.com/billing", "datacenter")]))
        .await
        .unwrap();
    let calls = api.calls();
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(calls[0].method, "POST");
    assert_eq!(calls[0].path, "/api/v1/namespaces/ml/pods/qwen-0/binding");
    assert_eq!(calls[0].content_type, "application/json");
    let body = &calls[0].body;
    assert_eq!(body["kind"], "Binding");
    assert_eq!(body["metadata"]["name"], "qwen-0");
    assert_eq!(body["metadata"]["uid"], "uid-0");
    assert_eq!(
        body["metadata"]["annotations"]["example.com/billing"],
        "datacenter"
    );
    assert_eq!(body["target"]["kind"], "Node");
    assert_eq!(body["target"]["name"], "gpu-dc-1");
}

#[tokio::test]
async fn a_pod_without_unit_annotations_gets_a_plain_binding() {
    let api = FakeApi::default();
    KubeBinder::new(api.client())
        .bind(request(&[]))
        .await
        .unwrap();
    let calls = api.calls();
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert!(calls[0].path.ends_with("/binding"));
    assert!(
        calls[0].body["metadata"].get("annotations").is_none(),
        "{:?}",
        calls[0].body
    );
}

#[tokio::test]
async fn binding_errors_map_to_conflict_or_api() {
    let api = FakeApi::default();
    let binder = KubeBinder::new(api.client());
    *api.binding_status.lock().unwrap() = Some(409);
    let err = binder.bind(request(&[])).await.unwrap_err();
    assert!(
        matches!(err, BindError::Conflict(ref p) if p == "ml/qwen-0"),
        "{err}"
    );
    *api.binding_status.lock().unwrap() = Some(500);
    let err = binder.bind(request(&[])).await.unwrap_err();
    assert!(matches!(err, BindError::Api(_)), "{err}");
    assert_eq!(err.metric_label(), "api");
}

fn pod_ref(uid: &str) -> PodRef {
    PodRef {
        namespace: "ml".into(),
        name: format!("p-{uid}"),
        uid: uid.into(),
    }
}

async fn wait_for(api: &FakeApi, n: usize) -> Vec<Call> {
    for _ in 0..500 {
        let calls = api.calls();
        if calls.len() >= n {
            return calls;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    api.calls()
}

#[tokio::test]
async fn the_writer_persists_wait_clocks_and_rate_limits_events() {
    let api = FakeApi::default();
    let metrics = Metrics::new();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let writer = tokio::spawn(writer::run(
        api.client(),
        kube::runtime::events::Reporter {
            controller: "spillway".into(),
            instance: Some("spillway-0".into()),
        },
        rx,
        Duration::from_secs(300),
        metrics.clone(),
    ));
    let since = Time::from_secs(1_800_000_000);
    for _ in 0..3 {
        tx.send(Notice::WaitSince {
            pod: pod_ref("a"),
            since,
        })
        .unwrap();
        tx.send(Notice::Waiting {
            pod: pod_ref("a"),
            message: "pod waits for room in unit \"dc\"".into(),
        })
        .unwrap();
        tx.send(Notice::Spilled {
            pod: pod_ref("b"),
            message: "admitted to unit \"cloud\"".into(),
        })
        .unwrap();
    }
    drop(tx);
    writer.await.unwrap();
    let calls = wait_for(&api, 3).await;
    assert_eq!(calls.len(), 3, "one write per pod and reason: {calls:#?}");
    let patch = calls.iter().find(|c| c.method == "PATCH").unwrap();
    assert_eq!(patch.path, "/api/v1/namespaces/ml/pods/p-a");
    assert_eq!(
        patch.body["metadata"]["annotations"]["scheduling.spillway.io/wait-since"],
        "2027-01-15T08:00:00Z"
    );
    let mut reasons: Vec<&str> = calls
        .iter()
        .filter(|c| c.path.ends_with("/events"))
        .map(|c| c.body["reason"].as_str().unwrap())
        .collect();
    reasons.sort_unstable();
    assert_eq!(reasons, ["Spilled", "WaitingForUnit"]);
    let event = calls
        .iter()
        .find(|c| c.body["reason"] == "Spilled")
        .unwrap();
    assert_eq!(event.body["regarding"]["uid"], "b");
    assert_eq!(event.body["reportingController"], "spillway");
    assert!(
        metrics
            .render()
            .contains(r#"spillway_api_writes_total{kind="spilled",result="suppressed"} 2"#),
        "{}",
        metrics.render()
    );
}
