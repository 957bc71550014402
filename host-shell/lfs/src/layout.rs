//! Which zones do what, and the space they hold.
//!
//! Zones 0 and 1 hold the checkpoint log (superblock fields included); every other zone is
//! either empty, in the metadata stream's chain (the latest checkpoint's image and the log
//! since), the hot or cold data zone being appended to, or a data zone that is only read.
//! A data zone whose live count drops to zero is reset as soon as the metadata that stopped
//! referencing it is durable, unless it holds data whose map is not committed yet
//! ([`State::write_mapped`]).

use common::zns::{ZoneAction, ZoneDescriptor, ZoneState};

use super::error::{LfsError, Result};
use super::State;

/// Zones of the checkpoint log.
pub const CKPT_ZONES: [u32; 2] = [0, 1];
/// Empty zones kept back from new file data, so the cleaner and the metadata stream can
/// always get a zone.
pub const RESERVE_ZONES: u64 = 2;
/// The smallest device the file system accepts.
pub const MIN_ZONES: u32 = 8;

/// What the file system knows of each zone's write pointer and pins.
#[derive(Debug, Clone)]
pub struct Zones {
    pub zone_lbas: u64,
    pub cap: u64,
    /// LBAs written from each zone's start (`cap` once the zone is full or finished).
    pub wp: Vec<u64>,
    /// Open snapshots holding blocks in each zone.
    pub pins: Vec<u32>,
}

impl Zones {
    /// The table from the device's zone report.
    pub fn from_report(zone_lbas: u64, cap: u64, report: &[ZoneDescriptor]) -> Zones {
        let wp = report
            .iter()
            .map(|d| match d.state {
                ZoneState::Empty => 0,
                ZoneState::Full | ZoneState::ReadOnly | ZoneState::Offline => cap,
                _ => (d.wp - d.zslba).min(cap),
            })
            .collect::<Vec<_>>();
        let pins = vec![0; wp.len()];
        Zones {
            zone_lbas,
            cap,
            wp,
            pins,
        }
    }

    pub fn nr(&self) -> u32 {
        self.wp.len() as u32
    }

    pub fn zslba(&self, zone: u32) -> u64 {
        u64::from(zone) * self.zone_lbas
    }

    pub fn room(&self, zone: u32) -> u64 {
        self.cap - self.wp[zone as usize]
    }
}

impl State {
    /// Whether `zone` has a job besides holding data blocks, or holds data not mapped yet
    /// (see [`State::write_mapped`]).
    pub(super) fn is_special(&self, zone: u32) -> bool {
        CKPT_ZONES.contains(&zone)
            || self.stream.chain.contains(&zone)
            || self.meta.hot == Some(zone)
            || self.meta.cold == Some(zone)
            || self.unmapped.contains(&zone)
    }

    /// Empty zones with no job.
    pub(super) fn free_zones(&self) -> Vec<u32> {
        (0..self.zones.nr())
            .filter(|&z| self.zones.wp[z as usize] == 0 && !self.is_special(z))
            .collect()
    }

    /// Written zones that hold nothing live, no snapshot's blocks and have no job: a reset
    /// makes them free once the metadata is durable.
    pub(super) fn reclaimable_zones(&self) -> Vec<u32> {
        (0..self.zones.nr())
            .filter(|&z| {
                let i = z as usize;
                self.zones.wp[i] > 0
                    && self.meta.live[i] == 0
                    && self.zones.pins[i] == 0
                    && !self.is_special(z)
            })
            .collect()
    }

    /// Resets `zone` on the device, once what made it dead is durable.
    pub(super) fn reset_zone(&mut self, zone: u32) -> Result<()> {
        self.durable.sync(&*self.device)?;
        self.zone_action(zone, ZoneAction::Reset)?;
        self.zones.wp[zone as usize] = 0;
        self.stats.zone_resets += 1;
        Ok(())
    }

    /// Finishes `zone` (gives back its active resource) if it is partly written.
    pub(super) fn finish_zone(&mut self, zone: u32) -> Result<()> {
        let wp = self.zones.wp[zone as usize];
        if wp > 0 && wp < self.zones.cap {
            self.zone_action(zone, ZoneAction::Finish)?;
            self.zones.wp[zone as usize] = self.zones.cap;
        }
        Ok(())
    }

    /// An empty zone for the metadata stream or the cleaner (which may use the reserve).
    pub(super) fn take_reserved_zone(&mut self) -> Result<u32> {
        self.free_zones().first().copied().ok_or(LfsError::NoSpace)
    }

    /// An empty zone for new file data: cleans first while the reserve would be touched, and
    /// reclaims offload snapshots when only the zones they pin would make room (admission
    /// counted that room as free).
    pub(super) fn take_user_zone(&mut self) -> Result<u32> {
        loop {
            // Bounded: each step frees a zone unless the victims are nearly full.
            for _ in 0..2 * self.zones.nr() {
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

    /// Blocks of data the file system admits: the zones for data minus the reserve, the two
    /// active data zones and room for the metadata stream.
    pub(super) fn capacity_blocks(&self) -> u64 {
        let zones = u64::from(self.zones.nr()) - CKPT_ZONES.len() as u64 - RESERVE_ZONES - 2;
        let meta = 2 * self.zones.cap + 2 * self.stream.image_blocks;
        (zones * self.zones.cap).saturating_sub(meta)
    }

    /// Live data blocks, counting dirty blocks not yet on the device.
    pub(super) fn used_blocks(&self) -> u64 {
        let live: u64 = self.meta.live.iter().sum();
        live + self.dirty_new_blocks()
    }
}
