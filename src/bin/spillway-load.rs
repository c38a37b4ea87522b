//! `spillway-load`: load tests of the extender on this machine.
//!
//! - `http`: starts an extender over a synthetic cluster in a child process
//!   (the same router `spillway serve` runs), sends filter or prioritize
//!   requests over loopback HTTP/1.1 keep-alive connections, and prints
//!   throughput, latency percentiles and the server's CPU time per request
//!   (from `/proc/<pid>/stat`).
//! - `index`: feeds a synthetic cluster through the watch feed and prints
//!   the process's resident memory before and after.

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
    /// prints the address on stdout.
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        nodes: usize,
        #[arg(long)]
        pods_per_node: usize,
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

fn serve(nodes: usize, pods_per_node: usize) -> anyhow::Result<()> {
    let mut index = Index::default();
    load::fill(&mut index, nodes, pods_per_node);
    let ext = Arc::new(Extender::new(
        index,
        AcceptingBinder,
        Box::new(|| Time::from_secs(1_800_000_000)),
    ));
    ext.set_ready(true);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // The same server stack as `spillway serve` (axum-server over hyper).
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        println!("{}", listener.local_addr()?);
        std::io::stdout().flush()?;
        axum_server::from_tcp(listener)
            .serve(router(ext, &RouterConfig::default()).into_make_service())
            .await?;
        anyhow::Ok(())
    })
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
        write!(
            self.writer,
            "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )?;
        self.writer.write_all(body)?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        if !line.starts_with("HTTP/1.1 200") {
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
        Ok(length)
    }
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
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args([
            "serve",
            "--nodes",
            &nodes.to_string(),
            "--pods-per-node",
            &pods_per_node.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the server process")?;
    let result = (|| {
        let mut first = String::new();
        BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut first)?;
        let addr: SocketAddr = first.trim().parse().context("server address")?;
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
        println!("  throughput      {:>10.0} req/s", n / wall.as_secs_f64());
        println!(
            "  latency p50     {:>10.3} ms",
            percentile(&lat, 0.50).as_secs_f64() * 1e3
        );
        println!(
            "  latency p99     {:>10.3} ms",
            percentile(&lat, 0.99).as_secs_f64() * 1e3
        );
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
        Cmd::Serve {
            nodes,
            pods_per_node,
        } => serve(nodes, pods_per_node),
    }
}
