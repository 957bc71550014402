//! `cargo xtask kernels`: builds every C kernel with clang into `target/kernels/`.
//!
//! `kernels/*.c` become `target/kernels/<name>.o`; the deliberately broken or hostile kernels in
//! `kernels/tests/*.c` become `target/kernels/tests/<name>.o`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::cmd;

/// The clang the kernels are built with.
pub const CLANG: &str = "clang-19";

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
    eprintln!(
        "kernels: built {} objects into {}",
        built.len(),
        out_dir.display()
    );
    Ok(built)
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
