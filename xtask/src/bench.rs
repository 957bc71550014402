//! `cargo xtask bench [--quick]`: the benchmark harness (`bench/`), in release mode, writing
//! `target/bench/report.json` and `report.md`.

use anyhow::Result;

use crate::{cmd, deps, kernels};

/// Builds the kernels and runs the harness.
pub fn run(quick: bool) -> Result<()> {
    deps::run()?;
    kernels::build()?;
    let root = crate::root();
    let mut cargo = cmd::cargo(&root);
    cargo.args([
        "run",
        "--locked",
        "--release",
        "-p",
        "bench",
        "--bin",
        "csd-bench",
        "--",
    ]);
    cargo
        .arg("--root")
        .arg(&root)
        .arg("--out")
        .arg(root.join("target/bench"));
    if quick {
        cargo.arg("--quick");
    }
    cmd::run(&mut cargo)
}
