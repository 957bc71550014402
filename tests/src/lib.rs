//! Shared support for the end-to-end tests: where the workspace, the built kernels and the
//! binaries are, and running `csd` (its JSON output parsed). The tests themselves live in
//! `tests/tests/`.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

/// CPU time (user and system) of the calling thread: a client's own work, apart from the
/// mount's threads in the same process.
pub fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec.unsigned_abs(), t.tv_nsec.unsigned_abs() as u32)
}

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

/// Path of the real `csd` binary, built in the same target directory as this test: the test
/// executable is `<target>/<profile>/deps/<test>`, the binary `<target>/<profile>/csd`.
///
/// # Panics
/// If the binary is missing. `cargo test --workspace` (and so `cargo xtask test`) builds every
/// workspace binary before it runs any test; `cargo test -p tests` alone does not, so build it
/// first with `cargo build -p host-shell --bin csd`.
pub fn csd_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in <target>/<profile>/deps");
    let path = profile_dir.join(format!("csd{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "the csd binary {} is missing: build it with `cargo build -p host-shell --bin csd` \
         (cargo test --workspace and cargo xtask test build it)",
        path.display()
    );
    path
}

/// A `csd` command with `args`, ready to run.
pub fn csd_command<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(csd_binary());
    command.args(args);
    command
}

/// Runs `csd args` to completion.
pub fn csd<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    csd_command(args).output().expect("csd runs")
}

/// Runs `csd args`, which must succeed with nothing on stderr; returns its stdout.
///
/// # Panics
/// If the command fails or complains.
pub fn csd_ok<I, S>(args: I) -> Vec<u8>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<S> = args.into_iter().collect();
    let shown: Vec<String> = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    let out = csd(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "csd {} failed ({}): {stderr}",
        shown.join(" "),
        out.status
    );
    assert!(
        stderr.is_empty(),
        "csd {} wrote to stderr: {stderr}",
        shown.join(" ")
    );
    out.stdout
}

/// The name libtest runs the test `name` of the module at `module_path` (pass `module_path!()`)
/// by: its path without the crate, what `--exact` needs when a test binary runs one of its own
/// tests again in a child process.
pub fn test_name(module_path: &str, name: &str) -> String {
    match module_path.split_once("::") {
        Some((_crate, module)) => format!("{module}::{name}"),
        None => name.to_string(),
    }
}

/// What `csd ... --json` printed, parsed.
///
/// # Panics
/// If it is not valid JSON.
pub fn json(stdout: &[u8]) -> serde_json::Value {
    serde_json::from_slice(stdout).unwrap_or_else(|e| {
        panic!(
            "csd printed no valid JSON ({e}): {}",
            String::from_utf8_lossy(stdout)
        )
    })
}

/// Runs `csd args` (with `--json` among them) like [`csd_ok`]; what it printed, parsed.
///
/// # Panics
/// If the command fails, complains or prints something that is not JSON.
pub fn csd_json<I, S>(args: I) -> serde_json::Value
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    json(&csd_ok(args))
}

/// Runs `csd args`, which must fail with exit code `code` and exactly one line on stderr
/// starting with `csd: `; returns that line.
///
/// # Panics
/// If the command succeeds, exits otherwise, or its error is not one `csd: ` line.
pub fn csd_fails<I, S>(code: i32, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = csd(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line of error, got: {stderr}");
    assert!(lines[0].starts_with("csd: "), "{stderr}");
    lines[0].to_string()
}

pub mod mapping;
pub mod mount;
pub mod nvme_host;
pub mod reference;
pub mod reliability;
pub mod running;
pub mod svg;
pub mod xattr;
