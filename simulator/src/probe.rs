//! `spillway-sim profile`: measures a performance profile
//! ([`crate::profile`]) from a live OpenAI-compatible endpoint (vLLM, NIM,
//! any server with `/v1/completions` streaming).
//!
//! ## The probe, and its bounds
//!
//! Every request is a streaming `/v1/completions` call with a prompt that
//! begins with a number used once, so that no two prompts share a prefix
//! and a prefix cache cannot shorten a prefill. Requests are counted before
//! anything is sent and printed, with the tokens they ask for.
//!
//! 1. **Warm-up**: one short request, not measured.
//! 2. **Prefill**: for each prompt length, `repeats` times: a background
//!    request decodes alone; the prompt is sent asking for one token; the
//!    background request's inter-token gaps from the send to the prompt's
//!    first token, less its usual gap, add up to the engine's time for the
//!    prompt (the median of the repeats is kept; the prompt length is the
//!    server's `usage.prompt_tokens` when it reports it). The HTTP round
//!    trip, tokenisation and the server's front end, which do not hold the
//!    GPU, stay out of it.
//! 3. **Decode**: for each batch size `b`, `b` requests at once with a short
//!    prompt, each asking for `decodeTokens` tokens (`ignore_eos` and
//!    `min_tokens`, vLLM's extensions, make them run to the end; `--plain`
//!    leaves them out). While all `b` streams are generating, the gap
//!    between consecutive tokens of a stream is one iteration at batch `b`;
//!    the median gap is kept.
//! 4. **Overhead**: the prefill line through the two shortest prompts,
//!    taken at 0 tokens (clamped to [0, the smallest measured time]): the
//!    part of an iteration that does not grow with its work. With
//!    `--chunked-prefill`, where a prompt shares its iteration with the
//!    batch and the gap holds only the prompt's own work, the decode line at
//!    batch 0, and it is added back to each prefill time.
//!
//! At most `max(batches)` requests (and at least two) are open at once; in
//! all, `1 + 2 · repeats · |prompts| + Σ batches` requests (each prefill
//! measurement has a background stream, stopped once the prefill is over). Each request has a
//! timeout, and the probe stops at the first failure, naming it.
//!
//! `chunkedPrefill`, `tokenBudget` and `maxBatch` cannot be observed from
//! outside; they are copied from the command line into the profile (give
//! the server's own settings).
//!
//! Decode gaps and the background stream's gaps are measured at the client:
//! measure next to the server (plain HTTP, e.g. through `kubectl
//! port-forward`) so that the network adds no jitter to them.

use std::io::{BufRead as _, BufReader};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::profile::{DecodePoint, PrefillPoint, ProfileSpec};

/// What to measure and how.
#[derive(Clone, Debug)]
pub struct ProbeConfig {
    /// Base URL, e.g. `http://127.0.0.1:8000` (the `/v1/...` paths are added).
    pub url: String,
    /// Model name; the first of `/v1/models` when `None`.
    pub model: Option<String>,
    /// Bearer token, if the server wants one.
    pub api_key: Option<String>,
    /// Prompt lengths for the prefill table, tokens.
    pub prompt_tokens: Vec<u32>,
    /// Batch sizes for the decode table.
    pub batches: Vec<u32>,
    /// Requests per prompt length.
    pub repeats: u32,
    /// Tokens each decode request generates.
    pub decode_tokens: u32,
    /// Timeout of one request.
    pub timeout: Duration,
    /// Leave out vLLM's `ignore_eos` / `min_tokens`.
    pub plain: bool,
    /// Copied into the profile.
    pub chunked_prefill: Option<bool>,
    /// Copied into the profile.
    pub token_budget: Option<u32>,
    /// Copied into the profile.
    pub max_batch: Option<u32>,
}

impl ProbeConfig {
    /// Requests the probe sends in all: the warm-up, a prompt and a
    /// background stream per prefill measurement, and the decode batches.
    pub fn request_count(&self) -> u64 {
        1 + 2 * u64::from(self.repeats) * self.prompt_tokens.len() as u64
            + self.batches.iter().map(|&b| u64::from(b)).sum::<u64>()
    }

    /// Requests open at once, at most.
    pub fn max_concurrency(&self) -> u32 {
        self.batches.iter().copied().max().unwrap_or(1).max(2)
    }

    /// Prompt and generated tokens the probe asks for, at most.
    pub fn token_bound(&self) -> (u64, u64) {
        let prompts: u64 = self.prompt_tokens.iter().map(|&p| u64::from(p)).sum();
        let measurements = u64::from(self.repeats) * self.prompt_tokens.len() as u64;
        let decode_requests: u64 = self.batches.iter().map(|&b| u64::from(b)).sum();
        (
            u64::from(WARMUP_PROMPT)
                + u64::from(self.repeats) * prompts
                + (measurements + decode_requests) * u64::from(DECODE_PROMPT),
            u64::from(WARMUP_TOKENS)
                + measurements * (1 + u64::from(BACKGROUND_TOKENS))
                + decode_requests * u64::from(self.decode_tokens),
        )
    }

    /// Checks the bounds: non-empty lists, no zeros, nothing absurd.
    ///
    /// # Errors
    /// A message naming the option.
    pub fn check(&self) -> Result<(), String> {
        if !(self.url.starts_with("http://")) {
            return Err(format!(
                "--url {}: only http:// is supported; measure next to the server (e.g. kubectl port-forward) so that TLS and the network stay out of the numbers",
                self.url
            ));
        }
        if self.prompt_tokens.len() < 2 || self.prompt_tokens.contains(&0) {
            return Err("--prompt-tokens: at least two lengths, each >= 1".into());
        }
        if self.batches.is_empty() || self.batches.contains(&0) {
            return Err("--batches: at least one size, each >= 1".into());
        }
        if self.max_concurrency() > 1024 {
            return Err("--batches: at most 1024 requests at once".into());
        }
        if self.repeats == 0 || self.repeats > 100 {
            return Err("--repeats: between 1 and 100".into());
        }
        if self.chunked_prefill == Some(true) {
            let Some(budget) = self.token_budget else {
                return Err("--token-budget: required with --chunked-prefill (the server's max_num_batched_tokens)".into());
            };
            if self.prompt_tokens.iter().any(|&p| p >= budget) {
                return Err(format!(
                    "--prompt-tokens: with chunked prefill each must be below --token-budget {budget}, so that a prompt is one chunk (longer prompts are extrapolated)"
                ));
            }
        }
        if self.decode_tokens < 4 {
            return Err("--decode-tokens: at least 4 (gaps between tokens are measured)".into());
        }
        Ok(())
    }
}

const WARMUP_PROMPT: u32 = 16;
const WARMUP_TOKENS: u32 = 4;
const DECODE_PROMPT: u32 = 16;
/// The most a background stream may generate; it is stopped as soon as the
/// measured prompt's prefill is over, normally after a few dozen tokens.
const BACKGROUND_TOKENS: u32 = 1024;

/// Why the probe stopped.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProbeError(pub String);

/// A background stream's tokens as they arrive, and its stop flag.
#[derive(Default)]
struct Live {
    tokens: std::sync::Mutex<Vec<Instant>>,
    stop: std::sync::atomic::AtomicBool,
}

fn poisoned() -> ProbeError {
    ProbeError("a probe thread panicked".into())
}

/// One streamed completion, timed.
#[derive(Clone, Debug)]
struct Timed {
    /// Instants at which text chunks arrived (one per token on vLLM).
    tokens: Vec<Instant>,
    sent: Instant,
    prompt_tokens: Option<u32>,
}

struct Client {
    agent: ureq::Agent,
    base: String,
    api_key: Option<String>,
    model: String,
    plain: bool,
    timeout: Duration,
    /// Makes every prompt's first words unique.
    nonce: std::sync::atomic::AtomicU64,
}

impl Client {
    fn prompt(&self, tokens: u32) -> String {
        let n = self
            .nonce
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // About one token per word on BPE vocabularies; the server's count is
        // used where it reports one.
        let mut text = format!("{n} {}", n.wrapping_mul(2_654_435_761) % 1_000_003);
        let words = ["the", "river", "runs", "over", "a", "stone", "weir", "and"];
        for i in 2..tokens {
            text.push(' ');
            text.push_str(words[i as usize % words.len()]);
        }
        text
    }

    fn complete(&self, prompt_tokens: u32, max_tokens: u32) -> Result<Timed, ProbeError> {
        self.stream(prompt_tokens, max_tokens, None)
    }

    /// A streamed completion. With `live`, every token's arrival is also
    /// appended there as it comes, and the stream is abandoned (the
    /// connection closed, which makes vLLM abort the request) once its flag
    /// is set.
    fn stream(
        &self,
        prompt_tokens: u32,
        max_tokens: u32,
        live: Option<&Live>,
    ) -> Result<Timed, ProbeError> {
        let mut body = json!({
            "model": self.model,
            "prompt": self.prompt(prompt_tokens),
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        if !self.plain {
            body["ignore_eos"] = json!(true);
            body["min_tokens"] = json!(max_tokens);
        }
        let url = format!("{}/v1/completions", self.base);
        let mut req = self
            .agent
            .post(&url)
            .header("Content-Type", "application/json");
        if let Some(key) = &self.api_key {
            req = req.header("Authorization", format!("Bearer {key}"));
        }
        let body = body.to_string();
        let sent = Instant::now();
        let resp = req
            .send(body)
            .map_err(|e| ProbeError(format!("POST {url}: {e}")))?;
        let status = resp.status();
        let mut reader = BufReader::new(resp.into_body().into_reader());
        if !status.is_success() {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut reader, &mut text);
            return Err(ProbeError(format!(
                "POST {url}: HTTP {status}: {}",
                text.chars().take(300).collect::<String>()
            )));
        }
        let mut timed = Timed {
            tokens: Vec::new(),
            sent,
            prompt_tokens: None,
        };
        let mut event_line = String::new();
        loop {
            event_line.clear();
            let n = reader
                .read_line(&mut event_line)
                .map_err(|e| ProbeError(format!("POST {url}: reading the stream: {e}")))?;
            if n == 0 {
                break;
            }
            let Some(data) = event_line.trim().strip_prefix("data:") else {
                continue;
            };
            let data = data.trim();
            if data == "[DONE]" {
                break;
            }
            let now = Instant::now();
            let event: Value = serde_json::from_str(data).map_err(|e| {
                ProbeError(format!(
                    "POST {url}: a stream event is not JSON ({e}): {data}"
                ))
            })?;
            if let Some(err) = event.get("error") {
                return Err(ProbeError(format!("POST {url}: the server reported {err}")));
            }
            let text = event
                .pointer("/choices/0/text")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !text.is_empty() {
                timed.tokens.push(now);
                if let Some(live) = live {
                    live.tokens.lock().map_err(|_| poisoned())?.push(now);
                }
            }
            if live.is_some_and(|l| l.stop.load(std::sync::atomic::Ordering::Relaxed)) {
                break;
            }
            if let Some(p) = event
                .pointer("/usage/prompt_tokens")
                .and_then(Value::as_u64)
            {
                timed.prompt_tokens = u32::try_from(p).ok();
            }
        }
        if timed.tokens.is_empty() {
            return Err(ProbeError(format!(
                "POST {url}: the stream ended without a token (prompt of about {prompt_tokens} tokens)"
            )));
        }
        Ok(timed)
    }
}

fn model_name(
    agent: &ureq::Agent,
    base: &str,
    api_key: Option<&str>,
) -> Result<String, ProbeError> {
    let url = format!("{base}/v1/models");
    let mut req = agent.get(&url);
    if let Some(key) = api_key {
        req = req.header("Authorization", format!("Bearer {key}"));
    }
    let resp = req
        .call()
        .map_err(|e| ProbeError(format!("GET {url}: {e}")))?;
    let status = resp.status();
    let text = resp
        .into_body()
        .read_to_string()
        .map_err(|e| ProbeError(format!("GET {url}: {e}")))?;
    if !status.is_success() {
        return Err(ProbeError(format!("GET {url}: HTTP {status}")));
    }
    let v: Value =
        serde_json::from_str(&text).map_err(|e| ProbeError(format!("GET {url}: {e}")))?;
    v.pointer("/data/0/id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| ProbeError(format!("GET {url}: no model listed; pass --model")))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median of a non-empty list (the mean of the middle two for even lengths).
fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        f64::midpoint(xs[n / 2 - 1], xs[n / 2])
    }
}

/// Inter-token gaps of `streams` while all of them were generating (from
/// the last stream's first token to the first stream's last token); all
/// gaps after each stream's first token when that window holds none.
fn batch_gaps(streams: &[Timed]) -> Vec<f64> {
    let start = streams.iter().filter_map(|t| t.tokens.first()).max();
    let end = streams.iter().filter_map(|t| t.tokens.last()).min();
    let mut inside = Vec::new();
    let mut all = Vec::new();
    for t in streams {
        for w in t.tokens.windows(2) {
            let gap = ms(w[1] - w[0]);
            all.push(gap);
            if let (Some(s), Some(e)) = (start, end)
                && w[0] >= *s
                && w[1] <= *e
            {
                inside.push(gap);
            }
        }
    }
    if inside.is_empty() { all } else { inside }
}

/// Runs the probe. `progress` receives one line per step.
///
/// # Errors
/// The first request that failed, or a configuration error.
pub fn measure(
    cfg: &ProbeConfig,
    mut progress: impl FnMut(&str),
) -> Result<ProfileSpec, ProbeError> {
    cfg.check().map_err(ProbeError)?;
    let base = cfg.url.trim_end_matches('/').to_owned();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(cfg.timeout))
        .http_status_as_error(false)
        .max_idle_connections_per_host(cfg.max_concurrency() as usize)
        .build()
        .into();
    let model = match &cfg.model {
        Some(m) => m.clone(),
        None => model_name(&agent, &base, cfg.api_key.as_deref())?,
    };
    let client = Arc::new(Client {
        agent,
        base: base.clone(),
        api_key: cfg.api_key.clone(),
        model: model.clone(),
        plain: cfg.plain,
        timeout: cfg.timeout,
        // Unique across runs too: the start is the clock in nanoseconds
        // mixed with the process id, so a rerun never repeats a prompt.
        nonce: std::sync::atomic::AtomicU64::new(
            u64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
                    % (1 << 63),
            )
            .unwrap_or(0)
                ^ (u64::from(std::process::id()) << 40),
        ),
    });
    client.complete(WARMUP_PROMPT, WARMUP_TOKENS)?;
    progress("warm-up done");

    let mut prefill = Vec::new();
    for &p in &cfg.prompt_tokens {
        let mut times = Vec::new();
        let mut counted = p;
        let mut ttfts = Vec::new();
        for _ in 0..cfg.repeats {
            let (extra, ttft, tokens) = prefill_gap(&client, p)?;
            times.push(extra);
            ttfts.push(ttft);
            counted = tokens.unwrap_or(p).max(1);
        }
        let m = median(times);
        progress(&format!(
            "prefill {counted} tokens: {m:.2} ms in the engine (time to first token {:.2} ms)",
            median(ttfts)
        ));
        prefill.push((counted, m));
    }
    prefill.sort_by_key(|p| p.0);

    let mut decode = Vec::new();
    for &b in &cfg.batches {
        let handles: Vec<_> = (0..b)
            .map(|_| {
                let c = Arc::clone(&client);
                let n = cfg.decode_tokens;
                std::thread::spawn(move || c.complete(DECODE_PROMPT, n))
            })
            .collect();
        // Every request of the batch ends (or fails) before the first
        // failure is reported: none is left running.
        let results: Vec<Result<Timed, ProbeError>> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(poisoned())))
            .collect();
        let streams = results.into_iter().collect::<Result<Vec<_>, _>>()?;
        let gaps = batch_gaps(&streams);
        if gaps.is_empty() {
            return Err(ProbeError(format!(
                "decode at batch {b}: the streams sent fewer than two tokens each; is --plain needed, or is the server stopping at EOS?"
            )));
        }
        let m = median(gaps);
        progress(&format!("decode batch {b}: {m:.2} ms per iteration"));
        decode.push(DecodePoint {
            batch: b,
            context_tokens: None,
            ms: round3(m),
        });
    }
    decode.sort_by_key(|d| d.batch);

    let chunked = cfg.chunked_prefill == Some(true);
    let intercept = |a: (f64, f64), b: (f64, f64)| {
        let slope = if b.0 > a.0 {
            (b.1 - a.1) / (b.0 - a.0)
        } else {
            0.0
        };
        a.1 - slope * a.0
    };
    let as_f = |p: &(u32, f64)| (f64::from(p.0), p.1);
    let overhead = if chunked {
        // A prompt chunk shares its iteration with the batch: what the gap
        // grew by is the prefill without the fixed part, and the fixed part
        // is the decode line's value at batch 0.
        match decode.as_slice() {
            [a, b, ..] => intercept((f64::from(a.batch), a.ms), (f64::from(b.batch), b.ms)),
            [a] => a.ms,
            [] => 0.0,
        }
    } else {
        intercept(as_f(&prefill[0]), as_f(&prefill[1]))
    };
    let smallest = decode.iter().map(|d| d.ms).fold(f64::INFINITY, f64::min);
    let overhead = overhead.clamp(0.0, smallest);
    let prefill: Vec<PrefillPoint> = prefill
        .iter()
        .map(|&(prompt_tokens, extra)| PrefillPoint {
            prompt_tokens,
            ms: round3(if chunked { extra + overhead } else { extra }.max(0.001)),
        })
        .collect();
    let smallest = prefill.iter().map(|p| p.ms).fold(smallest, f64::min);
    let overhead = overhead.min(smallest);
    Ok(ProfileSpec {
        file: None,
        description: Some(format!(
            "model {model} at {base}, measured by spillway-sim profile ({} repeats per prompt length, {} tokens per decode request)",
            cfg.repeats, cfg.decode_tokens
        )),
        overhead_ms: Some(round3(overhead)),
        chunked_prefill: cfg.chunked_prefill,
        token_budget: cfg.token_budget,
        max_batch: cfg.max_batch,
        prefill,
        decode,
    })
}

/// How much one prefill of about `p` tokens lengthens the iterations of a
/// running request: a background stream decodes alone, the prompt is sent,
/// and the background stream's inter-token gaps from the send to the
/// prompt's first token, less its usual gap, add up to the engine's time for
/// the prompt (without the HTTP round trip, tokenisation or queueing in the
/// server's front end, which do not hold the GPU). Returns (ms in the engine,
/// time to first token in ms, the server's prompt-token count).
fn prefill_gap(client: &Arc<Client>, p: u32) -> Result<(f64, f64, Option<u32>), ProbeError> {
    const STEADY: usize = 4;
    let live = Arc::new(Live::default());
    let bg = {
        let (c, l) = (Arc::clone(client), Arc::clone(&live));
        std::thread::spawn(move || c.stream(DECODE_PROMPT, BACKGROUND_TOKENS, Some(&l)))
    };
    let count = |live: &Live| live.tokens.lock().map_or(usize::MAX, |t| t.len());
    let wait_until = |cond: &dyn Fn() -> bool| -> bool {
        let deadline = Instant::now() + client.timeout;
        while !cond() {
            if bg.is_finished() || Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        true
    };
    if !wait_until(&|| count(&live) >= STEADY) {
        live.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        return Err(match bg.join() {
            Ok(Err(e)) => e,
            _ => ProbeError(
                "the background stream ended before it was steady; is --plain needed, or is the server stopping at EOS?"
                    .into(),
            ),
        });
    }
    let probe = client.complete(p, 1);
    let first = probe.as_ref().ok().map(|t| t.tokens[0]);
    // The gap that holds the prefill closes with the background's next token.
    if let Some(first) = first {
        let closed = || {
            live.tokens
                .lock()
                .map_or(true, |t| t.last().is_some_and(|&l| l >= first))
        };
        if !wait_until(&closed) {
            live.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = bg.join();
            return Err(ProbeError(format!(
                "prefill of about {p} tokens: the background stream ended before the prompt's prefill was over (it stops at {BACKGROUND_TOKENS} tokens or the timeout); is the server stopping at EOS (try without --plain)?"
            )));
        }
    }
    live.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let background = bg.join().map_err(|_| poisoned())?;
    let probe = probe?;
    let tokens = live.tokens.lock().map_err(|_| poisoned())?.clone();
    drop(background);
    let sent = probe.sent;
    let first = probe.tokens[0];
    let before: Vec<f64> = tokens
        .windows(2)
        .filter(|w| w[1] <= sent)
        .map(|w| ms(w[1] - w[0]))
        .collect();
    if before.is_empty() {
        return Err(ProbeError(
            "no steady gap before the prompt was sent".into(),
        ));
    }
    let usual = median(before);
    let extra: f64 = tokens
        .windows(2)
        .filter(|w| w[1] > sent && w[0] < first)
        .map(|w| (ms(w[1] - w[0]) - usual).max(0.0))
        .sum();
    Ok((extra, ms(first - sent), probe.prompt_tokens))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ProbeConfig {
        ProbeConfig {
            url: "http://127.0.0.1:1".into(),
            model: Some("m".into()),
            api_key: None,
            prompt_tokens: vec![128, 512, 2048],
            batches: vec![1, 4, 16],
            repeats: 3,
            decode_tokens: 32,
            timeout: Duration::from_secs(5),
            plain: false,
            chunked_prefill: None,
            token_budget: None,
            max_batch: None,
        }
    }

    #[test]
    fn the_bounds_are_counted_before_anything_is_sent() {
        let c = cfg();
        assert_eq!(c.request_count(), 1 + 2 * 9 + 21);
        assert_eq!(c.max_concurrency(), 16);
        let (prompt, generated) = c.token_bound();
        assert_eq!(prompt, 16 + 3 * (128 + 512 + 2048) + (9 + 21) * 16);
        assert_eq!(generated, 4 + 9 * (1 + 1024) + 21 * 32);
    }

    #[test]
    fn options_out_of_bounds_are_named() {
        let mut c = cfg();
        c.url = "https://x".into();
        assert!(c.check().unwrap_err().contains("--url"));
        let mut c = cfg();
        c.prompt_tokens = vec![128];
        assert!(c.check().unwrap_err().contains("--prompt-tokens"));
        let mut c = cfg();
        c.batches = vec![0];
        assert!(c.check().unwrap_err().contains("--batches"));
        let mut c = cfg();
        c.decode_tokens = 2;
        assert!(c.check().unwrap_err().contains("--decode-tokens"));
        assert!(cfg().check().is_ok());
    }

    #[test]
    fn batch_gaps_keep_the_window_where_every_stream_runs() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let a = Timed {
            tokens: vec![at(10), at(20), at(30), at(40), at(50)],
            sent: t0,
            prompt_tokens: None,
        };
        // Joins at 30: only gaps from 30 to 45 (b's last) count: a's 30-40,
        // b's 30-35 and 35-45.
        let b = Timed {
            tokens: vec![at(30), at(35), at(45)],
            sent: t0,
            prompt_tokens: None,
        };
        let gaps = batch_gaps(&[a, b]);
        assert_eq!(gaps.len(), 3, "{gaps:?}");
        assert!((median(gaps) - 10.0).abs() < 1e-6);
        assert!((median(vec![1.0, 9.0, 3.0]) - 3.0).abs() < 1e-12);
    }

    #[test]
    fn an_unreachable_endpoint_is_an_error_naming_the_url() {
        let e = measure(&cfg(), |_| {}).unwrap_err().0;
        assert!(e.contains("127.0.0.1:1"), "{e}");
    }
}
