//! Report output: `summary.json`, `timeseries.csv`, `scale_events.csv`,
//! `node_scale_ups.csv` (the node group cluster-autoscaler grew, and why) and a
//! self-contained `index.html` with SVG charts (plotters' SVG backend, no
//! scripts, no external assets), plus the terminal summary table.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use spillway::decision::hpa;

use crate::outcome::{Outcome, Series, Summary};
use crate::scenario::{Compiled, CompiledService, MetricKind, PoolKind};

/// Colours for series, in order.
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// One line of a chart.
pub struct Line {
    /// Legend entry.
    pub name: String,
    /// One value per x; non-finite values are skipped.
    pub values: Vec<f64>,
    /// Index into the palette.
    pub color: usize,
    /// Drawn dashed (capacities and limits, so that a line at the same
    /// height stays visible beside them).
    pub dashed: bool,
}

impl Line {
    /// A solid line.
    #[must_use]
    pub fn solid(name: impl Into<String>, values: Vec<f64>, color: usize) -> Self {
        Self {
            name: name.into(),
            values,
            color,
            dashed: false,
        }
    }

    /// A dashed line.
    #[must_use]
    pub fn dashed(name: impl Into<String>, values: Vec<f64>, color: usize) -> Self {
        Self {
            dashed: true,
            ..Self::solid(name, values, color)
        }
    }
}

/// A horizontal reference line (an objective or a limit), dashed.
pub struct Ref {
    /// Legend entry.
    pub name: String,
    /// Its height.
    pub value: f64,
    /// Index into the palette; `None` for the objective red.
    pub color: Option<usize>,
}

impl Ref {
    /// An objective (SLO, target), in red.
    #[must_use]
    pub fn objective(name: impl Into<String>, value: f64) -> Self {
        Self {
            name: name.into(),
            value,
            color: None,
        }
    }
}

/// What the x axis shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XAxis {
    /// Simulated hours since t = 0, labelled as time of day (`06:00`, or
    /// `d2 06:00` beyond the first day); t = 0 is midnight of day 1.
    TimeOfDay,
    /// Plain values (a plan's swept parameter).
    Value,
}

/// One chart: a title, a y-axis label, lines and reference lines.
pub struct Chart {
    /// X-axis label.
    pub x_label: String,
    /// What the x values are.
    pub x_axis: XAxis,
    /// Title.
    pub title: String,
    /// Y-axis label.
    pub y_label: String,
    /// The lines.
    pub lines: Vec<Line>,
    /// Horizontal reference lines, dashed.
    pub refs: Vec<Ref>,
    /// Fit the y axis to the data instead of starting at 0 (shares close
    /// to 1, such as SLO attainment).
    pub zoom: bool,
}

const OBJECTIVE: RGBColor = RGBColor(214, 0, 0);
const CHART_W: u32 = 1000;
const CHART_H: u32 = 320;
/// Width of the legend column right of the plot.
const LEGEND_W: u32 = 250;

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// A colour halfway to white: dashed capacity lines, drawn over a solid
/// line of the same colour, so that both show.
fn tint(c: RGBColor) -> RGBColor {
    let half = |v: u8| u8::try_from(u16::midpoint(u16::from(v), 255)).unwrap_or(u8::MAX);
    RGBColor(half(c.0), half(c.1), half(c.2))
}

/// `h` simulated hours as a time of day; with the day when the run spans
/// more than one.
#[must_use]
pub fn clock(h: f64, multi_day: bool) -> String {
    #[allow(clippy::cast_possible_truncation)]
    let m = (h * 60.0).round() as i64;
    let (day, hh, mm) = (
        m.div_euclid(1440),
        m.rem_euclid(1440) / 60,
        m.rem_euclid(60),
    );
    if multi_day {
        format!("d{} {hh:02}:{mm:02}", day + 1)
    } else {
        format!("{hh:02}:{mm:02}")
    }
}

/// Renders a chart as an SVG string: the plot on the left, its legend in a
/// column on the right (never over the data); `x` holds the x value of each
/// point.
///
/// # Errors
/// A plotters drawing error, as text.
pub fn svg_chart(x: &[f64], chart: &Chart) -> Result<String, String> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (CHART_W, CHART_H)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (plot, legend) = root.split_horizontally(CHART_W - LEGEND_W);
        let x_min = x.first().copied().unwrap_or(0.0).min(0.0);
        let x_max = x.last().copied().unwrap_or(1.0).max(x_min + 1e-6);
        let values = || {
            chart
                .lines
                .iter()
                .flat_map(|l| l.values.iter().copied())
                .chain(chart.refs.iter().map(|r| r.value))
                .filter(|v| v.is_finite())
        };
        let mut y_max = values().fold(0.0_f64, f64::max);
        if y_max <= 0.0 {
            y_max = 1.0;
        }
        let (y_lo, y_hi) = if chart.zoom {
            let lo = values().fold(y_max, f64::min);
            let pad = ((y_max - lo) * 0.1).max(0.005);
            ((lo - pad).max(0.0), y_max + pad)
        } else {
            (0.0, y_max * 1.08)
        };
        let mut c = ChartBuilder::on(&plot)
            .caption(&chart.title, ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(x_min..x_max, y_lo..y_hi)
            .map_err(|e| e.to_string())?;
        let multi_day = x_max - x_min > 24.0;
        let time_label = |v: &f64| clock(*v, multi_day);
        let mut mesh = c.configure_mesh();
        mesh.x_desc(chart.x_label.as_str())
            .y_desc(chart.y_label.as_str())
            .light_line_style(RGBColor(235, 235, 235));
        if chart.x_axis == XAxis::TimeOfDay {
            mesh.x_label_formatter(&time_label).x_labels(13);
        }
        mesh.draw().map_err(|e| e.to_string())?;
        // Solid lines first, then dashed ones in a lighter tint of their
        // colour on top: a capacity the data runs along stays visible.
        for dashed in [false, true] {
            for line in chart.lines.iter().filter(|l| l.dashed == dashed) {
                let points: Vec<(f64, f64)> = x
                    .iter()
                    .copied()
                    .zip(line.values.iter().copied())
                    .filter(|(_, y)| y.is_finite())
                    .collect();
                if dashed {
                    let style = tint(color(line.color)).stroke_width(3);
                    c.draw_series(DashedLineSeries::new(points, 7, 5, style))
                        .map_err(|e| e.to_string())?;
                } else {
                    let style = color(line.color).stroke_width(2);
                    c.draw_series(LineSeries::new(points, style))
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        for r in &chart.refs {
            let col = r.color.map_or(OBJECTIVE, color);
            c.draw_series(DashedLineSeries::new(
                vec![(x_min, r.value), (x_max, r.value)],
                6,
                4,
                col.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?;
        }
        draw_legend(&legend, chart)?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(buf)
}

/// The legend column: one entry per line and reference line, with its
/// colour and dash, in drawing order.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    chart: &Chart,
) -> Result<(), String> {
    let entries: Vec<(String, RGBColor, bool)> = chart
        .lines
        .iter()
        .map(|l| {
            let c = if l.dashed {
                tint(color(l.color))
            } else {
                color(l.color)
            };
            (l.name.clone(), c, l.dashed)
        })
        .chain(
            chart
                .refs
                .iter()
                .map(|r| (r.name.clone(), r.color.map_or(OBJECTIVE, color), true)),
        )
        .collect();
    let row = 18;
    let top = 36;
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_possible_wrap,
        clippy::cast_sign_loss
    )]
    let fit = ((CHART_H as i32 - top - 10) / row).max(1) as usize;
    let font = ("sans-serif", 13).into_font().color(&BLACK);
    for (i, (name, col, dashed)) in entries.iter().take(fit).enumerate() {
        #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
        let y = top + row * i as i32;
        let style = col.stroke_width(2);
        let segments: Vec<(i32, i32)> = if *dashed {
            vec![(8, 14), (18, 24), (28, 34)]
        } else {
            vec![(8, 34)]
        };
        for (a, b) in segments {
            area.draw(&PathElement::new(vec![(a, y), (b, y)], style))
                .map_err(|e| e.to_string())?;
        }
        let label: String = name.chars().take(30).collect();
        area.draw(&Text::new(label, (40, y - 7), font.clone()))
            .map_err(|e| e.to_string())?;
    }
    if entries.len() > fit {
        #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
        let y = top + row * fit as i32;
        area.draw(&Text::new(
            format!("… {} more", entries.len() - fit),
            (40, y - 7),
            font,
        ))
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The columns `prefix…` of the series as (name without `strip`, values).
fn columns_with_prefix(series: &Series, prefix: &str, strip: &str) -> Vec<(String, Vec<f64>)> {
    series
        .columns
        .iter()
        .filter(|c| c.starts_with(prefix))
        .map(|c| (c.trim_start_matches(strip).to_owned(), series.values(c)))
        .collect()
}

fn time_chart(title: String, y_label: &str, lines: Vec<Line>, refs: Vec<Ref>) -> Chart {
    Chart {
        x_label: "time of day (simulated)".into(),
        x_axis: XAxis::TimeOfDay,
        title,
        y_label: y_label.into(),
        lines,
        refs,
        zoom: false,
    }
}

/// The scaler's target for the GPU-utilisation series (percent), if its
/// scaler has a per-pod GPU-utilisation or activity metric.
fn gpu_target_percent(svc: &CompiledService) -> Option<f64> {
    let (_, metrics) = svc.hpa.as_ref()?;
    metrics.iter().find_map(|m| match (m.kind, m.target) {
        (MetricKind::GpuUtilPercent, hpa::Target::AverageValue(v)) => Some(v),
        (MetricKind::GpuActiveRatio, hpa::Target::AverageValue(v)) => Some(v * 100.0),
        _ => None,
    })
}

/// The charts operators look at, built from the time series.
#[must_use]
pub fn charts(outcome: &Outcome, compiled: &Compiled) -> Vec<Chart> {
    let s = &outcome.series;
    let currency = compiled.scenario.currency.as_deref().unwrap_or("cost");
    let mut out = vec![time_chart(
        "Request rate".into(),
        "requests/s",
        columns_with_prefix(s, "rps:", "rps:")
            .into_iter()
            .enumerate()
            .map(|(i, (n, v))| Line::solid(n, v, i))
            .collect(),
        vec![],
    )];
    for cs in &compiled.services {
        let name = &cs.spec.name;
        let col = |k: &str| s.values(&format!("{k}:{name}"));
        let prefix = format!("replicas:{name}:");
        let mut replicas: Vec<Line> = columns_with_prefix(s, &prefix, &prefix)
            .into_iter()
            .enumerate()
            .map(|(i, (n, v))| {
                let label = if n == "-" {
                    "outside units".to_owned()
                } else {
                    format!("unit {n}")
                };
                Line::solid(label, v, i)
            })
            .collect();
        replicas.push(Line::solid("all replicas", col("replicas"), 7));
        let limits: Vec<Ref> = cs
            .hpa
            .as_ref()
            .map(|(h, _)| {
                vec![
                    Ref {
                        name: format!("maxReplicas {}", h.max_replicas),
                        value: f64::from(h.max_replicas),
                        color: None,
                    },
                    Ref {
                        name: format!("minReplicas {}", h.min_replicas),
                        value: f64::from(h.min_replicas),
                        color: Some(7),
                    },
                ]
            })
            .unwrap_or_default();
        out.push(time_chart(
            format!("Replicas per unit — {name}"),
            "replicas",
            replicas,
            limits,
        ));
        out.push(time_chart(
            format!("Pods waiting for a node — {name}"),
            "pending pods",
            vec![Line::solid("pending pods", col("pending_pods"), 1)],
            vec![],
        ));
        out.push(time_chart(
            format!("Time to first token vs its SLO — {name}"),
            "seconds",
            vec![
                Line::solid("TTFT p50", col("ttft_p50_s"), 0),
                Line::solid("TTFT p95", col("ttft_p95_s"), 1),
            ],
            vec![Ref::objective(
                format!("TTFT SLO {:.2} s", cs.spec.slo.ttft.0.as_secs_f64()),
                cs.spec.slo.ttft.0.as_secs_f64(),
            )],
        ));
        out.push(time_chart(
            format!(
                "End-to-end latency{} — {name}",
                if cs.spec.slo.e2e.is_some() {
                    " vs its SLO"
                } else {
                    ""
                }
            ),
            "seconds",
            vec![
                Line::solid("e2e p50", col("e2e_p50_s"), 2),
                Line::solid("e2e p95", col("e2e_p95_s"), 5),
            ],
            cs.spec
                .slo
                .e2e
                .map(|e| {
                    Ref::objective(
                        format!("e2e SLO {:.1} s", e.0.as_secs_f64()),
                        e.0.as_secs_f64(),
                    )
                })
                .into_iter()
                .collect(),
        ));
        out.push(Chart {
            zoom: true,
            ..time_chart(
                format!("SLO attainment per interval — {name}"),
                "share of requests meeting the SLO",
                vec![Line::solid("attainment", col("slo_attainment"), 2)],
                vec![Ref::objective(
                    format!("target {}", percent(cs.spec.slo.target)),
                    cs.spec.slo.target,
                )],
            )
        });
        out.push(time_chart(
            format!("GPU utilisation the scaler reads — {name}"),
            "DCGM GPU utilisation, % (mean over ready pods)",
            vec![Line::solid("GPU utilisation", col("gpu_util_pct"), 4)],
            gpu_target_percent(cs)
                .map(|t| Ref::objective(format!("scaler target {t:.0}%"), t))
                .into_iter()
                .collect(),
        ));
    }
    let pools = &compiled.scenario.pools;
    let mut gpus = Vec::new();
    let mut nodes = Vec::new();
    let mut churn = Vec::new();
    let mut limits = Vec::new();
    for (i, p) in pools.iter().enumerate() {
        let n = &p.name;
        gpus.push(Line::dashed(
            format!("{n} capacity"),
            s.values(&format!("gpus:{n}")),
            i,
        ));
        gpus.push(Line::solid(
            format!("{n} held by replicas"),
            s.values(&format!("gpus_used:{n}")),
            i,
        ));
        nodes.push(Line::solid(n.clone(), s.values(&format!("nodes:{n}")), i));
        churn.push(Line::solid(
            format!("{n} provisioned"),
            s.values(&format!("nodes_added:{n}")),
            i,
        ));
        churn.push(Line::dashed(
            format!("{n} removed"),
            s.values(&format!("nodes_removed:{n}")),
            i,
        ));
        if p.kind == PoolKind::Cloud {
            limits.push(Ref {
                name: format!("{n} maxNodes {}", p.max_nodes),
                value: f64::from(p.max_nodes),
                color: Some(i),
            });
        }
    }
    out.push(time_chart(
        "GPUs per pool: capacity and held by replicas".into(),
        "GPUs",
        gpus,
        vec![],
    ));
    out.push(time_chart(
        "Nodes per pool vs pool limits".into(),
        "nodes",
        nodes,
        limits,
    ));
    out.push(time_chart(
        "Nodes provisioned and removed (cumulative)".into(),
        "nodes",
        churn,
        vec![],
    ));
    let mut cost: Vec<Line> = pools
        .iter()
        .enumerate()
        .map(|(i, p)| Line::solid(p.name.clone(), s.values(&format!("cost:{}", p.name)), i))
        .collect();
    cost.push(Line::solid("total", s.values("cost:total"), 7));
    out.push(time_chart("Cumulative cost".into(), currency, cost, vec![]));
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A cost with the scenario's currency (`USD 1234.50`), or the bare number.
#[must_use]
pub fn money(v: f64, currency: Option<&str>) -> String {
    match currency {
        Some(c) => format!("{c} {v:.2}"),
        None => format!("{v:.2}"),
    }
}

/// What the report warns about: services that sat at their scaler's
/// `maxReplicas` (the scaler could not add capacity then).
#[must_use]
pub fn warnings(sum: &Summary) -> Vec<String> {
    sum.services
        .iter()
        .filter_map(|s| {
            let max = s.max_replicas?;
            (s.at_max_replicas_s > 0.0).then(|| {
                format!(
                    "{} sat at maxReplicas ({max}) for {:.1} h ({:.0}% of the run): the scaler could add no replica then; SLO misses in that time are capacity it was not allowed to add",
                    s.name,
                    s.at_max_replicas_s / 3600.0,
                    100.0 * s.at_max_replicas_s / sum.duration_s.max(1e-9)
                )
            })
        })
        .collect()
}

fn dur(d: crate::scenario::Dur) -> String {
    spillway::decision::time::format_duration(d.0)
}

/// The scenario's assumptions, as the report echoes them: (what, value).
#[must_use]
pub fn assumptions(c: &Compiled) -> Vec<(String, String)> {
    let sc = &c.scenario;
    let cur = sc.currency.as_deref();
    let mut out = vec![(
        "run".to_owned(),
        format!(
            "{} simulated from 00:00 of day 1, seed {}, a sample every {}",
            dur(sc.duration),
            sc.seed,
            dur(sc.sample_interval)
        ),
    )];
    for p in &sc.pools {
        let size = match p.kind {
            PoolKind::Datacenter => format!("{} nodes, always on", p.nodes),
            PoolKind::Cloud => format!(
                "{}–{} nodes, {} to {} to provision",
                p.min_nodes,
                p.max_nodes,
                dur(p.provisioning.min),
                dur(p.provisioning.max)
            ),
        };
        out.push((
            format!("pool {}", p.name),
            format!(
                "{} · {size} · {} × {} GPUs per node · {} per GPU-hour",
                match p.kind {
                    PoolKind::Datacenter => "data center",
                    PoolKind::Cloud => "cloud",
                },
                p.gpus_per_node,
                if p.gpu_type.is_empty() {
                    "GPU"
                } else {
                    p.gpu_type.as_str()
                },
                money(p.cost_per_gpu_hour, cur)
            ),
        ));
    }
    for cs in &c.services {
        let spec = &cs.spec;
        let perf = serde_json::to_string(&spec.perf).unwrap_or_default();
        out.push((
            format!("service {}", spec.name),
            format!(
                "{} GPUs per replica · {} replicas at start · startup {} pull + {} load · up to {} requests per replica ({:?} routing) · utilisation factor {}",
                spec.gpus_per_replica,
                spec.replicas,
                dur(spec.startup.image_pull),
                dur(if spec.startup.model_cache { spec.startup.cached_model_load } else { spec.startup.model_load }),
                cs.perf.max_batch(),
                spec.routing,
                spec.utilization_factor
            ),
        ));
        out.push((format!("service {} perf", spec.name), perf));
        out.push((
            format!("service {} SLO", spec.name),
            format!(
                "TTFT ≤ {}{} for {} of requests",
                dur(spec.slo.ttft),
                spec.slo
                    .e2e
                    .map(|e| format!(", end-to-end ≤ {}", dur(e)))
                    .unwrap_or_default(),
                percent(spec.slo.target)
            ),
        ));
        out.push((
            format!("service {} traffic", spec.name),
            serde_json::to_string(&spec.traffic).unwrap_or_default(),
        ));
        out.push((
            format!("service {} scaler", spec.name),
            match &cs.hpa {
                None => format!("none: {} replicas throughout", spec.replicas),
                Some((h, metrics)) => format!(
                    "{}–{} replicas on {}",
                    h.min_replicas,
                    h.max_replicas,
                    metrics
                        .iter()
                        .map(|m| format!("{} ({:?})", m.name, m.target))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
        ));
    }
    for p in &c.policies {
        out.push((
            format!("policy {}", p.key.name),
            p.units
                .iter()
                .map(|u| {
                    let max = u.max.map(|m| format!(" (max {m})")).unwrap_or_default();
                    format!("{}{max}", u.name)
                })
                .collect::<Vec<_>>()
                .join(" → "),
        ));
    }
    out.push((
        "cluster-autoscaler".into(),
        serde_json::to_string(&sc.cluster_autoscaler).unwrap_or_default(),
    ));
    out.push((
        "metrics".into(),
        serde_json::to_string(&sc.metrics).unwrap_or_default(),
    ));
    out
}

/// The self-contained HTML report.
#[must_use]
pub fn html(outcome: &Outcome, compiled: &Compiled) -> String {
    let sum = &outcome.summary;
    let cur = sum.currency.as_deref();
    let x: Vec<f64> = outcome
        .series
        .values("t_s")
        .iter()
        .map(|t| t / 3600.0)
        .collect();
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Spillway simulation — {}</title>\
         <style>body{{font-family:sans-serif;margin:24px;color:#222;max-width:1040px}}table{{border-collapse:collapse;margin:8px 0 20px}}\
         td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}th{{background:#f3f3f3}}td:first-child,th:first-child{{text-align:left}}\
         .ok{{color:#080}}.bad{{color:#b00}}.warn{{color:#b00}}figure{{margin:0 0 16px}}table.assume td{{text-align:left;vertical-align:top}}\
         table.assume td:last-child{{font-family:monospace;font-size:12px;word-break:break-all}}</style></head><body>",
        esc(&sum.scenario)
    );
    let _ = write!(
        h,
        "<h1>Spillway simulation: {}</h1><p>Seed {} · {:.1} simulated hours · total cost <b>{}</b> · {:.1} GPU-hours · spill fraction <b>{:.1}%</b> · {} pods created · pod pending time p50 {:.0}s / p95 {:.0}s</p>",
        esc(&sum.scenario),
        sum.seed,
        sum.duration_s / 3600.0,
        money(sum.cost_total, cur),
        sum.gpu_hours_total,
        sum.spill_fraction * 100.0,
        sum.pods_created,
        sum.pending_time.p50,
        sum.pending_time.p95
    );
    for w in warnings(sum) {
        let _ = write!(h, "<p class=\"warn\"><b>Warning:</b> {}</p>", esc(&w));
    }
    for line in spill_back_line(sum).into_iter().chain(headroom_line(sum)) {
        let _ = write!(h, "<p>{}</p>", esc(&line));
    }
    h.push_str("<h2>Services</h2><table><tr><th>service</th><th>requests</th><th>TTFT p50</th><th>TTFT p95</th><th>TTFT p99</th><th>e2e p50</th><th>e2e p95</th><th>SLO attainment</th><th>peak replicas</th><th>time at maxReplicas</th><th>scale events</th></tr>");
    for s in &sum.services {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{:.2}s</td><td>{:.2}s</td><td>{:.2}s</td><td>{:.1}s</td><td>{:.1}s</td><td class=\"{}\">{} (target {})</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&s.name),
            s.requests.arrived,
            s.ttft.p50,
            s.ttft.p95,
            s.ttft.p99,
            s.e2e.p50,
            s.e2e.p95,
            if s.slo.met { "ok" } else { "bad" },
            percent(s.slo.attainment),
            percent(s.slo.target),
            s.peak_replicas,
            s.max_replicas.map_or_else(
                || "no scaler".to_owned(),
                |m| format!("{:.1} h at {m}", s.at_max_replicas_s / 3600.0)
            ),
            s.scale_events
        );
    }
    h.push_str("</table><h2>Pools</h2><table><tr><th>pool</th><th>kind</th><th>GPU-hours</th><th>GPU-hours held</th><th>price per GPU-hour</th><th>cost</th><th>nodes provisioned</th><th>nodes removed</th><th>peak nodes</th></tr>");
    for (p, spec) in sum.pools.iter().zip(&compiled.scenario.pools) {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&p.name),
            p.kind,
            p.gpu_hours,
            p.gpu_hours_used,
            money(spec.cost_per_gpu_hour, cur),
            money(p.cost, cur),
            p.nodes_provisioned,
            p.nodes_removed,
            p.peak_nodes
        );
    }
    h.push_str("</table><h2>Charts</h2><p>Times are simulated time of day; t = 0 is 00:00 of day 1. Dashed lines are capacities, limits and objectives.</p>");
    for chart in charts(outcome, compiled) {
        match svg_chart(&x, &chart) {
            Ok(svg) => {
                let _ = write!(h, "<figure>{svg}</figure>");
            }
            Err(e) => {
                let _ = write!(
                    h,
                    "<p>chart {} could not be drawn: {}</p>",
                    esc(&chart.title),
                    esc(&e)
                );
            }
        }
    }
    h.push_str("<h2>Assumptions</h2><table class=\"assume\">");
    for (what, value) in assumptions(compiled) {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td></tr>",
            esc(&what),
            esc(&value)
        );
    }
    h.push_str("</table>");
    h.push_str("<h2>Scale events</h2><table><tr><th>time</th><th>service</th><th>from</th><th>to</th><th>reason</th></tr>");
    let multi_day = sum.duration_s > 86_400.0;
    for e in outcome.scale_events.iter().take(500) {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td style=\"text-align:left\">{}</td></tr>",
            clock(e.t_s / 3600.0, multi_day),
            esc(&e.service),
            e.from,
            e.to,
            esc(&e.reason)
        );
    }
    if outcome.scale_events.len() > 500 {
        let _ = write!(
            h,
            "<tr><td colspan=5>… {} more in scale_events.csv</td></tr>",
            outcome.scale_events.len() - 500
        );
    }
    h.push_str("</table></body></html>\n");
    h
}

/// The time series as CSV (non-finite values as empty cells).
#[must_use]
pub fn csv(series: &Series) -> String {
    let mut out = series.columns.join(",");
    out.push('\n');
    for row in &series.rows {
        // An interval with nothing to measure (no request judged, no ready
        // pod) is an empty cell, not a number.
        let cells: Vec<String> = row
            .iter()
            .map(|v| {
                if v.is_finite() {
                    format!("{v:.6}")
                } else {
                    String::new()
                }
            })
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Writes the report directory.
///
/// # Errors
/// I/O errors, with the path.
pub fn write_dir(dir: &Path, outcome: &Outcome, compiled: &Compiled) -> anyhow::Result<()> {
    use anyhow::Context as _;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = serde_json::to_string_pretty(&outcome.summary)? + "\n";
    std::fs::write(dir.join("summary.json"), json)
        .with_context(|| format!("writing {}", dir.display()))?;
    std::fs::write(dir.join("timeseries.csv"), csv(&outcome.series))?;
    let mut ev = String::from("t_s,service,from,to,reason\n");
    for e in &outcome.scale_events {
        let _ = writeln!(
            ev,
            "{:.3},{},{},{},{}",
            e.t_s,
            csv_field(&e.service),
            e.from,
            e.to,
            csv_field(&e.reason)
        );
    }
    std::fs::write(dir.join("scale_events.csv"), ev)?;
    let mut ups = String::from("t_s,pool,nodes,reason\n");
    for u in &outcome.node_scale_ups {
        let _ = writeln!(
            ups,
            "{:.3},{},{},{}",
            u.t_s,
            csv_field(&u.pool),
            u.nodes,
            csv_field(&u.reason)
        );
    }
    std::fs::write(dir.join("node_scale_ups.csv"), ups)?;
    std::fs::write(dir.join("index.html"), html(outcome, compiled))?;
    Ok(())
}

/// The terminal summary table.
#[must_use]
pub fn table(sum: &Summary) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "scenario {} · seed {} · {:.1} simulated hours",
        sum.scenario,
        sum.seed,
        sum.duration_s / 3600.0
    );
    let _ = writeln!(
        t,
        "\n{:<14} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>15} {:>6}",
        "service",
        "requests",
        "TTFT p50",
        "TTFT p95",
        "TTFT p99",
        "e2e p50",
        "e2e p95",
        "SLO attainment",
        "peak"
    );
    for s in &sum.services {
        let _ = writeln!(
            t,
            "{:<14} {:>11} {:>8.2}s {:>8.2}s {:>8.2}s {:>8.1}s {:>8.1}s {:>9} {:>4} {:>6}",
            s.name,
            s.requests.arrived,
            s.ttft.p50,
            s.ttft.p95,
            s.ttft.p99,
            s.e2e.p50,
            s.e2e.p95,
            percent(s.slo.attainment),
            if s.slo.met { "met" } else { "MISS" },
            s.peak_replicas
        );
    }
    let _ = writeln!(
        t,
        "\n{:<14} {:<10} {:>10} {:>12} {:>12} {:>11} {:>10}",
        "pool", "kind", "GPU-hours", "held by pods", "cost", "provisioned", "peak nodes"
    );
    for p in &sum.pools {
        let _ = writeln!(
            t,
            "{:<14} {:<10} {:>10.1} {:>12.1} {:>12.2} {:>11} {:>10}",
            p.name,
            p.kind,
            p.gpu_hours,
            p.gpu_hours_used,
            p.cost,
            p.nodes_provisioned,
            p.peak_nodes
        );
    }
    let _ = writeln!(
        t,
        "\ntotal cost {} · {:.1} GPU-hours · spill fraction {:.1}% of replica-hours in cloud pools · pod pending p50 {:.0}s p95 {:.0}s",
        money(sum.cost_total, sum.currency.as_deref()),
        sum.gpu_hours_total,
        sum.spill_fraction * 100.0,
        sum.pending_time.p50,
        sum.pending_time.p95
    );
    for line in spill_back_line(sum).into_iter().chain(headroom_line(sum)) {
        let _ = writeln!(t, "{line}");
    }
    for w in warnings(sum) {
        let _ = writeln!(t, "warning: {w}");
    }
    t
}

/// What scale-up headroom gained and cost, against the same run without it.
fn headroom_line(sum: &Summary) -> Option<String> {
    let hr = sum.headroom.as_ref()?;
    let services: Vec<String> = sum
        .services
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let at = |v: &[f64]| v.get(i).copied().unwrap_or(f64::NAN);
            format!(
                "{} TTFT p95 {:.1} s (without {:.1} s), SLO {} (without {})",
                s.name,
                at(&hr.ttft_p95_s),
                at(&hr.baseline_ttft_p95_s),
                percent(at(&hr.slo_attainment)),
                percent(at(&hr.baseline_slo_attainment))
            )
        })
        .collect();
    Some(format!(
        "headroom: {} node(s) started ahead of demand · pod pending p95 {:.0} s (without headroom {:.0} s) · cost {:.2} (without {:.2}; paid {:.2}) · {}",
        hr.nodes_started,
        hr.pending_time.p95,
        hr.baseline_pending_time.p95,
        hr.cost_total,
        hr.baseline_cost_total,
        hr.cost_paid,
        services.join(", ")
    ))
}

/// What spill-back did and saved, against the same run without it.
fn spill_back_line(sum: &Summary) -> Option<String> {
    let sb = sum.spill_back.as_ref()?;
    let slo: Vec<String> = sum
        .services
        .iter()
        .zip(&sb.baseline_slo_attainment)
        .map(|(s, base)| {
            format!(
                "{} SLO {} (without {})",
                s.name,
                percent(s.slo.attainment),
                percent(*base)
            )
        })
        .collect();
    Some(format!(
        "spill-back: {} evictions · cloud GPU-hours held by pods {:.1} (without spill-back {:.1}), billed {:.1} (without {:.1}) · cost saved {:.2} ({:.2} without) · {}",
        sb.evictions,
        sb.cloud_gpu_hours_used,
        sb.baseline_cloud_gpu_hours_used,
        sb.cloud_gpu_hours,
        sb.baseline_cloud_gpu_hours,
        sb.cost_saved,
        sb.baseline_cost_total,
        slo.join(", ")
    ))
}

/// A share as a percentage, truncated (never rounded up) to two decimals:
/// an SLO attainment of 99.996 % is not 100 %, and 94.996 % does not reach
/// a 95 % target.
#[must_use]
pub fn percent(share: f64) -> String {
    let hundredths = (share * 10_000.0).floor() / 100.0;
    format!("{hundredths:.2}%")
}

/// The plan report: cost and SLO attainment over the swept values.
#[must_use]
pub fn plan_html(p: &crate::plan::Plan) -> String {
    let x: Vec<f64> = p.points.iter().map(|q| q.value).collect();
    let cost = Chart {
        x_label: p.key.clone(),
        x_axis: XAxis::Value,
        title: format!("Cost by {}", p.key),
        y_label: "cost".into(),
        lines: vec![
            Line::solid("total", p.points.iter().map(|q| q.cost).collect(), 7),
            Line::solid(
                "data center",
                p.points.iter().map(|q| q.cost_datacenter).collect(),
                0,
            ),
            Line::solid("cloud", p.points.iter().map(|q| q.cost_cloud).collect(), 1),
        ],
        refs: vec![],
        zoom: false,
    };
    let target = p.points.iter().map(|q| q.slo_target).fold(0.0, f64::max);
    let slo = Chart {
        x_label: p.key.clone(),
        x_axis: XAxis::Value,
        title: format!("SLO attainment by {}", p.key),
        y_label: "attainment".into(),
        lines: vec![Line::solid(
            "worst service",
            p.points.iter().map(|q| q.attainment).collect(),
            2,
        )],
        refs: vec![Ref::objective(
            format!("SLO target {}", percent(target)),
            target,
        )],
        zoom: true,
    };
    let mut h = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Spillway plan — {}</title></head><body style=\"font-family:sans-serif\"><h1>Plan: {}</h1>",
        p.key, p.key
    );
    match &p.cheapest {
        Some(c) => {
            let _ = write!(
                h,
                "<p>Cheapest setting that meets the SLO: <b>{} = {}</b>, cost {:.2}.</p>",
                esc(&p.key),
                c.value,
                c.cost
            );
        }
        None => h.push_str("<p>No setting in the range meets the SLO.</p>"),
    }
    for w in &p.warnings {
        let _ = write!(h, "<p style=\"color:#b00\"><b>Warning:</b> {}</p>", esc(w));
    }
    for chart in [cost, slo] {
        if let Ok(svg) = svg_chart(&x, &chart) {
            h.push_str(&svg);
        }
    }
    h.push_str("<table border=1 cellpadding=4><tr><th>value</th><th>cost</th><th>data center</th><th>cloud</th><th>attainment</th><th>TTFT p95</th><th>spill</th><th>meets SLO</th></tr>");
    for q in &p.points {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{}</td><td>{:.2}s</td><td>{:.1}%</td><td>{}</td></tr>",
            q.value,
            q.cost,
            q.cost_datacenter,
            q.cost_cloud,
            percent(q.attainment),
            q.ttft_p95_s,
            q.spill_fraction * 100.0,
            q.meets_slo
        );
    }
    h.push_str("</table></body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legends_sit_right_of_the_plot_and_dashed_lines_are_drawn_last() {
        let chart = Chart {
            zoom: false,
            ..time_chart(
                "t".into(),
                "y",
                vec![
                    Line::dashed("capacity", vec![4.0, 4.0, 4.0], 0),
                    Line::solid("used", vec![1.0, 4.0, 4.0], 0),
                ],
                vec![Ref::objective("SLO", 3.0)],
            )
        };
        let svg = svg_chart(&[0.0, 12.0, 24.0], &chart).unwrap();
        let plot_w = f64::from(CHART_W - LEGEND_W);
        for name in ["capacity", "used", "SLO"] {
            let at = svg.find(&format!("\n{name}\n")).unwrap();
            let open = svg[..at].rfind("<text x=\"").unwrap() + 9;
            let x: f64 = svg[open..].split('"').next().unwrap().parse().unwrap();
            assert!(x >= plot_w, "{name} legend at x = {x}, inside the plot");
        }
        // The solid line comes before the dashed one in drawing order.
        let solid = svg.find("stroke=\"#1F77B4\" stroke-width=\"2\"").unwrap();
        let dashed = svg.find("stroke=\"#8FBBD9\" stroke-width=\"3\"").unwrap();
        assert!(solid < dashed);
        // Time of day on the x axis.
        assert!(svg.contains("12:00"), "no time-of-day labels");
        assert_eq!(clock(30.5, true), "d2 06:30");
        assert_eq!(clock(23.0, false), "23:00");
    }

    #[test]
    fn percentages_are_never_rounded_to_a_perfect_or_empty_score() {
        assert_eq!(percent(1.0), "100.00%");
        assert_eq!(percent(0.999_96), "99.99%");
        assert_eq!(percent(0.949_96), "94.99%");
        assert_eq!(percent(0.9512), "95.12%");
        assert_eq!(percent(0.0), "0.00%");
    }
}
