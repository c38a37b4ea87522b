//! `spillway-load`: load tests of the extender on this machine.
//!
//! - `http`: starts an extender over a synthetic cluster in a child process
//!   (the router and server stack `spillway serve` runs), sends filter or prioritize
//!   requests over loopback HTTP/1.1 keep-alive connections, and prints
//!   throughput, latency percentiles and the server's CPU time per request
//!   (from `/proc/<pid>/stat`).
//! - `bind`: the scheduler's filter-then-bind sequence for many pods, with
//!   Spillway as the binder writing to a fake API server (in this process,
//!   answering after a set latency): prints bind latency, the API calls per
//!   bind and the extender's CPU time per bind.
//! - `index`: feeds a synthetic cluster through the watch feed and prints
//!   the process's resident memory before and after.
//! - `controller`: the policy controller's reconciles over a synthetic
//!   cluster, writing to the fake API server: the patches of the first
//!   reconcile, of a converged cluster (none), and under pod churn, per
//!   reconcile and per minute, with the CPU time of one reconcile.
//! - `scaler`: one replica-scaler sync over many GpuAutoscalers against a
//!   real Prometheus (Debian's `prometheus`, started here on 127.0.0.1) and
//!   a fake API server in a child process: Prometheus queries per sync and
//!   the scaler's CPU time per sync (this process only), first sync and
//!   steady state.
//! - `sched`: scheduler-level throughput, pods/s with Spillway as extender
//!   and binder and with an extender that does no work (the floor) against
//!   the same model scheduler alone, in one run ([`sched`]).
//! - `cluster`: the same ratio on a real cluster running Spillway
//!   ([`spillway::load::cluster`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use spillway::decision::time::Time;
use spillway::extender::backend::{BindError, BindRequest, Binder, Extender, Index};
use spillway::extender::server::{RouterConfig, router};
use spillway::load;
use spillway::serve::binder::KubeBinder;

mod sched;

/// mimalloc keeps freed pages for reuse: a 5,000-node Filter allocates a few
/// hundred kilobytes per request, which glibc's allocator would return to the
/// kernel and fault in again on the next request.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "spillway-load", about = "Load tests of the Spillway extender")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Verb {
    Filter,
    Prioritize,
}

#[derive(Subcommand)]
enum Cmd {
    /// Requests over loopback HTTP against an extender in a child process.
    Http {
        /// Nodes in the synthetic cluster (and in every request).
        #[arg(long, default_value_t = 5000)]
        nodes: usize,
        /// Pods per node.
        #[arg(long, default_value_t = 10)]
        pods_per_node: usize,
        /// Requests to send (after 10% more as warm-up).
        #[arg(long, default_value_t = 2000)]
        requests: usize,
        /// Concurrent connections.
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// Send full NodeLists (`nodeCacheCapable: false`) instead of names.
        #[arg(long)]
        full: bool,
        /// The verb.
        #[arg(long, value_enum, default_value_t = Verb::Filter)]
        verb: Verb,
    },
    /// Filter then bind each of `--pods` pods, Spillway binding through a
    /// fake API server.
    Bind {
        /// Nodes in the synthetic cluster (and in every filter request).
        #[arg(long, default_value_t = 100)]
        nodes: usize,
        /// Pods to filter and bind.
        #[arg(long, default_value_t = 3000)]
        pods: usize,
        /// Binds in flight at once (the scheduler binds each pod in its own
        /// goroutine).
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Time the fake API server takes to answer each call.
        #[arg(long, default_value_t = 2)]
        api_latency_ms: u64,
    },
    /// Scheduler-level throughput: a model of kube-scheduler's loop binds
    /// `--pods` pods alone, then with Spillway (filter and bind; filter,
    /// prioritize and bind), against the fake API server; prints each
    /// phase and the ratios to the scheduler alone.
    Sched {
        /// Nodes in the synthetic cluster (every request names them all).
        #[arg(long, default_value_t = 500)]
        nodes: usize,
        /// Pods per phase.
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
        pods: u64,
        /// CPU the scheduler's own plugins spend per pod (kube-scheduler
        /// alone: 1.6 s for 1,000 pods on 500 nodes, measured on a 2-core
        /// machine with kube-apiserver beside it, client qps 1000).
        #[arg(long, default_value_t = 1600)]
        scheduler_cpu_us: u64,
        /// CPU the API server spends per write (kube-apiserver: 1.5 s for
        /// 1,000 Bindings).
        #[arg(long, default_value_t = 1500)]
        api_cpu_us: u64,
        /// Time the API server takes to answer, beyond its CPU.
        #[arg(long, default_value_t = 0)]
        api_latency_ms: u64,
        /// Binds in flight at most (a goroutine per bind in kube-scheduler).
        #[arg(long, default_value_t = 64)]
        bind_workers: usize,
        /// Rounds of the phases, interleaved; the medians are printed.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// A policy whose units set no `podLabels`: a bind is then the only
        /// write a pod costs (the controller has nothing to patch).
        #[arg(long)]
        without_pod_labels: bool,
    },
    /// Scheduler-level throughput on a real cluster running Spillway as
    /// `deploy/` installs it: the same scheduler binds gated pods Spillway
    /// does not manage, then GPU pods through Spillway; prints pods/s of
    /// both and the ratio. Creates Node objects (no kubelet) and a namespace,
    /// and deletes them at the end. For a cluster without a cloud
    /// controller manager (kind, kubeadm), which would delete Node objects
    /// with no instance behind them, and a scheduler whose
    /// `clientConnection.qps` does not limit its own Bindings.
    Cluster {
        /// The kubeconfig of the cluster.
        #[arg(long, env = "SPILLWAY_E2E_KUBECONFIG")]
        kubeconfig: String,
        /// Node objects to create (half local, half cloud; 8 GPUs each).
        #[arg(long, default_value_t = 500)]
        nodes: usize,
        /// Pods per phase.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
        pods: u64,
        /// The local unit's `max` (the rest spill to the cloud unit).
        #[arg(long, default_value_t = 400)]
        local_max: usize,
        /// The scheduler that calls Spillway (the pods' `schedulerName`).
        #[arg(long, default_value = "spillway-scheduler")]
        scheduler: String,
        /// Rounds of the two phases, interleaved.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Seconds a phase's pods may take to be bound once released.
        #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
        bind_timeout_s: u64,
    },
    /// The policy controller's writes: patches to converge, at steady state
    /// and under churn, per minute at a 1 s reconcile period.
    Controller {
        /// Nodes in the synthetic cluster (half data-center, half cloud).
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        /// Pods per node (every other one governed).
        #[arg(long, default_value_t = 10)]
        pods_per_node: usize,
        /// Reconciles (one simulated second apart) per phase.
        #[arg(long, default_value_t = 60)]
        ticks: usize,
    },
    /// One replica-scaler sync over `--autoscalers` GpuAutoscalers against
    /// a real Prometheus: queries and CPU per sync.
    Scaler {
        /// GpuAutoscalers (one per namespace, 4 pods each).
        #[arg(long, default_value_t = 500)]
        autoscalers: usize,
        /// Steady-state syncs measured after the first.
        #[arg(long, default_value_t = 20)]
        syncs: usize,
        /// The Prometheus binary.
        #[arg(
            long,
            env = "SPILLWAY_PROMETHEUS",
            default_value = "/usr/bin/prometheus"
        )]
        prometheus: std::path::PathBuf,
    },
    /// (internal) The scaler's fake API server and exporter; prints the address.
    #[command(hide = true)]
    ScalerFixture {
        #[arg(long)]
        autoscalers: usize,
        #[arg(long)]
        prometheus: String,
    },
    /// Memory of the index with a synthetic cluster fed through the watch feed.
    Index {
        /// Nodes.
        #[arg(long, default_value_t = 5000)]
        nodes: usize,
        /// Pods per node.
        #[arg(long, default_value_t = 10)]
        pods_per_node: usize,
    },
    /// (internal) Serve an extender over a synthetic cluster on 127.0.0.1;
    /// prints the address on stdout. With `--api`, binds go to that API
    /// server through kube-rs (as `spillway serve` binds); else they succeed
    /// at once.
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        nodes: usize,
        #[arg(long)]
        pods_per_node: usize,
        #[arg(long)]
        api: Option<String>,
        /// Also run the policy controller against `--api`.
        #[arg(long, requires = "api")]
        controller: bool,
        /// Clear the synthetic policy's unit `podLabels`.
        #[arg(long)]
        without_pod_labels: bool,
        /// Serve the extender floor instead of Spillway: an extender that
        /// does no work (see [`floor`]).
        #[arg(long, requires = "api", conflicts_with = "controller")]
        floor: bool,
    },
}

struct AcceptingBinder;

impl Binder for AcceptingBinder {
    async fn bind(&self, _: BindRequest) -> Result<(), BindError> {
        Ok(())
    }
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Time `pid`'s live threads have run, in seconds, from
/// `/proc/<pid>/task/*/schedstat` (nanosecond resolution, user and kernel
/// time together).
fn cpu_seconds_live(pid: u32) -> anyhow::Result<f64> {
    let mut ns: u64 = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("schedstat");
        // A thread that ended since the listing has no file: skip it.
        if let Ok(stat) = std::fs::read_to_string(path) {
            ns += stat
                .split_whitespace()
                .next()
                .context("empty schedstat")?
                .parse::<u64>()?;
        }
    }
    #[allow(clippy::cast_precision_loss)]
    Ok(ns as f64 / 1e9)
}

/// Samples the server's CPU time and the requests answered every
/// `every` until `stop`, returning the CPU seconds per request of each
/// interval that saw requests. The median of these is the steady cost per
/// request with bursts of other load on the machine left out; the mean over
/// the whole run includes them.
fn sample_cpu(
    pid: u32,
    answered: &AtomicUsize,
    stop: &AtomicBool,
    every: Duration,
) -> anyhow::Result<Vec<f64>> {
    let mut per_request = Vec::new();
    let mut last = (cpu_seconds_live(pid)?, answered.load(Ordering::Relaxed));
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(every);
        let now = (cpu_seconds_live(pid)?, answered.load(Ordering::Relaxed));
        if now.1 > last.1 {
            #[allow(clippy::cast_precision_loss)]
            per_request.push((now.0 - last.0) / (now.1 - last.1) as f64);
        }
        last = now;
    }
    Ok(per_request)
}

/// utime + stime of `pid`, in seconds (USER_HZ is 100 on Linux).
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    #[allow(clippy::cast_precision_loss)]
    Ok(ticks as f64 / 100.0)
}

/// A kube client of the fake API server at `url`, made on `runtime` (the
/// client's buffer task runs there).
fn fake_api_client(runtime: &tokio::runtime::Runtime, url: &str) -> anyhow::Result<kube::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    runtime.block_on(async {
        kube::Client::try_from(kube::Config::new(url.parse()?))
            .context("a client of the fake API server")
    })
}

fn serve(
    nodes: usize,
    pods_per_node: usize,
    api: Option<&str>,
    controller: bool,
    without_pod_labels: bool,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match api {
        None => serve_with(&runtime, nodes, pods_per_node, AcceptingBinder, |_| {}),
        Some(url) => {
            let client = fake_api_client(&runtime, url)?;
            let cell = Arc::new(std::sync::OnceLock::new());
            let watched = Watched {
                inner: KubeBinder::new(client.clone()),
                ext: cell.clone(),
            };
            serve_with(&runtime, nodes, pods_per_node, watched, |ext| {
                let _ = cell.set(Arc::downgrade(ext));
                if without_pod_labels {
                    ext.with_index(|ix| {
                        let policies: Vec<_> = ix.snapshot.policies().cloned().collect();
                        for mut p in policies {
                            for u in &mut p.units {
                                u.pod_labels.clear();
                            }
                            ix.snapshot.upsert_policy(p);
                        }
                    });
                }
                if controller {
                    // The policy controller as `spillway serve` runs it: a
                    // reconcile every second (the default period), its
                    // writes to the fake API server.
                    let ext = ext.clone();
                    runtime.spawn(async move {
                        let mut memory = spillway::serve::controller::Memory::default();
                        loop {
                            spillway::serve::controller::tick(&client, &ext, &mut memory).await;
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    });
                }
            })
        }
    }
}

/// `spillway-load cluster`: [`load::cluster::run`] against the cluster of
/// `kubeconfig`.
fn cluster(kubeconfig: &str, opts: &load::cluster::Opts) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(kubeconfig)
                .with_context(|| format!("reading the kubeconfig {kubeconfig}"))?,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?;
        load::cluster::run(&kube::Client::try_from(config)?, opts).await?;
        anyhow::Ok(())
    })
}

/// The extender floor: what any extender in Spillway's place costs the
/// scheduler, with none of Spillway's work. On the same server stack and
/// runtime as [`serve`], Filter reads the request and answers the bytes
/// Spillway answers for the synthetic policy (the data-center nodes, whose
/// unit always has room) without decoding it; Bind decodes its arguments
/// and creates the Binding through Spillway's binder (one API call). No
/// index, no watch, no controller.
fn floor(nodes: usize, api: &str) -> anyhow::Result<()> {
    use axum::body::Bytes;
    use axum::routing::post;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let binder = Arc::new(KubeBinder::new(fake_api_client(&runtime, api)?));
    let dc: Vec<String> = (0..nodes)
        .filter(|&i| load::pool(i) == "dc")
        .map(load::node_name)
        .collect();
    let answer = Bytes::from(serde_json::to_vec(&serde_json::json!({ "NodeNames": dc }))?);
    let app = axum::Router::new()
        .route(
            "/scheduler/filter",
            post(move |_args: Bytes| async move { answer }),
        )
        .route(
            "/scheduler/bind",
            post(move |args: Bytes| async move {
                use spillway::extender::wire::{ExtenderBindingArgs, ExtenderBindingResult};
                let error = match serde_json::from_slice::<ExtenderBindingArgs>(&args) {
                    Ok(a) => {
                        let req = BindRequest {
                            namespace: a.pod_namespace,
                            name: a.pod_name,
                            uid: a.pod_uid,
                            node: a.node,
                            annotations: spillway::decision::snapshot::Labels::default(),
                        };
                        binder.bind(req).await.err().map(|e| e.to_string())
                    }
                    Err(e) => Some(e.to_string()),
                };
                axum::Json(ExtenderBindingResult {
                    error: error.unwrap_or_default(),
                })
            }),
        );
    listen_and_serve(&runtime, app)
}

/// Serves `app` on a free port of 127.0.0.1, printed on stdout for the
/// parent process, with the same server stack as `spillway serve`
/// (axum-server over hyper).
fn listen_and_serve(runtime: &tokio::runtime::Runtime, app: axum::Router) -> anyhow::Result<()> {
    runtime.block_on(async move {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        println!("{}", listener.local_addr()?);
        std::io::stdout().flush()?;
        axum_server::from_tcp(listener)
            .serve(app.into_make_service())
            .await?;
        anyhow::Ok(())
    })
}

/// A binder followed by what the pod watch would deliver: once the API
/// server took the Binding, the pod comes back bound (the load tool's fake
/// API server has no watch) through the watch feed, so bound pods leave
/// the reservation ledger as in a cluster, and the feed's cost is counted.
struct Watched<B> {
    inner: B,
    ext: Arc<std::sync::OnceLock<std::sync::Weak<Extender<Watched<B>>>>>,
}

impl<B: Binder> Binder for Watched<B> {
    async fn bind(&self, req: BindRequest) -> Result<(), BindError> {
        self.inner.bind(req.clone()).await?;
        let mut pod = load::pending_pod();
        pod["metadata"]["name"] = req.name.clone().into();
        pod["metadata"]["namespace"] = req.namespace.clone().into();
        pod["metadata"]["uid"] = req.uid.clone().into();
        pod["metadata"]["annotations"] = serde_json::json!(req.annotations);
        pod["spec"]["nodeName"] = req.node.clone().into();
        pod["status"]["phase"] = "Running".into();
        let event: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod)
            .map_err(|e| BindError::Api(format!("the watched pod: {e}")))?;
        if let Some(ext) = self.ext.get().and_then(std::sync::Weak::upgrade) {
            ext.with_index(|ix| {
                let _ = spillway::index::feed::pod_event(
                    ix,
                    &mut spillway::index::feed::Relist::default(),
                    kube::runtime::watcher::Event::Apply(event),
                    Time::from_secs(1_800_000_000),
                );
            });
        }
        Ok(())
    }
}

fn serve_with<B: Binder>(
    runtime: &tokio::runtime::Runtime,
    nodes: usize,
    pods_per_node: usize,
    binder: B,
    started: impl FnOnce(&Arc<Extender<B>>),
) -> anyhow::Result<()> {
    let mut index = Index::default();
    load::fill(&mut index, nodes, pods_per_node);
    let ext = Arc::new(Extender::new(
        index,
        binder,
        Box::new(|| Time::from_secs(1_800_000_000)),
    ));
    started(&ext);
    ext.set_ready(true);
    listen_and_serve(runtime, router(ext, &RouterConfig::default()))
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(Self {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    fn post(&mut self, path: &str, body: &[u8]) -> anyhow::Result<usize> {
        Ok(self.post_read(path, body)?.len())
    }

    /// POSTs `body` to `path` and returns the answer's body.
    fn post_read(&mut self, path: &str, body: &[u8]) -> anyhow::Result<Vec<u8>> {
        write!(
            self.writer,
            "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )?;
        self.writer.write_all(body)?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        if !line.starts_with("HTTP/1.1 2") {
            bail!("unexpected answer: {}", line.trim());
        }
        let mut length = 0;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse()?;
            }
        }
        let mut buf = vec![0; length];
        self.reader.read_exact(&mut buf)?;
        Ok(buf)
    }
}

/// A fake API server for binds on 127.0.0.1, on its own threads: answers a
/// pod merge patch, a `pods/binding` create and a ResourcePolicy status
/// patch as the API server does, each after `latency`, and counts the calls.
fn fake_api(latency: Duration, calls: Arc<AtomicUsize>) -> anyhow::Result<SocketAddr> {
    fake_api_with(latency, Duration::ZERO, calls, None)
}

/// [`fake_api`] that also spends `cpu` of CPU time on each call (on two
/// worker threads, as an API server uses both cores) and counts the
/// `pods/binding` creates apart in `bindings`.
fn fake_api_with(
    latency: Duration,
    cpu: Duration,
    calls: Arc<AtomicUsize>,
    bindings: Option<Arc<AtomicUsize>>,
) -> anyhow::Result<SocketAddr> {
    use axum::extract::Path;
    use axum::http::StatusCode;
    use axum::routing::{patch, post};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(if cpu.is_zero() { 1 } else { 2 })
        .enable_all()
        .build()?;
    let answer = move || async move {
        sched::burn(cpu);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    };
    let (patched, bound, status) = (calls.clone(), calls.clone(), calls);
    let app =
        axum::Router::new()
            .route(
                "/apis/{group}/{version}/namespaces/{ns}/resourcepolicies/{name}/status",
                patch(
                    move |Path((group, version, ns, name)): Path<(
                        String,
                        String,
                        String,
                        String,
                    )>,
                          _body: axum::body::Bytes| async move {
                        status.fetch_add(1, Ordering::Relaxed);
                        answer().await;
                        axum::Json(
                            serde_json::json!({"apiVersion": format!("{group}/{version}"),
                        "kind": "ResourcePolicy", "metadata": {"name": name, "namespace": ns}}),
                        )
                    },
                ),
            )
            .route(
                "/api/v1/namespaces/{ns}/pods/{name}",
                patch(move |Path((ns, name)): Path<(String, String)>, _body: axum::body::Bytes| async move {
                    patched.fetch_add(1, Ordering::Relaxed);
                    answer().await;
                    axum::Json(serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "namespace": ns}}))
                }),
            )
            .route(
                "/api/v1/namespaces/{ns}/pods/{name}/binding",
                // The body is read so that the connection is kept alive
                // (hyper closes a connection whose request body was left).
                post(move |_body: axum::body::Bytes| async move {
                    bound.fetch_add(1, Ordering::Relaxed);
                    if let Some(b) = &bindings {
                        b.fetch_add(1, Ordering::Relaxed);
                    }
                    answer().await;
                    (
                        StatusCode::CREATED,
                        axum::Json(serde_json::json!({"kind": "Status", "apiVersion": "v1",
                        "metadata": {}, "status": "Success", "code": 201})),
                    )
                }),
            );
    std::thread::spawn(move || {
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            axum::serve(listener, app).await?;
            anyhow::Ok(())
        })
    });
    Ok(addr)
}

/// Runs `ticks` reconciles one simulated second apart, calling `between`
/// before each; returns the API writes they made and the mean wall time of
/// one reconcile (the fake API answers at once).
#[allow(clippy::cast_precision_loss)]
async fn reconciles<B: Binder>(
    client: &kube::Client,
    ext: &Extender<B>,
    memory: &mut spillway::serve::controller::Memory,
    clock: &std::sync::atomic::AtomicI64,
    calls: &AtomicUsize,
    ticks: usize,
    mut between: impl FnMut(usize),
) -> (usize, Duration) {
    let before = calls.load(Ordering::Relaxed);
    let mut spent = Duration::ZERO;
    for i in 0..ticks {
        between(i);
        clock.fetch_add(1000, Ordering::Relaxed);
        let t = Instant::now();
        spillway::serve::controller::tick(client, ext, memory).await;
        spent += t.elapsed();
    }
    (
        calls.load(Ordering::Relaxed) - before,
        spent / u32::try_from(ticks.max(1)).unwrap_or(u32::MAX),
    )
}

/// The `controller` mode.
#[allow(clippy::cast_precision_loss)]
fn controller(nodes: usize, pods_per_node: usize, ticks: usize) -> anyhow::Result<()> {
    use spillway::index::feed::{self, Relist};
    let calls = Arc::new(AtomicUsize::new(0));
    let api = fake_api(Duration::ZERO, calls.clone())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = fake_api_client(&runtime, &format!("http://{api}"))?;
    let mut index = Index::default();
    load::fill(&mut index, nodes, pods_per_node);
    let clock = Arc::new(std::sync::atomic::AtomicI64::new(1_800_000_000_000));
    let ext = {
        let clock = clock.clone();
        Extender::new(
            index,
            AcceptingBinder,
            Box::new(move || Time::from_millis(clock.load(Ordering::Relaxed))),
        )
    };
    ext.set_ready(true);
    let governed = ext.with_index(|ix| {
        ix.snapshot
            .pods()
            .filter(|p| p.namespace == load::NAMESPACE)
            .count()
    });
    let mut memory = spillway::serve::controller::Memory::default();
    runtime.block_on(async {
        let (converge, converge_t) =
            reconciles(&client, &ext, &mut memory, &clock, &calls, 1, |_| {}).await;
        let (steady, steady_t) =
            reconciles(&client, &ext, &mut memory, &clock, &calls, ticks, |_| {}).await;
        // Churn: each second one governed pod goes and a new one is bound
        // on the same node (a rolling replacement).
        let mut relist = Relist::default();
        let now = Time::from_millis(clock.load(Ordering::Relaxed));
        let (churn, churn_t) = reconciles(&client, &ext, &mut memory, &clock, &calls, ticks, |i| {
            let node = i % nodes;
            let old = load::pod(node, 0);
            let mut new = load::pod(node, 0);
            new.metadata.uid = Some(format!("churn-{i:06}"));
            new.metadata.name = Some(format!("qwen-chat-churn-{i:06}"));
            ext.with_index(|ix| {
                let _ = feed::pod_event(ix, &mut relist, kube::runtime::watcher::Event::Delete(old), now);
                let _ = feed::pod_event(ix, &mut relist, kube::runtime::watcher::Event::Apply(new), now);
            });
        })
        .await;
        let per_minute = |n: usize| n as f64 / ticks.max(1) as f64 * 60.0;
        println!(
            "policy controller over {nodes} nodes ({governed} governed pods), reconcile period 1 s, fake API server"
        );
        println!(
            "  converge        {converge:>8} API writes in the first reconcile ({:.1} ms)",
            converge_t.as_secs_f64() * 1e3
        );
        println!(
            "  steady state    {steady:>8} API writes in {ticks} reconciles ({:.1} per minute; {:.2} ms per reconcile)",
            per_minute(steady),
            steady_t.as_secs_f64() * 1e3
        );
        println!(
            "  churn 1 pod/s   {churn:>8} API writes in {ticks} reconciles ({:.1} per minute; {:.2} ms per reconcile)",
            per_minute(churn),
            churn_t.as_secs_f64() * 1e3
        );
        // The controller's own count, by kind and result.
        for l in ext
            .metrics()
            .render()
            .lines()
            .filter_map(|l| l.strip_prefix("spillway_api_writes_total"))
        {
            println!("  writes {l}");
        }
        anyhow::ensure!(steady == 0, "a converged controller wrote {steady} times");
        anyhow::Ok(())
    })
}

/// The `scaler-fixture` child: serves until killed.
fn scaler_fixture(n: usize, prometheus: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?);
        std::io::stdout().flush()?;
        let app = load::scaler::router(n, prometheus, Arc::default());
        axum::serve(listener, app).await?;
        anyhow::Ok(())
    })
}

/// Kills a child process on drop.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `scaler` mode.
#[allow(clippy::cast_precision_loss)]
fn scaler(n: usize, syncs: usize, prometheus: &std::path::Path) -> anyhow::Result<()> {
    use spillway::scaler::prom::{Endpoint, PromClient};
    anyhow::ensure!(
        prometheus.exists(),
        "{} not found: install Debian's prometheus package or pass --prometheus",
        prometheus.display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let prom_url = format!("http://127.0.0.1:{port}");
    let mut fixture = Command::new(std::env::current_exe()?)
        .args([
            "scaler-fixture",
            "--autoscalers",
            &n.to_string(),
            "--prometheus",
            &prom_url,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the fixture")?;
    let mut first = String::new();
    BufReader::new(fixture.stdout.take().context("no stdout")?).read_line(&mut first)?;
    let fixture = Reaped(fixture);
    let api: SocketAddr = first.trim().parse().context("fixture address")?;
    let dir = std::env::temp_dir().join(format!("spillway-load-prometheus-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 5s\nscrape_configs:\n- job_name: fixture\n  metrics_path: /exporter\n  static_configs:\n  - targets: ['{api}']\n"
        ),
    )?;
    let prom = Reaped(
        Command::new(prometheus)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting prometheus")?,
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let probe = PromClient::new(Endpoint {
            url: prom_url.clone(),
            timeout_ms: 2000,
            ..Endpoint::default()
        })?;
        let want = (n * load::scaler::PODS) as f64;
        let started = Instant::now();
        // Two scrapes, so the latency metrics' rate() has two points.
        loop {
            let seen = probe
                .query("count(count_over_time(vllm:num_requests_waiting[1m]) >= 2)")
                .await
                .ok()
                .and_then(|rows| rows.first().map(|r| r.value));
            if seen == Some(want) {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(120),
                "Prometheus did not scrape the fixture within 2 minutes (saw {seen:?} of {want} series)"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let client = kube::Client::try_from(kube::Config::new(format!("http://{api}").parse()?))?;
        let mut scaler = spillway::scaler::Scaler::new(
            client,
            kube::runtime::events::Reporter {
                controller: "spillway-load".into(),
                instance: None,
            },
            &prometheus::Registry::new(),
        );
        let me = std::process::id();
        let prom_pid = prom.0.id();
        let mut now = Time::from_millis(1_800_000_000_000);
        let measure = |report: &spillway::scaler::SyncReport, cpu: f64, prom_cpu: f64, wall: Duration, label: &str| {
            println!(
                "  {label:<14} {:>4} queries, {:>4} status writes, {:>3} rescales; scaler CPU {:>7.1} ms, wall {:>7.1} ms, Prometheus CPU {:>6.1} ms",
                report.queries,
                report.status_writes,
                report.rescales,
                cpu * 1e3,
                wall.as_secs_f64() * 1e3,
                prom_cpu * 1e3
            );
        };
        println!(
            "replica scaler: one sync over {n} GpuAutoscalers ({} pods; queue depth + GPU each, TTFT p90 on every tenth), real Prometheus, fake API server",
            n * load::scaler::PODS
        );
        let (c0, p0, t0) = (cpu_seconds_live(me)?, cpu_seconds_live(prom_pid)?, Instant::now());
        let first = scaler.sync(now).await;
        measure(&first, cpu_seconds_live(me)? - c0, cpu_seconds_live(prom_pid)? - p0, t0.elapsed(), "first sync");
        anyhow::ensure!(first.autoscalers == n, "the scaler saw {} autoscalers", first.autoscalers);
        let (c0, p0, t0) = (cpu_seconds_live(me)?, cpu_seconds_live(prom_pid)?, Instant::now());
        let mut total = spillway::scaler::SyncReport::default();
        for _ in 0..syncs {
            now = now.after(Duration::from_secs(15));
            let r = scaler.sync(now).await;
            total.queries += r.queries;
            total.status_writes += r.status_writes;
            total.rescales += r.rescales;
        }
        let k = syncs.max(1) as f64;
        let (cpu, prom_cpu, wall) = (
            (cpu_seconds_live(me)? - c0) / k,
            (cpu_seconds_live(prom_pid)? - p0) / k,
            t0.elapsed().div_f64(k),
        );
        println!(
            "  steady state   {:>4.0} queries, {:>4.0} status writes, {:>3.0} rescales; scaler CPU {:>7.1} ms, wall {:>7.1} ms, Prometheus CPU {:>6.1} ms (mean of {syncs} syncs)",
            total.queries as f64 / k,
            total.status_writes as f64 / k,
            total.rescales as f64 / k,
            cpu * 1e3,
            wall.as_secs_f64() * 1e3,
            prom_cpu * 1e3
        );
        println!(
            "  per autoscaler: {:.3} queries, {:.3} ms scaler CPU per sync (API calls per autoscaler: GET /scale, LIST pods)",
            total.queries as f64 / k / n as f64,
            cpu * 1e3 / n as f64
        );
        anyhow::ensure!(total.rescales == 0, "the steady state rescaled {} times", total.rescales);
        anyhow::Ok(())
    });
    drop(prom);
    drop(fixture);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Starts `spillway-load serve` with `args` and reads the address it prints.
fn start_server(args: &[String]) -> anyhow::Result<(std::process::Child, SocketAddr)> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("serve")
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the server process")?;
    let addr = (|| {
        let mut first = String::new();
        BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut first)?;
        first.trim().parse().context("server address")
    })();
    match addr {
        Ok(addr) => Ok((child, addr)),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

/// Name and UID of pod `i` of the bind run.
fn bind_pod(i: usize) -> (String, String) {
    (
        format!("qwen-chat-7d9f-{i:05}"),
        format!("44444444-0000-4000-8000-{i:012}"),
    )
}

/// A filter request for pod `i` of the bind run ([`bind_pod`]).
fn pod_request(nodes: usize, i: usize) -> Vec<u8> {
    let mut pod = load::pending_pod();
    let (name, uid) = bind_pod(i);
    pod["metadata"]["name"] = name.into();
    pod["metadata"]["uid"] = uid.into();
    let names: Vec<String> = (0..nodes).map(load::node_name).collect();
    serde_json::to_vec(&serde_json::json!({"Pod": pod, "NodeNames": names})).unwrap_or_default()
}

#[allow(clippy::cast_precision_loss)]
fn bind(nodes: usize, pods: usize, concurrency: usize, latency: Duration) -> anyhow::Result<()> {
    let calls = Arc::new(AtomicUsize::new(0));
    let api = fake_api(latency, calls.clone())?;
    let (mut child, addr) = start_server(&[
        "--nodes".into(),
        nodes.to_string(),
        "--pods-per-node".into(),
        "10".into(),
        "--api".into(),
        format!("http://{api}"),
    ])?;
    let result = (|| {
        // Filter every pod first, as the scheduler does before each bind;
        // bind it to the first node its answer allows.
        let mut conn = Conn::open(addr)?;
        let mut binds = Vec::with_capacity(pods);
        for i in 0..pods {
            let answer: serde_json::Value = serde_json::from_slice(
                &conn.post_read("/scheduler/filter", &pod_request(nodes, i))?,
            )?;
            let node = answer["NodeNames"][0]
                .as_str()
                .with_context(|| format!("pod {i}: no node passes: {answer}"))?
                .to_owned();
            let (name, uid) = bind_pod(i);
            binds.push(serde_json::to_vec(&serde_json::json!({
                "PodName": name,
                "PodNamespace": load::NAMESPACE,
                "PodUID": uid,
                "Node": node,
            }))?);
        }
        let binds = Arc::new(binds);
        let next = Arc::new(AtomicUsize::new(0));
        let cpu_before = cpu_seconds(child.id())?;
        let started = Instant::now();
        let workers: Vec<_> = (0..concurrency.max(1))
            .map(|_| {
                let (binds, next) = (binds.clone(), next.clone());
                std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
                    let mut conn = Conn::open(addr)?;
                    let mut lat = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(body) = binds.get(i) else {
                            return Ok(lat);
                        };
                        let t = Instant::now();
                        let answer = conn.post_read("/scheduler/bind", body)?;
                        lat.push(t.elapsed());
                        if answer.as_slice() != br#"{"Error":""}"# {
                            bail!("bind {i}: {}", String::from_utf8_lossy(&answer));
                        }
                    }
                })
            })
            .collect();
        let mut lat = Vec::new();
        for w in workers {
            lat.extend(w.join().map_err(|_| anyhow::anyhow!("worker panicked"))??);
        }
        let wall = started.elapsed();
        let cpu = cpu_seconds(child.id())? - cpu_before;
        lat.sort_unstable();
        let n = lat.len() as f64;
        println!(
            "bind over loopback HTTP: {pods} pods filtered then bound, {concurrency} binds in flight, fake API server answering after {} ms",
            latency.as_millis()
        );
        print_rates(&lat, wall, "binds");
        println!(
            "  API calls       {:>10.2} per bind (every call the fake API server took)",
            calls.load(Ordering::Relaxed) as f64 / n
        );
        println!("  server CPU      {:>10.3} ms/bind (mean)", cpu / n * 1e3);
        anyhow::Ok(())
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Prints throughput (`what` per second over `wall`) and the p50 and p99
/// of `sorted` latencies.
#[allow(clippy::cast_precision_loss)]
fn print_rates(sorted: &[Duration], wall: Duration, what: &str) {
    println!(
        "  throughput      {:>10.0} {what}/s",
        sorted.len() as f64 / wall.as_secs_f64()
    );
    println!(
        "  latency p50     {:>10.3} ms",
        percentile(sorted, 0.50).as_secs_f64() * 1e3
    );
    println!(
        "  latency p99     {:>10.3} ms",
        percentile(sorted, 0.99).as_secs_f64() * 1e3
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[allow(clippy::too_many_arguments, clippy::cast_precision_loss)]
fn http(
    nodes: usize,
    pods_per_node: usize,
    requests: usize,
    concurrency: usize,
    full: bool,
    verb: Verb,
) -> anyhow::Result<()> {
    let (mut child, addr) = start_server(&[
        "--nodes".into(),
        nodes.to_string(),
        "--pods-per-node".into(),
        pods_per_node.to_string(),
    ])?;
    let result = (|| {
        let body = Arc::new(load::request(nodes, full));
        let path = match verb {
            Verb::Filter => "/scheduler/filter",
            Verb::Prioritize => "/scheduler/prioritize",
        };
        // Warm-up, then the measured run.
        let mut conn = Conn::open(addr)?;
        for _ in 0..requests.div_ceil(10) {
            conn.post(path, &body)?;
        }
        let cpu_before = cpu_seconds(child.id())?;
        let started = Instant::now();
        let per = requests.div_ceil(concurrency.max(1));
        let answered = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (answered, stop, pid) = (answered.clone(), stop.clone(), child.id());
            std::thread::spawn(move || {
                sample_cpu(pid, &answered, &stop, Duration::from_millis(100))
            })
        };
        let workers: Vec<_> = (0..concurrency.max(1))
            .map(|_| {
                let (body, answered) = (body.clone(), answered.clone());
                std::thread::spawn(move || -> anyhow::Result<(Vec<Duration>, usize)> {
                    let mut conn = Conn::open(addr)?;
                    let mut lat = Vec::with_capacity(per);
                    let mut bytes = 0;
                    for _ in 0..per {
                        let t = Instant::now();
                        bytes = conn.post(path, &body)?;
                        lat.push(t.elapsed());
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((lat, bytes))
                })
            })
            .collect();
        let mut lat = Vec::new();
        let mut answer = 0;
        for w in workers {
            let (l, b) = w.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
            lat.extend(l);
            answer = b;
        }
        let wall = started.elapsed();
        let cpu = cpu_seconds(child.id())? - cpu_before;
        stop.store(true, Ordering::Relaxed);
        let mut windows = sampler
            .join()
            .map_err(|_| anyhow::anyhow!("sampler panicked"))??;
        windows.sort_unstable_by(f64::total_cmp);
        lat.sort_unstable();
        let n = lat.len() as f64;
        println!(
            "{} over loopback HTTP: {nodes} nodes ({} mode, request {:.1} KB, answer {:.1} KB), concurrency {concurrency}, {} requests",
            match verb {
                Verb::Filter => "filter",
                Verb::Prioritize => "prioritize",
            },
            if full { "full NodeList" } else { "node names" },
            body.len() as f64 / 1024.0,
            answer as f64 / 1024.0,
            lat.len()
        );
        print_rates(&lat, wall, "req");
        println!(
            "  latency max     {:>10.3} ms",
            lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3
        );
        println!(
            "  server CPU      {:>10.3} ms/request (mean)",
            cpu / n * 1e3
        );
        if let Some(median) = windows.get(windows.len() / 2) {
            println!(
                "  server CPU      {:>10.3} ms/request (median of {} 100-ms windows; quartiles {:.3}-{:.3})",
                median * 1e3,
                windows.len(),
                windows[windows.len() / 4] * 1e3,
                windows[windows.len() * 3 / 4] * 1e3
            );
        }
        anyhow::Ok(())
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

#[allow(clippy::cast_precision_loss)]
fn index(nodes: usize, pods_per_node: usize) {
    let before = status_kib("VmRSS:");
    let started = Instant::now();
    let mut index = Index::default();
    load::fill(&mut index, nodes, pods_per_node);
    let took = started.elapsed();
    let after = status_kib("VmRSS:");
    println!(
        "index: {} nodes, {} pods, {} policies fed through the watch feed in {:.2} s",
        index.snapshot.node_count(),
        index.snapshot.pod_count(),
        index.snapshot.policies().count(),
        took.as_secs_f64()
    );
    println!("  RSS before     {:>8.1} MB", before as f64 / 1024.0);
    println!("  RSS after      {:>8.1} MB", after as f64 / 1024.0);
    println!(
        "  index          {:>8.1} MB",
        after.saturating_sub(before) as f64 / 1024.0
    );
    println!(
        "  peak (VmHWM)   {:>8.1} MB",
        status_kib("VmHWM:") as f64 / 1024.0
    );
    drop(index);
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Http {
            nodes,
            pods_per_node,
            requests,
            concurrency,
            full,
            verb,
        } => http(nodes, pods_per_node, requests, concurrency, full, verb),
        Cmd::Index {
            nodes,
            pods_per_node,
        } => {
            index(nodes, pods_per_node);
            Ok(())
        }
        Cmd::Bind {
            nodes,
            pods,
            concurrency,
            api_latency_ms,
        } => bind(
            nodes,
            pods,
            concurrency,
            Duration::from_millis(api_latency_ms),
        ),
        Cmd::Sched {
            nodes,
            pods,
            scheduler_cpu_us,
            api_cpu_us,
            api_latency_ms,
            bind_workers,
            rounds,
            without_pod_labels,
        } => sched::run(&sched::Opts {
            nodes,
            pods: usize::try_from(pods)?,
            scheduler_cpu: Duration::from_micros(scheduler_cpu_us),
            api_cpu: Duration::from_micros(api_cpu_us),
            api_latency: Duration::from_millis(api_latency_ms),
            bind_workers,
            rounds,
            without_pod_labels,
        }),
        Cmd::Serve {
            nodes,
            api: Some(api),
            floor: true,
            ..
        } => floor(nodes, &api),
        Cmd::Serve {
            nodes,
            pods_per_node,
            api,
            controller,
            without_pod_labels,
            ..
        } => serve(
            nodes,
            pods_per_node,
            api.as_deref(),
            controller,
            without_pod_labels,
        ),
        Cmd::Cluster {
            kubeconfig,
            nodes,
            pods,
            local_max,
            scheduler,
            rounds,
            bind_timeout_s,
        } => cluster(
            &kubeconfig,
            &load::cluster::Opts {
                nodes,
                pods: usize::try_from(pods)?,
                local_max,
                scheduler,
                rounds,
                settle: Duration::from_secs(5),
                bind_timeout: Duration::from_secs(bind_timeout_s),
            },
        ),
        Cmd::Controller {
            nodes,
            pods_per_node,
            ticks,
        } => controller(nodes, pods_per_node, ticks),
        Cmd::Scaler {
            autoscalers,
            syncs,
            prometheus,
        } => scaler(autoscalers, syncs, &prometheus),
        Cmd::ScalerFixture {
            autoscalers,
            prometheus,
        } => scaler_fixture(autoscalers, &prometheus),
    }
}
