//! Offload through extended attributes (DESIGN.md section 5): the mount's `user.csd.*` keys,
//! on top of the [`Engine`].
//!
//! The keys are never stored in the file system: they are state of one (inode, process) pair,
//! held here while the mount lives.
//!
//! - `user.csd.args`: `param0 param1` (decimal or `0x` hex) for offloads set after it.
//! - `user.csd.read_stream` = kernel path: loads the kernel into a free device program slot,
//!   snapshots the file and defines a range set over its extents. Then every read by this
//!   process on this inode, through a handle it opens afterwards (the mount's offload
//!   handles, see `crate::fuse`), runs the kernel over the requested range of the snapshot and
//!   returns its output (at most the requested length; a read at or past the snapshot's end
//!   returns end of file without running the kernel).
//! - `user.csd.file_job` = kernel path: runs the kernel once over the whole snapshot when set
//!   (the snapshot, slot and range set are released right after); `user.csd.result` returns
//!   its output, as often as asked, without running it again.
//! - `user.csd.write_stream` = kernel path: every write by this process on this inode, through
//!   a handle it opens afterwards, runs the kernel with the written bytes as its input (`csd_input`); its output is what is stored at
//!   the write's offset, and the write reports the caller's length as written.
//! - `user.csd.stats`: `instructions=.. fuel_used=.. device_bytes_read=.. bytes_returned=..
//!   device_ns=.. device_compute_ns=.. device_nand_ns=.. jit=0|1` of the process's last run on the
//!   inode (the modeled device times are 0 with timing off).
//! - `user.csd.log`: the `csd_log` messages of the process's last run on the inode, one per
//!   line (the device keeps the last 16).
//! - `user.csd.link` (any inode): `to_device=.. to_host=..`, the device's host-link byte
//!   counters since it was opened.
//! - `user.csd.counters` (the mount's root): the file system's counters of this mount and the
//!   device's since it was opened, `key=value` pairs, live (the file system's are the line the
//!   daemon logs at unmount; the device's are absent on the board in QEMU).
//!
//! Removing a key ends it. The state of a process that has exited is reclaimed on the next
//! offload operation, on any release, and by the mount's background thread.
//!
//! Paths name a file inside the same mount, relative to its root (`/kernels/entropy.o` or
//! `kernels/entropy.o`); symbolic links are not followed.

mod error;
mod process;
mod stream;
mod xattr;

pub use error::OffloadError;
use process::Process;
pub(crate) use xattr::PREFIX;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::program::RunStats;

use super::{lock, Engine, Kernel, Lease, Ranges};
use crate::daemon::log;
use crate::lfs::{Credentials, InodeNo, Lfs};
use error::Result;
use stream::Stream;

/// How a read on an offload handle reached the mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadPath {
    /// read(2) and its kin: an offload handle is direct I/O, so the data goes to the caller
    /// only.
    Direct,
    /// For the page cache: a memory mapping's page fault, or readahead. The page cache belongs
    /// to the inode, so what this read returns is what every process mapping the file sees.
    PageCache,
}

/// Who made a request.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// The calling thread (FUSE's `pid`).
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The counters of the device that runs the mount, read live; `None` where the device keeps
/// none the host can read (the board in QEMU).
pub type DeviceCounters = Box<dyn Fn() -> Option<crate::device::inprocess::Stats> + Send + Sync>;

/// A finished file job.
#[derive(Debug)]
struct FileJob {
    kernel: String,
    output: Vec<u8>,
}

/// The offload state of one (inode, process).
#[derive(Debug, Default)]
struct ProcState {
    args: Option<(u64, u64)>,
    read: Option<Arc<Stream>>,
    write: Option<Arc<Stream>>,
    job: Option<FileJob>,
    last: Arc<Mutex<Option<LastRun>>>,
}

/// The counters and log of a process's last run on an inode.
#[derive(Debug, Clone)]
struct LastRun {
    stats: RunStats,
    log: Vec<Vec<u8>>,
}

impl LastRun {
    fn of(result: &common::program::ExecResult, log: &[Vec<u8>]) -> Self {
        LastRun {
            stats: result.stats,
            log: log.to_vec(),
        }
    }
}

impl ProcState {
    fn is_empty(&self) -> bool {
        self.args.is_none() && self.read.is_none() && self.write.is_none() && self.job.is_none()
    }
}

type Key = (InodeNo, Process);

/// A slot and range set with the kernel loaded and the ranges defined: what an offload runs on.
#[derive(Debug)]
struct Held {
    lease: Lease,
    ranges: Ranges,
}

/// All offload state of a mount.
pub struct Offload {
    fs: Arc<Lfs>,
    engine: Engine,
    fuel: u64,
    check_permissions: bool,
    device: DeviceCounters,
    procs: Mutex<HashMap<Key, ProcState>>,
}

impl std::fmt::Debug for Offload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offload")
            .field("fuel", &self.fuel)
            .field("engine", &self.engine)
            .field("procs", &self.procs)
            .finish_non_exhaustive()
    }
}

impl Offload {
    /// The offload keys of a mount of `fs`, running kernels with `engine` on `fuel` each
    /// (0: the device's default). `check_permissions`: kernel paths are resolved with the
    /// caller's search and read permissions.
    pub fn new(
        fs: Arc<Lfs>,
        engine: Engine,
        fuel: u64,
        check_permissions: bool,
        device: DeviceCounters,
    ) -> Offload {
        Offload {
            fs,
            engine,
            fuel,
            check_permissions,
            device,
            procs: Mutex::new(HashMap::new()),
        }
    }

    fn has_state(&self, ino: InodeNo) -> bool {
        lock(&self.procs).keys().any(|(i, _)| *i == ino)
    }

    fn process(caller: Caller) -> Result<Process> {
        Process::of_thread(caller.tid).ok_or(OffloadError::NoProcess)
    }

    /// The stream of `which` kind the caller's process set on `ino`, if any.
    fn stream_of(&self, caller: Caller, ino: InodeNo, write: bool) -> Option<Arc<Stream>> {
        if !self.has_state(ino) {
            return None;
        }
        let process = Process::of_thread(caller.tid)?;
        let procs = lock(&self.procs);
        let state = procs.get(&(ino, process))?;
        if write {
            state.write.clone()
        } else {
            state.read.clone()
        }
    }

    /// Whether the caller's process has a read or write stream on `ino`: a handle it opens
    /// now is an offload handle (direct I/O; see the mount's rules in `crate::fuse`).
    pub fn streams(&self, caller: Caller, ino: InodeNo) -> bool {
        if !self.has_state(ino) {
            return false;
        }
        let Some(process) = Process::of_thread(caller.tid) else {
            return false;
        };
        lock(&self.procs)
            .get(&(ino, process))
            .is_some_and(|s| s.read.is_some() || s.write.is_some())
    }

    fn args_of(&self, key: Key) -> (u64, u64) {
        lock(&self.procs)
            .get(&key)
            .and_then(|s| s.args)
            .unwrap_or((0, 0))
    }

    fn last_of(&self, key: Key) -> Arc<Mutex<Option<LastRun>>> {
        Arc::clone(&lock(&self.procs).entry(key).or_default().last)
    }

    /// Reclaims the state of processes that have exited.
    pub fn sweep(&self) {
        let dead: Vec<ProcState> = {
            let mut procs = lock(&self.procs);
            let gone: Vec<Key> = procs
                .keys()
                .filter(|(_, p)| !p.is_alive())
                .copied()
                .collect();
            gone.iter().filter_map(|k| procs.remove(k)).collect()
        };
        self.end(dead);
    }

    /// Ends every offload (at unmount).
    pub fn shutdown(&self) {
        let all: Vec<ProcState> = lock(&self.procs).drain().map(|(_, s)| s).collect();
        self.end(all);
    }

    /// Retires the streams of states taken out of the table.
    fn end(&self, states: Vec<ProcState>) {
        for state in states {
            for stream in [state.read, state.write].into_iter().flatten() {
                self.retire(&stream);
            }
        }
    }

    /// Gives a lease back to the engine and releases the ranges' snapshot, logging what fails
    /// (nothing is left to answer).
    fn free(&self, lease: Lease, ranges: Option<Ranges>) {
        let slot = lease.slot().0;
        if let Err(e) = self.engine.release(lease) {
            log(format_args!(
                "could not deactivate program slot {slot}: {e}"
            ));
        }
        if let Some(ranges) = ranges {
            let id = ranges.snapshot_id().unwrap_or_default();
            if let Err(e) = ranges.release() {
                log(format_args!("could not release snapshot {id}: {e}"));
            }
        }
    }

    /// The kernel a key's value names, resolved in the mount as the caller may resolve it.
    fn kernel(&self, caller: Caller, value: &[u8]) -> Result<Kernel> {
        let path = std::str::from_utf8(value)
            .map_err(|_| OffloadError::Invalid("the kernel path is not UTF-8".into()))?
            .trim_matches(|c: char| c.is_whitespace() || c == '\0');
        if path.is_empty() {
            return Err(OffloadError::Invalid(
                "the value names no kernel: give a path inside the mount, like /kernels/entropy.o"
                    .into(),
            ));
        }
        // Checked as the kernel checks the caller's own path lookups: with its supplementary
        // groups too.
        let who = self.check_permissions.then(|| Credentials {
            uid: caller.uid,
            gid: caller.gid,
            groups: process::supplementary_groups(caller.tid),
        });
        Ok(self.engine.kernel_in(&self.fs, path, who.as_ref())?)
    }

    /// Loads the kernel named by `value` into a leased slot and snapshots `ino` into the
    /// lease's range set, with an output buffer of `out_cap` bytes. On error nothing stays
    /// held.
    fn prepare(
        &self,
        caller: Caller,
        ino: InodeNo,
        value: &[u8],
        out_cap: u32,
    ) -> Result<(Kernel, Held)> {
        let kernel = self.kernel(caller, value)?;
        let mut lease = self.engine.lease().map_err(|_| OffloadError::Busy)?;
        if let Err(e) = self.engine.load(&mut lease, &kernel) {
            self.free(lease, None);
            return Err(e.into());
        }
        let ranges = match self.engine.snapshot(&self.fs, ino, out_cap) {
            Ok(ranges) => ranges,
            Err(e) => {
                self.free(lease, None);
                return Err(e.into());
            }
        };
        if let Err(e) = self.engine.define(&mut lease, &ranges) {
            self.free(lease, Some(ranges));
            return Err(e.into());
        }
        Ok((kernel, Held { lease, ranges }))
    }
}
