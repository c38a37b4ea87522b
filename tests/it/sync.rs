//! `spillway serve`'s tasks against the stateful fake API server: no
//! placement before every watch has applied its list, and a restart in the
//! middle of a burst keeps `max` exact.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use spillway::extender::server::{RouterConfig, router};
use spillway::serve::{Options, Running, start};
use tower::ServiceExt;

use super::apiserver::{FakeCluster, node, pending_pod};

const POLICIES: &str = "scheduling.spillway.io/resourcepolicies";

/// `spillway serve`'s options for tests: no compat watch, no leader
/// election, a reconcile every 100 ms.
pub fn options() -> Options {
    Options {
        watch_compat: false,
        event_interval: Duration::from_secs(300),
        reservation_grace: Duration::from_secs(5),
        instance: Some("test".into()),
        reconcile_period: Duration::from_millis(100),
        leader: None,
        scaler: None,
    }
}

pub fn policy(ns: &str, selector: Value, units: Value) -> Value {
    json!({"apiVersion": "scheduling.spillway.io/v1alpha1", "kind": "ResourcePolicy",
           "metadata": {"name": "llm", "namespace": ns, "generation": 1},
           "spec": {"selector": selector, "strategy": "prefer", "units": units}})
}

pub async fn post(app: &axum::Router, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let resp = app
        .clone()
        .oneshot(
            Request::post(path)
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&bytes).into_owned()})),
    )
}

async fn wait_synced(running: &Running) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !running.extender.is_synced() {
        assert!(Instant::now() < deadline, "the caches never synced");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn names(v: &Value) -> Vec<String> {
    v["NodeNames"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The captured Filter of `e2e-cache/c-gpu-1` over the three nodes of the
/// capture's cluster, where the policy's local unit is already full.
#[tokio::test]
async fn a_captured_filter_is_refused_until_the_caches_sync_then_answered_in_unit_order() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let fake = FakeCluster::default();
    let nodes: Value =
        serde_json::from_slice(&std::fs::read(dir.join("nodes-np-local-np-cloud.json")).unwrap())
            .unwrap();
    for n in nodes["items"].as_array().unwrap() {
        fake.apply("nodes", n.clone());
    }
    fake.apply(
        POLICIES,
        policy(
            "e2e-cache",
            json!({"app": "kube-e2e"}),
            json!([
                {"name": "local", "resource": "idc", "max": 2,
                 "nodeSelector": {"alibabacloud.com/nodepool-id": "np-local"}},
                {"name": "cloud", "resource": "elastic",
                 "nodeSelector": {"alibabacloud.com/nodepool-id": "np-cloud"}}
            ]),
        ),
    );
    for i in 0..2 {
        let mut p = pending_pod("e2e-cache", &format!("running-{i}"));
        p["metadata"]["labels"] = json!({"app": "kube-e2e"});
        p["spec"]["nodeName"] = json!("gpu-local-1");
        p["status"]["phase"] = json!("Running");
        fake.apply("pods", p);
    }
    // The lists take a while: the extender is up before its caches.
    fake.set_list_delay(Duration::from_millis(400));
    let running = start(fake.client(), &options());
    let app = router(running.extender.clone(), &RouterConfig::default());
    let request = std::fs::read(
        dir.join("kube-scheduler-v1.30/cache/0001-filter-e2e-cache_c-gpu-1.req.json"),
    )
    .unwrap();

    let (status, before) = post(&app, "/scheduler/filter", request.clone()).await;
    assert!(!running.extender.is_synced(), "the lists are still delayed");
    assert_eq!(status, StatusCode::OK);
    assert!(
        names(&before).is_empty(),
        "no node admitted before sync: {before}"
    );
    let error = before["Error"].as_str().unwrap_or_default();
    assert!(error.contains("not synced"), "{before}");
    let bind = json!({"PodName": "c-gpu-1", "PodNamespace": "e2e-cache",
                      "PodUID": "150f8fbd-b23b-47f1-953a-fe79dc74dbca", "Node": "gpu-local-2"});
    let (_, refused) = post(&app, "/scheduler/bind", serde_json::to_vec(&bind).unwrap()).await;
    assert!(
        refused["Error"]
            .as_str()
            .unwrap_or_default()
            .contains("not synced"),
        "{refused}"
    );
    assert!(fake.bindings().is_empty(), "nothing was bound before sync");
    let metrics = running.extender.metrics().render();
    assert!(
        metrics.contains("spillway_not_ready_refusals_total{verb=\"filter\"} 1"),
        "{metrics}"
    );

    wait_synced(&running).await;
    let (status, after) = post(&app, "/scheduler/filter", request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(names(&after), ["gpu-cloud-1"], "{after}");
    assert!(after["Error"].as_str().unwrap_or_default().is_empty());
    let unresolvable = after["FailedAndUnresolvableNodes"].as_object().unwrap();
    assert!(
        unresolvable["gpu-local-1"]
            .as_str()
            .unwrap()
            .contains("full (2/2)"),
        "{after}"
    );
    running.stop().await;
}

/// A watch that must list again (its resourceVersion expired) closes the
/// gate until the new list is applied, then the extender answers again.
#[tokio::test]
async fn a_relist_closes_the_gate_until_it_is_applied() {
    let fake = FakeCluster::default();
    for (n, pool) in [("local-1", "local"), ("cloud-1", "cloud")] {
        fake.apply("nodes", node(n, pool, 8));
    }
    fake.apply(
        POLICIES,
        policy(
            "llm",
            json!({"app": "llm"}),
            json!([{"name": "local", "resource": "idc", "max": 1, "nodeSelector": {"pool": "local"}},
                   {"name": "cloud", "resource": "elastic", "nodeSelector": {"pool": "cloud"}}]),
        ),
    );
    fake.apply("pods", pending_pod("llm", "p"));
    let running = start(fake.client(), &options());
    wait_synced(&running).await;
    let app = router(running.extender.clone(), &RouterConfig::default());
    let body = serde_json::to_vec(
        &json!({"Pod": pending_pod("llm", "p"), "NodeNames": ["local-1", "cloud-1"]}),
    )
    .unwrap();
    let (_, ok) = post(&app, "/scheduler/filter", body.clone()).await;
    assert_eq!(names(&ok), ["local-1"], "{ok}");
    fake.set_list_delay(Duration::from_secs(1));
    fake.expire_watches();
    let deadline = Instant::now() + Duration::from_secs(10);
    while running.extender.is_synced() {
        assert!(Instant::now() < deadline, "the watches never re-listed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (_, refused) = post(&app, "/scheduler/filter", body.clone()).await;
    if !running.extender.is_synced() {
        assert!(names(&refused).is_empty(), "{refused}");
        assert!(
            refused["Error"]
                .as_str()
                .unwrap_or_default()
                .contains("not synced"),
            "{refused}"
        );
    }
    fake.set_list_delay(Duration::ZERO);
    wait_synced(&running).await;
    let (_, again) = post(&app, "/scheduler/filter", body).await;
    assert_eq!(names(&again), ["local-1"], "{again}");
    running.stop().await;
}

/// Plays kube-scheduler for every pending pod: Filter one pod at a time
/// over every node, then Bind to the first node returned without waiting
/// (binds run concurrently, as the scheduler's binding cycles do).
pub struct Scheduler {
    pub app: Arc<Mutex<axum::Router>>,
    pub in_flight: Arc<Mutex<BTreeSet<String>>>,
    pub binds: Vec<tokio::task::JoinHandle<()>>,
}

impl Scheduler {
    /// A scheduler calling `ext`'s routes.
    pub fn new(
        ext: &Arc<spillway::extender::backend::Extender<spillway::serve::binder::KubeBinder>>,
    ) -> Self {
        Self {
            app: Arc::new(Mutex::new(router(ext.clone(), &RouterConfig::default()))),
            in_flight: Arc::new(Mutex::new(BTreeSet::new())),
            binds: Vec::new(),
        }
    }

    /// Filters (and binds) up to 10 pending pods.
    pub async fn cycle(&mut self, fake: &FakeCluster, nodes: &[&str]) {
        let pending: Vec<Value> = fake
            .objects("pods")
            .into_iter()
            .filter(|p| p["spec"]["nodeName"].is_null())
            .take(10)
            .collect();
        for pod in pending {
            let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
            if self.in_flight.lock().unwrap().contains(&name) {
                continue;
            }
            let app = self.app.lock().unwrap().clone();
            let body = serde_json::to_vec(&json!({"Pod": pod, "NodeNames": nodes})).unwrap();
            let (_, out) = post(&app, "/scheduler/filter", body).await;
            let Some(node) = names(&out).into_iter().next() else {
                continue;
            };
            self.in_flight.lock().unwrap().insert(name.clone());
            let uid = pod["metadata"]["uid"].as_str().unwrap().to_owned();
            let in_flight = self.in_flight.clone();
            self.binds.push(tokio::spawn(async move {
                let bind =
                    json!({"PodName": name, "PodNamespace": "llm", "PodUID": uid, "Node": node});
                let _ = post(&app, "/scheduler/bind", serde_json::to_vec(&bind).unwrap()).await;
                in_flight.lock().unwrap().remove(&name);
            }));
        }
    }

    pub async fn settle(&mut self) {
        for b in self.binds.drain(..) {
            b.await.unwrap();
        }
    }
}

/// The nodes of [`burst_cluster`].
pub const BURST_NODES: [&str; 4] = ["local-1", "local-2", "cloud-1", "cloud-2"];

/// Two local and two cloud nodes of 64 GPUs, a policy with `max: 20` in
/// the local unit (unit labels on both), and 100 pending one-GPU pods.
pub fn burst_cluster() -> FakeCluster {
    burst_cluster_with(
        json!({"podLabels": {"spillway.io/unit": "local"}}),
        json!({"podLabels": {"spillway.io/unit": "cloud"}}),
    )
}

/// [`burst_cluster`] with the local and cloud units' `podLabels` and
/// `podAnnotations` given as objects holding them.
pub fn burst_cluster_with(local: Value, cloud: Value) -> FakeCluster {
    let fake = FakeCluster::default();
    for n in BURST_NODES {
        let pool = if n.starts_with("local") {
            "local"
        } else {
            "cloud"
        };
        fake.apply("nodes", node(n, pool, 64));
    }
    let mut units = json!([
        {"name": "local", "resource": "idc", "max": 20, "nodeSelector": {"pool": "local"}},
        {"name": "cloud", "resource": "elastic", "nodeSelector": {"pool": "cloud"}}
    ]);
    for (unit, extra) in [(0, local), (1, cloud)] {
        if let Some(extra) = extra.as_object() {
            for (k, v) in extra {
                units[unit][k] = v.clone();
            }
        }
    }
    fake.apply(POLICIES, policy("llm", json!({"app": "llm"}), units));
    for i in 0..100 {
        fake.apply("pods", pending_pod("llm", &format!("p{i:03}")));
    }
    fake
}

/// Pods bound on local and on cloud nodes.
pub fn placement_counts(fake: &FakeCluster) -> (usize, usize) {
    let pods = fake.objects("pods");
    let on = |prefix: &str| {
        pods.iter()
            .filter(|p| {
                p["spec"]["nodeName"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(prefix))
            })
            .count()
    };
    (on("local"), on("cloud"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_in_the_middle_of_a_burst_admits_no_pod_past_max_and_binds_all() {
    let fake = burst_cluster();
    let nodes = BURST_NODES;
    let mut running = start(fake.client(), &options());
    wait_synced(&running).await;
    let mut sched = Scheduler::new(&running.extender);
    let mut restarted = false;
    let mut bound_at_restart = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        sched.cycle(&fake, &nodes).await;
        let bound = fake.bindings().len();
        if bound == 100 {
            break;
        }
        assert!(Instant::now() < deadline, "only {bound} of 100 pods bound");
        if !restarted && bound >= 30 {
            // The container restarts: the old process is gone (its binds
            // in flight have finished), the new one starts with an empty
            // index and slow lists while the scheduler keeps sending.
            restarted = true;
            running.stop().await;
            sched.settle().await;
            let bound = fake.bindings().len();
            fake.set_list_delay(Duration::from_secs(1));
            running = start(fake.client(), &options());
            *sched.app.lock().unwrap() = router(running.extender.clone(), &RouterConfig::default());
            for _ in 0..3 {
                sched.cycle(&fake, &nodes).await;
            }
            if !running.extender.is_synced() {
                assert_eq!(
                    fake.bindings().len(),
                    bound,
                    "no pod bound before the new caches synced"
                );
            }
            bound_at_restart = bound;
            fake.set_list_delay(Duration::ZERO);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sched.settle().await;
    assert!(restarted && bound_at_restart >= 30);
    assert_eq!(
        placement_counts(&fake),
        (20, 80),
        "max 20 holds across the restart"
    );
    assert_eq!(fake.bindings().len(), 100, "every pod bound exactly once");
    // Deletion costs (local pods last to go), unit labels, and the
    // per-unit counts in the policy's status.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let policy = fake.objects(POLICIES).pop().unwrap();
        let pods = fake.objects("pods");
        let costs_written = pods.iter().all(|p| {
            let want = if p["spec"]["nodeName"].as_str().unwrap().starts_with("local") {
                "200"
            } else {
                "100"
            };
            p["metadata"]["annotations"]["controller.kubernetes.io/pod-deletion-cost"] == want
        });
        // Costs come with the Binding; the unit labels from the controller.
        let labelled = pods
            .iter()
            .all(|p| p["metadata"]["labels"]["spillway.io/unit"].is_string());
        if costs_written && labelled && policy["status"]["summary"] == "local 20/20, cloud 80" {
            assert_eq!(policy["status"]["units"][0]["pods"], 20, "{policy}");
            let ready = &policy["status"]["conditions"][0];
            assert_eq!(
                (ready["type"].as_str(), ready["status"].as_str()),
                (Some("Ready"), Some("True"))
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status and costs never written: {policy}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = running.extender.metrics().render();
    let refused: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("spillway_not_ready_refusals_total{verb=\"filter\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(
        refused > 0,
        "the new instance refused Filters while it listed: {metrics}"
    );
    for p in &fake.objects("pods") {
        let node = p["spec"]["nodeName"].as_str().unwrap();
        let unit = p["metadata"]["labels"]["spillway.io/unit"].as_str();
        assert_eq!(
            unit,
            Some(if node.starts_with("local") {
                "local"
            } else {
                "cloud"
            }),
            "{p}"
        );
    }
    running.stop().await;
}

/// Each pod's writes, by pod name: `METHOD path` of every write to the pod
/// or its subresources.
fn pod_writes(fake: &FakeCluster) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out = std::collections::BTreeMap::<String, Vec<String>>::new();
    for w in fake.writes() {
        if let Some(rest) = w
            .split_once(' ')
            .and_then(|(_, path)| path.strip_prefix("/api/v1/namespaces/llm/pods/"))
        {
            let name = rest.split('/').next().unwrap().to_owned();
            out.entry(name).or_default().push(w.clone());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bind_is_one_api_write_and_unit_labels_follow_from_the_controller() {
    // The local unit sets only annotations: its pods need the Binding
    // alone. The cloud unit sets a label: one patch per pod follows.
    let fake = burst_cluster_with(
        json!({"podAnnotations": {"example.com/billing": "datacenter"}}),
        json!({"podLabels": {"spillway.io/unit": "cloud"}}),
    );
    let running = start(fake.client(), &options());
    wait_synced(&running).await;
    let mut sched = Scheduler::new(&running.extender);
    let deadline = Instant::now() + Duration::from_secs(60);
    while fake.bindings().len() < 100 {
        assert!(
            Instant::now() < deadline,
            "only {} of 100 pods bound",
            fake.bindings().len()
        );
        sched.cycle(&fake, &BURST_NODES).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sched.settle().await;
    assert_eq!(placement_counts(&fake), (20, 80), "max 20 holds");
    // Wait until every cloud pod has its label, then two more reconciles.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pods = fake.objects("pods");
        let labelled = pods
            .iter()
            .filter(|p| p["metadata"]["labels"]["spillway.io/unit"] == "cloud")
            .count();
        if labelled == 80 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{labelled} of 80 cloud pods labelled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for p in fake.objects("pods") {
        let local = p["spec"]["nodeName"].as_str().unwrap().starts_with("local");
        let a = &p["metadata"]["annotations"];
        assert_eq!(
            a["controller.kubernetes.io/pod-deletion-cost"],
            if local { "200" } else { "100" },
            "{p}"
        );
        assert_eq!(
            a["scheduling.spillway.io/deletion-cost"],
            a["controller.kubernetes.io/pod-deletion-cost"]
        );
        if local {
            assert_eq!(a["example.com/billing"], "datacenter", "{p}");
            assert!(p["metadata"]["labels"]["spillway.io/unit"].is_null(), "{p}");
        }
    }
    let writes = pod_writes(&fake);
    assert_eq!(writes.len(), 100, "{writes:?}");
    for (pod, w) in &writes {
        let bindings = w.iter().filter(|w| w.ends_with("/binding")).count();
        let patches = w.iter().filter(|w| w.starts_with("PATCH ")).count();
        assert_eq!(bindings, 1, "{pod}: {w:?}");
        assert_eq!(w.len(), bindings + patches, "{pod}: {w:?}");
        let local = fake.objects("pods").iter().any(|p| {
            p["metadata"]["name"] == pod.as_str()
                && p["spec"]["nodeName"].as_str().unwrap().starts_with("local")
        });
        assert_eq!(patches, usize::from(!local), "{pod}: {w:?}");
    }
    running.stop().await;
}
