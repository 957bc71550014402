//! Space: what the file system knows of each zone (write pointer, snapshot pins), which zones
//! are free, which the cleaner should take next and which may be reset.
//!
//! Zones 0 and 1 hold the checkpoint log (superblock fields included); every other zone is
//! either empty, in the metadata stream's chain (the latest checkpoint's image and the log
//! since), the hot or cold data zone being appended to, or a data zone that is only read.
//! A data zone whose live count drops to zero is reset as soon as the metadata that stopped
//! referencing it is durable, unless it holds data whose map is not committed yet
//! ([`Space::hold_unmapped`]).
//!
//! [`Space`] owns the zone table; the jobs other parts give zones (the stream's chain, the
//! hot and cold zones) and the live counts (kept by [`crate::meta::Meta`] as the map changes)
//! are passed in by the caller, which composes them.

use std::collections::BTreeMap;

use common::zns::{ZoneDescriptor, ZoneState};

use crate::error::{bug, Result};
use crate::ids::{Lba, ZoneId};

/// Zones of the checkpoint log.
pub const CKPT_ZONES: [ZoneId; 2] = [ZoneId(0), ZoneId(1)];
/// Empty zones kept back from new file data, so the cleaner and the metadata stream can
/// always get a zone.
pub const RESERVE_ZONES: u64 = 2;
/// The smallest device the file system accepts.
pub const MIN_ZONES: u32 = 8;

/// The zone table and the zones' allocation state.
///
/// Invariants:
/// - `wp[z] <= cap` for every zone: LBAs written from the zone's start (`cap` once the zone
///   is full or finished).
/// - `pins[z]` is the number of open snapshots holding blocks in zone `z` (the caller pins
///   and unpins as snapshots open and close; it never goes below zero).
/// - A zone in `unmapped` is never free, reclaimable nor a victim: it holds data whose map
///   records are not committed yet, so its live count does not show that data.
/// - `clock` is at least every zone's `born` (it counts zones opened for data).
#[derive(Debug, Clone)]
pub struct Space {
    zone_lbas: u64,
    cap: u64,
    wp: Vec<u64>,
    pins: Vec<u32>,
    /// A stack: the cleaner can run inside a flush, and each level releases its own zones.
    unmapped: Vec<ZoneId>,
    clock: u64,
}

impl Space {
    /// `nr` zones of `zone_lbas` LBAs (`cap` writable), all empty (a new file system).
    pub fn new(zone_lbas: u64, cap: u64, nr: u32) -> Space {
        Space {
            zone_lbas,
            cap,
            wp: vec![0; nr as usize],
            pins: vec![0; nr as usize],
            unmapped: Vec::new(),
            clock: 0,
        }
    }

    /// The table from the device's zone report.
    pub fn from_report(zone_lbas: u64, cap: u64, report: &[ZoneDescriptor]) -> Space {
        let mut space = Space::new(zone_lbas, cap, report.len() as u32);
        for (wp, d) in space.wp.iter_mut().zip(report) {
            *wp = match d.state {
                ZoneState::Empty => 0,
                ZoneState::Full | ZoneState::ReadOnly | ZoneState::Offline => cap,
                _ => (d.wp - d.zslba).min(cap),
            };
        }
        space
    }

    /// Starts the zone clock at `clock` (the youngest zone's age after a replay).
    pub fn with_clock(mut self, clock: u64) -> Space {
        self.clock = clock;
        self
    }

    pub fn zone_lbas(&self) -> u64 {
        self.zone_lbas
    }

    /// Writable LBAs of each zone.
    pub fn cap(&self) -> u64 {
        self.cap
    }

    pub fn nr(&self) -> u32 {
        self.wp.len() as u32
    }

    /// Whether `zone` exists on the device.
    pub fn contains(&self, zone: ZoneId) -> bool {
        zone.index() < self.wp.len()
    }

    /// Every zone, in order.
    pub fn zones(&self) -> impl Iterator<Item = ZoneId> {
        ZoneId::all(self.nr())
    }

    /// The first LBA of `zone`.
    pub fn zslba(&self, zone: ZoneId) -> Lba {
        Lba(u64::from(zone.0) * self.zone_lbas)
    }

    /// The zone holding `lba`.
    pub fn zone_of(&self, lba: Lba) -> ZoneId {
        ZoneId((lba.get() / self.zone_lbas) as u32)
    }

    /// Blocks from the start of the zone holding `lba` to `lba`.
    pub fn offset_in_zone(&self, lba: Lba) -> u64 {
        lba.get() % self.zone_lbas
    }

    /// Where the next block appended to `zone` lands: its write pointer as an address.
    pub fn write_pointer(&self, zone: ZoneId) -> Lba {
        self.zslba(zone).offset(self.written(zone))
    }

    /// LBAs written from the zone's start.
    pub fn written(&self, zone: ZoneId) -> u64 {
        self.wp[zone.index()]
    }

    /// LBAs still writable in `zone`.
    pub fn room(&self, zone: ZoneId) -> u64 {
        self.cap - self.wp[zone.index()]
    }

    /// Open snapshots holding blocks in `zone`.
    pub fn pins(&self, zone: ZoneId) -> u32 {
        self.pins[zone.index()]
    }

    /// Records that `blocks` blocks landed at `lba` in `zone` (where the device put them).
    pub fn appended(&mut self, zone: ZoneId, lba: Lba, blocks: u64) -> Result<()> {
        let end = lba
            .since(self.zslba(zone))
            .map(|off| off + blocks)
            .filter(|&end| end <= self.cap)
            .ok_or_else(|| {
                bug(format!(
                    "{blocks} blocks at LBA {lba} are not in zone {zone}"
                ))
            })?;
        self.wp[zone.index()] = end;
        Ok(())
    }

    /// Records that `zone` was reset.
    pub fn was_reset(&mut self, zone: ZoneId) {
        self.wp[zone.index()] = 0;
    }

    /// Whether `zone` is partly written: a Finish gives back its active resource.
    pub fn needs_finish(&self, zone: ZoneId) -> bool {
        let wp = self.wp[zone.index()];
        wp > 0 && wp < self.cap
    }

    /// Records that `zone` was finished.
    pub fn was_finished(&mut self, zone: ZoneId) {
        self.wp[zone.index()] = self.cap;
    }

    /// One more open snapshot holds blocks in `zone`.
    pub fn pin(&mut self, zone: ZoneId) {
        self.pins[zone.index()] += 1;
    }

    /// One snapshot fewer holds blocks in `zone`.
    pub fn unpin(&mut self, zone: ZoneId) -> Result<()> {
        let pins = &mut self.pins[zone.index()];
        *pins = pins
            .checked_sub(1)
            .ok_or_else(|| bug("a pin count went below zero"))?;
        Ok(())
    }

    /// Where the unmapped stack stands now, for [`Space::release_unmapped`].
    pub fn unmapped_mark(&self) -> usize {
        self.unmapped.len()
    }

    /// Keeps `zone` from being freed, reset or cleaned: it holds data whose map records are
    /// not committed yet.
    pub fn hold_unmapped(&mut self, zone: ZoneId) {
        if !self.unmapped.contains(&zone) {
            self.unmapped.push(zone);
        }
    }

    /// Releases the zones held since `mark` (their map records are committed, or the write
    /// failed and nothing maps into them).
    pub fn release_unmapped(&mut self, mark: usize) {
        self.unmapped.truncate(mark);
    }

    /// Ticks the zone clock for a zone opened for data; returns the zone's age stamp.
    pub fn open_tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Whether `zone` is kept from data by this table: a checkpoint zone, or one holding
    /// unmapped data. `has_job` in the methods below adds the other parts' jobs.
    pub fn held(&self, zone: ZoneId) -> bool {
        CKPT_ZONES.contains(&zone) || self.unmapped.contains(&zone)
    }

    /// Empty zones with no job.
    pub fn free_zones(&self, has_job: impl Fn(ZoneId) -> bool) -> Vec<ZoneId> {
        self.zones()
            .filter(|&z| self.wp[z.index()] == 0 && !self.held(z) && !has_job(z))
            .collect()
    }

    /// Written zones that hold nothing live (`live` per zone), no snapshot's blocks and have
    /// no job: a reset makes them free once the metadata is durable.
    pub fn reclaimable(&self, live: &[u64], has_job: impl Fn(ZoneId) -> bool) -> Vec<ZoneId> {
        self.zones()
            .filter(|&z| {
                let i = z.index();
                self.wp[i] > 0 && live[i] == 0 && self.pins[i] == 0 && !self.held(z) && !has_job(z)
            })
            .collect()
    }

    /// Blocks written to `zone` that are no longer live (0 for a zone with a job).
    pub fn dead_blocks(&self, zone: ZoneId, live: &[u64], has_job: impl Fn(ZoneId) -> bool) -> u64 {
        if self.held(zone) || has_job(zone) {
            0
        } else {
            self.wp[zone.index()].saturating_sub(live[zone.index()])
        }
    }

    /// The zone the cleaner should clean next, if any holds reclaimable space: the highest
    /// `(1 - u) * age / (1 + u)` (the LFS paper's cost-benefit), where `u` is the fraction of
    /// the zone's capacity still live and `age` counts zones opened since this one was
    /// (`born`). Pinned zones and zones with a job are never victims.
    pub fn pick_victim(
        &self,
        live: &[u64],
        born: &BTreeMap<ZoneId, u64>,
        has_job: impl Fn(ZoneId) -> bool,
    ) -> Option<ZoneId> {
        let cap = self.cap as f64;
        let mut best: Option<(f64, ZoneId)> = None;
        for z in self.zones() {
            let i = z.index();
            if self.wp[i] == 0 || self.pins[i] > 0 || self.held(z) || has_job(z) {
                continue;
            }
            if live[i] >= self.cap {
                continue;
            }
            let u = live[i] as f64 / cap;
            let born = born.get(&z).copied().unwrap_or(0);
            let age = (self.clock.saturating_sub(born) + 1) as f64;
            let score = (1.0 - u) * age / (1.0 + u);
            if best.is_none_or(|(s, _)| score > s) {
                best = Some((score, z));
            }
        }
        best.map(|(_, z)| z)
    }

    /// Blocks of data the file system admits: the zones for data minus the reserve, the two
    /// active data zones and room for the metadata stream (twice the image and two zones).
    pub fn capacity_blocks(&self, image_blocks: u64) -> u64 {
        let zones = u64::from(self.nr()) - CKPT_ZONES.len() as u64 - RESERVE_ZONES - 2;
        let meta = 2 * self.cap + 2 * image_blocks;
        (zones * self.cap).saturating_sub(meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> Space {
        Space::new(64, 60, 8)
    }

    fn no_job(_: ZoneId) -> bool {
        false
    }

    /// Checkpoint zones, zones with a job and zones holding unmapped data are never free;
    /// releasing the unmapped stack to a mark frees what was held after it.
    #[test]
    fn free_zones_skip_held_zones() {
        let mut s = space();
        assert_eq!(
            s.free_zones(no_job),
            ZoneId::all(8).skip(2).collect::<Vec<_>>()
        );
        let mark = s.unmapped_mark();
        s.hold_unmapped(ZoneId(3));
        s.hold_unmapped(ZoneId(3));
        let free = s.free_zones(|z| z == ZoneId(4));
        assert_eq!(free, [ZoneId(2), ZoneId(5), ZoneId(6), ZoneId(7)]);
        s.release_unmapped(mark);
        assert!(s.free_zones(no_job).contains(&ZoneId(3)));
    }

    /// A written zone with nothing live is reclaimable unless a snapshot pins it; pins never
    /// go below zero.
    #[test]
    fn reclaimable_respects_pins() {
        let mut s = space();
        s.appended(ZoneId(2), s.zslba(ZoneId(2)), 10).unwrap();
        s.appended(ZoneId(3), s.zslba(ZoneId(3)), 10).unwrap();
        let mut live = vec![0; 8];
        live[3] = 4;
        assert_eq!(s.reclaimable(&live, no_job), [ZoneId(2)]);
        s.pin(ZoneId(2));
        assert!(s.reclaimable(&live, no_job).is_empty());
        s.unpin(ZoneId(2)).unwrap();
        assert_eq!(s.reclaimable(&live, no_job), [ZoneId(2)]);
        assert!(s.unpin(ZoneId(2)).is_err());
    }

    /// The victim is the emptiest zone among equally old ones, and an older zone wins over
    /// a younger one with as much dead space; full, pinned and held zones are skipped.
    #[test]
    fn victim_by_cost_benefit() {
        let mut s = space();
        for z in 2..6 {
            s.appended(ZoneId(z), s.zslba(ZoneId(z)), 60).unwrap();
        }
        let live = vec![0, 0, 50, 30, 60, 30, 0, 0];
        let mut born = BTreeMap::new();
        for z in 2..6 {
            born.insert(ZoneId(z), 1);
        }
        s.open_tick();
        s.open_tick();
        assert_eq!(s.pick_victim(&live, &born, no_job), Some(ZoneId(3)));
        born.insert(ZoneId(3), 2);
        assert_eq!(s.pick_victim(&live, &born, no_job), Some(ZoneId(5)));
        s.pin(ZoneId(5));
        s.hold_unmapped(ZoneId(3));
        assert_eq!(s.pick_victim(&live, &born, no_job), Some(ZoneId(2)));
        assert_eq!(s.pick_victim(&live, &born, |z| z == ZoneId(2)), None);
    }

    /// Appends move the write pointer to where the device put the data; an LBA outside the
    /// zone is a bug, not a write pointer past the capacity.
    #[test]
    fn appended_tracks_the_write_pointer() {
        let mut s = space();
        let z = ZoneId(4);
        s.appended(z, s.zslba(z).offset(5), 3).unwrap();
        assert_eq!((s.written(z), s.room(z)), (8, 52));
        assert_eq!(s.write_pointer(z), Lba(4 * 64 + 8));
        assert_eq!(s.zone_of(s.write_pointer(z)), z);
        assert_eq!(s.offset_in_zone(s.write_pointer(z)), 8);
        assert!(s.needs_finish(z));
        assert!(s.appended(z, s.zslba(z).offset(59), 2).is_err());
        assert!(s.appended(z, Lba(s.zslba(z).get() - 1), 1).is_err());
        s.was_finished(z);
        assert_eq!(s.room(z), 0);
        s.was_reset(z);
        assert_eq!(s.written(z), 0);
    }
}
