//! `cargo xtask kernels`: builds every kernel into `target/kernels/`.
//!
//! `kernels/*.c` become `target/kernels/<name>.o` (clang); the deliberately broken or hostile
//! kernels in `kernels/tests/*.c` become `target/kernels/tests/<name>.o`. The Rust kernels of
//! `kernels/rust/` become `target/kernels/<name>_rs.o`: the Debian cross toolchain builds each
//! for `bpfel-unknown-none` with `-Zbuild-std=core` as a static library (no linker runs) and
//! emits its LLVM bitcode, LTO'd with the SDK and core, which `llc-22` compiles to a BPF
//! object.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::cmd;

/// The clang the kernels are built with.
pub const CLANG: &str = "clang-19";

/// The LLVM compiler that turns the Rust kernels' bitcode into BPF objects.
pub const LLC: &str = "llc-22";

/// The Rust kernels (crates of `kernels/rust/`; `csd` is their SDK).
const RUST_KERNELS: [&str; 2] = ["entropy", "csv_filter"];

/// Builds all kernels; returns the objects written.
pub fn build() -> Result<Vec<PathBuf>> {
    let root = crate::root();
    if !cmd::on_path(CLANG) {
        bail!("{CLANG} is not installed: run `cargo xtask deps` (as root) to install it");
    }
    let out_dir = root.join("target/kernels");
    let mut built = Vec::new();
    for (src_dir, dst_dir) in [
        (root.join("kernels"), out_dir.clone()),
        (root.join("kernels/tests"), out_dir.join("tests")),
    ] {
        for src in c_files(&src_dir)? {
            fs::create_dir_all(&dst_dir)
                .with_context(|| format!("could not create {}", dst_dir.display()))?;
            let stem = src.file_stem().and_then(|s| s.to_str()).unwrap_or("kernel");
            let obj = dst_dir.join(format!("{stem}.o"));
            compile(&root, &src, &obj)?;
            built.push(obj);
        }
    }
    for name in RUST_KERNELS {
        let obj = out_dir.join(format!("{name}_rs.o"));
        build_rust(&root, name, &obj)?;
        built.push(obj);
    }
    eprintln!(
        "kernels: built {} objects into {}",
        built.len(),
        out_dir.display()
    );
    Ok(built)
}

/// Builds the Rust kernel `name` into `obj`.
fn build_rust(root: &Path, name: &str, obj: &Path) -> Result<()> {
    if !cmd::on_path(LLC) {
        bail!("{LLC} is not installed: run `cargo xtask deps` (as root) to install it");
    }
    let target_dir = root.join("target/kernels-rust");
    let deps = target_dir.join("bpfel-unknown-none/release/deps");
    cmd::run(
        cmd::cross_cargo(&root.join("kernels/rust"))
            .args(["rustc", "--quiet", "--locked", "--release", "-p", name])
            .args(["--target", "bpfel-unknown-none", "-Zbuild-std=core"])
            .arg("--target-dir")
            .arg(&target_dir)
            .args(["--", "--emit=llvm-bc"]),
    )?;
    // The bitcode's file name carries a hash of the build's settings: the newest is this build's
    // (cargo leaves it in place when nothing changed).
    let bitcode = fs::read_dir(&deps)
        .with_context(|| format!("could not list {}", deps.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            file.starts_with(&format!("{name}-")) && file.ends_with(".bc")
        })
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
        .with_context(|| format!("the build of {name} left no bitcode in {}", deps.display()))?;
    cmd::run(
        Command::new(LLC)
            .args(["-march=bpfel", "-filetype=obj", "-O2"])
            .arg(&bitcode)
            .arg("-o")
            .arg(obj),
    )
}

fn compile(root: &Path, src: &Path, obj: &Path) -> Result<()> {
    cmd::run(
        Command::new(CLANG)
            .args([
                "-O2",
                "-g",
                "-target",
                "bpf",
                "-ffreestanding",
                "-Wall",
                "-Werror",
            ])
            .arg("-I")
            .arg(root.join("kernels/include"))
            .arg("-c")
            .arg(src)
            .arg("-o")
            .arg(obj),
    )
}

fn c_files(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("could not list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "c"))
        .collect();
    files.sort();
    Ok(files)
}
