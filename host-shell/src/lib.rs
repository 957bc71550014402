//! The `std` shell around the csd firmware: everything that turns it into a device a person can
//! use on a laptop.
//!
//! - [`nand`]: device images in files, presets, the timing model (the strict emulator itself is
//!   the firmware's).
//! - [`device`]: the firmware's controller in its own thread behind NVMe-style queue pairs.
//! - [`driver`]: the typed host API over a queue pair.
//! - [`lfs`]: the log-structured file system on the zones (its own crate, re-exported).
//! - [`offload`]: the offload engine (program slots, kernels, snapshots, runs) that the mount's
//!   `user.csd.*` keys and `csd kernel run` share.
//! - [`fuse`]: the FUSE mount over the file system and the offload keys: a thin adapter.
//! - [`daemon`]: the mount daemon's log.
//! - [`loader`]: links clang-built eBPF objects into program images.
//! - [`link`]: the firmware on a board in QEMU, driven over an emulated serial link.
//! - [`zonemap`]: every zone of a device (state, write pointer, live data, erase counts) as a
//!   picture or a list.
//!
//! Nothing in this crate reaches into the firmware's internals: it drives the firmware only
//! through its public, sans-IO interfaces.

pub mod daemon;
pub mod device;
pub mod driver;
pub mod fuse;
/// The log-structured file system, its own crate (`host-shell/lfs`) on the [`lfs::Zoned`] trait.
pub use ::lfs;
pub mod link;
pub mod loader;
pub mod nand;
pub mod nvmf;
pub mod offload;
pub mod units;
pub mod zonemap;
