//! Command-line interface of the `spillway` binary (clap derive).
//!
//! `main` only parses these and calls [`run`]; each subcommand's logic lives
//! in its own module.

use std::io::{ErrorKind, Write as _};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Spillway: GPU inference pods on data-center pools first, elastic cloud
/// pools on overflow.
#[derive(Debug, Parser)]
#[command(name = "spillway", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the CustomResourceDefinitions (or write them to a directory).
    Crd(CrdArgs),
    /// Explain where a pod would go under its ResourcePolicy, and why.
    Explain(ExplainArgs),
    /// Run the scheduler extender against the cluster (filter, prioritize,
    /// bind, preempt; metrics and probes on a second port).
    Serve(Box<crate::serve::ServeArgs>),
    /// Replica scaler tools.
    #[command(subcommand)]
    Scaler(ScalerCommand),
}

/// `spillway scaler` subcommands.
#[derive(Debug, Subcommand)]
pub enum ScalerCommand {
    /// Convert autoscaling/v2 HorizontalPodAutoscaler manifests into
    /// GpuAutoscalers (printed to stdout, with what did not carry over as
    /// comments).
    Convert(crate::scaler::convert::ConvertArgs),
}

/// Arguments of `spillway crd`.
#[derive(Debug, Args)]
pub struct CrdArgs {
    /// Write `resourcepolicy.yaml` and `compat/resourcepolicy.yaml` under
    /// this directory instead of printing every CRD to stdout.
    #[arg(long, env = "SPILLWAY_CRD_DIR")]
    pub output_dir: Option<PathBuf>,
    /// The oldest Kubernetes release the CRDs must install on (1.25 or
    /// later). From 1.28 the CEL rules carry `fieldPath`, so errors point
    /// at the field; older API servers reject that key.
    #[arg(long, value_parser = crate::crd::parse_kube_version, default_value = "1.25")]
    pub kube_version: (u32, u32),
}

/// Output format of `spillway explain`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A report for people (and tickets).
    #[default]
    Text,
    /// The same facts as JSON, for scripts.
    Json,
}

/// Arguments of `spillway explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// ResourcePolicy manifests (YAML or JSON; several documents per file allowed).
    #[arg(long = "policy", short = 'p', required = true, num_args = 1..)]
    pub policies: Vec<PathBuf>,
    /// Cluster snapshot: Nodes and Pods as `kubectl get nodes,pods -A -o yaml` prints them
    /// (a List, or several documents).
    #[arg(long = "cluster", short = 'c', required = true, num_args = 1..)]
    pub cluster: Vec<PathBuf>,
    /// The pod to place: a Pod manifest file, or `NAMESPACE/NAME` of a pod in the snapshot.
    #[arg(long)]
    pub pod: String,
    /// Nodes kube-scheduler's own filters would pass (comma-separated). By
    /// default every snapshot node that is not cordoned and has the free
    /// resources the pod requests.
    #[arg(long, value_delimiter = ',')]
    pub feasible: Option<Vec<String>>,
    /// Evaluate at this time (RFC 3339) instead of now; matters for
    /// `TimeoutOrExceedMax` waits and `ignorePreviousPod`.
    #[arg(long)]
    pub at: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

/// Runs a parsed command line.
///
/// # Errors
/// Whatever the subcommand reports; `main` prints it.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Crd(args) => crd(&args),
        Command::Serve(args) => crate::serve::run(&args),
        Command::Scaler(ScalerCommand::Convert(args)) => {
            print_stdout(&crate::scaler::convert::run(&args)?)
        }
        Command::Explain(args) => {
            let report = crate::explain::run(&args)?;
            print_stdout(&report)
        }
    }
}

/// Writes `text` to stdout through one lock and flushes it. A reader that
/// stopped early (`spillway crd | head`) ends the output quietly: a broken
/// pipe is not an error, so the command still exits 0.
///
/// # Errors
/// Any other write error.
fn print_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to stdout"),
    }
}

fn crd(args: &CrdArgs) -> anyhow::Result<()> {
    let files = crate::crd::crd_files_for(args.kube_version);
    match &args.output_dir {
        None => {
            let all: Vec<&str> = files.iter().map(|(_, yaml)| yaml.as_str()).collect();
            print_stdout(&all.join("---\n"))?;
        }
        Some(dir) => {
            for (rel, yaml) in files {
                let path = dir.join(rel);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&path, yaml)?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
