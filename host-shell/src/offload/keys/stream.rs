//! Streams: a kernel run on every read or write of one process on one file.

use std::sync::{Arc, Mutex};

use common::program::ProgramOp;

use super::error::{check_run, OffloadError, Result};
use super::{Caller, Held, Key, Offload, ReadPath};
use crate::daemon::log;
use crate::lfs::{InodeNo, LfsError};
use crate::offload::{lock, Job, Kernel};

/// Most streams a read or write tries when the one it found is replaced while it waits (the
/// process keeps replacing it: the request then fails with `EAGAIN`).
const STREAM_TRIES: usize = 4;
/// Output buffer of a stream's range set: a FUSE request is at most 1 MiB.
const STREAM_OUT_CAP: u32 = 2 << 20;

/// A kernel loaded for a stream, with its snapshot and device resources.
#[derive(Debug)]
pub(super) struct Stream {
    pub(super) kernel: Kernel,
    params: (u64, u64),
    /// What the stream runs on, `None` once retired. Its lock serialises runs (they share the
    /// range set's output buffer).
    held: Mutex<Option<Held>>,
    last: Arc<Mutex<Option<super::LastRun>>>,
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
            return Ok(self.fs.read(ino, offset, len)?);
        };
        if path == ReadPath::PageCache {
            return Err(OffloadError::MappedRead { ino: ino.0 });
        }
        self.on_stream(caller, ino, false, stream, |stream, held| {
            if offset >= held.ranges.file_size() || len == 0 {
                return Ok(Vec::new());
            }
            // The read gets at most `len` bytes of output: only those cross the link.
            let job = self.job(stream, ProgramOp::ReadStream, offset, u64::from(len), len);
            self.run(stream, held, job)
        })
    }

    /// A write: through the kernel first if the caller's process has a write stream on `ino`.
    /// Returns the caller's byte count. `kill_suid_sgid`: the writer lacks `CAP_FSETID`, so
    /// the file loses its set-id bits ([`crate::lfs::Lfs::write_as`]).
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
        let store = |bytes: &[u8]| self.fs.write_as(ino, offset, bytes, kill_suid_sgid);
        let Some(stream) = self.stream_of(caller, ino, true) else {
            return Ok(store(data)?);
        };
        let out = self.on_stream(caller, ino, true, stream, |stream, held| {
            let cap = held.ranges.out_cap();
            let mut job = self.job(
                stream,
                ProgramOp::WriteStream,
                offset,
                data.len() as u64,
                cap,
            );
            job.input = data.to_vec();
            self.run(stream, held, job)
        })?;
        store(&out)?;
        Ok(data.len() as u32)
    }

    /// Runs `run` on `first`, the caller's stream of one kind on `ino`, holding its lock. If
    /// the stream was retired while the request waited for that lock, `run` goes to the
    /// stream that replaced it, up to [`STREAM_TRIES`] streams; if the process removed it, or
    /// keeps replacing it, the request fails with [`OffloadError::StreamEnded`].
    fn on_stream<T>(
        &self,
        caller: Caller,
        ino: InodeNo,
        write: bool,
        first: Arc<Stream>,
        mut run: impl FnMut(&Stream, &mut Held) -> Result<T>,
    ) -> Result<T> {
        let key = if write { "write_stream" } else { "read_stream" };
        let mut stream = first;
        for _ in 0..STREAM_TRIES {
            let mut held = lock(&stream.held);
            if let Some(held) = held.as_mut() {
                return run(&stream, held);
            }
            drop(held);
            stream = match self.stream_of(caller, ino, write) {
                Some(next) if !Arc::ptr_eq(&next, &stream) => next,
                _ => return Err(OffloadError::StreamEnded(key)),
            };
        }
        Err(OffloadError::StreamEnded(key))
    }

    fn job(&self, stream: &Stream, op: ProgramOp, offset: u64, len: u64, max_output: u32) -> Job {
        Job {
            op,
            offset,
            len,
            params: stream.params,
            fuel: self.fuel,
            input: Vec::new(),
            max_output,
        }
    }

    /// One run of the stream's kernel (the caller holds its lock); its output.
    fn run(&self, stream: &Stream, held: &mut Held, job: Job) -> Result<Vec<u8>> {
        let ran = self.engine.run(
            &mut held.lease,
            &stream.kernel,
            &held.ranges,
            job,
            |result, log| {
                *lock(&stream.last) = Some(super::LastRun::of(result, log));
                check_run(stream.kernel.name(), result)?;
                Ok(true)
            },
        );
        ran.map(|ran| ran.output)
            .inspect_err(|e| self.log_reclaimed(e, held))
    }

    /// Says in the log that a run is answered `EBUSY` because writes reclaimed its snapshot.
    pub(super) fn log_reclaimed(&self, e: &OffloadError, held: &Held) {
        if matches!(e, OffloadError::Lfs(LfsError::SnapshotReclaimed)) {
            log(format_args!(
                "slot {}: snapshot {} was reclaimed for writes; answering EBUSY",
                held.lease.slot().0,
                held.ranges.snapshot_id().unwrap_or_default()
            ));
        }
    }

    /// Sets up a stream: the kernel `value` names, loaded over a snapshot of the file.
    pub(super) fn start_stream(&self, caller: Caller, key: Key, value: &[u8]) -> Result<Stream> {
        let (kernel, held) = self.prepare(caller, key.0, value, self.stream_out_cap())?;
        Ok(Stream {
            kernel,
            params: self.args_of(key),
            held: Mutex::new(Some(held)),
            last: self.last_of(key),
        })
    }

    /// A stream's output buffer: room for the largest FUSE request's output, or the device's
    /// largest if that is smaller.
    fn stream_out_cap(&self) -> u32 {
        STREAM_OUT_CAP.min(self.engine.resources().max_output_bytes)
    }

    /// Waits for the stream's run in flight, then gives its slot, range set and snapshot back.
    pub(super) fn retire(&self, stream: &Stream) {
        let held = lock(&stream.held).take();
        if let Some(held) = held {
            self.free(held.lease, Some(held.ranges));
        }
    }
}
