//! What the file system needs of a device: NVMe Zoned Namespace commands, as a trait.
//!
//! The host driver implements [`Zoned`] over a queue pair of a running device; the firmware's
//! zone manager implements it directly ([`Direct`], with the `zone-manager` feature), so tests
//! and power-loss sweeps run the file system without a device thread. Every method takes
//! `&self`: a device serves many callers.

use common::zns::{IdentifyZns, ReportFilter, ZoneAction, ZoneDescriptor};
use common::Status;

/// Why a device command failed.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The device completed the command with an error status.
    #[error("{command} failed: {status}")]
    Device {
        command: &'static str,
        status: Status,
    },
    #[error("the device has stopped")]
    Stopped,
    #[error("the device sent a malformed {0}")]
    Malformed(&'static str),
    /// The request could not be sent as asked (not whole blocks, past a limit).
    #[error("{0}")]
    Invalid(String),
}

impl IoError {
    /// The device status, if the device refused the command.
    pub fn status(&self) -> Option<Status> {
        match self {
            IoError::Device { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// What a host may send before the device sees it: the checks every [`Zoned`] makes the same
/// way, so a file system that passes them on one passes them on all.
pub mod check {
    use common::{zns::IdentifyZns, LBA_BYTES};

    use super::IoError;

    /// The blocks in `data`, which a write or an append must hold whole and not empty.
    pub fn whole_blocks(data: &[u8]) -> Result<u64, IoError> {
        if data.is_empty() || !data.len().is_multiple_of(LBA_BYTES as usize) {
            return Err(IoError::Invalid(format!(
                "{} bytes is not a whole number of {LBA_BYTES}-byte blocks",
                data.len()
            )));
        }
        Ok((data.len() / LBA_BYTES as usize) as u64)
    }

    /// The blocks of an append of `data`: whole, and within the device's append limit.
    pub fn append(info: &IdentifyZns, data: &[u8]) -> Result<u64, IoError> {
        let nlb = whole_blocks(data)?;
        if nlb > u64::from(info.zasl_lbas) {
            return Err(IoError::Invalid(format!(
                "an append of {nlb} blocks passes the device's limit of {} blocks",
                info.zasl_lbas
            )));
        }
        Ok(nlb)
    }

    /// The end of `nlb` blocks from `slba`.
    pub fn range_end(slba: u64, nlb: u64) -> Result<u64, IoError> {
        slba.checked_add(nlb)
            .ok_or_else(|| IoError::Invalid("LBA range overflows".into()))
    }
}

/// A zoned block device: the commands of the NVMe ZNS command set (Write is here for raw
/// tools; the file system only appends). Transfers over the device's transfer limit (MDTS) are
/// the implementation's to split; what [`check`] refuses is refused before it is sent.
///
/// Power loss: a command that completed with success is on the media only after a later
/// [`Zoned::flush`] completed (when the device reports a volatile write cache; otherwise at
/// once). A command cut by power loss may have written any prefix of its blocks in order;
/// the device then fails every command (Command Aborted) until it is powered on again.
pub trait Zoned: Send + Sync + std::fmt::Debug {
    /// Identify: what the device said about itself when it was opened.
    fn info(&self) -> &IdentifyZns;

    /// Reads `nlb` blocks from `slba`.
    fn read(&self, slba: u64, nlb: u64) -> Result<Vec<u8>, IoError>;

    /// Writes `data` (whole blocks) at `slba`, the zone's write pointer.
    fn write(&self, slba: u64, data: &[u8]) -> Result<(), IoError>;

    /// Zone Append of `data` (whole blocks, at most the append limit, `zasl_lbas`) to the zone
    /// starting at `zslba`; returns the LBA of its first block.
    fn append(&self, zslba: u64, data: Vec<u8>) -> Result<u64, IoError>;

    /// Zone Management Send: `action` on the zone holding `slba`, or on every zone.
    fn zone_action(&self, slba: u64, action: ZoneAction, select_all: bool) -> Result<(), IoError>;

    /// Zone Management Receive: the matching zones from the zone holding `slba`, at most
    /// `max_zones`, and how many matched in all.
    fn report(
        &self,
        slba: u64,
        filter: ReportFilter,
        max_zones: u32,
    ) -> Result<(u64, Vec<ZoneDescriptor>), IoError>;

    /// Flush: everything written before it becomes durable.
    fn flush(&self) -> Result<(), IoError>;

    /// Every zone's descriptor.
    fn all_zones(&self) -> Result<Vec<ZoneDescriptor>, IoError> {
        self.report(0, ReportFilter::All, self.info().nr_zones)
            .map(|(_, zones)| zones)
    }
}

#[cfg(feature = "zone-manager")]
pub use direct::Direct;

#[cfg(feature = "zone-manager")]
mod direct {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

    use common::zns::{IdentifyZns, ReportFilter, ZoneAction, ZoneDescriptor};
    use common::{Status, LBA_BYTES};
    use firmware::nand::Nand;
    use firmware::zns::ZoneManager;

    use super::{IoError, Zoned};

    /// The firmware's zone manager as a [`Zoned`] device, each command run in the caller's
    /// thread under one lock. Cheap to clone; clones share the manager. It refuses what the
    /// host driver refuses before sending ([`super::check`]) and splits reads and writes by
    /// the transfer limit as the driver does, so it sees the same commands a device would.
    #[derive(Debug)]
    pub struct Direct<N: Nand> {
        manager: Arc<Mutex<Option<ZoneManager<N>>>>,
        identify: IdentifyZns,
        /// Commands run, counted as a driver sends them (a split transfer is several).
        commands: Arc<AtomicU64>,
    }

    impl<N: Nand> Clone for Direct<N> {
        fn clone(&self) -> Self {
            Direct {
                manager: Arc::clone(&self.manager),
                identify: self.identify,
                commands: Arc::clone(&self.commands),
            }
        }
    }

    impl<N: Nand> Direct<N> {
        /// A device over `manager`.
        pub fn new(manager: ZoneManager<N>) -> Self {
            let identify = manager.identify();
            Direct {
                manager: Arc::new(Mutex::new(Some(manager))),
                identify,
                commands: Arc::default(),
            }
        }

        /// Takes the manager back (a power cut or a reboot); later commands fail with
        /// [`IoError::Stopped`].
        pub fn take(&self) -> Option<ZoneManager<N>> {
            self.lock().take()
        }

        /// Commands run so far.
        pub fn commands(&self) -> u64 {
            self.commands.load(Ordering::Relaxed)
        }

        /// Runs `f` on the manager (to reach its NAND, or to inspect it).
        pub fn with<T>(&self, f: impl FnOnce(&mut ZoneManager<N>) -> T) -> Option<T> {
            self.lock().as_mut().map(f)
        }

        /// Bytes of the largest Read or Write.
        fn step(&self) -> usize {
            self.identify.mdts_lbas.max(1) as usize * LBA_BYTES as usize
        }

        fn lock(&self) -> MutexGuard<'_, Option<ZoneManager<N>>> {
            self.manager.lock().unwrap_or_else(PoisonError::into_inner)
        }

        fn run<T>(
            &self,
            command: &'static str,
            f: impl FnOnce(&mut ZoneManager<N>) -> Result<T, Status>,
        ) -> Result<T, IoError> {
            self.commands.fetch_add(1, Ordering::Relaxed);
            let mut guard = self.lock();
            let manager = guard.as_mut().ok_or(IoError::Stopped)?;
            f(manager).map_err(|status| IoError::Device { command, status })
        }
    }

    impl<N: Nand + Send + std::fmt::Debug> Zoned for Direct<N> {
        fn info(&self) -> &IdentifyZns {
            &self.identify
        }

        /// Split by the device's transfer limit (MDTS), as a driver splits.
        fn read(&self, slba: u64, nlb: u64) -> Result<Vec<u8>, IoError> {
            super::check::range_end(slba, nlb)?;
            let len = nlb
                .checked_mul(u64::from(LBA_BYTES))
                .and_then(|len| usize::try_from(len).ok())
                .ok_or_else(|| IoError::Invalid("the read is too large".into()))?;
            let mut out = vec![0; len];
            for (i, chunk) in out.chunks_mut(self.step()).enumerate() {
                let lba = slba + (i * self.step() / LBA_BYTES as usize) as u64;
                self.run("Read", |m| m.read(lba, chunk))?;
            }
            Ok(out)
        }

        /// Split by the device's transfer limit (MDTS), as a driver splits.
        fn write(&self, slba: u64, data: &[u8]) -> Result<(), IoError> {
            super::check::whole_blocks(data)?;
            for (i, chunk) in data.chunks(self.step()).enumerate() {
                let lba = slba + (i * self.step() / LBA_BYTES as usize) as u64;
                self.run("Write", |m| m.write(lba, chunk))?;
            }
            Ok(())
        }

        fn append(&self, zslba: u64, data: Vec<u8>) -> Result<u64, IoError> {
            super::check::append(&self.identify, &data)?;
            self.run("Zone Append", |m| m.append(zslba, &data))
        }

        fn zone_action(
            &self,
            slba: u64,
            action: ZoneAction,
            select_all: bool,
        ) -> Result<(), IoError> {
            self.run("Zone Management Send", |m| {
                m.zone_action(slba, action, select_all)
            })
        }

        fn report(
            &self,
            slba: u64,
            filter: ReportFilter,
            max_zones: u32,
        ) -> Result<(u64, Vec<ZoneDescriptor>), IoError> {
            self.run("Zone Management Receive", |m| {
                let report = m.report(slba, filter, max_zones, false)?;
                Ok((report.nr_zones, report.descriptors))
            })
        }

        fn flush(&self) -> Result<(), IoError> {
            self.run("Flush", |m| m.flush())
        }
    }
}
