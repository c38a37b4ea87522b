//! End-to-end checks of the simulator: queueing theory, the seed scenario,
//! determinism and scenario validation.

use std::path::Path;

use spillway_sim::outcome::Outcome;
use spillway_sim::scenario::{self, Compiled};
use spillway_sim::{report, simulate};

fn run(c: &Compiled) -> Outcome {
    simulate(c, &mut |_| {}).expect("simulation runs")
}

fn scenario_file(name: &str) -> Compiled {
    scenario::load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("scenarios")
            .join(name),
    )
    .expect("scenario loads")
}

/// Erlang C: mean wait in queue of an M/M/c system.
fn erlang_c_wait(lambda: f64, mu: f64, c: u32) -> f64 {
    let a = lambda / mu;
    let rho = a / f64::from(c);
    let mut term = 1.0;
    let mut sum = 0.0;
    for k in 0..c {
        if k > 0 {
            term *= a / f64::from(k);
        }
        sum += term;
    }
    let last = term * a / f64::from(c) / (1.0 - rho);
    let p_wait = last / (sum + last);
    p_wait / (f64::from(c) * mu - lambda)
}

#[test]
fn mean_wait_matches_erlang_c_with_fixed_replicas_and_exponential_service() {
    // 4 replicas, one request at a time, a central queue: M/M/4 at rho = 0.75.
    // Service = 1 ms per output token after the first, output tokens
    // 1 + floor(Exp(mean 200)) so service time is geometric ≈ exponential.
    let theta: f64 = 200.0;
    let mean_steps = 1.0 / ((1.0 / theta).exp() - 1.0);
    let mu = 1000.0 / mean_steps; // per second
    let c = 4;
    let lambda = 0.75 * f64::from(c) * mu;
    let yaml = format!(
        r"
name: erlang-c
seed: 11
duration: 40h
sampleInterval: 1h
pools:
- {{name: dc, kind: datacenter, nodes: 4, gpusPerNode: 1, labels: {{pool: dc}}}}
services:
- name: mmc
  gpusPerReplica: 1
  replicas: {c}
  perf: {{kind: fixed, prefillUsPerToken: 0, decodeUsPerToken: 1000, overheadUs: 0}}
  maxBatch: 1
  routing: central-queue
  slo: {{ttft: 1s}}
  traffic:
    kind: poisson
    ratePerSecond: {lambda}
    promptTokens: 1
    outputTokens: {{kind: geometric, mean: {theta}}}
"
    );
    let compiled = scenario::parse(&yaml, "erlang-c", Path::new(".")).expect("valid");
    let o = run(&compiled);
    let s = &o.summary.services[0];
    let want = erlang_c_wait(lambda, mu, c);
    let got = s.queue.mean;
    assert!(
        s.requests.completed > 1_500_000,
        "long run: {} requests",
        s.requests.completed
    );
    assert!(
        (got - want).abs() / want < 0.02,
        "mean wait {got:.5}s vs Erlang C {want:.5}s ({:.2}% off)",
        (got - want).abs() / want * 100.0
    );
}

#[test]
fn seed_burst_scales_to_three_with_two_cloud_replicas_and_back() {
    let o = run(&scenario_file("seed-burst.yaml"));
    let s = &o.summary;
    let svc = &s.services[0];
    assert_eq!(svc.peak_replicas, 3, "scale events: {:?}", o.scale_events);
    let cloud_replicas = o.series.values("replicas:llm:cloud");
    let dc_replicas = o.series.values("replicas:llm:datacenter");
    assert_eq!(
        cloud_replicas.iter().copied().fold(0.0, f64::max),
        2.0,
        "two replicas on cloud nodes at the peak"
    );
    assert_eq!(dc_replicas.iter().copied().fold(0.0, f64::max), 1.0);
    let cloud_pool = s.pools.iter().find(|p| p.name == "cloud").unwrap();
    assert_eq!(
        cloud_pool.nodes_provisioned, 2,
        "exactly the nodes the burst needed"
    );
    assert_eq!(cloud_pool.nodes_removed, 2, "and removed after it");
    let last = o.series.rows.last().unwrap();
    let col = |n: &str| last[o.series.column(n).unwrap()];
    assert_eq!(col("replicas:llm"), 1.0, "back to one replica");
    assert_eq!(
        col("replicas:llm:datacenter"),
        1.0,
        "the survivor is the data-center replica"
    );
    assert_eq!(col("nodes:cloud"), 0.0, "no cloud nodes left");
    // Scale-in removed the cloud replicas first: the data-center replica never left.
    assert!(dc_replicas.iter().all(|&v| v == 1.0));
}

#[test]
fn same_scenario_and_seed_give_byte_identical_outputs() {
    let mut c = scenario::builtin().expect("built-in scenario is valid");
    c.scenario.duration = scenario::Dur::secs(3 * 3600);
    let a = run(&c);
    let b = run(&c);
    let ja = serde_json::to_string_pretty(&a.summary).unwrap();
    let jb = serde_json::to_string_pretty(&b.summary).unwrap();
    assert_eq!(ja, jb);
    assert_eq!(report::csv(&a.series), report::csv(&b.series));
    assert!(ja.contains("\"seed\": 42"), "the seed is echoed");
    // Requests drawn ahead on another thread or inline: the same run.
    for ahead in [true, false] {
        let e = spillway_sim::simulate_drawing_ahead(&c, ahead, &mut |_| {}).expect("runs");
        assert_eq!(
            serde_json::to_string_pretty(&e.summary).unwrap(),
            ja,
            "ahead: {ahead}"
        );
        assert_eq!(
            report::csv(&e.series),
            report::csv(&a.series),
            "ahead: {ahead}"
        );
    }
    c.scenario.seed = 43;
    let d = run(&c);
    assert_ne!(
        serde_json::to_string_pretty(&d.summary).unwrap(),
        ja,
        "another seed, another run"
    );
}

#[test]
fn validation_names_line_and_field() {
    let bad_yaml = "name: x\nduration: 1h\npools:\n- name: a\n  kind: datacenter\n  nodez: 1\n";
    let e = scenario::parse(bad_yaml, "bad.yaml", Path::new("."))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bad.yaml") && e.contains("nodez") && e.contains('6'),
        "{e}"
    );
    let semantic = "name: x\nduration: 1h\npools:\n- {name: a, kind: cloud, gpusPerNode: 0, maxNodes: 0}\nservices: []\n";
    let e = scenario::parse(semantic, "sem.yaml", Path::new("."))
        .unwrap_err()
        .to_string();
    for field in ["pools[0].gpusPerNode", "pools[0].maxNodes", "services"] {
        assert!(e.contains(field), "{field} missing in {e}");
    }
}

#[test]
fn policy_errors_in_a_scenario_name_the_policy_field() {
    let text = scenario::DEFAULT_SCENARIO.replace(
        "strategy: prefer",
        "strategy: prefer\n    ignorePreviousPod: true",
    );
    let e = scenario::parse(&text, "s.yaml", Path::new("."))
        .unwrap_err()
        .to_string();
    assert!(e.contains("policies[0].spec.ignorePreviousPod"), "{e}");
}

#[test]
fn query_lag_delays_the_scaler_by_the_lag() {
    let base = scenario_file("seed-burst.yaml");
    let mut lagged = base.clone();
    lagged.scenario.metrics.query_lag = scenario::Dur::secs(300);
    let first_up = |c: &Compiled| {
        run(c)
            .scale_events
            .iter()
            .find(|e| e.to > e.from)
            .map(|e| e.t_s)
            .unwrap()
    };
    let (fast, slow) = (first_up(&base), first_up(&lagged));
    assert!(
        slow >= fast + 300.0 - 15.0,
        "scale-up at {fast}s without lag, {slow}s with a 5m lag"
    );
    assert!(
        slow <= fast + 300.0 + 30.0,
        "scale-up at {fast}s without lag, {slow}s with a 5m lag"
    );
}

/// Spill-back in the simulator runs the core's rule: on the bundled
/// offset-peak scenario it moves pods home, and the summary compares the
/// run against the same scenario and seed without it.
#[test]
fn spill_back_moves_pods_home_and_reports_what_it_saved() {
    let c = scenario_file("spill-back.yaml");
    assert!(c.policies.iter().all(|p| p.spill_back.is_some()));
    let with = spillway_sim::simulate_with_baseline(&c, &mut |_| {}).expect("runs");
    let sb = with.summary.spill_back.clone().expect("spill-back summary");
    assert!(sb.evictions > 0, "{sb:?}");
    // The baseline is the same scenario without spill-back, run apart.
    let mut without = c.clone();
    for p in &mut without.policies {
        p.spill_back = None;
    }
    let base = run(&without);
    assert!(base.summary.spill_back.is_none());
    assert_eq!(sb.baseline_cost_total, base.summary.cost_total);
    assert!((sb.cost_saved - (base.summary.cost_total - with.summary.cost_total)).abs() < 1e-9);
    let cloud_used = |o: &Outcome| -> f64 {
        o.summary
            .pools
            .iter()
            .filter(|p| p.kind == "cloud")
            .map(|p| p.gpu_hours_used)
            .sum()
    };
    assert_eq!(sb.baseline_cloud_gpu_hours_used, cloud_used(&base));
    assert_eq!(sb.cloud_gpu_hours_used, cloud_used(&with));
    // Moving pods home holds fewer cloud GPU-hours, and the SLO holds.
    assert!(
        sb.cloud_gpu_hours_used < sb.baseline_cloud_gpu_hours_used,
        "{sb:?}"
    );
    for s in &with.summary.services {
        assert!(s.slo.met, "{}", s.name);
    }
    assert!(report::table(&with.summary).contains("spill-back: "));
    // A scenario without spill-back runs once and says nothing of it.
    let plain =
        spillway_sim::simulate_with_baseline(&scenario_file("seed-burst.yaml"), &mut |_| {})
            .expect("runs");
    assert!(plain.summary.spill_back.is_none());
    assert!(!report::table(&plain.summary).contains("spill-back"));
}

/// A GpuAutoscaler manifest for the seed-burst service (1–3 replicas) with
/// the metrics list `metrics` (YAML list items at two spaces).
fn gpu_autoscaler(metrics: &str) -> String {
    format!(
        "apiVersion: scheduling.spillway.io/v1alpha1\nkind: GpuAutoscaler\n\
         metadata: {{name: llm, namespace: default}}\nspec:\n\
         \x20 scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: llm}}\n\
         \x20 minReplicas: 1\n  maxReplicas: 3\n\
         \x20 prometheus: {{url: \"http://prometheus:9090\"}}\n\
         \x20 metrics:\n  {metrics}\n"
    )
}

/// The seed-burst scenario with its HPA `autoscaler:` replaced by a
/// GpuAutoscaler manifest file (the one a user would apply to the cluster).
fn seed_burst_with_gpu_autoscaler(manifest: &str) -> Result<Compiled, scenario::ScenarioError> {
    let dir = std::env::temp_dir().join(format!(
        "spillway-sim-gpuas-{}-{}",
        std::process::id(),
        manifest.len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("scaler.yaml"), manifest).unwrap();
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/seed-burst.yaml"),
    )
    .unwrap();
    let start = text.find("  autoscaler:\n").unwrap();
    let end = text.find("policies:\n").unwrap();
    let text = format!(
        "{}  gpuAutoscaler: scaler.yaml\n{}",
        &text[..start],
        &text[end..]
    );
    let out = scenario::parse(&text, "seed-burst-gpuas.yaml", &dir);
    let _ = std::fs::remove_dir_all(&dir);
    out
}

#[test]
fn a_gpu_autoscaler_manifest_scales_the_simulation_as_its_hpa_equivalent_does() {
    let manifest =
        gpu_autoscaler("- type: GPU\n    gpu: {metric: DCGM_FI_DEV_GPU_UTIL, averageValue: 50}");
    let with_gpuas = run(&seed_burst_with_gpu_autoscaler(&manifest).expect("valid"));
    let with_hpa = run(&scenario_file("seed-burst.yaml"));
    // The same scale events (times and sizes); only the metric's name in
    // the reason differs ("gpu DCGM_FI_DEV_GPU_UTIL").
    let events = |o: &Outcome| -> Vec<(String, u32, u32)> {
        o.scale_events
            .iter()
            .map(|e| (format!("{:.0}", e.t_s), e.from, e.to))
            .collect()
    };
    assert_eq!(events(&with_gpuas), events(&with_hpa));
    assert_eq!(events(&with_hpa).len(), 3);
    assert_eq!(with_gpuas.summary.services[0].peak_replicas, 3);
}

#[test]
fn a_gpu_autoscaler_the_simulator_cannot_emulate_is_refused_naming_the_metric() {
    let manifest = gpu_autoscaler("- type: Query\n    query: {promql: \"sum(x)\", value: 1}");
    let e = seed_burst_with_gpu_autoscaler(&manifest)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("services[0].gpuAutoscaler")
            && e.contains("spec.metrics[0]: a PromQL query cannot be emulated"),
        "{e}"
    );
}

#[test]
fn a_gpu_autoscaler_latency_objective_scales_the_burst_and_back() {
    // TTFT p90 against 1 s over a 1-minute window: the burst pushes it
    // over and replicas are added; after it, p90 falls below half the
    // objective (or no request comes) and they go again.
    let manifest = gpu_autoscaler("- type: Latency\n    latency: {objective: 1s, window: 1m}");
    let o = run(&seed_burst_with_gpu_autoscaler(&manifest).expect("valid"));
    let ups = o.scale_events.iter().filter(|e| e.to > e.from).count();
    let downs = o.scale_events.iter().filter(|e| e.to < e.from).count();
    assert!(ups >= 1 && downs >= 1, "{:?}", o.scale_events);
    // No flapping: every scale-up comes before every scale-down (up with
    // the burst, down after it), none while the burst lasts.
    let first_down = o.scale_events.iter().position(|e| e.to < e.from).unwrap();
    assert!(
        o.scale_events[first_down..].iter().all(|e| e.to < e.from),
        "{:?}",
        o.scale_events
    );
    assert!(
        o.scale_events[first_down].t_s >= 7200.0,
        "{:?}",
        o.scale_events
    );
    assert!(
        o.scale_events.iter().all(|e| e.reason.contains("latency")),
        "{:?}",
        o.scale_events
    );
    let last = o.series.rows.last().unwrap();
    assert_eq!(
        last[o.series.column("replicas:llm").unwrap()],
        1.0,
        "back to one replica"
    );
}

/// One replica serving Poisson traffic through an inline profile with `extra`
/// added to its `perf:` section; (TTFT p50, end-to-end p50), seconds.
fn profile_run(extra: &str, decode: &str) -> (f64, f64) {
    let yaml = format!(
        r"
name: profile-engine
seed: 5
duration: 2h
sampleInterval: 10m
pools:
- {{name: dc, kind: datacenter, nodes: 1, gpusPerNode: 1}}
services:
- name: svc
  gpusPerReplica: 1
  replicas: 1
  maxBatch: 16
  perf:
    kind: profile
    overheadMs: 4
    prefill: [{{promptTokens: 256, ms: 30}}, {{promptTokens: 4096, ms: 420}}]
    decode: {decode}
{extra}
  slo: {{ttft: 5s}}
  traffic:
    kind: poisson
    ratePerSecond: 1.5
    promptTokens: {{kind: uniform, min: 200, max: 4000}}
    outputTokens: {{kind: uniform, min: 50, max: 300}}
"
    );
    let c = scenario::parse(&yaml, "profile-engine", Path::new(".")).expect("valid");
    let s = &run(&c).summary.services[0];
    (s.ttft.p50, s.e2e.p50)
}

const FLAT_DECODE: &str = "[{batch: 1, ms: 20}, {batch: 16, ms: 35}]";

#[test]
fn chunked_prefill_delays_the_first_token_and_keeps_the_work_the_same() {
    let (ttft_whole, e2e_whole) = profile_run("", FLAT_DECODE);
    let (ttft_chunked, e2e_chunked) = profile_run(
        "    chunkedPrefill: true\n    tokenBudget: 512",
        FLAT_DECODE,
    );
    // Whole prefills pause every running request for up to 0.4 s; chunks
    // share iterations with the batch instead: a prompt's own prefill now
    // takes several iterations, each also carrying the batch's tokens, so
    // its first token comes later...
    assert!(
        ttft_chunked > 1.1 * ttft_whole,
        "{ttft_chunked} vs {ttft_whole}"
    );
    // ...while the work done is the same (less one overhead per shared
    // iteration), so requests take about as long in all.
    assert!(
        (e2e_chunked - e2e_whole).abs() < 0.1 * e2e_whole,
        "{e2e_chunked} vs {e2e_whole}"
    );
}

#[test]
fn decode_time_that_grows_with_context_slows_long_requests() {
    let (_, e2e_flat) = profile_run(
        "",
        "[{batch: 1, contextTokens: 1000, ms: 20}, {batch: 16, contextTokens: 1000, ms: 35}]",
    );
    let (_, e2e_context) = profile_run(
        "",
        "[{batch: 1, contextTokens: 1000, ms: 20}, {batch: 16, contextTokens: 1000, ms: 35},\n             {batch: 1, contextTokens: 4000, ms: 40}, {batch: 16, contextTokens: 4000, ms: 70}]",
    );
    // The same requests, but iterations over 1,000 tokens of mean context
    // (most of them: prompts are 200-4,000 tokens) take longer.
    assert!(e2e_context > 1.2 * e2e_flat, "{e2e_context} vs {e2e_flat}");
}
