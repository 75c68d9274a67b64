//! `weft bench ...`: benchmarks that print figures.

use anyhow::Result;
use clap::Subcommand;

/// Benchmarks.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Failure detection, false positives under loss, coordinate accuracy, idle memory
    Membership,
}

/// Run a benchmark.
pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Membership => anyhow::bail!("not yet"),
    }
}
