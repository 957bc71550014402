//! Puts `memory.x` on the linker's search path, so aarch32-rt's `link.x` finds it.

use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::copy("memory.x", out.join("memory.x")).expect("memory.x is readable");
    println!("cargo:rustc-link-search={}", out.display());
    // aarch32-rt's linker script, which includes memory.x. Passed from here rather than from
    // rustflags so that no RUSTFLAGS in the environment can drop it.
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    // defmt's linker script (the interned log strings the host decodes).
    println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");
}
