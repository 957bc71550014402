//! Wire types shared by the csd firmware and the host shell.
//!
//! This crate holds data only: commands, completions, status codes, zone descriptors, the
//! kernel ABI constants and why a program image was refused. It must never hold logic beyond
//! encoding helpers and sentences, never use `usize` in a wire type (the firmware is 32-bit,
//! the host 64-bit), and only ever append enum variants: every serialized form is pinned by a
//! golden-bytes test.
#![no_std]

pub mod abi;
pub mod command;
pub mod link;
pub mod load_error;
pub mod nvme;
pub mod program;
pub mod status;
pub mod zns;

pub use status::Status;

/// Version of what crosses the device's links: the commands (NVMe entries since version 4),
/// completions and the structures they move. Bumped on any incompatible change; a host and a
/// device of different versions refuse each other when a session opens.
pub const WIRE_VERSION: u16 = 4;

/// Size of one logical block (LBA) in bytes.
pub const LBA_BYTES: u32 = 4096;
