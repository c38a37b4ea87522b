//! Request streams: the scenario's `traffic:` section and the lazy, seeded
//! generators that turn it into arrivals.
//!
//! This module owns the bundled traffic data (the Azure LLM inference traces
//! of November 2023 and the ServeGen per-10-minute rate curves), loading of
//! users' own traces and rate curves, and the generators themselves. A
//! [`TrafficStream`] never materialises the run: it holds at most one parsed
//! trace (shared between streams when bundled), the rate curve's windows and
//! a few words of state, so fourteen simulated days at hundreds of requests
//! per second cost no more memory than one.
//!
//! Synthetic arrivals are a Poisson process whose rate is piecewise constant
//! in time (one window for `poisson`, three for `burst`, the curve's windows
//! repeated for `envelope`). Each arrival draws one unit exponential and spends
//! it against the integrated rate, window by window, which is exact and costs
//! O(1) per request however the rate varies.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const US_PER_SECOND: f64 = 1_000_000.0;

const AZURE_CODE_CSV: &str =
    include_str!("../../data/azure-llm-2023/AzureLLMInferenceTrace_code.csv");
const AZURE_CONV_CSV: &str =
    include_str!("../../data/azure-llm-2023/AzureLLMInferenceTrace_conv.csv");
const SERVEGEN_CSV: &str = include_str!("../../data/servegen-rate-curve/aggregate_rate_10min.csv");

/// One inference request. Time in microseconds from the start of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Arrival time, µs from the start of the run.
    pub arrival_us: i64,
    /// Prompt (context) length in tokens.
    pub prompt_tokens: u32,
    /// Number of tokens the request generates.
    pub output_tokens: u32,
}

mod curve;
pub mod sample;
#[cfg(test)]
mod tests;
mod trace;

#[allow(clippy::wildcard_imports)]
use curve::*;
#[allow(clippy::wildcard_imports)]
use sample::*;
#[allow(clippy::wildcard_imports)]
use trace::*;

pub use curve::{bundled_curve_models, curve_mean_rate};
pub use trace::bundled_trace_len;

// ---------------------------------------------------------------------------
// Scenario types
// ---------------------------------------------------------------------------

fn one() -> f64 {
    1.0
}

/// The scenario's `traffic:` section.
///
/// ```yaml
/// traffic: { kind: trace, source: conversation, rateScale: 2, repeat: true }
/// traffic: { kind: envelope, mix: code, curve: m-large, rateScale: 0.5, startSeconds: 86400 }
/// traffic:
///   kind: poisson
///   ratePerSecond: 20
///   promptTokens: { kind: lognormal, median: 1000, sigma: 1.0 }
///   outputTokens: 200
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum TrafficSpec {
    /// Replay an Azure-format trace with its real arrivals, the first request
    /// at time 0. `rateScale` multiplies the rate (divides inter-arrival
    /// times); `repeat: true` loops the trace to fill the run, each loop one
    /// trace span plus one mean inter-arrival gap after the previous one.
    Trace {
        /// Which trace.
        source: TraceSource,
        /// Rate multiplier (> 0); default 1.
        #[serde(default = "one")]
        rate_scale: f64,
        /// Loop the trace until the run ends; default false.
        #[serde(default)]
        repeat: bool,
    },
    /// Keep a trace's request mix (each request's prompt and output lengths
    /// drawn together from a uniformly chosen trace row) but draw arrivals as
    /// a non-homogeneous Poisson process following a rate curve, scaled by
    /// `rateScale`, starting `startSeconds` into the curve, piecewise constant
    /// per curve window and wrapping around at the curve's end.
    Envelope {
        /// Trace whose token counts are resampled.
        mix: TraceSource,
        /// Rate curve the arrivals follow.
        curve: CurveSource,
        /// Rate multiplier (> 0); default 1.
        #[serde(default = "one")]
        rate_scale: f64,
        /// Where in the curve the run starts, seconds (ServeGen: 0 is
        /// midnight of day 1, 86400 midnight of day 2); default 0.
        #[serde(default)]
        start_seconds: f64,
    },
    /// Homogeneous Poisson arrivals with token-count distributions.
    Poisson {
        /// Mean arrivals per second (>= 0).
        rate_per_second: f64,
        /// Prompt length distribution.
        prompt_tokens: TokenDist,
        /// Output length distribution.
        output_tokens: TokenDist,
    },
    /// Poisson arrivals at a base rate with one window at a higher rate.
    Burst {
        /// Arrivals per second outside the burst (>= 0).
        base_rate_per_second: f64,
        /// Arrivals per second during the burst (>= 0).
        burst_rate_per_second: f64,
        /// When the burst starts, seconds from the start of the run (>= 0).
        burst_start_seconds: f64,
        /// How long the burst lasts, seconds (>= 0).
        burst_seconds: f64,
        /// Prompt length distribution.
        prompt_tokens: TokenDist,
        /// Output length distribution.
        output_tokens: TokenDist,
    },
    /// A user's own trace, CSV (with a header row) or JSONL (one object per
    /// line), with a column mapping so no code change is needed. Rows are
    /// sorted by timestamp; the earliest arrives at time 0.
    File {
        /// Trace file; relative paths resolve against the scenario's folder.
        path: PathBuf,
        /// `csv` or `jsonl`.
        format: FileFormat,
        /// Column (CSV) or field (JSONL) names.
        #[serde(default)]
        columns: ColumnMap,
        /// How timestamps are written; default `seconds`.
        #[serde(default)]
        timestamp_unit: TimestampUnit,
        /// Rate multiplier (> 0); default 1.
        #[serde(default = "one")]
        rate_scale: f64,
        /// Loop the trace until the run ends; default false.
        #[serde(default)]
        repeat: bool,
    },
}

/// A trace in the Azure format (`TIMESTAMP,ContextTokens,GeneratedTokens`,
/// timestamps `YYYY-MM-DD HH:MM:SS.fffffff`).
///
/// YAML: `code`, `conversation` (or `conv`), or `{ path: FILE }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceSource {
    /// One of the bundled Azure LLM inference traces.
    Bundled(BundledTrace),
    /// An Azure-format CSV file; relative paths resolve against the scenario's folder.
    File {
        /// The file.
        path: PathBuf,
    },
}

/// The bundled Azure LLM inference traces (16 November 2023, about an hour each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BundledTrace {
    /// Code completion: 8,819 requests, long prompts, short outputs.
    Code,
    /// Conversation: 19,366 requests.
    Conversation,
}

impl BundledTrace {
    /// The name used in scenarios.
    pub fn name(self) -> &'static str {
        match self {
            Self::Code => "code",
            Self::Conversation => "conversation",
        }
    }

    fn file(self) -> &'static str {
        match self {
            Self::Code => "azure-llm-2023/AzureLLMInferenceTrace_code.csv",
            Self::Conversation => "azure-llm-2023/AzureLLMInferenceTrace_conv.csv",
        }
    }

    fn text(self) -> &'static str {
        match self {
            Self::Code => AZURE_CODE_CSV,
            Self::Conversation => AZURE_CONV_CSV,
        }
    }
}

/// A request-rate curve.
///
/// YAML: a bundled ServeGen model name (`m-large`, `m-mid`, `m-small`,
/// `deepseek-r1`, `mm-image`, optionally prefixed by its category as in
/// `language/m-large`), or `{ path: FILE, timeColumn: t_seconds, rateColumn: rate }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CurveSource {
    /// A bundled ServeGen curve, by model name.
    Bundled(String),
    /// A CSV file with a header row, one row per window: the window's start
    /// time in seconds (strictly increasing; the first row is curve time 0)
    /// and its rate in requests per second. The last window is as long as the
    /// one before it.
    File {
        /// The file; relative paths resolve against the scenario's folder.
        path: PathBuf,
        /// Column holding window start times, seconds; default `t_seconds`.
        time_column: String,
        /// Column holding rates, requests per second; default `rate`.
        rate_column: String,
    },
}

/// A token-count distribution. Samples are whole numbers >= 1.
///
/// YAML: a bare number (fixed), `{ kind: fixed, value: 512 }`,
/// `{ kind: uniform, min: 100, max: 2000 }` (inclusive) or
/// `{ kind: lognormal, median: 1000, sigma: 1.0 }` (rounded, clamped to >= 1) or
/// `{ kind: geometric, mean: 200 }` (1 + floor of an exponential draw).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TokenDist {
    /// Always `n` (>= 1).
    Fixed(u32),
    /// Uniform on `min..=max` (1 <= min <= max).
    Uniform {
        /// Smallest value.
        min: u32,
        /// Largest value.
        max: u32,
    },
    /// `median * exp(sigma * Z)` with `Z` standard normal (median > 0, sigma >= 0).
    Lognormal {
        /// Median of the distribution.
        median: f64,
        /// Standard deviation of its logarithm.
        sigma: f64,
    },
    /// `1 + floor(E)` with `E` exponential of mean `mean` (> 0): the discrete
    /// analogue of an exponential length, so decode time is memoryless (the
    /// queueing-theory validation uses it).
    Geometric {
        /// Mean of the exponential draw.
        mean: f64,
    },
}

/// Format of a user's trace file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// Comma-separated with a header row; double-quoted fields allowed.
    Csv,
    /// One JSON object per line; blank lines are skipped.
    Jsonl,
}

/// Names of the columns (CSV) or fields (JSONL) of a user's trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ColumnMap {
    /// Arrival timestamp; default `timestamp`.
    pub timestamp: String,
    /// Prompt length in tokens; default `prompt_tokens`.
    pub prompt_tokens: String,
    /// Output length in tokens; default `output_tokens`.
    pub output_tokens: String,
}

impl Default for ColumnMap {
    fn default() -> Self {
        Self {
            timestamp: "timestamp".into(),
            prompt_tokens: "prompt_tokens".into(),
            output_tokens: "output_tokens".into(),
        }
    }
}

/// How a user's trace writes its timestamps. Only differences matter: the
/// earliest request arrives at time 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimestampUnit {
    /// Seconds, possibly fractional.
    #[default]
    Seconds,
    /// Milliseconds, possibly fractional.
    Milliseconds,
    /// Microseconds.
    Microseconds,
    /// Calendar time: the Azure form `YYYY-MM-DD HH:MM:SS.fffffff` or RFC 3339
    /// (`2023-11-16T18:17:03.98Z`, `...+01:00`); without an offset, UTC.
    Datetime,
}

// ---------------------------------------------------------------------------
// Serde for the sources and distributions (a string/number or a map)
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TraceFileRepr {
    path: PathBuf,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CurveFileRepr {
    path: PathBuf,
    #[serde(default = "default_time_column")]
    time_column: String,
    #[serde(default = "default_rate_column")]
    rate_column: String,
}

fn default_time_column() -> String {
    "t_seconds".into()
}

fn default_rate_column() -> String {
    "rate".into()
}

impl Serialize for TraceSource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct PathOnly<'a> {
            path: &'a Path,
        }
        match self {
            Self::Bundled(b) => s.serialize_str(b.name()),
            Self::File { path } => PathOnly { path }.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for TraceSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TraceSource;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a bundled trace (`code` or `conversation`) or `{ path: FILE }`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TraceSource, E> {
                match v {
                    "code" => Ok(TraceSource::Bundled(BundledTrace::Code)),
                    "conversation" | "conv" => Ok(TraceSource::Bundled(BundledTrace::Conversation)),
                    other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TraceSource, A::Error> {
                let repr = TraceFileRepr::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(TraceSource::File { path: repr.path })
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for CurveSource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Bundled(name) => s.serialize_str(name),
            Self::File {
                path,
                time_column,
                rate_column,
            } => CurveFileRepr {
                path: path.clone(),
                time_column: time_column.clone(),
                rate_column: rate_column.clone(),
            }
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for CurveSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CurveSource;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a bundled curve name (such as `m-large`) or `{ path: FILE, timeColumn, rateColumn }`",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CurveSource, E> {
                Ok(CurveSource::Bundled(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<CurveSource, A::Error> {
                let r = CurveFileRepr::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(CurveSource::File {
                    path: r.path,
                    time_column: r.time_column,
                    rate_column: r.rate_column,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// The map form of [`TokenDist`].
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
enum TokenDistRepr {
    Fixed { value: u32 },
    Uniform { min: u32, max: u32 },
    Lognormal { median: f64, sigma: f64 },
    Geometric { mean: f64 },
}

impl Serialize for TokenDist {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Self::Fixed(n) => s.serialize_u32(n),
            Self::Uniform { min, max } => TokenDistRepr::Uniform { min, max }.serialize(s),
            Self::Lognormal { median, sigma } => {
                TokenDistRepr::Lognormal { median, sigma }.serialize(s)
            }
            Self::Geometric { mean } => TokenDistRepr::Geometric { mean }.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for TokenDist {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl V {
            fn fixed<E: de::Error>(self, v: u64) -> Result<TokenDist, E> {
                u32::try_from(v)
                    .map(TokenDist::Fixed)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
        }
        impl<'de> Visitor<'de> for V {
            type Value = TokenDist;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a token count, or `{ kind: uniform, min, max }`, `{ kind: lognormal, median, sigma }` or `{ kind: fixed, value }`",
                )
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TokenDist, E> {
                self.fixed(v)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TokenDist, E> {
                match u64::try_from(v) {
                    Ok(v) => self.fixed(v),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
                }
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<TokenDist, E> {
                match whole_u32(v) {
                    Some(n) => Ok(TokenDist::Fixed(n)),
                    None => Err(E::invalid_value(de::Unexpected::Float(v), &self)),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TokenDist, A::Error> {
                Ok(
                    match TokenDistRepr::deserialize(de::value::MapAccessDeserializer::new(map))? {
                        TokenDistRepr::Fixed { value } => TokenDist::Fixed(value),
                        TokenDistRepr::Uniform { min, max } => TokenDist::Uniform { min, max },
                        TokenDistRepr::Lognormal { median, sigma } => {
                            TokenDist::Lognormal { median, sigma }
                        }
                        TokenDistRepr::Geometric { mean } => TokenDist::Geometric { mean },
                    },
                )
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Why a traffic spec cannot be turned into a stream.
#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    /// A trace or curve file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file, after resolving against the scenario's folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A line of a trace or curve could not be parsed.
    #[error("{file}:{line}: {}{message}", column_prefix(.column.as_deref()))]
    Parse {
        /// The file (bundled files are named `bundled <folder>/<file>`).
        file: String,
        /// 1-based line number (a CSV header is line 1).
        line: usize,
        /// The column or field at fault, when one is.
        column: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// The header (CSV) lacks a column the spec names.
    #[error("{file}: no column `{column}` in the header; columns: {}", available.join(", "))]
    MissingColumn {
        /// The file.
        file: String,
        /// The missing column.
        column: String,
        /// The header's columns.
        available: Vec<String>,
    },
    /// A trace has no requests, or a curve fewer than two rows.
    #[error("{file}: {what}")]
    Empty {
        /// The file.
        file: String,
        /// What is missing.
        what: &'static str,
    },
    /// No bundled rate curve has this name.
    #[error("no bundled rate curve `{name}`; bundled curves: {}", known.join(", "))]
    UnknownCurve {
        /// The requested name.
        name: String,
        /// The bundled curves' names.
        known: Vec<String>,
    },
    /// A number in the spec is outside its domain.
    #[error("{field}: {message}")]
    InvalidSpec {
        /// The field's YAML name.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

fn column_prefix(column: Option<&str>) -> String {
    column
        .map(|c| format!("column `{c}`: "))
        .unwrap_or_default()
}

/// A parse failure before the file's name is attached. `Clone` so that the
/// outcome of parsing bundled data can be cached.
#[derive(Clone, Debug)]
struct LineError {
    line: usize,
    column: Option<String>,
    message: String,
}

impl LineError {
    fn new(line: usize, column: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            line,
            column: column.map(str::to_owned),
            message: message.into(),
        }
    }

    fn in_file(self, file: impl Into<String>) -> TrafficError {
        TrafficError::Parse {
            file: file.into(),
            line: self.line,
            column: self.column,
            message: self.message,
        }
    }
}

/// Parse failures: a bad line, a header without a named column, or no data.
#[derive(Clone, Debug)]
enum LoadError {
    Line(LineError),
    MissingColumn {
        column: String,
        available: Vec<String>,
    },
    Empty(&'static str),
}

impl From<LineError> for LoadError {
    fn from(e: LineError) -> Self {
        Self::Line(e)
    }
}

impl LoadError {
    fn in_file(self, file: impl Into<String>) -> TrafficError {
        let file = file.into();
        match self {
            Self::Line(e) => e.in_file(file),
            Self::MissingColumn { column, available } => TrafficError::MissingColumn {
                file,
                column,
                available,
            },
            Self::Empty(what) => TrafficError::Empty { file, what },
        }
    }
}

// ---------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------

/// A Poisson process with a piecewise-constant rate, walked window by window.
///
/// Invariants: `t_us <= win_end_us`; `win_end_us` is the absolute end of
/// window `win`; a non-periodic schedule's last window is infinitely long, so
/// `win` never runs past the end.
#[derive(Clone, Debug)]
struct Arrivals {
    windows: Arc<[Window]>,
    periodic: bool,
    /// Length of one period and the expected arrivals in it (periodic only).
    period_us: f64,
    period_count: f64,
    win: usize,
    win_end_us: f64,
    t_us: f64,
}

impl Arrivals {
    fn constant(rate_per_second: f64) -> Self {
        Self::once(vec![Window {
            len_us: f64::INFINITY,
            rate_per_us: rate_per_second / US_PER_SECOND,
        }])
    }

    /// A schedule that plays `windows` once; the last must be infinitely long.
    fn once(windows: Vec<Window>) -> Self {
        let first_len = windows.first().map_or(f64::INFINITY, |w| w.len_us);
        Self {
            windows: windows.into(),
            periodic: false,
            period_us: f64::INFINITY,
            period_count: 0.0,
            win: 0,
            win_end_us: first_len,
            t_us: 0.0,
        }
    }

    /// The curve's rates times `scale`, repeated forever, with time 0 at
    /// `start_us` into the curve.
    fn periodic(curve: &Curve, scale: f64, start_us: f64) -> Self {
        let windows: Arc<[Window]> = curve
            .windows
            .iter()
            .map(|w| Window {
                len_us: w.len_us,
                rate_per_us: w.rate_per_us * scale,
            })
            .collect();
        let period_count = windows.iter().map(|w| w.len_us * w.rate_per_us).sum();
        let phase = start_us.rem_euclid(curve.period_us);
        // The window holding `phase`; its end is measured from run time 0.
        let mut end = 0.0;
        let mut win = windows.len() - 1;
        for (i, w) in windows.iter().enumerate() {
            end += w.len_us;
            if phase < end {
                win = i;
                break;
            }
        }
        Self {
            windows,
            periodic: true,
            period_us: curve.period_us,
            period_count,
            win,
            win_end_us: (end - phase).max(0.0),
            t_us: 0.0,
        }
    }

    fn advance_window(&mut self) {
        self.win += 1;
        if self.win == self.windows.len() {
            self.win = 0;
        }
        self.win_end_us += self.windows[self.win].len_us;
    }

    /// The next arrival time before `end_us`, or `None` once the process passes it.
    #[inline]
    fn next(&mut self, rng: &mut Pcg64Mcg, end_us: f64) -> Option<f64> {
        let mut need = unit_exponential(rng);
        loop {
            let rate = self.windows[self.win].rate_per_us;
            let room = self.win_end_us - self.t_us;
            if rate > 0.0 {
                let dt = need / rate;
                if dt < room {
                    self.t_us += dt;
                    return (self.t_us < end_us).then_some(self.t_us);
                }
                need = (need - rate * room).max(0.0);
            }
            self.t_us = self.win_end_us;
            if self.t_us >= end_us {
                return None;
            }
            self.advance_window();
        }
    }

    /// Expected number of arrivals in `[t_us, end_us)`.
    fn expected_count(&self, end_us: f64) -> f64 {
        let mut s = self.clone();
        let mut total = 0.0;
        let mut walked = 0;
        loop {
            let stop = s.win_end_us.min(end_us);
            total += s.windows[s.win].rate_per_us * (stop - s.t_us).max(0.0);
            if s.win_end_us >= end_us {
                return total;
            }
            s.t_us = s.win_end_us;
            s.advance_window();
            walked += 1;
            if s.periodic && walked == s.windows.len() {
                // Back at the same phase: skip whole periods arithmetically.
                let periods = ((end_us - s.t_us) / s.period_us).floor();
                if periods >= 1.0 {
                    total += periods * s.period_count;
                    s.t_us += periods * s.period_us;
                    s.win_end_us += periods * s.period_us;
                }
            }
        }
    }
}

/// A validated [`TokenDist`].
#[derive(Clone, Copy, Debug)]
enum TokenSampler {
    Fixed(u32),
    /// `min + index_below(span)`.
    Uniform {
        min: u32,
        span: usize,
    },
    Lognormal {
        ln_median: f64,
        sigma: f64,
    },
    Geometric {
        mean: f64,
    },
}

impl TokenSampler {
    fn new(dist: TokenDist, field: &'static str) -> Result<Self, TrafficError> {
        let invalid = |message: String| Err(TrafficError::InvalidSpec { field, message });
        match dist {
            TokenDist::Fixed(0) => invalid("a fixed token count must be >= 1".into()),
            TokenDist::Fixed(n) => Ok(Self::Fixed(n)),
            TokenDist::Uniform { min, max } if min == 0 || min > max => invalid(format!(
                "uniform needs 1 <= min <= max, got min {min}, max {max}"
            )),
            TokenDist::Uniform { min, max } => Ok(Self::Uniform {
                min,
                span: usize::try_from(max - min).map_or(usize::MAX, |s| s.saturating_add(1)),
            }),
            TokenDist::Lognormal { median, sigma }
                if !(median.is_finite() && median > 0.0 && sigma.is_finite() && sigma >= 0.0) =>
            {
                invalid(format!(
                    "lognormal needs median > 0 and sigma >= 0, got median {median}, sigma {sigma}"
                ))
            }
            TokenDist::Lognormal { median, sigma } => Ok(Self::Lognormal {
                ln_median: median.ln(),
                sigma,
            }),
            TokenDist::Geometric { mean } if !(mean.is_finite() && mean > 0.0) => {
                invalid(format!("geometric needs mean > 0, got {mean}"))
            }
            TokenDist::Geometric { mean } => Ok(Self::Geometric { mean }),
        }
    }

    #[inline]
    fn sample(self, rng: &mut Pcg64Mcg) -> u32 {
        match self {
            Self::Fixed(n) => n,
            Self::Uniform { min, span } => {
                let k = u32::try_from(index_below(rng, span)).unwrap_or(u32::MAX);
                min.saturating_add(k)
            }
            Self::Lognormal { ln_median, sigma } => {
                let z = standard_normal(rng);
                token_count(sigma.mul_add(z, ln_median).exp())
            }
            Self::Geometric { mean } => token_count((mean * unit_exponential(rng)).floor() + 1.0),
        }
    }
}

/// Where token counts come from.
#[derive(Clone, Debug)]
enum Tokens {
    /// A uniformly chosen row of the trace, both counts together.
    Mix(Arc<Trace>),
    Dists {
        prompt: TokenSampler,
        output: TokenSampler,
    },
}

impl Tokens {
    #[inline]
    fn sample(&mut self, rng: &mut Pcg64Mcg) -> (u32, u32) {
        match self {
            Self::Mix(trace) => {
                let row = trace.rows[index_below(rng, trace.rows.len())];
                (row.prompt, row.output)
            }
            Self::Dists { prompt, output } => {
                let p = prompt.sample(rng);
                (p, output.sample(rng))
            }
        }
    }
}

/// Replay of a trace, optionally looped.
#[derive(Clone, Debug)]
struct Replay {
    trace: Arc<Trace>,
    next_row: usize,
    /// Unscaled offset of the current loop's start.
    loop_start_us: i64,
    period_us: i64,
    /// 1 / rateScale.
    stretch: f64,
    repeat: bool,
}

impl Replay {
    fn new(trace: Arc<Trace>, rate_scale: f64, repeat: bool) -> Self {
        let period_us = trace.loop_period_us();
        Self {
            trace,
            next_row: 0,
            loop_start_us: 0,
            period_us,
            stretch: 1.0 / rate_scale,
            repeat,
        }
    }

    fn scaled(&self, offset_us: i64) -> i64 {
        floor_i64(i64_f64(offset_us) * self.stretch)
    }

    fn expected_count(&self, end_us: i64) -> f64 {
        let n = self.trace.rows.len();
        if self.repeat {
            usize_f64(n) * i64_f64(end_us) / (i64_f64(self.period_us) * self.stretch)
        } else {
            let within = self
                .trace
                .rows
                .partition_point(|r| self.scaled(r.offset_us) < end_us);
            usize_f64(within)
        }
    }
}

#[derive(Debug)]
enum Generator {
    Replay(Replay),
    Synthetic { arrivals: Arrivals, tokens: Tokens },
    Done,
}

/// A lazily generated, deterministic request stream: the same spec, seed and
/// duration give the same requests. Memory is O(trace size) whatever the
/// duration. Arrivals are non-decreasing and `< duration_us`.
#[derive(Debug)]
pub struct TrafficStream {
    generator: Generator,
    rng: Pcg64Mcg,
    end_us: i64,
    mean_rate: f64,
}

impl TrafficStream {
    /// Expected requests per second over the run, for progress bars: exact
    /// for synthetic arrivals and for a trace played once, the trace's mean
    /// rate for a looped one.
    pub fn mean_rate_hint(&self) -> f64 {
        self.mean_rate
    }
}

impl Iterator for TrafficStream {
    type Item = Request;

    #[inline]
    fn next(&mut self) -> Option<Request> {
        let request = match &mut self.generator {
            Generator::Synthetic { arrivals, tokens } => {
                // `end_us` as f64 may round up past an i64 bound; the integer
                // check below keeps arrivals strictly before the end.
                match arrivals.next(&mut self.rng, i64_f64(self.end_us)) {
                    Some(t) => {
                        let (prompt_tokens, output_tokens) = tokens.sample(&mut self.rng);
                        Some(Request {
                            arrival_us: floor_i64(t),
                            prompt_tokens,
                            output_tokens,
                        })
                    }
                    None => None,
                }
            }
            Generator::Replay(replay) => {
                if replay.next_row == replay.trace.rows.len() && replay.repeat {
                    replay.next_row = 0;
                    replay.loop_start_us = replay.loop_start_us.saturating_add(replay.period_us);
                }
                replay.trace.rows.get(replay.next_row).copied().map(|row| {
                    replay.next_row += 1;
                    Request {
                        arrival_us: replay
                            .scaled(replay.loop_start_us.saturating_add(row.offset_us)),
                        prompt_tokens: row.prompt,
                        output_tokens: row.output,
                    }
                })
            }
            Generator::Done => None,
        };
        match request {
            Some(r) if r.arrival_us < self.end_us => Some(r),
            _ => {
                self.generator = Generator::Done;
                None
            }
        }
    }
}

impl std::iter::FusedIterator for TrafficStream {}

fn positive_finite(field: &'static str, value: f64) -> Result<f64, TrafficError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(TrafficError::InvalidSpec {
            field,
            message: format!("must be a finite number > 0, got {value}"),
        })
    }
}

fn non_negative_finite(field: &'static str, value: f64) -> Result<f64, TrafficError> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(TrafficError::InvalidSpec {
            field,
            message: format!("must be a finite number >= 0, got {value}"),
        })
    }
}

/// Builds the stream for `duration_us` of simulated time (nothing for a
/// duration <= 0). Relative file paths resolve against `base_dir` (the
/// scenario file's folder).
///
/// # Errors
/// [`TrafficError::Io`], [`TrafficError::Parse`], [`TrafficError::MissingColumn`]
/// or [`TrafficError::Empty`] when a trace or curve file cannot be used;
/// [`TrafficError::UnknownCurve`] for an unknown bundled curve;
/// [`TrafficError::InvalidSpec`] for a rate, scale, time or token
/// distribution outside its domain.
pub fn stream(
    spec: &TrafficSpec,
    seed: u64,
    duration_us: i64,
    base_dir: &Path,
) -> Result<TrafficStream, TrafficError> {
    let generator = match spec {
        TrafficSpec::Trace {
            source,
            rate_scale,
            repeat,
        } => {
            let rate_scale = positive_finite("rateScale", *rate_scale)?;
            Generator::Replay(Replay::new(
                load_trace_source(source, base_dir)?,
                rate_scale,
                *repeat,
            ))
        }
        TrafficSpec::File {
            path,
            format,
            columns,
            timestamp_unit,
            rate_scale,
            repeat,
        } => {
            let rate_scale = positive_finite("rateScale", *rate_scale)?;
            let trace =
                load_trace_file(&resolve(base_dir, path), *format, columns, *timestamp_unit)?;
            Generator::Replay(Replay::new(trace, rate_scale, *repeat))
        }
        TrafficSpec::Envelope {
            mix,
            curve,
            rate_scale,
            start_seconds,
        } => {
            let rate_scale = positive_finite("rateScale", *rate_scale)?;
            if !start_seconds.is_finite() {
                return Err(TrafficError::InvalidSpec {
                    field: "startSeconds",
                    message: format!("must be a finite number, got {start_seconds}"),
                });
            }
            let curve = load_curve(curve, base_dir)?;
            let tokens = Tokens::Mix(load_trace_source(mix, base_dir)?);
            if curve.mean_rate() > 0.0 {
                Generator::Synthetic {
                    arrivals: Arrivals::periodic(&curve, rate_scale, start_seconds * US_PER_SECOND),
                    tokens,
                }
            } else {
                // A curve of zeros would otherwise walk window by window to the end of the run.
                Generator::Done
            }
        }
        TrafficSpec::Poisson {
            rate_per_second,
            prompt_tokens,
            output_tokens,
        } => Generator::Synthetic {
            arrivals: Arrivals::constant(non_negative_finite("ratePerSecond", *rate_per_second)?),
            tokens: Tokens::Dists {
                prompt: TokenSampler::new(*prompt_tokens, "promptTokens")?,
                output: TokenSampler::new(*output_tokens, "outputTokens")?,
            },
        },
        TrafficSpec::Burst {
            base_rate_per_second,
            burst_rate_per_second,
            burst_start_seconds,
            burst_seconds,
            prompt_tokens,
            output_tokens,
        } => {
            let base = non_negative_finite("baseRatePerSecond", *base_rate_per_second)?;
            let burst = non_negative_finite("burstRatePerSecond", *burst_rate_per_second)?;
            let start = non_negative_finite("burstStartSeconds", *burst_start_seconds)?;
            let length = non_negative_finite("burstSeconds", *burst_seconds)?;
            let window = |seconds: f64, rate: f64| Window {
                len_us: seconds * US_PER_SECOND,
                rate_per_us: rate / US_PER_SECOND,
            };
            Generator::Synthetic {
                arrivals: Arrivals::once(vec![
                    window(start, base),
                    window(length, burst),
                    window(f64::INFINITY, base),
                ]),
                tokens: Tokens::Dists {
                    prompt: TokenSampler::new(*prompt_tokens, "promptTokens")?,
                    output: TokenSampler::new(*output_tokens, "outputTokens")?,
                },
            }
        }
    };
    let end_us = duration_us.max(0);
    let expected = match &generator {
        Generator::Replay(replay) => replay.expected_count(end_us),
        Generator::Synthetic { arrivals, .. } => arrivals.expected_count(i64_f64(end_us)),
        Generator::Done => 0.0,
    };
    let mean_rate = if end_us > 0 {
        expected / (i64_f64(end_us) / US_PER_SECOND)
    } else {
        0.0
    };
    Ok(TrafficStream {
        generator: if end_us > 0 {
            generator
        } else {
            Generator::Done
        },
        rng: Pcg64Mcg::seed_from_u64(seed),
        end_us,
        mean_rate,
    })
}
