//! Shared support for the end-to-end tests: where the workspace, the built kernels and the
//! binaries are. The tests themselves live in `tests/tests/`.

use std::path::PathBuf;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Path of the clang-built kernel object `target/kernels/<name>.o`.
///
/// # Panics
/// If the kernel has not been built: the tests need the real clang-built objects, built by
/// `cargo xtask kernels` (which `cargo xtask test` runs first).
pub fn kernel_object(name: &str) -> PathBuf {
    let path = workspace_root()
        .join("target/kernels")
        .join(format!("{name}.o"));
    assert!(
        path.is_file(),
        "kernel object {} is missing: run `cargo xtask kernels` (or `cargo xtask test`) first",
        path.display()
    );
    path
}

pub mod reference;
