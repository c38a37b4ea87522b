//! The `spillway` binary: parses the command line and runs it.

use clap::Parser;

/// mimalloc keeps freed pages for reuse: a 5,000-node Filter allocates a few
/// hundred kilobytes per request, which glibc's allocator would return to the
/// kernel and fault in again on the next request.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = spillway::cli::Cli::parse();
    match spillway::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
