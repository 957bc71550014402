//! Snapshots: a file's blocks pinned for an offload, so the device can read them while the
//! file changes.
//!
//! A snapshot pins the zones holding the file's blocks: the cleaner leaves them alone and
//! they are not reset, so the dead blocks in them (the file's old data once it is
//! overwritten) keep taking space. Writes come first: when new data needs a zone and
//! cleaning the unpinned zones cannot make one, a snapshot is reclaimed (its pins dropped,
//! its zones cleaned and reset like any other) and from then on answers
//! [`LfsError::SnapshotReclaimed`]. The offload that holds it checks after each device run,
//! so a run that may have read a reset or rewritten zone is never believed. Write admission
//! and statfs therefore count pinned dead blocks as free.

use std::collections::{BTreeMap, BTreeSet};

use common::program::Extent;

use crate::error::{bug, LfsError, Result};
use crate::ids::{SnapshotId, ZoneId};
use crate::inode::{FileKind, InodeNo};
use crate::{meta, State};

/// A file's blocks pinned for an offload: they stay valid until
/// [`crate::Lfs::release_snapshot`] unless writes need their space first
/// ([`crate::Lfs::check_snapshot`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub id: SnapshotId,
    /// In file order; their concatenation holds the file's first `file_size` bytes. A hole
    /// ([`Extent::HOLE`]) stands for blocks the file has never written, which read as zeros.
    pub extents: Vec<Extent>,
    pub file_size: u64,
}

/// The snapshots of this mount: open ones with the zones each pins, and reclaimed ones not
/// released yet.
///
/// Invariants:
/// - An id is open, reclaimed or neither (released or never made), never both.
/// - Ids are handed out in increasing order and never reused within a mount.
/// - The zones an open snapshot lists are pinned in [`crate::space::Space`] once each; the
///   caller pins them when it opens the snapshot and unpins the list it gets back from
///   [`Snapshots::close`] or [`Snapshots::reclaim`].
#[derive(Debug, Clone)]
pub struct Snapshots {
    open: BTreeMap<SnapshotId, Vec<ZoneId>>,
    reclaimed: BTreeSet<SnapshotId>,
    next: SnapshotId,
}

impl Default for Snapshots {
    fn default() -> Self {
        Snapshots {
            open: BTreeMap::new(),
            reclaimed: BTreeSet::new(),
            next: SnapshotId(1),
        }
    }
}

impl Snapshots {
    /// Opens a snapshot holding blocks in `zones` (each listed once).
    pub fn open(&mut self, zones: Vec<ZoneId>) -> SnapshotId {
        let id = self.next;
        self.next = SnapshotId(id.0 + 1);
        self.open.insert(id, zones);
        id
    }

    /// Ends snapshot `id`: the zones to unpin if it was open, none if it was reclaimed.
    pub fn close(&mut self, id: SnapshotId) -> Result<Vec<ZoneId>> {
        if self.reclaimed.remove(&id) {
            return Ok(Vec::new());
        }
        self.open
            .remove(&id)
            .ok_or(LfsError::InvalidArgument("no such snapshot"))
    }

    /// Whether snapshot `id` still holds its blocks.
    pub fn check(&self, id: SnapshotId) -> Result<()> {
        if self.open.contains_key(&id) {
            Ok(())
        } else if self.reclaimed.contains(&id) {
            Err(LfsError::SnapshotReclaimed)
        } else {
            Err(LfsError::InvalidArgument("no such snapshot"))
        }
    }

    /// The open snapshot whose reclaim would free the most: the most dead blocks no other
    /// snapshot holds (`pins` per zone), then the most dead blocks (`dead` per zone); `None`
    /// if no open snapshot pins a dead block (reclaiming one would disturb its offload for
    /// nothing).
    pub fn best_to_reclaim(
        &self,
        pins: impl Fn(ZoneId) -> u32,
        dead: impl Fn(ZoneId) -> u64,
    ) -> Option<SnapshotId> {
        self.open
            .iter()
            .map(|(&id, zones)| {
                let alone: u64 = zones
                    .iter()
                    .filter(|&&z| pins(z) == 1)
                    .map(|&z| dead(z))
                    .sum();
                ((alone, zones.iter().map(|&z| dead(z)).sum::<u64>()), id)
            })
            .filter(|&((_, total), _)| total > 0)
            .max()
            .map(|(_, id)| id)
    }

    /// Marks open snapshot `id` reclaimed; returns the zones to unpin.
    pub fn reclaim(&mut self, id: SnapshotId) -> Result<Vec<ZoneId>> {
        let zones = self
            .open
            .remove(&id)
            .ok_or_else(|| bug("a snapshot vanished while being reclaimed"))?;
        self.reclaimed.insert(id);
        Ok(zones)
    }
}

impl State {
    /// Flushes `ino` and pins the zones holding its blocks. Holes are named in the extent list
    /// ([`Extent::HOLE`]), where the device reads zeros: nothing is written into the file.
    pub(super) fn snapshot(&mut self, ino: InodeNo) -> Result<Snapshot> {
        let attr = self.attr(ino)?;
        if attr.kind != FileKind::File {
            return Err(if attr.kind == FileKind::Dir {
                LfsError::IsDir
            } else {
                LfsError::InvalidArgument("not a regular file")
            });
        }
        self.flush_file(ino)?;
        let inode = self.inode(ino)?;
        let blocks = meta::blocks_of(attr.size);
        let mut extents: Vec<Extent> = Vec::new();
        let mut zones: Vec<ZoneId> = Vec::new();
        let mut b = 0;
        while b < blocks {
            let (lba, run) = inode.extents.lookup(b);
            let n = run.min(blocks - b);
            let count = u32::try_from(n).map_err(|_| bug("a file of 2^32 blocks or more"))?;
            let start_lba = match lba {
                Some(lba) => {
                    let z = self.space.zone_of(lba);
                    if !zones.contains(&z) {
                        zones.push(z);
                    }
                    lba.get()
                }
                None => Extent::HOLE,
            };
            match extents.last_mut() {
                Some(e) if !e.is_hole() && e.start_lba + u64::from(e.lba_count) == start_lba => {
                    e.lba_count += count
                }
                _ => extents.push(Extent {
                    start_lba,
                    lba_count: count,
                }),
            }
            b += n;
        }
        for &z in &zones {
            self.space.pin(z);
        }
        let id = self.snapshots.open(zones);
        Ok(Snapshot {
            id,
            extents,
            file_size: attr.size,
        })
    }

    /// Ends snapshot `id`, open or reclaimed.
    pub(super) fn release_snapshot(&mut self, id: SnapshotId) -> Result<()> {
        for z in self.snapshots.close(id)? {
            self.space.unpin(z)?;
        }
        Ok(())
    }

    /// Drops the pins of the open snapshot that holds the most dead blocks no other snapshot
    /// holds (then the most dead blocks), so the cleaner can take its zones; false if no open
    /// snapshot pins a dead block.
    pub(super) fn reclaim_snapshot(&mut self) -> Result<bool> {
        let live = self.meta.live_per_zone();
        let best = self.snapshots.best_to_reclaim(
            |z| self.space.pins(z),
            |z| self.space.dead_blocks(z, live, |z| self.has_job(z)),
        );
        let Some(id) = best else {
            return Ok(false);
        };
        for z in self.snapshots.reclaim(id)? {
            self.space.unpin(z)?;
        }
        self.stats.snapshots_reclaimed += 1;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids count up from 1; a closed snapshot is gone, a reclaimed one answers
    /// SnapshotReclaimed until it is closed, and closing it gives no zones to unpin.
    #[test]
    fn open_close_reclaim() {
        let mut s = Snapshots::default();
        let a = s.open(vec![ZoneId(2)]);
        let b = s.open(vec![ZoneId(3), ZoneId(4)]);
        assert_eq!((a, b), (SnapshotId(1), SnapshotId(2)));
        assert_eq!(s.close(a).unwrap(), [ZoneId(2)]);
        assert!(matches!(s.check(a), Err(LfsError::InvalidArgument(_))));
        assert!(matches!(s.close(a), Err(LfsError::InvalidArgument(_))));
        assert_eq!(s.reclaim(b).unwrap(), [ZoneId(3), ZoneId(4)]);
        assert!(matches!(s.check(b), Err(LfsError::SnapshotReclaimed)));
        assert_eq!(s.close(b).unwrap(), []);
        assert!(matches!(s.check(b), Err(LfsError::InvalidArgument(_))));
        assert_eq!(s.open(Vec::new()), SnapshotId(3));
    }

    /// The snapshot to reclaim is the one holding the most dead blocks alone; none when no
    /// snapshot pins a dead block.
    #[test]
    fn best_to_reclaim_prefers_dead_blocks_held_alone() {
        let mut s = Snapshots::default();
        let shared = s.open(vec![ZoneId(2), ZoneId(3)]);
        let alone = s.open(vec![ZoneId(3), ZoneId(4)]);
        let pins = |z: ZoneId| if z == ZoneId(3) { 2 } else { 1 };
        let dead = |z: ZoneId| match z.0 {
            2 => 5,
            3 => 50,
            4 => 6,
            _ => 0,
        };
        assert_eq!(s.best_to_reclaim(pins, dead), Some(alone));
        s.reclaim(alone).unwrap();
        assert_eq!(s.best_to_reclaim(pins, dead), Some(shared));
        assert_eq!(s.best_to_reclaim(pins, |_| 0), None);
    }
}
