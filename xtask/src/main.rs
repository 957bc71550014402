//! `cargo xtask`: the project's automation, one entry point for every check.
//!
//! - `deps`: install what the project needs on a bare Debian bookworm machine (as root), or say
//!   exactly what to install (otherwise).
//! - `test`: everything CI checks, in order: deps, formatting, lints, kernels, host tests, the
//!   Cortex-R builds of the firmware, the board image and its QEMU self-test, the POSIX
//!   suites, the short reliability campaign and the benchmarks' quick run.
//! - `demo`: the main job on a built-in default.
//! - `kernels`: build the C eBPF kernels with clang.
//! - `bench [--quick]`: measure csd against its peers.
//! - `board run|test|size|build`: the Cortex-R52 images in QEMU (the self-test also on a
//!   Cortex-R5F).
//! - `reliability [--long] [--minutes N]`: fuzzing, power loss through the whole stack and
//!   hostile inputs, with a summary.
//! - `posix [--fsx-ops N] [--fsx-seed S]`: pjdfstest against the csd mount and against bindfs
//!   over tmpfs, then fsx on the csd mount.

mod bench;
mod board;
mod cmd;
mod demo;
mod deps;
mod guest;
mod kernels;
mod posix;
mod reliability;
mod test;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Project automation for csd.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install the Debian packages and toolchains the project needs (idempotent).
    Deps,
    /// Run every check CI runs.
    Test,
    /// Make a device, put data on it, offload a kernel and show what crossed the link.
    Demo,
    /// Build the C kernels into target/kernels/.
    Kernels,
    /// Measure csd against its peers; writes target/bench/report.{json,md}.
    Bench {
        /// A small version that runs in seconds.
        #[arg(long)]
        quick: bool,
    },
    /// Fuzz every target, cut power under the file system, feed the hostile-input corpus;
    /// prints a summary.
    Reliability {
        /// Run for long: fuzzing and the time-budgeted sections share --minutes (default 10).
        #[arg(long)]
        long: bool,
        /// Minutes in total, half to fuzzing and half to the time-budgeted test binaries
        /// (implies --long).
        #[arg(long)]
        minutes: Option<u64>,
    },
    /// Run pjdfstest against a csd mount and bindfs over tmpfs (failing on tests only csd
    /// fails), then fsx on the csd mount; needs root.
    Posix(posix::Options),
    /// Unmount what a `posix` run left under DIR once stdin closes (started by that run).
    #[command(hide = true)]
    PosixJanitor { dir: PathBuf },
    /// Boot a Linux guest that attaches a running csd device over NVMe/TCP with Linux's own
    /// driver, and check what it sees (nvme-cli, blkzone, fio in zbd mode).
    Guest,
    /// Build, run, test or measure the Cortex-R52 board image.
    Board {
        #[command(subcommand)]
        action: board::Action,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Deps => deps::run(),
        Task::Test => test::run(),
        Task::Demo => demo::run(),
        Task::Kernels => kernels::build().map(|_| ()),
        Task::Bench { quick } => bench::run(quick),
        Task::Board { action } => board::run(action),
        Task::Guest => guest::run(),
        Task::Reliability { long, minutes } => reliability::run(long, minutes),
        Task::Posix(options) => posix::run(&options),
        Task::PosixJanitor { dir } => posix::janitor(&dir),
    };
    if let Err(err) = result {
        eprintln!("xtask: error: {err:#}");
        std::process::exit(1);
    }
}

/// The workspace root (the parent of this crate's folder).
fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}
