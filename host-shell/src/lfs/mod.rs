//! A log-structured file system on the device's zones (docs/FORMAT.md section 3).
//!
//! Nothing is overwritten in place: file data is appended to a hot zone, data the cleaner
//! moves to a cold zone, metadata changes to a stream of checksummed chunks in metadata
//! zones, and checkpoints (an image of all metadata plus a one-block record in zones 0
//! and 1) bound the replay at mount. `fsync` makes a file durable by writing its buffered
//! blocks and then the log; after a power cut, mount replays the log from the latest
//! checkpoint up to the first torn chunk, so every fsync'ed byte is there and every
//! operation that was not synced is either wholly there or not at all.
//!
//! [`Lfs`] is the typed API the FUSE layer calls; it is `Sync` (one lock around the state).
//! It never panics on media contents: what fails a check is [`LfsError::Corrupted`].

mod checkpoint;
mod data;
mod dir;
mod durable;
mod error;
mod extent;
pub mod format;
mod fsck;
mod gc;
mod inode;
mod layout;
mod log;
mod meta;
mod ops;
mod path;
mod rename;
mod snapshot;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use common::zns::ZoneAction;

pub use data::MAX_FILE_BYTES;
pub use error::{LfsError, Result};
pub use fsck::Problem;
pub use inode::{access, check_access, Attr, Credentials, FileKind, InodeNo, SetAttr, Time};
pub use ops::{DirEntry, XattrMode};
pub use rename::RenameFlags;
pub use snapshot::Snapshot;

use checkpoint::{find_latest, CkptLog};
use data::Dirty;
use durable::Durability;
use error::bug;
use format::{CheckpointRecord, Record, BLOCK_BYTES, NAME_MAX};
use layout::{Zones, CKPT_ZONES, MIN_ZONES};
use log::Stream;
use meta::Meta;

use crate::driver::Driver;

/// Counters of what the file system asked of the device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LfsStats {
    /// Blocks of file data appended for writes.
    pub data_write_blocks: u64,
    /// Blocks of file data read.
    pub data_read_blocks: u64,
    /// Blocks of metadata (chunks and checkpoint records) appended.
    pub meta_blocks: u64,
    /// Blocks the cleaner moved.
    pub gc_moved_blocks: u64,
    /// Zones the cleaner cleaned.
    pub gc_zones: u64,
    pub zone_resets: u64,
    pub checkpoints: u64,
    /// Offload snapshots whose zones were taken back for writes.
    pub snapshots_reclaimed: u64,
}

/// File-system statistics, as statfs reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    pub block_bytes: u32,
    /// Blocks for file data (capacity after the reserve and the metadata's room).
    pub blocks: u64,
    /// Blocks still free for file data, counting dead blocks the cleaner can reclaim (those
    /// an offload's snapshot holds too: writes reclaim it when they need them).
    pub bfree: u64,
    pub bavail: u64,
    /// Inodes in use.
    pub files: u64,
    /// Inodes that can still be made.
    pub ffree: u64,
    pub name_max: u32,
}

/// The mounted state, behind [`Lfs`]'s lock.
#[derive(Debug)]
pub(crate) struct State {
    driver: Driver,
    /// What the device has made durable; shared with [`Lfs`], which syncs outside the lock.
    durable: Arc<Durability>,
    meta: Meta,
    zones: Zones,
    stream: Stream,
    ckpt: CkptLog,
    /// Write buffers. Ordered: flushing them all goes by inode number, so the same operations
    /// make the same device writes every time (a power-cut point names one moment).
    dirty: BTreeMap<InodeNo, Dirty>,
    open: HashMap<InodeNo, u32>,
    /// Open snapshots and the zones each pins.
    snapshots: BTreeMap<u64, Vec<u32>>,
    /// Snapshots reclaimed for space and not released yet ([`State::reclaim_snapshot`]).
    reclaimed: BTreeSet<u64>,
    /// Zones holding data appended by a flush or a cleaner move whose map records are not
    /// committed yet: their live counts do not show that data, so nothing may reset or clean
    /// them until the records are in. A stack: the cleaner can run inside a flush.
    unmapped: Vec<u32>,
    next_snapshot: u64,
    /// Counts zones opened for data (ages for the cleaner).
    clock: u64,
    stats: LfsStats,
}

/// A mounted file system. All methods take `&self`; it may be shared between threads.
#[derive(Debug)]
pub struct Lfs {
    state: Mutex<State>,
    durable: Arc<Durability>,
}

fn zone_geometry(driver: &Driver) -> Result<(u64, u64, u32)> {
    let info = driver.info();
    if info.nr_zones < MIN_ZONES || info.zone_cap_lbas < 8 {
        return Err(LfsError::InvalidArgument(
            "the device has too few or too small zones",
        ));
    }
    Ok((info.zone_size_lbas, info.zone_cap_lbas, info.nr_zones))
}

fn max_chunk_blocks(driver: &Driver, cap: u64) -> usize {
    let zasl = u64::from(driver.info().zasl_lbas.max(1));
    zasl.min(cap - 1).min(32) as usize
}

impl State {
    fn new(driver: Driver, meta: Meta, zones: Zones, stream: Stream, ckpt: CkptLog) -> State {
        let clock = meta.born.values().copied().max().unwrap_or(0);
        State {
            driver,
            durable: Arc::default(),
            meta,
            zones,
            stream,
            ckpt,
            dirty: BTreeMap::new(),
            open: HashMap::new(),
            snapshots: BTreeMap::new(),
            reclaimed: BTreeSet::new(),
            unmapped: Vec::new(),
            next_snapshot: 1,
            clock,
            stats: LfsStats::default(),
        }
    }

    /// Checkpoints when the log since the last one has grown past the image (bounding replay
    /// and the zones the chain holds).
    fn maybe_checkpoint(&mut self) -> Result<()> {
        let limit = (self.zones.cap / 2).max(self.stream.image_blocks);
        if self.stream.log_blocks >= limit {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Writes every buffer and the log (not yet durable: see [`Lfs::sync`]).
    fn sync(&mut self) -> Result<()> {
        self.flush_all_files()?;
        self.flush_log()?;
        self.maybe_checkpoint()
    }

    /// Zone Append to `zone`, recorded for durability; fails once writes have stopped.
    fn append(&mut self, zone: u32, data: Vec<u8>) -> Result<u64> {
        self.durable.check()?;
        let zslba = self.zones.zslba(zone);
        self.durable.wrote(self.driver.append(zslba, data))
    }

    /// A zone action on `zone`, recorded like a write.
    fn zone_action(&mut self, zone: u32, action: ZoneAction) -> Result<()> {
        self.durable.check()?;
        let zslba = self.zones.zslba(zone);
        self.durable
            .wrote(self.driver.zone_action(zslba, action, false))
    }

    fn statfs(&self) -> StatFs {
        let blocks = self.capacity_blocks();
        let bfree = blocks.saturating_sub(self.used_blocks());
        StatFs {
            block_bytes: BLOCK_BYTES as u32,
            blocks,
            bfree,
            bavail: bfree,
            files: self.meta.inodes.len() as u64,
            ffree: bfree,
            name_max: NAME_MAX as u32,
        }
    }
}

fn fs_id() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mix = t ^ (u64::from(std::process::id()) << 32) ^ 0x9E37_79B9_7F4A_7C15;
    // splitmix64 finaliser: spreads the clock's bits.
    let mut z = mix.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Lfs {
    /// Makes a new, empty file system on the device (every zone is reset). Its root
    /// directory is owned by `uid`:`gid` with mode 0755.
    pub fn mkfs(driver: &Driver, uid: u32, gid: u32) -> Result<()> {
        let (zone_lbas, cap, nr) = zone_geometry(driver)?;
        driver.zone_action(0, ZoneAction::Reset, true)?;
        let zones = Zones {
            zone_lbas,
            cap,
            wp: vec![0; nr as usize],
            pins: vec![0; nr as usize],
        };
        let id = fs_id();
        let now = Time::now();
        let ckpt = CkptLog {
            zone: CKPT_ZONES[0],
            last: CheckpointRecord {
                fs_id: id,
                seq: 0,
                zone_size_lbas: zone_lbas,
                zone_cap_lbas: cap,
                nr_zones: nr,
                image_lba: 0,
                image_seq: 0,
                image_chunks: 0,
                created: now.sec,
            },
        };
        let stream = Stream {
            fs_id: id,
            next_seq: 1,
            tail: None,
            chain: Vec::new(),
            pending: Vec::new(),
            log_blocks: 0,
            image_blocks: 0,
            max_chunk_blocks: max_chunk_blocks(driver, cap),
        };
        let mut meta = Meta::new(nr, zone_lbas, cap);
        meta.apply(&Record::Inode(Attr {
            ino: InodeNo::ROOT,
            kind: FileKind::Dir,
            perm: 0o755,
            uid,
            gid,
            nlink: 2,
            size: 0,
            atime: now,
            mtime: now,
            ctime: now,
            parent: InodeNo::ROOT,
            rdev: 0,
        }))?;
        let mut state = State::new(driver.clone(), meta, zones, stream, ckpt);
        state.checkpoint()?;
        state.durable.sync(driver)
    }

    /// Mounts the file system on the device: finds the latest checkpoint, replays the log
    /// after it, frees files that were unlinked while open, and writes a new checkpoint.
    pub fn mount(driver: &Driver) -> Result<Lfs> {
        let (zone_lbas, cap, _) = zone_geometry(driver)?;
        let report = driver.all_zones()?;
        let mut zones = Zones::from_report(zone_lbas, cap, &report);
        let ckpt = find_latest(driver, &zones)?.ok_or(LfsError::NotFormatted)?;
        let rec = ckpt.last;
        let replayed = log::replay(
            driver,
            &zones,
            rec.fs_id,
            rec.image_lba,
            rec.image_seq,
            rec.image_chunks,
        )?;
        // Zones that are partly written and will not be appended to again give back their
        // active resource.
        let keep: Vec<u32> = [replayed.meta.hot, replayed.meta.cold, replayed.clean_tail]
            .into_iter()
            .flatten()
            .chain(CKPT_ZONES)
            .collect();
        for z in 0..zones.nr() {
            let wp = zones.wp[z as usize];
            let live = replayed.meta.live[z as usize] > 0 || replayed.chain.contains(&z);
            if wp > 0 && wp < cap && live && !keep.contains(&z) {
                driver.zone_action(zones.zslba(z), ZoneAction::Finish, false)?;
                zones.wp[z as usize] = cap;
            }
        }
        let stream = Stream {
            fs_id: rec.fs_id,
            next_seq: replayed.next_seq,
            tail: replayed.clean_tail,
            chain: replayed.chain,
            pending: Vec::new(),
            log_blocks: replayed.log_blocks,
            image_blocks: replayed.image_blocks,
            max_chunk_blocks: max_chunk_blocks(driver, cap),
        };
        let mut state = State::new(driver.clone(), replayed.meta, zones, stream, ckpt);
        if state.stream.tail.is_none() {
            // The log ends torn: the new checkpoint's image starts a fresh zone, and the old
            // chain is released once it is durable.
            state.stream.chain.clear();
        }
        let orphans: Vec<InodeNo> = state
            .meta
            .inodes
            .values()
            .filter(|i| i.attr.nlink == 0)
            .map(|i| i.attr.ino)
            .collect();
        for ino in orphans {
            state.commit(vec![Record::Free { ino }])?;
        }
        state.checkpoint()?;
        state.durable.sync(driver)?;
        Ok(Lfs {
            durable: Arc::clone(&state.durable),
            state: Mutex::new(state),
        })
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| bug("a thread panicked while holding the file system"))
    }

    /// The lock, for an operation that changes the file system: refused once writes have
    /// stopped after a device error ([`LfsError::Halted`]).
    fn lock_for_change(&self) -> Result<MutexGuard<'_, State>> {
        self.durable.check()?;
        self.lock()
    }

    /// Makes everything durable, writes a checkpoint and gives the device back.
    pub fn unmount(self) -> Result<()> {
        let mut s = self.lock_for_change()?;
        s.flush_all_files()?;
        s.checkpoint()?;
        self.durable.sync(&s.driver)
    }

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
        self.lock_for_change()?.create(parent, name, mode, uid, gid)
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
        let mut s = self.lock_for_change()?;
        let attr = s.create(parent, name, mode, uid, gid)?;
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

    /// Counts an open handle (unlinked files live while one is open).
    pub fn open(&self, ino: InodeNo) -> Result<()> {
        self.lock()?.open(ino)
    }

    /// Closes a handle: flushes the file's buffer; frees an unlinked file at its last close.
    pub fn release(&self, ino: InodeNo) -> Result<()> {
        self.lock()?.release(ino)
    }

    /// Up to `len` bytes from `offset` (fewer at the end of the file).
    pub fn read(&self, ino: InodeNo, offset: u64, len: u32) -> Result<Vec<u8>> {
        self.lock()?.read(ino, offset, len)
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
        let mut s = self.lock_for_change()?;
        let n = s.write_with(ino, offset, data, kill_suid_sgid)?;
        s.maybe_checkpoint()?;
        Ok(n)
    }

    /// Makes `ino` durable (data and metadata; `datasync` changes nothing here because the
    /// size and the block map must be logged with the data anyway): writes its buffer and the
    /// log, then one device Flush, sent outside the lock and shared with concurrent callers.
    pub fn fsync(&self, ino: InodeNo, datasync: bool) -> Result<()> {
        let _ = datasync;
        let driver = {
            let mut s = self.lock_for_change()?;
            s.attr(ino)?;
            s.flush_file(ino)?;
            s.flush_log()?;
            s.maybe_checkpoint()?;
            s.driver.clone()
        };
        self.durable.sync(&driver)
    }

    /// Makes everything durable.
    pub fn sync(&self) -> Result<()> {
        let driver = {
            let mut s = self.lock_for_change()?;
            s.sync()?;
            s.driver.clone()
        };
        self.durable.sync(&driver)
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
        let driver = {
            let mut s = self.lock_for_change()?;
            s.checkpoint()?;
            s.driver.clone()
        };
        self.durable.sync(&driver)
    }

    /// Whether writes stopped after a device error (see [`LfsError::Halted`]).
    pub fn halted(&self) -> bool {
        self.durable.halted()
    }

    pub fn statfs(&self) -> Result<StatFs> {
        Ok(self.lock()?.statfs())
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

    /// Pins the file's current blocks (its buffer is flushed; holes are named, not written)
    /// until [`Lfs::release_snapshot`], unless writes need the space first.
    pub fn snapshot(&self, ino: InodeNo) -> Result<Snapshot> {
        self.lock()?.snapshot(ino)
    }

    /// Ok while snapshot `id` holds its blocks; [`LfsError::SnapshotReclaimed`] once writes
    /// took them back (what the device read through it since it was made may be other data).
    pub fn check_snapshot(&self, id: u64) -> Result<()> {
        self.lock()?.check_snapshot(id)
    }

    /// Unpins a snapshot's blocks; a reclaimed snapshot is forgotten.
    pub fn release_snapshot(&self, id: u64) -> Result<()> {
        self.lock()?.release_snapshot(id)
    }

    /// Cleans one zone if one holds reclaimable space; false if none does. The FUSE layer
    /// may call it from a background thread.
    pub fn gc_step(&self) -> Result<bool> {
        let mut s = self.lock_for_change()?;
        let cleaned = s.clean_one()?;
        s.maybe_checkpoint()?;
        Ok(cleaned)
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
        let low = (u64::from(s.zones.nr()) / 4).max(2 * layout::RESERVE_ZONES);
        Ok(s.free_zones().len() as u64 <= low
            && s.pick_victim()
                .is_some_and(|z| 2 * s.meta.live[z as usize] <= s.zones.cap))
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
