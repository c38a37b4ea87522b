//! The replica scaler's load fixture: a fake API server with `n`
//! GpuAutoscalers (one per namespace, each over a Deployment of
//! [`PODS`] pods) and an exporter page with their pods' vLLM and DCGM
//! series, for `spillway-load scaler` to run a real Prometheus against.
//!
//! Every autoscaler reads queue depth and GPU utilisation; every tenth also
//! a TTFT quantile. The series sit at their targets, so a sync after the
//! first writes nothing: the steady state a large cluster spends most time in.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

/// Pods per autoscaler's Deployment.
pub const PODS: usize = 4;

/// Namespace of autoscaler `i`.
#[must_use]
pub fn namespace(i: usize) -> String {
    format!("svc-{i:04}")
}

fn autoscaler(i: usize, prometheus: &str) -> Value {
    let mut metrics = vec![
        json!({"type": "QueueDepth", "queueDepth": {"averageValue": 5}}),
        json!({"type": "GPU", "gpu": {"metric": "DCGM_FI_DEV_GPU_UTIL", "averageValue": 50}}),
    ];
    if i.is_multiple_of(10) {
        metrics.push(json!({"type": "Latency", "latency": {"objective": "2s", "window": "1m"}}));
    }
    json!({"apiVersion": "scheduling.spillway.io/v1alpha1", "kind": "GpuAutoscaler",
           "metadata": {"name": "llm", "namespace": namespace(i), "uid": format!("ga-{i}"), "generation": 1},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llm"},
                    "minReplicas": 1, "maxReplicas": 16, "metrics": metrics,
                    "prometheus": {"url": prometheus}}})
}

fn pods(ns: &str) -> Value {
    let items: Vec<Value> = (0..PODS)
        .map(|p| {
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": format!("{ns}-{p}"), "namespace": ns, "uid": format!("{ns}-{p}"),
                                "labels": {"app": ns}, "creationTimestamp": "2026-01-01T00:00:00Z"},
                   "spec": {"nodeName": "n", "containers": [{"name": "c", "image": "vllm"}]},
                   "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": items})
}

/// The exporter page: per pod, queue depth and running requests at the
/// target, one GPU at 50 %, and a TTFT histogram for every tenth service.
#[must_use]
pub fn exporter_page(n: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        let ns = namespace(i);
        for p in 0..PODS {
            let labels = format!("namespace=\"{ns}\",pod=\"{ns}-{p}\"");
            let _ = writeln!(out, "vllm:num_requests_waiting{{{labels}}} 5");
            let _ = writeln!(out, "vllm:num_requests_running{{{labels}}} 8");
            let _ = writeln!(out, "DCGM_FI_DEV_GPU_UTIL{{{labels},gpu=\"0\"}} 50");
            if i.is_multiple_of(10) {
                for (le, count) in [("0.5", 100), ("1", 180), ("2", 195), ("+Inf", 200)] {
                    let _ = writeln!(
                        out,
                        "vllm:time_to_first_token_seconds_bucket{{{labels},le=\"{le}\"}} {count}"
                    );
                }
                let _ = writeln!(
                    out,
                    "vllm:time_to_first_token_seconds_count{{{labels}}} 200"
                );
            }
        }
    }
    out
}

/// API calls the fixture answered, by kind.
#[derive(Debug, Default)]
pub struct Calls {
    /// GETs (list, discovery, scale, pods).
    pub reads: AtomicUsize,
    /// PATCH and POST (status, scale, Events, pods).
    pub writes: AtomicUsize,
}

#[derive(Clone)]
struct Fixture {
    list: Arc<Value>,
    /// Status written per namespace, returned by later lists (as the API
    /// server stores it).
    statuses: Arc<std::sync::Mutex<std::collections::BTreeMap<String, Value>>>,
    page: Arc<String>,
    calls: Arc<Calls>,
}

async fn list(State(f): State<Fixture>) -> axum::Json<Value> {
    f.calls.reads.fetch_add(1, Ordering::Relaxed);
    let mut list = (*f.list).clone();
    let statuses = f
        .statuses
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(items) = list["items"].as_array_mut() {
        for item in items {
            if let Some(s) = item["metadata"]["namespace"]
                .as_str()
                .and_then(|ns| statuses.get(ns))
            {
                item["status"] = s.clone();
            }
        }
    }
    axum::Json(list)
}

async fn status(
    State(f): State<Fixture>,
    Path((ns, _name)): Path<(String, String)>,
    axum::Json(body): axum::Json<Value>,
) -> (StatusCode, axum::Json<Value>) {
    f.calls.writes.fetch_add(1, Ordering::Relaxed);
    f.statuses
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(ns, body["status"].clone());
    (
        StatusCode::OK,
        axum::Json(json!({"apiVersion": "v1", "kind": "Status", "metadata": {}})),
    )
}

async fn discovery(State(f): State<Fixture>) -> axum::Json<Value> {
    f.calls.reads.fetch_add(1, Ordering::Relaxed);
    axum::Json(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apps/v1",
        "resources": [
            {"name": "deployments", "singularName": "", "namespaced": true, "kind": "Deployment", "verbs": ["get"]},
            {"name": "deployments/scale", "singularName": "", "namespaced": true, "kind": "Scale", "verbs": ["get", "patch"]}]}),
    )
}

async fn scale(
    State(f): State<Fixture>,
    Path((ns, name)): Path<(String, String)>,
) -> axum::Json<Value> {
    f.calls.reads.fetch_add(1, Ordering::Relaxed);
    axum::Json(json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": PODS}, "status": {"replicas": PODS, "selector": format!("app={ns}")}}))
}

async fn pod_list(State(f): State<Fixture>, Path(ns): Path<String>) -> axum::Json<Value> {
    f.calls.reads.fetch_add(1, Ordering::Relaxed);
    axum::Json(pods(&ns))
}

async fn write(State(f): State<Fixture>) -> (StatusCode, axum::Json<Value>) {
    f.calls.writes.fetch_add(1, Ordering::Relaxed);
    (
        StatusCode::OK,
        axum::Json(json!({"apiVersion": "v1", "kind": "Status", "metadata": {}})),
    )
}

async fn page(State(f): State<Fixture>) -> String {
    (*f.page).clone()
}

/// The fixture's router: the API server calls the scaler makes and the
/// exporter page at `/exporter`. `prometheus` is the URL the autoscalers name.
pub fn router(n: usize, prometheus: &str, calls: Arc<Calls>) -> Router {
    let items: Vec<Value> = (0..n).map(|i| autoscaler(i, prometheus)).collect();
    let fixture = Fixture {
        list: Arc::new(
            json!({"apiVersion": "scheduling.spillway.io/v1alpha1", "kind": "GpuAutoscalerList",
                              "metadata": {"resourceVersion": "1"}, "items": items}),
        ),
        page: Arc::new(exporter_page(n)),
        statuses: Arc::default(),
        calls,
    };
    Router::new()
        .route(
            "/apis/scheduling.spillway.io/v1alpha1/gpuautoscalers",
            get(list),
        )
        .route("/apis/apps/v1", get(discovery))
        .route(
            "/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale",
            get(scale).patch(write),
        )
        .route("/api/v1/namespaces/{ns}/pods", get(pod_list))
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}",
            axum::routing::patch(write),
        )
        .route(
            "/apis/scheduling.spillway.io/v1alpha1/namespaces/{ns}/gpuautoscalers/{name}/status",
            axum::routing::patch(status),
        )
        .route(
            "/apis/events.k8s.io/v1/namespaces/{ns}/events",
            axum::routing::post(write),
        )
        .route("/exporter", get(page))
        .with_state(fixture)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_autoscaler_of_the_fixture_is_valid_and_its_series_are_on_the_page() {
        let a: crate::crd::gpu_autoscaler::GpuAutoscaler =
            serde_json::from_value(autoscaler(10, "http://p:9090")).unwrap();
        assert_eq!(a.spec.to_scaler().unwrap().metrics.len(), 3);
        let page = exporter_page(11);
        assert_eq!(
            page.matches("vllm:num_requests_waiting{").count(),
            11 * PODS
        );
        assert_eq!(
            page.matches("vllm:time_to_first_token_seconds_bucket{")
                .count(),
            2 * PODS * 4
        );
    }
}
