//! The offload engine: how kernels run on the device, for the mount's `user.csd.*` keys and
//! for `csd kernel run` alike.
//!
//! - [`Engine`]: the device's program slots and memory range sets as a pool sized from its
//!   Identify ([`ProgramResources`]), and the kernels linked from the file system.
//! - [`Kernel`]: a linked program image and the name errors give it, read from the file system
//!   ([`Engine::kernel_in`], cached) or given as an image ([`Kernel::from_image`]).
//! - [`Ranges`]: what a kernel reads and where its output goes: a file's snapshot, taken from
//!   the file system ([`Engine::snapshot`]) and released when done, or raw extents.
//! - [`Lease`]: a slot and a range set from the pool, and what the device holds in them.
//! - [`Engine::run`]: loads and activates the kernel and defines the range set where the lease
//!   does not hold them yet, executes, and reads the output back.
//! - [`keys`]: the mount's `user.csd.*` keys, state of one (inode, process) on top of the
//!   engine.
//!
//! The engine never verifies a kernel: the device does, and its completion says why it
//! refused one ([`RunError::Rejected`]). It never logs either: what went wrong is its
//! callers' to report.

mod kernel;
pub mod keys;
mod pool;
mod ranges;
mod run;

pub use kernel::{Kernel, KernelError};
pub use pool::{Busy, Lease};
pub use ranges::Ranges;
pub use run::{Job, Ran, RunError, Step};

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use common::program::ProgramResources;

use crate::driver::Driver;
use crate::lfs::InodeNo;
use kernel::CachedImage;
use pool::Pool;

/// Runs kernels on one device. `Sync`: the mount's threads share one.
pub struct Engine {
    driver: Driver,
    resources: ProgramResources,
    pool: Mutex<Pool>,
    /// Linked kernel images by the kernel file's inode, with the size and times they were
    /// linked from: a repeated offload neither reads the object again nor re-links it.
    kernels: Mutex<HashMap<InodeNo, CachedImage>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("resources", &self.resources)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicked holder left plain data behind, never a half-done device command: go on.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Engine {
    /// An engine on the device behind `driver`, with the slots and range sets its Identify
    /// reported.
    pub fn new(driver: Driver) -> Engine {
        let resources = driver.info().programs;
        Engine {
            driver,
            resources,
            pool: Mutex::new(Pool::new(&resources)),
            kernels: Mutex::new(HashMap::new()),
        }
    }

    /// What the device has for programs.
    pub fn resources(&self) -> ProgramResources {
        self.resources
    }
}
