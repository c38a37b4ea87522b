//! `spillway-load cluster`'s steps ([`spillway::load::cluster::run`])
//! against the in-process fake API server, with a stand-in scheduler that
//! binds each pod once its scheduling gate is gone. The real run needs a
//! cluster with Spillway (README, "Scheduler throughput").

use std::time::Duration;

use serde_json::{Value, json};
use spillway::load::cluster::{Opts, run};

use crate::apiserver::FakeCluster;

const NS: &str = "spillway-bench";

fn opts() -> Opts {
    Opts {
        nodes: 6,
        pods: 10,
        local_max: 4,
        scheduler: "spillway-scheduler".to_owned(),
        rounds: 1,
        settle: Duration::from_millis(100),
        bind_timeout: Duration::from_secs(30),
    }
}

fn label<'a>(obj: &'a Value, key: &str) -> &'a str {
    obj["metadata"]["labels"][key].as_str().unwrap_or_default()
}

/// Binds every released pod of the bench namespace, as a scheduler would:
/// a GPU pod (`app: bench-llm`) to a local node while fewer than
/// `local_max` sit there (any number with `crowd_local`), else to a cloud
/// node; any other pod to any bench node. Records what each pod asked for.
/// [`Quirk::ExpireWatch`] ends every open watch with `410 Gone` after its
/// first bind, as an API server that compacted its history does.
async fn scheduler(fake: FakeCluster, local_max: usize, quirk: Quirk, seen: SeenPods) {
    let crowd_local = quirk == Quirk::CrowdLocal;
    let expire_watch = quirk == Quirk::ExpireWatch;
    let mut next = 0usize;
    loop {
        let pods = fake.objects("pods");
        let nodes: Vec<Value> = fake
            .objects("nodes")
            .into_iter()
            .filter(|n| !label(n, "bench.spillway.io/pool").is_empty())
            .collect();
        for mut pod in pods {
            if pod["metadata"]["namespace"] != NS
                || pod["spec"]["nodeName"].is_string()
                || pod["spec"]["schedulingGates"]
                    .as_array()
                    .is_some_and(|g| !g.is_empty())
            {
                continue;
            }
            let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
            seen.lock().unwrap().push((
                name.clone(),
                pod["spec"]["schedulerName"].clone(),
                pod["spec"]["containers"][0]["resources"]["limits"].clone(),
            ));
            let llm = label(&pod, "app") == "bench-llm";
            let local_now = fake
                .objects("pods")
                .iter()
                .filter(|p| {
                    label(p, "app") == "bench-llm"
                        && p["spec"]["nodeName"]
                            .as_str()
                            .is_some_and(|n| n.contains("-local-"))
                })
                .count();
            let pool = match (llm, crowd_local || local_now < local_max) {
                (true, true) => "local",
                (true, false) => "cloud",
                (false, _) => "",
            };
            let candidates: Vec<&Value> = nodes
                .iter()
                .filter(|n| pool.is_empty() || label(n, "bench.spillway.io/pool") == pool)
                .collect();
            next += 1;
            pod["spec"]["nodeName"] =
                candidates[next % candidates.len()]["metadata"]["name"].clone();
            fake.apply("pods", pod);
            if expire_watch && next == 1 {
                fake.expire_watches();
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How the stand-in scheduler departs from a correct one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Quirk {
    None,
    /// Every GPU pod on a local node, past the unit's `max`.
    CrowdLocal,
    /// Every open watch ends with `410 Gone` after the first bind.
    ExpireWatch,
}

/// The stand-in scheduler, running; and what it records.
fn stand_in(fake: &FakeCluster, o: &Opts, quirk: Quirk) -> (tokio::task::JoinHandle<()>, SeenPods) {
    let seen = SeenPods::default();
    let task = tokio::spawn(scheduler(fake.clone(), o.local_max, quirk, seen.clone()));
    (task, seen)
}

type SeenPods = std::sync::Arc<std::sync::Mutex<Vec<(String, Value, Value)>>>;

fn nothing_left(fake: &FakeCluster) {
    let bench_nodes = fake
        .objects("nodes")
        .into_iter()
        .filter(|n| !label(n, "bench.spillway.io/pool").is_empty())
        .count();
    assert_eq!(bench_nodes, 0, "bench nodes left");
    assert!(
        fake.objects("namespaces")
            .iter()
            .all(|n| n["metadata"]["name"] != NS),
        "namespace left"
    );
    assert!(
        fake.objects("pods")
            .iter()
            .all(|p| p["metadata"]["namespace"] != NS),
        "pods left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_benchmark_releases_gated_pods_checks_placement_and_cleans_up() {
    let fake = FakeCluster::default();
    let o = opts();
    let (stand_in, seen) = stand_in(&fake, &o, Quirk::None);
    let ratios = run(&fake.client(), &o).await.expect("benchmark run");
    stand_in.abort();
    assert_eq!(ratios.len(), 1);
    assert!(ratios[0].is_finite() && ratios[0] > 0.0, "{ratios:?}");
    // Each phase's pods asked the named scheduler for one unit of the
    // phase's resource: a slot Spillway does not manage, then a GPU.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2 * o.pods, "{seen:?}");
    for (name, scheduler, limits) in &seen {
        assert_eq!(scheduler, "spillway-scheduler");
        let want = if name.starts_with("bench-llm-") {
            json!({"nvidia.com/gpu": "1"})
        } else {
            json!({"bench.spillway.io/slot": "1"})
        };
        assert_eq!(*limits, want, "{name}");
    }
    // Within a phase every pod is created (gated) before the first gate is
    // removed: the scheduler then finds a full queue.
    let writes = fake.writes();
    let creates: Vec<usize> = writes
        .iter()
        .enumerate()
        .filter(|(_, w)| w.starts_with(&format!("POST /api/v1/namespaces/{NS}/pods")))
        .map(|(i, _)| i)
        .collect();
    let releases: Vec<usize> = writes
        .iter()
        .enumerate()
        .filter(|(_, w)| w.starts_with(&format!("PATCH /api/v1/namespaces/{NS}/pods/")))
        .map(|(i, _)| i)
        .collect();
    assert_eq!((creates.len(), releases.len()), (2 * o.pods, 2 * o.pods));
    for phase in 0..2 {
        let last_create = creates[(phase + 1) * o.pods - 1];
        let first_release = releases[phase * o.pods];
        assert!(last_create < first_release, "phase {phase}: {writes:?}");
    }
    nothing_left(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_benchmark_fails_on_a_placement_that_breaks_the_policy() {
    let fake = FakeCluster::default();
    let o = opts();
    let (stand_in, _) = stand_in(&fake, &o, Quirk::CrowdLocal);
    let err = run(&fake.client(), &o)
        .await
        .expect_err("every GPU pod on a local node breaks max: 4");
    stand_in.abort();
    assert!(
        err.to_string()
            .contains("placement breaks the policy: 10 local (max 4)"),
        "{err:#}"
    );
    // Cleaned up all the same.
    nothing_left(&fake);
}

#[tokio::test]
async fn cluster_benchmark_refuses_options_it_cannot_meet_before_any_write() {
    let fake = FakeCluster::default();
    let cases = [
        (Opts { nodes: 1, ..opts() }, "--nodes must be at least 2"),
        (
            Opts {
                local_max: 10,
                ..opts()
            },
            "--local-max must be below --pods",
        ),
        (
            Opts {
                local_max: 25,
                pods: 30,
                ..opts()
            },
            "--local-max is more than the local nodes' GPUs",
        ),
        (
            Opts { pods: 40, ..opts() },
            "the pods beyond --local-max are more than the cloud nodes' GPUs",
        ),
    ];
    for (o, want) in cases {
        // Were a check missing, the run would end soon all the same.
        let o = Opts {
            bind_timeout: Duration::from_millis(200),
            ..o
        };
        let err = run(&fake.client(), &o).await.expect_err(want);
        assert!(err.to_string().contains(want), "{err:#}");
    }
    assert_eq!(fake.writes(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_benchmark_survives_a_watch_that_expires_mid_phase() {
    let fake = FakeCluster::default();
    let o = opts();
    let (stand_in, _) = stand_in(&fake, &o, Quirk::ExpireWatch);
    let ratios = run(&fake.client(), &o)
        .await
        .expect("the watch re-lists and the run completes");
    stand_in.abort();
    assert_eq!(ratios.len(), 1);
    nothing_left(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_benchmark_gives_up_after_its_bind_timeout_and_cleans_up() {
    let fake = FakeCluster::default();
    // No scheduler: no pod is ever bound.
    let o = Opts {
        bind_timeout: Duration::from_millis(300),
        ..opts()
    };
    let err = run(&fake.client(), &o)
        .await
        .expect_err("nothing binds the pods");
    assert!(
        err.to_string().contains("0 of 10 pods bound within 300ms"),
        "{err:#}"
    );
    nothing_left(&fake);
}
