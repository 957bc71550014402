//! Reads outside the state lock, and the zone resets that wait for them.
//!
//! A read resolves where its blocks are under the state lock and reads them from the device
//! after letting it go, so readers do not wait for one another's transfers, nor for writers'
//! buffering. What it resolved stays readable until its transfer ends: blocks the cleaner moves
//! or a write supersedes keep their old copy (both copies hold the same bytes, or the read
//! came before the write) until their zone is reset, and a reset waits here for every read in
//! flight. A read enters before letting the state lock go, and a reset is only made with the
//! state lock held, so no read can start between a reset's wait and the reset.

use std::sync::{RwLock, RwLockReadGuard};

/// The gate between reads in flight and zone resets.
#[derive(Debug, Default)]
pub(crate) struct Reads(RwLock<()>);

/// A read in flight; resets wait until it is dropped.
pub(crate) struct InFlight<'a>(#[allow(dead_code)] RwLockReadGuard<'a, ()>);

impl Reads {
    /// Marks a read in flight. Call it with the state lock held.
    pub fn enter(&self) -> InFlight<'_> {
        InFlight(self.0.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Waits until no read is in flight. Call it with the state lock held, right before a reset.
    pub fn wait_idle(&self) {
        drop(self.0.write().unwrap_or_else(|p| p.into_inner()));
    }
}
