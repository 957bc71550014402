//! The `std` shell around the csd firmware: everything that turns it into a device a person can
//! use on a laptop.
//!
//! [`loader`] links clang-built eBPF objects into program images for the device. The emulated
//! NAND, the device runner and host driver, the file system and the FUSE mount grow here too.
//! Nothing in this crate may reach into the firmware's internals: it drives the firmware only
//! through its public, sans-IO interfaces.

pub mod loader;
