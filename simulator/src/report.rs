//! Report output: `summary.json`, `timeseries.csv`, `scale_events.csv`,
//! `node_scale_ups.csv` (the node group cluster-autoscaler grew, and why) and a
//! self-contained `index.html` with SVG charts (plotters' SVG backend, no
//! scripts, no external assets), plus the terminal summary table.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use crate::outcome::{Outcome, Series, Summary};

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

/// One chart: a title, a y-axis label and named lines over time.
pub struct Chart {
    /// X-axis label.
    pub x_label: String,
    /// Title.
    pub title: String,
    /// Y-axis label.
    pub y_label: String,
    /// (legend, values) lines; x is the series' `t_s` in hours.
    pub lines: Vec<(String, Vec<f64>)>,
    /// Horizontal reference lines (legend, value), dashed.
    pub refs: Vec<(String, f64)>,
}

/// Renders a line chart as an SVG string; `x` holds the x value of each point.
///
/// # Errors
/// A plotters drawing error, as text.
pub fn svg_chart(x: &[f64], chart: &Chart) -> Result<String, String> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (900, 300)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let x_min = x.first().copied().unwrap_or(0.0).min(0.0);
        let x_max = x.last().copied().unwrap_or(1.0).max(1e-6);
        let mut y_max = chart
            .lines
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .chain(chart.refs.iter().map(|(_, v)| *v))
            .filter(|v| v.is_finite())
            .fold(0.0_f64, f64::max);
        if y_max <= 0.0 {
            y_max = 1.0;
        }
        let mut c = ChartBuilder::on(&root)
            .caption(&chart.title, ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(x_min..x_max, 0.0..y_max * 1.08)
            .map_err(|e| e.to_string())?;
        c.configure_mesh()
            .x_desc(chart.x_label.as_str())
            .y_desc(chart.y_label.as_str())
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, (name, values)) in chart.lines.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            c.draw_series(LineSeries::new(
                x.iter()
                    .copied()
                    .zip(values.iter().copied())
                    .filter(|(_, y)| y.is_finite()),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        }
        for (name, v) in &chart.refs {
            let v = *v;
            c.draw_series(DashedLineSeries::new(
                vec![(0.0, v), (x_max, v)],
                6,
                4,
                RED.stroke_width(1),
            ))
            .map_err(|e| e.to_string())?
            .label(name.as_str())
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED.stroke_width(1)));
        }
        c.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(buf)
}

fn lines_with_prefix(series: &Series, prefix: &str, strip: &str) -> Vec<(String, Vec<f64>)> {
    series
        .columns
        .iter()
        .filter(|c| c.starts_with(prefix))
        .map(|c| (c.trim_start_matches(strip).to_owned(), series.values(c)))
        .collect()
}

/// The charts operators look at, built from the time series.
#[must_use]
pub fn charts(outcome: &Outcome, slo_ttft: &[(String, f64)]) -> Vec<Chart> {
    let s = &outcome.series;
    let mut out = vec![Chart {
        x_label: "hours".into(),
        title: "Request rate".into(),
        y_label: "requests/s".into(),
        lines: lines_with_prefix(s, "rps:", "rps:"),
        refs: vec![],
    }];
    for svc in &outcome.summary.services {
        let prefix = format!("replicas:{}:", svc.name);
        out.push(Chart {
            x_label: "hours".into(),
            title: format!("Replicas per unit — {}", svc.name),
            y_label: "replicas".into(),
            lines: lines_with_prefix(s, &prefix, &prefix)
                .into_iter()
                .map(|(n, v)| {
                    (
                        if n == "-" {
                            "outside units".into()
                        } else {
                            format!("unit {n}")
                        },
                        v,
                    )
                })
                .collect(),
            refs: vec![],
        });
        let mut lat = vec![
            (
                "TTFT p50".to_owned(),
                s.values(&format!("ttft_p50_s:{}", svc.name)),
            ),
            (
                "TTFT p95".to_owned(),
                s.values(&format!("ttft_p95_s:{}", svc.name)),
            ),
            (
                "e2e p50".to_owned(),
                s.values(&format!("e2e_p50_s:{}", svc.name)),
            ),
            (
                "e2e p95".to_owned(),
                s.values(&format!("e2e_p95_s:{}", svc.name)),
            ),
        ];
        lat.retain(|(_, v)| !v.is_empty());
        out.push(Chart {
            x_label: "hours".into(),
            title: format!("Latency per minute vs SLO — {}", svc.name),
            y_label: "seconds".into(),
            lines: lat,
            refs: slo_ttft
                .iter()
                .filter(|(n, _)| *n == svc.name)
                .map(|(_, v)| ("TTFT SLO".to_owned(), *v))
                .collect(),
        });
    }
    let mut gpus = lines_with_prefix(s, "gpus:", "gpus:");
    for (n, v) in lines_with_prefix(s, "gpus_used:", "gpus_used:") {
        gpus.push((format!("{n} (held by replicas)"), v));
    }
    out.push(Chart {
        x_label: "hours".into(),
        title: "GPUs per pool".into(),
        y_label: "GPUs".into(),
        lines: gpus,
        refs: vec![],
    });
    out.push(Chart {
        x_label: "hours".into(),
        title: "Cumulative cost".into(),
        y_label: "cost".into(),
        lines: lines_with_prefix(s, "cost:", "cost:"),
        refs: vec![],
    });
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The self-contained HTML report.
#[must_use]
pub fn html(outcome: &Outcome, slo_ttft: &[(String, f64)]) -> String {
    let sum = &outcome.summary;
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
         <style>body{{font-family:sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse;margin:8px 0 20px}}\
         td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}th{{background:#f3f3f3}}td:first-child,th:first-child{{text-align:left}}\
         .ok{{color:#080}}.bad{{color:#b00}}figure{{margin:0 0 16px}}</style></head><body>",
        esc(&sum.scenario)
    );
    let _ = write!(
        h,
        "<h1>Spillway simulation: {}</h1><p>Seed {} · {:.1} simulated hours · total cost <b>{:.2}</b> · {:.1} GPU-hours · spill fraction <b>{:.1}%</b> · {} pods created · pod pending time p50 {:.0}s / p95 {:.0}s</p>",
        esc(&sum.scenario),
        sum.seed,
        sum.duration_s / 3600.0,
        sum.cost_total,
        sum.gpu_hours_total,
        sum.spill_fraction * 100.0,
        sum.pods_created,
        sum.pending_time.p50,
        sum.pending_time.p95
    );
    for line in spill_back_line(sum).into_iter().chain(headroom_line(sum)) {
        let _ = write!(h, "<p>{}</p>", esc(&line));
    }
    h.push_str("<h2>Services</h2><table><tr><th>service</th><th>requests</th><th>TTFT p50</th><th>TTFT p95</th><th>TTFT p99</th><th>e2e p50</th><th>e2e p95</th><th>SLO attainment</th><th>peak replicas</th><th>scale events</th></tr>");
    for s in &sum.services {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{:.2}s</td><td>{:.2}s</td><td>{:.2}s</td><td>{:.1}s</td><td>{:.1}s</td><td class=\"{}\">{} (target {:.0}%)</td><td>{}</td><td>{}</td></tr>",
            esc(&s.name),
            s.requests.arrived,
            s.ttft.p50,
            s.ttft.p95,
            s.ttft.p99,
            s.e2e.p50,
            s.e2e.p95,
            if s.slo.met { "ok" } else { "bad" },
            percent(s.slo.attainment),
            s.slo.target * 100.0,
            s.peak_replicas,
            s.scale_events
        );
    }
    h.push_str("</table><h2>Pools</h2><table><tr><th>pool</th><th>kind</th><th>GPU-hours</th><th>GPU-hours held</th><th>cost</th><th>nodes provisioned</th><th>peak nodes</th></tr>");
    for p in &sum.pools {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.2}</td><td>{}</td><td>{}</td></tr>",
            esc(&p.name),
            p.kind,
            p.gpu_hours,
            p.gpu_hours_used,
            p.cost,
            p.nodes_provisioned,
            p.peak_nodes
        );
    }
    h.push_str("</table><h2>Charts</h2>");
    for chart in charts(outcome, slo_ttft) {
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
    h.push_str("<h2>Scale events</h2><table><tr><th>hour</th><th>service</th><th>from</th><th>to</th><th>reason</th></tr>");
    for e in outcome.scale_events.iter().take(500) {
        let _ = write!(
            h,
            "<tr><td>{:.3}</td><td>{}</td><td>{}</td><td>{}</td><td style=\"text-align:left\">{}</td></tr>",
            e.t_s / 3600.0,
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

/// The time series as CSV.
#[must_use]
pub fn csv(series: &Series) -> String {
    let mut out = series.columns.join(",");
    out.push('\n');
    for row in &series.rows {
        let cells: Vec<String> = row.iter().map(|v| format!("{v:.6}")).collect();
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
pub fn write_dir(dir: &Path, outcome: &Outcome, slo_ttft: &[(String, f64)]) -> anyhow::Result<()> {
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
    std::fs::write(dir.join("index.html"), html(outcome, slo_ttft))?;
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
        "\ntotal cost {:.2} · {:.1} GPU-hours · spill fraction {:.1}% of replica-hours in cloud pools · pod pending p50 {:.0}s p95 {:.0}s",
        sum.cost_total,
        sum.gpu_hours_total,
        sum.spill_fraction * 100.0,
        sum.pending_time.p50,
        sum.pending_time.p95
    );
    for line in spill_back_line(sum).into_iter().chain(headroom_line(sum)) {
        let _ = writeln!(t, "{line}");
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
                "{} TTFT p95 {:.1} s (without {:.1} s), SLO {:.2}% (without {:.2}%)",
                s.name,
                at(&hr.ttft_p95_s),
                at(&hr.baseline_ttft_p95_s),
                at(&hr.slo_attainment) * 100.0,
                at(&hr.baseline_slo_attainment) * 100.0
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

/// A share as a percentage with two decimals, never rounded up to 100.00 %
/// (or down to 0.00 %) unless it is exactly 1 (or 0): an SLO attainment of
/// 99.996 % is not 100 %.
#[must_use]
pub fn percent(share: f64) -> String {
    let v = share * 100.0;
    if share < 1.0 && v >= 99.995 {
        "99.99%".to_owned()
    } else if share > 0.0 && v < 0.005 {
        "0.01%".to_owned()
    } else {
        format!("{v:.2}%")
    }
}

/// The plan report: cost and SLO attainment over the swept values.
#[must_use]
pub fn plan_html(p: &crate::plan::Plan) -> String {
    let x: Vec<f64> = p.points.iter().map(|q| q.value).collect();
    let cost = Chart {
        x_label: p.key.clone(),
        title: format!("Cost by {}", p.key),
        y_label: "cost".into(),
        lines: vec![
            ("total".into(), p.points.iter().map(|q| q.cost).collect()),
            (
                "data center".into(),
                p.points.iter().map(|q| q.cost_datacenter).collect(),
            ),
            (
                "cloud".into(),
                p.points.iter().map(|q| q.cost_cloud).collect(),
            ),
        ],
        refs: vec![],
    };
    let target = p.points.iter().map(|q| q.slo_target).fold(0.0, f64::max);
    let slo = Chart {
        x_label: p.key.clone(),
        title: format!("SLO attainment by {}", p.key),
        y_label: "attainment".into(),
        lines: vec![(
            "worst service".into(),
            p.points.iter().map(|q| q.attainment).collect(),
        )],
        refs: vec![(format!("SLO target {}", percent(target)), target)],
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
    fn percentages_are_never_rounded_to_a_perfect_or_empty_score() {
        assert_eq!(percent(1.0), "100.00%");
        assert_eq!(percent(0.999_96), "99.99%");
        assert_eq!(percent(0.999_94), "99.99%");
        assert_eq!(percent(0.9512), "95.12%");
        assert_eq!(percent(0.000_01), "0.01%");
        assert_eq!(percent(0.0), "0.00%");
    }
}
