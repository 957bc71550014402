//! Zones for [`State`]: taking an empty zone for the stream, the cleaner or new data,
//! resetting and finishing zones on the device, and the cleaner, which moves a victim zone's
//! live blocks to the cold zone and lets the reset happen once the new map is durable.
//!
//! The choices (which zone is free, which is the victim, which may be reset) are
//! [`crate::space::Space`]'s; this module adds the jobs other parts give zones and does the device I/O.

use common::zns::ZoneAction;

use crate::error::{LfsError, Result};
use crate::extent::Run;
use crate::format::{ZoneUse, BLOCK_BYTES};
use crate::ids::ZoneId;
use crate::inode::InodeNo;
use crate::space::RESERVE_ZONES;
use crate::State;

impl State {
    /// Whether another part gives `zone` a job: the stream's chain, or the hot or cold zone.
    /// ([`crate::space::Space`] itself keeps the checkpoint zones and zones holding unmapped data.)
    pub(crate) fn has_job(&self, zone: ZoneId) -> bool {
        self.stream.holds(zone) || self.meta.is_active(zone)
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
