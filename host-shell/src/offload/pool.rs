//! The pool of program slots and memory range sets, and the leases it hands out.

use common::program::{ProgramResources, ProgramSlot, RangeSetId};

use super::{lock, Engine};
use crate::driver::DriverError;

/// The slots and range sets no lease holds.
#[derive(Debug)]
pub(super) struct Pool {
    free_slots: Vec<ProgramSlot>,
    free_sets: Vec<RangeSetId>,
}

impl Pool {
    /// Every slot and range set the device has, lowest ids handed out first.
    pub(super) fn new(resources: &ProgramResources) -> Pool {
        Pool {
            free_slots: (0..resources.slots).rev().map(ProgramSlot).collect(),
            free_sets: (0..resources.range_sets).rev().map(RangeSetId).collect(),
        }
    }
}

/// A program slot and a memory range set taken from the pool, and what the device holds in
/// them (so a run loads or defines only what it does not hold yet). Give it back with
/// [`Engine::release`].
#[derive(Debug)]
pub struct Lease {
    pub(super) slot: ProgramSlot,
    pub(super) set: RangeSetId,
    /// The fingerprint of the kernel loaded and active in the slot.
    pub(super) loaded: Option<u64>,
    /// The [`super::Ranges`] (by id) the range set is defined with.
    pub(super) defined: Option<u64>,
}

impl Lease {
    /// The program slot.
    pub fn slot(&self) -> ProgramSlot {
        self.slot
    }

    /// The memory range set.
    pub fn range_set(&self) -> RangeSetId {
        self.set
    }
}

/// Every program slot or every range set is leased.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("all device program slots or range sets are in use")]
pub struct Busy;

impl Engine {
    /// A free slot and range set.
    pub fn lease(&self) -> Result<Lease, Busy> {
        let mut pool = lock(&self.pool);
        if pool.free_slots.is_empty() || pool.free_sets.is_empty() {
            return Err(Busy);
        }
        let (Some(slot), Some(set)) = (pool.free_slots.pop(), pool.free_sets.pop()) else {
            return Err(Busy);
        };
        Ok(Lease {
            slot,
            set,
            loaded: None,
            defined: None,
        })
    }

    /// Deactivates the lease's slot and gives the slot and range set back to the pool, also
    /// when the device refuses the deactivation (the error is returned for the caller to
    /// report).
    pub fn release(&self, lease: Lease) -> Result<(), DriverError> {
        let deactivated = self.driver.activate(lease.slot, false);
        let mut pool = lock(&self.pool);
        pool.free_slots.push(lease.slot);
        pool.free_sets.push(lease.set);
        deactivated
    }
}
