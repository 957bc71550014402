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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use common::program::{
    ExecFault, ExecOutcome, ExecResult, ExecuteProgram, ProgramOp, ProgramSlot, RangeSetId,
    RunStats,
};
use firmware::controller::ProgramConfig;

use super::process::{self, Process};
use crate::driver::{Driver, DriverError};
use crate::lfs::{access, check_access_as, Credentials, FileKind, InodeNo, Lfs, LfsError, Time};
use crate::loader;

pub const PREFIX: &[u8] = b"user.csd.";
pub const ARGS: &[u8] = b"user.csd.args";
pub const READ_STREAM: &[u8] = b"user.csd.read_stream";
pub const WRITE_STREAM: &[u8] = b"user.csd.write_stream";
pub const FILE_JOB: &[u8] = b"user.csd.file_job";
pub const RESULT: &[u8] = b"user.csd.result";
pub const STATS: &[u8] = b"user.csd.stats";
pub const LINK: &[u8] = b"user.csd.link";

/// Most streams a read or write tries when the one it found is replaced while it waits (the
/// process keeps replacing it: the request then fails with `EAGAIN`).
const STREAM_TRIES: usize = 4;
/// Output buffer of a stream's range set: a FUSE request is at most 1 MiB.
const STREAM_OUT_CAP: u32 = 2 << 20;
/// Largest kernel object read from the mount.
const MAX_KERNEL_BYTES: u64 = 16 << 20;
/// Largest extended attribute value Linux passes (`XATTR_SIZE_MAX`).
const XATTR_MAX: usize = 64 << 10;

/// Why an offload operation failed; [`OffloadError::errno`] is what the caller sees.
#[derive(Debug, thiserror::Error)]
pub enum OffloadError {
    #[error("{0}")]
    Invalid(String),
    #[error("kernel {0}: no such file in this mount")]
    NoKernel(String),
    #[error("{0} is read only")]
    ReadOnlyKey(String),
    #[error("no {0} is set by this process on this file")]
    NotSet(String),
    #[error("kernel {path} is not a kernel object: {reason}")]
    NotAKernel { path: String, reason: String },
    #[error("kernel {path} was rejected by the device's verifier: {reason}")]
    Rejected { path: String, reason: String },
    #[error("kernel {path} ran out of fuel after {instructions} instructions ({fuel_used} fuel); mount with a larger --fuel")]
    OutOfFuel {
        path: String,
        instructions: u64,
        fuel_used: u64,
    },
    #[error("kernel {path} faulted: {what}")]
    Fault { path: String, what: String },
    #[error("kernel {path} returned error {code}")]
    KernelError { path: String, code: i64 },
    #[error("all device program slots or range sets are in use; remove an offload first")]
    Busy,
    #[error(
        "the user.csd.{0} this request was to run was replaced or removed while it waited; \
         try again"
    )]
    StreamEnded(&'static str),
    #[error(
        "a process with a read stream on inode {ino} read it through a memory mapping; refused, \
         as the page cache is shared with every process: read the stream with read(2)"
    )]
    MappedRead { ino: u64 },
    #[error("the result is {0} bytes, more than an extended attribute holds (64 KiB)")]
    TooBig(usize),
    #[error("the calling process is gone")]
    NoProcess,
    #[error(transparent)]
    Lfs(#[from] LfsError),
    #[error("device: {0}")]
    Device(#[from] DriverError),
}

impl OffloadError {
    /// The errno the caller gets (documented in docs/ARCHITECTURE.md, "Offload errors").
    pub fn errno(&self) -> i32 {
        match self {
            OffloadError::Invalid(_) => libc::EINVAL,
            OffloadError::NoKernel(_) => libc::ENOENT,
            OffloadError::ReadOnlyKey(_) => libc::EPERM,
            OffloadError::NotSet(_) => libc::ENODATA,
            OffloadError::NotAKernel { .. } | OffloadError::Rejected { .. } => libc::ENOEXEC,
            OffloadError::OutOfFuel { .. } => libc::ETIME,
            OffloadError::Fault { .. } => libc::EIO,
            OffloadError::KernelError { code, .. } => kernel_errno(*code),
            OffloadError::Busy => libc::EBUSY,
            OffloadError::StreamEnded(_) => libc::EAGAIN,
            OffloadError::MappedRead { .. } => libc::EIO,
            OffloadError::TooBig(_) => libc::E2BIG,
            OffloadError::NoProcess => libc::ESRCH,
            OffloadError::Lfs(e) => e.errno(),
            OffloadError::Device(_) => libc::EIO,
        }
    }

    /// Whether the daemon log should carry this error (caller mistakes of the ordinary kind,
    /// such as asking for a key that is not set, stay quiet).
    pub fn worth_logging(&self) -> bool {
        !matches!(self, OffloadError::NotSet(_) | OffloadError::Lfs(_))
    }
}

type Result<T, E = OffloadError> = std::result::Result<T, E>;

/// The errno of a kernel's negative return value: the value negated if it is an errno Linux
/// defines (1 to `EHWPOISON`, the highest) other than `ENOSYS`, else `EIO`. The kernel's FUSE
/// refuses a reply whose error is outside -511..=0 and leaves its caller waiting for an
/// answer, an undefined errno reaches the caller as "Unknown error", and `ENOSYS` from
/// setxattr makes the kernel take extended attributes as unsupported and fail every later
/// setxattr of the mount with `EOPNOTSUPP`.
fn kernel_errno(code: i64) -> i32 {
    match code.checked_neg().map(i32::try_from) {
        Some(Ok(errno)) if (1..=libc::EHWPOISON).contains(&errno) && errno != libc::ENOSYS => errno,
        _ => libc::EIO,
    }
}

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

/// A kernel loaded for a stream, with its snapshot and device resources.
#[derive(Debug)]
struct Stream {
    kernel: String,
    slot: ProgramSlot,
    set: RangeSetId,
    snapshot: u64,
    file_size: u64,
    params: (u64, u64),
    /// Serialises runs (they share the range set's output buffer); `true` once retired.
    exec: Mutex<bool>,
    last: Arc<Mutex<Option<RunStats>>>,
}

/// A finished file job.
#[derive(Debug)]
struct Job {
    kernel: String,
    output: Vec<u8>,
}

/// The offload state of one (inode, process).
#[derive(Debug, Default)]
struct ProcState {
    args: Option<(u64, u64)>,
    read: Option<Arc<Stream>>,
    write: Option<Arc<Stream>>,
    job: Option<Job>,
    last: Arc<Mutex<Option<RunStats>>>,
}

impl ProcState {
    fn is_empty(&self) -> bool {
        self.args.is_none() && self.read.is_none() && self.write.is_none() && self.job.is_none()
    }
}

#[derive(Debug)]
struct Table {
    procs: HashMap<(InodeNo, Process), ProcState>,
    free_slots: Vec<ProgramSlot>,
    free_sets: Vec<RangeSetId>,
}

/// Device resources held while an offload is being set up.
#[derive(Debug)]
struct Held {
    slot: ProgramSlot,
    set: RangeSetId,
    snapshot: Option<u64>,
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

/// A linked kernel image and the file state it was linked from.
#[derive(Debug)]
struct CachedImage {
    size: u64,
    mtime: Time,
    ctime: Time,
    image: Vec<u8>,
}

/// Most kernel images kept linked (the cache is emptied when it would grow past this).
const MAX_CACHED_IMAGES: usize = 64;

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

fn key_name(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// `param0 param1`, each decimal or `0x` hex; a missing param1 is 0.
pub fn parse_args(value: &[u8]) -> Result<(u64, u64)> {
    let text = std::str::from_utf8(value)
        .map_err(|_| OffloadError::Invalid("user.csd.args is not text".into()))?;
    let words: Vec<&str> = text
        .trim_matches(|c: char| c.is_whitespace() || c == '\0')
        .split_whitespace()
        .collect();
    let parse = |w: &str| -> Result<u64> {
        let parsed = match w.strip_prefix("0x").or_else(|| w.strip_prefix("0X")) {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => w.parse(),
        };
        parsed.map_err(|_| {
            OffloadError::Invalid(format!(
                "user.csd.args: {w:?} is not a number (decimal or 0x hex)"
            ))
        })
    };
    match words.as_slice() {
        [a] => Ok((parse(a)?, 0)),
        [a, b] => Ok((parse(a)?, parse(b)?)),
        _ => Err(OffloadError::Invalid(
            "user.csd.args holds `param0 param1`".into(),
        )),
    }
}

/// The caller-visible error of a run that did not exit cleanly. A return value with the top
/// bit set (negative as an `int64_t`) is an error, whether or not it is an errno
/// ([`kernel_errno`]).
fn check_run(kernel: &str, result: &ExecResult) -> Result<()> {
    let path = kernel.to_string();
    match result.outcome {
        ExecOutcome::Exited { r0 } => {
            let code = r0 as i64;
            if code < 0 {
                Err(OffloadError::KernelError { path, code })
            } else {
                Ok(())
            }
        }
        ExecOutcome::Faulted(ExecFault::OutOfFuel) => Err(OffloadError::OutOfFuel {
            path,
            instructions: result.stats.instructions,
            fuel_used: result.stats.fuel_used,
        }),
        ExecOutcome::Faulted(fault) => Err(OffloadError::Fault {
            path,
            what: format!("{fault:?}"),
        }),
    }
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

    /// A read: the kernel's output if the caller's process has a read stream on `ino`, else
    /// the file's bytes. A read for the page cache by a process with a read stream is refused
    /// ([`OffloadError::MappedRead`]): the kernel's output must never reach pages that other
    /// processes' mappings share.
    ///
    /// A read that found a stream runs a stream: if the process replaces or removes it while
    /// the read waits for its turn, the read runs the stream that replaced it, or fails with
    /// `EAGAIN` ([`OffloadError::StreamEnded`]); it never returns the file's bytes instead.
    pub fn read(
        &self,
        caller: Caller,
        ino: InodeNo,
        offset: u64,
        len: u32,
        path: ReadPath,
    ) -> Result<Vec<u8>> {
        let Some(mut stream) = self.stream_of(caller, ino, false) else {
            return Ok(self.lfs.read(ino, offset, len)?);
        };
        if path == ReadPath::PageCache {
            return Err(OffloadError::MappedRead { ino: ino.0 });
        }
        for _ in 0..STREAM_TRIES {
            if let Some(out) = self.run_read(&stream, offset, len)? {
                return Ok(out);
            }
            stream = self.replacement(caller, ino, false, &stream)?;
        }
        Err(OffloadError::StreamEnded("read_stream"))
    }

    /// A write: through the kernel first if the caller's process has a write stream on `ino`.
    /// Returns the caller's byte count. `kill_suid_sgid`: the writer lacks `CAP_FSETID`, so
    /// the file loses its set-id bits ([`Lfs::write_as`]).
    ///
    /// As for reads, a write that found a stream stores a stream's output or fails with
    /// `EAGAIN`, never the bytes as they came. (Linux holds the inode's lock through a direct
    /// write and through setxattr and removexattr, so today a write never waits on a stream
    /// being replaced; this keeps it so if that changes.)
    pub fn write(
        &self,
        caller: Caller,
        ino: InodeNo,
        offset: u64,
        data: &[u8],
        kill_suid_sgid: bool,
    ) -> Result<u32> {
        let store = |bytes: &[u8]| self.lfs.write_as(ino, offset, bytes, kill_suid_sgid);
        let Some(mut stream) = self.stream_of(caller, ino, true) else {
            return Ok(store(data)?);
        };
        for _ in 0..STREAM_TRIES {
            if let Some(out) = self.run_write(&stream, offset, data)? {
                store(&out)?;
                return Ok(data.len() as u32);
            }
            stream = self.replacement(caller, ino, true, &stream)?;
        }
        Err(OffloadError::StreamEnded("write_stream"))
    }

    /// The stream that replaced `retired` (retired while a run waited for it), or
    /// [`OffloadError::StreamEnded`] if the process removed it.
    fn replacement(
        &self,
        caller: Caller,
        ino: InodeNo,
        write: bool,
        retired: &Arc<Stream>,
    ) -> Result<Arc<Stream>> {
        let key = if write { "write_stream" } else { "read_stream" };
        match self.stream_of(caller, ino, write) {
            Some(next) if !Arc::ptr_eq(&next, retired) => Ok(next),
            _ => Err(OffloadError::StreamEnded(key)),
        }
    }

    fn run_read(&self, stream: &Stream, offset: u64, len: u32) -> Result<Option<Vec<u8>>> {
        let retired = lock(&stream.exec);
        if *retired {
            return Ok(None);
        }
        if offset >= stream.file_size || len == 0 {
            return Ok(Some(Vec::new()));
        }
        // The read gets at most `len` bytes of output: only those cross the link.
        let out = self.execute(
            stream,
            ProgramOp::ReadStream,
            offset,
            u64::from(len),
            &[],
            len,
        )?;
        drop(retired);
        Ok(Some(out))
    }

    fn run_write(&self, stream: &Stream, offset: u64, data: &[u8]) -> Result<Option<Vec<u8>>> {
        let retired = lock(&stream.exec);
        if *retired {
            return Ok(None);
        }
        let out = self.execute(
            stream,
            ProgramOp::WriteStream,
            offset,
            data.len() as u64,
            data,
            STREAM_OUT_CAP,
        )?;
        drop(retired);
        Ok(Some(out))
    }

    /// One run on the stream's slot and range set (the caller holds `stream.exec`); at most
    /// `out_cap` bytes of its output.
    fn execute(
        &self,
        stream: &Stream,
        op: ProgramOp,
        offset: u64,
        len: u64,
        input: &[u8],
        out_cap: u32,
    ) -> Result<Vec<u8>> {
        let exec = ExecuteProgram {
            slot: stream.slot,
            range_set: stream.set,
            op,
            offset,
            len,
            param0: stream.params.0,
            param1: stream.params.1,
            fuel: self.fuel,
        };
        let result = self.run(exec, input.to_vec(), stream.snapshot)?;
        *lock(&stream.last) = Some(result.stats);
        check_run(&stream.kernel, &result)?;
        Ok(self
            .driver
            .read_output_all(stream.set, result.stats.bytes_returned, out_cap)?)
    }

    /// Runs `exec` over snapshot `snapshot`. If writes have reclaimed the snapshot by the
    /// time the run ends, the device may have read zones reset or rewritten since, so whatever
    /// came back is dropped and the caller gets `EBUSY` ([`LfsError::SnapshotReclaimed`]); a
    /// snapshot reclaimed earlier is not run at all.
    fn run(&self, exec: ExecuteProgram, input: Vec<u8>, snapshot: u64) -> Result<ExecResult> {
        let slot = exec.slot.0;
        let reclaimed = |e: LfsError| {
            if matches!(e, LfsError::SnapshotReclaimed) {
                super::log(format_args!(
                    "slot {slot}: snapshot {snapshot} was reclaimed for writes; answering EBUSY"
                ));
            }
            OffloadError::Lfs(e)
        };
        self.lfs.check_snapshot(snapshot).map_err(reclaimed)?;
        let result = self.driver.execute(exec, input);
        self.lfs.check_snapshot(snapshot).map_err(reclaimed)?;
        Ok(result?)
    }

    /// setxattr of a `user.csd.*` key.
    pub fn setxattr(&self, caller: Caller, ino: InodeNo, name: &[u8], value: &[u8]) -> Result<()> {
        self.sweep();
        let process = Self::process(caller)?;
        let key = (ino, process);
        match name {
            ARGS => {
                let args = parse_args(value)?;
                lock(&self.table).procs.entry(key).or_default().args = Some(args);
                Ok(())
            }
            READ_STREAM | WRITE_STREAM => {
                let write = name == WRITE_STREAM;
                let stream = Arc::new(self.start_stream(caller, key, value)?);
                let old = {
                    let mut table = lock(&self.table);
                    let state = table.procs.entry(key).or_default();
                    let slot = if write {
                        &mut state.write
                    } else {
                        &mut state.read
                    };
                    slot.replace(stream)
                };
                if let Some(old) = old {
                    self.retire(&old);
                }
                Ok(())
            }
            FILE_JOB => self.file_job(caller, key, value),
            RESULT | STATS | LINK => Err(OffloadError::ReadOnlyKey(key_name(name))),
            _ => Err(OffloadError::Invalid(format!(
                "{} is not an offload key (user.csd.args, read_stream, write_stream, file_job)",
                key_name(name)
            ))),
        }
    }

    /// getxattr of a `user.csd.*` key.
    pub fn getxattr(&self, caller: Caller, ino: InodeNo, name: &[u8]) -> Result<Vec<u8>> {
        if name == LINK {
            let (to_device, to_host) = (self.link)();
            return Ok(format!("to_device={to_device} to_host={to_host}").into_bytes());
        }
        let not_set = || OffloadError::NotSet(key_name(name));
        if !self.has_state(ino) {
            return Err(not_set());
        }
        let process = Self::process(caller)?;
        let table = lock(&self.table);
        let state = table.procs.get(&(ino, process)).ok_or_else(not_set)?;
        let value = match name {
            ARGS => state.args.map(|(a, b)| format!("{a} {b}").into_bytes()),
            READ_STREAM => state.read.as_ref().map(|s| s.kernel.clone().into_bytes()),
            WRITE_STREAM => state.write.as_ref().map(|s| s.kernel.clone().into_bytes()),
            FILE_JOB => state.job.as_ref().map(|j| j.kernel.clone().into_bytes()),
            RESULT => state.job.as_ref().map(|j| j.output.clone()),
            STATS => lock(&state.last).map(|s| {
                format!(
                    "instructions={} fuel_used={} device_bytes_read={} bytes_returned={}",
                    s.instructions, s.fuel_used, s.device_bytes_read, s.bytes_returned
                )
                .into_bytes()
            }),
            _ => None,
        };
        value.ok_or_else(not_set)
    }

    /// removexattr of a `user.csd.*` key: ends that offload.
    pub fn removexattr(&self, caller: Caller, ino: InodeNo, name: &[u8]) -> Result<()> {
        let not_set = || OffloadError::NotSet(key_name(name));
        let process = Self::process(caller)?;
        let key = (ino, process);
        let mut retire = None;
        {
            let mut table = lock(&self.table);
            let state = table.procs.get_mut(&key).ok_or_else(not_set)?;
            let found = match name {
                ARGS => state.args.take().is_some(),
                READ_STREAM => {
                    retire = state.read.take();
                    retire.is_some()
                }
                WRITE_STREAM => {
                    retire = state.write.take();
                    retire.is_some()
                }
                FILE_JOB | RESULT => state.job.take().is_some(),
                _ => false,
            };
            if state.is_empty() {
                table.procs.remove(&key);
            }
            if !found {
                return Err(not_set());
            }
        }
        if let Some(stream) = retire {
            self.retire(&stream);
        }
        Ok(())
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

    /// Waits for the stream's run in flight, then gives its slot, range set and snapshot back.
    fn retire(&self, stream: &Stream) {
        let mut retired = lock(&stream.exec);
        if *retired {
            return;
        }
        *retired = true;
        self.free(Held {
            slot: stream.slot,
            set: stream.set,
            snapshot: Some(stream.snapshot),
        });
    }

    fn free(&self, held: Held) {
        if let Err(e) = self.driver.activate(held.slot, false) {
            super::log(format_args!(
                "could not deactivate program slot {}: {e}",
                held.slot.0
            ));
        }
        if let Some(id) = held.snapshot {
            if let Err(e) = self.lfs.release_snapshot(id) {
                super::log(format_args!("could not release snapshot {id}: {e}"));
            }
        }
        let mut table = lock(&self.table);
        table.free_slots.push(held.slot);
        table.free_sets.push(held.set);
    }

    fn take_resources(&self) -> Result<Held> {
        let mut table = lock(&self.table);
        if table.free_slots.is_empty() || table.free_sets.is_empty() {
            return Err(OffloadError::Busy);
        }
        let (Some(slot), Some(set)) = (table.free_slots.pop(), table.free_sets.pop()) else {
            return Err(OffloadError::Busy);
        };
        Ok(Held {
            slot,
            set,
            snapshot: None,
        })
    }

    /// Loads the kernel named by `value` into a free slot and snapshots `ino` into a range
    /// set with an output buffer of `out_cap` bytes. On error nothing stays held.
    fn prepare(
        &self,
        caller: Caller,
        ino: InodeNo,
        value: &[u8],
        out_cap: u32,
    ) -> Result<(String, Held, u64)> {
        let (path, image) = self.kernel_image(caller, value)?;
        let mut held = self.take_resources()?;
        let setup = (|| -> Result<u64> {
            self.driver
                .load_program(held.slot, &image)
                .map_err(|e| match e {
                    DriverError::Rejected(reason) => OffloadError::Rejected {
                        path: path.clone(),
                        reason: reason.to_string(),
                    },
                    other => OffloadError::Device(other),
                })?;
            self.driver.activate(held.slot, true)?;
            let snapshot = self.lfs.snapshot(ino)?;
            held.snapshot = Some(snapshot.id);
            self.driver
                .set_ranges(held.set, &snapshot.extents, snapshot.file_size, out_cap)?;
            Ok(snapshot.file_size)
        })();
        match setup {
            Ok(size) => Ok((path, held, size)),
            Err(e) => {
                self.free(held);
                Err(e)
            }
        }
    }

    fn args_of(&self, key: (InodeNo, Process)) -> (u64, u64) {
        lock(&self.table)
            .procs
            .get(&key)
            .and_then(|s| s.args)
            .unwrap_or((0, 0))
    }

    fn last_of(&self, key: (InodeNo, Process)) -> Arc<Mutex<Option<RunStats>>> {
        Arc::clone(&lock(&self.table).procs.entry(key).or_default().last)
    }

    fn start_stream(
        &self,
        caller: Caller,
        key: (InodeNo, Process),
        value: &[u8],
    ) -> Result<Stream> {
        let (kernel, held, file_size) = self.prepare(caller, key.0, value, STREAM_OUT_CAP)?;
        Ok(Stream {
            kernel,
            slot: held.slot,
            set: held.set,
            snapshot: held.snapshot.unwrap_or_default(),
            file_size,
            params: self.args_of(key),
            exec: Mutex::new(false),
            last: self.last_of(key),
        })
    }

    fn file_job(&self, caller: Caller, key: (InodeNo, Process), value: &[u8]) -> Result<()> {
        let cap = ProgramConfig::default().max_output_bytes;
        let (kernel, held, file_size) = self.prepare(caller, key.0, value, cap)?;
        let params = self.args_of(key);
        let exec = ExecuteProgram {
            slot: held.slot,
            range_set: held.set,
            op: ProgramOp::FileJob,
            offset: 0,
            len: file_size,
            param0: params.0,
            param1: params.1,
            fuel: self.fuel,
        };
        let last = self.last_of(key);
        let run = (|| -> Result<Vec<u8>> {
            let result = self.run(exec, Vec::new(), held.snapshot.unwrap_or_default())?;
            *lock(&last) = Some(result.stats);
            check_run(&kernel, &result)?;
            // Refused before it crosses the link.
            let size = result.stats.bytes_returned.min(u64::from(cap)) as usize;
            if size > XATTR_MAX {
                return Err(OffloadError::TooBig(size));
            }
            Ok(self
                .driver
                .read_output_all(held.set, result.stats.bytes_returned, cap)?)
        })();
        self.free(held);
        let mut table = lock(&self.table);
        let state = table.procs.entry(key).or_default();
        match run {
            Ok(output) => {
                state.job = Some(Job { kernel, output });
                Ok(())
            }
            Err(e) => {
                state.job = None;
                Err(e)
            }
        }
    }

    /// Resolves the kernel path in the mount, reads and links it.
    fn kernel_image(&self, caller: Caller, value: &[u8]) -> Result<(String, Vec<u8>)> {
        let path = std::str::from_utf8(value)
            .map_err(|_| OffloadError::Invalid("the kernel path is not UTF-8".into()))?
            .trim_matches(|c: char| c.is_whitespace() || c == '\0')
            .to_string();
        if path.is_empty() {
            return Err(OffloadError::Invalid(
                "the value names no kernel: give a path inside the mount, like /kernels/entropy.o"
                    .into(),
            ));
        }
        let not_found = |e: LfsError| match e {
            LfsError::NotFound | LfsError::NotDir => OffloadError::NoKernel(path.clone()),
            other => OffloadError::Lfs(other),
        };
        // Checked as the kernel checks the caller's own path lookups: with its supplementary
        // groups too.
        let who = self.check_permissions.then(|| Credentials {
            uid: caller.uid,
            gid: caller.gid,
            groups: process::supplementary_groups(caller.tid),
        });
        let check = |ino: InodeNo, mask: u32| -> Result<()> {
            if let Some(who) = &who {
                check_access_as(&self.lfs.getattr(ino)?, who, mask)?;
            }
            Ok(())
        };
        let mut ino = InodeNo::ROOT;
        for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
            check(ino, access::X_OK)?;
            ino = self
                .lfs
                .lookup(ino, part.as_bytes())
                .map_err(not_found)?
                .ino;
        }
        let attr = self.lfs.getattr(ino).map_err(not_found)?;
        if attr.kind != FileKind::File {
            return Err(OffloadError::Invalid(format!(
                "kernel {path} is not a regular file"
            )));
        }
        if attr.size > MAX_KERNEL_BYTES {
            return Err(OffloadError::NotAKernel {
                path,
                reason: format!("{} bytes is too large", attr.size),
            });
        }
        check(ino, access::R_OK)?;
        if let Some(cached) = lock(&self.images).get(&ino) {
            if (cached.size, cached.mtime, cached.ctime) == (attr.size, attr.mtime, attr.ctime) {
                return Ok((path, cached.image.clone()));
            }
        }
        let mut bytes = Vec::with_capacity(attr.size as usize);
        while (bytes.len() as u64) < attr.size {
            let chunk = self.lfs.read(ino, bytes.len() as u64, 1 << 20)?;
            if chunk.is_empty() {
                break;
            }
            bytes.extend_from_slice(&chunk);
        }
        let image = loader::link(&bytes)
            .map_err(|e| OffloadError::NotAKernel {
                path: path.clone(),
                reason: e.to_string(),
            })?
            .to_bytes();
        let mut images = lock(&self.images);
        if images.len() >= MAX_CACHED_IMAGES {
            images.clear();
        }
        images.insert(
            ino,
            CachedImage {
                size: attr.size,
                mtime: attr.mtime,
                ctime: attr.ctime,
                image: image.clone(),
            },
        );
        Ok((path, image))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Arguments: decimal, hex, a missing second value; anything else is EINVAL.
    #[test]
    fn args_parse() {
        assert_eq!(parse_args(b"7 0x10").ok(), Some((7, 16)));
        assert_eq!(parse_args(b"0xff\n").ok(), Some((255, 0)));
        assert_eq!(parse_args(b" 1  2 \0").ok(), Some((1, 2)));
        for bad in [&b""[..], b"x", b"1 2 3", b"-1", b"0xzz", b"\xff"] {
            let err = parse_args(bad).expect_err("bad args");
            assert_eq!(err.errno(), libc::EINVAL, "{bad:?}");
        }
    }

    /// Kernel outcomes map to the documented errnos.
    #[test]
    fn outcomes_map_to_errnos() {
        let stats = RunStats::default();
        let run = |outcome| ExecResult { outcome, stats };
        assert!(check_run("k", &run(ExecOutcome::Exited { r0: 5 })).is_ok());
        let e = check_run("k", &run(ExecOutcome::Exited { r0: -22i64 as u64 }))
            .expect_err("negative return");
        assert_eq!(e.errno(), libc::EINVAL);
        // Negative values that are no errno the caller may get are EIO.
        for code in [-38, -134, -600, -4095, -100_000, i64::MIN] {
            let e = check_run("k", &run(ExecOutcome::Exited { r0: code as u64 }))
                .expect_err("negative return");
            assert_eq!(e.errno(), libc::EIO, "{code}");
        }
        let largest_count = i64::MAX as u64;
        assert!(check_run("k", &run(ExecOutcome::Exited { r0: largest_count })).is_ok());
        let e = check_run("k", &run(ExecOutcome::Faulted(ExecFault::OutOfFuel))).expect_err("fuel");
        assert_eq!(e.errno(), libc::ETIME);
        let e = check_run(
            "k",
            &run(ExecOutcome::Faulted(ExecFault::CallDepthExceeded { pc: 3 })),
        )
        .expect_err("fault");
        assert_eq!(e.errno(), libc::EIO);
    }
}
