//! The kernel ABI as numbers: the same as `common::abi` and `kernels/include/csd.h`, checked
//! against them by `tests/tests/kernels/abi.rs` (which compiles this file on the host).

/// Helper ids: the `imm` of `call`.
pub mod helper {
    pub const READ: u32 = 1;
    pub const EMIT: u32 = 2;
    pub const SCRATCH: u32 = 3;
    pub const LOG: u32 = 4;
    pub const INPUT: u32 = 5;
}

/// Error codes helpers return (negative).
pub mod err {
    pub const IO: i64 = -5;
    pub const INVALID: i64 = -22;
    pub const NO_SPACE: i64 = -28;
    pub const NOT_SUPPORTED: i64 = -95;
}

/// What a run is for (`Ctx::op`).
pub mod op {
    pub const READ_STREAM: u64 = 1;
    pub const FILE_JOB: u64 = 2;
    pub const WRITE_STREAM: u64 = 3;
}

/// Bytes of a `log` message the device keeps.
pub const LOG_MAX_BYTES: u32 = 128;

/// The read-only context of a run (`struct csd_ctx`).
#[repr(C)]
#[derive(Debug)]
pub struct Ctx {
    /// One of [`op`].
    pub op: u64,
    /// Bytes in the file snapshot.
    pub file_size: u64,
    /// The request's file offset.
    pub offset: u64,
    /// The request's length in bytes.
    pub len: u64,
    /// The first user parameter.
    pub param0: u64,
    /// The second user parameter.
    pub param1: u64,
    /// Bytes `emit` may append in this run.
    pub out_cap: u64,
    /// Bytes of scratch memory.
    pub scratch_len: u64,
}
