//! `cargo xtask posix`: the POSIX suites against a csd mount.
//!
//! pjdfstest (the Rust port, version pinned by `cargo xtask deps`) runs as root against a
//! fresh csd image mounted with `--allow-other` and, in the same run and with the same
//! configuration, against bindfs over a tmpfs: a FUSE file system passing on what the kernel's
//! own file system does, so a test bindfs passes is one a FUSE file system can pass. The step
//! fails on every test csd fails and bindfs passes, unless [`pjdfstest::ALLOWED`] names it
//! with the reason. Then fsx runs [`FSX_OPS`] operations from [`FSX_SEED`] on a file in the
//! same csd mount and checks every byte it reads. Last, the mounts go away and `csd fsck`
//! must find the image clean. Both failure lists are printed; the full outputs stay in
//! `target/posix/` (`pjdfstest-csd.log`, `pjdfstest-bindfs.log`, `csd-daemon.log`, and
//! fsx's operation log in `fsx/` when it fails).
//!
//! `cargo xtask reliability --long` runs fsx for [`FSX_OPS_LONG`] operations on a fresh
//! mount, from the campaign's seed ([`fsx_long`]).

mod pjdfstest;
mod scratch;

use std::{
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::{cmd, deps};
pub use scratch::janitor;
use scratch::{CsdMount, Scratch};

/// fsx operations in `cargo xtask test` (about a minute on the 2-core development machine).
pub const FSX_OPS: u64 = 100_000;
/// fsx operations in `cargo xtask reliability --long`.
pub const FSX_OPS_LONG: u64 = 1_000_000;
/// fsx's seed in `cargo xtask test`: the same operations every run.
pub const FSX_SEED: u64 = 7;

/// fsx's configuration: a file of up to 1 MiB (four erase blocks of the small preset), the
/// default mix of pread/pwrite, mmap reads and writes and truncate, plus close and reopen,
/// fsync, fdatasync, msync(MS_INVALIDATE), sendfile and posix_fadvise. Not posix_fallocate or
/// hole punching: csd answers `fallocate` with EOPNOTSUPP, which fsx takes for a failure. Not
/// copy_file_range: fsx 0.3.2 fails when the kernel copies 0 bytes, which a plain tmpfs did
/// too in 1 of 12 runs of 20,000 operations here, so it would fail the step at random.
const FSX_CONFIG: &str = "# Written by cargo xtask posix.
flen = 1048576

[weights]
close_open = 1
invalidate = 1
fsync = 1
fdatasync = 1
sendfile = 1
posix_fadvise = 1
";

/// Operations per fsx process. fsx 0.3.2 never unmaps the mapping of an mmap read, so one
/// process of a million operations would reach `vm.max_map_count` (65,530 mappings) after
/// about 370,000 and slow down long before (each truncate walks them all). A process started
/// with `-b FIRST` replays the operations before FIRST in memory (same seed, same sequence;
/// it takes milliseconds), writes the file it expects and goes on from there: the parts run
/// the operations one process would, the file written afresh at each start.
const FSX_PROCESS_OPS: u64 = 20_000;

/// Options of `cargo xtask posix`.
#[derive(Debug, Args)]
pub struct Options {
    /// fsx operations (0: no fsx)
    #[arg(long, default_value_t = FSX_OPS)]
    pub fsx_ops: u64,
    /// fsx's seed: the same seed and count repeat the same operations
    #[arg(long, default_value_t = FSX_SEED)]
    pub fsx_seed: u64,
}

/// `cargo xtask posix`: installs what is missing, then runs the suites.
pub fn run(options: &Options) -> Result<()> {
    deps::run()?;
    suites(options.fsx_ops, options.fsx_seed)
}

/// The step of `cargo xtask test` (which has run `deps` already).
pub fn test() -> Result<()> {
    suites(FSX_OPS, FSX_SEED)
}

/// pjdfstest on csd and on bindfs over tmpfs, then fsx on csd, then fsck; fails on csd-only
/// pjdfstest failures, an fsx failure or an unclean image, after cleaning up.
fn suites(fsx_ops: u64, fsx_seed: u64) -> Result<()> {
    let started = Instant::now();
    if !deps::is_root() {
        bail!("the POSIX suites need root (tmpfs and bindfs mounts, pjdfstest's user switches); run them as root");
    }
    if !cmd::on_path(deps::PJDFSTEST.name) {
        bail!("pjdfstest is not on the PATH: `cargo xtask deps` installs it");
    }
    let csd = prepare()?;
    let out = out_dir()?;
    let mut scratch = Scratch::new()?;
    let tmpfs = scratch.tmpfs("tmpfs", 256 << 20)?;
    let peer_source = tmpfs.join("peer");
    // The other file system of the EXDEV tests, for both.
    let secondary = tmpfs.join("secondary");
    for dir in [&peer_source, &secondary] {
        std::fs::create_dir(dir).with_context(|| format!("could not create {}", dir.display()))?;
    }
    let peer = scratch.bindfs(&peer_source, "bindfs")?;
    let mount = scratch.csd(&csd, "csd")?;
    let config = scratch.path().join("pjdfstest.toml");
    std::fs::write(&config, pjdfstest::config(&secondary))
        .with_context(|| format!("could not write {}", config.display()))?;

    let mut took = Vec::new();
    let t = Instant::now();
    let on_csd = pjdfstest::run(&config, &mount.root, &out.join("pjdfstest-csd.log"))?;
    took.push(("pjdfstest on csd", t.elapsed()));
    let t = Instant::now();
    let on_peer = pjdfstest::run(&config, &peer, &out.join("pjdfstest-bindfs.log"))?;
    took.push(("pjdfstest on bindfs", t.elapsed()));
    let verdict = pjdfstest::compare(&on_csd, &on_peer, pjdfstest::ALLOWED);
    print_pjdfstest(&on_csd, &on_peer, &verdict, &out);

    let mut problems = Vec::new();
    if fsx_ops > 0 {
        let t = Instant::now();
        if let Err(e) = fsx(&scratch, &mount, fsx_ops, fsx_seed, &out) {
            problems.push(format!("{e:#}"));
        }
        took.push(("fsx on csd", t.elapsed()));
    }
    if let Err(e) = finish(&mut scratch, &csd, &mount, &out) {
        problems.push(format!("{e:#}"));
    }
    drop(scratch);
    took.push(("in all", started.elapsed()));
    for (what, d) in took {
        eprintln!("posix: {what:<20} {:>6.1} s", d.as_secs_f64());
    }

    if !verdict.csd_only.is_empty() {
        problems.push(format!(
            "pjdfstest: csd fails {} tests that bindfs over tmpfs passes (listed above; \
             output in {})",
            verdict.csd_only.len(),
            out.join("pjdfstest-csd.log").display()
        ));
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    Ok(())
}

/// fsx for [`FSX_OPS_LONG`] operations from `seed` on a fresh csd mount, then fsck: the part
/// of `cargo xtask reliability --long`. Returns what ran.
pub fn fsx_long(seed: u64) -> Result<FsxRun> {
    let csd = prepare()?;
    let out = out_dir()?;
    let mut scratch = Scratch::new()?;
    let mount = scratch.csd(&csd, "csd")?;
    let ran = fsx(&scratch, &mount, FSX_OPS_LONG, seed, &out);
    let finished = finish(&mut scratch, &csd, &mount, &out);
    let ran = ran?;
    finished?;
    Ok(ran)
}

/// Checks for fsx (what a csd mount alone needs besides FUSE); builds csd (nothing to do
/// after the host tests); returns its path.
fn prepare() -> Result<PathBuf> {
    if !cmd::on_path(deps::FSX.name) {
        bail!("fsx is not on the PATH: `cargo xtask deps` installs it");
    }
    cmd::run(cmd::cargo(&crate::root()).args([
        "build",
        "--locked",
        "-p",
        "host-shell",
        "--bin",
        "csd",
    ]))?;
    // Next to this binary: `cargo xtask` runs it from the same target directory and profile.
    let exe = std::env::current_exe().context("could not find the xtask binary")?;
    let csd = exe.with_file_name(format!("csd{}", std::env::consts::EXE_SUFFIX));
    if !csd.is_file() {
        bail!(
            "{} is missing after `cargo build -p host-shell --bin csd`; run the task as `cargo xtask`",
            csd.display()
        );
    }
    Ok(csd)
}

/// `target/posix/`, where the logs stay.
fn out_dir() -> Result<PathBuf> {
    let out = crate::root().join("target/posix");
    std::fs::create_dir_all(&out).with_context(|| format!("could not create {}", out.display()))?;
    Ok(out)
}

/// Unmounts everything, keeps the daemon's log and fscks the image.
fn finish(scratch: &mut Scratch, csd: &Path, mount: &CsdMount, out: &Path) -> Result<()> {
    scratch.unmount_all()?;
    let kept = out.join("csd-daemon.log");
    std::fs::copy(&mount.log, &kept)
        .with_context(|| format!("could not copy the daemon's log to {}", kept.display()))?;
    let fsck = Command::new(csd)
        .arg("fsck")
        .arg(&mount.image)
        .output()
        .context("could not run `csd fsck`")?;
    if !fsck.status.success() {
        bail!(
            "csd fsck found the image unclean after the suites: {}{}",
            String::from_utf8_lossy(&fsck.stdout).trim(),
            String::from_utf8_lossy(&fsck.stderr).trim()
        );
    }
    eprintln!("posix: csd fsck: the image is clean after the unmount");
    Ok(())
}

/// What one fsx run did.
#[derive(Debug, Clone, Copy)]
pub struct FsxRun {
    pub ops: u64,
    pub seed: u64,
    pub seconds: f64,
}

/// fsx for `ops` operations from `seed` on a file in `mount`, in processes of
/// [`FSX_PROCESS_OPS`]; the log of a failing one goes to `out/fsx/`.
fn fsx(scratch: &Scratch, mount: &CsdMount, ops: u64, seed: u64, out: &Path) -> Result<FsxRun> {
    let config = scratch.path().join("fsx.toml");
    std::fs::write(&config, FSX_CONFIG)
        .with_context(|| format!("could not write {}", config.display()))?;
    let artifacts = out.join("fsx");
    if artifacts.exists() {
        std::fs::remove_dir_all(&artifacts)
            .with_context(|| format!("could not clear {}", artifacts.display()))?;
    }
    std::fs::create_dir_all(&artifacts)
        .with_context(|| format!("could not create {}", artifacts.display()))?;
    let file = mount.root.join("fsx.dat");
    let started = Instant::now();
    let mut first = 1;
    while first <= ops {
        let last = (first + FSX_PROCESS_OPS - 1).min(ops);
        let mut c = Command::new(deps::FSX.name);
        c.arg("-b")
            .arg(first.to_string())
            .arg("-N")
            .arg(last.to_string())
            .arg("-S")
            .arg(seed.to_string())
            .arg("-f")
            .arg(&config)
            .arg("-P")
            .arg(&artifacts)
            .arg(&file)
            .stdin(Stdio::null())
            // Its one line of success; failures go to stderr.
            .stdout(Stdio::null());
        eprintln!("+ {}", cmd::show(&c));
        // At least 100 operations a second (it does several hundred), or the mount hangs.
        let status = run_bounded(&mut c, Duration::from_secs(60 + FSX_PROCESS_OPS / 100))?;
        if let Some(signal) = status.signal() {
            bail!("fsx was stopped by signal {signal} within operations {first}..={last} from seed {seed}");
        }
        if !status.success() {
            bail!(
                "fsx failed ({status}) within operations {first}..={last} from seed {seed}: its \
                 operation log is in {}; repeat that part with `{}`, the whole run with \
                 `cargo xtask posix --fsx-ops {ops} --fsx-seed {seed}`",
                artifacts.display(),
                cmd::show(&c)
            );
        }
        first = last + 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "posix: fsx: {ops} operations from seed {seed} on csd, every read verified, in \
         {seconds:.0} s ({:.0} operations/s)",
        ops as f64 / seconds
    );
    Ok(FsxRun { ops, seed, seconds })
}

/// Runs `c` to its end, killing it after `timeout` (then it fails saying so).
fn run_bounded(c: &mut Command, timeout: Duration) -> Result<ExitStatus> {
    let mut child = c
        .spawn()
        .with_context(|| format!("could not start `{}`", cmd::show(c)))?;
    let started = Instant::now();
    loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("could not wait for `{}`", cmd::show(c)))?
        {
            return Ok(status);
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "`{}` did not finish within {} s (does the mount hang?)",
                cmd::show(c),
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn print_pjdfstest(
    on_csd: &pjdfstest::Outcome,
    on_peer: &pjdfstest::Outcome,
    verdict: &pjdfstest::Verdict,
    out: &Path,
) {
    println!(
        "\npjdfstest {} ({} tests; naptime {} s; features {}):",
        deps::PJDFSTEST.version,
        on_csd.total(),
        pjdfstest::NAPTIME_S,
        pjdfstest::FEATURES.join(", ")
    );
    println!("  csd:               {}", on_csd.counts());
    println!("  bindfs over tmpfs: {}", on_peer.counts());
    println!(
        "bindfs over tmpfs fails {} (logs in {}):",
        on_peer.failed.len(),
        out.display()
    );
    for (name, why) in &on_peer.failed {
        println!("    {name:<56} {why}");
    }
    println!(
        "csd fails {}: {} also fail on bindfs, {} allowed, {} only on csd",
        on_csd.failed.len(),
        verdict.shared.len(),
        verdict.allowed.len(),
        verdict.csd_only.len()
    );
    for name in &verdict.shared {
        println!("    {name:<56} (bindfs too)");
    }
    for name in &verdict.allowed {
        let why = pjdfstest::ALLOWED
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, why)| *why);
        println!("    {name:<56} allowed: {why}");
    }
    // Grouped by the failure's message, which names the cause more often than not.
    let mut by_message: Vec<(&str, Vec<&str>)> = Vec::new();
    for (name, why) in &verdict.csd_only {
        match by_message.iter_mut().find(|(w, _)| w == why) {
            Some((_, names)) => names.push(name),
            None => by_message.push((why, vec![name])),
        }
    }
    for (why, names) in by_message {
        println!("  only on csd, {} failing with: {why}", names.len());
        for name in names {
            println!("    {name}");
        }
    }
    for name in &verdict.stale {
        println!("  csd passes {name} now: take it off pjdfstest::ALLOWED");
    }
}
