//! Scheduler-level throughput with and without Spillway on a real cluster
//! (`spillway-load cluster`), the measurement `spillway-load sched` models.
//!
//! The cluster runs Spillway as `deploy/` installs it: a second
//! kube-scheduler (`spillway-scheduler`) with Spillway as its extender,
//! whose `managedResources` lists only `nvidia.com/gpu`. Both phases use
//! that one scheduler with its one configuration:
//! - **scheduler alone**: pods request an extended resource the extender
//!   does not manage (`bench.spillway.io/slot`), so kube-scheduler neither
//!   filters nor binds them through Spillway (`IsInterested` is false);
//! - **with Spillway**: pods request one `nvidia.com/gpu` and are governed by
//!   a ResourcePolicy (a `local` unit with `max`, then a `cloud` unit), so
//!   each goes through Spillway's Filter and Bind.
//!
//! The tool creates `--nodes` Node objects (no kubelet behind them; half
//! `local`, half `cloud`, 8 GPUs and 8 slots each) and, per phase, `--pods`
//! pods held by a scheduling gate, so that none is scheduled while they are
//! created. It then removes the gates, 64 at a time, and a pod watch notes
//! when each pod gets its node. Pods/s is counted over the window in which
//! the scheduler's queue is full: from the last gate's removal to the last
//! bind (the whole phase is printed too, and serves when fewer than a
//! quarter of the pods were left to bind once every gate was gone). The Spillway phase's placement is
//! checked: exactly `--local-max` pods on local nodes, the rest on cloud
//! nodes. Everything created is deleted at the end, pass or fail.
//!
//! The steps run against any [`kube::Client`]: the load tool's from a
//! kubeconfig, the tests' from an in-process fake of the calls made here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

const NAMESPACE: &str = "spillway-bench";
const POOL: &str = "bench.spillway.io/pool";
const SLOT: &str = "bench.spillway.io/slot";
const GATE: &str = "bench.spillway.io/hold";
/// API calls in flight while the tool creates and releases objects.
const IN_FLIGHT: usize = 64;

/// What a `cluster` run is given.
#[derive(Clone, Debug)]
pub struct Opts {
    /// Node objects to create.
    pub nodes: usize,
    /// Pods per phase.
    pub pods: usize,
    /// The local unit's `max`.
    pub local_max: usize,
    /// The scheduler's name (`schedulerName` of the pods).
    pub scheduler: String,
    /// Rounds of the two phases, interleaved.
    pub rounds: usize,
    /// Quiet time: how long no new DaemonSet pod may land on the new
    /// nodes before the phases start, and the time Spillway's policy watch
    /// gets to see the new policy before the first pod.
    pub settle: Duration,
    /// How long a phase's pods may take to be bound once released.
    pub bind_timeout: Duration,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Alone,
    Spillway,
}

impl Phase {
    fn label(self) -> &'static str {
        match self {
            Self::Alone => "scheduler alone (pods Spillway does not manage)",
            Self::Spillway => "with Spillway: filter, bind",
        }
    }
}

fn node_name(i: usize) -> String {
    format!("spillway-bench-{}-{i:04}", pool(i))
}

fn pool(i: usize) -> &'static str {
    if i.is_multiple_of(2) {
        "local"
    } else {
        "cloud"
    }
}

fn policies(client: &kube::Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("scheduling.spillway.io", "v1alpha1", "ResourcePolicy");
    Api::namespaced_with(client.clone(), NAMESPACE, &ApiResource::from_gvk(&gvk))
}

/// A task that stops when its handle is dropped, on every path out.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `f` over `items`, [`IN_FLIGHT`] at a time; the first error stops it.
async fn each<T, F, Fut>(items: Vec<T>, f: F) -> anyhow::Result<()>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    futures::stream::iter(items.into_iter().map(f))
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Creates the namespace `name` (the benchmark's, and the real-cluster
/// tests' own).
///
/// # Errors
/// The API server's refusal, e.g. the namespace exists or is being deleted.
pub async fn create_namespace(client: &kube::Client, name: &str) -> kube::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.to_owned());
    namespaces.create(&PostParams::default(), &ns).await?;
    Ok(())
}

/// Deletes the pods (at once: no kubelet will confirm them), the namespace
/// and the nodes, and waits until all are gone.
async fn cleanup(client: &kube::Client) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let _ = pods
        .delete_collection(
            &DeleteParams::default().grace_period(0),
            &ListParams::default(),
        )
        .await;
    let _ = namespaces.delete(NAMESPACE, &DeleteParams::default()).await;
    let _ = nodes
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(POOL),
        )
        .await;
    for _ in 0..240 {
        let left = nodes
            .list(&ListParams::default().labels(POOL))
            .await?
            .items
            .len();
        if left == 0 && namespaces.get_opt(NAMESPACE).await?.is_none() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("the namespace {NAMESPACE} or the bench nodes were not gone after 2 minutes")
}

async fn create_nodes(client: &kube::Client, count: usize) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    each((0..count).collect(), |i| {
        let nodes = nodes.clone();
        async move {
            let name = node_name(i);
            let node: Node = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {POOL: pool(i), "kubernetes.io/hostname": name}},
            }))?;
            nodes.create(&PostParams::default(), &node).await?;
            let now = crate::decision::time::format_rfc3339(crate::serve::wall_clock());
            let resources = json!({"cpu": "64", "memory": "512Gi", "pods": "110",
                                   "nvidia.com/gpu": "8", SLOT: "8"});
            let status = json!({"status": {
                "capacity": resources, "allocatable": resources,
                "conditions": [{"type": "Ready", "status": "True", "reason": "Bench",
                                "message": "node object without a kubelet",
                                "lastHeartbeatTime": now, "lastTransitionTime": now}],
            }});
            nodes
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await?;
            anyhow::Ok(())
        }
    })
    .await
}

/// Waits until the pods that DaemonSets tolerating every taint place on
/// the new nodes (a CNI agent, kube-proxy) stop appearing: `quiet_for`
/// without a new one, 2 minutes at most. They would load the API server
/// during the first phase. (Lists every pod of the cluster each
/// `quiet_for / 5`: a setup cost, before any phase.)
async fn daemon_pods_settle(client: &kube::Client, quiet_for: Duration) -> anyhow::Result<()> {
    let all: Api<Pod> = Api::all(client.clone());
    let on_bench_nodes = || async {
        let list = all.list(&ListParams::default()).await?;
        anyhow::Ok(
            list.items
                .iter()
                .filter(|p| {
                    p.spec
                        .as_ref()
                        .and_then(|s| s.node_name.as_deref())
                        .is_some_and(|n| n.starts_with("spillway-bench-"))
                })
                .count(),
        )
    };
    let mut last = on_bench_nodes().await?;
    let mut quiet = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120);
    while quiet.elapsed() < quiet_for && Instant::now() < deadline {
        tokio::time::sleep(quiet_for / 5).await;
        let now = on_bench_nodes().await?;
        if now != last {
            (last, quiet) = (now, Instant::now());
        }
    }
    if last > 0 {
        println!("{last} DaemonSet pods landed on the bench nodes before the phases");
    }
    if quiet.elapsed() < quiet_for {
        println!(
            "  (pods still landed on the bench nodes after 2 minutes; the first phase may be slowed by them)"
        );
    }
    Ok(())
}

async fn create_policy(
    client: &kube::Client,
    local_max: usize,
    settle: Duration,
) -> anyhow::Result<()> {
    create_namespace(client, NAMESPACE).await?;
    let policy: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "scheduling.spillway.io/v1alpha1",
        "kind": "ResourcePolicy",
        "metadata": {"name": "bench", "namespace": NAMESPACE},
        "spec": {
            "selector": {"app": "bench-llm"},
            "strategy": "required",
            "units": [
                {"name": "local", "resource": "idc", "nodeSelector": {POOL: "local"}, "max": local_max},
                {"name": "cloud", "resource": "elastic", "nodeSelector": {POOL: "cloud"}}
            ]
        }
    }))?;
    policies(client)
        .create(&PostParams::default(), &policy)
        .await
        .context("creating the ResourcePolicy (are Spillway's CRDs installed?)")?;
    // Spillway's policy watch sees the policy before the first pod.
    tokio::time::sleep(settle).await;
    Ok(())
}

/// A gated pod of `phase`: one unit of the resource the phase measures.
fn pod(phase: Phase, scheduler: &str, i: usize) -> anyhow::Result<Pod> {
    let (app, resource) = match phase {
        Phase::Alone => ("bench-alone", SLOT),
        Phase::Spillway => ("bench-llm", "nvidia.com/gpu"),
    };
    Ok(serde_json::from_value(json!({
        "metadata": {"name": format!("{app}-{i:05}"), "labels": {"app": app}},
        "spec": {
            "schedulerName": scheduler,
            "schedulingGates": [{"name": GATE}],
            "containers": [{"name": "server", "image": "registry.k8s.io/pause:3.10",
                            "resources": {"limits": {resource: "1"}}}],
            // The nodes have no kubelet: the node controller taints them.
            "tolerations": [{"operator": "Exists"}],
        },
    }))?)
}

/// What one phase measured.
struct Outcome {
    /// Pods/s from the last gate's removal to the last bind.
    queued: f64,
    /// Pods/s from the first gate's removal to the last bind.
    whole: f64,
    /// Time to remove every gate.
    ungate: Duration,
    /// Pods bound after the last gate was removed.
    after_ungate: usize,
    /// Pods on local and on cloud nodes.
    local: usize,
    cloud: usize,
}

async fn phase(client: &kube::Client, opts: &Opts, phase: Phase) -> anyhow::Result<Outcome> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    each((0..opts.pods).collect(), |i| {
        let pods = pods.clone();
        async move {
            pods.create(&PostParams::default(), &pod(phase, &opts.scheduler, i)?)
                .await?;
            anyhow::Ok(())
        }
    })
    .await?;
    // Node of each pod, and when the watch first saw it bound.
    let bound: Arc<Mutex<HashMap<String, (String, Instant)>>> = Arc::default();
    // Watch errors: how many, and the last.
    let errors: Arc<Mutex<(usize, String)>> = Arc::default();
    let (listed, first_list) = tokio::sync::oneshot::channel::<()>();
    let watch = {
        let (pods, bound, errors) = (pods.clone(), bound.clone(), errors.clone());
        // The watcher re-lists after an error (with backoff); a pod bound
        // meanwhile is noted when the re-list shows it, late.
        AbortOnDrop(tokio::spawn(async move {
            let mut listed = Some(listed);
            let mut events = std::pin::pin!(
                watcher::watcher(pods, watcher::Config::default()).default_backoff()
            );
            while let Some(event) = events.next().await {
                let p = match event {
                    Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = listed.take() {
                            let _ = tx.send(());
                        }
                        continue;
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        if let Ok(mut err) = errors.lock() {
                            *err = (err.0 + 1, e.to_string());
                        }
                        continue;
                    }
                };
                let at = Instant::now();
                if let (Some(name), Some(node)) =
                    (p.metadata.name.clone(), p.spec.and_then(|s| s.node_name))
                    && let Ok(mut b) = bound.lock()
                {
                    b.entry(name).or_insert((node, at));
                }
            }
        }))
    };
    // Releases start once the watch has listed the pods, so that every
    // bind is seen as it happens.
    tokio::time::timeout(opts.bind_timeout, first_list)
        .await
        .context("the pod watch's first list did not finish")?
        .context("the pod watch stopped before its first list")?;
    let start = Instant::now();
    each((0..opts.pods).collect(), |i| {
        let pods = pods.clone();
        async move {
            let name = pod(phase, &opts.scheduler, i)?
                .metadata
                .name
                .unwrap_or_default();
            pods.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"schedulingGates": []}})),
            )
            .await?;
            anyhow::Ok(())
        }
    })
    .await?;
    let ungated = Instant::now();
    let deadline = ungated + opts.bind_timeout;
    loop {
        let n = bound.lock().map_or(0, |b| b.len());
        if n >= opts.pods {
            break;
        }
        if Instant::now() > deadline {
            let (count, last) = errors.lock().map(|e| e.clone()).unwrap_or_default();
            let watch = if count == 0 {
                String::new()
            } else {
                format!(" (the pod watch failed {count} times, last: {last})")
            };
            bail!(
                "{}: {n} of {} pods bound within {:?} of their release{watch}",
                phase.label(),
                opts.pods,
                opts.bind_timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(watch);
    let (watch_errors, last_error) = errors.lock().map(|e| e.clone()).unwrap_or_default();
    if watch_errors > 0 {
        println!(
            "  (the pod watch failed {watch_errors} times during the phase, last: {last_error}; binds seen after a re-list carry late times)"
        );
    }
    let bound = std::mem::take(&mut *bound.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    let last = bound.values().map(|(_, at)| *at).max().unwrap_or(ungated);
    let after_ungate = bound.values().filter(|(_, at)| *at > ungated).count();
    let local = bound
        .values()
        .filter(|(n, _)| n.contains("-local-"))
        .count();
    let cloud = bound
        .values()
        .filter(|(n, _)| n.contains("-cloud-"))
        .count();
    #[allow(clippy::cast_precision_loss)]
    let rate =
        |n: usize, from: Instant| n as f64 / last.duration_since(from).as_secs_f64().max(1e-3);
    let outcome = Outcome {
        queued: rate(after_ungate, ungated),
        whole: rate(opts.pods, start),
        ungate: ungated - start,
        after_ungate,
        local,
        cloud,
    };
    pods.delete_collection(
        &DeleteParams::default().grace_period(0),
        &ListParams::default(),
    )
    .await?;
    for _ in 0..240 {
        if pods.list(&ListParams::default()).await?.items.is_empty() {
            return Ok(outcome);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("the phase's pods were not gone 2 minutes after their deletion")
}

/// Creates the nodes and the policy, runs `rounds` rounds of the two
/// phases interleaved, prints them and the ratio, and deletes everything
/// (pass or fail). Returns each round's ratio (with Spillway ÷ alone).
///
/// # Errors
/// Bad options, a failed API call, pods not bound within
/// [`Opts::bind_timeout`], a placement that breaks the policy, or objects
/// left after the cleanup.
pub async fn run(client: &kube::Client, opts: &Opts) -> anyhow::Result<Vec<f64>> {
    if opts.local_max >= opts.pods {
        bail!("--local-max must be below --pods, so that pods spill to the cloud unit");
    }
    let (local_nodes, cloud_nodes) = (opts.nodes.div_ceil(2), opts.nodes / 2);
    if cloud_nodes == 0 {
        bail!("--nodes must be at least 2: one local node and one cloud node");
    }
    if opts.local_max > local_nodes * 8 {
        bail!("--local-max is more than the local nodes' GPUs (8 on each of half the --nodes)");
    }
    if opts.pods - opts.local_max > cloud_nodes * 8 {
        bail!(
            "the pods beyond --local-max are more than the cloud nodes' GPUs (8 on each of half the --nodes)"
        );
    }
    cleanup(client).await?;
    let result = measure(client, opts).await;
    let cleaned = cleanup(client).await;
    let ratios = result?;
    cleaned?;
    Ok(ratios)
}

async fn measure(client: &kube::Client, opts: &Opts) -> anyhow::Result<Vec<f64>> {
    create_nodes(client, opts.nodes).await?;
    daemon_pods_settle(client, opts.settle).await?;
    create_policy(client, opts.local_max, opts.settle).await?;
    println!(
        "cluster throughput: {} rounds of {} pods per phase over {} bench nodes, scheduler {}, local unit max {}",
        opts.rounds, opts.pods, opts.nodes, opts.scheduler, opts.local_max
    );
    let mut ratios = Vec::new();
    for round in 1..=opts.rounds.max(1) {
        let mut rates = Vec::new();
        for p in [Phase::Alone, Phase::Spillway] {
            let o = phase(client, opts, p).await?;
            println!(
                "round {round}, {}: {:.0} pods/s with the queue full ({} pods bound after the last gate was removed), {:.0} pods/s over the whole phase, gates removed in {:.2} s",
                p.label(),
                o.queued,
                o.after_ungate,
                o.whole,
                o.ungate.as_secs_f64()
            );
            if p == Phase::Spillway {
                println!("  placement: {} local, {} cloud", o.local, o.cloud);
                if o.local != opts.local_max || o.local + o.cloud != opts.pods {
                    bail!(
                        "placement breaks the policy: {} local (max {}), {} cloud, {} pods",
                        o.local,
                        opts.local_max,
                        o.cloud,
                        opts.pods
                    );
                }
            }
            // kube-scheduler's own client defaults to qps 50: alone, the
            // scheduler binds through it.
            if p == Phase::Alone && (40.0..60.0).contains(&o.queued.max(o.whole)) {
                println!(
                    "  ({:.0} pods/s: the scheduler's clientConnection.qps, 50 by default, probably limits its own Bindings; set qps and burst to 1000 (the client qps of the reference measurement in the README), or the ratio measures that limit)",
                    o.queued.max(o.whole)
                );
            }
            rates.push(o);
        }
        // The queue-full windows, unless in either phase releasing the pods
        // was not faster than scheduling them.
        let (alone, with) = (&rates[0], &rates[1]);
        if alone.after_ungate * 4 < opts.pods || with.after_ungate * 4 < opts.pods {
            println!(
                "  (fewer than a quarter of a phase's pods were bound after its last gate was removed: releasing them was not faster than scheduling, so this round's ratio is of the whole-phase rates)"
            );
            ratios.push(with.whole / alone.whole);
        } else {
            ratios.push(with.queued / alone.queued);
        }
    }
    let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "ratio with Spillway ÷ scheduler alone: {:.2} (median; rounds {})",
        sorted[sorted.len() / 2],
        each.join(", ")
    );
    Ok(ratios)
}
