//! `spillway-sim plan`: sweep one scenario parameter and find the cheapest
//! setting that meets every service's SLO.
//!
//! ```text
//!  scenario YAML ─► JSON tree ─► set KEY = each value ─► compile ─► run (in parallel) ─► cheapest that meets SLO
//! ```
//!
//! KEY is a dotted path into the scenario; a segment applied to a list picks
//! the element whose `name` matches, or an index: `pools.datacenter.nodes`,
//! `pools.cloud.maxNodes`, `services.qwen.autoscaler.maxReplicas`.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::outcome::Outcome;
use crate::scenario::{self, Compiled, Dur, ScenarioError};

/// A parameter range `A..B[:STEP]` (inclusive).
#[derive(Clone, Debug, PartialEq)]
pub struct Sweep {
    /// Dotted path of the parameter.
    pub key: String,
    /// Values to try, in order.
    pub values: Vec<f64>,
}

/// Parses `KEY=A..B[:STEP]` or `KEY=a,b,c`.
///
/// # Errors
/// A message naming what is malformed.
pub fn parse_sweep(text: &str) -> Result<Sweep, String> {
    let (key, range) = text
        .split_once('=')
        .ok_or_else(|| format!("--vary {text:?}: expected KEY=A..B[:STEP]"))?;
    let num = |s: &str| {
        s.trim()
            .parse::<f64>()
            .map_err(|_| format!("--vary {text:?}: {s:?} is not a number"))
    };
    let values = if let Some((a, rest)) = range.split_once("..") {
        let (b, step) = match rest.split_once(':') {
            Some((b, s)) => (num(b)?, num(s)?),
            None => (num(rest)?, 1.0),
        };
        let a = num(a)?;
        if step <= 0.0 || b < a {
            return Err(format!("--vary {text:?}: need A <= B and STEP > 0"));
        }
        let mut v = Vec::new();
        let mut i = 0.0;
        while a + i * step <= b + 1e-9 {
            v.push(a + i * step);
            i += 1.0;
            if v.len() > 1000 {
                return Err(format!("--vary {text:?}: more than 1000 points"));
            }
        }
        v
    } else {
        range.split(',').map(num).collect::<Result<Vec<_>, _>>()?
    };
    if key.is_empty() || values.is_empty() {
        return Err(format!("--vary {text:?}: expected KEY=A..B[:STEP]"));
    }
    Ok(Sweep {
        key: key.to_owned(),
        values,
    })
}

/// Sets `path` in a JSON tree to `value`.
///
/// # Errors
/// A message naming the segment that does not resolve.
pub fn set_path(root: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let segments: Vec<&str> = path.split('.').collect();
    let mut cur = root;
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        cur = match cur {
            Value::Array(items) => {
                let idx = match seg.parse::<usize>() {
                    Ok(n) if n < items.len() => n,
                    _ => items
                        .iter()
                        .position(|it| it.get("name").and_then(Value::as_str) == Some(seg))
                        .ok_or_else(|| format!("{path}: no element named {seg:?}"))?,
                };
                if last {
                    items[idx] = value;
                    return Ok(());
                }
                &mut items[idx]
            }
            Value::Object(map) => {
                if last {
                    map.insert((*seg).to_owned(), value);
                    return Ok(());
                }
                map.entry((*seg).to_owned())
                    .or_insert_with(|| Value::Object(serde_json::Map::new()))
            }
            _ => {
                return Err(format!(
                    "{path}: {seg:?} is inside a value that is not a map or list"
                ));
            }
        };
    }
    Err(format!("{path}: empty path"))
}

/// One point of the sweep.
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    /// The parameter value.
    pub value: f64,
    /// Total cost.
    pub cost: f64,
    /// Cost of the data-center pools (amortised, paid whether used or not).
    pub cost_datacenter: f64,
    /// Cost of the cloud pools (billed while nodes exist).
    pub cost_cloud: f64,
    /// Lowest SLO attainment over the services.
    pub attainment: f64,
    /// The highest SLO target over the services (the line attainment must reach).
    pub slo_target: f64,
    /// Every service met its SLO.
    pub meets_slo: bool,
    /// Share of replica-hours in cloud pools.
    pub spill_fraction: f64,
    /// Worst TTFT p95 over the services, seconds.
    pub ttft_p95_s: f64,
}

/// The sweep's result.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// The swept key.
    pub key: String,
    /// Points in value order.
    pub points: Vec<Point>,
    /// The cheapest point that meets the SLO, if any.
    pub cheapest: Option<Point>,
    /// What the sweep cannot tell (see [`warnings`]).
    pub warnings: Vec<String>,
}

impl Plan {
    /// The plan of `points` (in sweep order) for `key`: the cheapest point
    /// and the warnings.
    #[must_use]
    pub fn new(key: &str, points: Vec<Point>) -> Self {
        let cheapest = cheapest(&points);
        let warnings = warnings(key, &points, cheapest.as_ref());
        Self {
            key: key.to_owned(),
            points,
            cheapest,
            warnings,
        }
    }
}

/// Warnings about a sweep's answer: the cheapest point at an end of the
/// swept range (a value beyond it might be cheaper still, or the range does
/// not reach the cheap side at all), or no point meeting the SLO.
#[must_use]
pub fn warnings(key: &str, points: &[Point], best: Option<&Point>) -> Vec<String> {
    let mut out = Vec::new();
    // The sweep's values in any order (`--vary k=8,2,4`): its ends are the
    // smallest and largest.
    let by_value = |a: &&Point, b: &&Point| a.value.total_cmp(&b.value);
    let (Some(lo), Some(hi)) = (
        points.iter().min_by(by_value),
        points.iter().max_by(by_value),
    ) else {
        return out;
    };
    match best {
        None => out.push(format!(
            "no {key} from {} to {} meets the SLO: widen the range",
            lo.value, hi.value
        )),
        Some(b) if points.len() > 1 && b.value == lo.value => out.push(format!(
            "the cheapest setting is the lowest value swept ({key} = {}): a lower one may also meet the SLO for less; extend the range down",
            b.value
        )),
        Some(b) if points.len() > 1 && b.value == hi.value => out.push(format!(
            "the cheapest setting is the highest value swept ({key} = {}): a higher one may cost less; extend the range up",
            b.value
        )),
        Some(_) => {}
    }
    out
}

/// SLO overrides from the command line.
#[derive(Clone, Copy, Debug, Default)]
pub struct SloOverride {
    /// TTFT objective for every service.
    pub ttft: Option<Dur>,
    /// Required share for every service.
    pub target: Option<f64>,
}

/// Builds the compiled scenario for every value of the sweep.
///
/// # Errors
/// Parse or validation errors, naming the value that caused them.
pub fn variants(
    text: &str,
    file: &str,
    base: &Path,
    sweep: &Sweep,
    slo: SloOverride,
) -> Result<Vec<Compiled>, ScenarioError> {
    let tree: Value = serde_saphyr::from_str(text).map_err(|e| ScenarioError::Parse {
        file: file.to_owned(),
        message: e.to_string(),
    })?;
    let mut out = Vec::new();
    for &v in &sweep.values {
        let mut t = tree.clone();
        #[allow(clippy::cast_possible_truncation)]
        let json = if v.fract() == 0.0 && v.abs() < 1e15 {
            Value::from(v as i64)
        } else {
            Value::from(v)
        };
        set_path(&mut t, &sweep.key, json).map_err(|e| ScenarioError::Invalid {
            file: file.to_owned(),
            errors: vec![e],
        })?;
        if let Some(services) = t.get_mut("services").and_then(Value::as_array_mut) {
            for s in services {
                if let Some(ttft) = slo.ttft {
                    let _ = set_path(
                        s,
                        "slo.ttft",
                        Value::from(spillway::decision::time::format_duration(ttft.0)),
                    );
                }
                if let Some(target) = slo.target {
                    let _ = set_path(s, "slo.target", Value::from(target));
                }
            }
        }
        let text = serde_json::to_string(&t).map_err(|e| ScenarioError::Parse {
            file: file.to_owned(),
            message: e.to_string(),
        })?;
        out.push(scenario::parse(
            &text,
            &format!("{file} ({}={v})", sweep.key),
            base,
        )?);
    }
    Ok(out)
}

/// Summarises one run as a plan point.
#[must_use]
pub fn point(value: f64, o: &Outcome) -> Point {
    let s = &o.summary;
    let cost_of = |cloud: bool| -> f64 {
        s.pools
            .iter()
            .filter(|p| (p.kind == "cloud") == cloud)
            .map(|p| p.cost)
            .sum()
    };
    Point {
        value,
        cost: s.cost_total,
        cost_datacenter: cost_of(false),
        cost_cloud: cost_of(true),
        slo_target: s.services.iter().map(|x| x.slo.target).fold(0.0, f64::max),
        attainment: s
            .services
            .iter()
            .map(|x| x.slo.attainment)
            .fold(1.0, f64::min),
        meets_slo: s.services.iter().all(|x| x.slo.met),
        spill_fraction: s.spill_fraction,
        ttft_p95_s: s.services.iter().map(|x| x.ttft.p95).fold(0.0, f64::max),
    }
}

/// Picks the cheapest point that meets the SLO (ties: the smaller value).
#[must_use]
pub fn cheapest(points: &[Point]) -> Option<Point> {
    points
        .iter()
        .filter(|p| p.meets_slo)
        .min_by(|a, b| a.cost.total_cmp(&b.cost).then(a.value.total_cmp(&b.value)))
        .cloned()
}

/// Runs every variant on `jobs` threads, calling `done` after each run;
/// outcomes come back in variant order.
///
/// # Errors
/// The first run that could not start, as text.
pub fn run_variants(
    variants: &[Compiled],
    jobs: usize,
    done: &(dyn Fn() + Sync),
) -> Result<Vec<Outcome>, String> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<Outcome, String>>>> =
        Mutex::new(vec![None; variants.len()]);
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, variants.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(v) = variants.get(i) else { break };
                    let r = crate::simulate(v, &mut |_| {}).map_err(|e| e.to_string());
                    if let Ok(mut all) = results.lock() {
                        all[i] = Some(r);
                    }
                    done();
                }
            });
        }
    });
    results
        .into_inner()
        .map_err(|_| "a run panicked".to_owned())?
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err("a run did not finish".to_owned())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_parse_ranges_steps_and_lists() {
        assert_eq!(parse_sweep("a.b=1..3").unwrap().values, [1.0, 2.0, 3.0]);
        assert_eq!(parse_sweep("a=0..1:0.5").unwrap().values, [0.0, 0.5, 1.0]);
        assert_eq!(parse_sweep("a=2,4,8").unwrap().values, [2.0, 4.0, 8.0]);
        for bad in ["a", "=1..2", "a=3..1", "a=1..2:0", "a=x..2"] {
            assert!(parse_sweep(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_address_list_elements_by_name_or_index() {
        let mut v = serde_json::json!({"pools": [{"name": "dc", "nodes": 1}, {"name": "cloud", "maxNodes": 2}]});
        set_path(&mut v, "pools.dc.nodes", Value::from(4)).unwrap();
        set_path(&mut v, "pools.1.maxNodes", Value::from(9)).unwrap();
        assert_eq!(v["pools"][0]["nodes"], 4);
        assert_eq!(v["pools"][1]["maxNodes"], 9);
        assert!(set_path(&mut v, "pools.nope.nodes", Value::from(1)).is_err());
    }

    #[test]
    fn cheapest_point_must_meet_the_slo() {
        let pts = [pt(1.0, 5.0, false), pt(2.0, 7.0, true), pt(3.0, 6.0, true)];
        assert_eq!(cheapest(&pts).unwrap().value, 3.0);
        assert!(cheapest(&pts[..1]).is_none());
    }

    fn pt(value: f64, cost: f64, meets_slo: bool) -> Point {
        Point {
            value,
            cost,
            cost_datacenter: cost,
            cost_cloud: 0.0,
            attainment: 0.0,
            slo_target: 0.95,
            meets_slo,
            spill_fraction: 0.0,
            ttft_p95_s: 0.0,
        }
    }

    #[test]
    fn a_cheapest_point_at_an_end_of_the_range_is_warned_about() {
        let k = "pools.dc.nodes";
        let inside = Plan::new(
            k,
            vec![pt(1.0, 5.0, false), pt(2.0, 6.0, true), pt(3.0, 7.0, true)],
        );
        assert_eq!(inside.cheapest.as_ref().unwrap().value, 2.0);
        assert!(inside.warnings.is_empty(), "{:?}", inside.warnings);
        let low = Plan::new(k, vec![pt(1.0, 5.0, true), pt(2.0, 6.0, true)]);
        assert!(low.warnings[0].contains("lowest value swept (pools.dc.nodes = 1)"));
        let high = Plan::new(k, vec![pt(1.0, 5.0, false), pt(2.0, 6.0, true)]);
        assert!(high.warnings[0].contains("highest value swept"));
        let none = Plan::new(k, vec![pt(1.0, 5.0, false), pt(2.0, 6.0, false)]);
        assert!(none.warnings[0].contains("no pools.dc.nodes from 1 to 2 meets the SLO"));
        // Unsorted sweeps: the ends are the smallest and largest values.
        let unsorted = Plan::new(
            k,
            vec![pt(4.0, 5.0, true), pt(2.0, 6.0, true), pt(8.0, 7.0, true)],
        );
        assert!(unsorted.warnings.is_empty(), "{:?}", unsorted.warnings);
        // A single point says nothing about the range.
        assert!(Plan::new(k, vec![pt(1.0, 5.0, true)]).warnings.is_empty());
    }
}
