//! Streams: a kernel run on every read or write of one process on one file.

use std::sync::{Arc, Mutex};

use common::program::{ExecResult, ExecuteProgram, ProgramOp, ProgramSlot, RangeSetId, RunStats};

use super::error::{check_run, OffloadError, Result};
use super::resources::Held;
use super::{lock, Caller, Offload, ReadPath};
use crate::fuse::process::Process;
use crate::lfs::{InodeNo, LfsError, SnapshotId};

/// Most streams a read or write tries when the one it found is replaced while it waits (the
/// process keeps replacing it: the request then fails with `EAGAIN`).
const STREAM_TRIES: usize = 4;
/// Output buffer of a stream's range set: a FUSE request is at most 1 MiB.
pub(super) const STREAM_OUT_CAP: u32 = 2 << 20;

/// A kernel loaded for a stream, with its snapshot and device resources.
#[derive(Debug)]
pub(super) struct Stream {
    pub(super) kernel: String,
    pub(super) slot: ProgramSlot,
    pub(super) set: RangeSetId,
    pub(super) snapshot: SnapshotId,
    pub(super) file_size: u64,
    pub(super) params: (u64, u64),
    /// Serialises runs (they share the range set's output buffer); `true` once retired.
    pub(super) exec: Mutex<bool>,
    pub(super) last: Arc<Mutex<Option<RunStats>>>,
}

impl Offload {
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
        let Some(stream) = self.stream_of(caller, ino, false) else {
            return Ok(self.lfs.read(ino, offset, len)?);
        };
        if path == ReadPath::PageCache {
            return Err(OffloadError::MappedRead { ino: ino.0 });
        }
        self.on_stream(caller, ino, false, stream, |stream| {
            if offset >= stream.file_size || len == 0 {
                return Ok(Vec::new());
            }
            // The read gets at most `len` bytes of output: only those cross the link.
            self.execute(
                stream,
                ProgramOp::ReadStream,
                offset,
                u64::from(len),
                &[],
                len,
            )
        })
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
        let Some(stream) = self.stream_of(caller, ino, true) else {
            return Ok(store(data)?);
        };
        let out = self.on_stream(caller, ino, true, stream, |stream| {
            self.execute(
                stream,
                ProgramOp::WriteStream,
                offset,
                data.len() as u64,
                data,
                STREAM_OUT_CAP,
            )
        })?;
        store(&out)?;
        Ok(data.len() as u32)
    }

    /// Runs `run` on `first`, the caller's stream of one kind on `ino`, holding its `exec`
    /// lock. If the stream was retired while the request waited for that lock, `run` goes to
    /// the stream that replaced it, up to [`STREAM_TRIES`] streams; if the process removed
    /// it, or keeps replacing it, the request fails with [`OffloadError::StreamEnded`].
    fn on_stream<T>(
        &self,
        caller: Caller,
        ino: InodeNo,
        write: bool,
        first: Arc<Stream>,
        mut run: impl FnMut(&Stream) -> Result<T>,
    ) -> Result<T> {
        let key = if write { "write_stream" } else { "read_stream" };
        let mut stream = first;
        for _ in 0..STREAM_TRIES {
            let retired = lock(&stream.exec);
            if !*retired {
                return run(&stream);
            }
            drop(retired);
            stream = match self.stream_of(caller, ino, write) {
                Some(next) if !Arc::ptr_eq(&next, &stream) => next,
                _ => return Err(OffloadError::StreamEnded(key)),
            };
        }
        Err(OffloadError::StreamEnded(key))
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
    pub(super) fn run(
        &self,
        exec: ExecuteProgram,
        input: Vec<u8>,
        snapshot: SnapshotId,
    ) -> Result<ExecResult> {
        let slot = exec.slot.0;
        let reclaimed = |e: LfsError| {
            if matches!(e, LfsError::SnapshotReclaimed) {
                crate::fuse::log(format_args!(
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

    pub(super) fn start_stream(
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

    /// Waits for the stream's run in flight, then gives its slot, range set and snapshot back.
    pub(super) fn retire(&self, stream: &Stream) {
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
}
