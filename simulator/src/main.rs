//! `spillway-sim`: replays traffic through Spillway's decision core to plan capacity.

use clap::{Parser, Subcommand};

/// Capacity planner for Spillway: replays real traffic through the same
/// placement and scaling decisions the cluster components make.
#[derive(Debug, Parser)]
#[command(name = "spillway-sim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario (the built-in one when none is given).
    Run {
        /// Scenario file (YAML).
        scenario: Option<std::path::PathBuf>,
    },
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { .. } => {
            eprintln!("spillway-sim: the simulator engine is not built yet");
            std::process::exit(2);
        }
    }
}
