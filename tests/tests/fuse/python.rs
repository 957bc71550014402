//! The Python client (`python/`): installed with pip into a fresh virtual environment, its
//! own tests (`python/tests/test_csd.py`) run against a real mount with the kernels in
//! /kernels.

use std::{fs, process::Command};

use tests::{kernel_object, mount::Mount, workspace_root};

/// `pip install ./python` in a fresh venv works, and the client's tests pass against a mount:
/// file_job equals the reference, a missing kernel is ENOENT, read_stream yields the kernel's
/// output, write_stream stores it, log returns the kernel's lines.
#[test]
fn the_python_client_installs_and_works() {
    let root = workspace_root();
    let venv = tempfile::tempdir().expect("temp dir");
    let run = |cmd: &mut Command, what: &str| {
        let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            out.status.success(),
            "{what} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(
        Command::new("python3")
            .args(["-m", "venv"])
            .arg(venv.path()),
        "python3 -m venv",
    );
    let bin = venv.path().join("bin");
    // Its build backend is in the tree and uses the standard library: nothing is downloaded.
    run(
        Command::new(bin.join("pip"))
            .args(["install", "--quiet", "--no-index"])
            .arg(root.join("python")),
        "pip install ./python",
    );

    let mut m = Mount::new(&[], &[]);
    fs::create_dir(m.path("kernels")).expect("mkdir /kernels");
    for k in [
        "entropy",
        "entropy_rs",
        "xor",
        "tests/return_param",
        "tests/log_twice",
    ] {
        let name = k.rsplit('/').next().expect("a name");
        fs::copy(kernel_object(k), m.path(&format!("kernels/{name}.o"))).expect("copy kernel");
    }
    run(
        Command::new(bin.join("python"))
            .args(["-m", "unittest", "-v", "test_csd"])
            .current_dir(root.join("python/tests"))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("CSD_MOUNT", &m.root),
        "the client's tests",
    );
    m.unmount_and_fsck();
}
