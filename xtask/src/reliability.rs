//! `cargo xtask reliability [--long] [--minutes N]`: the reliability campaign and its summary.
//!
//! Sections:
//! - fuzzing: every cargo-fuzz target in `fuzz/` (nightly toolchain, libFuzzer), from its
//!   committed seed corpus (`fuzz/seeds/<target>`) and the corpus grown by earlier runs
//!   (`fuzz/corpus/<target>`, ignored by git); executions from libFuzzer's final
//!   `#N DONE ... exec/s` line, crashes from its exit status and artifacts;
//! - test binaries, listed in [`BINARIES`] (package, test target, section), each printing lines
//!   `reliability: <section> <class words> key=value ...`: power loss through the whole
//!   stack (`powercut`, `tried= failures=`), crash-kill cycles (`crashkill`, `cycles= lost=`),
//!   concurrent I/O (`concurrent`, `jobs= bytes= offloads= errors=`), hostile inputs
//!   (`hostile`, `tried= mishandled=`). A count named in [`BAD_KEYS`] above zero fails the
//!   campaign, as does a binary that fails or prints no line of its section.
//!
//! Short (inside `cargo xtask test`): each fuzz target a fixed number of runs from seed 1,
//! about [`SHORT_SECONDS`] each, and each test binary in its deterministic short mode (debug
//! build, the one the host tests just made), so the result is repeatable. `--long` splits
//! `--minutes` (default 10): half to fuzzing, shared equally by the targets, from random seeds;
//! the other half shared equally by the binaries of time-budgeted sections ([`Section::timed`]),
//! which run in release (the power-loss cases run about 4x faster; the build is paid once) with
//! `CSD_RELIABILITY_SECONDS` (their share) and `CSD_RELIABILITY_SEED` (printed, or taken from
//! the environment) set. With no such binary, fuzzing gets all of it. A long run then also
//! runs fsx for [`crate::posix::FSX_OPS_LONG`] operations on a fresh csd mount from the same
//! seed: bounded by its operation count, not by `--minutes`, on top of them. xtask never links
//! the product crates: it drives `cargo +nightly fuzz`, `cargo test` and the `csd` binary and
//! reads what they print.

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
/// A section of the campaign's summary.
#[derive(Debug)]
struct Section {
    /// The word after `reliability:` in its lines.
    name: &'static str,
    title: &'static str,
    /// Whether its binaries loop for `CSD_RELIABILITY_SECONDS` in a long run.
    timed: bool,
}

/// The sections of the test binaries, in summary order.
const SECTIONS: [Section; 4] = [
    Section {
        name: "powercut",
        title: "power loss, whole stack",
        timed: true,
    },
    Section {
        name: "crashkill",
        title: "crash-kill cycles",
        timed: true,
    },
    Section {
        name: "concurrent",
        title: "concurrent I/O and offloads",
        timed: true,
    },
    Section {
        name: "hostile",
        title: "hostile inputs",
        timed: false,
    },
];

/// The campaign's test binaries: (package, test target, section). One line adds one.
const BINARIES: [(&str, &str, &str); 4] = [
    ("host-shell", "lfs_powerloss", "powercut"),
    ("tests", "reliability_crashkill", "crashkill"),
    ("tests", "reliability_fio", "concurrent"),
    // Kernels, link frames, device images and command lines: one module each.
    ("tests", "hostile", "hostile"),
];

/// Counts that must be zero wherever a line has them.
const BAD_KEYS: [&str; 5] = ["mishandled", "failures", "lost", "errors", "crashes"];

/// Test names of the campaign binaries that the host-test step leaves to this one, so a short
/// `cargo xtask test` runs them once (`cargo test` alone still runs them). A campaign binary
/// puts its budgeted tests in a module of this name.
pub const CAMPAIGN_MODULE: &str = "campaign::";
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

/// One summary line of a test binary: `reliability: <section> <class words> key=value ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    section: String,
    class: String,
    counts: Vec<(String, String)>,
}

impl Line {
    /// Its counts that must be zero and are not (a value that is not a number counts).
    fn bad(&self) -> Vec<&(String, String)> {
        self.counts
            .iter()
            .filter(|(k, v)| BAD_KEYS.contains(&k.as_str()) && v.parse::<u64>() != Ok(0))
            .collect()
    }
}

/// What one test binary did.
#[derive(Debug)]
struct BinaryRun {
    test: &'static str,
    seconds: f64,
    lines: Vec<Line>,
}

/// How long the time-budgeted parts of a long run take.
#[derive(Debug, Clone, Copy)]
struct Plan {
    long: bool,
    fuzz_seconds_per_target: u64,
    binary_seconds: u64,
    seed: u64,
}

impl Plan {
    fn new(long: bool, minutes: Option<u64>) -> Plan {
        let total = minutes.unwrap_or(10) * 60;
        let timed = BINARIES
            .iter()
            .filter(|(_, _, s)| SECTIONS.iter().any(|x| x.name == *s && x.timed))
            .count() as u64;
        let fuzz = if timed == 0 { total } else { total / 2 };
        let seed = std::env::var("CSD_RELIABILITY_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        Plan {
            long,
            fuzz_seconds_per_target: (fuzz / TARGETS.len() as u64).max(1),
            binary_seconds: ((total - fuzz) / timed.max(1)).max(1),
            seed,
        }
    }
}

/// Runs the campaign; fails if a fuzz target crashed or a test binary failed or reported a
/// bad count.
pub fn run(long: bool, minutes: Option<u64>) -> Result<()> {
    // The short run (inside `cargo xtask test`) is deterministic: a fixed seed and a fixed
    // number of runs per target over the committed seeds, so CI never fails at random on a
    // finding a long run should make first. Long runs are time-bounded and random.
    let plan = Plan::new(long || minutes.is_some(), minutes);
    // The hostile-kernel and offload binaries read the clang-built kernels (a second or less
    // when they are up to date).
    crate::kernels::build()?;
    if plan.long {
        eprintln!(
            "long run: {} s per fuzz target, {} s per time-budgeted test binary, \
             CSD_RELIABILITY_SEED={}",
            plan.fuzz_seconds_per_target, plan.binary_seconds, plan.seed
        );
    }
    let budget = |target: &str| {
        if plan.long {
            Budget::Seconds(plan.fuzz_seconds_per_target)
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
    let mut binaries = Vec::new();
    let mut broken = Vec::new();
    for (package, test, section) in BINARIES {
        match test_binary(&root, package, test, section, &plan) {
            Ok(b) => binaries.push(b),
            Err(e) => {
                eprintln!("xtask: {e:#}");
                broken.push(test);
            }
        }
    }
    let fsx = plan.long.then(|| crate::posix::fsx_long(plan.seed));
    print_summary(&runs, &binaries, &broken, build_s, fsx.as_ref());
    let crashed: Vec<&str> = runs
        .iter()
        .filter(|r| r.crashed)
        .map(|r| r.target)
        .collect();
    let bad: Vec<String> = binaries
        .iter()
        .flat_map(|b| &b.lines)
        .flat_map(|l| {
            l.bad()
                .into_iter()
                .map(move |(k, v)| format!("{} {} {k}={v}", l.section, l.class))
        })
        .collect();
    if !crashed.is_empty() {
        bail!(
            "fuzz targets crashed: {} (inputs in fuzz/artifacts/<target>/; reproduce with \
             `cargo +nightly fuzz run -s none <target> <file>`)",
            crashed.join(", ")
        );
    }
    if !bad.is_empty() {
        bail!(
            "the campaign found problems: {} (the test output above shows them)",
            bad.join(", ")
        );
    }
    if !broken.is_empty() {
        bail!("test binaries failed: {}", broken.join(", "));
    }
    if let Some(Err(e)) = fsx {
        return Err(e.context("fsx on the csd mount failed"));
    }
    Ok(())
}

/// Installs cargo-fuzz with `cargo install` when `cargo fuzz --version` does not answer.
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
    eprintln!("cargo-fuzz is missing: installing it with `cargo install cargo-fuzz --locked`");
    cmd::run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
}

/// `cargo +nightly fuzz` without the host build's target directory or flags (the fuzz crate
/// builds in `fuzz/target` with libFuzzer's instrumentation). No sanitizer: the fuzzed code's
/// only `unsafe` is the image mapping (`host_shell::nand::mapped`: bounds-checked copies), and
/// without ASan the build and the runs are several times faster.
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
        // Every program that verifies is also compiled by the JIT and compared (about 100
        // executions a second).
        "verifier_interp" => 1_200,
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

/// Runs one campaign test binary (release, with its time budget, in a long run) and collects
/// its summary lines; fails if it fails without a bad count to show for it, or prints no line
/// of its section.
fn test_binary(
    root: &Path,
    package: &str,
    test: &'static str,
    section: &str,
    plan: &Plan,
) -> Result<BinaryRun> {
    let timed = SECTIONS.iter().any(|s| s.name == section && s.timed);
    let mut c = cmd::cargo(root);
    c.args(["test", "--locked", "-p", package, "--test", test]);
    if plan.long && timed {
        c.arg("--release")
            .env("CSD_RELIABILITY_SECONDS", plan.binary_seconds.to_string())
            .env("CSD_RELIABILITY_SEED", plan.seed.to_string());
    } else {
        // The short run is deterministic whatever the caller's environment holds.
        c.env_remove("CSD_RELIABILITY_SECONDS")
            .env_remove("CSD_RELIABILITY_SEED");
    }
    c.args(["--", "--nocapture"]);
    eprintln!("+ {}", cmd::show(&c));
    let started = Instant::now();
    let out = c
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start `{}`", cmd::show(&c)))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    let lines = parse_lines(&stdout);
    let bad = lines.iter().any(|l| !l.bad().is_empty());
    if !out.status.success() && !bad {
        bail!("the {test} tests failed (see above)");
    }
    if !lines.iter().any(|l| l.section == section) {
        bail!("{test} printed no `reliability: {section} ...` line");
    }
    Ok(BinaryRun {
        test,
        seconds: started.elapsed().as_secs_f64(),
        lines,
    })
}

/// Lines `reliability: <section> <class words> key=value ...` (the class is every word before
/// the first `key=value`).
fn parse_lines(stdout: &str) -> Vec<Line> {
    const MARK: &str = "reliability: ";
    stdout
        .lines()
        .filter_map(|l| {
            // libtest may print a test's name or a dot before the line (--nocapture).
            let at = l.find(MARK)?;
            let mut words = l[at + MARK.len()..].split_whitespace();
            let section = words.next()?.to_string();
            let mut class = Vec::new();
            let mut counts = Vec::new();
            for w in words {
                match w.split_once('=') {
                    Some((k, v)) if !k.is_empty() => counts.push((k.to_string(), v.to_string())),
                    _ if counts.is_empty() => class.push(w),
                    // A stray word after the counts: not a summary line.
                    _ => return None,
                }
            }
            if counts.is_empty() {
                return None;
            }
            Some(Line {
                section,
                class: class.join(" "),
                counts,
            })
        })
        .collect()
}

/// The sum of each count over `lines`, in order of first appearance.
fn totals<'a>(lines: impl Iterator<Item = &'a Line>) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for l in lines {
        for (k, v) in &l.counts {
            let n = v.parse::<u64>().unwrap_or(0);
            match out.iter_mut().find(|(key, _)| key == k) {
                Some((_, sum)) => *sum += n,
                None => out.push((k.clone(), n)),
            }
        }
    }
    out
}

fn show_counts<'a>(counts: impl Iterator<Item = (&'a str, String)>) -> String {
    counts
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_summary(
    runs: &[FuzzRun],
    binaries: &[BinaryRun],
    broken: &[&str],
    build_s: f64,
    fsx: Option<&Result<crate::posix::FsxRun>>,
) {
    println!("\nreliability summary");
    if !broken.is_empty() {
        println!(
            "  FAILED to report: {} (their output above says why)",
            broken.join(", ")
        );
    }
    let all = || binaries.iter().flat_map(|b| &b.lines);
    let mut sections: Vec<(&str, &str)> = SECTIONS.iter().map(|s| (s.name, s.title)).collect();
    for l in all() {
        if !sections.iter().any(|(n, _)| *n == l.section) {
            sections.push((l.section.as_str(), l.section.as_str()));
        }
    }
    for (name, title) in sections {
        let tests: Vec<String> = binaries
            .iter()
            .filter(|b| b.lines.iter().any(|l| l.section == name))
            .map(|b| format!("{} {:.0} s", b.test, b.seconds))
            .collect();
        if tests.is_empty() {
            println!("  {title}: not run (no test binary in the campaign reports it)");
            continue;
        }
        let sums = totals(all().filter(|l| l.section == name));
        println!(
            "  {title}: {} ({})",
            show_counts(sums.iter().map(|(k, n)| (k.as_str(), n.to_string()))),
            tests.join(", ")
        );
        for l in all().filter(|l| l.section == name) {
            println!(
                "    {:<20} {}",
                l.class,
                show_counts(l.counts.iter().map(|(k, v)| (k.as_str(), v.clone())))
            );
        }
    }
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
    match fsx {
        Some(Ok(r)) => println!(
            "  fsx on the csd mount: {} operations from seed {}, every read verified ({:.0} s)",
            r.ops, r.seed, r.seconds
        ),
        Some(Err(_)) => println!("  fsx on the csd mount: FAILED (the output above says why)"),
        None => {}
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

    /// Summary lines of every section parse into section, class and counts, whatever libtest
    /// prints before them; bad counts are the nonzero ones of the bad keys.
    #[test]
    fn parses_summary_lines() {
        let out = "running 2 tests\n\
            reliability: hostile link frames tried=373 mishandled=0\n\
            .reliability: hostile host link tried=75 mishandled=2\n\
            test x ... reliability: powercut every-op tried=434 failures=0\n\
            reliability: crashkill cycles=20 lost=0\n\
            reliability: concurrent mixed fio jobs=4 bytes=1048576 offloads=12 errors=1\n\
            reliability: not a summary\n\
            random-pairs: seed 1\n";
        let lines = parse_lines(out);
        let got: Vec<(&str, &str, usize)> = lines
            .iter()
            .map(|l| (l.section.as_str(), l.class.as_str(), l.counts.len()))
            .collect();
        assert_eq!(
            got,
            [
                ("hostile", "link frames", 2),
                ("hostile", "host link", 2),
                ("powercut", "every-op", 2),
                ("crashkill", "", 2),
                ("concurrent", "mixed fio", 4),
            ]
        );
        assert_eq!(
            lines[4].counts[1],
            ("bytes".to_string(), "1048576".to_string())
        );
        let bad: Vec<String> = lines
            .iter()
            .flat_map(|l| l.bad())
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(bad, ["mishandled=2", "errors=1"]);
        let sums = totals(lines.iter().filter(|l| l.section == "hostile"));
        assert_eq!(
            sums,
            [("tried".to_string(), 448), ("mishandled".to_string(), 2)]
        );
    }

    /// A bad count that is not a number is not taken for zero.
    #[test]
    fn unreadable_bad_count_is_bad() {
        let lines = parse_lines("reliability: powercut torn tried=3 failures=?\n");
        assert_eq!(lines[0].bad().len(), 1);
    }
}
