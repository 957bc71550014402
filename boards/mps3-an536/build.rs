//! Puts the memory map on the linker's search path as `memory.x`, so aarch32-rt's `link.x` finds
//! it: `memory-r52.x` (MPS3 AN536, Cortex-R52) or, for the Cortex-R5F build, `memory-r5f.x`.
//! Neither file is called `memory.x` itself: the linker would find that one in the package
//! folder (its working directory) before the search path. Also names the core for the
//! self-test's report.

use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target = env::var("TARGET").unwrap_or_default();
    let (memory, core) = if target.starts_with("armv7r") {
        ("memory-r5f.x", "Cortex-R5F")
    } else {
        ("memory-r52.x", "Cortex-R52")
    };
    fs::copy(memory, out.join("memory.x")).expect("the memory map is readable");
    println!("cargo:rustc-env=CSD_BOARD_CORE={core}");
    println!("cargo:rustc-link-search={}", out.display());
    // aarch32-rt's linker script, which includes memory.x. Passed from here rather than from
    // rustflags so that no RUSTFLAGS in the environment can drop it.
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    // defmt's linker script (the interned log strings the host decodes).
    println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
    println!("cargo:rerun-if-changed=memory-r52.x");
    println!("cargo:rerun-if-changed=memory-r5f.x");
    println!("cargo:rerun-if-changed=build.rs");
}
