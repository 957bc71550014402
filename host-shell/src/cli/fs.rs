//! `csd mkfs|mount|fsck`: the file system on a device image, and its FUSE mount.
//!
//! `csd mount` without `--foreground` starts itself again in the background with
//! `--foreground` (its own process group, stdin and stdout on /dev/null, stderr appended to
//! the log file), waits until the mount shows in `/proc/self/mountinfo`, prints one line
//! naming the daemon's pid and log, and returns. The daemon runs until the mount goes away
//! (`fusermount3 -u MOUNTPOINT`, or SIGINT/SIGTERM/SIGHUP, which unmount it), then writes a
//! checkpoint and closes the device before it exits.

use std::path::{Path, PathBuf};

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
    /// FUSE worker threads [default: the host's cores, at least 2]
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,
    /// Take every request through /dev/fuse, also when the kernel offers FUSE over io_uring
    /// (the `fuse` module's `enable_uring`, Linux 6.14 and later).
    #[arg(long)]
    no_io_uring: bool,
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
    super::open::use_file_system(format!("csd mkfs (pid {})", std::process::id()));
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
    super::open::use_file_system(format!("csd fsck (pid {})", std::process::id()));
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
        io_uring: !args.no_io_uring,
        ..MountConfig::default()
    };
    super::open::use_file_system(format!(
        "csd mount on {} (pid {})",
        args.mountpoint.display(),
        std::process::id()
    ));
    // Attached to the device running over the image, or in-process or on the board in QEMU,
    // as `--device` says.
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

fn daemonize(args: &MountArgs) -> anyhow::Result<()> {
    let mountpoint = args
        .mountpoint
        .canonicalize()
        .with_context(|| format!("could not resolve {}", args.mountpoint.display()))?;
    let mut argv: Vec<std::ffi::OsString> = vec![
        "mount".into(),
        args.image.clone().into(),
        mountpoint.clone().into(),
        "--foreground".into(),
        "--fuel".into(),
        args.fuel.to_string().into(),
    ];
    if let Some(threads) = args.threads {
        argv.extend(["--threads".into(), threads.to_string().into()]);
    }
    for (on, flag) in [
        (args.allow_other, "--allow-other"),
        (args.no_permissions, "--no-permissions"),
        (args.no_io_uring, "--no-io-uring"),
        (args.emulate_host_cache, "--emulate-host-cache"),
    ] {
        if on {
            argv.push(flag.into());
        }
    }
    let log = super::daemon::log_path(&args.image, args.log.as_deref());
    let mut daemon = super::daemon::Daemon::spawn("the mount daemon", &argv, log)?;
    let bar = spinner("mounting");
    let ready = daemon.wait(|| is_mounted(&mountpoint));
    bar.finish_and_clear();
    ready?;
    if args.json {
        return print_json(&serde_json::json!({
            "image": args.image.display().to_string(),
            "mountpoint": mountpoint.display().to_string(),
            "pid": daemon.pid(),
            "log": daemon.log().display().to_string(),
        }));
    }
    println!(
        "mounted {} on {} (pid {}, log {})",
        args.image.display(),
        mountpoint.display(),
        daemon.pid(),
        daemon.log().display()
    );
    Ok(())
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
