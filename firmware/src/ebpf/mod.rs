//! The eBPF executor: a load-time verifier and a metered interpreter for user kernels.
//!
//! [`Program::load`] checks an image (`common::abi::image`), verifies every instruction
//! (typed [`VerifyError`]s) and pre-decodes it. A [`Vm`] runs it: [`Vm::start`] with the
//! kernel's [`Context`] and a total fuel budget, then [`Vm::resume`] slice by slice until
//! [`Step::Exited`]. Helpers reach the device through the caller's [`Env`].
//!
//! Semantics follow the eBPF ISA (RFC 9669) including the v4 additions (sign-extending loads
//! and moves, `sdiv`/`smod`, `bswap`, `gotol`) and the atomic operations. Not supported (refused
//! at load): legacy packet loads (`ld_abs`/`ld_ind`), `callx`, calls by BTF id, map loads
//! (`lddw` with `src != 0`).
//!
//! The kernel's address space is the four regions of [`common::abi::region`]: the read-only
//! context, the stack (one [`common::abi::STACK_BYTES`] frame per call level, growing down from
//! `STACK_BASE + STACK_BYTES * MAX_CALL_DEPTH`; only live frames are addressable), scratch, and
//! the read-only data. Every access is checked on both ends; a kernel can never touch memory
//! outside these buffers, and nothing here panics on a kernel's behalf.
//!
//! # Fuel
//!
//! Every instruction costs 1. A helper call costs in addition [`HELPER_CALL_FUEL`] plus one per
//! [`BYTES_PER_FUEL`] bytes it moved (rounded up): bytes read for `csd_read` and `csd_input`,
//! emitted for `csd_emit`, kept for `csd_log`. A helper's cost may overrun the slice or the
//! budget by that one call; the overrun is counted in [`RunStats::fuel_used`] and ends the
//! slice (or the run, with [`ExecError::OutOfFuel`]).

mod executor;
mod helpers;
mod image;
mod insn;
mod mem;
mod verify;
mod vm;

pub use common::program::RunStats;
pub use executor::{Executor, Interpreter};
pub use helpers::{call as call_helper, Env, HelperError, BYTES_PER_FUEL, HELPER_CALL_FUEL};
pub use image::{encode as encode_image, split as split_image, LoadError, Program};
pub use insn::{atomic, Insn, Op};
pub use mem::{Mem, STACK_TOTAL};
pub use verify::VerifyError;
pub use vm::{
    run_to_end, Context, ExecError, Frame, Native, NativeExit, NativeRun, SliceEnd, Step, Vm,
    FRAME_BYTES, MAX_FRAMES, STACK_TOP_ADDR,
};
