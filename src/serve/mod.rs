//! `spillway serve`: the composition root of the extender in a cluster.
//!
//! ```text
//!  watches (Nodes, Pods, ResourcePolicies ×2) ──► index ◄── extender (axum, TLS) ◄── kube-scheduler
//!                                                   │                 │ Bind
//!            writer (annotations, Events) ◄─Notice──┘                 └──► KubeBinder (pods/binding)
//!  replica scaler (GpuAutoscalers): Prometheus ──► core HPA ──► PATCH …/scale, status, Events
//!  expander (gRPC, TLS) ◄── cluster-autoscaler: BestOptions ranked on the same index
//!  ops port: /metrics /healthz /readyz        SIGTERM: not ready, drain, stop
//! ```
//!
//! Everything here wires parts together; the decisions are the core's and
//! the adapters are tested on their own.

pub mod binder;
pub mod controller;
pub mod leader;
pub mod tls;
pub mod watch;
pub mod writer;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, ValueEnum};
use kube::runtime::events::Reporter;

use crate::decision::time::{Time, parse_duration};
use crate::extender::backend::{Extender, Index};
use crate::extender::server::{DEFAULT_BODY_LIMIT, RouterConfig, ops_router, router};

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log pipelines).
    Json,
}

/// A listen address: `IP:PORT`, `[IPv6]:PORT`, or an IPv6 address and port
/// without brackets (`fd00::7:9090`, as `$(POD_IP):9090` expands in an
/// IPv6 pod).
fn listen_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| {
            let (ip, port) = s.rsplit_once(':').ok_or(())?;
            let ip: std::net::Ipv6Addr = ip.parse().map_err(|_| ())?;
            let port: u16 = port.parse().map_err(|_| ())?;
            Ok::<_, ()>(SocketAddr::from((ip, port)))
        })
        .map_err(|()| {
            format!("{s:?} is not an address and port such as 127.0.0.1:9090 or [::1]:9090")
        })
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

/// Arguments of `spillway serve`.
// On/off switches are command-line flags, one bool each.
#[allow(clippy::struct_excessive_bools)]
#[derive(Clone, Debug, Args)]
pub struct ServeArgs {
    /// Address of the extender (HTTPS when --tls-cert is given).
    #[arg(long, env = "SPILLWAY_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// URL path prefix of the verbs: the path of the scheduler's `urlPrefix`.
    #[arg(long, env = "SPILLWAY_PREFIX", default_value = "/scheduler")]
    pub prefix: String,
    /// Plain-HTTP address of /metrics, /healthz and /readyz (for Prometheus
    /// and the kubelet's probes). Loopback by default: in a pod, give the
    /// pod IP (`--metrics-listen=$(POD_IP):9090`) so that the kubelet and
    /// Prometheus reach it and nothing else on the node does.
    #[arg(long, env = "SPILLWAY_METRICS_LISTEN", value_parser = listen_addr, default_value = "127.0.0.1:9090")]
    pub metrics_listen: SocketAddr,
    /// Server certificate chain (PEM).
    #[arg(long, env = "SPILLWAY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, env = "SPILLWAY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM); the scheduler
    /// sends one with `tlsConfig.certFile/keyFile`.
    #[arg(long, env = "SPILLWAY_CLIENT_CA", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
    /// Largest accepted request body in bytes (a full NodeList of 5,000
    /// nodes is ~14 MB).
    #[arg(long, default_value_t = DEFAULT_BODY_LIMIT)]
    pub body_limit: usize,
    /// Time limit of one request; keep it under the scheduler's `httpTimeout`.
    #[arg(long, value_parser = duration, default_value = "4s")]
    pub request_timeout: Duration,
    /// Minimum gap between two Events of the same reason on the same pod.
    #[arg(long, value_parser = duration, default_value = "5m")]
    pub event_interval: Duration,
    /// On SIGTERM, how long in-flight requests may take to finish.
    #[arg(long, value_parser = duration, default_value = "30s")]
    pub shutdown_grace: Duration,
    /// Log format.
    #[arg(long, value_enum, env = "SPILLWAY_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Also watch ResourcePolicies of the `scheduling.alibabacloud.com`
    /// group (its CRD must be installed).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub watch_compat: bool,
    /// How long a Filter's reservation is kept once the watch shows its pod
    /// still pending without a Bind (a scheduling cycle that failed after
    /// Filter); raise it where PreBind or Permit steps wait long.
    #[arg(long, value_parser = duration, default_value = "5s")]
    pub reservation_grace: Duration,
    /// How often the policy controller writes deletion costs, unit labels
    /// and policy status (each only where it changed).
    #[arg(long, value_parser = duration, default_value = "1s")]
    pub reconcile_period: Duration,
    /// Run the replica scaler (GpuAutoscalers; needs their CRD).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub scaler: bool,
    /// How often the replica scaler syncs every GpuAutoscaler
    /// (kube-controller-manager's `--horizontal-pod-autoscaler-sync-period`).
    #[arg(long, value_parser = duration, default_value = "15s")]
    pub scaler_sync_period: Duration,
    /// Before a scale-down, mark the pods to lose (cloud units first, then
    /// the fewest requests in flight) so the ReplicaSet controller removes
    /// those.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub scaler_drain_aware: bool,
    /// Serve cluster-autoscaler's gRPC expander on this address (TLS with
    /// the --tls-cert certificate, which must name the address
    /// cluster-autoscaler dials; no client certificate is asked for, as
    /// cluster-autoscaler sends none). Off when not given.
    #[arg(long, env = "SPILLWAY_EXPANDER_LISTEN", value_parser = listen_addr, requires = "tls_cert")]
    pub expander_listen: Option<SocketAddr>,
    /// A node group's price per GPU-hour, `PATTERN=PRICE` (`*` matches any
    /// run of characters; the first match wins; repeatable). The first
    /// ranking key among the options that grow the right unit for their
    /// pods (unpriced groups count as free).
    #[arg(long = "expander-price", value_name = "PATTERN=PRICE")]
    pub expander_prices: Vec<crate::expander::PriceRule>,
    /// Time the expander has to answer; past it, every option goes back
    /// unranked (cluster-autoscaler waits 5 s at most).
    #[arg(long, value_parser = duration, default_value = "2s")]
    pub expander_budget: Duration,
    /// This instance's name in Events (the pod name, from the downward API).
    #[arg(long, env = "POD_NAME")]
    pub instance: Option<String>,
    /// Elect one leader among replicas on a Lease: only the leader answers
    /// the scheduler and writes; followers keep a warm index and report not
    /// ready. Off only for a single replica.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Namespace of the leader Lease (the pod's, from the downward API).
    #[arg(long, env = "POD_NAMESPACE", default_value = "spillway-system")]
    pub leader_elect_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = "spillway")]
    pub leader_elect_lease: String,
    /// `acquire`: contend for the lease; `follow`: lead while the
    /// kube-scheduler of this pod holds it (Spillway as its sidecar; the
    /// lease is the scheduler's `leaderElection.resourceName`).
    #[arg(long, value_enum, default_value_t = leader::Mode::Acquire)]
    pub leader_elect_mode: leader::Mode,
    /// How long followers honour a lease they do not see renewed.
    #[arg(long, value_parser = duration, default_value = "15s")]
    pub leader_elect_lease_duration: Duration,
    /// How long the leader tries to renew before it steps down.
    #[arg(long, value_parser = duration, default_value = "10s")]
    pub leader_elect_renew_deadline: Duration,
    /// How often the lease is read and acquired or renewed.
    #[arg(long, value_parser = duration, default_value = "2s")]
    pub leader_elect_retry_period: Duration,
}

impl ServeArgs {
    /// The leader election settings, or `None` when it is off.
    ///
    /// # Errors
    /// Durations that cannot work (client-go's checks): the renew deadline
    /// must be shorter than the lease and longer than the retry period.
    pub fn leader(&self) -> anyhow::Result<Option<leader::LeaderOptions>> {
        if !self.leader_elect {
            return Ok(None);
        }
        anyhow::ensure!(
            self.leader_elect_lease_duration > self.leader_elect_renew_deadline,
            "--leader-elect-lease-duration must be longer than --leader-elect-renew-deadline"
        );
        anyhow::ensure!(
            self.leader_elect_renew_deadline > self.leader_elect_retry_period,
            "--leader-elect-renew-deadline must be longer than --leader-elect-retry-period"
        );
        let host = self
            .instance
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "spillway".to_owned());
        let identity = match self.leader_elect_mode {
            // Unique per process, as client-go's `hostname_uuid`: a
            // restarted container is a new contender.
            leader::Mode::Acquire => format!(
                "{host}_{:x}",
                wall_clock().as_millis() ^ i64::from(std::process::id())
            ),
            // The scheduler's identity starts with the pod's hostname.
            leader::Mode::Follow => host,
        };
        Ok(Some(leader::LeaderOptions {
            mode: self.leader_elect_mode,
            namespace: self.leader_elect_namespace.clone(),
            name: self.leader_elect_lease.clone(),
            identity,
            lease_duration: self.leader_elect_lease_duration,
            renew_deadline: self.leader_elect_renew_deadline,
            retry_period: self.leader_elect_retry_period,
        }))
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // A second initialisation (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The wall clock as the core's [`Time`].
#[must_use]
pub fn wall_clock() -> Time {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Time::from_millis(ms)
}

/// Runs the extender until SIGTERM or Ctrl-C.
///
/// # Errors
/// Bad TLS files, no API server, or a port that cannot be bound.
pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    init_tracing(args.log_format);
    // kube's client and the extender's TLS both use rustls on ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

async fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    // Bad TLS files fail before anything connects.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls::server_config(&tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.client_ca.clone(),
        })?),
        _ => None,
    };
    let leader = args.leader()?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to the API server (in-cluster service account or KUBECONFIG)")?;
    let running = start(
        client,
        &Options {
            watch_compat: args.watch_compat,
            event_interval: args.event_interval,
            reservation_grace: args.reservation_grace,
            instance: args.instance.clone(),
            reconcile_period: args.reconcile_period,
            leader,
            scaler: args.scaler.then_some(ScalerOptions {
                sync_period: args.scaler_sync_period,
                drain_aware: args.scaler_drain_aware,
            }),
        },
    );
    let ext = running.extender.clone();

    let handle = axum_server::Handle::new();
    let ops_handle = axum_server::Handle::new();
    let (stopping_tx, mut stopping) = tokio::sync::watch::channel(false);
    {
        let (handle, ops_handle, ext, grace) = (
            handle.clone(),
            ops_handle.clone(),
            ext.clone(),
            args.shutdown_grace,
        );
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!(?grace, "shutting down: not ready, draining requests");
            ext.drain();
            handle.graceful_shutdown(Some(grace));
            ops_handle.graceful_shutdown(Some(grace));
            let _ = stopping_tx.send(true);
        });
    }
    // cluster-autoscaler's gRPC client verifies the server but presents no
    // certificate of its own: the expander's port asks for none.
    let expander_tls = match (&args.expander_listen, &args.tls_cert, &args.tls_key) {
        (Some(_), Some(cert), Some(key)) => Some(tls::server_config(&tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: None,
        })?),
        _ => None,
    };
    let expander_ext = ext.clone();
    let expander = async move {
        let (Some(addr), Some(cfg)) = (args.expander_listen, expander_tls) else {
            return Ok(());
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the expander's port {addr}"))?;
        let expander = Arc::new(crate::expander::Expander::new(
            expander_ext,
            crate::expander::Config {
                prices: args.expander_prices.clone(),
                budget: args.expander_budget,
                ..crate::expander::Config::default()
            },
        ));
        let stop = async move {
            let _ = stopping.wait_for(|s| *s).await;
        };
        crate::expander::server::serve(listener, cfg, expander, stop).await
    };
    let config = RouterConfig {
        prefix: args.prefix.clone(),
        body_limit: args.body_limit,
        timeout: args.request_timeout,
    };
    let app = router(ext.clone(), &config).into_make_service();
    let ops = ops_router(ext).into_make_service();
    tracing::info!(
        listen = %args.listen,
        metrics = %args.metrics_listen,
        tls = tls.is_some(),
        client_auth = args.client_ca.is_some(),
        prefix = %config.prefix,
        "serving"
    );
    let extender = async {
        match tls {
            Some(cfg) => {
                let cfg = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(cfg));
                axum_server::bind_rustls(args.listen, cfg)
                    .handle(handle)
                    .serve(app)
                    .await
            }
            None => {
                axum_server::bind(args.listen)
                    .handle(handle)
                    .serve(app)
                    .await
            }
        }
        .with_context(|| format!("serving the extender on {}", args.listen))
    };
    let ops = async {
        axum_server::bind(args.metrics_listen)
            .handle(ops_handle)
            .serve(ops)
            .await
            .with_context(|| format!("serving metrics on {}", args.metrics_listen))
    };
    tokio::try_join!(extender, ops, expander)?;
    // In-flight requests are done: the lease can go to a follower.
    running.stop().await;
    tracing::info!("stopped");
    Ok(())
}

/// What [`start`] needs besides the client.
#[derive(Clone, Debug)]
pub struct Options {
    /// Also watch the `scheduling.alibabacloud.com` ResourcePolicies.
    pub watch_compat: bool,
    /// Minimum gap between two Events of the same reason on the same pod.
    pub event_interval: Duration,
    /// How long an assumed reservation of a pending pod outlives its Filter.
    pub reservation_grace: Duration,
    /// This instance's name in Events.
    pub instance: Option<String>,
    /// How often the policy controller reconciles.
    pub reconcile_period: Duration,
    /// Leader election; `None`: this instance always decides.
    pub leader: Option<leader::LeaderOptions>,
    /// The replica scaler; `None`: off.
    pub scaler: Option<ScalerOptions>,
}

/// The replica scaler's settings.
#[derive(Clone, Copy, Debug)]
pub struct ScalerOptions {
    /// Time between syncs.
    pub sync_period: Duration,
    /// Mark the pods a scale-down should lose.
    pub drain_aware: bool,
}

/// The extender and the tasks that keep it fed and write for it; dropping
/// it stops the tasks (without releasing the lease: see [`Running::stop`]).
pub struct Running {
    /// The extender the HTTP routes serve.
    pub extender: Arc<Extender<binder::KubeBinder>>,
    tasks: tokio::task::JoinSet<()>,
    /// The election task and its stop switch.
    election: Option<(
        tokio::sync::watch::Sender<bool>,
        tokio::task::JoinHandle<()>,
    )>,
}

/// How long a stopping instance tries to release its lease.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

impl Running {
    /// Stops every task and waits until they are gone; a leader first
    /// steps down (its gate closes) and releases its lease, so a follower
    /// takes over at its next round.
    pub async fn stop(mut self) {
        if let Some((stop, task)) = self.election.take() {
            let _ = stop.send(true);
            let _ = tokio::time::timeout(RELEASE_TIMEOUT, task).await;
        }
        self.tasks.shutdown().await;
    }

    /// Stops every task at once, as a crash would: the lease is not
    /// released, so followers wait for it to lapse.
    pub async fn kill(mut self) {
        if let Some((_, task)) = self.election.take() {
            task.abort();
            let _ = task.await;
        }
        self.tasks.shutdown().await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some((_, task)) = self.election.take() {
            task.abort();
        }
    }
}

/// Builds the extender over `client` and starts its tasks: the watches
/// (which open the extender's gate once every list is applied), the notice
/// and policy-status writers and the housekeeping tick. Must be called
/// within a tokio runtime.
#[must_use]
pub fn start(client: kube::Client, opts: &Options) -> Running {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let ext = Arc::new(
        Extender::new(
            Index::default(),
            binder::KubeBinder::new(client.clone()),
            Box::new(wall_clock),
        )
        .with_reservation_grace(opts.reservation_grace)
        .with_notices(move |n| {
            // The writer ends only at shutdown; a notice then is moot.
            let _ = tx.send(n);
        }),
    );
    let reporter = Reporter {
        controller: "spillway".to_owned(),
        instance: opts.instance.clone(),
    };
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(writer::run(
        client.clone(),
        reporter,
        rx,
        opts.event_interval,
        ext.metrics().clone(),
    ));
    let (relist, election) = match &opts.leader {
        Some(lease) => {
            // A follower until the lease is won.
            ext.cache_listing(leader::GATE);
            ext.metrics().leader.set(0);
            let (relist_tx, relist_rx) = tokio::sync::watch::channel(0u64);
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let task = tokio::spawn(leader::run(
                client.clone(),
                ext.clone(),
                lease.clone(),
                relist_tx,
                stop_rx,
            ));
            (Some(relist_rx), Some((stop_tx, task)))
        }
        None => (None, None),
    };
    tasks.spawn(watch::run(
        client.clone(),
        ext.clone(),
        opts.watch_compat,
        relist,
    ));
    if let Some(so) = opts.scaler {
        let scaler = crate::scaler::Scaler::new(
            client.clone(),
            Reporter {
                controller: "spillway-scaler".to_owned(),
                instance: opts.instance.clone(),
            },
            ext.metrics().registry(),
        )
        .with_drain_aware(so.drain_aware);
        let (gate, clock) = (ext.clone(), ext.clone());
        tasks.spawn(crate::scaler::run(
            scaler,
            so.sync_period,
            Arc::new(move || gate.is_synced()),
            Arc::new(move || clock.now()),
        ));
    }
    tasks.spawn(controller::run(client, ext.clone(), opts.reconcile_period));
    let ticker = ext.clone();
    tasks.spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            every.tick().await;
            ticker.tick();
        }
    });
    Running {
        extender: ext,
        tasks,
        election,
    }
}

#[cfg(test)]
mod tests {
    use super::listen_addr;

    #[test]
    fn listen_addresses_take_bare_ipv6_as_a_pod_ip_expands() {
        for (text, want) in [
            ("127.0.0.1:9090", "127.0.0.1:9090"),
            ("[::1]:9090", "[::1]:9090"),
            ("fd00::7:9090", "[fd00::7]:9090"),
            ("10.1.2.3:9090", "10.1.2.3:9090"),
        ] {
            assert_eq!(listen_addr(text).unwrap().to_string(), want, "{text}");
        }
        for bad in ["9090", "localhost:9090", "10.1.2.3", "fd00::7"] {
            assert!(listen_addr(bad).is_err(), "{bad}");
        }
    }
}
