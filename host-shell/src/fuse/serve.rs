//! The session around the FUSE adapter: mounting, the cleaner thread, stop signals, and the
//! end of a mount (offloads ended, counters logged, the file system unmounted).

use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};

use super::dev::Dev;
use super::ring::Queues;
use super::CsdFs;
use crate::daemon::log;
use crate::driver::Driver;
use crate::lfs::{Lfs, LfsError};
use crate::offload::keys::{DeviceCounters, Offload};
use crate::offload::Engine;

/// How a mount behaves.
#[derive(Debug, Clone)]
pub struct MountConfig {
    /// Let users other than the one mounting use it (`allow_other`).
    pub allow_other: bool,
    /// Check permissions (`default_permissions`).
    pub permissions: bool,
    /// Fuel of each kernel run (0: the device's default).
    pub fuel: u64,
    /// FUSE worker threads (by default the host's cores, at least 2). A kernel's run holds no
    /// worker (offload keys are set in threads of their own), and each worker more than the
    /// cores costs context switches: the kernel wakes a sleeping worker for every request. On two
    /// cores four fio readers of 4 KiB blocks made 1.3 switches per read with four workers and
    /// 0.4 with two, and read about 15% more.
    pub threads: usize,
    /// How often the background thread looks for cleaning to do.
    pub gc_interval: Duration,
    /// Take requests through FUSE over io_uring when the kernel offers it (Linux 6.14 and
    /// later, with `fuse.enable_uring` set), through `/dev/fuse` otherwise. With it, each
    /// CPU's requests are served by threads of their own on that CPU
    /// ([`super::ring::THREADS_PER_QUEUE`]), and `threads` serve what still comes through
    /// `/dev/fuse` (forgets, interrupts).
    pub io_uring: bool,
}

impl Default for MountConfig {
    fn default() -> Self {
        MountConfig {
            allow_other: false,
            permissions: true,
            fuel: 1 << 32,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get().max(2)),
            gc_interval: Duration::from_millis(500),
            io_uring: true,
        }
    }
}

/// Why a mount could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("could not mount the file system: {0}")]
    Lfs(#[from] LfsError),
    #[error("could not mount on {path}: {source}")]
    Mount {
        path: String,
        source: std::io::Error,
    },
    #[error("the FUSE session failed: {0}")]
    Session(std::io::Error),
    #[error("could not start the cleaner thread: {0}")]
    Thread(std::io::Error),
    #[error("could not block the stop signals: {0}")]
    BlockSignals(nix::Error),
    #[error("could not start the signal thread: {0}")]
    SignalThread(std::io::Error),
    #[error("the file system did not unmount cleanly: {0}")]
    Unmount(LfsError),
    #[error("could not start the FUSE io_uring queues, so the mount was undone ({0}); mount with --no-io-uring to take requests through /dev/fuse")]
    Queues(std::io::Error),
    #[error("the thread serving the mount panicked")]
    Panicked,
}

/// A mount served by a thread of this process (the demo, the benchmarks): unmounts, and waits
/// for the file system's checkpoint, in [`Background::finish`] or when dropped.
#[derive(Debug)]
pub struct Background {
    unmounter: fuser::SessionUnmounter,
    session: Option<std::thread::JoinHandle<Result<(), ServeError>>>,
}

impl Background {
    /// Serves `mounted` in a new thread.
    pub fn serve(mut mounted: Mounted) -> Result<Background, ServeError> {
        let unmounter = mounted.unmounter();
        let session = std::thread::Builder::new()
            .name("csd-mount".into())
            .spawn(move || mounted.run())
            .map_err(ServeError::Thread)?;
        Ok(Background {
            unmounter,
            session: Some(session),
        })
    }

    /// Unmounts and waits until the file system has checkpointed.
    pub fn finish(mut self) -> Result<(), ServeError> {
        self.unmounter.unmount().map_err(ServeError::Session)?;
        match self.session.take().map(std::thread::JoinHandle::join) {
            Some(Ok(served)) => served,
            Some(Err(_)) => Err(ServeError::Panicked),
            None => Ok(()),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            if let Err(e) = self.unmounter.unmount() {
                log(format_args!("could not unmount: {e}"));
            }
            if !matches!(session.join(), Ok(Ok(()))) {
                log("the mount did not end cleanly");
            }
        }
    }
}

/// The signals that end a mount (SIGINT, SIGTERM, SIGHUP), blocked: see
/// [`StopSignals::block`] and [`Mounted::unmount_on`].
#[derive(Debug)]
pub struct StopSignals(SigSet);

impl StopSignals {
    /// Blocks the stop signals in the calling thread. Call it before any thread starts (the
    /// device's too): every thread inherits the mask, so only the thread waiting for them
    /// ([`Mounted::unmount_on`]) receives them.
    pub fn block() -> Result<StopSignals, ServeError> {
        let mut signals = SigSet::empty();
        for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
            signals.add(s);
        }
        signals.thread_block().map_err(ServeError::BlockSignals)?;
        Ok(StopSignals(signals))
    }

    /// Waits for one of them (in the one thread that should receive them).
    pub fn wait(self) -> nix::Result<Signal> {
        self.0.wait()
    }
}

/// A mounted session, running until it is unmounted.
pub struct Mounted {
    session: fuser::Session<Dev>,
    /// The io_uring queues, when the kernel takes requests through them.
    queues: Option<Queues>,
    lfs: Arc<Lfs>,
    offload: Arc<Offload>,
    gc_interval: Duration,
}

impl std::fmt::Debug for Mounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mounted").finish_non_exhaustive()
    }
}

/// Mounts the file system on the device behind `driver` at `mountpoint`. The mount is live
/// when this returns; [`Mounted::run`] serves it. Offloads get the program slots and range
/// sets the device's Identify reports.
pub fn mount(
    driver: &Driver,
    mountpoint: &Path,
    config: &MountConfig,
    device: DeviceCounters,
) -> Result<Mounted, ServeError> {
    let lfs = Arc::new(Lfs::mount(driver)?);
    lfs.report_halt_with(|halted| log(halted));
    let offload = Arc::new(Offload::new(
        Arc::clone(&lfs),
        Engine::new(driver.clone()),
        config.fuel,
        config.permissions,
        device,
    ));
    let fs = Arc::new(CsdFs::new(Arc::clone(&lfs), Arc::clone(&offload)));
    let invalidate = Arc::clone(&fs.invalidate);
    let uring_agreed = Arc::new(AtomicBool::new(false));
    let dev = Dev {
        fs: Arc::clone(&fs),
        want_io_uring: config.io_uring,
        io_uring_agreed: Arc::clone(&uring_agreed),
    };
    let mut options = vec![
        fuser::MountOption::FSName("csd".into()),
        fuser::MountOption::Subtype("csd".into()),
    ];
    if config.permissions {
        options.push(fuser::MountOption::DefaultPermissions);
    }
    let mut fuse_config = fuser::Config::default();
    fuse_config.mount_options = options;
    fuse_config.n_threads = Some(config.threads.max(1));
    fuse_config.acl = if config.allow_other {
        fuser::SessionACL::All
    } else {
        fuser::SessionACL::Owner
    };
    let session = match fuser::Session::new(dev, mountpoint, &fuse_config) {
        Ok(s) => s,
        Err(source) => {
            // Nothing was served: give the device back as it was. (The offload keys hold the
            // file system too: without dropping them first it stayed shared and was never
            // unmounted here.)
            drop((fs, offload));
            let unmounted = Arc::try_unwrap(lfs).map(Lfs::unmount);
            if let Ok(Err(e)) = unmounted {
                log(format_args!("unmounting after a failed mount: {e}"));
            }
            return Err(ServeError::Mount {
                path: mountpoint.display().to_string(),
                source,
            });
        }
    };
    // Notices go out once the session exists; without them (no thread to be had) new opens
    // still drop stale pages.
    if let Err(e) = invalidate.start(session.notifier()) {
        log(format_args!("no thread to drop cached pages from: {e}"));
    }
    // The kernel holds every request until each CPU's queue has an entry.
    let started = if uring_agreed.load(Ordering::Acquire) {
        Queues::start(session.as_fd(), &fs).map_err(ServeError::Queues)
    } else {
        Ok(None)
    };
    let queues = match started {
        Ok(queues) => queues,
        Err(e) => {
            // Undo the mount (the session unmounts when dropped) and give the device back as
            // it was.
            drop((session, fs, offload));
            if let Ok(Err(unmounting)) = Arc::try_unwrap(lfs).map(Lfs::unmount) {
                log(format_args!(
                    "unmounting after a failed mount: {unmounting}"
                ));
            }
            return Err(e);
        }
    };
    match &queues {
        Some(queues) => log(format_args!(
            "requests through FUSE over io_uring: {queues}"
        )),
        None => log("requests through /dev/fuse"),
    }
    drop(fs);
    Ok(Mounted {
        session,
        queues,
        lfs,
        offload,
        gc_interval: config.gc_interval,
    })
}

impl Mounted {
    /// Something that unmounts the session from another thread.
    pub fn unmounter(&mut self) -> fuser::SessionUnmounter {
        self.session.unmount_callable()
    }

    /// Unmounts when one of `signals` arrives: a thread waits for it (`sigwait`), says so in
    /// the log and unmounts `mountpoint` (named in the log).
    pub fn unmount_on(
        &mut self,
        signals: StopSignals,
        mountpoint: &Path,
    ) -> Result<(), ServeError> {
        let mut unmounter = self.unmounter();
        let mountpoint = mountpoint.display().to_string();
        std::thread::Builder::new()
            .name("csd-signals".into())
            .spawn(move || {
                if let Ok(signal) = signals.0.wait() {
                    log(format_args!("{signal}: unmounting {mountpoint}"));
                    if let Err(e) = unmounter.unmount() {
                        log(format_args!("could not unmount {mountpoint}: {e}"));
                    }
                }
            })
            .map(drop)
            .map_err(ServeError::SignalThread)
    }

    /// Serves requests until the mount goes away (`fusermount3 -u`, or the unmounter), then
    /// ends every offload, stops the cleaner, logs the file system's counters of this mount
    /// (`file system counters: data_write_blocks=.. gc_zones=.. ...`) and unmounts the file
    /// system (a checkpoint).
    pub fn run(self) -> Result<(), ServeError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let gc_lfs = Arc::clone(&self.lfs);
        let gc_offload = Arc::clone(&self.offload);
        let interval = self.gc_interval;
        let cleaner = std::thread::Builder::new()
            .name("csd-cleaner".into())
            .spawn(move || cleaner(&gc_lfs, &gc_offload, interval, &stopped))
            .map_err(ServeError::Thread)?;
        let served = self.session.run();
        // The connection has ended: the queues' entries are the kernel's no more.
        drop(self.queues);
        drop(stop);
        if cleaner.join().is_err() {
            log("the cleaner thread panicked");
        }
        self.offload.shutdown();
        drop(self.offload);
        let lfs = Arc::try_unwrap(self.lfs).map_err(|_| {
            ServeError::Unmount(LfsError::LogicBug(
                "the file system is still shared after the session ended".into(),
            ))
        })?;
        match lfs.stats() {
            Ok(s) => log(format_args!("file system counters: {s}")),
            Err(e) => log(format_args!("file system counters: {e}")),
        }
        let unmounted = lfs.unmount().map_err(ServeError::Unmount);
        served.map_err(ServeError::Session)?;
        unmounted
    }
}

/// The background thread: reclaims the offload state of exited processes and cleans zones
/// ahead of need while free zones run low, until `stop` is dropped.
fn cleaner(lfs: &Lfs, offload: &Offload, interval: Duration, stop: &mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(interval) {
        offload.sweep();
        loop {
            match lfs.wants_cleaning() {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    log(format_args!("cleaner: {e}"));
                    break;
                }
            }
            match lfs.gc_step() {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    log(format_args!("cleaner: {e}"));
                    break;
                }
            }
            if !matches!(stop.try_recv(), Err(mpsc::TryRecvError::Empty)) {
                return;
            }
        }
    }
}
