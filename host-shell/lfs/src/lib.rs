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
//! [`Lfs`] is the typed API the FUSE layer calls; it is `Sync`: one lock around the state,
//! not held while data is read from the device ([`reads`]).
//! It never panics on media contents: what fails a check is [`LfsError::Corrupted`].

mod api;
mod buffers;
mod checkpoint;
mod create;
mod data;
mod dir;
mod durable;
mod error;
mod extent;
pub mod format;
mod fsck;
mod ids;
mod inode;
mod log;
mod meta;
mod mount;
mod ops;
mod path;
mod reads;
mod rename;
mod replay;
mod snapshot;
mod space;
mod xattr;
pub mod zoned;
mod zones;

use std::sync::{Arc, Mutex, MutexGuard};

use common::zns::ZoneAction;

pub use data::MAX_FILE_BYTES;
pub use error::{LfsError, Result};
pub use fsck::Problem;
pub use ids::{Lba, SnapshotId, ZoneId};
pub use inode::{access, check_access, Attr, Credentials, FileKind, InodeNo, SetAttr, Time};
pub use ops::DirEntry;
pub use rename::RenameFlags;
pub use snapshot::Snapshot;
pub use xattr::XattrMode;
pub use zoned::{IoError, Zoned};
pub use zones::{ZoneRole, ZoneUsage};

use buffers::Buffers;
use checkpoint::CkptLog;
use durable::Durability;
use error::bug;
use format::{BLOCK_BYTES, NAME_MAX};
use log::Stream;
use meta::Meta;
use reads::Reads;
use snapshot::Snapshots;
use space::Space;

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

impl std::fmt::Display for LfsStats {
    /// `key=value` pairs, space-separated (the daemon's log line and `user.csd.counters`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "data_write_blocks={} data_read_blocks={} meta_blocks={} gc_zones={} \
             gc_moved_blocks={} zone_resets={} checkpoints={} snapshots_reclaimed={}",
            self.data_write_blocks,
            self.data_read_blocks,
            self.meta_blocks,
            self.gc_zones,
            self.gc_moved_blocks,
            self.zone_resets,
            self.checkpoints,
            self.snapshots_reclaimed
        )
    }
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
    device: Arc<dyn Zoned>,
    /// What the device has made durable; shared with [`Lfs`], which syncs outside the lock.
    durable: Arc<Durability>,
    /// Reads in flight outside the lock; shared with [`Lfs`].
    reads: Arc<Reads>,
    meta: Meta,
    space: Space,
    stream: Stream,
    ckpt: CkptLog,
    buffers: Buffers,
    snapshots: Snapshots,
    stats: LfsStats,
    /// The write generation ([`Durability::written`]) the queued log records depend on: a
    /// Flush covering it must complete before they are written.
    log_needs: u64,
}

/// A mounted file system. All methods take `&self`; it may be shared between threads.
#[derive(Debug)]
pub struct Lfs {
    state: Mutex<State>,
    durable: Arc<Durability>,
    reads: Arc<Reads>,
}

impl State {
    fn new(
        device: Arc<dyn Zoned>,
        meta: Meta,
        space: Space,
        stream: Stream,
        ckpt: CkptLog,
    ) -> State {
        let clock = meta.youngest();
        State {
            device,
            durable: Arc::default(),
            reads: Arc::default(),
            meta,
            space: space.with_clock(clock),
            stream,
            ckpt,
            buffers: Buffers::default(),
            snapshots: Snapshots::default(),
            stats: LfsStats::default(),
            log_needs: 0,
        }
    }

    /// Checkpoints when the log since the last one has grown past the image (bounding replay
    /// and the zones the chain holds).
    fn maybe_checkpoint(&mut self) -> Result<()> {
        if self.stream.checkpoint_due(self.space.cap()) {
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
    fn append(&mut self, zone: ZoneId, data: Vec<u8>) -> Result<Lba> {
        self.durable.check()?;
        let zslba = self.space.zslba(zone);
        self.durable
            .wrote(self.device.append(zslba.get(), data))
            .map(Lba)
    }

    /// A zone action on `zone`, recorded like a write. A reset first waits for the reads in
    /// flight ([`reads`]).
    fn zone_action(&mut self, zone: ZoneId, action: ZoneAction) -> Result<()> {
        self.durable.check()?;
        if action == ZoneAction::Reset {
            self.reads.wait_idle();
        }
        let zslba = self.space.zslba(zone);
        self.durable
            .wrote(self.device.zone_action(zslba.get(), action, false))
    }

    fn statfs(&self) -> StatFs {
        let blocks = self.capacity_blocks();
        let bfree = blocks.saturating_sub(self.used_blocks());
        StatFs {
            block_bytes: BLOCK_BYTES as u32,
            blocks,
            bfree,
            bavail: bfree,
            files: self.meta.inode_count() as u64,
            ffree: bfree,
            name_max: NAME_MAX as u32,
        }
    }
}

impl Lfs {
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

    /// Runs a change that takes space, under the lock. One that finds the device full while
    /// unlinked files still have handles open is tried again, with the lock let go between
    /// tries, for up to [`RELEASE_WAIT`]: FUSE closes handles asynchronously (a process's
    /// close may reach the file system after its next unlink and write), and the last close of
    /// an unlinked file frees its blocks. (So a file system that frees deleted files in the
    /// background waits for that before it says it is full.) A change that fails with
    /// `NoSpace` has changed nothing, so trying it again is safe.
    /// Returns the lock still held, with the change's value.
    fn change_taking_space<T>(
        &self,
        mut change: impl FnMut(&mut State) -> Result<T>,
    ) -> Result<(MutexGuard<'_, State>, T)> {
        let deadline = std::time::Instant::now() + RELEASE_WAIT;
        loop {
            let mut s = self.lock_for_change()?;
            match change(&mut s) {
                Ok(value) => return Ok((s, value)),
                Err(LfsError::NoSpace)
                    if s.unlinked_but_open() && std::time::Instant::now() < deadline =>
                {
                    drop(s);
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// How long a change that finds the device full waits for the last closes of unlinked files
/// ([`Lfs::change_taking_space`]).
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_millis(500);
