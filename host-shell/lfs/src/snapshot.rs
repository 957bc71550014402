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

use common::program::Extent;

use super::error::{bug, LfsError, Result};
use super::inode::{FileKind, InodeNo};
use super::{meta, State};

/// A file's blocks pinned for an offload: they stay valid until
/// [`crate::lfs::Lfs::release_snapshot`] unless writes need their space first
/// ([`crate::lfs::Lfs::check_snapshot`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub id: u64,
    /// In file order; their concatenation holds the file's first `file_size` bytes. A hole
    /// ([`Extent::HOLE`]) stands for blocks the file has never written, which read as zeros.
    pub extents: Vec<Extent>,
    pub file_size: u64,
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
        let mut zones: Vec<u32> = Vec::new();
        let mut b = 0;
        while b < blocks {
            let (lba, run) = inode.extents.lookup(b);
            let n = run.min(blocks - b);
            let count = u32::try_from(n).map_err(|_| bug("a file of 2^32 blocks or more"))?;
            let start_lba = match lba {
                Some(lba) => {
                    let z = self.meta.zone_of(lba);
                    if !zones.contains(&z) {
                        zones.push(z);
                    }
                    lba
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
            self.zones.pins[z as usize] += 1;
        }
        let id = self.next_snapshot;
        self.next_snapshot += 1;
        self.snapshots.insert(id, zones);
        Ok(Snapshot {
            id,
            extents,
            file_size: attr.size,
        })
    }

    /// Ends snapshot `id`, open or reclaimed.
    pub(super) fn release_snapshot(&mut self, id: u64) -> Result<()> {
        if self.reclaimed.remove(&id) {
            return Ok(());
        }
        let zones = self
            .snapshots
            .remove(&id)
            .ok_or(LfsError::InvalidArgument("no such snapshot"))?;
        self.unpin(&zones)
    }

    /// Whether snapshot `id` still holds its blocks.
    pub(super) fn check_snapshot(&self, id: u64) -> Result<()> {
        if self.snapshots.contains_key(&id) {
            Ok(())
        } else if self.reclaimed.contains(&id) {
            Err(LfsError::SnapshotReclaimed)
        } else {
            Err(LfsError::InvalidArgument("no such snapshot"))
        }
    }

    /// Drops the pins of the open snapshot that holds the most dead blocks no other snapshot
    /// holds (then the most dead blocks), so the cleaner can take its zones; false if no open
    /// snapshot pins a dead block (reclaiming one would disturb its offload for nothing).
    pub(super) fn reclaim_snapshot(&mut self) -> Result<bool> {
        let dead = |z: u32| {
            if self.is_special(z) {
                0
            } else {
                self.zones.wp[z as usize].saturating_sub(self.meta.live[z as usize])
            }
        };
        let best = self
            .snapshots
            .iter()
            .map(|(&id, zones)| {
                let alone: u64 = zones
                    .iter()
                    .filter(|&&z| self.zones.pins[z as usize] == 1)
                    .map(|&z| dead(z))
                    .sum();
                ((alone, zones.iter().map(|&z| dead(z)).sum::<u64>()), id)
            })
            .filter(|&((_, total), _)| total > 0)
            .max();
        let Some((_, id)) = best else {
            return Ok(false);
        };
        let zones = self
            .snapshots
            .remove(&id)
            .ok_or_else(|| bug("a snapshot vanished while being reclaimed"))?;
        self.unpin(&zones)?;
        self.reclaimed.insert(id);
        self.stats.snapshots_reclaimed += 1;
        Ok(true)
    }

    fn unpin(&mut self, zones: &[u32]) -> Result<()> {
        for &z in zones {
            let pins = &mut self.zones.pins[z as usize];
            *pins = pins
                .checked_sub(1)
                .ok_or_else(|| bug("a pin count went below zero"))?;
        }
        Ok(())
    }
}
