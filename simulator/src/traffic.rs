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

const AZURE_CODE_CSV: &str = include_str!("../data/azure-llm-2023/AzureLLMInferenceTrace_code.csv");
const AZURE_CONV_CSV: &str = include_str!("../data/azure-llm-2023/AzureLLMInferenceTrace_conv.csv");
const SERVEGEN_CSV: &str = include_str!("../data/servegen-rate-curve/aggregate_rate_10min.csv");

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
// Numeric helpers: the module's float/integer conversions and samplers
// ---------------------------------------------------------------------------

/// `floor(x)` saturated to the i64 range (NaN → 0).
///
/// By truncation and one comparison rather than `f64::floor`, which on the
/// baseline x86-64 target is a libm call on every arrival. Exact: a float
/// beyond 2^53 is an integer and truncates exactly.
#[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)] // `as` saturates
pub(crate) fn floor_i64(x: f64) -> i64 {
    let t = x as i64;
    if (t as f64) > x {
        t.saturating_sub(1)
    } else {
        t
    }
}

/// `ceil(x)` saturated to the i64 range (NaN → 0), the same way as [`floor_i64`].
#[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)] // `as` saturates
pub(crate) fn ceil_i64(x: f64) -> i64 {
    let t = x as i64;
    if (t as f64) < x {
        t.saturating_add(1)
    } else {
        t
    }
}

/// `round(x)` saturated to the i64 range (NaN → 0).
#[allow(clippy::cast_possible_truncation)] // `as` saturates, and after round() nothing is truncated
fn round_i64(x: f64) -> i64 {
    x.round() as i64
}

#[allow(clippy::cast_precision_loss)] // µs offsets below 2^53 (285 years) convert exactly
fn i64_f64(x: i64) -> f64 {
    x as f64
}

#[allow(clippy::cast_precision_loss)] // counts below 2^53 convert exactly
fn usize_f64(x: usize) -> f64 {
    x as f64
}

/// A token count from a real sample: rounded, clamped to `1..=u32::MAX`.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // clamped into u32 range first (NaN → 1 by the max)
fn token_count(x: f64) -> u32 {
    x.round().max(1.0).min(f64::from(u32::MAX)) as u32
}

/// `v` if it is a whole number in u32 range.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // checked whole and in range first
fn whole_u32(v: f64) -> Option<u32> {
    (v.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&v)).then_some(v as u32)
}

/// Uniform on [0, 1) with 52 random bits, built from the bit pattern of
/// 1.x (exact, no integer-to-float cast).
#[inline]
fn unit_open_above(rng: &mut Pcg64Mcg) -> f64 {
    f64::from_bits(0x3FF0_0000_0000_0000 | (rng.next_u64() >> 12)) - 1.0
}

/// Unit exponential by inversion: -ln(u) with u uniform on (0, 1], so never
/// infinite (for the ziggurats' tails).
#[inline]
fn exponential_by_inversion(rng: &mut Pcg64Mcg) -> f64 {
    -(1.0 - unit_open_above(rng)).ln()
}

/// Layers of the ziggurat for the unit exponential (Marsaglia & Tsang 2000).
const EXP_LAYERS: usize = 256;
/// Where the tail starts for 256 layers.
const EXP_R: f64 = 7.697_117_470_131_05;
/// Area of every layer under `exp(-x)` (the base layer including the tail).
const EXP_V: f64 = 3.949_659_822_581_557e-3;

/// The unit exponential's ziggurat (`f(x) = exp(-x)`).
type ExpZiggurat = Tables<{ EXP_LAYERS + 1 }>;

fn exp_ziggurat() -> &'static ExpZiggurat {
    static TABLES: OnceLock<ExpZiggurat> = OnceLock::new();
    TABLES.get_or_init(|| Tables::build(EXP_R, EXP_V, |x| (-x).exp(), |y| -y.ln()))
}

/// Unit exponential by the ziggurat method: one 64-bit draw and a table
/// comparison about 98.9 % of the time, a logarithm only in the rare
/// wedges. The tail beyond `EXP_R` is `EXP_R` plus a fresh exponential
/// (the distribution is memoryless).
#[inline]
fn unit_exponential(rng: &mut Pcg64Mcg) -> f64 {
    let z = exp_ziggurat();
    loop {
        // The low 8 bits pick the layer, the top 52 the position: disjoint bits.
        let bits = rng.next_u64();
        let i = usize::try_from(bits & 0xFF).unwrap_or(0);
        let u = f64::from_bits(0x3FF0_0000_0000_0000 | (bits >> 12)) - 1.0;
        let x = u * z.x[i];
        if x < z.x[i + 1] {
            return x;
        }
        if i == 0 {
            return EXP_R + exponential_by_inversion(rng);
        }
        if unit_open_above(rng).mul_add(z.f[i] - z.f[i + 1], z.f[i + 1]) < (-x).exp() {
            return x;
        }
    }
}

/// Layers of the ziggurat for the standard normal (Marsaglia & Tsang 2000).
const ZIG_LAYERS: usize = 128;
/// Where the tail starts for 128 layers.
const ZIG_R: f64 = 3.442_619_855_899;
/// Area of every layer (the base layer including the tail beyond `ZIG_R`)
/// under the unnormalised density `exp(-x^2 / 2)`.
const ZIG_V: f64 = 9.912_563_035_262_17e-3;

/// Ziggurat tables for a density `f` with `f(0) = 1`, decreasing on
/// `x >= 0`: `x[0] = V / f(R)` (the base layer's equivalent width),
/// `x[1] = R`, strictly decreasing to `x[L - 1] = 0`; `f[i] = f(x[i])`.
struct Tables<const L: usize> {
    x: [f64; L],
    f: [f64; L],
}

impl<const L: usize> fmt::Debug for Tables<L> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("Ziggurat")
    }
}

impl<const L: usize> Tables<L> {
    /// Layer edges by the recurrence `x[i] = f⁻¹(V / x[i-1] + f(x[i-1]))`
    /// (every layer has area `v`).
    fn build(r: f64, v: f64, density: fn(f64) -> f64, inverse: fn(f64) -> f64) -> Self {
        let mut x = [0.0; L];
        x[0] = v / density(r);
        x[1] = r;
        for i in 2..L - 1 {
            let prev = x[i - 1];
            x[i] = inverse(v / prev + density(prev));
        }
        Self {
            x,
            f: x.map(density),
        }
    }
}

/// The standard normal's ziggurat (`f(x) = exp(-x^2 / 2)`).
type Ziggurat = Tables<{ ZIG_LAYERS + 1 }>;

fn ziggurat() -> &'static Ziggurat {
    static TABLES: OnceLock<Ziggurat> = OnceLock::new();
    TABLES.get_or_init(|| {
        Tables::build(
            ZIG_R,
            ZIG_V,
            |x| (-0.5 * x * x).exp(),
            |y| (-2.0 * y.ln()).sqrt(),
        )
    })
}

/// A standard normal by the ziggurat method: one 64-bit draw and a table
/// comparison about 98.8 % of the time (no logarithm, root or trigonometry).
#[inline]
fn standard_normal(rng: &mut Pcg64Mcg, z: &Ziggurat) -> f64 {
    loop {
        // The low 7 bits pick the layer, the top 52 the position: disjoint bits.
        let bits = rng.next_u64();
        let i = usize::try_from(bits & 0x7F).unwrap_or(0);
        let u = 2.0f64.mul_add(f64::from_bits(0x3FF0_0000_0000_0000 | (bits >> 12)), -3.0);
        let x = u * z.x[i];
        if x.abs() < z.x[i + 1] {
            return x;
        }
        if i == 0 {
            // Beyond ZIG_R: Marsaglia's (1964) exact tail method.
            loop {
                let a = exponential_by_inversion(rng) / ZIG_R;
                let b = exponential_by_inversion(rng);
                if 2.0 * b >= a * a {
                    return if u < 0.0 { -(ZIG_R + a) } else { ZIG_R + a };
                }
            }
        }
        if unit_open_above(rng).mul_add(z.f[i] - z.f[i + 1], z.f[i + 1]) < (-0.5 * x * x).exp() {
            return x;
        }
    }
}

/// Uniform index in `0..n` (n >= 1) by a 64x64-bit multiply; the bias is below n / 2^64.
#[inline]
fn index_below(rng: &mut Pcg64Mcg, n: usize) -> usize {
    let wide = u128::from(rng.next_u64()) * n as u128;
    usize::try_from(wide >> 64).unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Traces
// ---------------------------------------------------------------------------

/// One trace row: arrival relative to the trace's first request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Row {
    offset_us: i64,
    prompt: u32,
    output: u32,
}

/// A parsed trace. Invariants: at least one row; sorted by `offset_us`; the
/// first offset is 0.
struct Trace {
    rows: Vec<Row>,
}

impl fmt::Debug for Trace {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("Trace")
            .field("rows", &self.rows.len())
            .field("span_us", &self.span_us())
            .finish()
    }
}

impl Trace {
    /// Sorts rows by arrival and shifts them so the first arrives at 0.
    fn new(mut rows: Vec<(i64, u32, u32)>) -> Result<Self, LoadError> {
        rows.sort_by_key(|r| r.0);
        let first = rows
            .first()
            .ok_or(LoadError::Empty("the trace has no requests"))?
            .0;
        Ok(Self {
            rows: rows
                .into_iter()
                .map(|(t, prompt, output)| Row {
                    offset_us: t.saturating_sub(first),
                    prompt,
                    output,
                })
                .collect(),
        })
    }

    fn span_us(&self) -> i64 {
        self.rows.last().map_or(0, |r| r.offset_us)
    }

    /// Distance between the starts of consecutive loops of a repeated trace:
    /// the span plus one mean gap (1 s for a single request), at least 1 µs.
    fn loop_period_us(&self) -> i64 {
        let span = self.span_us();
        let gaps = self.rows.len().saturating_sub(1);
        let mean_gap = if gaps == 0 {
            1_000_000
        } else {
            round_i64(i64_f64(span) / usize_f64(gaps))
        };
        (span + mean_gap).max(1)
    }
}

/// Number of requests in a bundled trace (parsed on first use).
///
/// # Errors
/// [`TrafficError::Parse`] if the bundled data is corrupt (a build defect).
pub fn bundled_trace_len(trace: BundledTrace) -> Result<usize, TrafficError> {
    Ok(bundled_trace(trace)?.rows.len())
}

fn bundled_trace(which: BundledTrace) -> Result<Arc<Trace>, TrafficError> {
    static CODE: OnceLock<Result<Arc<Trace>, LoadError>> = OnceLock::new();
    static CONV: OnceLock<Result<Arc<Trace>, LoadError>> = OnceLock::new();
    let cell = match which {
        BundledTrace::Code => &CODE,
        BundledTrace::Conversation => &CONV,
    };
    cell.get_or_init(|| {
        parse_csv_trace(which.text(), &azure_columns(), TimestampUnit::Datetime).map(Arc::new)
    })
    .clone()
    .map_err(|e| e.in_file(format!("bundled {}", which.file())))
}

fn azure_columns() -> ColumnMap {
    ColumnMap {
        timestamp: "TIMESTAMP".into(),
        prompt_tokens: "ContextTokens".into(),
        output_tokens: "GeneratedTokens".into(),
    }
}

fn resolve(base_dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

fn read_file(path: &Path) -> Result<String, TrafficError> {
    std::fs::read_to_string(path).map_err(|source| TrafficError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn load_trace_source(source: &TraceSource, base_dir: &Path) -> Result<Arc<Trace>, TrafficError> {
    match source {
        TraceSource::Bundled(which) => bundled_trace(*which),
        TraceSource::File { path } => load_trace_file(
            &resolve(base_dir, path),
            FileFormat::Csv,
            &azure_columns(),
            TimestampUnit::Datetime,
        ),
    }
}

fn load_trace_file(
    path: &Path,
    format: FileFormat,
    columns: &ColumnMap,
    unit: TimestampUnit,
) -> Result<Arc<Trace>, TrafficError> {
    let text = read_file(path)?;
    let parsed = match format {
        FileFormat::Csv => parse_csv_trace(&text, columns, unit),
        FileFormat::Jsonl => parse_jsonl_trace(&text, columns, unit),
    };
    parsed
        .map(Arc::new)
        .map_err(|e| e.in_file(path.display().to_string()))
}

/// Non-blank lines with 1-based numbers, without `\r` (JSONL).
fn numbered_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
        .filter(|(_, l)| !l.trim().is_empty())
}

/// A CSV file (RFC 4180, read by the `csv` crate): its header's columns and
/// its data rows, each with its 1-based line number. Blank lines are skipped,
/// fields trimmed, a byte-order mark dropped; rows may be shorter than the
/// header (a missing field is reported where it is read).
struct CsvRows {
    header: Vec<String>,
    rows: Vec<CsvRow>,
}

/// A CSV data row and its 1-based line number.
type CsvRow = (usize, csv::StringRecord);

impl CsvRows {
    fn parse(text: &str) -> Result<Self, LoadError> {
        let text = text.trim_start_matches('\u{feff}');
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let header: Vec<String> = reader
            .headers()
            .map_err(|e| LineError::new(1, None, format!("header: {e}")))?
            .iter()
            .map(str::to_owned)
            .collect();
        if header.iter().all(String::is_empty) {
            return Err(LoadError::Empty("the file is empty (no header row)"));
        }
        let mut rows = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|e| {
                let line = e
                    .position()
                    .map_or(0, |p| usize::try_from(p.line()).unwrap_or(usize::MAX));
                LineError::new(line, None, e.to_string())
            })?;
            if record.iter().all(str::is_empty) {
                continue;
            }
            let line = record
                .position()
                .map_or(0, |p| usize::try_from(p.line()).unwrap_or(usize::MAX));
            rows.push((line, record));
        }
        Ok(Self { header, rows })
    }

    /// The index of each named column.
    fn indices<const N: usize>(&self, names: [&str; N]) -> Result<[usize; N], LoadError> {
        let mut out = [0; N];
        for (slot, name) in out.iter_mut().zip(names) {
            *slot = self.header.iter().position(|f| f == name).ok_or_else(|| {
                LoadError::MissingColumn {
                    column: name.to_owned(),
                    available: self.header.clone(),
                }
            })?;
        }
        Ok(out)
    }
}

fn csv_field<'a>(
    record: &'a csv::StringRecord,
    idx: usize,
    line: usize,
    column: &str,
) -> Result<&'a str, LineError> {
    record.get(idx).ok_or_else(|| {
        LineError::new(
            line,
            Some(column),
            format!("missing (the line has only {} fields)", record.len()),
        )
    })
}

fn parse_csv_trace(
    text: &str,
    columns: &ColumnMap,
    unit: TimestampUnit,
) -> Result<Trace, LoadError> {
    let csv = CsvRows::parse(text)?;
    let names = [
        columns.timestamp.as_str(),
        columns.prompt_tokens.as_str(),
        columns.output_tokens.as_str(),
    ];
    let [ts_idx, prompt_idx, output_idx] = csv.indices(names)?;
    let mut rows = Vec::new();
    for (line, fields) in &csv.rows {
        let line = *line;
        let ts = csv_field(fields, ts_idx, line, names[0])?;
        let prompt = csv_field(fields, prompt_idx, line, names[1])?;
        let output = csv_field(fields, output_idx, line, names[2])?;
        rows.push((
            parse_timestamp(ts, unit).map_err(|m| LineError::new(line, Some(names[0]), m))?,
            parse_tokens(prompt).map_err(|m| LineError::new(line, Some(names[1]), m))?,
            parse_tokens(output).map_err(|m| LineError::new(line, Some(names[2]), m))?,
        ));
    }
    Trace::new(rows)
}

fn parse_jsonl_trace(
    text: &str,
    columns: &ColumnMap,
    unit: TimestampUnit,
) -> Result<Trace, LoadError> {
    let mut rows = Vec::new();
    for (line, text) in numbered_lines(text) {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| LineError::new(line, None, format!("not JSON: {e}")))?;
        let Some(object) = value.as_object() else {
            return Err(LineError::new(line, None, "expected a JSON object").into());
        };
        let get = |name: &str| {
            object
                .get(name)
                .ok_or_else(|| LineError::new(line, Some(name), "missing"))
        };
        let ts = match get(&columns.timestamp)? {
            serde_json::Value::String(s) => parse_timestamp(s, unit),
            serde_json::Value::Number(n) if unit != TimestampUnit::Datetime => {
                parse_timestamp(&n.to_string(), unit)
            }
            other => Err(format!(
                "expected a {} timestamp, found {other}",
                unit_name(unit)
            )),
        }
        .map_err(|m| LineError::new(line, Some(&columns.timestamp), m))?;
        let tokens = |name: &str| -> Result<u32, LineError> {
            match get(name)? {
                serde_json::Value::Number(n) => parse_tokens(&n.to_string()),
                serde_json::Value::String(s) => parse_tokens(s),
                other => Err(format!("expected a token count, found {other}")),
            }
            .map_err(|m| LineError::new(line, Some(name), m))
        };
        rows.push((
            ts,
            tokens(&columns.prompt_tokens)?,
            tokens(&columns.output_tokens)?,
        ));
    }
    Trace::new(rows)
}

fn unit_name(unit: TimestampUnit) -> &'static str {
    match unit {
        TimestampUnit::Seconds => "seconds",
        TimestampUnit::Milliseconds => "milliseconds",
        TimestampUnit::Microseconds => "microseconds",
        TimestampUnit::Datetime => "datetime",
    }
}

fn parse_tokens(raw: &str) -> Result<u32, String> {
    let raw = raw.trim();
    raw.parse::<u32>()
        .ok()
        .or_else(|| raw.parse::<f64>().ok().and_then(whole_u32))
        .ok_or_else(|| format!("`{raw}` is not a token count"))
}

/// A timestamp in µs (on an arbitrary origin for numeric units).
fn parse_timestamp(raw: &str, unit: TimestampUnit) -> Result<i64, String> {
    let raw = raw.trim();
    let scale = match unit {
        TimestampUnit::Datetime => {
            return parse_datetime_us(raw).ok_or_else(|| {
                format!("`{raw}` is not a datetime (YYYY-MM-DD HH:MM:SS[.f] or RFC 3339)")
            });
        }
        TimestampUnit::Microseconds => {
            if let Ok(us) = raw.parse::<i64>() {
                return Ok(us);
            }
            1.0
        }
        TimestampUnit::Milliseconds => 1_000.0,
        TimestampUnit::Seconds => US_PER_SECOND,
    };
    match raw.parse::<f64>() {
        Ok(v) if v.is_finite() && (v * scale).abs() < 9.0e15 => Ok(round_i64(v * scale)),
        _ => Err(format!("`{raw}` is not a time in {}", unit_name(unit))),
    }
}

/// µs since the Unix epoch of `YYYY-MM-DD[ Tt]HH:MM:SS[.fraction][Z|±HH:MM|±HHMM]`
/// (no offset means UTC), parsed by chrono. Fractions beyond µs are
/// truncated.
fn parse_datetime_us(s: &str) -> Option<i64> {
    use chrono::{DateTime, NaiveDateTime};
    let b = s.as_bytes();
    // The layout is fixed up to the seconds (chrono alone would also take
    // one-digit months or a missing seconds field).
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let at = |i: usize, allowed: &[u8]| b.get(i).is_some_and(|c| allowed.contains(c));
    if !(digits(0..4)
        && at(4, b"-")
        && digits(5..7)
        && at(7, b"-")
        && digits(8..10)
        && at(10, b" Tt")
        && digits(11..13)
        && at(13, b":")
        && digits(14..16)
        && at(16, b":")
        && digits(17..19))
    {
        return None;
    }
    let mut text = s.to_owned();
    text.replace_range(10..11, "T");
    let rest = &text[19..];
    let fraction_end = rest
        .strip_prefix('.')
        .map_or(0, |f| 1 + f.bytes().take_while(u8::is_ascii_digit).count());
    if fraction_end == 1 {
        return None; // a '.' without digits
    }
    let offset = &rest[fraction_end..];
    let micros = if offset.is_empty() || offset.eq_ignore_ascii_case("z") {
        NaiveDateTime::parse_from_str(&text[..19 + fraction_end], "%Y-%m-%dT%H:%M:%S%.f")
            .ok()?
            .and_utc()
            .timestamp_micros()
    } else {
        if !matches!(offset.len(), 5 | 6) {
            return None;
        }
        DateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%.f%z")
            .ok()?
            .timestamp_micros()
    };
    Some(micros)
}

// ---------------------------------------------------------------------------
// Rate curves
// ---------------------------------------------------------------------------

/// One window of a piecewise-constant rate.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Window {
    len_us: f64,
    rate_per_us: f64,
}

/// A rate curve. Invariants: at least one window, every length finite and
/// > 0, every rate finite and >= 0, `period_us` the sum of the lengths.
#[derive(Clone, Debug)]
struct Curve {
    windows: Arc<[Window]>,
    period_us: f64,
}

impl Curve {
    /// From (start seconds, rate per second) rows with strictly increasing
    /// starts and finite rates >= 0; the last window is as long as the one before.
    fn from_points(points: &[(f64, f64)]) -> Result<Self, LoadError> {
        if points.len() < 2 {
            return Err(LoadError::Empty("a rate curve needs at least two rows"));
        }
        let mut windows = Vec::with_capacity(points.len());
        for pair in points.windows(2) {
            let ((t0, rate), (t1, _)) = (pair[0], pair[1]);
            windows.push(Window {
                len_us: (t1 - t0) * US_PER_SECOND,
                rate_per_us: rate / US_PER_SECOND,
            });
        }
        let last_len = windows.last().map_or(0.0, |w| w.len_us);
        let last_rate = points.last().map_or(0.0, |p| p.1);
        windows.push(Window {
            len_us: last_len,
            rate_per_us: last_rate / US_PER_SECOND,
        });
        let period_us = windows.iter().map(|w| w.len_us).sum();
        Ok(Self {
            windows: windows.into(),
            period_us,
        })
    }

    /// Mean rate over one period, requests per second.
    fn mean_rate(&self) -> f64 {
        let count: f64 = self.windows.iter().map(|w| w.len_us * w.rate_per_us).sum();
        count / self.period_us * US_PER_SECOND
    }
}

/// Parses a curve file's `(time, rate)` columns.
fn parse_curve_csv(text: &str, time_column: &str, rate_column: &str) -> Result<Curve, LoadError> {
    let csv = CsvRows::parse(text)?;
    let columns = csv.indices([time_column, rate_column])?;
    curve_from_rows(csv.rows.iter(), columns, [time_column, rate_column])
}

/// Builds a curve from numbered CSV data lines, checking that times strictly
/// increase and rates are finite and >= 0. `columns` are the indices of the
/// time and rate fields, `names` their names for messages.
fn curve_from_rows<'a>(
    rows: impl Iterator<Item = &'a CsvRow>,
    columns: [usize; 2],
    names: [&str; 2],
) -> Result<Curve, LoadError> {
    let mut points: Vec<(f64, f64)> = Vec::new();
    for (line, fields) in rows {
        let line = *line;
        let number = |i: usize| -> Result<f64, LineError> {
            let raw = csv_field(fields, columns[i], line, names[i])?;
            raw.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    LineError::new(line, Some(names[i]), format!("`{raw}` is not a number"))
                })
        };
        let (t, rate) = (number(0)?, number(1)?);
        if rate < 0.0 {
            return Err(LineError::new(line, Some(names[1]), "a rate cannot be negative").into());
        }
        if let Some(&(prev, _)) = points.last()
            && t <= prev
        {
            return Err(LineError::new(
                line,
                Some(names[0]),
                format!("times must increase, but {t} follows {prev}"),
            )
            .into());
        }
        points.push((t, rate));
    }
    Curve::from_points(&points)
}

/// A bundled ServeGen curve.
#[derive(Debug)]
struct BundledCurve {
    category: String,
    model: String,
    curve: Curve,
}

const SERVEGEN_FILE: &str = "bundled servegen-rate-curve/aggregate_rate_10min.csv";

fn bundled_curves() -> Result<&'static [BundledCurve], TrafficError> {
    static CURVES: OnceLock<Result<Vec<BundledCurve>, LoadError>> = OnceLock::new();
    match CURVES.get_or_init(|| parse_servegen(SERVEGEN_CSV)) {
        Ok(curves) => Ok(curves),
        Err(e) => Err(e.clone().in_file(SERVEGEN_FILE)),
    }
}

fn parse_servegen(text: &'static str) -> Result<Vec<BundledCurve>, LoadError> {
    let csv = CsvRows::parse(text)?;
    let [cat_idx, model_idx, t_idx, rate_idx] =
        csv.indices(["category", "model", "t_seconds", "total_rate_rps"])?;
    // Rows of one curve are contiguous: group them, then check each group's
    // times on their own.
    let mut groups: Vec<(String, String, Vec<CsvRow>)> = Vec::new();
    for (line, row) in csv.rows {
        let category = csv_field(&row, cat_idx, line, "category")?.to_owned();
        let model = csv_field(&row, model_idx, line, "model")?.to_owned();
        match groups.last_mut() {
            Some((c, m, rows)) if *c == category && *m == model => rows.push((line, row)),
            _ => groups.push((category, model, vec![(line, row)])),
        }
    }
    groups
        .into_iter()
        .map(|(category, model, rows)| {
            Ok(BundledCurve {
                category,
                model,
                curve: curve_from_rows(
                    rows.iter(),
                    [t_idx, rate_idx],
                    ["t_seconds", "total_rate_rps"],
                )?,
            })
        })
        .collect()
}

/// Names of the bundled ServeGen rate curves, in file order
/// (`m-large`, `m-mid`, `m-small`, `mm-image`, `deepseek-r1`).
pub fn bundled_curve_models() -> Vec<&'static str> {
    bundled_curves()
        .map(|curves| curves.iter().map(|c| c.model.as_str()).collect())
        .unwrap_or_default()
}

fn load_curve(source: &CurveSource, base_dir: &Path) -> Result<Curve, TrafficError> {
    match source {
        CurveSource::Bundled(name) => {
            let curves = bundled_curves()?;
            curves
                .iter()
                .find(|c| c.model == *name || format!("{}/{}", c.category, c.model) == *name)
                .map(|c| c.curve.clone())
                .ok_or_else(|| TrafficError::UnknownCurve {
                    name: name.clone(),
                    known: curves.iter().map(|c| c.model.clone()).collect(),
                })
        }
        CurveSource::File {
            path,
            time_column,
            rate_column,
        } => {
            let path = resolve(base_dir, path);
            let text = read_file(&path)?;
            parse_curve_csv(&text, time_column, rate_column)
                .map_err(|e| e.in_file(path.display().to_string()))
        }
    }
}

/// Mean request rate of a curve over one period, requests per second (before
/// any `rateScale`). The bundled `m-large` curve averages about 196 req/s.
///
/// # Errors
/// As for [`stream`]: the curve's file cannot be read or parsed, or no
/// bundled curve has the name.
pub fn curve_mean_rate(curve: &CurveSource, base_dir: &Path) -> Result<f64, TrafficError> {
    Ok(load_curve(curve, base_dir)?.mean_rate())
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
        tables: &'static Ziggurat,
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
                tables: ziggurat(),
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
            Self::Lognormal {
                ln_median,
                sigma,
                tables,
            } => {
                let z = standard_normal(rng, tables);
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

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The truncating floor and ceil agree with `f64::floor`/`f64::ceil`
        /// cast with `as` on every float: fractions, integers, both signs,
        /// beyond 2^53 and 2^63, infinities and NaN.
        #[test]
        #[allow(clippy::cast_possible_truncation)]
        fn integer_floor_and_ceil_match_the_float_ones(bits in proptest::num::u64::ANY, small in -1e7f64..1e7) {
            for x in [f64::from_bits(bits), small, small.trunc(), -0.0, f64::INFINITY, f64::NEG_INFINITY, f64::NAN] {
                proptest::prop_assert_eq!(floor_i64(x), x.floor() as i64, "floor {}", x);
                proptest::prop_assert_eq!(ceil_i64(x), x.ceil() as i64, "ceil {}", x);
            }
        }
    }

    const DAY_US: i64 = 86_400_000_000;
    const HOUR_US: i64 = 3_600_000_000;

    fn here() -> &'static Path {
        Path::new(".")
    }

    fn run(spec: &TrafficSpec, seed: u64, duration_us: i64) -> TrafficStream {
        stream(spec, seed, duration_us, here()).unwrap()
    }

    fn poisson(rate: f64) -> TrafficSpec {
        TrafficSpec::Poisson {
            rate_per_second: rate,
            prompt_tokens: TokenDist::Fixed(100),
            output_tokens: TokenDist::Fixed(10),
        }
    }

    fn envelope(scale: f64, start_seconds: f64) -> TrafficSpec {
        TrafficSpec::Envelope {
            mix: TraceSource::Bundled(BundledTrace::Conversation),
            curve: CurveSource::Bundled("m-large".into()),
            rate_scale: scale,
            start_seconds,
        }
    }

    fn replay(which: BundledTrace, scale: f64, repeat: bool) -> TrafficSpec {
        TrafficSpec::Trace {
            source: TraceSource::Bundled(which),
            rate_scale: scale,
            repeat,
        }
    }

    /// A fresh folder under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("spillway-traffic-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn write(&self, name: &str, body: &str) {
            std::fs::write(self.0.join(name), body).unwrap();
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn assert_well_ordered(requests: &[Request], duration_us: i64) {
        for pair in requests.windows(2) {
            assert!(pair[0].arrival_us <= pair[1].arrival_us, "{pair:?}");
        }
        for r in requests {
            assert!((0..duration_us).contains(&r.arrival_us), "{r:?}");
        }
    }

    #[test]
    fn bundled_traces_have_the_documented_request_counts() {
        assert_eq!(bundled_trace_len(BundledTrace::Code).unwrap(), 8_819);
        assert_eq!(
            bundled_trace_len(BundledTrace::Conversation).unwrap(),
            19_366
        );
    }

    #[test]
    fn bundled_trace_first_rows_match_the_csv() {
        let code = bundled_trace(BundledTrace::Code).unwrap();
        // 18:17:03.9799600 then 18:17:04.0319600: 52 ms apart.
        assert_eq!(
            code.rows[0],
            Row {
                offset_us: 0,
                prompt: 4808,
                output: 10
            }
        );
        assert_eq!(
            code.rows[1],
            Row {
                offset_us: 52_000,
                prompt: 3180,
                output: 8
            }
        );
        // About an hour each.
        for which in [BundledTrace::Code, BundledTrace::Conversation] {
            let span = bundled_trace(which).unwrap().span_us();
            assert!((55 * 60_000_000..65 * 60_000_000).contains(&span), "{span}");
        }
    }

    #[test]
    fn replay_preserves_inter_arrival_gaps_divided_by_rate_scale() {
        let trace = bundled_trace(BundledTrace::Conversation).unwrap();
        let got: Vec<Request> = run(
            &replay(BundledTrace::Conversation, 4.0, false),
            1,
            10 * DAY_US,
        )
        .collect();
        assert_eq!(got.len(), trace.rows.len());
        for (r, row) in got.iter().zip(&trace.rows) {
            assert_eq!(r.arrival_us, row.offset_us / 4);
            assert_eq!((r.prompt_tokens, r.output_tokens), (row.prompt, row.output));
        }
        let at_half: Vec<Request> = run(
            &replay(BundledTrace::Conversation, 0.5, false),
            1,
            10 * DAY_US,
        )
        .collect();
        for (r, row) in at_half.iter().zip(&trace.rows) {
            assert_eq!(r.arrival_us, row.offset_us * 2);
        }
    }

    #[test]
    fn replay_without_repeat_stops_at_the_duration_or_the_trace_end() {
        let ten_minutes: Vec<Request> =
            run(&replay(BundledTrace::Code, 1.0, false), 1, 600_000_000).collect();
        assert!(!ten_minutes.is_empty() && ten_minutes.len() < 8_819);
        assert_well_ordered(&ten_minutes, 600_000_000);
        assert_eq!(
            run(&replay(BundledTrace::Code, 1.0, false), 1, DAY_US).count(),
            8_819
        );
    }

    #[test]
    fn repeat_fills_the_duration_with_whole_loops() {
        let trace = bundled_trace(BundledTrace::Code).unwrap();
        let period = trace.loop_period_us();
        let duration = 5 * HOUR_US;
        let got: Vec<Request> = run(&replay(BundledTrace::Code, 1.0, true), 1, duration).collect();
        assert_well_ordered(&got, duration);
        // Four full loops fit in five hours of an about one-hour trace, and
        // the last request lands no further from the end than the trace's
        // longest gap (about 2.5 minutes in the code trace).
        assert!(got.len() >= 4 * 8_819, "{}", got.len());
        let longest_gap = trace
            .rows
            .windows(2)
            .map(|p| p[1].offset_us - p[0].offset_us)
            .max()
            .unwrap();
        let last = got.last().unwrap().arrival_us;
        assert!(duration - last <= longest_gap, "{last} {longest_gap}");
        // Loop k is loop 0 shifted by k periods.
        assert_eq!(got[8_819].arrival_us, period);
        assert_eq!(
            got[2 * 8_819 + 5].arrival_us,
            2 * period + trace.rows[5].offset_us
        );
        let hint = run(&replay(BundledTrace::Code, 1.0, true), 1, duration).mean_rate_hint();
        let actual = usize_f64(got.len()) / 18_000.0;
        assert!((hint / actual - 1.0).abs() < 0.02, "{hint} {actual}");
    }

    #[test]
    fn m_large_curve_averages_196_requests_per_second() {
        let mean = curve_mean_rate(&CurveSource::Bundled("m-large".into()), here()).unwrap();
        assert!((mean - 195.844).abs() < 0.01, "{mean}");
        let prefixed =
            curve_mean_rate(&CurveSource::Bundled("language/m-large".into()), here()).unwrap();
        assert!((prefixed - mean).abs() < f64::EPSILON);
    }

    #[test]
    fn envelope_long_run_rate_matches_the_curve_mean_within_one_percent() {
        // 14 days (the whole curve) at 1 % of the rate: ~2.4 M requests.
        let scale = 0.01;
        let duration = 14 * DAY_US;
        let s = run(&envelope(scale, 0.0), 7, duration);
        let hint = s.mean_rate_hint();
        let count = s.count();
        let rate = usize_f64(count) / (i64_f64(duration) / US_PER_SECOND);
        let mean =
            curve_mean_rate(&CurveSource::Bundled("m-large".into()), here()).unwrap() * scale;
        assert!((rate / mean - 1.0).abs() < 0.01, "{rate} vs {mean}");
        assert!((hint / mean - 1.0).abs() < 1e-9, "{hint} vs {mean}");
    }

    #[test]
    fn envelope_over_three_days_matches_the_integrated_curve() {
        let duration = 3 * DAY_US;
        let s = run(&envelope(0.05, 2.0 * 86_400.0), 11, duration);
        let expected = s.mean_rate_hint() * 3.0 * 86_400.0;
        let count = usize_f64(s.count());
        assert!(
            (count / expected - 1.0).abs() < 0.01,
            "{count} vs {expected}"
        );
    }

    #[test]
    fn envelope_follows_the_day_night_shape() {
        // m-large's hourly mean peaks around 19:00 (~224 req/s) and bottoms
        // out around 08:00 (~154 req/s).
        let mut per_hour = [0_u32; 24];
        for r in run(&envelope(0.02, 0.0), 3, 7 * DAY_US) {
            per_hour[usize::try_from((r.arrival_us % DAY_US) / HOUR_US).unwrap()] += 1;
        }
        let (peak, trough) = (f64::from(per_hour[19]), f64::from(per_hour[8]));
        assert!(peak > 1.25 * trough, "{per_hour:?}");
    }

    #[test]
    fn envelope_start_seconds_selects_the_point_in_the_curve() {
        // Starting at 08:00 the first hour runs near the trough; at 19:00 near the peak.
        let first_hour = |start: f64| run(&envelope(0.1, start), 5, HOUR_US).count();
        let (trough, peak) = (first_hour(8.0 * 3600.0), first_hour(19.0 * 3600.0));
        assert!(
            usize_f64(peak) > 1.25 * usize_f64(trough),
            "{peak} {trough}"
        );
    }

    #[test]
    fn envelope_resamples_the_trace_token_mix() {
        let trace = bundled_trace(BundledTrace::Code).unwrap();
        let spec = TrafficSpec::Envelope {
            mix: TraceSource::Bundled(BundledTrace::Code),
            curve: CurveSource::Bundled("m-small".into()),
            rate_scale: 1.0,
            start_seconds: 0.0,
        };
        let pairs: std::collections::HashSet<(u32, u32)> =
            trace.rows.iter().map(|r| (r.prompt, r.output)).collect();
        let mut n = 0_u32;
        let mut sum = 0.0;
        for r in run(&spec, 2, 2 * HOUR_US) {
            assert!(pairs.contains(&(r.prompt_tokens, r.output_tokens)), "{r:?}");
            sum += f64::from(r.prompt_tokens);
            n += 1;
            if n == 20_000 {
                break;
            }
        }
        let trace_mean = trace.rows.iter().map(|r| f64::from(r.prompt)).sum::<f64>()
            / usize_f64(trace.rows.len());
        let mean = sum / f64::from(n);
        assert!(
            (mean / trace_mean - 1.0).abs() < 0.03,
            "{mean} vs {trace_mean}"
        );
    }

    #[test]
    fn poisson_mean_rate_is_within_two_percent_and_gaps_have_unit_cv() {
        let duration = 2 * HOUR_US;
        let got: Vec<Request> = run(&poisson(50.0), 9, duration).collect();
        assert_well_ordered(&got, duration);
        let rate = usize_f64(got.len()) / 7_200.0;
        assert!((rate / 50.0 - 1.0).abs() < 0.02, "{rate}");
        let gaps: Vec<f64> = got
            .windows(2)
            .map(|p| i64_f64(p[1].arrival_us - p[0].arrival_us))
            .collect();
        let mean = gaps.iter().sum::<f64>() / usize_f64(gaps.len());
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / usize_f64(gaps.len());
        let cv = var.sqrt() / mean;
        assert!((cv - 1.0).abs() < 0.02, "{cv}");
        assert!(
            got.iter()
                .all(|r| r.prompt_tokens == 100 && r.output_tokens == 10)
        );
    }

    #[test]
    fn burst_window_runs_at_the_burst_rate() {
        let spec = TrafficSpec::Burst {
            base_rate_per_second: 10.0,
            burst_rate_per_second: 100.0,
            burst_start_seconds: 600.0,
            burst_seconds: 300.0,
            prompt_tokens: TokenDist::Fixed(1),
            output_tokens: TokenDist::Fixed(1),
        };
        let s = run(&spec, 4, 1_800_000_000);
        // 10/s for 1500 s plus 100/s for 300 s = 45,000 requests over 1800 s.
        assert!((s.mean_rate_hint() - 25.0).abs() < 1e-9);
        let got: Vec<Request> = s.collect();
        assert_well_ordered(&got, 1_800_000_000);
        let count = |from: i64, to: i64| {
            usize_f64(
                got.iter()
                    .filter(|r| (from * 1_000_000..to * 1_000_000).contains(&r.arrival_us))
                    .count(),
            )
        };
        let burst = count(600, 900) / 300.0;
        let before = count(0, 600) / 600.0;
        let after = count(900, 1800) / 900.0;
        assert!((burst / 100.0 - 1.0).abs() < 0.05, "{burst}");
        assert!((before / 10.0 - 1.0).abs() < 0.15, "{before}");
        assert!((after / 10.0 - 1.0).abs() < 0.15, "{after}");
    }

    #[test]
    fn same_seed_gives_identical_requests_and_another_seed_different_ones() {
        let specs = [
            envelope(1.0, 0.0),
            poisson(100.0),
            TrafficSpec::Poisson {
                rate_per_second: 100.0,
                prompt_tokens: TokenDist::Lognormal {
                    median: 500.0,
                    sigma: 1.0,
                },
                output_tokens: TokenDist::Uniform { min: 1, max: 400 },
            },
        ];
        for spec in &specs {
            let a: Vec<Request> = run(spec, 42, DAY_US).take(10_000).collect();
            let b: Vec<Request> = run(spec, 42, DAY_US).take(10_000).collect();
            let c: Vec<Request> = run(spec, 43, DAY_US).take(10_000).collect();
            assert_eq!(a.len(), 10_000);
            assert_eq!(a, b);
            assert_ne!(a, c);
        }
    }

    #[test]
    fn arrivals_are_non_decreasing_and_before_the_duration_for_every_kind() {
        let duration = 900_000_000;
        let specs = [
            envelope(0.5, 12_345.0),
            poisson(30.0),
            replay(BundledTrace::Conversation, 3.0, true),
            TrafficSpec::Burst {
                base_rate_per_second: 1.0,
                burst_rate_per_second: 50.0,
                burst_start_seconds: 0.0,
                burst_seconds: 60.0,
                prompt_tokens: TokenDist::Fixed(1),
                output_tokens: TokenDist::Fixed(1),
            },
        ];
        for spec in &specs {
            let got: Vec<Request> = run(spec, 1, duration).collect();
            assert!(!got.is_empty());
            assert_well_ordered(&got, duration);
        }
    }

    #[test]
    fn zero_duration_or_zero_rate_yields_nothing() {
        assert_eq!(run(&poisson(100.0), 1, 0).count(), 0);
        assert_eq!(run(&poisson(0.0), 1, DAY_US).count(), 0);
        assert_eq!(
            run(&replay(BundledTrace::Code, 1.0, true), 1, -5).count(),
            0
        );
    }

    #[test]
    fn token_distributions_respect_their_bounds_and_median() {
        let spec = TrafficSpec::Poisson {
            rate_per_second: 1000.0,
            prompt_tokens: TokenDist::Uniform { min: 10, max: 20 },
            output_tokens: TokenDist::Lognormal {
                median: 200.0,
                sigma: 0.8,
            },
        };
        let got: Vec<Request> = run(&spec, 8, DAY_US).take(20_001).collect();
        assert!(got.iter().all(|r| (10..=20).contains(&r.prompt_tokens)));
        assert!((10..=20).all(|v| got.iter().any(|r| r.prompt_tokens == v)));
        let mut outputs: Vec<u32> = got.iter().map(|r| r.output_tokens).collect();
        outputs.sort_unstable();
        let median = f64::from(outputs[10_000]);
        assert!((median / 200.0 - 1.0).abs() < 0.05, "{median}");
        assert!(outputs[0] >= 1);
    }

    /// The published constants close a ziggurat (`x` decreasing to 0, `f`
    /// the density at `x`): the top layer has area `v` too.
    fn assert_closed_ziggurat(x: &[f64], f: &[f64], v: f64) {
        let layers = x.len() - 1;
        let top = x[layers - 1];
        assert!(
            (top * (1.0 - f[layers - 1]) / v - 1.0).abs() < 1e-6,
            "{top}"
        );
        assert!(x.windows(2).all(|p| p[0] > p[1]));
    }

    /// Mean, second moment and the share of draws meeting each of `events`
    /// over a million draws.
    fn sample_stats(
        mut draw: impl FnMut() -> f64,
        events: [fn(f64) -> bool; 3],
    ) -> (f64, f64, [f64; 3]) {
        let n = 1_000_000_u32;
        let (mut sum, mut sq, mut hits) = (0.0, 0.0, [0_u32; 3]);
        for _ in 0..n {
            let v = draw();
            sum += v;
            sq += v * v;
            for (h, e) in hits.iter_mut().zip(events) {
                *h += u32::from(e(v));
            }
        }
        let n = f64::from(n);
        (sum / n, sq / n, hits.map(|h| f64::from(h) / n))
    }

    #[test]
    fn ziggurat_exponentials_match_the_unit_exponential() {
        let tables = exp_ziggurat();
        assert_closed_ziggurat(&tables.x, &tables.f, EXP_V);
        let mut rng = Pcg64Mcg::seed_from_u64(6);
        let (mean, second, [below_half, beyond_three, in_tail]) = sample_stats(
            || {
                let e = unit_exponential(&mut rng);
                assert!(e >= 0.0 && e.is_finite());
                e
            },
            [|e| e < 0.5, |e| e > 3.0, |e| e > EXP_R],
        );
        // Mean 1, second moment 2; P(E < 0.5) = 0.3935; P(E > 3) = 0.0498;
        // P(E > 7.697) = 0.000454.
        assert!((mean - 1.0).abs() < 0.005);
        assert!((second - 2.0).abs() < 0.02);
        assert!((below_half - 0.393_5).abs() < 0.002);
        assert!((beyond_three - 0.049_8).abs() < 0.001);
        assert!((in_tail - 0.000_454).abs() < 0.000_1);
    }

    #[test]
    fn ziggurat_normals_match_the_standard_normal() {
        let tables = ziggurat();
        assert_closed_ziggurat(&tables.x, &tables.f, ZIG_V);
        let mut rng = Pcg64Mcg::seed_from_u64(5);
        let (mean, second, [below_half, beyond_two, in_tail]) = sample_stats(
            || standard_normal(&mut rng, tables),
            [|z| z < 0.5, |z| z.abs() > 2.0, |z| z.abs() > ZIG_R],
        );
        assert!(mean.abs() < 0.005);
        assert!((second - 1.0).abs() < 0.01);
        // Phi(0.5) = 0.6915; P(|Z| > 2) = 0.0455; P(|Z| > 3.4426) = 0.000576.
        assert!((below_half - 0.6915).abs() < 0.002);
        assert!((beyond_two - 0.0455).abs() < 0.001);
        assert!((in_tail - 0.000_576).abs() < 0.000_1);
    }

    #[test]
    fn invalid_numbers_are_rejected_with_the_field_name() {
        let err = stream(&replay(BundledTrace::Code, 0.0, false), 1, DAY_US, here()).unwrap_err();
        assert!(err.to_string().starts_with("rateScale: must be"), "{err}");
        let spec = TrafficSpec::Poisson {
            rate_per_second: 1.0,
            prompt_tokens: TokenDist::Uniform { min: 5, max: 4 },
            output_tokens: TokenDist::Fixed(1),
        };
        let err = stream(&spec, 1, DAY_US, here()).unwrap_err();
        assert!(
            err.to_string().starts_with("promptTokens: uniform needs"),
            "{err}"
        );
    }

    #[test]
    fn unknown_curve_error_lists_the_bundled_curves() {
        let err = stream(
            &TrafficSpec::Envelope {
                mix: TraceSource::Bundled(BundledTrace::Code),
                curve: CurveSource::Bundled("m-huge".into()),
                rate_scale: 1.0,
                start_seconds: 0.0,
            },
            1,
            DAY_US,
            here(),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "no bundled rate curve `m-huge`; bundled curves: m-large, m-mid, m-small, mm-image, deepseek-r1"
        );
        assert_eq!(
            bundled_curve_models(),
            ["m-large", "m-mid", "m-small", "mm-image", "deepseek-r1"]
        );
    }

    #[test]
    fn bundled_curves_cover_fourteen_days_or_one() {
        for c in bundled_curves().unwrap() {
            let days = c.curve.period_us / 86_400e6;
            let expected = if c.category == "language" { 14.0 } else { 1.0 };
            assert!((days - expected).abs() < 1e-9, "{} {days}", c.model);
        }
    }

    #[test]
    fn curve_file_with_named_columns_drives_an_envelope() {
        let dir = TempDir::new("curve");
        // 10 req/s for the first minute, 0 for the second; repeats.
        dir.write("curve.csv", "minute_start,rps\n0,10\n60,0\n");
        let curve = CurveSource::File {
            path: "curve.csv".into(),
            time_column: "minute_start".into(),
            rate_column: "rps".into(),
        };
        assert!((curve_mean_rate(&curve, &dir.0).unwrap() - 5.0).abs() < 1e-12);
        let spec = TrafficSpec::Envelope {
            mix: TraceSource::Bundled(BundledTrace::Code),
            curve,
            rate_scale: 1.0,
            start_seconds: 0.0,
        };
        let got: Vec<Request> = stream(&spec, 1, 3_600_000_000, &dir.0).unwrap().collect();
        assert!(got.iter().all(|r| (r.arrival_us / 60_000_000) % 2 == 0));
        assert!(
            (usize_f64(got.len()) / 18_000.0 - 1.0).abs() < 0.05,
            "{}",
            got.len()
        );
        dir.write("zero.csv", "t_seconds,rate\n0,0\n60,0\n");
        let zero = TrafficSpec::Envelope {
            mix: TraceSource::Bundled(BundledTrace::Code),
            curve: CurveSource::File {
                path: "zero.csv".into(),
                time_column: "t_seconds".into(),
                rate_column: "rate".into(),
            },
            rate_scale: 1.0,
            start_seconds: 0.0,
        };
        assert_eq!(stream(&zero, 1, 365 * DAY_US, &dir.0).unwrap().count(), 0);
        dir.write("bad.csv", "t_seconds,rate\n0,1\n60,2\n60,3\n");
        let bad = CurveSource::File {
            path: "bad.csv".into(),
            time_column: "t_seconds".into(),
            rate_column: "rate".into(),
        };
        let err = curve_mean_rate(&bad, &dir.0).unwrap_err().to_string();
        assert!(
            err.ends_with("bad.csv:4: column `t_seconds`: times must increase, but 60 follows 60"),
            "{err}"
        );
    }

    fn custom_file_spec(path: &str, format: FileFormat, unit: TimestampUnit) -> TrafficSpec {
        TrafficSpec::File {
            path: path.into(),
            format,
            columns: ColumnMap {
                timestamp: "ts".into(),
                prompt_tokens: "in".into(),
                output_tokens: "out".into(),
            },
            timestamp_unit: unit,
            rate_scale: 1.0,
            repeat: false,
        }
    }

    #[test]
    fn csv_file_with_custom_columns_loads_sorted_from_time_zero() {
        let dir = TempDir::new("csv");
        dir.write(
            "trace.csv",
            "id,\"ts\",in,out,note\n1,100.5,10,20,\"a, b\"\n2,100.0,11,21,x\r\n\n3,102.25,12,22,y\n",
        );
        let got: Vec<Request> = stream(
            &custom_file_spec("trace.csv", FileFormat::Csv, TimestampUnit::Seconds),
            1,
            DAY_US,
            &dir.0,
        )
        .unwrap()
        .collect();
        assert_eq!(
            got,
            [
                Request {
                    arrival_us: 0,
                    prompt_tokens: 11,
                    output_tokens: 21
                },
                Request {
                    arrival_us: 500_000,
                    prompt_tokens: 10,
                    output_tokens: 20
                },
                Request {
                    arrival_us: 2_250_000,
                    prompt_tokens: 12,
                    output_tokens: 22
                },
            ]
        );
    }

    #[test]
    fn jsonl_file_with_custom_fields_and_datetimes_loads() {
        let dir = TempDir::new("jsonl");
        dir.write(
            "trace.jsonl",
            concat!(
                "{\"ts\": \"2024-03-01T12:00:00Z\", \"in\": 5, \"out\": 6}\n",
                "\n",
                "{\"ts\": \"2024-03-01T13:00:00.250+01:00\", \"in\": \"7\", \"out\": 8, \"extra\": true}\n",
                "{\"ts\": \"2024-03-01 12:00:01.5\", \"in\": 9, \"out\": 10.0}\n",
            ),
        );
        let got: Vec<Request> = stream(
            &custom_file_spec("trace.jsonl", FileFormat::Jsonl, TimestampUnit::Datetime),
            1,
            DAY_US,
            &dir.0,
        )
        .unwrap()
        .collect();
        let arrivals: Vec<i64> = got.iter().map(|r| r.arrival_us).collect();
        assert_eq!(arrivals, [0, 250_000, 1_500_000]);
        assert_eq!(got[1].prompt_tokens, 7);
        assert_eq!(got[2].output_tokens, 10);
    }

    #[test]
    fn malformed_csv_line_is_reported_with_file_line_and_column() {
        let dir = TempDir::new("bad-csv");
        dir.write("trace.csv", "ts,in,out\n1,10,20\n2,ten,20\n");
        let err = stream(
            &custom_file_spec("trace.csv", FileFormat::Csv, TimestampUnit::Milliseconds),
            1,
            DAY_US,
            &dir.0,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.ends_with("trace.csv:3: column `in`: `ten` is not a token count"),
            "{err}"
        );
        dir.write("short.csv", "ts,in,out\n1,10\n");
        let err = stream(
            &custom_file_spec("short.csv", FileFormat::Csv, TimestampUnit::Microseconds),
            1,
            DAY_US,
            &dir.0,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("short.csv:2: column `out`"), "{err}");
        dir.write("header.csv", "time,in,out\n1,10,20\n");
        let err = stream(
            &custom_file_spec("header.csv", FileFormat::Csv, TimestampUnit::Seconds),
            1,
            DAY_US,
            &dir.0,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.ends_with("header.csv: no column `ts` in the header; columns: time, in, out"),
            "{err}"
        );
    }

    #[test]
    fn malformed_jsonl_line_is_reported_with_its_line_number() {
        let dir = TempDir::new("bad-jsonl");
        dir.write(
            "trace.jsonl",
            "{\"ts\": 1, \"in\": 1, \"out\": 1}\n\n{\"ts\": 2, \"in\": 1,\n",
        );
        let err = stream(
            &custom_file_spec("trace.jsonl", FileFormat::Jsonl, TimestampUnit::Seconds),
            1,
            DAY_US,
            &dir.0,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("trace.jsonl:3: not JSON"), "{err}");
        dir.write("missing.jsonl", "{\"ts\": 1, \"in\": 1}\n");
        let err = stream(
            &custom_file_spec("missing.jsonl", FileFormat::Jsonl, TimestampUnit::Seconds),
            1,
            DAY_US,
            &dir.0,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.ends_with("missing.jsonl:1: column `out`: missing"),
            "{err}"
        );
    }

    #[test]
    fn missing_file_is_reported_with_its_resolved_path() {
        let err = stream(
            &TrafficSpec::Trace {
                source: TraceSource::File {
                    path: "nope.csv".into(),
                },
                rate_scale: 1.0,
                repeat: false,
            },
            1,
            DAY_US,
            Path::new("/nonexistent-dir"),
        )
        .unwrap_err();
        assert!(
            matches!(&err, TrafficError::Io { path, .. } if path == Path::new("/nonexistent-dir/nope.csv")),
            "{err}"
        );
    }

    #[test]
    fn azure_format_file_replays_like_the_bundled_trace() {
        let dir = TempDir::new("azure");
        let head: Vec<&str> = AZURE_CODE_CSV.lines().take(101).collect();
        dir.write("azure.csv", &head.join("\n"));
        let spec = TrafficSpec::Trace {
            source: TraceSource::File {
                path: "azure.csv".into(),
            },
            rate_scale: 1.0,
            repeat: false,
        };
        let from_file: Vec<Request> = stream(&spec, 1, DAY_US, &dir.0).unwrap().collect();
        let bundled: Vec<Request> = run(&replay(BundledTrace::Code, 1.0, false), 1, DAY_US)
            .take(100)
            .collect();
        assert_eq!(from_file, bundled);
    }

    #[test]
    fn datetimes_parse_in_azure_and_rfc3339_forms() {
        let azure = parse_datetime_us("2023-11-16 18:17:03.9799600").unwrap();
        let rfc = parse_datetime_us("2023-11-16T19:17:03.979960+01:00").unwrap();
        let compact = parse_datetime_us("2023-11-16T17:17:03.97996-0100").unwrap();
        assert_eq!(azure, rfc);
        assert_eq!(azure, compact);
        assert_eq!(parse_datetime_us("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_datetime_us("2000-03-01 00:00:00"),
            Some(951_868_800_000_000)
        );
        for bad in [
            "2023-02-29 00:00:00",
            "2023-11-16",
            "2023-11-16 25:00:00",
            "2023-11-16T10:00:00.",
            "2023-11-16T10:00:00+1",
        ] {
            assert_eq!(parse_datetime_us(bad), None, "{bad}");
        }
    }

    #[test]
    fn yaml_decodes_trace_and_envelope() {
        let t: TrafficSpec = serde_saphyr::from_str(
            "kind: trace\nsource: conversation\nrateScale: 2\nrepeat: true\n",
        )
        .unwrap();
        assert_eq!(t, replay(BundledTrace::Conversation, 2.0, true));
        let t: TrafficSpec =
            serde_saphyr::from_str("kind: trace\nsource: { path: traces/mine.csv }\n").unwrap();
        assert_eq!(
            t,
            TrafficSpec::Trace {
                source: TraceSource::File {
                    path: "traces/mine.csv".into()
                },
                rate_scale: 1.0,
                repeat: false
            }
        );
        let e: TrafficSpec = serde_saphyr::from_str(
            "kind: envelope\nmix: code\ncurve: m-large\nrateScale: 0.5\nstartSeconds: 86400\n",
        )
        .unwrap();
        assert_eq!(
            e,
            TrafficSpec::Envelope {
                mix: TraceSource::Bundled(BundledTrace::Code),
                curve: CurveSource::Bundled("m-large".into()),
                rate_scale: 0.5,
                start_seconds: 86_400.0
            }
        );
        let e: TrafficSpec = serde_saphyr::from_str(
            "kind: envelope\nmix: conv\ncurve: { path: c.csv, rateColumn: rps }\n",
        )
        .unwrap();
        assert_eq!(
            e,
            TrafficSpec::Envelope {
                mix: TraceSource::Bundled(BundledTrace::Conversation),
                curve: CurveSource::File {
                    path: "c.csv".into(),
                    time_column: "t_seconds".into(),
                    rate_column: "rps".into()
                },
                rate_scale: 1.0,
                start_seconds: 0.0
            }
        );
    }

    #[test]
    fn yaml_decodes_poisson_burst_and_file() {
        let p: TrafficSpec = serde_saphyr::from_str(
            "kind: poisson\nratePerSecond: 20\npromptTokens: { kind: lognormal, median: 1000, sigma: 1.0 }\noutputTokens: 200\n",
        )
        .unwrap();
        assert_eq!(
            p,
            TrafficSpec::Poisson {
                rate_per_second: 20.0,
                prompt_tokens: TokenDist::Lognormal {
                    median: 1000.0,
                    sigma: 1.0
                },
                output_tokens: TokenDist::Fixed(200)
            }
        );
        let b: TrafficSpec = serde_saphyr::from_str(
            "kind: burst\nbaseRatePerSecond: 10\nburstRatePerSecond: 80\nburstStartSeconds: 600\nburstSeconds: 120\npromptTokens: { kind: uniform, min: 100, max: 2000 }\noutputTokens: { kind: fixed, value: 64 }\n",
        )
        .unwrap();
        assert_eq!(
            b,
            TrafficSpec::Burst {
                base_rate_per_second: 10.0,
                burst_rate_per_second: 80.0,
                burst_start_seconds: 600.0,
                burst_seconds: 120.0,
                prompt_tokens: TokenDist::Uniform {
                    min: 100,
                    max: 2000
                },
                output_tokens: TokenDist::Fixed(64)
            }
        );
        let f: TrafficSpec = serde_saphyr::from_str(
            "kind: file\npath: my.jsonl\nformat: jsonl\ncolumns: { timestamp: ts, promptTokens: in }\ntimestampUnit: milliseconds\nrepeat: true\n",
        )
        .unwrap();
        assert_eq!(
            f,
            TrafficSpec::File {
                path: "my.jsonl".into(),
                format: FileFormat::Jsonl,
                columns: ColumnMap {
                    timestamp: "ts".into(),
                    prompt_tokens: "in".into(),
                    output_tokens: "output_tokens".into()
                },
                timestamp_unit: TimestampUnit::Milliseconds,
                rate_scale: 1.0,
                repeat: true
            }
        );
    }

    #[test]
    fn yaml_rejects_unknown_fields_and_names() {
        let err = serde_saphyr::from_str::<TrafficSpec>("kind: trace\nsource: code\nrate: 2\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("rate"), "{err}");
        let err = serde_saphyr::from_str::<TrafficSpec>("kind: trace\nsource: chat\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("chat"), "{err}");
        assert!(
            serde_saphyr::from_str::<TrafficSpec>("kind: trace\nsource: { path: a.csv, sep: x }\n")
                .is_err()
        );
        assert!(serde_saphyr::from_str::<TrafficSpec>(
            "kind: poisson\nratePerSecond: 1\npromptTokens: { kind: normal, mean: 5 }\noutputTokens: 1\n"
        )
        .is_err());
        assert!(
            serde_saphyr::from_str::<TrafficSpec>(
                "kind: file\npath: a.csv\nformat: csv\ncolumns: { time: t }\n"
            )
            .is_err()
        );
        assert!(serde_saphyr::from_str::<TrafficSpec>("kind: replay\nsource: code\n").is_err());
    }

    #[test]
    fn specs_round_trip_through_yaml() {
        let specs = [
            replay(BundledTrace::Code, 1.5, true),
            envelope(0.25, 3600.0),
            TrafficSpec::Poisson {
                rate_per_second: 3.0,
                prompt_tokens: TokenDist::Uniform { min: 1, max: 9 },
                output_tokens: TokenDist::Fixed(4),
            },
            custom_file_spec("x.csv", FileFormat::Csv, TimestampUnit::Datetime),
        ];
        for spec in specs {
            let yaml = serde_saphyr::to_string(&spec).unwrap();
            let back: TrafficSpec = serde_saphyr::from_str(&yaml).unwrap();
            assert_eq!(back, spec, "{yaml}");
        }
    }

    /// Generation speed; run with
    /// `cargo test --release -p spillway-sim --lib -- --ignored --nocapture generation_speed`.
    #[test]
    #[ignore = "timing, release builds only"]
    fn generation_speed() {
        for (name, spec) in [
            ("envelope", envelope(1.0, 0.0)),
            ("poisson", poisson(200.0)),
            (
                "poisson-lognormal",
                TrafficSpec::Poisson {
                    rate_per_second: 200.0,
                    prompt_tokens: TokenDist::Lognormal {
                        median: 1000.0,
                        sigma: 1.0,
                    },
                    output_tokens: TokenDist::Lognormal {
                        median: 200.0,
                        sigma: 1.0,
                    },
                },
            ),
            (
                "trace-repeat",
                replay(BundledTrace::Conversation, 40.0, true),
            ),
        ] {
            let s = run(&spec, 1, 14 * DAY_US);
            let start = std::time::Instant::now();
            let mut n = 0_u64;
            let mut checksum = 0_i64;
            for r in s.take(100_000_000) {
                n += 1;
                checksum = checksum.wrapping_add(r.arrival_us ^ i64::from(r.prompt_tokens));
            }
            let secs = start.elapsed().as_secs_f64();
            #[allow(clippy::cast_precision_loss)]
            let rate = n as f64 / secs / 1e6;
            println!(
                "{name}: {n} requests in {secs:.2} s = {rate:.1} M requests/s (checksum {checksum})"
            );
        }
    }
}
