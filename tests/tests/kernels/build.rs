//! Every kernel in `kernels/` (and every test kernel in `kernels/tests/`) compiles with
//! clang-19 the way the project builds kernels, and the loader links it. Builds into a temp
//! dir: these tests do not depend on `target/kernels`.

use std::path::{Path, PathBuf};
use std::process::Command;

use host_shell::loader::{self, ProgramImage};
use tests::workspace_root;

/// The product kernels the issue asks for.
const KERNELS: [&str; 5] = ["passthrough", "entropy", "filter_u32", "pattern", "xor"];

/// The `.c` files directly in `dir`, sorted.
fn c_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read kernel dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "c"))
        .collect();
    files.sort();
    files
}

/// Builds `source` with `clang-19 -O2 -target bpf -ffreestanding -I kernels/include -c` and
/// links it.
fn build_and_link(source: &Path, out_dir: &Path) -> ProgramImage {
    let name = source.file_stem().expect("file name");
    let object = out_dir.join(name).with_extension("o");
    let out = Command::new("clang-19")
        .args([
            "-O2",
            "-target",
            "bpf",
            "-ffreestanding",
            "-Wall",
            "-Werror",
        ])
        .arg(format!(
            "-I{}",
            workspace_root().join("kernels/include").display()
        ))
        .arg("-c")
        .arg(source)
        .arg("-o")
        .arg(&object)
        .output()
        .expect("run clang-19");
    assert!(
        out.status.success(),
        "{} does not build:\n{}",
        source.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    loader::load_object(&object)
        .unwrap_or_else(|e| panic!("{} does not link: {e}", source.display()))
}

/// Every kernels/*.c builds without warnings (-Wall -Werror) and links; the five product kernels are there.
#[test]
fn product_kernels_build_and_link() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = c_files(&workspace_root().join("kernels"));
    for kernel in KERNELS {
        assert!(
            files
                .iter()
                .any(|f| f.file_stem().is_some_and(|s| s == kernel)),
            "kernels/{kernel}.c is missing"
        );
    }
    for file in &files {
        let image = build_and_link(file, dir.path());
        assert!(image.insn_count() > 0, "{}", file.display());
        let exits = (0..image.insn_count()).filter(|&i| image.insn(i).map(|b| b[0]) == Some(0x95));
        assert!(exits.count() > 0, "{} has an exit", file.display());
    }
}

/// Every kernels/tests/*.c builds and links too (the hostile ones are well-formed objects:
/// catching them is the device's job), and each does what its name says to the code.
#[test]
fn test_kernels_build_and_link() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = c_files(&workspace_root().join("kernels/tests"));
    assert!(!files.is_empty());
    for file in &files {
        let image = build_and_link(file, dir.path());
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let insns: Vec<[u8; 8]> = (0..image.insn_count())
            .filter_map(|i| image.insn(i))
            .collect();
        // `call` with src_reg 1 is bpf-to-bpf; with src_reg 0 its imm is the helper id.
        let bpf_call = insns.iter().any(|i| i[0] == 0x85 && i[1] >> 4 == 1);
        let helper_call = |id: i32| {
            insns
                .iter()
                .any(|i| i[0] == 0x85 && i[1] >> 4 == 0 && i[4..8] == id.to_le_bytes())
        };
        match stem {
            "features" => {
                assert!(bpf_call, "features makes a bpf-to-bpf call");
                assert!(!image.rodata.is_empty(), "features has read-only data");
            }
            "hostile_unknown_helper" => assert!(helper_call(99), "calls helper 99"),
            "hostile_deep_recursion" => assert!(bpf_call, "recurses through a call"),
            "hostile_infinite_loop" => {
                let jumps_back = insns
                    .iter()
                    .any(|i| i[0] == 0x05 && i16::from_le_bytes([i[2], i[3]]) < 0);
                assert!(jumps_back, "loops with a backward ja");
            }
            _ => {}
        }
    }
}
