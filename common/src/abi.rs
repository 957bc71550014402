//! The kernel ABI: what a C kernel compiled with `clang -target bpf` sees, and the program
//! image the host downloads into a program slot.
//!
//! `kernels/include/csd.h` states the same numbers for C; a test in the `tests` crate checks the
//! two against each other, so change both together. `docs/KERNEL_ABI.md` explains them.

/// Name of the kernel's entry function.
pub const ENTRY_SYMBOL: &str = "csd_main";

/// Helper ids: a kernel calls helper `n` with the eBPF instruction `call n` (`src_reg = 0`).
pub mod helper {
    /// `long csd_read(uint64_t file_off, void *dst, uint64_t len)`: copies bytes of the
    /// kernel's file snapshot into kernel memory; returns the bytes read, 0 at the end of the
    /// snapshot, or a negative [`super::err`] code.
    pub const READ: u32 = 1;
    /// `long csd_emit(const void *src, uint64_t len)`: appends bytes to the output; returns
    /// `len`, or [`super::err::NO_SPACE`] past `out_cap` (nothing is appended then).
    pub const EMIT: u32 = 2;
    /// `void *csd_scratch(void)`: the address of `scratch_len` bytes of zeroed scratch memory.
    pub const SCRATCH: u32 = 3;
    /// `long csd_log(const char *msg, uint64_t len)`: records a short message for the run's
    /// log; returns the bytes kept (at most [`super::LOG_MAX_BYTES`]).
    pub const LOG: u32 = 4;
    /// `long csd_input(void *dst, uint64_t len)`: write streams only: copies the next
    /// incoming bytes; returns the bytes copied, 0 when the input is exhausted.
    pub const INPUT: u32 = 5;
    /// The highest helper id; ids from 1 to this are known.
    pub const MAX_ID: u32 = INPUT;
}

/// Negative return values of helpers (the kernel sees them as `long`).
pub mod err {
    /// An argument is invalid (for example a length over the limit).
    pub const INVALID: i64 = -22;
    /// The output is full: the bytes would pass `out_cap`.
    pub const NO_SPACE: i64 = -28;
    /// The helper is not available for this operation (e.g. `csd_input` outside a write stream).
    pub const NOT_SUPPORTED: i64 = -95;
    /// The device could not read the snapshot's data.
    pub const IO: i64 = -5;
}

/// The operation kinds a kernel is run for (`csd_ctx.op`).
pub mod op {
    /// One request of a read stream: the output replaces the bytes of `offset..offset+len`.
    pub const READ_STREAM: u64 = 1;
    /// A whole-file job: run once over the snapshot.
    pub const FILE_JOB: u64 = 2;
    /// One request of a write stream: `csd_input` yields the bytes being written.
    pub const WRITE_STREAM: u64 = 3;
}

/// Layout of `struct csd_ctx`, the read-only context `r1` points to at entry. Every field is a
/// little-endian `uint64_t`.
pub mod ctx {
    /// `op`: one of [`super::op`].
    pub const OP: u32 = 0;
    /// `file_size`: bytes in the snapshot.
    pub const FILE_SIZE: u32 = 8;
    /// `offset`: the request's file offset.
    pub const OFFSET: u32 = 16;
    /// `len`: the request's length in bytes.
    pub const LEN: u32 = 24;
    /// `param0`: the first user parameter.
    pub const PARAM0: u32 = 32;
    /// `param1`: the second user parameter.
    pub const PARAM1: u32 = 40;
    /// `out_cap`: how many bytes `csd_emit` may append in this run.
    pub const OUT_CAP: u32 = 48;
    /// `scratch_len`: bytes of scratch memory behind `csd_scratch()`.
    pub const SCRATCH_LEN: u32 = 56;
    /// Size of the whole context.
    pub const SIZE: u32 = 64;
}

/// The kernel's address space. Kernels never see device addresses: each region lives at its
/// own base, and every access is checked against the region it falls in, on both ends.
pub mod region {
    /// The read-only context (`r1` at entry).
    pub const CTX_BASE: u64 = 0x1_0000_0000;
    /// The stack: [`super::MAX_CALL_DEPTH`] frames of [`super::STACK_BYTES`]. `r10` at entry
    /// is the top, `STACK_BASE + STACK_BYTES * MAX_CALL_DEPTH`; each bpf-to-bpf call frame
    /// gets its own [`super::STACK_BYTES`] below the caller's. Only live frames are addressable.
    pub const STACK_BASE: u64 = 0x2_0000_0000;
    /// Scratch memory, read-write, returned by `csd_scratch()`.
    pub const SCRATCH_BASE: u64 = 0x3_0000_0000;
    /// The program's read-only data (`.rodata`), addressed by 64-bit immediate loads.
    pub const RODATA_BASE: u64 = 0x4_0000_0000;
}

/// Bytes of stack per call frame (as in Linux eBPF).
pub const STACK_BYTES: u32 = 512;
/// Deepest bpf-to-bpf call nesting a program may reach (the entry frame counts as one).
pub const MAX_CALL_DEPTH: u32 = 8;
/// Most instructions (8-byte slots; a 64-bit immediate load takes two) in one program.
pub const MAX_PROGRAM_INSNS: u32 = 65_536;
/// Most bytes of read-only data in one program.
pub const MAX_RODATA_BYTES: u32 = 64 * 1024;
/// Most bytes one `csd_log` call keeps.
pub const LOG_MAX_BYTES: u32 = 128;
/// Default scratch memory per run.
pub const DEFAULT_SCRATCH_BYTES: u32 = 64 * 1024;

/// The linked program image downloaded by Load Program: a fixed little-endian header, then the
/// instructions, then the read-only data. The host's loader writes it; the firmware checks it
/// (magic, version, lengths, limits) and verifies the code before it can run.
pub mod image {
    /// First four bytes of every image.
    pub const MAGIC: [u8; 4] = *b"CSDP";
    /// Image format version.
    pub const VERSION: u16 = 1;
    /// Offset of the `u16` version.
    pub const VERSION_OFFSET: usize = 4;
    /// Offset of the `u16` flags (must be zero for now).
    pub const FLAGS_OFFSET: usize = 6;
    /// Offset of the `u32` length of the instructions in bytes (a multiple of 8).
    pub const TEXT_LEN_OFFSET: usize = 8;
    /// Offset of the `u32` length of the read-only data in bytes.
    pub const RODATA_LEN_OFFSET: usize = 12;
    /// Size of the header; the instructions start here, the entry point is instruction 0.
    pub const HEADER_BYTES: usize = 16;
    /// Largest image: header, instructions and read-only data at their limits.
    pub const MAX_BYTES: u32 =
        HEADER_BYTES as u32 + super::MAX_PROGRAM_INSNS * 8 + super::MAX_RODATA_BYTES;
}
