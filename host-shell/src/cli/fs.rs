//! `csd mkfs|mount|fsck`: the file system on a device image, and its FUSE mount.
//!
//! `csd mount` without `--foreground` starts itself again in the background with
//! `--foreground` (its own process group, stdin and stdout on /dev/null, stderr appended to
//! the log file), waits until the mount shows in `/proc/self/mountinfo`, prints one line
//! naming the daemon's pid and log, and returns. The daemon runs until the mount goes away
//! (`fusermount3 -u MOUNTPOINT`, or SIGINT/SIGTERM/SIGHUP, which unmount it), then writes a
//! checkpoint and closes the device before it exits.

use std::{
    fs::OpenOptions,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context};
use clap::Args;
use host_shell::{
    daemon,
    fuse::{self, MountConfig},
    lfs::{Attr, InodeNo, Lfs},
};

use super::{device::CreateArgs, print_json, spinner, with_device};

#[derive(Debug, Args)]
pub struct MkfsArgs {
    #[command(flatten)]
    device: CreateArgs,
    /// Owner of the root directory [default: the caller].
    #[arg(long)]
    uid: Option<u32>,
    /// Group of the root directory [default: the caller's].
    #[arg(long)]
    gid: Option<u32>,
}

#[derive(Debug, Args)]
pub struct MountArgs {
    /// The device image, made by `csd mkfs`.
    image: PathBuf,
    /// An existing directory to mount on.
    mountpoint: PathBuf,
    /// Serve in this process until unmounted (Ctrl-C unmounts cleanly).
    #[arg(long, short)]
    foreground: bool,
    /// Let other users use the mount (`allow_other`; root may always, others need
    /// `user_allow_other` in /etc/fuse.conf).
    #[arg(long)]
    allow_other: bool,
    /// Do not check permissions: every caller may do everything.
    #[arg(long)]
    no_permissions: bool,
    /// Fuel of each kernel run (instructions plus helper costs; 0: the device's default).
    #[arg(long, default_value_t = 1 << 32)]
    fuel: u64,
    /// FUSE worker threads [default: the host's cores, at least 4]
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,
    /// The daemon's log in the background [default: IMAGE.log].
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// For crash tests: keep the image's writes in this process until a Flush syncs them, as
    /// the host's page cache would, so killing the daemon loses what a crash of the host
    /// would lose.
    #[arg(long, hide = true)]
    emulate_host_cache: bool,
    /// Print JSON once mounted: {"image", "mountpoint", "pid", "log"} (the daemon's pid and
    /// its log file).
    #[arg(long, conflicts_with = "foreground")]
    json: bool,
}

#[derive(Debug, Args)]
pub struct FsckArgs {
    /// The device image (not mounted).
    image: PathBuf,
    /// Print JSON: {"clean": bool, "problems": [{"check", "detail"}]}.
    #[arg(long)]
    json: bool,
}

pub fn mkfs(args: &MkfsArgs) -> anyhow::Result<()> {
    let image = &args.device.image;
    let created = if image.exists() {
        None
    } else if args.device.json {
        Some(super::device::make(&args.device)?)
    } else {
        super::device::create(&args.device)?;
        None
    };
    let uid = args.uid.unwrap_or_else(|| nix::unistd::getuid().as_raw());
    let gid = args.gid.unwrap_or_else(|| nix::unistd::getgid().as_raw());
    let bar = spinner("making the file system");
    with_device(image, |_, driver| {
        Lfs::mkfs(driver, uid, gid)
            .with_context(|| format!("could not make a file system on {}", image.display()))
    })?;
    bar.finish_and_clear();
    if args.device.json {
        return print_json(&serde_json::json!({
            "image": image.display().to_string(),
            "created": created,
            "uid": uid,
            "gid": gid,
        }));
    }
    println!("made a file system on {}", image.display());
    Ok(())
}

pub fn fsck(args: &FsckArgs) -> anyhow::Result<()> {
    let bar = spinner("checking the file system");
    let problems = with_device(&args.image, |_, driver| {
        let lfs = Lfs::mount(driver).with_context(|| {
            format!(
                "could not mount the file system on {}",
                args.image.display()
            )
        })?;
        let problems = lfs.fsck().context("fsck could not finish")?;
        lfs.unmount().context("could not unmount after fsck")?;
        Ok(problems)
    })?;
    bar.finish_and_clear();
    if args.json {
        let list: Vec<_> = problems
            .iter()
            .map(|p| serde_json::json!({"check": p.check, "detail": p.detail}))
            .collect();
        print_json(&serde_json::json!({"clean": problems.is_empty(), "problems": list}))?;
    } else if problems.is_empty() {
        println!("{}: clean", args.image.display());
    } else {
        for p in &problems {
            println!("{p}");
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(anyhow!(
            "{}: {} problem(s) found (listed above)",
            args.image.display(),
            problems.len()
        ))
    }
}

/// What the daemon logs when it emulates the host's page cache (crash tests look for it).
pub const HOST_CACHE_LOG: &str =
    "emulating the host page cache: the image's writes stay in this process until a Flush";

pub fn mount(args: &MountArgs) -> anyhow::Result<()> {
    if !args.mountpoint.is_dir() {
        return Err(anyhow!(
            "{} is not a directory: make it first",
            args.mountpoint.display()
        ));
    }
    if args.foreground {
        serve(args)
    } else {
        daemonize(args)
    }
}

/// Serves the mount in this process until it is unmounted.
fn serve(args: &MountArgs) -> anyhow::Result<()> {
    // Block the stop signals before any thread starts, so every thread inherits the mask and
    // only the mount's signal thread receives them.
    let signals = fuse::StopSignals::block()?;
    let config = MountConfig {
        allow_other: args.allow_other,
        permissions: !args.no_permissions,
        fuel: args.fuel,
        threads: args
            .threads
            .map_or(MountConfig::default().threads, usize::from),
        ..MountConfig::default()
    };
    // In-process or on the board in QEMU, as `--device` says.
    let device = std::sync::Arc::new(if args.emulate_host_cache {
        daemon::log(HOST_CACHE_LOG);
        super::open::OpenDevice::open_with_host_cache(&args.image)?
    } else {
        super::open::OpenDevice::open_selected(&args.image)?
    });
    let driver = device.driver();
    let counters = std::sync::Arc::clone(&device);
    // The board keeps no counters the host can read while it runs.
    let link = Box::new(move || counters.stats());
    let served = (|| -> anyhow::Result<()> {
        let mut mounted = fuse::mount(&driver, &args.mountpoint, &config, link)?;
        mounted.unmount_on(signals, &args.mountpoint)?;
        daemon::log(format_args!(
            "mounted {} on {}",
            args.image.display(),
            args.mountpoint.display()
        ));
        mounted.run()?;
        Ok(())
    })();
    drop(driver);
    let device = std::sync::Arc::try_unwrap(device)
        .map_err(|_| anyhow!("the device is still in use after the mount ended"))?;
    let closed = device.close();
    served?;
    closed
        .with_context(|| format!("{}: the device did not close cleanly", args.image.display()))?;
    daemon::log(format_args!("unmounted {}: clean", args.image.display()));
    Ok(())
}

/// Whether `/proc/self/mountinfo` lists a FUSE mount at `mountpoint` (canonical).
fn is_mounted(mountpoint: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = mountpoint.to_string_lossy();
    info.lines().any(|line| {
        let mut halves = line.splitn(2, " - ");
        let (Some(left), Some(right)) = (halves.next(), halves.next()) else {
            return false;
        };
        let point = left.split(' ').nth(4).map(unescape_mountinfo);
        let fstype = right.split(' ').next();
        point.as_deref() == Some(&*want)
            && fstype.is_some_and(|t| t == "fuse" || t.starts_with("fuse."))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if let Some(Ok(v)) = field.get(i + 1..i + 4).map(|o| u8::from_str_radix(o, 8)) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How long the background start may take before `csd mount` gives up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

fn daemonize(args: &MountArgs) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let mountpoint = args
        .mountpoint
        .canonicalize()
        .with_context(|| format!("could not resolve {}", args.mountpoint.display()))?;
    let log_path = args.log.clone().unwrap_or_else(|| {
        let mut p = args.image.clone().into_os_string();
        p.push(".log");
        PathBuf::from(p)
    });
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("could not open the log {}", log_path.display()))?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let exe = std::env::current_exe().context("could not find the csd binary")?;
    let mut command = Command::new(exe);
    if super::open::selected() == super::open::DeviceKind::Qemu {
        command.args(["--device", "qemu"]);
    }
    if super::open::board_log_shown() {
        command.arg("--board-log");
    }
    if super::open::timing_selected() == super::open::TimingSwitch::Off {
        command.args(["--timing", "off"]);
    }
    match super::open::executor_selected() {
        Some(super::open::ExecutorSwitch::Jit) => command.args(["--executor", "jit"]),
        Some(super::open::ExecutorSwitch::Interp) => command.args(["--executor", "interp"]),
        None => &mut command,
    };
    command
        .arg("mount")
        .arg(&args.image)
        .arg(&mountpoint)
        .arg("--foreground")
        .arg("--fuel")
        .arg(args.fuel.to_string());
    if let Some(threads) = args.threads {
        command.arg("--threads").arg(threads.to_string());
    }
    if args.allow_other {
        command.arg("--allow-other");
    }
    if args.no_permissions {
        command.arg("--no-permissions");
    }
    if args.emulate_host_cache {
        command.arg("--emulate-host-cache");
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .process_group(0)
        .spawn()
        .context("could not start the mount daemon")?;
    // Starting the device on a large image, or on the board in QEMU, takes a while.
    let bar = spinner("mounting");
    let started = Instant::now();
    loop {
        if is_mounted(&mountpoint) {
            bar.finish_and_clear();
            if args.json {
                return print_json(&serde_json::json!({
                    "image": args.image.display().to_string(),
                    "mountpoint": mountpoint.display().to_string(),
                    "pid": child.id(),
                    "log": log_path.display().to_string(),
                }));
            }
            println!(
                "mounted {} on {} (pid {}, log {})",
                args.image.display(),
                mountpoint.display(),
                child.id(),
                log_path.display()
            );
            return Ok(());
        }
        if let Some(status) = child
            .try_wait()
            .context("could not watch the mount daemon")?
        {
            let text = std::fs::read(&log_path).unwrap_or_default();
            let tail = String::from_utf8_lossy(text.get(log_start as usize..).unwrap_or_default());
            let last = tail
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| l.trim_start_matches("csd: ").to_string())
                .unwrap_or_else(|| format!("it exited with {status}"));
            return Err(anyhow!("the mount daemon failed: {last}"));
        }
        if started.elapsed() > START_TIMEOUT {
            let _ = child.kill();
            return Err(anyhow!(
                "the mount did not appear on {} within {} s; see {}",
                mountpoint.display(),
                START_TIMEOUT.as_secs(),
                log_path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The attributes of `path` in a mounted file system (`/a/b` or `a/b`; no symlinks followed).
pub(crate) fn lookup_path(lfs: &Lfs, path: &str) -> anyhow::Result<Attr> {
    let mut attr = lfs
        .getattr(InodeNo::ROOT)
        .context("could not read the root directory")?;
    for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
        attr = lfs
            .lookup(attr.ino, part.as_bytes())
            .with_context(|| format!("{path}: could not look up {part:?}"))?;
    }
    Ok(attr)
}
