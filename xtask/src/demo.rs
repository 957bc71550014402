//! `cargo xtask demo`: the main job on a built-in default.
//!
//! For now the end-to-end slice that exists: the kernels built with clang, and the real firmware
//! booted on the Cortex-R52 in QEMU. It grows into "make a device, mount it, write data, offload
//! a kernel, show the result and the bytes that crossed the link".

use anyhow::{bail, Result};

use crate::{board, deps, kernels};

/// Runs the demo.
pub fn run() -> Result<()> {
    deps::run()?;
    let objects = kernels::build()?;
    println!(
        "built {} eBPF kernels with {}",
        objects.len(),
        kernels::CLANG
    );
    let elf = board::build()?;
    let out = board::boot(&elf)?;
    println!("--- the firmware on a Cortex-R52 (QEMU mps3-an536) says:");
    print!("{}", out.stdout);
    if out.code != Some(0) {
        bail!(
            "the board exited with {:?}: {}",
            out.code,
            out.stderr.trim()
        );
    }
    Ok(())
}
