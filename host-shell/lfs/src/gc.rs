//! The cleaner: picks a victim zone by cost-benefit, moves its live blocks to the cold zone,
//! and lets the reset happen once the new map is durable.
//!
//! Victim choice follows the LFS paper: the zone with the highest `(1 - u) * age / (1 + u)`,
//! where `u` is the fraction of the zone's capacity still live and `age` counts zones opened
//! since this one was. Zones that are hot, cold, in the metadata chain, in the checkpoint log
//! or hold blocks of an open snapshot are never victims.

use super::error::Result;
use super::format::ZoneUse;
use super::inode::InodeNo;
use super::State;

impl State {
    /// The zone the cleaner would clean next, if any holds reclaimable space.
    pub(super) fn pick_victim(&self) -> Option<u32> {
        let cap = self.zones.cap as f64;
        let mut best: Option<(f64, u32)> = None;
        for z in 0..self.zones.nr() {
            let i = z as usize;
            if self.zones.wp[i] == 0 || self.zones.pins[i] > 0 || self.is_special(z) {
                continue;
            }
            let live = self.meta.live[i];
            if live >= self.zones.cap {
                continue;
            }
            let u = live as f64 / cap;
            let born = self.meta.born.get(&z).copied().unwrap_or(0);
            let age = (self.clock.saturating_sub(born) + 1) as f64;
            let score = (1.0 - u) * age / (1.0 + u);
            if best.is_none_or(|(s, _)| score > s) {
                best = Some((score, z));
            }
        }
        best.map(|(_, z)| z)
    }

    /// Cleans one zone: moves its live blocks, makes the move durable and resets it. False if
    /// no zone has reclaimable space.
    pub(super) fn clean_one(&mut self) -> Result<bool> {
        let Some(victim) = self.pick_victim() else {
            return Ok(false);
        };
        let start = self.zones.zslba(victim);
        let end = start + self.zones.zone_lbas;
        // Live extents in the victim: (inode, file block, lba, count).
        let mut moves: Vec<(InodeNo, u64, u64, u64)> = Vec::new();
        for (ino, inode) in &self.meta.inodes {
            for (fb, run) in inode.extents.iter() {
                if run.lba >= start && run.lba < end {
                    moves.push((*ino, fb, run.lba, run.count));
                }
            }
        }
        moves.sort_by_key(|m| m.2);
        for (ino, file_block, lba, count) in moves {
            let data = self.device.read(lba, count)?;
            self.stats.gc_moved_blocks += count;
            self.write_mapped(
                ZoneUse::Cold,
                ino,
                &[(file_block, data)],
                Vec::new(),
                Vec::new(),
            )?;
        }
        debug_assert_eq!(self.meta.live[victim as usize], 0);
        // Durable first; the flush then resets the victim (and any other empty zone).
        self.flush_log()?;
        self.stats.gc_zones += 1;
        Ok(true)
    }
}
