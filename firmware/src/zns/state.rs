//! The zone table in RAM and the NVMe ZNS state machine over it (no I/O).
//!
//! Transitions follow the specification as QEMU's `hw/nvme` implements them: an implicit open
//! (a write to an Empty or Closed zone) or an explicit open first closes the *oldest
//! implicitly opened* zone when the open limit is reached, then checks the active limit
//! (Too Many Active Zones) and the open limit (Too Many Open Zones). Explicitly opened zones
//! are never closed behind the host's back.

use alloc::vec;
use alloc::vec::Vec;

use common::zns::{ZoneDescriptor, ZoneState, ZoneType, ZONE_ATTR_FINISHED_BY_CONTROLLER};
use common::Status;

use crate::nand::BlockId;

use super::checkpoint::ZoneMeta;
use super::config::Layout;

/// One zone in RAM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Zone {
    /// The ZNS state.
    pub state: ZoneState,
    /// Generation and condition, as the checkpoint holds them.
    pub meta: ZoneMeta,
    /// LBAs holding data: offsets `0..written` (the write pointer of a writable zone).
    pub written: u64,
    /// The block bound to each slot, once the slot's first page was written.
    pub slots: Vec<Option<BlockId>>,
    /// When the zone was last opened implicitly (larger is newer).
    pub opened_at: u64,
    /// The device finished the zone itself (after a torn write).
    pub finished_by_controller: bool,
}

impl Zone {
    /// An empty zone with `slots` unbound slots.
    pub fn empty(meta: ZoneMeta, slots: usize) -> Self {
        Zone {
            state: ZoneState::Empty,
            meta,
            written: 0,
            slots: vec![None; slots],
            opened_at: 0,
            finished_by_controller: false,
        }
    }

    /// Whether the zone holds an open resource.
    pub fn is_open(&self) -> bool {
        matches!(
            self.state,
            ZoneState::ImplicitlyOpened | ZoneState::ExplicitlyOpened
        )
    }

    /// Whether the zone holds an active resource.
    pub fn is_active(&self) -> bool {
        self.is_open() || self.state == ZoneState::Closed
    }
}

/// All zones plus the open/active bookkeeping.
#[derive(Clone, Debug)]
pub struct Zones {
    /// Per zone.
    pub zones: Vec<Zone>,
    max_open: u32,
    max_active: u32,
    clock: u64,
}

impl Zones {
    /// A table over `zones` with the limits of `layout`.
    pub fn new(layout: &Layout, zones: Vec<Zone>) -> Self {
        Zones {
            zones,
            max_open: layout.config.max_open,
            max_active: layout.config.max_active,
            clock: 0,
        }
    }

    fn nr_open(&self) -> u32 {
        self.zones.iter().filter(|z| z.is_open()).count() as u32
    }

    fn nr_active(&self) -> u32 {
        self.zones.iter().filter(|z| z.is_active()).count() as u32
    }

    /// Checks that `act` more active and `opn` more open zones fit.
    pub fn check_resources(&self, act: u32, opn: u32) -> Result<(), Status> {
        if self.max_active != 0 && self.nr_active() + act > self.max_active {
            return Err(Status::TooManyActiveZones);
        }
        if self.max_open != 0 && self.nr_open() + opn > self.max_open {
            return Err(Status::TooManyOpenZones);
        }
        Ok(())
    }

    /// At the open limit, closes the oldest implicitly opened zone (if any).
    fn auto_close(&mut self) {
        if self.max_open == 0 || self.nr_open() < self.max_open {
            return;
        }
        let oldest = self
            .zones
            .iter_mut()
            .filter(|z| z.state == ZoneState::ImplicitlyOpened)
            .min_by_key(|z| z.opened_at);
        if let Some(z) = oldest {
            z.state = ZoneState::Closed;
        }
    }

    /// Opens zone `i` for a write (implicitly) or for an Open action (explicitly).
    pub fn open(&mut self, i: usize, explicit: bool) -> Result<(), Status> {
        let state = self.zones[i].state;
        match state {
            ZoneState::Empty | ZoneState::Closed => {
                self.auto_close();
                let act = u32::from(state == ZoneState::Empty);
                self.check_resources(act, 1)?;
                self.clock += 1;
                let z = &mut self.zones[i];
                z.opened_at = self.clock;
                z.state = if explicit {
                    ZoneState::ExplicitlyOpened
                } else {
                    ZoneState::ImplicitlyOpened
                };
                Ok(())
            }
            ZoneState::ImplicitlyOpened if explicit => {
                self.zones[i].state = ZoneState::ExplicitlyOpened;
                Ok(())
            }
            ZoneState::ImplicitlyOpened | ZoneState::ExplicitlyOpened => Ok(()),
            _ => Err(Status::InvalidZoneStateTransition),
        }
    }

    /// Closes zone `i` (open -> Closed; Closed stays Closed).
    pub fn close(&mut self, i: usize) -> Result<(), Status> {
        let z = &mut self.zones[i];
        match z.state {
            ZoneState::ImplicitlyOpened | ZoneState::ExplicitlyOpened | ZoneState::Closed => {
                z.state = ZoneState::Closed;
                Ok(())
            }
            _ => Err(Status::InvalidZoneStateTransition),
        }
    }

    /// Whether Finish is allowed from zone `i`'s state (and changes something).
    pub fn finish_needed(&self, i: usize) -> Result<bool, Status> {
        match self.zones[i].state {
            ZoneState::Full => Ok(false),
            ZoneState::ReadOnly | ZoneState::Offline => Err(Status::InvalidZoneStateTransition),
            _ => Ok(true),
        }
    }

    /// Whether Reset is allowed from zone `i`'s state (and changes something).
    pub fn reset_needed(&self, i: usize) -> Result<bool, Status> {
        match self.zones[i].state {
            ZoneState::Empty => Ok(false),
            ZoneState::ReadOnly | ZoneState::Offline => Err(Status::InvalidZoneStateTransition),
            _ => Ok(true),
        }
    }

    /// Whether Offline is allowed from zone `i`'s state (and changes something).
    pub fn offline_needed(&self, i: usize) -> Result<bool, Status> {
        match self.zones[i].state {
            ZoneState::ReadOnly => Ok(true),
            ZoneState::Offline => Ok(false),
            _ => Err(Status::InvalidZoneStateTransition),
        }
    }

    /// The descriptor of zone `i`.
    pub fn descriptor(&self, layout: &Layout, i: usize) -> ZoneDescriptor {
        let z = &self.zones[i];
        let zslba = layout.zslba(i as u32);
        let wp = match z.state {
            ZoneState::Full => zslba + layout.zone_cap,
            ZoneState::Offline => zslba,
            _ => zslba + z.written,
        };
        ZoneDescriptor {
            zone_type: ZoneType::SequentialWriteRequired,
            state: z.state,
            attrs: if z.finished_by_controller {
                ZONE_ATTR_FINISHED_BY_CONTROLLER
            } else {
                0
            },
            zcap: layout.zone_cap,
            zslba,
            wp,
        }
    }
}
