//! `cargo xtask reliability [--long] [--minutes N]`: the reliability campaign and its summary.
//!
//! Sections (each prints its own figures; a section that cannot run yet says so and shows
//! no numbers):
//! - fuzzing: every cargo-fuzz target in `fuzz/` (nightly toolchain, libFuzzer), from its
//!   committed seed corpus (`fuzz/seeds/<target>`) and the corpus grown by earlier runs
//!   (`fuzz/corpus/<target>`, ignored by git); executions from libFuzzer's final
//!   `#N DONE ... exec/s` line, crashes from its exit status and artifacts;
//! - hostile inputs: the `tests/tests/hostile_*.rs` binaries, which print
//!   `reliability: hostile <class> tried=N mishandled=M`;
//! - power loss through the FUSE mount, and crash-kill cycles: not yet (they need the mount).
//!
//! Short (inside `cargo xtask test`): each target a fixed number of runs from seed 1, about
//! [`SHORT_SECONDS`] each, so the result is repeatable. `--long`: the targets share
//! `--minutes` (default 10) equally, from random seeds. xtask never links the product crates: it
//! drives `cargo +nightly fuzz` and `cargo test` and reads what they print.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};

use crate::cmd;

/// The fuzz targets, in the order they run.
pub const TARGETS: [&str; 5] = [
    "verifier_interp",
    "elf_loader",
    "wire",
    "zns_model",
    "mount_image",
];
/// Seconds per target in the short run.
pub const SHORT_SECONDS: u64 = 12;
/// Test binaries of the hostile-input corpus (`tests/tests/<name>.rs`).
const HOSTILE: [&str; 4] = [
    "hostile_kernels",
    "hostile_frames",
    "hostile_images",
    "hostile_cli",
];
/// libFuzzer flags: no input may run longer than this (a hang is a crash), nor use more memory.
const FUZZ_FLAGS: [&str; 3] = ["-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=0"];

/// What one fuzz target did.
#[derive(Debug)]
struct FuzzRun {
    target: &'static str,
    executions: Option<u64>,
    exec_per_s: Option<u64>,
    crashed: bool,
}

/// One line of the hostile-input summary.
#[derive(Debug)]
struct Hostile {
    class: String,
    tried: u64,
    mishandled: u64,
}

/// Runs the campaign; fails if a fuzz target crashed or a hostile input was mishandled.
pub fn run(long: bool, minutes: Option<u64>) -> Result<()> {
    // The short run (inside `cargo xtask test`) is deterministic: a fixed seed and a fixed
    // number of runs per target over the committed seeds, so CI never fails at random on a
    // finding a long run should make first. Long runs are time-bounded and random.
    let budget = |target: &str| {
        if long || minutes.is_some() {
            Budget::Seconds((minutes.unwrap_or(10) * 60 / TARGETS.len() as u64).max(1))
        } else {
            Budget::Runs(short_runs(target))
        }
    };
    let root = crate::root();
    ensure_cargo_fuzz(&root)?;
    let started = Instant::now();
    build_fuzz(&root)?;
    let build_s = started.elapsed().as_secs_f64();
    let mut runs = Vec::new();
    for target in TARGETS {
        runs.push(fuzz(&root, target, budget(target))?);
    }
    let hostile = hostile(&root)?;
    print_summary(&runs, &hostile, build_s);
    let crashed: Vec<&str> = runs
        .iter()
        .filter(|r| r.crashed)
        .map(|r| r.target)
        .collect();
    let mishandled: u64 = hostile.iter().map(|h| h.mishandled).sum();
    if !crashed.is_empty() {
        bail!(
            "fuzz targets crashed: {} (inputs in fuzz/artifacts/<target>/; reproduce with \
             `cargo +nightly fuzz run -s none <target> <file>`)",
            crashed.join(", ")
        );
    }
    if mishandled > 0 {
        bail!("{mishandled} hostile inputs were mishandled (see the test output above)");
    }
    Ok(())
}

/// Installs cargo-fuzz from crates.io when `cargo fuzz --version` does not answer.
fn ensure_cargo_fuzz(root: &Path) -> Result<()> {
    let present = Command::new("cargo")
        .args(["fuzz", "--version"])
        .current_dir(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    eprintln!("cargo-fuzz is missing: installing it from crates.io");
    cmd::run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
}

/// `cargo +nightly fuzz` without the host build's target directory or flags (the fuzz crate
/// builds in `fuzz/target` with libFuzzer's instrumentation). No sanitizer: the fuzzed crates
/// forbid `unsafe`, and without ASan the build and the runs are several times faster.
fn cargo_fuzz(root: &Path) -> Command {
    let mut c = Command::new("cargo");
    c.arg("+nightly").arg("fuzz").current_dir(root);
    for key in ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR", "RUSTFLAGS"] {
        c.env_remove(key);
    }
    c
}

fn build_fuzz(root: &Path) -> Result<()> {
    cmd::run(cargo_fuzz(root).args(["build", "-s", "none"]))
        .context("the fuzz targets do not build (needs the nightly toolchain and a C++ compiler)")
}

/// How long one target runs.
#[derive(Debug, Clone, Copy)]
enum Budget {
    /// This many executions from seed 1 (deterministic), capped at a few times
    /// `SHORT_SECONDS` of wall time in case the machine is slow.
    Runs(u64),
    /// This many seconds, from a random seed.
    Seconds(u64),
}

/// Executions of each target in the short run: about `SHORT_SECONDS` each at the rates measured
/// on the 2-core development machine.
fn short_runs(target: &str) -> u64 {
    match target {
        "verifier_interp" => 400_000,
        "elf_loader" => 2_000_000,
        "wire" => 2_500_000,
        "zns_model" => 4_000,
        "mount_image" => 10_000,
        _ => 100_000,
    }
}

/// Runs one target within `budget`; parses libFuzzer's final line.
fn fuzz(root: &Path, target: &'static str, budget: Budget) -> Result<FuzzRun> {
    let corpus = root.join("fuzz/corpus").join(target);
    std::fs::create_dir_all(&corpus)
        .with_context(|| format!("could not create {}", corpus.display()))?;
    let seeds = root.join("fuzz/seeds").join(target);
    let mut c = cargo_fuzz(root);
    c.args(["run", "-s", "none", target])
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .args(match budget {
            Budget::Runs(runs) => vec![
                "-seed=1".to_string(),
                format!("-runs={runs}"),
                format!("-max_total_time={}", SHORT_SECONDS * 4),
            ],
            Budget::Seconds(seconds) => vec![format!("-max_total_time={seconds}")],
        })
        .args(FUZZ_FLAGS);
    eprintln!("+ {}", cmd::show(&c));
    let out = c
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("could not start `{}`", cmd::show(&c)))?;
    let log = String::from_utf8_lossy(&out.stderr);
    let (executions, exec_per_s) = parse_done(&log).unzip();
    let crashed = !out.status.success();
    if crashed {
        // Show the crash report (the end of libFuzzer's output).
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        for line in tail.into_iter().rev() {
            eprintln!("{line}");
        }
    }
    eprintln!(
        "fuzz {target}: {} executions, {}",
        executions.map_or("?".into(), |n| n.to_string()),
        if crashed { "CRASHED" } else { "no crash" }
    );
    Ok(FuzzRun {
        target,
        executions,
        exec_per_s,
        crashed,
    })
}

/// `#1908859 DONE   cov: 831 ft: 3137 corp: 1052/300Kb lim: 4096 exec/s: 31292 rss: 44Mb`
fn parse_done(log: &str) -> Option<(u64, u64)> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.starts_with('#') && l.contains("DONE"))?;
    let executions = line[1..].split_whitespace().next()?.parse().ok()?;
    let mut words = line.split_whitespace();
    words.find(|w| *w == "exec/s:")?;
    let rate = words.next()?.parse().ok()?;
    Some((executions, rate))
}

/// Runs the hostile-input test binaries and collects their summary lines.
fn hostile(root: &Path) -> Result<Vec<Hostile>> {
    let mut c = cmd::cargo(root);
    c.args(["test", "--locked", "-p", "tests"]);
    for t in HOSTILE {
        c.args(["--test", t]);
    }
    c.args(["--", "--nocapture"]);
    eprintln!("+ {}", cmd::show(&c));
    let out = c
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start `{}`", cmd::show(&c)))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    let found = parse_hostile(&stdout);
    if !out.status.success() && found.iter().all(|h| h.mishandled == 0) {
        bail!("the hostile-input tests failed (see above)");
    }
    Ok(found)
}

/// Lines `reliability: hostile <class> tried=N mishandled=M`.
fn parse_hostile(stdout: &str) -> Vec<Hostile> {
    stdout
        .lines()
        .filter_map(|l| {
            // libtest may print a test's name or a dot before the line (--nocapture).
            let at = l.find("reliability: hostile ")?;
            let rest = &l[at + "reliability: hostile ".len()..];
            let (class, counts) = rest.rsplit_once(" tried=")?;
            let (tried, mishandled) = counts.split_once(" mishandled=")?;
            Some(Hostile {
                class: class.to_string(),
                tried: tried.trim().parse().ok()?,
                mishandled: mishandled.trim().parse().ok()?,
            })
        })
        .collect()
}

fn print_summary(runs: &[FuzzRun], hostile: &[Hostile], build_s: f64) {
    println!("\nreliability summary");
    println!("  power loss (whole stack)  not yet run: needs the FUSE mount");
    println!("  crash-kill cycles         not yet run: needs the FUSE mount");
    println!("  fuzzing (fuzz crate built in {build_s:.0} s)");
    for r in runs {
        println!(
            "    {:<16} {:>12} executions {:>8} exec/s  {}",
            r.target,
            r.executions.map_or("?".into(), |n| n.to_string()),
            r.exec_per_s.map_or("?".into(), |n| n.to_string()),
            if r.crashed { "CRASHED" } else { "0 crashes" }
        );
    }
    let (tried, mishandled) = hostile
        .iter()
        .fold((0, 0), |(t, m), h| (t + h.tried, m + h.mishandled));
    println!("  hostile inputs: {tried} tried, {mishandled} mishandled");
    for h in hostile {
        println!(
            "    {:<16} {:>8} tried {:>4} mishandled",
            h.class, h.tried, h.mishandled
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// libFuzzer's final line gives executions and rate.
    #[test]
    fn parses_libfuzzer_done_line() {
        let log = "#4096\tpulse  cov: 1\n#1908859\tDONE   cov: 831 ft: 3137 corp: 1052/300Kb lim: 4096 exec/s: 31292 rss: 44Mb\nDone 1908859 runs in 61 second(s)\n";
        assert_eq!(parse_done(log), Some((1_908_859, 31_292)));
        assert_eq!(parse_done("nothing"), None);
    }

    /// The hostile tests' summary lines are summed by class.
    #[test]
    fn parses_hostile_lines() {
        let out = "running 2 tests\nreliability: hostile link frames tried=373 mishandled=0\n.reliability: hostile host link tried=75 mishandled=2\n";
        let h = parse_hostile(out);
        assert_eq!(h.len(), 2);
        assert_eq!(
            (h[0].class.as_str(), h[0].tried, h[0].mishandled),
            ("link frames", 373, 0)
        );
        assert_eq!(
            (h[1].class.as_str(), h[1].tried, h[1].mishandled),
            ("host link", 75, 2)
        );
    }
}
