//! What the csd tests share, written once: device geometries ([`geometry`]), a device in RAM
//! that runs the firmware's zone manager in the test's thread ([`device`]), file-system
//! helpers ([`fs`]) and one seeded generator ([`rng`]).
//!
//! It depends on the firmware and the file system only, so the file system's own tests use it
//! without building the host shell.

pub mod device;
pub mod fs;
pub mod geometry;
pub mod rng;
