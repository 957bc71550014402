//! `cargo xtask bench [--quick]`: the benchmark harness (`bench/`), in release mode, writing
//! `target/bench/report.json`, `report.md` and SVG plots. The board image is built first, so the
//! report carries the firmware's size.

use anyhow::Result;

use crate::{board, cmd, deps, kernels};

/// Builds the kernels and the board image, and runs the harness.
pub fn run(quick: bool) -> Result<()> {
    deps::run()?;
    kernels::build()?;
    board::build()?;
    let firmware = board::size(&board::elf_path(board::LINK))?;
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
        .arg(root.join("target/bench"))
        .arg("--firmware-text")
        .arg(firmware.code.to_string())
        .arg("--firmware-ram")
        .arg(firmware.ram.to_string());
    if quick {
        cargo.arg("--quick");
    }
    cmd::run(&mut cargo)
}
