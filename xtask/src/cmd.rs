//! Running commands with their command line shown, failing with a sentence that names them.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

/// Runs `cmd` with inherited output; fails naming the command if it does not exit with 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {}", show(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{}`", show(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", show(cmd));
    }
    Ok(())
}

/// Runs `cmd` and returns its standard output; fails naming the command if it does not exit
/// with 0.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start `{}`", show(cmd)))?;
    if !out.status.success() {
        bail!("`{}` failed ({})", show(cmd), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `program` is found on the PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// `cargo` with the toolchain of this workspace (rustup's proxy picks it).
pub fn cargo(root: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root);
    cmd
}

/// `cargo +debian-cross`, the Debian toolchain that has the Cortex-R standard library sources,
/// with build-std allowed on that stable compiler.
pub fn cross_cargo(dir: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg(format!("+{}", crate::deps::CROSS_TOOLCHAIN))
        .current_dir(dir)
        .env("RUSTC_BOOTSTRAP", "1");
    // Flags and target directories meant for the host build must not leak into the cross build
    // (CARGO_ENCODED_RUSTFLAGS and CARGO_TARGET_<TRIPLE>_RUSTFLAGS would replace its link script).
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let leaks = key.ends_with("RUSTFLAGS")
            || key == "CARGO_TARGET_DIR"
            || key == "CARGO_BUILD_TARGET_DIR";
        if leaks {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// The command line of `cmd`, as it would be typed.
pub fn show(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}
