//! Request traces: the bundled Azure LLM traces and users' CSV or JSONL
//! files (read by the `csv` crate, datetimes by chrono).

#[allow(clippy::wildcard_imports)]
use super::*;

// ---------------------------------------------------------------------------
// Traces
// ---------------------------------------------------------------------------

/// One trace row: arrival relative to the trace's first request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Row {
    pub(super) offset_us: i64,
    pub(super) prompt: u32,
    pub(super) output: u32,
}

/// A parsed trace. Invariants: at least one row; sorted by `offset_us`; the
/// first offset is 0.
pub(super) struct Trace {
    pub(super) rows: Vec<Row>,
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
    pub(super) fn new(mut rows: Vec<(i64, u32, u32)>) -> Result<Self, LoadError> {
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

    pub(super) fn span_us(&self) -> i64 {
        self.rows.last().map_or(0, |r| r.offset_us)
    }

    /// Distance between the starts of consecutive loops of a repeated trace:
    /// the span plus one mean gap (1 s for a single request), at least 1 µs.
    pub(super) fn loop_period_us(&self) -> i64 {
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

pub(super) fn bundled_trace(which: BundledTrace) -> Result<Arc<Trace>, TrafficError> {
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

pub(super) fn azure_columns() -> ColumnMap {
    ColumnMap {
        timestamp: "TIMESTAMP".into(),
        prompt_tokens: "ContextTokens".into(),
        output_tokens: "GeneratedTokens".into(),
    }
}

pub(super) fn resolve(base_dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

pub(super) fn read_file(path: &Path) -> Result<String, TrafficError> {
    std::fs::read_to_string(path).map_err(|source| TrafficError::Io {
        path: path.to_path_buf(),
        source,
    })
}

pub(super) fn load_trace_source(
    source: &TraceSource,
    base_dir: &Path,
) -> Result<Arc<Trace>, TrafficError> {
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

pub(super) fn load_trace_file(
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
pub(super) fn numbered_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
        .filter(|(_, l)| !l.trim().is_empty())
}

/// A CSV file (RFC 4180, read by the `csv` crate): its header's columns and
/// its data rows, each with its 1-based line number. Blank lines are skipped,
/// fields trimmed, a byte-order mark dropped; rows may be shorter than the
/// header (a missing field is reported where it is read).
pub(super) struct CsvRows {
    pub(super) header: Vec<String>,
    pub(super) rows: Vec<CsvRow>,
}

/// A CSV data row and its 1-based line number.
pub(super) type CsvRow = (usize, csv::StringRecord);

impl CsvRows {
    pub(super) fn parse(text: &str) -> Result<Self, LoadError> {
        let text = crate::csv_text::CsvText::new(text, None);
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(text.text.as_bytes());
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
            let record =
                record.map_err(|e| LineError::new(text.error_line(&e), None, e.to_string()))?;
            if record.iter().all(str::is_empty) {
                continue;
            }
            let line = text.record_line(&record);
            rows.push((line, record));
        }
        Ok(Self { header, rows })
    }

    /// The index of each named column.
    pub(super) fn indices<const N: usize>(
        &self,
        names: [&str; N],
    ) -> Result<[usize; N], LoadError> {
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

pub(super) fn csv_field<'a>(
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

pub(super) fn parse_csv_trace(
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

pub(super) fn parse_jsonl_trace(
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

pub(super) fn unit_name(unit: TimestampUnit) -> &'static str {
    match unit {
        TimestampUnit::Seconds => "seconds",
        TimestampUnit::Milliseconds => "milliseconds",
        TimestampUnit::Microseconds => "microseconds",
        TimestampUnit::Datetime => "datetime",
    }
}

pub(super) fn parse_tokens(raw: &str) -> Result<u32, String> {
    let raw = raw.trim();
    raw.parse::<u32>()
        .ok()
        .or_else(|| raw.parse::<f64>().ok().and_then(whole_u32))
        .ok_or_else(|| format!("`{raw}` is not a token count"))
}

/// A timestamp in µs (on an arbitrary origin for numeric units).
pub(super) fn parse_timestamp(raw: &str, unit: TimestampUnit) -> Result<i64, String> {
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
pub(super) fn parse_datetime_us(s: &str) -> Option<i64> {
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
        // `±HH:MM` or `±HHMM`, nothing else (chrono's `%z` would also take
        // spaces).
        let o = offset.as_bytes();
        let shape = match o {
            [b'+' | b'-', h1, h2, b':', m1, m2] | [b'+' | b'-', h1, h2, m1, m2] => {
                [h1, h2, m1, m2].iter().all(|d| d.is_ascii_digit())
            }
            _ => false,
        };
        if !shape {
            return None;
        }
        DateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%.f%z")
            .ok()?
            .timestamp_micros()
    };
    Some(micros)
}
