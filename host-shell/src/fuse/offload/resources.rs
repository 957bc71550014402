//! The offload table, and the device resources (slots, range sets, snapshots) it hands out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::program::{ProgramSlot, RangeSetId, RunStats};

use super::error::{OffloadError, Result};
use super::stream::Stream;
use super::{lock, Caller, Offload};
use crate::driver::DriverError;
use crate::fuse::process::Process;
use crate::lfs::{InodeNo, SnapshotId};

/// A finished file job.
#[derive(Debug)]
pub(super) struct Job {
    pub(super) kernel: String,
    pub(super) output: Vec<u8>,
}

/// The offload state of one (inode, process).
#[derive(Debug, Default)]
pub(super) struct ProcState {
    pub(super) args: Option<(u64, u64)>,
    pub(super) read: Option<Arc<Stream>>,
    pub(super) write: Option<Arc<Stream>>,
    pub(super) job: Option<Job>,
    pub(super) last: Arc<Mutex<Option<RunStats>>>,
}

impl ProcState {
    pub(super) fn is_empty(&self) -> bool {
        self.args.is_none() && self.read.is_none() && self.write.is_none() && self.job.is_none()
    }
}

#[derive(Debug)]
pub(super) struct Table {
    pub(super) procs: HashMap<(InodeNo, Process), ProcState>,
    pub(super) free_slots: Vec<ProgramSlot>,
    pub(super) free_sets: Vec<RangeSetId>,
}

/// Device resources held while an offload is being set up.
#[derive(Debug)]
pub(super) struct Held {
    pub(super) slot: ProgramSlot,
    pub(super) set: RangeSetId,
    pub(super) snapshot: Option<SnapshotId>,
}

impl Offload {
    pub(super) fn free(&self, held: Held) {
        if let Err(e) = self.driver.activate(held.slot, false) {
            crate::fuse::log(format_args!(
                "could not deactivate program slot {}: {e}",
                held.slot.0
            ));
        }
        if let Some(id) = held.snapshot {
            if let Err(e) = self.lfs.release_snapshot(id) {
                crate::fuse::log(format_args!("could not release snapshot {id}: {e}"));
            }
        }
        let mut table = lock(&self.table);
        table.free_slots.push(held.slot);
        table.free_sets.push(held.set);
    }

    pub(super) fn take_resources(&self) -> Result<Held> {
        let mut table = lock(&self.table);
        if table.free_slots.is_empty() || table.free_sets.is_empty() {
            return Err(OffloadError::Busy);
        }
        let (Some(slot), Some(set)) = (table.free_slots.pop(), table.free_sets.pop()) else {
            return Err(OffloadError::Busy);
        };
        Ok(Held {
            slot,
            set,
            snapshot: None,
        })
    }

    /// Loads the kernel named by `value` into a free slot and snapshots `ino` into a range
    /// set with an output buffer of `out_cap` bytes. On error nothing stays held.
    pub(super) fn prepare(
        &self,
        caller: Caller,
        ino: InodeNo,
        value: &[u8],
        out_cap: u32,
    ) -> Result<(String, Held, u64)> {
        let (path, image) = self.kernel_image(caller, value)?;
        let mut held = self.take_resources()?;
        let setup = (|| -> Result<u64> {
            self.driver
                .load_program(held.slot, &image)
                .map_err(|e| match e {
                    DriverError::Rejected(reason) => OffloadError::Rejected {
                        path: path.clone(),
                        reason: reason.to_string(),
                    },
                    other => OffloadError::Device(other),
                })?;
            self.driver.activate(held.slot, true)?;
            let snapshot = self.lfs.snapshot(ino)?;
            held.snapshot = Some(snapshot.id);
            self.driver
                .set_ranges(held.set, &snapshot.extents, snapshot.file_size, out_cap)?;
            Ok(snapshot.file_size)
        })();
        match setup {
            Ok(size) => Ok((path, held, size)),
            Err(e) => {
                self.free(held);
                Err(e)
            }
        }
    }

    pub(super) fn args_of(&self, key: (InodeNo, Process)) -> (u64, u64) {
        lock(&self.table)
            .procs
            .get(&key)
            .and_then(|s| s.args)
            .unwrap_or((0, 0))
    }

    pub(super) fn last_of(&self, key: (InodeNo, Process)) -> Arc<Mutex<Option<RunStats>>> {
        Arc::clone(&lock(&self.table).procs.entry(key).or_default().last)
    }
}
