//! Performance profiles: a service-time model measured on the user's own
//! model, engine and GPUs, read from a file or written inline in the scenario.
//!
//! ```yaml
//! perf: { kind: profile, file: profiles/llama3-8b-l4.json }
//! perf:
//!   kind: profile
//!   file: profiles/llama3-8b-l4.csv      # tables only; parameters below
//!   overheadMs: 4
//!   chunkedPrefill: true
//!   tokenBudget: 2048
//! ```
//!
//! ## What a profile holds
//!
//! - `prefill`: the time to process one prompt of `promptTokens` tokens alone
//!   (no other request running), in ms: what a single request's time to first
//!   token is on an idle replica.
//! - `decode`: the time of one decode iteration that produces one token for
//!   each of `batch` running requests, in ms; optionally at a given
//!   `contextTokens` (the mean context, prompt plus generated tokens, of the
//!   running requests). Either every decode point gives `contextTokens` or
//!   none does.
//! - `overheadMs`: the part of every iteration that does not depend on its
//!   work (scheduling, sampling, kernel launches). It is included in every
//!   measured time above; it is used to avoid charging it twice when a prompt
//!   chunk shares an iteration with the decode batch, and as the prefill time
//!   of an empty prompt. Default 0.
//! - `chunkedPrefill` and `tokenBudget` (vLLM's `enable_chunked_prefill` and
//!   `max_num_batched_tokens`): with chunked prefill, an iteration carries at
//!   most `tokenBudget` tokens: one per running request, the rest from the
//!   prompt being prefilled, which therefore takes several iterations when it
//!   is long, while the running requests keep decoding. Without it, a prefill
//!   runs alone and pauses the batch; `tokenBudget` is then only recorded.
//! - `maxBatch` (vLLM's `max_num_seqs`): requests a replica runs at once,
//!   used when the service does not set `maxBatch` itself.
//!
//! ## Files
//!
//! JSON (`.json`, what `spillway-sim profile` writes): the fields above,
//! camelCase, with `prefill: [{promptTokens, ms}]` and
//! `decode: [{batch, contextTokens?, ms}]`.
//!
//! CSV (`.csv`): the two tables, one measurement per row, `#` comments:
//!
//! ```text
//! phase,prompt_tokens,batch,context_tokens,ms
//! prefill,512,,,41.8
//! decode,,16,,13.9
//! ```
//!
//! The parameters (`overheadMs`, `chunkedPrefill`, `tokenBudget`, `maxBatch`)
//! then come from the scenario's `perf:` section, which may also override
//! those of a JSON file. Tables come from the file or from the scenario,
//! never both.
//!
//! Interpolation rules are [`crate::perf::PerfModel`]'s.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// One prefill measurement.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrefillPoint {
    /// Prompt length, tokens.
    pub prompt_tokens: u32,
    /// Time to process the prompt alone, ms.
    pub ms: f64,
}

/// One decode-iteration measurement.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DecodePoint {
    /// Running requests in the iteration.
    pub batch: u32,
    /// Mean context (prompt + generated tokens) of the running requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_tokens: Option<u32>,
    /// Iteration time, ms.
    pub ms: f64,
}

/// The scenario's `perf: {kind: profile, ...}` section, and the content of a
/// JSON profile file (which has no `file`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileSpec {
    /// A profile file, JSON or CSV by its extension, relative to the scenario.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Where the profile came from (free text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Fixed per-iteration overhead, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overhead_ms: Option<f64>,
    /// Whether long prompts are prefilled in chunks alongside decoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunked_prefill: Option<bool>,
    /// Tokens per iteration (decode tokens plus prompt chunk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_budget: Option<u32>,
    /// Requests a replica runs at once (when the service sets no `maxBatch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch: Option<u32>,
    /// Prefill measurements.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefill: Vec<PrefillPoint>,
    /// Decode-iteration measurements.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decode: Vec<DecodePoint>,
}

/// A profile with its file read and every rule checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// Fixed per-iteration overhead, µs.
    pub overhead_us: f64,
    /// `Some(tokenBudget)` when prompts are prefilled in chunks.
    pub chunk_budget: Option<u32>,
    /// The profile's own batch limit.
    pub max_batch: Option<u32>,
    /// Prefill measurements (prompt tokens, µs), as given.
    pub prefill: Vec<(f64, f64)>,
    /// Decode measurements (batch, context tokens or none, µs), as given.
    pub decode: Vec<(f64, Option<f64>, f64)>,
}

/// Why a profile cannot be used; the message names the file, row or field.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProfileError(pub String);

fn err(message: impl Into<String>) -> ProfileError {
    ProfileError(message.into())
}

/// One CSV row.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CsvRow {
    phase: String,
    prompt_tokens: Option<u32>,
    batch: Option<u32>,
    context_tokens: Option<u32>,
    ms: f64,
}

/// Parses a CSV profile (tables only).
///
/// # Errors
/// A message naming the row (1-based, header included) and the column.
pub fn parse_csv(text: &str) -> Result<ProfileSpec, ProfileError> {
    let text = crate::csv_text::CsvText::new(text, Some('#'));
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| err(format!("header: {e}")))?
        .clone();
    for want in ["phase", "ms"] {
        if !headers.iter().any(|h| h == want) {
            return Err(err(format!(
                "header: no `{want}` column (expected phase,prompt_tokens,batch,context_tokens,ms)"
            )));
        }
    }
    let mut spec = ProfileSpec::default();
    for record in reader.records() {
        let record = record.map_err(|e| err(format!("line {}: {e}", text.error_line(&e))))?;
        let line = text.record_line(&record);
        let row: CsvRow = record
            .deserialize(Some(&headers))
            .map_err(|e| err(format!("line {line}: {e}")))?;
        match row.phase.as_str() {
            "prefill" => {
                let Some(prompt_tokens) = row.prompt_tokens else {
                    return Err(err(format!(
                        "line {line}: a prefill row needs prompt_tokens"
                    )));
                };
                if row.batch.is_some_and(|b| b != 1) || row.context_tokens.is_some() {
                    return Err(err(format!(
                        "line {line}: a prefill row is one prompt alone: leave batch (or 1) and context_tokens empty"
                    )));
                }
                spec.prefill.push(PrefillPoint {
                    prompt_tokens,
                    ms: row.ms,
                });
            }
            "decode" => {
                let Some(batch) = row.batch else {
                    return Err(err(format!("line {line}: a decode row needs batch")));
                };
                if row.prompt_tokens.is_some() {
                    return Err(err(format!(
                        "line {line}: a decode row has no prompt_tokens (use context_tokens)"
                    )));
                }
                spec.decode.push(DecodePoint {
                    batch,
                    context_tokens: row.context_tokens,
                    ms: row.ms,
                });
            }
            other => {
                return Err(err(format!(
                    "line {line}: phase `{other}`: expected `prefill` or `decode`"
                )));
            }
        }
    }
    Ok(spec)
}

/// Reads a profile file: JSON or CSV by extension.
///
/// # Errors
/// A message naming the file and what is wrong in it.
pub fn read_file(path: &Path) -> Result<ProfileSpec, ProfileError> {
    let name = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("{name}: {e}")))?;
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => {
            let spec: ProfileSpec =
                serde_json::from_str(&text).map_err(|e| err(format!("{name}: {e}")))?;
            if spec.file.is_some() {
                return Err(err(format!(
                    "{name}: a profile file cannot name another `file`"
                )));
            }
            Ok(spec)
        }
        Some("csv") => parse_csv(&text).map_err(|e| err(format!("{name}: {}", e.0))),
        _ => Err(err(format!("{name}: a profile file is .json or .csv"))),
    }
}

impl ProfileSpec {
    /// Reads the file (relative to `base_dir`) if one is named, merges the
    /// scenario's parameters over it, and checks every rule.
    ///
    /// # Errors
    /// A message naming the file or the field.
    pub fn resolve(&self, base_dir: &Path) -> Result<Profile, ProfileError> {
        let merged = match &self.file {
            None => self.clone(),
            Some(file) => {
                if !self.prefill.is_empty() || !self.decode.is_empty() {
                    return Err(err(
                        "give the prefill and decode tables in `file` or inline, not both",
                    ));
                }
                let from_file = read_file(&base_dir.join(file))?;
                ProfileSpec {
                    file: None,
                    description: self.description.clone().or(from_file.description),
                    overhead_ms: self.overhead_ms.or(from_file.overhead_ms),
                    chunked_prefill: self.chunked_prefill.or(from_file.chunked_prefill),
                    token_budget: self.token_budget.or(from_file.token_budget),
                    max_batch: self.max_batch.or(from_file.max_batch),
                    prefill: from_file.prefill,
                    decode: from_file.decode,
                }
            }
        };
        merged.check()
    }

    fn check(&self) -> Result<Profile, ProfileError> {
        let positive = |field: String, ms: f64| {
            if ms.is_finite() && ms > 0.0 {
                Ok(ms * 1000.0)
            } else {
                Err(err(format!("{field}: must be a time > 0 ms, got {ms}")))
            }
        };
        if self.prefill.is_empty() {
            return Err(err("prefill: at least one measurement is required"));
        }
        if self.decode.is_empty() {
            return Err(err("decode: at least one measurement is required"));
        }
        let mut prefill = Vec::new();
        for (i, p) in self.prefill.iter().enumerate() {
            if p.prompt_tokens == 0 {
                return Err(err(format!(
                    "prefill[{i}].promptTokens: must be at least 1"
                )));
            }
            prefill.push((
                f64::from(p.prompt_tokens),
                positive(format!("prefill[{i}].ms"), p.ms)?,
            ));
        }
        let with_context = self.decode[0].context_tokens.is_some();
        let mut decode = Vec::new();
        for (i, d) in self.decode.iter().enumerate() {
            if d.batch == 0 {
                return Err(err(format!("decode[{i}].batch: must be at least 1")));
            }
            if d.context_tokens.is_some() != with_context {
                return Err(err(format!(
                    "decode[{i}].contextTokens: give it on every decode measurement or on none"
                )));
            }
            decode.push((
                f64::from(d.batch),
                d.context_tokens.map(f64::from),
                positive(format!("decode[{i}].ms"), d.ms)?,
            ));
        }
        let overhead = self.overhead_ms.unwrap_or(0.0);
        if !overhead.is_finite() || overhead < 0.0 {
            return Err(err(format!("overheadMs: must be >= 0, got {overhead}")));
        }
        let overhead_us = overhead * 1000.0;
        let smallest = prefill
            .iter()
            .map(|p| p.1)
            .chain(decode.iter().map(|d| d.2))
            .fold(f64::INFINITY, f64::min);
        if overhead_us > smallest {
            return Err(err(format!(
                "overheadMs: {overhead} is more than the smallest measured time ({} ms); every measured iteration includes it",
                smallest / 1000.0
            )));
        }
        if self.max_batch == Some(0) {
            return Err(err("maxBatch: must be at least 1"));
        }
        let chunk_budget = match (self.chunked_prefill.unwrap_or(false), self.token_budget) {
            (true, None) => {
                return Err(err(
                    "tokenBudget: required with chunkedPrefill: true (vLLM's max_num_batched_tokens)",
                ));
            }
            (_, Some(0)) => return Err(err("tokenBudget: must be at least 1")),
            (true, Some(b)) => Some(b),
            (false, _) => None,
        };
        Ok(Profile {
            overhead_us,
            chunk_budget,
            max_batch: self.max_batch,
            prefill,
            decode,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "# measured by hand\nphase,prompt_tokens,batch,context_tokens,ms\n\
prefill,128,,,12.5\nprefill,1024,1,,60\ndecode,,1,,10\ndecode,,16,,14.5\n";

    #[test]
    fn csv_rows_become_tables() {
        let spec = parse_csv(CSV).unwrap();
        assert_eq!(
            spec.prefill,
            vec![
                PrefillPoint {
                    prompt_tokens: 128,
                    ms: 12.5
                },
                PrefillPoint {
                    prompt_tokens: 1024,
                    ms: 60.0
                }
            ]
        );
        assert_eq!(spec.decode.len(), 2);
        assert_eq!(spec.decode[1].batch, 16);
        assert_eq!(spec.decode[1].context_tokens, None);
        let p = spec.check().unwrap();
        assert_eq!(p.prefill, vec![(128.0, 12_500.0), (1024.0, 60_000.0)]);
        assert_eq!(p.decode[1], (16.0, None, 14_500.0));
    }

    #[test]
    fn csv_errors_name_the_line() {
        let bad = "phase,prompt_tokens,batch,context_tokens,ms\nprefill,128,,,12\nwarmup,,1,,3\n";
        let e = parse_csv(bad).unwrap_err().0;
        assert!(e.contains("line 3") && e.contains("warmup"), "{e}");
        let bad = "phase,prompt_tokens,batch,context_tokens,ms\ndecode,,,,3\n";
        assert!(parse_csv(bad).unwrap_err().0.contains("needs batch"));
        let bad = "phase,prompt_tokens,batch,context_tokens,ms\ndecode,,2,,fast\n";
        let e = parse_csv(bad).unwrap_err().0;
        assert!(e.contains("line 2"), "{e}");
        assert!(parse_csv("stage,ms\n").unwrap_err().0.contains("phase"));
        // A row after a blank line and a comment is blamed on its own line.
        let bad = "phase,prompt_tokens,batch,context_tokens,ms\n\n# x\ndecode,,2,,fast\n";
        let e = parse_csv(bad).unwrap_err().0;
        assert!(e.contains("line 4"), "{e}");
        // A byte-order mark (spreadsheets write one) is not part of `phase`.
        assert!(
            parse_csv("\u{feff}phase,prompt_tokens,batch,context_tokens,ms\nprefill,8,,,1\n")
                .is_ok()
        );
    }

    #[test]
    fn rules_name_the_field() {
        let base = parse_csv(CSV).unwrap();
        let mut s = base.clone();
        s.prefill[1].ms = -1.0;
        assert!(s.check().unwrap_err().0.contains("prefill[1].ms"));
        let mut s = base.clone();
        s.decode[0].context_tokens = Some(512);
        assert!(s.check().unwrap_err().0.contains("decode[1].contextTokens"));
        let mut s = base.clone();
        s.chunked_prefill = Some(true);
        assert!(s.check().unwrap_err().0.contains("tokenBudget"));
        let mut s = base.clone();
        s.overhead_ms = Some(11.0);
        assert!(s.check().unwrap_err().0.contains("overheadMs"));
        let mut s = base.clone();
        s.decode.clear();
        assert!(s.check().unwrap_err().0.contains("decode"));
        let mut s = base;
        s.prefill[0].prompt_tokens = 0;
        assert!(s.check().unwrap_err().0.contains("prefill[0].promptTokens"));
    }

    #[test]
    fn a_file_and_inline_tables_are_exclusive_and_parameters_override() {
        let dir = tempfile_dir();
        std::fs::write(dir.join("p.csv"), CSV).unwrap();
        let json = r#"{"overheadMs": 2, "maxBatch": 48, "chunkedPrefill": true, "tokenBudget": 512,
            "prefill": [{"promptTokens": 256, "ms": 20}], "decode": [{"batch": 1, "ms": 9}]}"#;
        std::fs::write(dir.join("p.json"), json).unwrap();
        let from_json = ProfileSpec {
            file: Some("p.json".into()),
            max_batch: Some(8),
            ..ProfileSpec::default()
        }
        .resolve(&dir)
        .unwrap();
        assert_eq!(from_json.max_batch, Some(8));
        assert_eq!(from_json.chunk_budget, Some(512));
        assert!((from_json.overhead_us - 2000.0).abs() < 1e-9);
        let both = ProfileSpec {
            file: Some("p.csv".into()),
            prefill: vec![PrefillPoint {
                prompt_tokens: 1,
                ms: 1.0,
            }],
            ..ProfileSpec::default()
        };
        assert!(both.resolve(&dir).unwrap_err().0.contains("not both"));
        let missing = ProfileSpec {
            file: Some("nope.json".into()),
            ..ProfileSpec::default()
        };
        assert!(missing.resolve(&dir).unwrap_err().0.contains("nope.json"));
        let unknown = r#"{"prefill": [{"promptTokens": 1, "ms": 1}], "decode": [{"batch": 1, "ms": 1}], "gpu": "l4"}"#;
        std::fs::write(dir.join("u.json"), unknown).unwrap();
        let e = read_file(&dir.join("u.json")).unwrap_err().0;
        assert!(e.contains("gpu"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "spillway-profile-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
