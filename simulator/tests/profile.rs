//! `spillway-sim profile` against a local OpenAI-compatible server, and the
//! validation of a measured profile: a workload replayed against the server
//! and through the simulator gives the same latency percentiles.
//!
//! The server is a small continuous-batching engine written for the test (no
//! GPU server can run here). It behaves as vLLM does without chunked
//! prefill: requests wait for a batch slot, a prompt is prefilled alone and
//! pauses the batch (`PREFILL_MS(p)`), then every iteration gives each
//! running request one token (`DECODE_MS(b)`); it streams `/v1/completions`
//! as server-sent events over chunked HTTP/1.1, with `usage` at the end.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use spillway_sim::probe::{ProbeConfig, measure};
use spillway_sim::profile::ProfileSpec;

/// Prefill time of a `p`-token prompt alone, ms.
fn prefill_ms(p: u32) -> f64 {
    3.0 + 0.01 * f64::from(p)
}
/// One decode iteration at batch `b`, ms.
fn decode_ms(b: usize) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let b = b as f64;
    5.0 + 0.3 * b
}
const SERVER_MAX_BATCH: usize = 16;

enum Msg {
    Token,
    Done { prompt: u32, completion: u32 },
}

struct Job {
    prompt: u32,
    max_tokens: u32,
    tx: mpsc::Sender<Msg>,
}

struct Shared {
    queue: Mutex<VecDeque<Job>>,
    wake: Condvar,
    stop: AtomicBool,
}

/// The fake server; stops when dropped.
struct FakeServer {
    port: u16,
    shared: Arc<Shared>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        // Unblock the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn sleep_ms(ms: f64) {
    std::thread::sleep(Duration::from_secs_f64(ms / 1000.0));
}

fn engine(shared: &Shared) {
    let mut running: Vec<(Job, u32, u32)> = Vec::new(); // (job, left, sent)
    loop {
        let next = {
            let mut q = shared.queue.lock().unwrap();
            while q.is_empty() && running.is_empty() && !shared.stop.load(Ordering::SeqCst) {
                q = shared.wake.wait(q).unwrap();
            }
            if shared.stop.load(Ordering::SeqCst) {
                return;
            }
            if running.len() < SERVER_MAX_BATCH {
                q.pop_front()
            } else {
                None
            }
        };
        if let Some(job) = next {
            sleep_ms(prefill_ms(job.prompt));
            let _ = job.tx.send(Msg::Token);
            if job.max_tokens <= 1 {
                let _ = job.tx.send(Msg::Done {
                    prompt: job.prompt,
                    completion: 1,
                });
            } else {
                let left = job.max_tokens - 1;
                running.push((job, left, 1));
            }
            continue;
        }
        if running.is_empty() {
            continue;
        }
        sleep_ms(decode_ms(running.len()));
        for (job, left, sent) in &mut running {
            if job.tx.send(Msg::Token).is_err() {
                // The client went away: abort the request, as vLLM does.
                *left = 0;
                continue;
            }
            *left -= 1;
            *sent += 1;
            if *left == 0 {
                let _ = job.tx.send(Msg::Done {
                    prompt: job.prompt,
                    completion: *sent,
                });
            }
        }
        running.retain(|(_, left, _)| *left > 0);
    }
}

fn chunk(stream: &mut TcpStream, data: &str) -> std::io::Result<()> {
    write!(stream, "{:x}\r\n{data}\r\n", data.len())?;
    stream.flush()
}

fn serve(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    if request_line.starts_with("GET /v1/models") {
        let text = r#"{"object":"list","data":[{"id":"fake-llm","object":"model"}]}"#;
        write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
            text.len()
        )?;
        return stream.flush();
    }
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let prompt = req["prompt"].as_str().unwrap_or("");
    let tokens = u32::try_from(prompt.split_whitespace().count()).unwrap_or(u32::MAX);
    let max_tokens = u32::try_from(req["max_tokens"].as_u64().unwrap_or(16)).unwrap_or(16);
    let (tx, rx) = mpsc::channel();
    shared.queue.lock().unwrap().push_back(Job {
        prompt: tokens,
        max_tokens,
        tx,
    });
    shared.wake.notify_all();
    write!(
        stream,
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    )?;
    for msg in rx {
        match msg {
            Msg::Token => chunk(
                &mut stream,
                "data: {\"object\":\"text_completion\",\"choices\":[{\"index\":0,\"text\":\" weir\"}]}\n\n",
            )?,
            Msg::Done { prompt, completion } => {
                chunk(
                    &mut stream,
                    &format!(
                        "data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":{prompt},\"completion_tokens\":{completion}}}}}\n\n"
                    ),
                )?;
                chunk(&mut stream, "data: [DONE]\n\n")?;
                break;
            }
        }
    }
    write!(stream, "0\r\n\r\n")?;
    stream.flush()
}

fn start_server() -> FakeServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let shared = Arc::new(Shared {
        queue: Mutex::new(VecDeque::new()),
        wake: Condvar::new(),
        stop: AtomicBool::new(false),
    });
    let s = Arc::clone(&shared);
    std::thread::spawn(move || engine(&s));
    let s = Arc::clone(&shared);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if s.stop.load(Ordering::SeqCst) {
                return;
            }
            if let Ok(conn) = conn {
                let s = Arc::clone(&s);
                std::thread::spawn(move || {
                    let _ = serve(conn, &s);
                });
            }
        }
    });
    FakeServer { port, shared }
}

/// The two tests measure wall-clock latencies of one server each; running
/// them one at a time keeps them from slowing each other down.
static SERIAL: Mutex<()> = Mutex::new(());

fn probe_config(port: u16) -> ProbeConfig {
    ProbeConfig {
        url: format!("http://127.0.0.1:{port}"),
        model: None,
        api_key: None,
        prompt_tokens: vec![64, 256, 1024, 2048],
        batches: vec![1, 2, 4, 8],
        repeats: 3,
        decode_tokens: 16,
        timeout: Duration::from_secs(30),
        plain: false,
        chunked_prefill: None,
        token_budget: None,
        max_batch: Some(u32::try_from(SERVER_MAX_BATCH).unwrap()),
    }
}

fn close(measured: f64, truth: f64, rel: f64, abs_ms: f64) -> bool {
    (measured - truth).abs() <= rel * truth + abs_ms
}

#[test]
fn the_probe_recovers_the_servers_prefill_decode_and_overhead() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let server = start_server();
    let cfg = probe_config(server.port);
    let mut lines = Vec::new();
    let spec = measure(&cfg, |l| lines.push(l.to_owned())).unwrap();
    println!("{}", lines.join("\n"));
    assert_eq!(lines.len(), 1 + 4 + 4, "{lines:?}");
    // The server counted the probe's prompts as asked.
    let counted: Vec<u32> = spec.prefill.iter().map(|p| p.prompt_tokens).collect();
    assert_eq!(counted, vec![64, 256, 1024, 2048]);
    for p in &spec.prefill {
        let truth = prefill_ms(p.prompt_tokens);
        assert!(close(p.ms, truth, 0.15, 1.5), "prefill {p:?} vs {truth} ms");
    }
    for d in &spec.decode {
        let truth = decode_ms(d.batch as usize);
        assert!(close(d.ms, truth, 0.15, 1.0), "decode {d:?} vs {truth} ms");
    }
    // The server's fixed cost is 3 ms per prefill: the prefill line's value
    // at 0 tokens.
    let overhead = spec.overhead_ms.unwrap();
    assert!((overhead - 3.0).abs() <= 1.5, "overhead {overhead}");
    assert_eq!(spec.max_batch, Some(16));
    assert!(spec.description.as_deref().unwrap().contains("fake-llm"));
    // What the command writes compiles as the simulator uses it.
    let profile = spec.resolve(std::path::Path::new(".")).unwrap();
    assert_eq!(profile.prefill.len(), 4);
}

/// A tiny deterministic generator (the test needs no statistics from it).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        #[allow(clippy::cast_precision_loss)]
        let x = (self.0 >> 11) as f64 / (1u64 << 53) as f64;
        x
    }
}

#[derive(Clone, Copy, Debug)]
struct Request {
    at_us: u64,
    prompt: u32,
    output: u32,
}

fn workload() -> Vec<Request> {
    let mut rng = Lcg(7);
    let mut t = 0.0;
    (0..120)
        .map(|_| {
            // Poisson arrivals at 30/s; prompts 32-1500 tokens, outputs 4-40.
            t += -(1.0 - rng.next()).ln() / 30.0;
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Request {
                at_us: (t * 1e6) as u64,
                prompt: 32 + (rng.next() * 1468.0) as u32,
                output: 4 + (rng.next() * 36.0) as u32,
            }
        })
        .collect()
}

/// Sends `r` at its time and returns (TTFT, end-to-end), seconds.
fn replay_one(port: u16, start: Instant, r: Request) -> (f64, f64) {
    let at = start + Duration::from_micros(r.at_us);
    if let Some(wait) = at.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
    // The fake server counts words: one word per token.
    let prompt = vec!["weir"; r.prompt as usize].join(" ");
    let body = serde_json::json!({
        "model": "fake-llm", "prompt": prompt, "max_tokens": r.output, "stream": true,
    });
    let sent = Instant::now();
    let resp = ureq::post(&format!("http://127.0.0.1:{port}/v1/completions"))
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .unwrap();
    let reader = BufReader::new(resp.into_body().into_reader());
    let mut first = None;
    let mut last = sent;
    for line in reader.lines() {
        let line = line.unwrap();
        if line.contains("\"text\"") {
            let now = Instant::now();
            first.get_or_insert(now);
            last = now;
        }
    }
    let first = first.expect("a token");
    ((first - sent).as_secs_f64(), (last - sent).as_secs_f64())
}

fn percentile(xs: &[f64], q: f64) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("spillway-profile-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_recorded_workload_replays_through_the_measured_profile_with_the_same_percentiles() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let server = start_server();
    let spec: ProfileSpec = measure(&probe_config(server.port), |_| {}).unwrap();

    // Record: replay the workload against the server in real time.
    let requests = workload();
    let start = Instant::now() + Duration::from_millis(50);
    let port = server.port;
    let handles: Vec<_> = requests
        .iter()
        .map(|&r| std::thread::spawn(move || replay_one(port, start, r)))
        .collect();
    let measured: Vec<(f64, f64)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    drop(server);

    // Simulate: the same requests through one replica with the profile.
    let dir = temp_dir();
    std::fs::write(
        dir.join("profile.json"),
        serde_json::to_string_pretty(&spec).unwrap(),
    )
    .unwrap();
    let mut csv = String::from("timestamp,prompt_tokens,output_tokens\n");
    for r in &requests {
        writeln!(csv, "{},{},{}", r.at_us, r.prompt, r.output).unwrap();
    }
    std::fs::write(dir.join("workload.csv"), csv).unwrap();
    let scenario = r"
name: profile-validation
seed: 1
duration: 60s
sampleInterval: 10s
pools:
- {name: gpu, kind: datacenter, nodes: 1, gpusPerNode: 1, gpuType: test, costPerGpuHour: 1}
services:
- name: fake
  gpusPerReplica: 1
  replicas: 1
  perf: {kind: profile, file: profile.json}
  slo: {ttft: 1s, target: 0.9}
  traffic: {kind: file, path: workload.csv, format: csv, timestampUnit: microseconds}
";
    let compiled =
        spillway_sim::scenario::parse(scenario, "profile-validation.yaml", &dir).unwrap();
    let outcome = spillway_sim::simulate(&compiled, &mut |_| {}).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let sim = &outcome.summary.services[0];
    assert_eq!(sim.requests.completed, 120);

    let ttft: Vec<f64> = measured.iter().map(|m| m.0).collect();
    let e2e: Vec<f64> = measured.iter().map(|m| m.1).collect();
    let rows = [
        ("TTFT p50", percentile(&ttft, 0.5), sim.ttft.p50),
        ("TTFT p95", percentile(&ttft, 0.95), sim.ttft.p95),
        ("E2E p50", percentile(&e2e, 0.5), sim.e2e.p50),
        ("E2E p95", percentile(&e2e, 0.95), sim.e2e.p95),
    ];
    let mut table = String::new();
    for (name, real, simulated) in &rows {
        writeln!(
            table,
            "{name}: server {:.1} ms, simulator {:.1} ms",
            real * 1e3,
            simulated * 1e3
        )
        .unwrap();
    }
    println!("{table}");
    for (name, real, simulated) in rows {
        // 20 % or 5 ms: the replay adds thread wake-ups and HTTP per token.
        assert!(
            (simulated - real).abs() <= 0.20 * real + 0.005,
            "{name} differs:\n{table}"
        );
    }
}
