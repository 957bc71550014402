//! Where a command's device runs: in this process over the image file (the default), or in
//! QEMU (`--device qemu`: the board's link image on the emulated Cortex-R52, over the same
//! image file through semihosting, reached through the serial link).
//!
//! [`OpenDevice`] puts both behind the three things a command needs: a [`Driver`], counters,
//! and a close that leaves the image as a powered-off device would. The selection is made once
//! per process ([`select`], from the global `--device` flag), so that every command that opens
//! a device through [`super::with_device`] honours it; a command that opens devices its own way
//! (a FUSE mount) opens an [`OpenDevice`] with [`OpenDevice::open_selected`] and keeps it
//! until it unmounts. With `--board-log`, closing a QEMU device first prints what the board
//! logged (decoded with the board image, see `host_shell::link::board_log`).

use std::{
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        OnceLock,
    },
};

use anyhow::Context;
use clap::ValueEnum;
use host_shell::{
    device::{inprocess::Stats, Device, DeviceOptions, ExecutorKind, FileDevice, Timing},
    driver::Driver,
    link::{running::AttachError, AttachedDevice, QemuDevice, QemuOptions, Session},
    nand::{file::FileStore, hostcache::CachedFile},
};

/// Where the device runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum DeviceKind {
    /// The firmware in a thread of this process, over the image file.
    #[default]
    Inprocess,
    /// The firmware on the Cortex-R52 in QEMU (mps3-an536), over the image file through
    /// semihosting; needs qemu-system-arm and the board image (`cargo xtask board build`, or
    /// the ELF named by CSD_BOARD_ELF).
    Qemu,
}

static SELECTED: OnceLock<DeviceKind> = OnceLock::new();

/// Chooses where this process's devices run; the first call wins.
pub fn select(kind: DeviceKind) {
    let _ = SELECTED.set(kind);
}

/// Where this process's devices run.
pub fn selected() -> DeviceKind {
    SELECTED.get().copied().unwrap_or_default()
}

/// Whether devices keep modeled time (`--timing`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum TimingSwitch {
    /// The timing preset the image was made with, if it records one.
    #[default]
    On,
    /// No modeled time.
    Off,
}

static TIMING: OnceLock<TimingSwitch> = OnceLock::new();

/// Chooses whether this process's devices keep modeled time; the first call wins.
pub fn select_timing(switch: TimingSwitch) {
    let _ = TIMING.set(switch);
}

/// Whether this process's devices keep modeled time.
pub fn timing_selected() -> TimingSwitch {
    TIMING.get().copied().unwrap_or_default()
}

/// What runs kernels (`--executor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExecutorSwitch {
    /// Native code from the JIT.
    Jit,
    /// The metered interpreter.
    Interp,
}

static EXECUTOR: OnceLock<Option<ExecutorSwitch>> = OnceLock::new();

/// Chooses what runs this process's kernels (`None`: the host's default); the first call
/// wins. The board always interprets, so asking it for the JIT is an error.
pub fn select_executor(switch: Option<ExecutorSwitch>) -> anyhow::Result<()> {
    if switch == Some(ExecutorSwitch::Jit) && selected() == DeviceKind::Qemu {
        anyhow::bail!(
            "--executor jit runs kernels on the in-process device; the board (--device qemu) \
             always interprets them"
        );
    }
    let _ = EXECUTOR.set(switch);
    Ok(())
}

/// `--executor` as given (`None` when not).
pub fn executor_selected() -> Option<ExecutorSwitch> {
    EXECUTOR.get().copied().flatten()
}

/// What runs this process's kernels on the in-process device.
pub fn executor() -> ExecutorKind {
    match executor_selected() {
        Some(ExecutorSwitch::Jit) => ExecutorKind::Jit,
        Some(ExecutorSwitch::Interp) => ExecutorKind::Interp,
        None => ExecutorKind::for_host(),
    }
}

/// The device options of this process's devices.
fn options() -> DeviceOptions {
    DeviceOptions {
        timing: match timing_selected() {
            TimingSwitch::On => Timing::Image,
            TimingSwitch::Off => Timing::Off,
        },
        executor: executor(),
        ..DeviceOptions::default()
    }
}

static BOARD_LOG: AtomicBool = AtomicBool::new(false);

/// Whether closing a QEMU device prints the board's log on stderr (`--board-log`).
pub fn show_board_log(on: bool) {
    BOARD_LOG.store(on, Ordering::Relaxed);
}

/// Whether `--board-log` was given.
pub fn board_log_shown() -> bool {
    BOARD_LOG.load(Ordering::Relaxed)
}

static SESSION: OnceLock<Session> = OnceLock::new();

/// Says that this process runs the file system on the devices it opens (`holder` names it
/// for others' error messages): on a running device, it attaches as the file system's one
/// session. The first call wins.
pub fn use_file_system(holder: String) {
    let _ = SESSION.set(Session::FileSystem { holder });
}

/// What this process attaches to a running device as.
fn session() -> Session {
    SESSION.get().cloned().unwrap_or(Session::Raw)
}

/// A device a command opened, wherever it runs, and the lock that keeps every other `csd`
/// process off its image while it runs.
#[derive(Debug)]
pub struct OpenDevice {
    device: Running,
    /// None on a running device, whose daemon holds the lock.
    lock: Option<ImageLock>,
}

/// Where an open device runs.
#[derive(Debug)]
enum Running {
    InProcess(FileDevice),
    /// In-process, with the host's page cache emulated in this process (crash tests).
    HostCached(Device<FileStore<CachedFile<std::fs::File>>>),
    Qemu(QemuDevice),
    /// The device `csd device start` keeps running over the image, shared.
    Attached(AttachedDevice),
}

impl OpenDevice {
    /// Opens the device image at `path` where this process's devices run.
    pub fn open_selected(path: &Path) -> anyhow::Result<Self> {
        Self::open(selected(), path)
    }

    /// Opens the device image at `path`: attaches to the device running over it if there is
    /// one (`csd device start`), else powers one on in-process (power-on recovery runs here),
    /// or by booting the board in QEMU over it (power-on recovery runs on the board).
    pub fn open(kind: DeviceKind, path: &Path) -> anyhow::Result<Self> {
        if let Some(device) = Self::attach(path)? {
            return Ok(device);
        }
        Self::power_on(kind, path)
    }

    /// Attaches to the device running over `path`, if one does.
    pub fn attach(path: &Path) -> anyhow::Result<Option<Self>> {
        match AttachedDevice::attach(path, &session()) {
            Ok(Some(device)) => {
                // The running device was powered on with its own options.
                let chosen = selected() == DeviceKind::Qemu
                    || timing_selected() == TimingSwitch::Off
                    || executor_selected().is_some();
                if chosen {
                    eprintln!(
                        "csd: {}: attached to the device running over it (pid {}); --device, \
                         --timing and --executor apply where a command powers a device on \
                         (`csd device start`)",
                        path.display(),
                        device.pid()
                    );
                }
                Ok(Some(OpenDevice {
                    device: Running::Attached(device),
                    lock: None,
                }))
            }
            Ok(None) => Ok(None),
            Err(AttachError::Refused(why)) => Err(anyhow::anyhow!(
                "{}: the running device refused this command: {why}",
                path.display()
            )),
            Err(e) => Err(anyhow::Error::new(e).context(format!(
                "{}: could not attach to the running device",
                path.display()
            ))),
        }
    }

    /// Powers on a device of this process over the image at `path` (see [`Self::open`]).
    pub fn power_on(kind: DeviceKind, path: &Path) -> anyhow::Result<Self> {
        let lock = Some(ImageLock::take(path)?);
        let device = match kind {
            DeviceKind::Inprocess => Running::InProcess(FileDevice::open(path, options())?),
            DeviceKind::Qemu => {
                let options = QemuOptions::new(Some(path.to_path_buf()));
                let device = QemuDevice::start(&options).with_context(|| {
                    format!("{}: could not start the device in QEMU", path.display())
                })?;
                Running::Qemu(device)
            }
        };
        Ok(OpenDevice { device, lock })
    }

    /// Opens the image at `path` in-process behind an emulated host page cache
    /// ([`CachedFile`]): only a Flush writes to the file, so a kill of this process loses what a
    /// crash of the host would.
    pub fn open_with_host_cache(path: &Path) -> anyhow::Result<Self> {
        let lock = Some(ImageLock::take(path)?);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| format!("could not open {}", path.display()))?;
        let store = FileStore::open_file(CachedFile::new(file), path)?;
        let device = Device::open_image(store, options())?;
        Ok(OpenDevice {
            device: Running::HostCached(device),
            lock,
        })
    }

    /// A driver on queue pair 0.
    pub fn driver(&self) -> Driver {
        match &self.device {
            Running::InProcess(d) => d.driver(),
            Running::HostCached(d) => d.driver(),
            Running::Qemu(d) => d.driver(),
            Running::Attached(d) => d.driver(),
        }
    }

    /// Who holds the file system of the running device this command attached to (when it is
    /// not this process).
    pub fn file_system_holder(&self) -> Option<&str> {
        match &self.device {
            Running::Attached(d) => d.file_system(),
            _ => None,
        }
    }

    /// The device's counters so far; `None` in QEMU, where the board keeps none the host can
    /// read (the link's counters arrive when it stops).
    pub fn stats(&self) -> Option<Stats> {
        match &self.device {
            Running::InProcess(d) => Some(d.stats()),
            Running::HostCached(d) => Some(d.stats()),
            Running::Qemu(_) | Running::Attached(_) => None,
        }
    }

    /// Powers the device off: in-process, after the commands it took; in QEMU, by stopping the
    /// board (every completed write is already in the image file, as after a power cut), after
    /// printing its log if `--board-log` asked for it. The image is unlocked after that.
    pub fn close(self) -> anyhow::Result<()> {
        let OpenDevice { device, lock } = self;
        let closed = match device {
            Running::InProcess(d) => d.close().map(|_| ()).map_err(Into::into),
            // A clean stop syncs what the cache holds, as a host that shuts down does.
            Running::HostCached(d) => {
                use host_shell::nand::file::ImageFile;
                let mut file = d.close()?.into_file();
                file.sync_data().context("could not sync the image")
            }
            Running::Qemu(d) => {
                if board_log_shown() {
                    print_board_log(&d);
                }
                match d.stop() {
                    Some(_) => Ok(()),
                    None => Err(anyhow::anyhow!(
                        "the link to the board stopped unexpectedly"
                    )),
                }
            }
            // The device goes on running for others.
            Running::Attached(d) => {
                d.detach();
                Ok(())
            }
        };
        drop(lock);
        closed
    }
}

/// Waits until no process holds the image at `path` (a daemon powering off), for at most
/// `timeout`; whether it is free.
pub fn wait_unlocked(path: &Path, timeout: std::time::Duration) -> bool {
    let started = std::time::Instant::now();
    loop {
        let free = std::fs::File::open(path).map_or(true, |f| f.try_lock().is_ok());
        if free || started.elapsed() > timeout {
            return free;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// How long opening an image waits for another process to let go of it.
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// An exclusive advisory lock (`flock`) on a device image, held for as long as a device runs
/// over it: two devices over one image would each recover and write it as if it were theirs
/// alone. The kernel drops the lock when its holder exits, however it exits.
#[derive(Debug)]
struct ImageLock {
    _file: std::fs::File,
}

impl ImageLock {
    fn take(path: &Path) -> anyhow::Result<Self> {
        // The board would create a missing image with its own geometry, and the in-process
        // device would say less: a command on a device that does not exist is a mistake.
        let file = std::fs::File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => anyhow::anyhow!(
                "{}: no such device image; create it with `csd device create`",
                path.display()
            ),
            _ => anyhow::Error::new(e).context(format!("could not open {}", path.display())),
        })?;
        // A daemon that was just unmounted still writes its checkpoint for a moment.
        let started = std::time::Instant::now();
        loop {
            match file.try_lock() {
                Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < LOCK_GRACE => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return Self::locked(path, file, other),
            }
        }
    }

    fn locked(
        path: &Path,
        file: std::fs::File,
        lock: Result<(), std::fs::TryLockError>,
    ) -> anyhow::Result<Self> {
        match lock {
            Ok(()) => Ok(ImageLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
                "{}: the image is in use by another csd process (a mount, or a command still \
                 running); unmount it or wait for that command, then try again",
                path.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("could not lock {}", path.display()))
            }
        }
    }
}

/// The board's log on stderr, one `board: LEVEL message` line per message; a log that cannot
/// be decoded is one `csd:` line saying why (the command's own outcome stands).
fn print_board_log(device: &QemuDevice) {
    match device.board_log() {
        Ok(lines) => {
            for line in lines {
                eprintln!("board: {line}");
            }
        }
        Err(e) => eprintln!("csd: could not show the board's log: {e}"),
    }
}
