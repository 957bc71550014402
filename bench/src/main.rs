//! `csd-bench`: csd measured side by side with its peers, in one run on one machine.
//!
//! Writes `report.json` and `report.md` into `--out` (default `target/bench`). Every figure
//! records its sizes and repetitions (min/median/max) and is a ratio against a peer measured in
//! the same run. Figures that need parts not built yet are listed as not measured, never
//! estimated. Run it through `cargo xtask bench [--quick]`, which builds the kernels first.

mod executor;
mod report;

use std::{fmt::Write as _, path::PathBuf};

use anyhow::{Context, Result};
use clap::Parser;
use serde::Serialize;

/// csd's benchmark harness.
#[derive(Debug, Parser)]
#[command(name = "csd-bench")]
struct Cli {
    /// A small version that runs in seconds (the harness's own check in `cargo xtask test`).
    #[arg(long)]
    quick: bool,
    /// Where to write the report.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// The workspace root (kernels are read from its target/kernels).
    #[arg(long, default_value = ".")]
    root: PathBuf,
}

#[derive(Debug, Serialize)]
struct Executor {
    /// The smallest speedup over rbpf's interpreter across the kernels (the goal: at least 2).
    speedup_vs_rbpf_interp: f64,
    kernels: Vec<executor::KernelFigures>,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: report::Machine,
    quick: bool,
    executor: Executor,
    /// Figures of issue 8 that need parts that do not exist yet, with the reason.
    not_measured: Vec<(&'static str, &'static str)>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let (data_bytes, reps) = if cli.quick {
        (4 << 20, 1)
    } else {
        (64 << 20, 3)
    };
    let kernels = executor::run(&cli.root, data_bytes, reps)?;
    let speedup = kernels
        .iter()
        .map(|k| k.speedup_vs_rbpf_interp)
        .fold(f64::INFINITY, f64::min);
    let report = Report {
        machine: report::Machine::this(),
        quick: cli.quick,
        executor: Executor {
            speedup_vs_rbpf_interp: speedup,
            kernels,
        },
        not_measured: vec![
            (
                "offload.entropy",
                "needs the FUSE mount and offload xattrs (issue 6)",
            ),
            ("fs", "needs the FUSE mount (issue 6)"),
            ("concurrent", "needs the FUSE mount (issue 6)"),
            (
                "device.append",
                "to be moved here from `host-shell --example queue_throughput`",
            ),
            (
                "gc.write_amplification",
                "needs the file system's cleaner (issue 6)",
            ),
            ("firmware", "to be read from `cargo xtask board size`"),
        ],
    };
    std::fs::create_dir_all(&cli.out)
        .with_context(|| format!("could not create {}", cli.out.display()))?;
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(cli.out.join("report.json"), json)?;
    let md = markdown(&report);
    std::fs::write(cli.out.join("report.md"), &md)?;
    print!("{md}");
    Ok(())
}

fn markdown(report: &Report) -> String {
    let mut md = String::new();
    let m = &report.machine;
    let _ = writeln!(
        md,
        "# csd benchmark report{}\n",
        if report.quick { " (quick)" } else { "" }
    );
    let _ = writeln!(
        md,
        "Machine: {}, {} cores, {} GiB, {}.\n",
        m.cpu,
        m.cores,
        m.memory_bytes >> 30,
        m.os
    );
    let _ = writeln!(
        md,
        "## Executor (this executor vs rbpf 0.4, same linked C kernels, same data)\n"
    );
    let _ = writeln!(md, "| kernel | data | instructions | csd M insn/s | rbpf interp M insn/s | vs rbpf interp | vs rbpf JIT | vs native |");
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for k in &report.executor.kernels {
        let jit = k
            .speedup_vs_rbpf_jit
            .map_or("n/a".to_string(), |s| format!("{s:.2}x"));
        let _ = writeln!(
            md,
            "| {} | {} MiB | {} | {:.0} | {:.0} | {:.2}x | {} | {:.3}x |",
            k.kernel,
            k.data_bytes >> 20,
            k.instructions,
            k.csd_insns_per_s / 1e6,
            k.rbpf_interp_insns_per_s / 1e6,
            k.speedup_vs_rbpf_interp,
            jit,
            k.ratio_vs_native
        );
    }
    let reps = report.executor.kernels.first().map_or(0, |k| k.csd.reps);
    let _ = writeln!(md, "\nMedians of {reps} runs; min and max are in report.json. \"vs\" columns: peer time / csd time.\n");
    let _ = writeln!(md, "## Not measured yet\n");
    for (key, why) in &report.not_measured {
        let _ = writeln!(md, "- `{key}`: {why}");
    }
    md
}
