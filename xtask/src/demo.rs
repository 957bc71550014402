//! `cargo xtask demo`: the main job on a built-in default.
//!
//! Installs what is missing, builds the kernels with clang, then runs the demo program
//! (`host-shell/examples/demo.rs`) in release mode: make a device, write data, offload the
//! entropy kernel, compute the same result the regular way, and show the bytes that crossed the
//! host link for each.

use anyhow::Result;

use crate::{cmd, deps, kernels};

/// Runs the demo.
pub fn run() -> Result<()> {
    deps::run()?;
    kernels::build()?;
    cmd::run(cmd::cargo(&crate::root()).args([
        "run",
        "--locked",
        "--release",
        "-p",
        "host-shell",
        "--example",
        "demo",
    ]))
}
