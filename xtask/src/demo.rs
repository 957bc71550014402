//! `cargo xtask demo`: the main job on a built-in default.
//!
//! Installs what is missing (fuse3 for fusermount3), builds the kernels with clang, then runs
//! the demo program (`host-shell/examples/demo.rs`) in release mode: make a device with a file
//! system, mount it with FUSE in a temporary directory, write data with ordinary file I/O,
//! offload the entropy kernel with `setxattr user.csd.file_job`, compute the same result by
//! reading the file, show the bytes that crossed the host link for each, and unmount.

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
