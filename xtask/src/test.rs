//! `cargo xtask test`: every check CI runs, in the order that fails fastest.

use std::time::Instant;

use anyhow::{Context, Result};

use crate::{board, cmd, deps, kernels};

/// The Cortex-R targets the firmware must build for: building it there proves it is `no_std`.
pub const CORTEX_R_TARGETS: [&str; 2] = ["armv8r-none-eabihf", "armv7r-none-eabihf"];

type StepFn = fn() -> Result<()>;

/// Runs every step; stops at the first failure, naming it.
pub fn run() -> Result<()> {
    let steps: &[(&str, StepFn)] = &[
        ("deps", deps::run),
        ("fmt", fmt),
        ("kernels", || kernels::build().map(|_| ())),
        ("clippy", clippy),
        // Before the host tests: they drive the board's link image in QEMU.
        ("board in QEMU", board::test),
        ("host tests", host_tests),
        // Linux's nvme-tcp driver in a guest attaches a running device (seconds, under TCG).
        ("guest over NVMe/TCP", crate::guest::run),
        ("firmware on Cortex-R", cortex_r_builds),
        // pjdfstest on csd and on bindfs over tmpfs, fsx on csd: one to two minutes.
        ("posix suites", crate::posix::test),
        // Each fuzz target for seconds, the power-loss sweep and the hostile-input corpus.
        ("reliability", || crate::reliability::run(false, None)),
        // The harness's quick run, so it never rots; no figure is asserted.
        ("bench --quick", || crate::bench::run(true)),
    ];
    let mut done = Vec::new();
    for (name, step) in steps {
        eprintln!("\n==> {name}");
        let started = Instant::now();
        step().with_context(|| format!("step `{name}` failed"))?;
        done.push((*name, started.elapsed()));
    }
    eprintln!("\nxtask test: all steps passed");
    for (name, took) in done {
        eprintln!("  {name:<22} {:>7.1} s", took.as_secs_f64());
    }
    Ok(())
}

fn fmt() -> Result<()> {
    let root = crate::root();
    cmd::run(cmd::cargo(&root).args(["fmt", "--all", "--", "--check"]))?;
    for manifest in [
        "boards/mps3-an536/Cargo.toml",
        "fuzz/Cargo.toml",
        "kernels/rust/Cargo.toml",
    ] {
        cmd::run(cmd::cargo(&root).args([
            "fmt",
            "--all",
            "--manifest-path",
            manifest,
            "--",
            "--check",
        ]))?;
    }
    Ok(())
}

fn clippy() -> Result<()> {
    let root = crate::root();
    cmd::run(cmd::cargo(&root).args([
        "clippy",
        "--locked",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The firmware alone, without the emulator feature the rest of the workspace turns on: the
    // code that ships to the controller. (Debian's cross toolchain has no clippy, so the
    // firmware is linted on the host target; the Cortex-R builds below prove it is no_std.)
    cmd::run(cmd::cargo(&root).args([
        "clippy", "--locked", "-p", "firmware", "--lib", "--", "-D", "warnings",
    ]))
}

/// Every test, but the campaign binaries' budgeted tests: the reliability step runs those and
/// reads their summaries, so they run once.
fn host_tests() -> Result<()> {
    cmd::run(cmd::cargo(&crate::root()).args([
        "test",
        "--locked",
        "--workspace",
        "--",
        "--skip",
        crate::reliability::CAMPAIGN_MODULE,
    ]))
}

fn cortex_r_builds() -> Result<()> {
    let root = crate::root();
    for target in CORTEX_R_TARGETS {
        // Warnings are errors here too: Cortex-R-only code has no other lint.
        cmd::run(
            cmd::cross_cargo(&root)
                .env("RUSTFLAGS", "-Dwarnings")
                .args([
                    "build",
                    "--locked",
                    "-p",
                    "firmware",
                    "--release",
                    "--target",
                    target,
                    "-Zbuild-std=core,alloc",
                    "--target-dir",
                    "target/cross",
                ]),
        )?;
    }
    Ok(())
}
