//! `spillway-sim`: run a scenario, sweep a parameter, or validate a file.
//! `main` parses the command line and calls the library.

use std::fmt::Write as _;
use std::io::{ErrorKind, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use spillway_sim::outcome::Outcome;
use spillway_sim::plan::{self, SloOverride};
use spillway_sim::scenario::{self, Compiled, Dur};
use spillway_sim::{report, simulate_with_baseline};

/// Capacity planner for Spillway: replays real traffic through the same
/// placement, scaling and node-group decisions the cluster components make.
#[derive(Debug, Parser)]
#[command(name = "spillway-sim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario (the built-in hybrid-edge scenario when none is given).
    Run(RunArgs),
    /// Sweep one parameter and report the cheapest setting that meets the SLO.
    Plan(PlanArgs),
    /// Check a scenario file and report every error with its line or field.
    Validate {
        /// Scenario file (YAML).
        scenario: PathBuf,
    },
    /// Measure a performance profile (`perf: {kind: profile}`) from a live
    /// OpenAI-compatible endpoint (vLLM, NIM) with a bounded probe.
    Profile(ProfileArgs),
}

#[derive(Debug, Args)]
struct ProfileArgs {
    /// Base URL of the server (plain HTTP), e.g. `http://127.0.0.1:8000`.
    #[arg(long)]
    url: String,
    /// Model name (default: the first listed by `/v1/models`).
    #[arg(long)]
    model: Option<String>,
    /// Environment variable holding a bearer token for the server.
    #[arg(long, value_name = "VAR")]
    api_key_env: Option<String>,
    /// Prompt lengths for the prefill table, tokens.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "128,256,512,1024,2048,4096"
    )]
    prompt_tokens: Vec<u32>,
    /// Batch sizes for the decode table.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32")]
    batches: Vec<u32>,
    /// Requests per prompt length (the median is kept).
    #[arg(long, default_value_t = 3)]
    repeats: u32,
    /// Tokens each decode request generates.
    #[arg(long, default_value_t = 64)]
    decode_tokens: u32,
    /// Timeout of one request.
    #[arg(long, value_parser = parse_dur, default_value = "120s")]
    timeout: Dur,
    /// Leave out vLLM's `ignore_eos` and `min_tokens` request fields.
    #[arg(long)]
    plain: bool,
    /// The server prefills long prompts in chunks (vLLM `--enable-chunked-prefill`).
    #[arg(long)]
    chunked_prefill: bool,
    /// The server's tokens per iteration (vLLM `--max-num-batched-tokens`).
    #[arg(long)]
    token_budget: Option<u32>,
    /// The server's requests at once (vLLM `--max-num-seqs`).
    #[arg(long)]
    max_batch: Option<u32>,
    /// Where to write the profile (JSON).
    #[arg(long, short, default_value = "profile.json")]
    out: PathBuf,
}

#[derive(Debug, Args)]
struct Common {
    /// Report directory.
    #[arg(long, short, default_value = "spillway-report")]
    out: PathBuf,
    /// No progress bar, no table.
    #[arg(long, short)]
    quiet: bool,
    /// Print the summary as JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Scenario file (YAML); the built-in scenario when absent.
    scenario: Option<PathBuf>,
    /// Override the scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Override the scenario's duration (e.g. `6h`).
    #[arg(long, value_parser = parse_dur)]
    duration: Option<Dur>,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct PlanArgs {
    /// Scenario file (YAML), or `builtin`.
    scenario: String,
    /// Parameter to sweep: `KEY=A..B[:STEP]` or `KEY=a,b,c`, e.g. `pools.datacenter.nodes=1..6`.
    #[arg(long)]
    vary: String,
    /// TTFT objective for every service (overrides the scenario's `slo.ttft`).
    #[arg(long, value_parser = parse_dur)]
    slo: Option<Dur>,
    /// Share of requests that must meet it (overrides `slo.target`).
    #[arg(long)]
    slo_target: Option<f64>,
    /// Runs at once (default: the machine's cores).
    #[arg(long)]
    jobs: Option<usize>,
    #[command(flatten)]
    common: Common,
}

fn parse_dur(s: &str) -> Result<Dur, String> {
    spillway::decision::time::parse_duration(s)
        .map(Dur)
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `text` to stdout through one lock and flushes it. A reader that
/// stopped early (`spillway-sim run | head`) ends the output quietly: a
/// broken pipe is not an error, so the command still exits 0.
fn print_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to stdout"),
    }
}

/// Prints the scenario's warnings (units no pool's nodes belong to) on stderr.
fn warn(c: &Compiled) {
    for w in c.warnings() {
        eprintln!("warning: {w}");
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate { scenario } => match scenario::load(&scenario) {
            Ok(c) => {
                warn(&c);
                print_stdout(&format!(
                    "{}: ok ({} pools, {} services, {} policies, {} simulated)\n",
                    scenario.display(),
                    c.scenario.pools.len(),
                    c.services.len(),
                    c.policies.len(),
                    spillway::decision::time::format_duration(c.scenario.duration.0)
                ))?;
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Run(args) => run_one(args),
        Command::Plan(args) => run_plan(args),
        Command::Profile(args) => run_profile(args),
    }
}

fn run_profile(args: ProfileArgs) -> anyhow::Result<ExitCode> {
    let api_key = match &args.api_key_env {
        Some(var) => {
            Some(std::env::var(var).with_context(|| format!("--api-key-env {var}: not set"))?)
        }
        None => None,
    };
    let cfg = spillway_sim::probe::ProbeConfig {
        url: args.url,
        model: args.model,
        api_key,
        prompt_tokens: args.prompt_tokens,
        batches: args.batches,
        repeats: args.repeats,
        decode_tokens: args.decode_tokens,
        timeout: args.timeout.0,
        plain: args.plain,
        chunked_prefill: args.chunked_prefill.then_some(true),
        token_budget: args.token_budget,
        max_batch: args.max_batch,
    };
    if let Err(e) = cfg.check() {
        anyhow::bail!(e);
    }
    let (prompt, generated) = cfg.token_bound();
    eprintln!(
        "probing {}: {} requests, at most {} at once, at most {prompt} prompt and {generated} generated tokens",
        cfg.url,
        cfg.request_count(),
        cfg.max_concurrency()
    );
    let spec = spillway_sim::probe::measure(&cfg, |line| eprintln!("  {line}"))?;
    // The profile must compile as the simulator will use it (a service
    // without its own maxBatch).
    spillway_sim::perf::PerfModel::from_spec_in(
        &spillway_sim::perf::PerfSpec::Profile(spec.clone()),
        None,
        Path::new("."),
    )
    .context("the measured profile breaks a rule (check --token-budget and --max-batch)")?;
    std::fs::write(&args.out, serde_json::to_string_pretty(&spec)? + "\n")
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "profile: {} (use it with perf: {{kind: profile, file: {}}})",
        args.out.display(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn progress_bar(quiet: bool, len: u64) -> indicatif::ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} simulating [{bar:40}] {percent}% {elapsed_precise} (eta {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn run_one(args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut compiled = match &args.scenario {
        Some(p) => scenario::load(p)?,
        None => scenario::builtin()?,
    };
    if let Some(seed) = args.seed {
        compiled.scenario.seed = seed;
    }
    if let Some(d) = args.duration {
        compiled.scenario.duration = d;
    }
    warn(&compiled);
    let bar = progress_bar(args.common.quiet, 1000);
    let started = Instant::now();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let outcome =
        simulate_with_baseline(&compiled, &mut |f| bar.set_position((f * 1000.0) as u64))?;
    let wall = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    report::write_dir(&args.common.out, &outcome, &compiled)?;
    print_outcome(&outcome, &args.common, wall)?;
    if !args.common.quiet {
        eprintln!("report: {}", args.common.out.join("index.html").display());
    }
    Ok(ExitCode::SUCCESS)
}

fn print_outcome(o: &Outcome, common: &Common, wall: f64) -> anyhow::Result<()> {
    if common.json {
        print_stdout(&(serde_json::to_string_pretty(&o.summary)? + "\n"))?;
    } else if !common.quiet {
        print_stdout(&report::table(&o.summary))?;
    }
    #[allow(clippy::cast_precision_loss)]
    let rate = o.summary.events as f64 / wall.max(1e-9);
    if !common.quiet {
        eprintln!(
            "{} events in {:.2}s wall: {:.1} M events/s (seed {})",
            o.summary.events,
            wall,
            rate / 1e6,
            o.summary.seed
        );
    }
    Ok(())
}

fn run_plan(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let sweep = plan::parse_sweep(&args.vary).map_err(anyhow::Error::msg)?;
    let (text, file, base) = if args.scenario == "builtin" {
        (
            scenario::DEFAULT_SCENARIO.to_owned(),
            "<built-in>".to_owned(),
            PathBuf::from("."),
        )
    } else {
        let p = Path::new(&args.scenario);
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        (
            text,
            args.scenario.clone(),
            p.parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
        )
    };
    let slo = SloOverride {
        ttft: args.slo,
        target: args.slo_target,
    };
    let variants = plan::variants(&text, &file, &base, &sweep, slo)?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
        .max(1);
    let bar = progress_bar(args.common.quiet, variants.len() as u64);
    let started = Instant::now();
    let outcomes =
        plan::run_variants(&variants, jobs, &|| bar.inc(1)).map_err(anyhow::Error::msg)?;
    bar.finish_and_clear();
    let points: Vec<plan::Point> = sweep
        .values
        .iter()
        .zip(&outcomes)
        .map(|(v, o)| plan::point(*v, o))
        .collect();
    let result = plan::Plan::new(&sweep.key, points);
    std::fs::create_dir_all(&args.common.out)?;
    std::fs::write(
        args.common.out.join("plan.json"),
        serde_json::to_string_pretty(&result)? + "\n",
    )?;
    std::fs::write(
        args.common.out.join("plan.html"),
        report::plan_html(&result),
    )?;
    if args.common.json {
        print_stdout(&(serde_json::to_string_pretty(&result)? + "\n"))?;
    } else if !args.common.quiet {
        let mut table = String::new();
        let _ = writeln!(
            table,
            "{:>12} {:>12} {:>12} {:>12} {:>16} {:>10} {:>8}",
            sweep.key.rsplit('.').next().unwrap_or(""),
            "cost",
            "data center",
            "cloud",
            "SLO attainment",
            "TTFT p95",
            "spill"
        );
        for p in &result.points {
            let _ = writeln!(
                table,
                "{:>12} {:>12.2} {:>12.2} {:>12.2} {:>15} {:>9.2}s {:>7.1}% {}",
                p.value,
                p.cost,
                p.cost_datacenter,
                p.cost_cloud,
                report::percent(p.attainment),
                p.ttft_p95_s,
                p.spill_fraction * 100.0,
                if p.meets_slo { "meets SLO" } else { "" }
            );
        }
        let _ = match &result.cheapest {
            Some(p) => writeln!(
                table,
                "\ncheapest setting that meets the SLO: {} = {} (cost {:.2})",
                sweep.key, p.value, p.cost
            ),
            None => writeln!(table, "\nno setting in the range meets the SLO"),
        };
        print_stdout(&table)?;
    }
    for w in &result.warnings {
        eprintln!("warning: {w}");
    }
    if !args.common.quiet {
        eprintln!(
            "{} runs in {:.1}s wall on {} threads; report: {}",
            outcomes.len(),
            started.elapsed().as_secs_f64(),
            jobs,
            args.common.out.join("plan.html").display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse_like_scenarios() {
        assert_eq!(parse_dur("6h").unwrap(), Dur::secs(6 * 3600));
        assert!(parse_dur("six hours").is_err());
    }
}
