//! Durability: which writes the device has made durable, one shared Flush for concurrent
//! callers, and the halt after a device write fails.
//!
//! Every write the file system makes to the device bumps a generation when it completes. A
//! Flush covers every write that completed before it was sent, so [`Durability::sync`] reads
//! the generation, sends one Flush and records that generation as synced. Concurrent callers
//! (fsyncs of different files, released from the state lock) share it: a caller whose writes
//! a Flush already covered returns at once, and callers that queue behind a Flush in progress
//! are covered by the next one together (group commit). The device's Flush syncs its
//! volatile write cache: for an emulated device, the image file with `fdatasync`.
//!
//! A device write that fails (the host disk under the image is full or failing, or the device
//! stopped) leaves the file system's view of the device unsure, so it halts: every later
//! operation that would change the file system fails with [`LfsError::Halted`] (ENOSPC when
//! the device said Capacity Exceeded, EIO otherwise), while reads go on. What was fsync'ed
//! before is on the media; unmount, make room and mount again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use common::Status;

use super::error::{LfsError, Result};
use crate::zoned::{IoError, Zoned};

/// Why writes stopped.
#[derive(Debug, Clone)]
pub(crate) struct Halt {
    /// The device had no room (Capacity Exceeded).
    pub no_space: bool,
    /// The failure, as the device or driver reported it.
    pub cause: String,
}

/// The file system's durability state; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Durability {
    /// Device writes completed so far.
    written: AtomicU64,
    /// Writes the last completed Flush covered.
    synced: AtomicU64,
    /// Held while a Flush is in flight.
    flushing: Mutex<()>,
    halt: OnceLock<Halt>,
    /// Says once that writes stopped (the mount logs it in its daemon log).
    report: OnceLock<fn(&LfsError)>,
}

impl Durability {
    /// Err once writes have stopped.
    pub fn check(&self) -> Result<()> {
        match self.halt.get() {
            Some(h) => Err(LfsError::Halted {
                no_space: h.no_space,
                cause: h.cause.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Has `report` say that writes stopped (by default nothing is said: the write that failed
    /// returns the device's error, and later operations that change the file system fail
    /// with [`LfsError::Halted`]).
    pub fn report_with(&self, report: fn(&LfsError)) {
        let _ = self.report.set(report);
    }

    /// Whether writes have stopped.
    pub fn halted(&self) -> bool {
        self.halt.get().is_some()
    }

    /// Records a device write's outcome: a completed write bumps the generation, a failed
    /// one halts writes.
    pub fn wrote<T>(&self, result: std::result::Result<T, IoError>) -> Result<T> {
        match result {
            Ok(v) => {
                self.written.fetch_add(1, Ordering::AcqRel);
                Ok(v)
            }
            Err(e) => {
                self.stop(&e);
                Err(LfsError::Io(e))
            }
        }
    }

    fn stop(&self, e: &IoError) {
        let halt = Halt {
            no_space: e.status() == Some(Status::CapacityExceeded),
            cause: e.to_string(),
        };
        if self.halt.set(halt).is_ok() {
            if let (Err(halted), Some(report)) = (self.check(), self.report.get()) {
                report(&halted);
            }
        }
    }

    /// Device writes completed so far (a generation: [`Durability::covers`] takes it).
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// Whether a completed Flush covered every write up to generation `written`.
    pub fn covers(&self, written: u64) -> bool {
        self.synced.load(Ordering::Acquire) >= written
    }

    /// Makes every write completed before the call durable, with one Flush shared between
    /// concurrent callers (none if an earlier Flush covered them).
    pub fn sync(&self, device: &dyn Zoned) -> Result<()> {
        let target = self.written.load(Ordering::Acquire);
        if self.synced.load(Ordering::Acquire) >= target {
            return Ok(());
        }
        let _flushing = self
            .flushing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.synced.load(Ordering::Acquire) >= target {
            return Ok(());
        }
        self.check()?;
        let covered = self.written.load(Ordering::Acquire);
        if let Err(e) = device.flush() {
            self.stop(&e);
            return Err(LfsError::Io(e));
        }
        self.synced.fetch_max(covered, Ordering::AcqRel);
        Ok(())
    }
}
