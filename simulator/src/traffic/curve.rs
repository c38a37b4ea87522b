//! Rate curves: the bundled ServeGen curves and users' CSV curves,
//! piecewise constant per window.

#[allow(clippy::wildcard_imports)]
use super::*;

// ---------------------------------------------------------------------------
// Rate curves
// ---------------------------------------------------------------------------

/// One window of a piecewise-constant rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Window {
    pub(super) len_us: f64,
    pub(super) rate_per_us: f64,
}

/// A rate curve. Invariants: at least one window, every length finite and
/// > 0, every rate finite and >= 0, `period_us` the sum of the lengths.
#[derive(Clone, Debug)]
pub(super) struct Curve {
    pub(super) windows: Arc<[Window]>,
    pub(super) period_us: f64,
}

impl Curve {
    /// From (start seconds, rate per second) rows with strictly increasing
    /// starts and finite rates >= 0; the last window is as long as the one before.
    pub(super) fn from_points(points: &[(f64, f64)]) -> Result<Self, LoadError> {
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
    pub(super) fn mean_rate(&self) -> f64 {
        let count: f64 = self.windows.iter().map(|w| w.len_us * w.rate_per_us).sum();
        count / self.period_us * US_PER_SECOND
    }
}

/// Parses a curve file's `(time, rate)` columns.
pub(super) fn parse_curve_csv(
    text: &str,
    time_column: &str,
    rate_column: &str,
) -> Result<Curve, LoadError> {
    let csv = CsvRows::parse(text)?;
    let columns = csv.indices([time_column, rate_column])?;
    curve_from_rows(csv.rows.iter(), columns, [time_column, rate_column])
}

/// Builds a curve from numbered CSV data lines, checking that times strictly
/// increase and rates are finite and >= 0. `columns` are the indices of the
/// time and rate fields, `names` their names for messages.
pub(super) fn curve_from_rows<'a>(
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
pub(super) struct BundledCurve {
    pub(super) category: String,
    pub(super) model: String,
    pub(super) curve: Curve,
}

pub(super) const SERVEGEN_FILE: &str = "bundled servegen-rate-curve/aggregate_rate_10min.csv";

pub(super) fn bundled_curves() -> Result<&'static [BundledCurve], TrafficError> {
    static CURVES: OnceLock<Result<Vec<BundledCurve>, LoadError>> = OnceLock::new();
    match CURVES.get_or_init(|| parse_servegen(SERVEGEN_CSV)) {
        Ok(curves) => Ok(curves),
        Err(e) => Err(e.clone().in_file(SERVEGEN_FILE)),
    }
}

pub(super) fn parse_servegen(text: &'static str) -> Result<Vec<BundledCurve>, LoadError> {
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

pub(super) fn load_curve(source: &CurveSource, base_dir: &Path) -> Result<Curve, TrafficError> {
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
