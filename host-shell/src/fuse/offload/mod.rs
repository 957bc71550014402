//! Offload through extended attributes (DESIGN.md section 5).
//!
//! The keys live in `user.csd.*` and are never stored in the file system: they are state of
//! one (inode, process) pair, held here while the mount lives.
//!
//! - `user.csd.args`: `param0 param1` (decimal or `0x` hex) for offloads set after it.
//! - `user.csd.read_stream` = kernel path: loads the kernel into a free device program slot,
//!   snapshots the file and defines a range set over its extents. Then every read by this
//!   process on this inode runs the kernel over the requested range of the snapshot and
//!   returns its output (at most the requested length; a read at or past the snapshot's end
//!   returns end of file without running the kernel).
//! - `user.csd.file_job` = kernel path: runs the kernel once over the whole snapshot when set
//!   (the snapshot, slot and range set are released right after); `user.csd.result` returns
//!   its output, as often as asked, without running it again.
//! - `user.csd.write_stream` = kernel path: every write by this process on this inode runs the
//!   kernel with the written bytes as its input (`csd_input`); its output is what is stored at
//!   the write's offset, and the write reports the caller's length as written.
//! - `user.csd.stats`: `instructions=.. fuel_used=.. device_bytes_read=.. bytes_returned=..`
//!   of the process's last run on the inode.
//! - `user.csd.link` (any inode): `to_device=.. to_host=..`, the device's host-link byte
//!   counters since it was opened.
//!
//! Removing a key ends it. The state of a process that has exited is reclaimed on the next
//! offload operation, on any release, and by the mount's background thread.
//!
//! Paths name a file inside the same mount, relative to its root (`/kernels/entropy.o` or
//! `kernels/entropy.o`); symbolic links are not followed.

mod error;
mod kernel;
mod keys;
mod resources;
mod stream;

pub use error::OffloadError;
pub use keys::parse_args;
pub(super) use keys::PREFIX;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use common::program::{ProgramSlot, RangeSetId};
use firmware::controller::ProgramConfig;

use super::process::Process;
use crate::driver::Driver;
use crate::lfs::{InodeNo, Lfs};
use error::Result;
use kernel::CachedImage;
use resources::{ProcState, Table};
use stream::Stream;

/// How a read reached the mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadPath {
    /// read(2) and its kin: every open is direct I/O, so the data goes to the caller only.
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

/// The link counters, read from the device that runs the mount.
pub type LinkCounters = Box<dyn Fn() -> (u64, u64) + Send + Sync>;

/// All offload state of a mount.
pub struct Offload {
    lfs: Arc<Lfs>,
    driver: Driver,
    fuel: u64,
    check_permissions: bool,
    link: LinkCounters,
    table: Mutex<Table>,
    /// Linked kernel images by the kernel file's inode, with the size and times they were
    /// linked from: a repeated offload neither re-reads the object nor re-links it.
    images: Mutex<HashMap<InodeNo, CachedImage>>,
}

impl std::fmt::Debug for Offload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offload")
            .field("fuel", &self.fuel)
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicked holder left plain data behind, never a half-done device command: go on.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Offload {
    pub fn new(
        lfs: Arc<Lfs>,
        driver: Driver,
        programs: &ProgramConfig,
        fuel: u64,
        check_permissions: bool,
        link: LinkCounters,
    ) -> Offload {
        Offload {
            lfs,
            driver,
            fuel,
            check_permissions,
            link,
            images: Mutex::new(HashMap::new()),
            table: Mutex::new(Table {
                procs: HashMap::new(),
                free_slots: (0..programs.slots).rev().map(ProgramSlot).collect(),
                free_sets: (0..programs.range_sets).rev().map(RangeSetId).collect(),
            }),
        }
    }

    fn has_state(&self, ino: InodeNo) -> bool {
        lock(&self.table).procs.keys().any(|(i, _)| *i == ino)
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
        let table = lock(&self.table);
        let state = table.procs.get(&(ino, process))?;
        if write {
            state.write.clone()
        } else {
            state.read.clone()
        }
    }

    /// Reclaims the state of processes that have exited.
    pub fn sweep(&self) {
        let dead: Vec<ProcState> = {
            let mut table = lock(&self.table);
            let gone: Vec<(InodeNo, Process)> = table
                .procs
                .keys()
                .filter(|(_, p)| !p.is_alive())
                .copied()
                .collect();
            gone.iter().filter_map(|k| table.procs.remove(k)).collect()
        };
        self.end(dead);
    }

    /// Ends every offload (at unmount).
    pub fn shutdown(&self) {
        let all: Vec<ProcState> = lock(&self.table).procs.drain().map(|(_, s)| s).collect();
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
}
