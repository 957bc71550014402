//! Newtypes for the file system's numbers that name things: zones, device blocks and
//! snapshots. Each is the plain integer the media and the device use, so converting is
//! free; the types keep a zone from being passed where an LBA is meant.
//!
//! The [`crate::Zoned`] device trait keeps plain `u64` LBAs: the host driver and the zone
//! manager implement it with the device's own numbers, and [`Lba::get`] is the one place the
//! file system hands them over.

use std::fmt;

/// A zone, numbered from 0 in device order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ZoneId(pub u32);

impl ZoneId {
    /// The zone's index in per-zone tables.
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// Every zone of a device with `nr` zones, in order.
    pub fn all(nr: u32) -> impl Iterator<Item = ZoneId> {
        (0..nr).map(ZoneId)
    }
}

impl fmt::Display for ZoneId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A logical block address on the device: one file-system block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lba(pub u64);

impl Lba {
    /// The address as the device takes it.
    pub fn get(self) -> u64 {
        self.0
    }

    /// `n` blocks further on.
    pub fn offset(self, n: u64) -> Lba {
        Lba(self.0 + n)
    }

    /// Blocks from `start` to here; `None` if this address is before `start`.
    pub fn since(self, start: Lba) -> Option<u64> {
        self.0.checked_sub(start.0)
    }
}

impl fmt::Display for Lba {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An offload snapshot, numbered from 1 per mount ([`crate::Lfs::snapshot`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SnapshotId(pub u64);

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
