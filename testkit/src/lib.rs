//! What the csd tests share, written once: device geometries ([`geometry`]), a device in RAM
//! that runs the firmware's zone manager in the test's thread ([`device`]), file-system
//! helpers ([`fs`]), one seeded generator ([`rng`]), the zone manager's reference model
//! ([`zns_model`]), the generator of programs the eBPF differential tests run
//! ([`ebpf_diff`]), with the feature `jit` the comparison of the two executors
//! ([`executors`]) and, with the feature `host-shell`, the tiny file system the hostile-image
//! tests damage (`tiny_fs`), hex as csd's JSON prints it ([`hex`]), and the kernel runs
//! tests submit ([`programs`]).
//!
//! It depends on the firmware and the file system only (the host shell behind its feature), so
//! the file system's own tests use it without building the host shell. It never holds a test:
//! only what two or more tests (or a test and a fuzz target) need.

pub mod device;
pub mod ebpf_diff;
#[cfg(feature = "jit")]
pub mod executors;
pub mod fs;
pub mod geometry;
pub mod hex;
pub mod programs;
pub mod rng;
#[cfg(feature = "host-shell")]
pub mod tiny_fs;
pub mod zns_model;
