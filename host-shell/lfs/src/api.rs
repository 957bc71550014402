//! The typed API the FUSE layer calls: each method takes the lock (refused for a change
//! once writes have stopped) and calls one operation of the state.

use std::sync::Arc;

use crate::error::{LfsError, Result};
use crate::extent::Run;
use crate::fsck::Problem;
use crate::ids::SnapshotId;
use crate::inode::{Attr, InodeNo, SetAttr};
use crate::ops::DirEntry;
use crate::rename::RenameFlags;
use crate::snapshot::Snapshot;
use crate::space;
use crate::xattr::XattrMode;
use crate::zones::ZoneUsage;
use crate::{Lfs, LfsStats, StatFs};

/// Blocks the background cleaner reads before it takes the lock to move them (1 MiB): how long
/// a move holds off other operations.
const GC_BATCH_BLOCKS: u64 = 256;

impl Lfs {
    pub fn lookup(&self, parent: InodeNo, name: &[u8]) -> Result<Attr> {
        self.lock()?.lookup(parent, name)
    }

    pub fn getattr(&self, ino: InodeNo) -> Result<Attr> {
        self.lock()?.attr(ino)
    }

    /// Changes mode, owner, size and times (the FUSE layer checks who may).
    pub fn setattr(&self, ino: InodeNo, set: SetAttr) -> Result<Attr> {
        self.lock_for_change()?.setattr(ino, set)
    }

    /// Creates a regular file (`mode`'s permission bits; type bits other than `S_IFREG`
    /// are refused); it is not opened.
    pub fn create(
        &self,
        parent: InodeNo,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Attr> {
        self.change_taking_space(|s| s.create(parent, name, mode, uid, gid))
            .map(|(_, attr)| attr)
    }

    /// Creates a regular file and opens a handle on it in one step (FUSE's create), so no
    /// other request can unlink it in between.
    pub fn create_open(
        &self,
        parent: InodeNo,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Attr> {
        let (mut s, attr) = self.change_taking_space(|s| s.create(parent, name, mode, uid, gid))?;
        s.open(attr.ino)?;
        Ok(attr)
    }

    pub fn mkdir(
        &self,
        parent: InodeNo,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Attr> {
        self.lock_for_change()?.mkdir(parent, name, mode, uid, gid)
    }

    pub fn symlink(
        &self,
        parent: InodeNo,
        name: &[u8],
        target: &[u8],
        uid: u32,
        gid: u32,
    ) -> Result<Attr> {
        self.lock_for_change()?
            .symlink(parent, name, target, uid, gid)
    }

    /// Creates a FIFO, socket, character or block device node, or a regular file (not
    /// opened): the kind `mode`'s type bits name (none is a regular file, as in mknod(2)),
    /// with its permission bits. `rdev` is kept for device nodes only. The file system
    /// stores these inodes and never opens a device or carries a FIFO's data.
    pub fn mknod(
        &self,
        parent: InodeNo,
        name: &[u8],
        mode: u32,
        rdev: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Attr> {
        self.lock_for_change()?
            .mknod(parent, name, mode, rdev, (uid, gid))
    }

    pub fn readlink(&self, ino: InodeNo) -> Result<Vec<u8>> {
        self.lock()?.readlink(ino)
    }

    /// A new name `name` in `parent` for `ino` (not a directory).
    pub fn link(&self, ino: InodeNo, parent: InodeNo, name: &[u8]) -> Result<Attr> {
        self.lock_for_change()?.link(ino, parent, name)
    }

    /// Removes a name; the inode goes when its last link and last handle are gone.
    pub fn unlink(&self, parent: InodeNo, name: &[u8]) -> Result<()> {
        self.lock_for_change()?.unlink(parent, name)
    }

    pub fn rmdir(&self, parent: InodeNo, name: &[u8]) -> Result<()> {
        self.lock_for_change()?.rmdir(parent, name)
    }

    pub fn rename(
        &self,
        parent: InodeNo,
        name: &[u8],
        new_parent: InodeNo,
        new_name: &[u8],
        flags: RenameFlags,
    ) -> Result<()> {
        self.lock_for_change()?
            .rename(parent, name, new_parent, new_name, flags)
    }

    /// Entries after `offset` (0 for the start), "." and ".." first.
    pub fn readdir(&self, ino: InodeNo, offset: u64) -> Result<Vec<DirEntry>> {
        self.lock()?.readdir(ino, offset)
    }

    pub fn setxattr(&self, ino: InodeNo, name: &[u8], value: &[u8], mode: XattrMode) -> Result<()> {
        self.lock_for_change()?.setxattr(ino, name, value, mode)
    }

    pub fn getxattr(&self, ino: InodeNo, name: &[u8]) -> Result<Vec<u8>> {
        self.lock()?.getxattr(ino, name)
    }

    pub fn listxattr(&self, ino: InodeNo) -> Result<Vec<Vec<u8>>> {
        self.lock()?.listxattr(ino)
    }

    pub fn removexattr(&self, ino: InodeNo, name: &[u8]) -> Result<()> {
        self.lock_for_change()?.removexattr(ino, name)
    }

    /// Counts an open handle (unlinked files live while one is open).
    pub fn open(&self, ino: InodeNo) -> Result<()> {
        self.lock()?.open(ino)
    }

    /// Closes a handle: flushes the file's buffer; frees an unlinked file at its last close.
    pub fn release(&self, ino: InodeNo) -> Result<()> {
        self.lock()?.release(ino)
    }

    /// Up to `len` bytes from `offset` (fewer at the end of the file).
    /// The data is read from the device after the lock is let go ([`crate::reads`]).
    pub fn read(&self, ino: InodeNo, offset: u64, len: u32) -> Result<Vec<u8>> {
        let (plan, device, _in_flight) = {
            let mut s = self.lock()?;
            let plan = s.read_plan(ino, offset, len)?;
            (plan, Arc::clone(&s.device), self.reads.enter())
        };
        plan.run(&*device)
    }

    /// Writes `data` at `offset`; returns the bytes written. Buffered until fsync, release
    /// or pressure; space is reserved now, so a full device fails here with `NoSpace`.
    pub fn write(&self, ino: InodeNo, offset: u64, data: &[u8]) -> Result<u32> {
        self.write_as(ino, offset, data, false)
    }

    /// [`Lfs::write`]; with `kill_suid_sgid` (a writer without `CAP_FSETID`, FUSE's
    /// `FUSE_WRITE_KILL_SUIDGID`) the file also loses its set-user-ID bit and, when group
    /// execute is set, its set-group-ID bit, in the same change as the data (POSIX; Linux's
    /// `file_remove_privs`).
    pub fn write_as(
        &self,
        ino: InodeNo,
        offset: u64,
        data: &[u8],
        kill_suid_sgid: bool,
    ) -> Result<u32> {
        let (mut s, n) =
            self.change_taking_space(|s| s.write_with(ino, offset, data, kill_suid_sgid))?;
        s.maybe_checkpoint()?;
        Ok(n)
    }

    /// Makes `ino` durable (data and metadata; `datasync` changes nothing here because the
    /// size and the block map must be logged with the data anyway): writes its buffer, makes
    /// it durable, writes the log and makes that durable. Both device Flushes are sent outside
    /// the lock and shared with concurrent callers (group commit), so fsyncs of different
    /// files do not wait for each other's Flush, nor do readers.
    pub fn fsync(&self, ino: InodeNo, datasync: bool) -> Result<()> {
        let _ = datasync;
        let device = {
            let mut s = self.lock_for_change()?;
            s.attr(ino)?;
            s.flush_file(ino)?;
            Arc::clone(&s.device)
        };
        self.durable.sync(&*device)?;
        {
            let mut s = self.lock_for_change()?;
            s.flush_log()?;
            s.maybe_checkpoint()?;
        }
        self.durable.sync(&*device)
    }

    /// Makes everything durable.
    pub fn sync(&self) -> Result<()> {
        let device = {
            let mut s = self.lock_for_change()?;
            s.sync()?;
            Arc::clone(&s.device)
        };
        self.durable.sync(&*device)
    }

    /// Writes `ino`'s buffered data to the device (not yet durable): what close(2) does, so
    /// a write that fails there is reported to the closing process. A file with nothing
    /// buffered closes cleanly, also after writes stopped.
    pub fn flush(&self, ino: InodeNo) -> Result<()> {
        self.lock()?.flush_file(ino)
    }

    /// Makes everything durable and writes a checkpoint now (as unmount does, keeping the file
    /// system mounted), so the next mount has no log to replay.
    pub fn checkpoint(&self) -> Result<()> {
        let device = {
            let mut s = self.lock_for_change()?;
            s.checkpoint()?;
            Arc::clone(&s.device)
        };
        self.durable.sync(&*device)
    }

    /// Has `report` say, once, that writes stopped after a device error (the mount logs it).
    /// Without a reporter the file system says nothing: the write that failed returns the
    /// device's error, and later operations that change the file system fail with
    /// [`LfsError::Halted`].
    pub fn report_halt_with(&self, report: fn(&LfsError)) {
        self.durable.report_with(report);
    }

    /// Whether writes stopped after a device error (see [`LfsError::Halted`]).
    pub fn halted(&self) -> bool {
        self.durable.halted()
    }

    pub fn statfs(&self) -> Result<StatFs> {
        Ok(self.lock()?.statfs())
    }

    /// Pins the file's current blocks (its buffer is flushed; holes are named, not written)
    /// until [`Lfs::release_snapshot`], unless writes need the space first.
    pub fn snapshot(&self, ino: InodeNo) -> Result<Snapshot> {
        self.lock()?.snapshot(ino)
    }

    /// Ok while snapshot `id` holds its blocks; [`LfsError::SnapshotReclaimed`] once writes
    /// took them back (what the device read through it since it was made may be other data).
    pub fn check_snapshot(&self, id: SnapshotId) -> Result<()> {
        self.lock()?.snapshots.check(id)
    }

    /// Unpins a snapshot's blocks; a reclaimed snapshot is forgotten.
    pub fn release_snapshot(&self, id: SnapshotId) -> Result<()> {
        self.lock()?.release_snapshot(id)
    }

    /// Cleans one zone if one holds reclaimable space; false if none does. The FUSE layer
    /// calls it from a background thread. Readers do not wait for it: the victim's live blocks
    /// are read in batches with the lock let go (a read in flight keeps zones from being reset,
    /// see [`crate::reads`]), and only the moves of blocks still where they were read are
    /// appended and committed with the lock held, one batch at a time.
    pub fn gc_step(&self) -> Result<bool> {
        let (victim, runs, resets) = {
            let s = self.lock_for_change()?;
            let Some(victim) = s.pick_victim() else {
                return Ok(false);
            };
            (victim, s.meta.runs_in(victim), s.stats.zone_resets)
        };
        // Batches of at most GC_BATCH_BLOCKS, a long run split.
        let mut batch = Vec::new();
        let mut blocks = 0;
        for (ino, file_block, run) in runs {
            let mut at = 0;
            while at < run.count {
                let n = (run.count - at).min(GC_BATCH_BLOCKS - blocks);
                let piece = Run {
                    lba: run.lba.offset(at),
                    count: n,
                };
                batch.push((ino, file_block + at, piece));
                (at, blocks) = (at + n, blocks + n);
                if blocks == GC_BATCH_BLOCKS {
                    if !self.move_batch(&std::mem::take(&mut batch), resets)? {
                        return Ok(true);
                    }
                    blocks = 0;
                }
            }
        }
        if !self.move_batch(&batch, resets)? {
            return Ok(true);
        }
        let mut s = self.lock_for_change()?;
        // Durable first; the flush then resets the victim (and any other empty zone). A block
        // that moved under the cleaner's read (rewritten) is not the cleaner's to move.
        s.flush_log()?;
        if s.meta.live(victim) == 0 {
            s.stats.gc_zones += 1;
        }
        s.maybe_checkpoint()?;
        Ok(true)
    }

    /// Reads a batch of a victim's runs with the lock let go, then moves what is still where
    /// it was read. False, with nothing read or moved, once any zone was reset since the runs
    /// were listed (`resets`, the count then): the victim may have been reset and written
    /// again, so an LBA listed could hold other bytes, even of the same file block. The step
    /// then ends; the next one lists afresh.
    fn move_batch(&self, batch: &[(InodeNo, u64, Run)], resets: u64) -> Result<bool> {
        if batch.is_empty() {
            return Ok(true);
        }
        let (device, in_flight) = {
            let s = self.lock_for_change()?;
            if s.stats.zone_resets != resets {
                return Ok(false);
            }
            (Arc::clone(&s.device), self.reads.enter())
        };
        let mut data = Vec::with_capacity(batch.len());
        for (_, _, run) in batch {
            data.push(device.read(run.lba.get(), run.count)?);
        }
        drop(in_flight);
        let mut s = self.lock_for_change()?;
        if s.stats.zone_resets != resets {
            return Ok(false);
        }
        for ((ino, file_block, run), bytes) in batch.iter().zip(&data) {
            s.move_run(*ino, *file_block, *run, bytes)?;
        }
        s.maybe_checkpoint()?;
        Ok(true)
    }

    /// Whether cleaning ahead of need would help: free zones are down to a quarter of the
    /// data zones (at least twice the reserve) and the next victim is at most half live, so
    /// cleaning it gains at least as much as it moves. The mount's background thread asks
    /// before each [`Lfs::gc_step`], so writers rarely have to clean inline. (Without the
    /// second condition a file system over three quarters full never has enough free zones,
    /// and the thread cleaned zones with a single dead block: a write amplification of 49 at
    /// 80% full in `cargo xtask bench`.)
    pub fn wants_cleaning(&self) -> Result<bool> {
        let s = self.lock()?;
        let low = (u64::from(s.space.nr()) / 4).max(2 * space::RESERVE_ZONES);
        Ok(s.free_zones().len() as u64 <= low
            && s.pick_victim()
                .is_some_and(|z| 2 * s.meta.live(z) <= s.space.cap()))
    }

    /// What each zone holds for the file system, in zone order: its role and its live data
    /// blocks (the blocks file extents map there; data still buffered in memory is not
    /// counted until it is written).
    pub fn zone_usage(&self) -> Result<Vec<ZoneUsage>> {
        Ok(self.lock()?.zone_usage())
    }

    /// What the file system asked of the device so far.
    pub fn stats(&self) -> Result<LfsStats> {
        Ok(self.lock()?.stats)
    }

    /// Checks every invariant against the device; an empty list means clean.
    pub fn fsck(&self) -> Result<Vec<Problem>> {
        let mut s = self.lock()?;
        s.flush_all_files()?;
        s.flush_log()?;
        Ok(s.fsck())
    }
}
