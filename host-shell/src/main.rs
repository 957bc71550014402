//! `csd`: the command line of the csd computational storage device.

use clap::Parser;

/// Command line of the csd computational storage device.
#[derive(Debug, Parser)]
#[command(name = "csd", version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
