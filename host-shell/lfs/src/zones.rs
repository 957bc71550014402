//! Zones for [`State`]: taking an empty zone for the stream, the cleaner or new data,
//! resetting and finishing zones on the device, and the cleaner, which moves a victim zone's
//! live blocks to the cold zone and lets the reset happen once the new map is durable.
//!
//! The choices (which zone is free, which is the victim, which may be reset) are
//! [`crate::space::Space`]'s; this module adds the jobs other parts give zones and does the device I/O.
//! [`ZoneUsage`] is what the file system keeps in each zone, for pictures of the device
//! (`csd zone map`).

use common::zns::ZoneAction;

use crate::error::{LfsError, Result};
use crate::extent::Run;
use crate::format::{ZoneUse, BLOCK_BYTES};
use crate::ids::ZoneId;
use crate::inode::InodeNo;
use crate::space::{CKPT_ZONES, RESERVE_ZONES};
use crate::State;

/// What a zone is for, as the file system uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ZoneRole {
    /// Zones 0 and 1: the checkpoint log.
    Checkpoint,
    /// In the metadata stream's chain: the latest checkpoint's image and the log since.
    Metadata,
    /// The zone new file data is appended to.
    Hot,
    /// The zone the cleaner moves live data to.
    Cold,
    /// Written with file data (some or all of it may be dead); only read now.
    Data,
    /// Empty, with no job.
    Free,
}

impl ZoneRole {
    /// The role's name in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ZoneRole::Checkpoint => "checkpoint",
            ZoneRole::Metadata => "metadata",
            ZoneRole::Hot => "hot",
            ZoneRole::Cold => "cold",
            ZoneRole::Data => "data",
            ZoneRole::Free => "free",
        }
    }
}

/// What the file system keeps in one zone ([`crate::Lfs::zone_usage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZoneUsage {
    pub zone: ZoneId,
    pub role: ZoneRole,
    /// Blocks of file data the file system maps into the zone (its valid data); 0 for the
    /// checkpoint and metadata zones, whose blocks are metadata.
    pub live_blocks: u64,
}

impl State {
    /// Whether another part gives `zone` a job: the stream's chain, or the hot or cold zone.
    /// ([`crate::space::Space`] itself keeps the checkpoint zones and zones holding unmapped data.)
    pub(crate) fn has_job(&self, zone: ZoneId) -> bool {
        self.stream.holds(zone) || self.meta.is_active(zone)
    }

    /// Each zone's role and live data blocks, in zone order.
    pub(crate) fn zone_usage(&self) -> Vec<ZoneUsage> {
        self.space
            .zones()
            .map(|zone| {
                let role = if CKPT_ZONES.contains(&zone) {
                    ZoneRole::Checkpoint
                } else if self.stream.holds(zone) {
                    ZoneRole::Metadata
                } else if self.meta.hot() == Some(zone) {
                    ZoneRole::Hot
                } else if self.meta.cold() == Some(zone) {
                    ZoneRole::Cold
                } else if self.space.written(zone) > 0 {
                    ZoneRole::Data
                } else {
                    ZoneRole::Free
                };
                ZoneUsage {
                    zone,
                    role,
                    live_blocks: self.meta.live(zone),
                }
            })
            .collect()
    }

    /// Empty zones with no job.
    pub(crate) fn free_zones(&self) -> Vec<ZoneId> {
        self.space.free_zones(|z| self.has_job(z))
    }

    /// Written zones that hold nothing live, no snapshot's blocks and have no job: a reset
    /// makes them free once the metadata is durable.
    pub(crate) fn reclaimable_zones(&self) -> Vec<ZoneId> {
        self.space
            .reclaimable(self.meta.live_per_zone(), |z| self.has_job(z))
    }

    /// The zone the cleaner would clean next, if any holds reclaimable space.
    pub(crate) fn pick_victim(&self) -> Option<ZoneId> {
        self.space
            .pick_victim(self.meta.live_per_zone(), self.meta.born(), |z| {
                self.has_job(z)
            })
    }

    /// Resets `zone` on the device, once what made it dead is durable.
    pub(crate) fn reset_zone(&mut self, zone: ZoneId) -> Result<()> {
        self.durable.sync(&*self.device)?;
        self.zone_action(zone, ZoneAction::Reset)?;
        self.space.was_reset(zone);
        self.stats.zone_resets += 1;
        Ok(())
    }

    /// Finishes `zone` (gives back its active resource) if it is partly written.
    pub(crate) fn finish_zone(&mut self, zone: ZoneId) -> Result<()> {
        if self.space.needs_finish(zone) {
            self.zone_action(zone, ZoneAction::Finish)?;
            self.space.was_finished(zone);
        }
        Ok(())
    }

    /// An empty zone for the metadata stream or the cleaner (which may use the reserve).
    pub(crate) fn take_reserved_zone(&mut self) -> Result<ZoneId> {
        self.free_zones().first().copied().ok_or(LfsError::NoSpace)
    }

    /// An empty zone for new file data: cleans first while the reserve would be touched, and
    /// reclaims offload snapshots when only the zones they pin would make room (admission
    /// counted that room as free).
    pub(crate) fn take_user_zone(&mut self) -> Result<ZoneId> {
        loop {
            // Bounded: each step frees a zone unless the victims are nearly full.
            for _ in 0..2 * self.space.nr() {
                if (self.free_zones().len() as u64) > RESERVE_ZONES || !self.clean_one()? {
                    break;
                }
            }
            if (self.free_zones().len() as u64) > RESERVE_ZONES {
                return self.take_reserved_zone();
            }
            if !self.reclaim_snapshot()? {
                return Err(LfsError::NoSpace);
            }
        }
    }

    /// Blocks of data the file system admits ([`crate::space::Space::capacity_blocks`]).
    pub(crate) fn capacity_blocks(&self) -> u64 {
        self.space.capacity_blocks(self.stream.image_blocks())
    }

    /// Live data blocks, counting dirty blocks not yet on the device.
    pub(crate) fn used_blocks(&self) -> u64 {
        #[cfg(debug_assertions)]
        {
            // The buffers' running count against counting afresh.
            let unmapped = |(ino, d): (_, &crate::buffers::Dirty)| {
                let inode = self.meta.inode(ino);
                let fresh = |b: &&u64| inode.is_some_and(|i| i.extents.lookup(**b).0.is_none());
                d.blocks.keys().filter(fresh).count() as u64
            };
            let counted: u64 = self.buffers.iter().map(unmapped).sum();
            debug_assert_eq!(counted, self.buffers.fresh_blocks());
        }
        self.meta.live_total() + self.buffers.fresh_blocks()
    }

    /// Moves the blocks of `ino` from `file_block` that are still where `run` says (their bytes
    /// read from there as `data`, maybe while the lock was let go) to the cold zone; blocks
    /// rewritten, cut or freed since are left alone. Returns the blocks moved.
    pub(crate) fn move_run(
        &mut self,
        ino: InodeNo,
        file_block: u64,
        run: Run,
        data: &[u8],
    ) -> Result<u64> {
        let Some(inode) = self.meta.inode(ino) else {
            return Ok(0);
        };
        // Stretches of the run still mapped where they were read: (index in the run, count).
        let mut still: Vec<(u64, u64)> = Vec::new();
        for i in 0..run.count {
            if inode.extents.lookup(file_block + i).0 != Some(run.lba.offset(i)) {
                continue;
            }
            match still.last_mut() {
                Some((at, n)) if *at + *n == i => *n += 1,
                _ => still.push((i, 1)),
            }
        }
        let mut moved = 0;
        for (at, n) in still {
            let bytes = &data[at as usize * BLOCK_BYTES..(at + n) as usize * BLOCK_BYTES];
            let runs = [(file_block + at, n)];
            self.write_mapped(ZoneUse::Cold, ino, &runs, bytes, Vec::new(), Vec::new())?;
            moved += n;
        }
        self.stats.gc_moved_blocks += moved;
        Ok(moved)
    }

    /// Cleans one zone: moves its live blocks, makes the move durable and resets it. False if
    /// no zone has reclaimable space. (Writers that run out of room clean with this, the lock
    /// held throughout; the background cleaner uses [`crate::Lfs::gc_step`], which reads the
    /// blocks it moves with the lock let go.)
    pub(super) fn clean_one(&mut self) -> Result<bool> {
        let Some(victim) = self.pick_victim() else {
            return Ok(false);
        };
        // The victim's live extents, in device order.
        for (ino, file_block, run) in self.meta.runs_in(victim) {
            let data = self.device.read(run.lba.get(), run.count)?;
            self.move_run(ino, file_block, run, &data)?;
        }
        debug_assert_eq!(self.meta.live(victim), 0);
        // Durable first; the flush then resets the victim (and any other empty zone).
        self.flush_log()?;
        self.stats.gc_zones += 1;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use firmware::nand::sim::SimNand;
    use firmware::zns::{ZoneConfig, ZoneManager};

    use super::{ZoneRole, ZoneUsage};
    use crate::format::BLOCK_BYTES;
    use crate::inode::InodeNo;
    use crate::zoned::Direct;
    use crate::Lfs;

    fn live(usage: &[ZoneUsage]) -> Vec<u64> {
        usage.iter().map(|u| u.live_blocks).collect()
    }

    fn with_role(usage: &[ZoneUsage], role: ZoneRole) -> Vec<u32> {
        usage
            .iter()
            .filter(|u| u.role == role)
            .map(|u| u.zone.0)
            .collect()
    }

    /// A new file system holds no live data: zones 0 and 1 keep checkpoints, the metadata
    /// stream has a zone, the rest are free. A written file's blocks count in the hot zone,
    /// an overwrite leaves the count as it was (the old blocks are dead), and a remount
    /// rebuilds the same counts from media.
    #[test]
    fn zone_usage_counts_live_blocks_per_zone() {
        let geometry = testkit::geometry::small();
        let zones = ZoneConfig::for_geometry(&geometry);
        let manager = ZoneManager::format(SimNand::new(geometry), zones).expect("format");
        let device = Direct::new(manager);
        Lfs::mkfs(&device, 0, 0).expect("mkfs");
        let lfs = Lfs::mount(&device).expect("mount");
        let fresh = lfs.zone_usage().expect("usage");
        assert_eq!(fresh.len(), lfs.lock().expect("lock").space.nr() as usize);
        assert_eq!(with_role(&fresh, ZoneRole::Checkpoint), [0, 1]);
        assert_eq!(with_role(&fresh, ZoneRole::Metadata).len(), 1, "{fresh:?}");
        assert!(with_role(&fresh, ZoneRole::Hot).is_empty(), "{fresh:?}");
        assert!(live(&fresh).iter().all(|&n| n == 0), "{fresh:?}");

        let ino = lfs
            .create(InodeNo::ROOT, b"f", 0o644, 0, 0)
            .expect("create")
            .ino;
        lfs.write(ino, 0, &vec![7u8; 40 * BLOCK_BYTES])
            .expect("write");
        lfs.fsync(ino, false).expect("fsync");
        lfs.write(ino, 0, &vec![9u8; 10 * BLOCK_BYTES])
            .expect("overwrite");
        lfs.fsync(ino, false).expect("fsync");
        let written = lfs.zone_usage().expect("usage");
        let hot = with_role(&written, ZoneRole::Hot);
        assert_eq!(hot.len(), 1, "{written:?}");
        assert_eq!(written[hot[0] as usize].live_blocks, 40, "{written:?}");
        assert_eq!(live(&written).iter().sum::<u64>(), 40, "{written:?}");
        assert_eq!(
            lfs.lock()
                .expect("lock")
                .space
                .written(written[hot[0] as usize].zone),
            50,
            "the overwritten blocks are still in the zone, dead"
        );
        lfs.unmount().expect("unmount");

        let lfs = Lfs::mount(&device).expect("remount");
        let again = lfs.zone_usage().expect("usage");
        assert_eq!(live(&again), live(&written));
        assert_eq!(with_role(&again, ZoneRole::Hot), hot);
        lfs.unmount().expect("unmount");
    }
}
