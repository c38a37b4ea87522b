//! The extender's router driven in-process (tower `oneshot`): captured
//! kube-scheduler requests, bad input, binds through a recording binder,
//! and `max` under concurrent, out-of-order Filter/Bind sequences.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use spillway::crd::ResourcePolicySpec;
use spillway::decision::snapshot::{Node, PodPhase};
use spillway::decision::time::Time;
use spillway::decision::{GPU, Resources};
use spillway::extender::backend::{BindError, BindRequest, Binder, Extender, Index, Notice};
use spillway::extender::server::{RouterConfig, router};
use tower::ServiceExt;

/// Records binds; fails those whose pod name is listed. On success it plays
/// the watch: the index learns the pod is bound.
#[derive(Clone, Default)]
struct FakeBinder {
    calls: Arc<Mutex<Vec<BindRequest>>>,
    notices: Arc<Mutex<Vec<Notice>>>,
    hang: Arc<Mutex<bool>>,
    fail: Arc<Mutex<Vec<String>>>,
    ext: Arc<Mutex<Option<Arc<Extender<FakeBinder>>>>>,
}

impl Binder for FakeBinder {
    async fn bind(&self, req: BindRequest) -> Result<(), BindError> {
        tokio::task::yield_now().await;
        if *self.hang.lock().unwrap() {
            std::future::pending::<()>().await;
        }
        self.calls.lock().unwrap().push(req.clone());
        if self.fail.lock().unwrap().contains(&req.name) {
            return Err(BindError::Conflict(req.name));
        }
        let ext = self.ext.lock().unwrap().clone();
        if let Some(ext) = ext {
            ext.with_index(|ix| {
                if let Some(mut pod) = ix
                    .seen
                    .get(&req.uid)
                    .cloned()
                    .or_else(|| ix.snapshot.pod(&req.uid).cloned())
                {
                    pod.node = Some(req.node.clone());
                    pod.phase = PodPhase::Running;
                    ix.snapshot.upsert_pod(pod);
                    ix.ledger.release(&req.uid);
                }
            });
        }
        Ok(())
    }
}

fn node(name: &str, pool: &str) -> Node {
    Node {
        name: name.into(),
        labels: [("pool".to_owned(), pool.to_owned())].into(),
        allocatable: Resources::new().with(GPU, 8),
        unschedulable: false,
    }
}

fn extender(local_max: u32) -> (Arc<Extender<FakeBinder>>, FakeBinder) {
    build(
        json!({
            "selector": {"app": "llm"},
            "units": [
                {"name": "local", "resource": "idc", "nodeSelector": {"pool": "local"}, "max": local_max, "podLabels": {"spillway.io/unit": "local"}, "podAnnotations": {"example.com/unit": "local"}},
                {"name": "cloud", "resource": "elastic", "nodeSelector": {"pool": "cloud"}, "podLabels": {"spillway.io/unit": "cloud"}}
            ]
        }),
        Time::from_secs(1_800_000_000),
    )
}

/// An extender over four nodes (two `local`, two `cloud`) and one policy
/// `ns/llm` with `spec`, at time `now`; its notices are collected in the
/// binder's `notices`.
fn build(spec: Value, now: Time) -> (Arc<Extender<FakeBinder>>, FakeBinder) {
    build_with_clock(spec, Box::new(move || now))
}

/// [`build`] with a clock of the caller's.
fn build_with_clock(
    spec: Value,
    clock: Box<dyn Fn() -> Time + Send + Sync>,
) -> (Arc<Extender<FakeBinder>>, FakeBinder) {
    let mut index = Index::default();
    for (n, pool) in [
        ("local-1", "local"),
        ("local-2", "local"),
        ("cloud-1", "cloud"),
        ("cloud-2", "cloud"),
    ] {
        index.snapshot.upsert_node(node(n, pool));
    }
    let spec: ResourcePolicySpec = serde_json::from_value(spec).unwrap();
    index
        .snapshot
        .upsert_policy(spec.to_policy("ns", "llm", Time::default()).unwrap());
    let binder = FakeBinder::default();
    let notices = binder.notices.clone();
    let ext = Arc::new(
        Extender::new(index, binder.clone(), clock)
            .with_notices(move |n| notices.lock().unwrap().push(n)),
    );
    *binder.ext.lock().unwrap() = Some(ext.clone());
    ext.set_ready(true);
    (ext, binder)
}

fn pod_json(name: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"), "labels": {"app": "llm"}},
        "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
        "status": {"phase": "Pending"}
    })
}

async fn post(app: &axum::Router, path: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let req = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    (resp.status(), body_of(resp).await)
}

async fn body_of(resp: axum::response::Response) -> Vec<u8> {
    resp.into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec()
}

async fn filter_names(app: &axum::Router, name: &str) -> Vec<String> {
    let body = json!({"Pod": pod_json(name), "Nodes": null, "NodeNames": ["local-1", "local-2", "cloud-1", "cloud-2"]});
    let (status, out) = post(app, "/scheduler/filter", serde_json::to_vec(&body).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_slice(&out).unwrap();
    v["NodeNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .collect()
}

async fn bind(app: &axum::Router, name: &str, node: &str) -> String {
    let body = json!({"PodName": name, "PodNamespace": "ns", "PodUID": format!("uid-{name}"), "Node": node});
    let (status, out) = post(app, "/scheduler/bind", serde_json::to_vec(&body).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_slice(&out).unwrap();
    v["Error"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn captured_filter_requests_get_answers_of_the_accepted_shape() {
    let (ext, _) = extender(4);
    let app = router(ext, &RouterConfig::default());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kube-scheduler-v1.30");
    for mode in ["cache", "nocache"] {
        for entry in std::fs::read_dir(dir.join(mode))
            .unwrap()
            .filter_map(Result::ok)
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let verb = ["filter", "prioritize", "preempt"]
                .into_iter()
                .find(|v| name.contains(&format!("-{v}-")));
            let (Some(verb), true) = (verb, name.ends_with(".req.json")) else {
                continue;
            };
            let (status, out) = post(
                &app,
                &format!("/scheduler/{verb}"),
                std::fs::read(entry.path()).unwrap(),
            )
            .await;
            assert_eq!(
                status,
                StatusCode::OK,
                "{mode}/{name}: {}",
                String::from_utf8_lossy(&out)
            );
            let v: Value = serde_json::from_slice(&out).unwrap();
            match verb {
                "filter" => assert!(
                    v.get(if mode == "cache" {
                        "NodeNames"
                    } else {
                        "Nodes"
                    })
                    .is_some(),
                    "{name}: {v}"
                ),
                "prioritize" => assert!(v.is_array(), "{name}: {v}"),
                _ => assert!(v.get("NodeNameToMetaVictims").is_some(), "{name}: {v}"),
            }
        }
    }
}

#[tokio::test]
async fn bad_requests_get_a_4xx_with_a_reason() {
    let (ext, _) = extender(4);
    let app = router(
        ext,
        &RouterConfig {
            body_limit: 1 << 20,
            ..RouterConfig::default()
        },
    );
    let (status, out) = post(&app, "/scheduler/filter", b"{\"Pod\": 42}".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        String::from_utf8_lossy(&out).starts_with("malformed filter request"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let (status, _) = post(&app, "/scheduler/bind", b"not json".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let mut bad_pod = pod_json("p");
    bad_pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = json!("lots");
    let body = serde_json::to_vec(&json!({"Pod": bad_pod, "NodeNames": ["local-1"]})).unwrap();
    let (status, out) = post(&app, "/scheduler/filter", body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        String::from_utf8_lossy(&out).contains("nvidia.com/gpu"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let (status, _) = post(&app, "/scheduler/filter", vec![b' '; 2 << 20]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn bind_carries_the_unit_annotations_and_a_failed_bind_frees_the_slot() {
    let (ext, binder) = extender(1);
    let app = router(ext.clone(), &RouterConfig::default());
    assert_eq!(filter_names(&app, "a").await, ["local-1", "local-2"]);
    binder.fail.lock().unwrap().push("a".into());
    let err = bind(&app, "a", "local-1").await;
    assert!(err.contains("changed or was deleted"), "{err}");
    // The failed bind released a's slot: b may take the only local slot.
    assert_eq!(filter_names(&app, "b").await, ["local-1", "local-2"]);
    assert_eq!(bind(&app, "b", "local-2").await, "");
    let calls = binder.calls.lock().unwrap().clone();
    assert_eq!(
        calls
            .last()
            .unwrap()
            .annotations
            .get("example.com/unit")
            .map(String::as_str),
        Some("local")
    );
    // Now local is full (1/1): c goes to the cloud, and a direct bind to local is refused.
    assert_eq!(filter_names(&app, "c").await, ["cloud-1", "cloud-2"]);
    let err = bind(&app, "d", "local-1").await;
    assert!(
        err.is_empty() || err.contains("full"),
        "ungoverned or refused: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_holds_under_concurrent_out_of_order_filters_and_binds() {
    let (ext, binder) = extender(4);
    let app = router(ext.clone(), &RouterConfig::default());
    let mut tasks = Vec::new();
    for i in 0..40 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("p{i}");
            let nodes = filter_names(&app, &name).await;
            for _ in 0..(i % 5) {
                tokio::task::yield_now().await;
            }
            let node = nodes[i % nodes.len()].clone();
            (name.clone(), node.clone(), bind(&app, &name, &node).await)
        }));
    }
    let mut local = 0;
    for t in tasks {
        let (name, node, err) = t.await.unwrap();
        assert!(err.is_empty(), "{name} on {node}: {err}");
        if node.starts_with("local") {
            local += 1;
        }
    }
    assert_eq!(local, 4, "exactly max pods landed on the local unit");
    assert_eq!(binder.calls.lock().unwrap().len(), 40);
}

#[tokio::test]
async fn readiness_follows_cache_sync() {
    let (ext, _) = extender(4);
    ext.set_ready(false);
    let app = router(ext.clone(), &RouterConfig::default());
    let get = |path: &'static str| {
        let app = app.clone();
        async move {
            app.oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(get("/healthz").await, StatusCode::OK);
    assert_eq!(get("/readyz").await, StatusCode::SERVICE_UNAVAILABLE);
    ext.set_ready(true);
    assert_eq!(get("/readyz").await, StatusCode::OK);
}

async fn get_text(app: &axum::Router, path: &str) -> String {
    let resp = app
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    String::from_utf8(body_of(resp).await).unwrap()
}

#[tokio::test]
async fn metrics_count_verbs_errors_binds_and_spills() {
    let (ext, binder) = extender(1);
    let app = router(ext, &RouterConfig::default());
    assert_eq!(filter_names(&app, "a").await, ["local-1", "local-2"]);
    assert_eq!(bind(&app, "a", "local-1").await, "");
    assert_eq!(filter_names(&app, "b").await, ["cloud-1", "cloud-2"]);
    let (status, _) = post(&app, "/scheduler/filter", b"{".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let text = get_text(&app, "/metrics").await;
    for line in [
        r#"spillway_extender_requests_total{verb="filter"} 3"#,
        r#"spillway_extender_requests_total{verb="bind"} 1"#,
        r#"spillway_extender_errors_total{reason="decode",verb="filter"} 1"#,
        r#"spillway_extender_request_duration_seconds_count{verb="filter"} 3"#,
        r#"spillway_binds_total{result="ok"} 1"#,
        r#"spillway_filter_decisions_total{decision="admitted",policy="ns/llm",unit="local"} 1"#,
        r#"spillway_filter_decisions_total{decision="admitted",policy="ns/llm",unit="cloud"} 1"#,
        r#"spillway_spills_total{policy="ns/llm",unit="cloud"} 1"#,
        "spillway_reservations_live 1",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    // The spill became a notice (an Event in the cluster) naming the full unit.
    let notices = binder.notices.lock().unwrap().clone();
    assert_eq!(notices.len(), 1, "{notices:?}");
    let Notice::Spilled { pod, message } = &notices[0] else {
        panic!("{notices:?}")
    };
    assert_eq!(pod.name, "b");
    assert!(
        message.contains(r#"admitted to unit "cloud""#)
            && message.contains(r#"unit "local" is full (1/1)"#),
        "{message}"
    );
}

#[tokio::test]
async fn a_waiting_pod_asks_for_its_clock_to_be_persisted_and_the_persisted_clock_survives_a_restart()
 {
    let spec = json!({
        "selector": {"app": "llm"},
        "whenTryNextUnits": {"policy": "TimeoutOrExceedMax", "timeout": "15m"},
        "units": [
            {"name": "local", "resource": "idc", "nodeSelector": {"pool": "local"}, "max": 4},
            {"name": "cloud", "resource": "elastic", "nodeSelector": {"pool": "cloud"}}
        ]
    });
    let t0 = Time::from_secs(1_800_000_000);
    let (ext, binder) = build(spec.clone(), t0);
    let app = router(ext, &RouterConfig::default());
    // Only cloud nodes are feasible: the local unit lacks room, so the pod waits.
    let body = json!({"Pod": pod_json("w"), "NodeNames": ["cloud-1", "cloud-2"]});
    let (status, out) = post(
        &app,
        "/scheduler/filter",
        serde_json::to_vec(&body).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["NodeNames"], json!([]), "{v}");
    let notices = binder.notices.lock().unwrap().clone();
    assert!(
        notices.contains(&Notice::WaitSince {
            pod: notices[0].pod().clone(),
            since: t0
        }),
        "{notices:?}"
    );
    assert!(
        notices
            .iter()
            .any(|n| matches!(n, Notice::Waiting { message, .. } if message.contains("TimeoutOrExceedMax"))),
        "{notices:?}"
    );
    // A new extender process 16 minutes later, with the pod carrying the
    // persisted clock: the timeout has passed, the pod moves on to the cloud.
    let (ext, binder) = build(spec, t0.after(std::time::Duration::from_secs(16 * 60)));
    let app = router(ext, &RouterConfig::default());
    let mut pod = pod_json("w");
    pod["metadata"]["annotations"] =
        json!({"scheduling.spillway.io/wait-since": "2027-01-15T08:00:00Z"});
    let body = json!({"Pod": pod, "NodeNames": ["cloud-1", "cloud-2"]});
    let (_, out) = post(
        &app,
        "/scheduler/filter",
        serde_json::to_vec(&body).unwrap(),
    )
    .await;
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["NodeNames"], json!(["cloud-1", "cloud-2"]), "{v}");
    assert!(
        !binder
            .notices
            .lock()
            .unwrap()
            .iter()
            .any(|n| matches!(n, Notice::WaitSince { .. })),
        "a persisted clock is not written again"
    );
}

#[tokio::test]
async fn a_request_over_the_time_limit_gets_503_with_a_reason_and_is_counted() {
    let (ext, binder) = extender(4);
    *binder.hang.lock().unwrap() = true;
    let app = router(
        ext,
        &RouterConfig {
            timeout: std::time::Duration::from_millis(50),
            ..RouterConfig::default()
        },
    );
    let body = json!({"PodName": "a", "PodNamespace": "ns", "PodUID": "uid-a", "Node": "local-1"});
    let (status, out) = post(&app, "/scheduler/bind", serde_json::to_vec(&body).unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&out).contains("bind took longer than"));
    let text = get_text(&app, "/metrics").await;
    assert!(
        text.contains(r#"spillway_extender_errors_total{reason="timeout",verb="bind"} 1"#),
        "{text}"
    );
}

/// A scheduling cycle that fails after Filter sends no Bind. Its pod's
/// slot is held for the grace only, once the watch shows the pod still
/// pending: the next pod is not spilled to the cloud for the rest of the
/// Filter TTL.
#[tokio::test]
async fn a_filter_that_no_bind_follows_frees_its_slot_after_the_grace() {
    use std::sync::atomic::{AtomicI64, Ordering};
    let start = 1_800_000_000_000;
    let clock = Arc::new(AtomicI64::new(start));
    let c = clock.clone();
    let (ext, _) = build_with_clock(
        json!({
            "selector": {"app": "llm"},
            "units": [
                {"name": "local", "resource": "idc", "nodeSelector": {"pool": "local"}, "max": 1},
                {"name": "cloud", "resource": "elastic", "nodeSelector": {"pool": "cloud"}}
            ]
        }),
        Box::new(move || Time::from_millis(c.load(Ordering::SeqCst))),
    );
    // The watch shows both pods pending.
    ext.with_index(|ix| {
        for name in ["a", "b"] {
            let pod: k8s_openapi::api::core::v1::Pod =
                serde_json::from_value(pod_json(name)).unwrap();
            let pod = spillway::index::convert::pod(&pod, None, Time::from_millis(start)).unwrap();
            ix.snapshot.upsert_pod(pod);
        }
    });
    let app = router(ext.clone(), &RouterConfig::default());
    assert_eq!(filter_names(&app, "a").await, ["local-1", "local-2"]);
    // a's cycle fails after Filter: no Bind. Within the grace its slot holds.
    clock.store(start + 1_000, Ordering::SeqCst);
    assert_eq!(filter_names(&app, "b").await, ["cloud-1", "cloud-2"]);
    // Past the grace, a is still pending: its slot goes, and b (filtered
    // again by the scheduler) takes the local unit instead of the cloud.
    clock.store(start + 6_000, Ordering::SeqCst);
    assert_eq!(filter_names(&app, "b").await, ["local-1", "local-2"]);
    // a's slot and b's own from its Filter at +1 s (replaced by its new one).
    let metrics = ext.metrics().render();
    assert!(
        metrics.contains("spillway_reservations_unbound_total 2"),
        "{metrics}"
    );
    // A late Bind of a re-checks the cap: b holds the only local slot.
    let err = bind(&app, "a", "local-1").await;
    assert!(err.contains("full (1/1)"), "{err}");
}
