//! What a kernel runs over: a memory range set's extents and output buffer, and for a file the
//! snapshot that pins its blocks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::program::Extent;

use super::Engine;
use crate::lfs::{InodeNo, Lfs, LfsError, SnapshotId};

/// Ids of [`Ranges`], so a lease knows which one its range set holds.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// What a memory range set holds: extents in file order whose concatenation holds the first
/// `file_size` bytes the kernel reads (holes read as zeros), and an output buffer of `out_cap`
/// bytes. For a file, the snapshot pinning the extents' blocks comes with them: give it back
/// with [`Ranges::release`].
#[derive(Debug)]
pub struct Ranges {
    id: u64,
    extents: Vec<Extent>,
    file_size: u64,
    out_cap: u32,
    snapshot: Option<FileSnapshot>,
}

/// A file's snapshot in a file system.
struct FileSnapshot {
    fs: Arc<Lfs>,
    id: SnapshotId,
}

impl std::fmt::Debug for FileSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSnapshot")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Ranges {
    /// Raw extents of the device (a zone's data, an LBA range): nothing pins them.
    pub fn raw(extents: Vec<Extent>, file_size: u64, out_cap: u32) -> Ranges {
        Ranges::new(extents, file_size, out_cap, None)
    }

    fn new(
        extents: Vec<Extent>,
        file_size: u64,
        out_cap: u32,
        snapshot: Option<FileSnapshot>,
    ) -> Ranges {
        Ranges {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            extents,
            file_size,
            out_cap,
            snapshot,
        }
    }

    pub(super) fn id(&self) -> u64 {
        self.id
    }

    pub fn extents(&self) -> &[Extent] {
        &self.extents
    }

    /// Bytes the kernel sees as its file.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// Bytes of the output buffer.
    pub fn out_cap(&self) -> u32 {
        self.out_cap
    }

    /// The file system's id of the snapshot, for a file.
    pub fn snapshot_id(&self) -> Option<SnapshotId> {
        self.snapshot.as_ref().map(|s| s.id)
    }

    /// Ok while the extents hold the file's blocks: always for raw extents;
    /// [`LfsError::SnapshotReclaimed`] once writes took a snapshot's blocks back.
    pub fn check(&self) -> Result<(), LfsError> {
        match &self.snapshot {
            Some(s) => s.fs.check_snapshot(s.id),
            None => Ok(()),
        }
    }

    /// Unpins a file's snapshot (nothing to do for raw extents).
    pub fn release(self) -> Result<(), LfsError> {
        match self.snapshot {
            Some(s) => s.fs.release_snapshot(s.id),
            None => Ok(()),
        }
    }
}

impl Engine {
    /// Snapshots file `ino` of `fs` (its buffered data is flushed, its blocks pinned) into
    /// ranges with an output buffer of `out_cap` bytes.
    pub fn snapshot(&self, fs: &Arc<Lfs>, ino: InodeNo, out_cap: u32) -> Result<Ranges, LfsError> {
        let snapshot = fs.snapshot(ino)?;
        Ok(Ranges::new(
            snapshot.extents,
            snapshot.file_size,
            out_cap,
            Some(FileSnapshot {
                fs: Arc::clone(fs),
                id: snapshot.id,
            }),
        ))
    }
}
