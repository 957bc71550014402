//! Zone Management Receive (zone reports) and Identify.

use alloc::vec::Vec;

use common::program::ProgramResources;
use common::zns::{IdentifyZns, ReportFilter, ZoneDescriptor, ZoneState};
use common::{Status, LBA_BYTES};

use crate::nand::Nand;

use super::manager::ZoneManager;

/// A Zone Management Receive answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneReport {
    /// With a partial report: the descriptors returned. Otherwise: every zone from the
    /// starting zone on that matches the filter (possibly more than returned).
    pub nr_zones: u64,
    /// The descriptors, in zone order, at most the requested number.
    pub descriptors: Vec<ZoneDescriptor>,
}

fn matches(filter: ReportFilter, state: ZoneState) -> bool {
    match filter {
        ReportFilter::All => true,
        ReportFilter::Empty => state == ZoneState::Empty,
        ReportFilter::ImplicitlyOpened => state == ZoneState::ImplicitlyOpened,
        ReportFilter::ExplicitlyOpened => state == ZoneState::ExplicitlyOpened,
        ReportFilter::Closed => state == ZoneState::Closed,
        ReportFilter::Full => state == ZoneState::Full,
        ReportFilter::ReadOnly => state == ZoneState::ReadOnly,
        ReportFilter::Offline => state == ZoneState::Offline,
    }
}

impl<N: Nand> ZoneManager<N> {
    /// Zone Management Receive: reports the zones matching `filter`, from the zone holding
    /// `slba` on, at most `max_descriptors` of them.
    pub fn report(
        &self,
        slba: u64,
        filter: ReportFilter,
        max_descriptors: u32,
        partial: bool,
    ) -> Result<ZoneReport, Status> {
        if self.dead {
            return Err(Status::CommandAborted);
        }
        if slba >= self.layout.nsze() {
            return Err(Status::LbaOutOfRange);
        }
        let first = self.layout.split(slba).0 as usize;
        let mut matched = 0u64;
        let mut descriptors = Vec::new();
        for i in first..self.zones.zones.len() {
            if !matches(filter, self.zones.zones[i].state) {
                continue;
            }
            matched += 1;
            if descriptors.len() < max_descriptors as usize {
                descriptors.push(self.zones.descriptor(&self.layout, i));
            } else if partial {
                break;
            }
        }
        let nr_zones = if partial {
            descriptors.len() as u64
        } else {
            matched
        };
        Ok(ZoneReport {
            nr_zones,
            descriptors,
        })
    }

    /// The descriptor of zone `zone`.
    pub fn zone(&self, zone: u32) -> Option<ZoneDescriptor> {
        (zone < self.layout.nr_zones).then(|| self.zones.descriptor(&self.layout, zone as usize))
    }

    /// Identify: geometry, zone size and capacity, limits. The zone manager runs no programs:
    /// [`IdentifyZns::programs`] is all zero here (the controller's Identify fills it in).
    pub fn identify(&self) -> IdentifyZns {
        let l = &self.layout;
        IdentifyZns {
            lba_bytes: LBA_BYTES,
            nsze_lbas: l.nsze(),
            zone_size_lbas: l.zone_size,
            zone_cap_lbas: l.zone_cap,
            nr_zones: l.nr_zones,
            max_open: l.config.max_open,
            max_active: l.config.max_active,
            zasl_lbas: l.config.zasl_lbas,
            mdts_lbas: l.config.mdts_lbas,
            volatile_write_cache: self.nand.volatile_cache(),
            cross_zone_read: l.config.cross_zone_read,
            nand: l.geometry.info(),
            programs: ProgramResources::default(),
        }
    }
}
