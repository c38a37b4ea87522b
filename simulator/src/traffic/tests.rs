//! The traffic module's tests: sources, samplers and generators.

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
        let dir =
            std::env::temp_dir().join(format!("spillway-traffic-{}-{name}", std::process::id()));
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
    let mean = curve_mean_rate(&CurveSource::Bundled("m-large".into()), here()).unwrap() * scale;
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
    let trace_mean =
        trace.rows.iter().map(|r| f64::from(r.prompt)).sum::<f64>() / usize_f64(trace.rows.len());
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
fn normals_match_the_standard_normal() {
    let mut rng = Pcg64Mcg::seed_from_u64(5);
    let (mean, second, [below_half, beyond_two, in_tail]) = sample_stats(
        || standard_normal(&mut rng),
        [
            |z| z < 0.5,
            |z| z.abs() > 2.0,
            |z| z.abs() > 3.442_619_855_899,
        ],
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
        "2023-11-16T10:00:00+05 30",
        "2023-11-16T10:00:00 +0530",
        "2023-11-16T10:00:00+05:3x",
    ] {
        assert_eq!(parse_datetime_us(bad), None, "{bad}");
    }
}

#[test]
fn yaml_decodes_trace_and_envelope() {
    let t: TrafficSpec =
        serde_saphyr::from_str("kind: trace\nsource: conversation\nrateScale: 2\nrepeat: true\n")
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
