//! `spillway-load sched`: scheduler-level throughput with and without
//! Spillway, in one run, against the fake API server.
//!
//! A model of kube-scheduler's loop drives each phase:
//! - the **scheduling cycle** is sequential, one pod at a time, as in
//!   kube-scheduler: the scheduler's own plugins (`--scheduler-cpu-us` of CPU
//!   on the cycle's thread), then each extender verb configured, in series,
//!   over a shared HTTP/1.1 client;
//! - the **binding cycle** runs beside it, one task per pod (kube-scheduler's
//!   goroutine per bind, `--bind-workers` at most here): without an
//!   extender the scheduler creates the `pods/binding` itself; with Spillway
//!   it calls Spillway's Bind, which writes to the fake API server;
//! - the **fake API server** spends `--api-cpu-us` of CPU on every write and
//!   answers after `--api-latency-ms`;
//! - Spillway runs as in a cluster: the extender, the pod watch (each bound
//!   pod comes back through the watch feed) and the **policy controller**,
//!   reconciling every second and writing to the fake API server (the unit
//!   labels of newly bound pods; costs come with the Binding). Its writes
//!   for a phase's last pods land after the phase: they are counted in the
//!   writes and CPU per pod, not in the time.
//!
//! The extender client is Go's `http.Transport` as kube-scheduler builds it
//! for an extender without HTTP/2: keep-alive, as many connections as
//! requests in flight, at most 2 kept idle (`DefaultMaxIdleConnsPerHost`),
//! so a burst of concurrent binds opens connections that are closed again.
//! The scheduler's client of the API server keeps its connections (HTTP/2 in
//! a cluster).
//!
//! A fourth phase measures the **extender floor**: an extender that does no
//! work (`spillway-load serve --floor`: the same server stack answers
//! Filter with Spillway's bytes without reading the pod, and Bind with one
//! API call). Its ratio is what the extender protocol itself costs in this
//! model; Spillway's ratio to it is what Spillway's own work costs.
//!
//! Pods/s is over the whole phase: from the first cycle's start to the last
//! bind's answer. The scheduler's and the API server's CPU costs default to
//! what kube-scheduler (1.6 s) and kube-apiserver (1.5 s) spent binding
//! 1,000 one-GPU pods to 500 nodes with no extender on a 2-core machine
//! (client qps 1000), so that Spillway competes for the same two cores as
//! they do.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use spillway::load;

use super::{Conn, cpu_seconds, fake_api_with, percentile, start_server};

/// What a `sched` run is given.
#[derive(Clone, Copy)]
pub struct Opts {
    /// Nodes in the synthetic cluster; every request names all of them
    /// (`percentageOfNodesToScore: 100`).
    pub nodes: usize,
    /// Pods scheduled per phase.
    pub pods: usize,
    /// CPU the scheduler's own plugins spend per cycle.
    pub scheduler_cpu: Duration,
    /// CPU the API server spends per write.
    pub api_cpu: Duration,
    /// Time the API server takes to answer, beyond its CPU.
    pub api_latency: Duration,
    /// Binds in flight at most.
    pub bind_workers: usize,
    /// Rounds of the phases.
    pub rounds: usize,
    /// The synthetic policy without unit `podLabels`.
    pub without_pod_labels: bool,
}

/// The thread's own CPU time (`CLOCK_THREAD_CPUTIME_ID`, exact to the
/// nanosecond: the kernel brings the running thread's account up to date).
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// Spends `d` of this thread's CPU time (not wall time: when the other
/// processes take the cores, the work takes longer, as real work would).
pub fn burn(d: Duration) {
    if d.is_zero() {
        return;
    }
    let start = thread_cpu();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while thread_cpu().saturating_sub(start) < d {
        for i in 0..512 {
            x = x.rotate_left(7) ^ x.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ i;
        }
        std::hint::black_box(x);
    }
}

/// Go's HTTP/1.1 transport to one host: an idle connection is reused if
/// there is one, else a new one is opened; after the answer the connection
/// is kept only while fewer than `max_idle` are idle.
struct Pool {
    addr: SocketAddr,
    idle: Mutex<Vec<Conn>>,
    max_idle: usize,
    opened: AtomicUsize,
}

impl Pool {
    fn new(addr: SocketAddr, max_idle: usize) -> Self {
        Self {
            addr,
            idle: Mutex::new(Vec::new()),
            max_idle,
            opened: AtomicUsize::new(0),
        }
    }

    fn post(&self, path: &str, body: &[u8]) -> anyhow::Result<Vec<u8>> {
        let idle = self.idle.lock().ok().and_then(|mut v| v.pop());
        let mut conn = if let Some(c) = idle {
            c
        } else {
            self.opened.fetch_add(1, Ordering::Relaxed);
            Conn::open(self.addr)?
        };
        let answer = conn.post_read(path, body)?;
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.max_idle
        {
            idle.push(conn);
        }
        Ok(answer)
    }
}

/// Round trips of one extender verb, seen from the scheduler.
#[derive(Default)]
struct Verb {
    latency: Vec<Duration>,
    sent: usize,
    received: usize,
}

impl Verb {
    fn call(&mut self, pool: &Pool, path: &str, body: &[u8]) -> anyhow::Result<Vec<u8>> {
        let t = Instant::now();
        let answer = pool.post(path, body)?;
        self.latency.push(t.elapsed());
        self.sent += body.len();
        self.received += answer.len();
        Ok(answer)
    }
}

/// The verbs a phase's scheduler calls.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No extender: kube-scheduler alone, binding itself.
    Alone,
    /// The extender floor's Filter and Bind: an extender that does no work.
    Floor,
    /// Spillway's Filter and Bind.
    FilterBind,
    /// Spillway's Filter, Prioritize and Bind.
    FilterPrioritizeBind,
}

impl Phase {
    fn label(self) -> &'static str {
        match self {
            Self::Alone => "scheduler alone",
            Self::Floor => "extender floor (no work): filter, bind",
            Self::FilterBind => "with Spillway: filter, bind",
            Self::FilterPrioritizeBind => "with Spillway: filter, prioritize, bind",
        }
    }
}

/// What one phase measured.
struct Outcome {
    pods_per_s: f64,
    cycle: Vec<Duration>,
    verbs: BTreeMap<&'static str, Verb>,
    bind: Vec<Duration>,
    opened: usize,
    api_writes: usize,
    api_bindings: usize,
    extender_cpu_s: Option<f64>,
}

/// Waits until the fake API server took no write for 1.5 s (the policy
/// controller reconciles every second), at most 2 minutes.
fn settle(writes: &AtomicUsize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let before = writes.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(1500));
        if writes.load(Ordering::Relaxed) == before || Instant::now() > deadline {
            return;
        }
    }
}

/// A scheduling request for pod `i` over `names` (the scheduler encodes one
/// per call: the pod and the node names that passed its own filters).
fn args(pod: &serde_json::Value, names: &[String]) -> anyhow::Result<Vec<u8>> {
    Ok(serde_json::to_vec(
        &serde_json::json!({"Pod": pod, "NodeNames": names}),
    )?)
}

/// The node with the highest score (the first among equals, as the
/// scheduler's `selectHost` picks one of them).
fn best(answer: &[u8]) -> anyhow::Result<String> {
    let scores: Vec<serde_json::Value> = serde_json::from_slice(answer)?;
    scores
        .iter()
        .filter_map(|s| Some((s["Score"].as_i64()?, s["Host"].as_str()?)))
        .max_by_key(|&(score, _)| score)
        .map(|(_, host)| host.to_owned())
        .context("prioritize scored no node")
}

#[allow(clippy::too_many_lines)]
fn phase(
    opts: &Opts,
    first: usize,
    phase: Phase,
    api: SocketAddr,
    extender: Option<(SocketAddr, u32)>,
    writes: &AtomicUsize,
    bindings: &AtomicUsize,
) -> anyhow::Result<Outcome> {
    let names: Vec<String> = (0..opts.nodes).map(load::node_name).collect();
    let ext_pool = extender.map(|(addr, _)| Arc::new(Pool::new(addr, 2)));
    let api_pool = Arc::new(Pool::new(api, usize::MAX));
    let (writes0, bindings0) = (
        writes.load(Ordering::Relaxed),
        bindings.load(Ordering::Relaxed),
    );
    let cpu0 = extender.map(|(_, pid)| cpu_seconds(pid)).transpose()?;
    let (tx, rx) = mpsc::channel::<(usize, String, Instant)>();
    let rx = Arc::new(Mutex::new(rx));
    let started = Instant::now();
    let workers: Vec<_> = (0..opts.bind_workers.max(1))
        .map(|_| {
            let rx = rx.clone();
            let ext_pool = ext_pool.clone();
            let api_pool = api_pool.clone();
            std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
                let mut lat = Vec::new();
                loop {
                    let job = rx.lock().ok().and_then(|r| r.recv().ok());
                    let Some((i, node, queued)) = job else {
                        return Ok(lat);
                    };
                    let (name, uid) = super::bind_pod(first + i);
                    if let Some(pool) = &ext_pool {
                        let body = serde_json::to_vec(&serde_json::json!({
                            "PodName": name, "PodNamespace": load::NAMESPACE,
                            "PodUID": uid, "Node": node,
                        }))?;
                        let answer = pool.post("/scheduler/bind", &body)?;
                        if answer.as_slice() != br#"{"Error":""}"# {
                            bail!("bind {i}: {}", String::from_utf8_lossy(&answer));
                        }
                    } else {
                        let body = serde_json::to_vec(&serde_json::json!({
                            "apiVersion": "v1", "kind": "Binding",
                            "metadata": {"name": name, "namespace": load::NAMESPACE, "uid": uid},
                            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
                        }))?;
                        api_pool.post(
                            &format!("/api/v1/namespaces/{}/pods/{name}/binding", load::NAMESPACE),
                            &body,
                        )?;
                    }
                    lat.push(queued.elapsed());
                }
            })
        })
        .collect();
    let mut verbs: BTreeMap<&'static str, Verb> = BTreeMap::new();
    let mut cycle = Vec::with_capacity(opts.pods);
    let mut pod = load::pending_pod();
    let scheduled = (|| -> anyhow::Result<()> {
        for i in 0..opts.pods {
            let t = Instant::now();
            burn(opts.scheduler_cpu);
            let node = if let Some(pool) = &ext_pool {
                let (name, uid) = super::bind_pod(first + i);
                pod["metadata"]["name"] = name.into();
                pod["metadata"]["uid"] = uid.into();
                let answer: serde_json::Value =
                    serde_json::from_slice(&verbs.entry("filter").or_default().call(
                        pool,
                        "/scheduler/filter",
                        &args(&pod, &names)?,
                    )?)?;
                let eligible: Vec<String> =
                    serde_json::from_value(answer["NodeNames"].clone()).unwrap_or_default();
                if eligible.is_empty() {
                    bail!("pod {i}: no node passes: {answer}");
                }
                if phase == Phase::FilterPrioritizeBind {
                    best(&verbs.entry("prioritize").or_default().call(
                        pool,
                        "/scheduler/prioritize",
                        &args(&pod, &eligible)?,
                    )?)?
                } else {
                    eligible[i % eligible.len()].clone()
                }
            } else {
                names[i % names.len()].clone()
            };
            cycle.push(t.elapsed());
            tx.send((i, node, Instant::now()))
                .map_err(|_| anyhow::anyhow!("every bind worker stopped"))?;
        }
        Ok(())
    })();
    drop(tx);
    let mut bind = Vec::with_capacity(opts.pods);
    let mut failed = None;
    for w in workers {
        match w.join() {
            Ok(Ok(lat)) => bind.extend(lat),
            Ok(Err(e)) => failed = Some(e),
            Err(_) => failed = Some(anyhow::anyhow!("a bind worker panicked")),
        }
    }
    scheduled?;
    if let Some(e) = failed {
        return Err(e);
    }
    let wall = started.elapsed();
    // The policy controller's writes for the phase's last pods come after
    // it: they are counted (writes and CPU per pod), not timed.
    settle(writes);
    cycle.sort_unstable();
    bind.sort_unstable();
    for v in verbs.values_mut() {
        v.latency.sort_unstable();
    }
    #[allow(clippy::cast_precision_loss)]
    Ok(Outcome {
        pods_per_s: opts.pods as f64 / wall.as_secs_f64(),
        cycle,
        verbs,
        bind,
        opened: ext_pool.map_or(0, |p| p.opened.load(Ordering::Relaxed)),
        api_writes: writes.load(Ordering::Relaxed) - writes0,
        api_bindings: bindings.load(Ordering::Relaxed) - bindings0,
        extender_cpu_s: match (extender, cpu0) {
            (Some((_, pid)), Some(c0)) => Some(cpu_seconds(pid)? - c0),
            _ => None,
        },
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[allow(clippy::cast_precision_loss)]
fn print(phase: Phase, o: &Outcome, pods: usize) {
    let n = pods as f64;
    println!("{}", phase.label());
    println!("  throughput      {:>10.0} pods/s", o.pods_per_s);
    println!(
        "  cycle           {:>10.3} ms p50, {:.3} ms p99 (one pod at a time)",
        ms(percentile(&o.cycle, 0.5)),
        ms(percentile(&o.cycle, 0.99))
    );
    for (verb, v) in &o.verbs {
        println!(
            "  {verb:<15} {:>10.2} round trips/pod, {:.3} ms p50, {:.3} ms p90, {:.3} ms p99, {:.1} KB sent, {:.1} KB received per call",
            v.latency.len() as f64 / n,
            ms(percentile(&v.latency, 0.5)),
            ms(percentile(&v.latency, 0.9)),
            ms(percentile(&v.latency, 0.99)),
            v.sent as f64 / v.latency.len().max(1) as f64 / 1e3,
            v.received as f64 / v.latency.len().max(1) as f64 / 1e3,
        );
    }
    println!(
        "  bind            {:>10.3} ms p50, {:.3} ms p99 (from the end of the cycle to the answer)",
        ms(percentile(&o.bind, 0.5)),
        ms(percentile(&o.bind, 0.99))
    );
    if let Some(cpu) = o.extender_cpu_s {
        let trips: usize = o.verbs.values().map(|v| v.latency.len()).sum::<usize>() + pods;
        let who = if phase == Phase::Floor {
            "the floor"
        } else {
            "Spillway"
        };
        println!(
            "  connections     {:>10} opened to {who} for {trips} round trips",
            o.opened
        );
        println!("  extender CPU    {:>10.3} ms/pod ({who})", cpu / n * 1e3);
    }
    println!(
        "  API writes      {:>10.2} per pod ({:.2} pods/binding, {:.2} pod patches and status by the controller)",
        o.api_writes as f64 / n,
        o.api_bindings as f64 / n,
        (o.api_writes - o.api_bindings) as f64 / n,
    );
}

/// The median of `v` (the upper one of an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs `rounds` rounds of the phases, interleaved so that a disturbance
/// of the machine falls on every phase alike; prints each phase's median
/// round, then the ratios to the scheduler alone and Spillway's (filter,
/// bind) to the floor, round by round and their median. Spillway's child
/// keeps reconciling its index during the other phases, as it would in a
/// cluster; that slows them a little, the floor among them.
pub fn run(opts: &Opts) -> anyhow::Result<()> {
    let writes = Arc::new(AtomicUsize::new(0));
    let bindings = Arc::new(AtomicUsize::new(0));
    let api = fake_api_with(
        opts.api_latency,
        opts.api_cpu,
        writes.clone(),
        Some(bindings.clone()),
    )?;
    let mut args: Vec<String> = vec![
        "--nodes".into(),
        opts.nodes.to_string(),
        "--pods-per-node".into(),
        "10".into(),
        "--api".into(),
        format!("http://{api}"),
        "--controller".into(),
    ];
    if opts.without_pod_labels {
        args.push("--without-pod-labels".into());
    }
    let (mut child, addr) = start_server(&args)?;
    let floor = start_server(&[
        "--nodes".into(),
        opts.nodes.to_string(),
        "--pods-per-node".into(),
        "0".into(),
        "--api".into(),
        format!("http://{api}"),
        "--floor".into(),
    ]);
    let (mut floor, floor_addr) = match floor {
        Ok(f) => f,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    // The controller's first reconcile writes every governed pod of the
    // synthetic cluster once; the phases start after it.
    settle(&writes);
    println!(
        "policy controller converged: {} writes for the synthetic cluster's pods",
        writes.load(Ordering::Relaxed)
    );
    println!(
        "scheduler-level throughput: {} rounds of {} pods per phase, {} nodes (every node sent), scheduler {} µs CPU per cycle, API server {} µs CPU + {} ms per write, up to {} binds in flight, units {} podLabels",
        opts.rounds,
        opts.pods,
        opts.nodes,
        opts.scheduler_cpu.as_micros(),
        opts.api_cpu.as_micros(),
        opts.api_latency.as_millis(),
        opts.bind_workers,
        if opts.without_pod_labels {
            "without"
        } else {
            "with"
        }
    );
    let phases = [
        Phase::Alone,
        Phase::Floor,
        Phase::FilterBind,
        Phase::FilterPrioritizeBind,
    ];
    let result = (|| {
        let ext = Some((addr, child.id()));
        let floor_ext = Some((floor_addr, floor.id()));
        let mut outcomes: Vec<Vec<Outcome>> = phases.iter().map(|_| Vec::new()).collect();
        // Pods/s of every phase, round by round.
        let mut rounds: Vec<Vec<f64>> = Vec::new();
        let mut next = 0;
        for _ in 0..opts.rounds.max(1) {
            let mut round = Vec::new();
            for (i, &p) in phases.iter().enumerate() {
                // A short warm-up: connections, the server's caches.
                let warm = Opts {
                    pods: (opts.pods / 10).max(1),
                    ..*opts
                };
                let e = match p {
                    Phase::Alone => None,
                    Phase::Floor => floor_ext,
                    Phase::FilterBind | Phase::FilterPrioritizeBind => ext,
                };
                // Every pod of the run is a new pod (its own name and UID),
                // as in a cluster.
                phase(&warm, next, p, api, e, &writes, &bindings)?;
                next += warm.pods;
                let o = phase(opts, next, p, api, e, &writes, &bindings)?;
                next += opts.pods;
                round.push(o.pods_per_s);
                outcomes[i].push(o);
            }
            rounds.push(round);
        }
        for (p, runs) in phases.iter().zip(&mut outcomes) {
            runs.sort_by(|a, b| a.pods_per_s.total_cmp(&b.pods_per_s));
            print(*p, &runs[runs.len() / 2], opts.pods);
            let each: Vec<String> = runs
                .iter()
                .map(|o| format!("{:.0}", o.pods_per_s))
                .collect();
            println!(
                "  rounds          {:>10} pods/s (median above)",
                each.join(", ")
            );
        }
        // Each phase to the scheduler alone; Spillway's to the floor.
        // (Spillway's prioritize phase has no floor: the floor has no
        // Prioritize.)
        let pairs = [(1, 0), (2, 0), (3, 0), (2, 1)];
        for (i, base) in pairs {
            let ratios: Vec<f64> = rounds.iter().map(|r| r[i] / r[base]).collect();
            let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
            let to = if base == 0 { "" } else { " ÷ floor" };
            println!(
                "ratio {:<50} {:>6.2} (median; rounds {})",
                format!("{}{to}", phases[i].label()),
                median(ratios),
                each.join(", ")
            );
        }
        anyhow::Ok(())
    })();
    for c in [&mut child, &mut floor] {
        let _ = c.kill();
        let _ = c.wait();
    }
    result
}
