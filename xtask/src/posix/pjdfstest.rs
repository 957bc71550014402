//! pjdfstest: one run against a mounted directory, its output read back into outcomes, and
//! the comparison of csd against the peer that decides the step.

use std::{
    collections::BTreeSet,
    fs::File,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use super::run_bounded;

/// Seconds between the changes of a timestamp test (pjdfstest's default is 1 s). It must
/// exceed the timestamp granularity of the file systems: csd keeps nanoseconds, and tmpfs
/// under bindfs takes the kernel's coarse clock (one tick, 10 ms at worst). At 1 s, bindfs's
/// attribute cache would expire between the steps of a test and hide what it caches; with
/// this and no cache, a whole run takes seconds instead of minutes.
pub const NAPTIME_S: f64 = 0.05;

/// Opt-in features every Linux file system offers: `posix_fallocate` (glibc falls back to
/// writing zeros where `fallocate` is not supported), `utimensat` and `UTIME_NOW`, and
/// `rename_ctime` (rename updates the moved inode's ctime, as every Linux disk file system
/// does, and as csd does). Not `allow_remount`: `mount -o remount` of a
/// FUSE mount runs `mount.fuse`, which tries to start the daemon again instead of remounting.
pub const FEATURES: [&str; 4] = ["posix_fallocate", "rename_ctime", "utimensat", "utime_now"];

/// Tests csd may fail although bindfs over tmpfs passes them, each with the reason no FUSE file
/// system can pass it. Keep it honest: a failure csd could fix is a bug and stays failing. An
/// entry csd passes is reported, so it can be removed.
pub const ALLOWED: &[(&str, &str)] = &[];

/// How long one run may take before the mount under it is taken to hang (a run takes seconds).
const TIMEOUT: Duration = Duration::from_secs(600);

/// What one run did: each test's name and outcome.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub passed: BTreeSet<String>,
    pub skipped: BTreeSet<String>,
    /// Name and the first line of the failure's message.
    pub failed: Vec<(String, String)>,
}

impl Outcome {
    pub fn total(&self) -> usize {
        self.passed.len() + self.skipped.len() + self.failed.len()
    }

    fn failed_names(&self) -> BTreeSet<&str> {
        self.failed.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// One line: `N failed, N skipped, N passed`.
    pub fn counts(&self) -> String {
        format!(
            "{} failed, {} skipped, {} passed",
            self.failed.len(),
            self.skipped.len(),
            self.passed.len()
        )
    }
}

/// The configuration file of a run: [`FEATURES`], [`NAPTIME_S`], and `secondary` as the
/// other file system of the EXDEV tests.
pub fn config(secondary: &Path) -> String {
    let mut text = String::from("# Written by cargo xtask posix.\n[features]\n");
    for feature in FEATURES {
        text.push_str(&format!("{feature} = {{}}\n"));
    }
    text.push_str(&format!(
        "secondary_fs = \"{}\"\n\n[settings]\nnaptime = {NAPTIME_S}\n",
        secondary.display()
    ));
    text
}

/// Runs pjdfstest with `config` in `dir` (as root: most tests switch users); its output goes
/// to `log`.
pub fn run(config: &Path, dir: &Path, log: &Path) -> Result<Outcome> {
    let out = File::create(log).with_context(|| format!("could not create {}", log.display()))?;
    let err = out.try_clone().context("could not share the log file")?;
    let mut c = Command::new(crate::deps::PJDFSTEST.name);
    c.arg("-c")
        .arg(config)
        .arg("-p")
        .arg(dir)
        // Plain text and one line per failure, whatever the caller's environment says.
        .env("NO_COLOR", "1")
        .env_remove("CLICOLOR_FORCE")
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // It exits with 1 when a test failed: the outcomes say more than the status.
    let status = run_bounded(&mut c, TIMEOUT)?;
    let text = std::fs::read_to_string(log)
        .with_context(|| format!("could not read {}", log.display()))?;
    parse(&text).with_context(|| {
        format!(
            "pjdfstest in {} ended ({status}) without its summary; see {}",
            dir.display(),
            log.display()
        )
    })
}

/// Reads pjdfstest's output: a line `NAME  ok|FAILED|skipped` per test (a failure's message
/// follows on tab-indented lines), then `Summary: F failed, S skipped, P passed, E expected
/// failures, T total`, which must agree with the lines.
pub fn parse(text: &str) -> Result<Outcome> {
    let mut outcome = Outcome::default();
    let mut summary = None;
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix("Summary: ") {
            summary = Some(rest.to_string());
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(name), Some(result), None) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        if !name.contains("::") {
            continue;
        }
        match result {
            "ok" => {
                outcome.passed.insert(name.to_string());
            }
            "skipped" => {
                outcome.skipped.insert(name.to_string());
            }
            "FAILED" => {
                let why = lines
                    .next_if(|l| l.starts_with('\t'))
                    .map_or("", str::trim)
                    .to_string();
                outcome.failed.push((name.to_string(), why));
            }
            _ => {}
        }
    }
    let summary = summary.context("no `Summary:` line")?;
    let number = |word: &str| -> Result<usize> {
        summary
            .split(',')
            .find_map(|part| part.trim().strip_suffix(word)?.trim().parse().ok())
            .with_context(|| format!("no `{word}` count in `Summary: {summary}`"))
    };
    let expected = (number("failed")?, number("skipped")?, number("passed")?);
    let got = (
        outcome.failed.len(),
        outcome.skipped.len(),
        outcome.passed.len(),
    );
    if expected != got || number("total")? != outcome.total() {
        bail!(
            "`Summary: {summary}` does not match the {} test lines read (failed, skipped, \
             passed: {got:?})",
            outcome.total()
        );
    }
    Ok(outcome)
}

/// csd's failures against the peer's.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Failures of csd's the peer does not have, not allowed: these fail the step.
    pub csd_only: Vec<(String, String)>,
    /// Failures of csd's the peer does not have, allowed by [`ALLOWED`].
    pub allowed: Vec<String>,
    /// Allow-list entries csd passes.
    pub stale: Vec<&'static str>,
    /// Failures both have.
    pub shared: Vec<String>,
}

/// Compares csd's run with the peer's under `allowed` (name, reason).
pub fn compare(csd: &Outcome, peer: &Outcome, allowed: &[(&'static str, &str)]) -> Verdict {
    let peer_failed = peer.failed_names();
    let csd_failed = csd.failed_names();
    let mut verdict = Verdict {
        csd_only: Vec::new(),
        allowed: Vec::new(),
        stale: allowed
            .iter()
            .map(|(name, _)| *name)
            .filter(|name| !csd_failed.contains(name))
            .collect(),
        shared: Vec::new(),
    };
    for (name, why) in &csd.failed {
        if peer_failed.contains(name.as_str()) {
            verdict.shared.push(name.clone());
        } else if allowed.iter().any(|(a, _)| a == name) {
            verdict.allowed.push(name.clone());
        } else {
            verdict.csd_only.push((name.clone(), why.clone()));
        }
    }
    verdict.csd_only.sort();
    verdict.allowed.sort();
    verdict.shared.sort();
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\
chmod::change_perm::fifo                                                  FAILED
\tcalled `Result::unwrap()` on an `Err` value: ENOSYS
chmod::change_perm::regular                                                   ok
link::link_count_max                                                     skipped
\tCannot get value for LINK_MAX: filesystem limit is unknown
utimensat::utime_omit                                                     FAILED
\tassertion `left == right` failed
  left: 1
rename::changed_ctime_success::dir                                        FAILED
\tassertion failed: new_path_ctime > old_path_ctime

Summary: 3 failed, 1 skipped, 1 passed, 0 expected failures, 5 total
Error: Some tests have failed
";

    /// Every test line is read with its outcome and a failure's first message line.
    #[test]
    fn parses_a_run() {
        let o = parse(OUTPUT).unwrap();
        assert_eq!(o.total(), 5);
        assert!(o.passed.contains("chmod::change_perm::regular"));
        assert!(o.skipped.contains("link::link_count_max"));
        assert_eq!(
            o.failed[0],
            (
                "chmod::change_perm::fifo".to_string(),
                "called `Result::unwrap()` on an `Err` value: ENOSYS".to_string()
            )
        );
        assert_eq!(o.failed[1].1, "assertion `left == right` failed");
    }

    /// A summary that disagrees with the lines, or none (pjdfstest died), is an error, not
    /// a pass.
    #[test]
    fn rejects_a_truncated_run() {
        let cut = OUTPUT.replace("Summary: 3 failed", "Summary: 4 failed");
        assert!(parse(&cut).is_err());
        let died = OUTPUT.split("Summary").next().unwrap();
        assert!(parse(died).is_err());
    }

    /// Only csd's failures the peer passes count, less the allowed ones; an allow-list entry
    /// csd passes shows up as stale.
    #[test]
    fn compares_with_the_peer() {
        let csd = parse(OUTPUT).unwrap();
        let peer = parse(
            "utimensat::utime_omit FAILED\n\twhy\n\
             Summary: 1 failed, 0 skipped, 0 passed, 0 expected failures, 1 total\n",
        )
        .unwrap();
        let allowed = [
            ("rename::changed_ctime_success::dir", "a reason"),
            ("chmod::change_perm::regular", "a reason"),
        ];
        let v = compare(&csd, &peer, &allowed);
        assert_eq!(v.shared, ["utimensat::utime_omit"]);
        assert_eq!(v.allowed, ["rename::changed_ctime_success::dir"]);
        assert_eq!(v.stale, ["chmod::change_perm::regular"]);
        assert_eq!(
            v.csd_only,
            [(
                "chmod::change_perm::fifo".to_string(),
                "called `Result::unwrap()` on an `Err` value: ENOSYS".to_string()
            )]
        );
    }

    /// The configuration turns on the features and names the secondary file system.
    #[test]
    fn config_names_features_and_secondary() {
        let text = config(Path::new("/tmp/x/other"));
        assert!(text.contains("rename_ctime = {}\n"));
        assert!(text.contains("secondary_fs = \"/tmp/x/other\"\n"));
        assert!(text.contains("naptime = 0.05\n"));
    }
}
