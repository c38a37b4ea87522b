//! The policy controller's effector against the stateful fake API server:
//! deletion costs make a ReplicaSet's scale-in keep the data-center pods,
//! a converged controller sends nothing, and a hand-set cost gets an Event.

use std::collections::BTreeSet;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spillway::serve::{Options, start};

use super::apiserver::{FakeCluster, node, pending_pod};
use super::sync::Scheduler;

const POLICIES: &str = "scheduling.spillway.io/resourcepolicies";
const COST: &str = "controller.kubernetes.io/pod-deletion-cost";

fn options() -> Options {
    Options {
        reconcile_period: Duration::from_millis(50),
        ..super::sync::options()
    }
}

/// A running, ready one-GPU pod of ReplicaSet `vllm-5d8f` on `node`,
/// created `minute` minutes into the day.
pub fn running_pod(name: &str, node: &str, minute: u32, annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "llm", "uid": format!("uid-{name}"),
                        "labels": {"app": "llm"}, "annotations": annotations,
                        "creationTimestamp": format!("2026-01-01T00:{minute:02}:00Z"),
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                             "name": "vllm-5d8f", "uid": "rs-uid", "controller": true}]},
           "spec": {"schedulerName": "spillway-scheduler", "nodeName": node,
                    "containers": [{"name": "c", "image": "vllm",
                                    "resources": {"limits": {"nvidia.com/gpu": "1"},
                                                  "requests": {"cpu": "1", "nvidia.com/gpu": "1"}}}]},
           "status": {"phase": "Running",
                      "conditions": [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}]}})
}

fn policy(manual: &str) -> Value {
    json!({"apiVersion": "scheduling.spillway.io/v1alpha1", "kind": "ResourcePolicy",
           "metadata": {"name": "llm", "namespace": "llm", "generation": 1,
                        "creationTimestamp": "2025-12-01T00:00:00Z"},
           "spec": {"selector": {"app": "llm"}, "strategy": "prefer", "manualDeletionCost": manual,
                    "units": [
                        {"name": "local", "resource": "idc", "max": 4, "nodeSelector": {"pool": "local"}},
                        {"name": "cloud", "resource": "elastic", "nodeSelector": {"pool": "cloud"}}]}})
}

fn cost(pod: &Value) -> Option<i64> {
    pod["metadata"]["annotations"][COST]
        .as_str()
        .and_then(|v| v.parse().ok())
}

/// The ReplicaSet controller's choice of pods to delete when scaling in by
/// `n` (`getPodsToDelete`): unassigned before assigned, not running before
/// running, not ready before ready, lower `pod-deletion-cost` first, then
/// the newer pod first.
fn replicaset_victims(pods: &[Value], n: usize) -> Vec<String> {
    let mut ranked: Vec<&Value> = pods.iter().collect();
    ranked.sort_by_key(|p| {
        let assigned = p["spec"]["nodeName"]
            .as_str()
            .is_some_and(|s| !s.is_empty());
        let running = p["status"]["phase"] == "Running";
        let ready = p["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
        let created = p["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        (
            assigned,
            running,
            ready,
            cost(p).unwrap_or(0),
            std::cmp::Reverse(created),
        )
    });
    ranked
        .into_iter()
        .take(n)
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Two local and two cloud nodes of 8 GPUs.
fn four_nodes() -> FakeCluster {
    let fake = FakeCluster::default();
    for (n, pool) in [
        ("local-1", "local"),
        ("local-2", "local"),
        ("cloud-1", "cloud"),
        ("cloud-2", "cloud"),
    ] {
        fake.apply("nodes", node(n, pool, 8));
    }
    fake
}

fn cluster(manual: &str, hand_set: Value) -> FakeCluster {
    let fake = four_nodes();
    fake.apply(POLICIES, policy(manual));
    // The local pods are the oldest but one: the ReplicaSet's own ranking
    // (newest first) would delete two of them before the oldest cloud pod.
    let layout = [
        ("l0", "local-1", 10),
        ("l1", "local-1", 11),
        ("l2", "local-2", 30),
        ("l3", "local-2", 31),
        ("c0", "cloud-1", 1),
        ("c1", "cloud-1", 20),
        ("c2", "cloud-1", 21),
        ("c3", "cloud-2", 22),
        ("c4", "cloud-2", 23),
        ("c5", "cloud-2", 24),
    ];
    for (name, node, minute) in layout {
        let ann = if name == "l3" {
            hand_set.clone()
        } else {
            json!({})
        };
        fake.apply("pods", running_pod(name, node, minute, ann));
    }
    fake
}

/// Waits until `done` holds for the fake's pods and policy.
async fn converge(fake: &FakeCluster, what: &str, done: impl Fn(&[Value], &Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pods = fake.objects("pods");
        let policy = fake.objects(POLICIES).pop().unwrap();
        if done(&pods, &policy) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never happened: {policy}\n{pods:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn events(fake: &FakeCluster, reason: &str) -> Vec<Value> {
    let mut all = fake.objects("events");
    all.extend(fake.objects("events.k8s.io/events"));
    all.into_iter().filter(|e| e["reason"] == reason).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_ten_replicas_to_four_keeps_the_four_local_pods() {
    // l3's cost was set by hand; this policy says to overwrite it.
    let fake = cluster("Overwrite", json!({COST: "-1000"}));
    let running = start(fake.client(), &options());
    converge(&fake, "costs and status", |pods, policy| {
        pods.iter().all(|p| {
            let local = p["spec"]["nodeName"].as_str().unwrap().starts_with("local");
            cost(p) == Some(if local { 200 } else { 100 })
        }) && policy["status"]["summary"] == "local 4/4, cloud 6"
    })
    .await;
    let overwritten = events(&fake, "ManualDeletionCostOverwritten");
    assert_eq!(overwritten.len(), 1, "{overwritten:#?}");
    assert!(
        overwritten[0]["note"]
            .as_str()
            .or(overwritten[0]["message"].as_str())
            .unwrap_or_default()
            .contains("-1000"),
        "{overwritten:#?}"
    );
    let status = &fake.objects(POLICIES)[0]["status"];
    assert_eq!(status["units"][0]["pods"], 4, "{status}");
    assert_eq!(status["units"][0]["max"], 4, "{status}");
    assert_eq!(status["units"][1]["pods"], 6, "{status}");
    assert_eq!(status["units"][1]["resource"], "elastic", "{status}");
    assert_eq!(status["observedGeneration"], 1, "{status}");

    // Converged: further reconciles (every 50 ms) write nothing.
    let before = fake.writes();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = fake.writes();
    assert_eq!(
        after[before.len()..],
        [] as [String; 0],
        "a converged controller sent requests"
    );

    // The Deployment goes from 10 to 4: the ReplicaSet controller deletes
    // six pods by its ranking, which reads the costs Spillway wrote.
    let victims = replicaset_victims(&fake.objects("pods"), 6);
    for v in &victims {
        fake.remove("pods", "llm", v);
    }
    let mut left: Vec<String> = fake
        .objects("pods")
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["l0", "l1", "l2", "l3"], "victims {victims:?}");
    converge(&fake, "status after scale-in", |_, policy| {
        policy["status"]["summary"] == "local 4/4, cloud 0"
    })
    .await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_set_cost_is_kept_with_an_event_unless_the_policy_says_overwrite() {
    let fake = cluster("Keep", json!({COST: "-1000"}));
    let running = start(fake.client(), &options());
    converge(&fake, "costs on the other pods", |pods, _| {
        pods.iter()
            .filter(|p| p["metadata"]["name"] != "l3")
            .all(|p| cost(p).is_some())
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let kept = loop {
        let kept = events(&fake, "ManualDeletionCostKept");
        if !kept.is_empty() {
            break kept;
        }
        assert!(Instant::now() < deadline, "no ManualDeletionCostKept Event");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(kept.len(), 1, "{kept:#?}");
    assert_eq!(kept[0]["regarding"]["name"], "l3", "{:#?}", kept[0]);
    let l3 = fake
        .objects("pods")
        .into_iter()
        .find(|p| p["metadata"]["name"] == "l3")
        .unwrap();
    assert_eq!(cost(&l3), Some(-1000), "the hand-set cost stays: {l3}");
    // Kept means kept on every reconcile, and the Event is not repeated.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(events(&fake, "ManualDeletionCostKept").len(), 1);
    running.stop().await;
}

/// Spill-back through the effector: once the local unit has had room for
/// `settleTime`, the newest controller-owned cloud pod is evicted (not
/// while a PodDisruptionBudget blocks it), its replacement is placed
/// locally, and moves stop when the local unit is at `max`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spill_back_moves_cloud_pods_home_one_at_a_time_and_stops_at_max() {
    let fake = four_nodes();
    let mut p = policy("Keep");
    p["spec"]["spillBack"] = json!({"settleTime": "1s", "maxEvictions": 1, "interval": "1s"});
    fake.apply(POLICIES, p);
    for (name, node, minute) in [
        ("l0", "local-1", 1),
        ("l1", "local-2", 2),
        ("c0", "cloud-1", 3),
        ("c1", "cloud-1", 4),
        ("c2", "cloud-2", 5),
        ("c3", "cloud-2", 6),
    ] {
        fake.apply("pods", running_pod(name, node, minute, json!({})));
    }
    // The newest cloud pod has no owner: evicted, nothing would replace it.
    let mut bare = running_pod("bare", "cloud-2", 7, json!({}));
    bare["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("ownerReferences");
    fake.apply("pods", bare);
    // A PodDisruptionBudget allows no disruption at first.
    fake.set_evictions_blocked(true);
    let running = start(fake.client(), &options());
    let deadline = Instant::now() + Duration::from_secs(20);
    while events(&fake, "SpillBackBlocked").is_empty() {
        assert!(Instant::now() < deadline, "no SpillBackBlocked Event");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        fake.objects("pods").len(),
        7,
        "a blocked eviction removes nothing"
    );
    fake.set_evictions_blocked(false);

    let names = |fake: &FakeCluster| -> BTreeSet<String> {
        fake.objects("pods")
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut sched = Scheduler::new(&running.extender);
    let mut evicted = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while evicted.len() < 2 {
        assert!(Instant::now() < deadline, "evicted only {evicted:?}");
        let now = names(&fake);
        for gone in ["c0", "c1", "c2", "c3", "bare"] {
            if !now.contains(gone) && !evicted.contains(&gone) {
                evicted.push(gone);
                // The ReplicaSet replaces it; the scheduler places the new pod.
                let mut r = pending_pod("llm", &format!("r-{gone}"));
                r["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1",
                    "kind": "ReplicaSet", "name": "vllm-5d8f", "uid": "rs-uid", "controller": true}]);
                fake.apply("pods", r);
            }
        }
        sched
            .cycle(&fake, &["local-1", "local-2", "cloud-1", "cloud-2"])
            .await;
        sched.settle().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        evicted,
        ["c3", "c2"],
        "newest controller-owned cloud pods first"
    );
    // The replacements are local; the unit is at max 4: no further move.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pods = fake.objects("pods");
    let local: BTreeSet<&str> = pods
        .iter()
        .filter(|p| {
            p["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| n.starts_with("local"))
        })
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(local, BTreeSet::from(["l0", "l1", "r-c3", "r-c2"]));
    assert!(names(&fake).is_superset(&BTreeSet::from([
        "c0".to_owned(),
        "c1".to_owned(),
        "bare".to_owned()
    ])));
    assert_eq!(events(&fake, "SpilledBack").len(), 2);
    let metrics = running.extender.metrics().render();
    assert!(
        metrics.contains("spillway_spill_back_evictions_total{result=\"ok\"} 2"),
        "{metrics}"
    );
    // Every reconcile (one each 50 ms over several seconds) is timed.
    let reconciles: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("spillway_controller_reconcile_duration_seconds_count "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no reconcile count in {metrics}"));
    assert!(reconciles >= 20, "{reconciles} reconciles timed");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headroom_keeps_one_placeholder_while_the_data_center_is_full() {
    // local max 4 with four running: 100 % full, at fillPercent 100.
    let fake = four_nodes();
    let mut p = policy("Keep");
    p["spec"]["headroom"] = json!({"fillPercent": 100});
    fake.apply(POLICIES, p);
    for (name, node, minute) in [
        ("l0", "local-1", 10),
        ("l1", "local-1", 11),
        ("l2", "local-2", 12),
        ("l3", "local-2", 13),
    ] {
        fake.apply("pods", running_pod(name, node, minute, json!({})));
    }
    let running = start(fake.client(), &options());
    let is_placeholder =
        |p: &Value| p["metadata"]["labels"]["scheduling.spillway.io/headroom-for"] == "llm";
    converge(&fake, "a placeholder", |pods, _| {
        pods.iter().filter(|p| is_placeholder(p)).count() == 1
    })
    .await;
    let ph = fake
        .objects("pods")
        .into_iter()
        .find(|p| is_placeholder(p))
        .unwrap();
    let spec = &ph["spec"];
    assert_eq!(spec["priorityClassName"], "spillway-headroom", "{ph}");
    assert_eq!(spec["nodeSelector"], json!({"pool": "cloud"}), "{ph}");
    assert!(
        spec["schedulerName"].is_null(),
        "the default scheduler places it"
    );
    let res = &spec["containers"][0]["resources"];
    assert_eq!(
        res["requests"],
        json!({"cpu": "1", "nvidia.com/gpu": "1"}),
        "{ph}"
    );
    assert_eq!(res["limits"], json!({"nvidia.com/gpu": "1"}), "{ph}");
    assert_eq!(
        ph["metadata"]["annotations"]["scheduling.spillway.io/headroom-unit"],
        "cloud"
    );
    // Steady: no second placeholder, no churn.
    let before = fake.writes().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pods = fake.objects("pods");
    assert_eq!(pods.iter().filter(|p| is_placeholder(p)).count(), 1);
    assert!(
        !fake.writes()[before..]
            .iter()
            .any(|w| w.contains("POST") || w.contains("DELETE")),
        "{:?}",
        &fake.writes()[before..]
    );
    // The placeholder is not governed: the policy still counts 4 local, 0 cloud.
    converge(&fake, "status without the placeholder", |_, policy| {
        policy["status"]["summary"] == "local 4/4, cloud 0"
    })
    .await;

    // A local replica goes: 75 % < 100 %, the placeholder is deleted.
    fake.remove("pods", "llm", "l3");
    converge(&fake, "the placeholder deleted", |pods, _| {
        !pods.iter().any(&is_placeholder)
    })
    .await;
    running.stop().await;
}
