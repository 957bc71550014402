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

/// Version of the wire envelope. Bumped on any incompatible change; the firmware refuses an
/// envelope with another version.
pub const WIRE_VERSION: u16 = 3;

/// Size of one logical block (LBA) in bytes.
pub const LBA_BYTES: u32 = 4096;
