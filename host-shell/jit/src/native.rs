//! The one module of the crate allowed `unsafe`: it owns the executable memory of compiled
//! code, lays out the [`State`] the code works on, calls into the code, and is the one
//! trampoline through which the code calls helpers.
//!
//! Generated code sees a run only through [`State`]: raw pointers to the VM's registers, call
//! frames and stack, and a table of the kernel's memory regions (host pointer, lowest and end
//! offset that may be touched) for reads and one for writes. Every access the code makes is
//! checked against that table (or, for `r10`-relative stack accesses, proven inside the live
//! frame when compiled), so it never reaches outside the buffers the VM lent it.
#![allow(unsafe_code)]

use std::{
    any::Any,
    ffi::c_void,
    mem::{offset_of, size_of},
    panic::{self, AssertUnwindSafe},
    slice,
};

use common::{abi, program::RunStats};
use cranelift_jit::JITModule;
use cranelift_module::FuncId;
use firmware::ebpf::{
    call_helper, Env, ExecError, Frame, Mem, NativeExit, NativeRun, SliceEnd, STACK_TOTAL,
};

/// One region of the kernel's memory as the generated code sees it: `base[lo..end]` may be
/// touched (offsets within the region's 4 GiB window).
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub(crate) struct Region {
    base: *mut u8,
    lo: u64,
    end: u64,
    _pad: u64,
}

impl Region {
    const NONE: Region = Region {
        base: std::ptr::null_mut(),
        lo: 0,
        end: 0,
        _pad: 0,
    };

    fn new(base: *mut u8, lo: usize, end: usize) -> Region {
        Region {
            base,
            lo: lo as u64,
            end: end as u64,
            _pad: 0,
        }
    }
}

/// Entries of a region table: indexed by `min(addr >> 32, 5)`; 1..=4 are the context, stack,
/// scratch and read-only data ([`abi::region`]), 0 and 5 map nothing.
pub(crate) const REGIONS: usize = 6;
/// The stack's entry in the region tables.
pub(crate) const STACK_REGION: usize = (abi::region::STACK_BASE >> 32) as usize;
const CTX_REGION: usize = (abi::region::CTX_BASE >> 32) as usize;
const SCRATCH_REGION: usize = (abi::region::SCRATCH_BASE >> 32) as usize;
const RODATA_REGION: usize = (abi::region::RODATA_BASE >> 32) as usize;
const _: () = assert!(
    CTX_REGION == 1 && STACK_REGION == 2 && SCRATCH_REGION == 3 && RODATA_REGION == 4,
    "the region tables follow the ABI's bases"
);

/// Why generated code returned.
pub(crate) mod exit {
    /// The entry function returned; `r0` is in the registers.
    pub const EXIT: u32 = 0;
    /// The next block does not fit the budget; `pc` is its start.
    pub const FUEL: u32 = 1;
    /// A load or store at `pc` faulted; the fault fields say where.
    pub const MEMORY: u32 = 2;
    /// The helper called at `pc` faulted (or panicked); the trampoline kept why.
    pub const HELPER: u32 = 3;
    /// The local call at `pc` would nest too deep.
    pub const DEPTH: u32 = 4;
    /// `pc` is not a block start native code enters: the interpreter goes on there.
    pub const ELSEWHERE: u32 = 5;
}

/// The helper trampoline's type: `(state, helper id, pc) -> fuel cost`, or -1 when the helper
/// faulted or panicked.
pub(crate) type HelperFn = unsafe extern "C" fn(*mut State, u64, u64) -> i64;
/// The compiled entry's type: `(state) -> exit reason`.
type EntryFn = unsafe extern "C" fn(*mut State) -> u32;

/// What compiled code reads and writes (offsets in [`field`]).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct State {
    regs: *mut [u64; 16],
    frames: *mut Frame,
    stack: *mut u8,
    depth: u64,
    budget: i64,
    pc: u64,
    memory: u64,
    branches: u64,
    calls: u64,
    helper_fuel: u64,
    fault_addr: u64,
    fault_len: u64,
    fault_write: u64,
    read: [Region; REGIONS],
    write: [Region; REGIONS],
    helper: HelperFn,
    helper_ctx: *mut c_void,
}

/// Byte offsets of [`State`]'s fields and of [`Frame`]'s, for the code generator.
pub(crate) mod field {
    use super::*;

    pub const REGS: i32 = offset_of!(State, regs) as i32;
    pub const FRAMES: i32 = offset_of!(State, frames) as i32;
    pub const STACK: i32 = offset_of!(State, stack) as i32;
    pub const DEPTH: i32 = offset_of!(State, depth) as i32;
    pub const BUDGET: i32 = offset_of!(State, budget) as i32;
    pub const PC: i32 = offset_of!(State, pc) as i32;
    pub const MEMORY: i32 = offset_of!(State, memory) as i32;
    pub const BRANCHES: i32 = offset_of!(State, branches) as i32;
    pub const CALLS: i32 = offset_of!(State, calls) as i32;
    pub const HELPER_FUEL: i32 = offset_of!(State, helper_fuel) as i32;
    pub const FAULT_ADDR: i32 = offset_of!(State, fault_addr) as i32;
    pub const FAULT_LEN: i32 = offset_of!(State, fault_len) as i32;
    pub const FAULT_WRITE: i32 = offset_of!(State, fault_write) as i32;
    pub const READ: i32 = offset_of!(State, read) as i32;
    pub const WRITE: i32 = offset_of!(State, write) as i32;
    pub const HELPER: i32 = offset_of!(State, helper) as i32;
    /// Bytes of one region table entry, and its fields.
    pub const REGION_BYTES: i64 = size_of::<Region>() as i64;
    pub const REGION_BASE: i32 = offset_of!(Region, base) as i32;
    pub const REGION_LO: i32 = offset_of!(Region, lo) as i32;
    pub const REGION_END: i32 = offset_of!(Region, end) as i32;
    /// Bytes of one call frame, and its fields.
    pub const FRAME_BYTES: i64 = size_of::<Frame>() as i64;
    pub const FRAME_SAVED: i32 = offset_of!(Frame, saved) as i32;
    pub const FRAME_RET_PC: i32 = offset_of!(Frame, ret_pc) as i32;
}

// The generated code handles pointers, `usize` frame fields and memory as 64-bit
// little-endian values.
const _: () = assert!(size_of::<usize>() == 8 && size_of::<*mut u8>() == 8);
#[cfg(not(target_endian = "little"))]
compile_error!("the JIT generates little-endian memory accesses");

/// What the trampoline needs besides [`State`], and what it leaves behind.
struct HelperCtx<'a> {
    env: &'a mut dyn Env,
    stats: *mut RunStats,
    out_cap: u64,
    ctx: (*const u8, usize),
    stack_len: usize,
    scratch: (*mut u8, usize),
    rodata: (*const u8, usize),
    fault: Option<ExecError>,
    panic: Option<Box<dyn Any + Send>>,
}

/// The helper trampoline: rebuilds the kernel's memory from the raw parts generated code
/// works with and calls the firmware's helper dispatch, which checks every pointer and length.
unsafe extern "C" fn trampoline(state: *mut State, id: u64, pc: u64) -> i64 {
    // SAFETY: generated code passes the `State` that `Code::run` handed it, which outlives the
    // call into the code; the code is suspended in this call, so nothing else touches it.
    let state = unsafe { &mut *state };
    // SAFETY: `helper_ctx` is the `HelperCtx` that `Code::run` built on its stack for this
    // stretch of code; only this trampoline dereferences it, one call at a time.
    let h = unsafe { &mut *state.helper_ctx.cast::<HelperCtx<'_>>() };
    // SAFETY: the pointers and lengths below are the VM's buffers, borrowed mutably by
    // `Code::run` for the whole stretch (the `NativeRun`); every pointer the generated code
    // uses was derived from the same raw pointers, and the code is suspended while these
    // slices live, so there is exactly one live access path.
    let (regs, stats, mut mem) = unsafe {
        (
            &mut *state.regs,
            &mut *h.stats,
            Mem {
                ctx: slice::from_raw_parts(h.ctx.0, h.ctx.1),
                stack: slice::from_raw_parts_mut(state.stack, h.stack_len),
                stack_lo: state.read[STACK_REGION].lo as usize,
                scratch: slice::from_raw_parts_mut(h.scratch.0, h.scratch.1),
                rodata: slice::from_raw_parts(h.rodata.0, h.rodata.1),
            },
        )
    };
    let (env, out_cap) = (&mut *h.env, h.out_cap);
    let called = panic::catch_unwind(AssertUnwindSafe(|| {
        call_helper(id as u32, pc as u32, regs, &mut mem, env, out_cap, stats)
    }));
    match called {
        Ok(Ok(cost)) => cost.min(i64::MAX as u64) as i64,
        Ok(Err(fault)) => {
            h.fault = Some(fault);
            -1
        }
        // Unwinding through generated code is not possible: keep the panic and go on with it
        // once the code has returned.
        Err(payload) => {
            h.panic = Some(payload);
            -1
        }
    }
}

/// One program's compiled code: the executable memory and its entry.
pub(crate) struct Code {
    /// Owns the executable memory; `None` only while dropping.
    module: Option<JITModule>,
    entry: EntryFn,
}

impl std::fmt::Debug for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Code")
            .field("entry", &(self.entry as *const u8))
            .finish()
    }
}

// SAFETY: the module's memory is finalized (read and execute only) before a `Code` exists,
// and nothing in it refers to the thread that compiled it; running it from another thread is
// like calling any function there.
unsafe impl Send for Code {}

impl Code {
    /// Takes `module` with `func` defined and finalized: `func` is the entry of the code the
    /// generator built, with the [`EntryFn`] signature.
    pub(crate) fn new(module: JITModule, func: FuncId) -> Code {
        let ptr = module.get_finalized_function(func);
        // SAFETY: `func` was generated with one pointer parameter and a u32 result in the
        // host's default calling convention, which is what `extern "C"` is on the hosts the
        // JIT supports (System V on x86-64, AAPCS64 on aarch64).
        let entry = unsafe { std::mem::transmute::<*const u8, EntryFn>(ptr) };
        Code {
            module: Some(module),
            entry,
        }
    }

    /// Runs the code over `run` from `*run.pc` with `budget` (see [`firmware::ebpf::Native`]).
    pub(crate) fn run(&self, run: NativeRun<'_>, env: &mut dyn Env, budget: i64) -> NativeExit {
        let NativeRun {
            regs,
            pc,
            depth,
            frames,
            mem,
            stats,
            out_cap,
        } = run;
        let Mem {
            ctx,
            stack,
            stack_lo,
            scratch,
            rodata,
        } = mem;
        debug_assert_eq!(stack.len(), STACK_TOTAL);
        let stack_ptr = stack.as_mut_ptr();
        let scratch_ptr = scratch.as_mut_ptr();
        // The context and read-only data are only ever read: their write entries map nothing.
        let ctx_ptr = ctx.as_ptr().cast_mut();
        let rodata_ptr = rodata.as_ptr().cast_mut();
        let mut read = [Region::NONE; REGIONS];
        read[CTX_REGION] = Region::new(ctx_ptr, 0, ctx.len());
        read[STACK_REGION] = Region::new(stack_ptr, stack_lo, stack.len());
        read[SCRATCH_REGION] = Region::new(scratch_ptr, 0, scratch.len());
        read[RODATA_REGION] = Region::new(rodata_ptr, 0, rodata.len());
        let mut write = [Region::NONE; REGIONS];
        write[STACK_REGION] = read[STACK_REGION];
        write[SCRATCH_REGION] = read[SCRATCH_REGION];
        let stats_ptr: *mut RunStats = stats;
        let mut helper = HelperCtx {
            env,
            stats: stats_ptr,
            out_cap,
            ctx: (ctx.as_ptr(), ctx.len()),
            stack_len: stack.len(),
            scratch: (scratch_ptr, scratch.len()),
            rodata: (rodata.as_ptr(), rodata.len()),
            fault: None,
            panic: None,
        };
        let mut state = State {
            regs,
            frames: frames.as_mut_ptr(),
            stack: stack_ptr,
            depth: *depth as u64,
            budget,
            pc: *pc as u64,
            memory: 0,
            branches: 0,
            calls: 0,
            helper_fuel: 0,
            fault_addr: 0,
            fault_len: 0,
            fault_write: 0,
            read,
            write,
            helper: trampoline,
            helper_ctx: (&raw mut helper).cast(),
        };
        // SAFETY: the code was generated for this `State` layout (the offsets in `field`) from
        // a verified program; it only touches memory through the state's pointers, within the
        // bounds of the region tables, the 16 registers and the `MAX_FRAMES` frames, all of
        // which `run` borrows mutably for this call; it calls out only through `trampoline`.
        let reason = unsafe { (self.entry)(&raw mut state) };
        if let Some(payload) = helper.panic.take() {
            panic::resume_unwind(payload);
        }
        *pc = state.pc as usize;
        *depth = state.depth as usize;
        // SAFETY: the generated code has returned; `stats_ptr` is the `&mut RunStats` of the
        // `NativeRun`, and no other pointer to it is in use.
        let stats = unsafe { &mut *stats_ptr };
        stats.memory_insns += state.memory;
        stats.branch_insns += state.branches;
        stats.call_insns += state.calls;
        let at = state.pc as u32;
        let end = match reason {
            exit::EXIT => {
                // SAFETY: as above, for the registers.
                SliceEnd::Exit(unsafe { (*state.regs)[0] })
            }
            exit::MEMORY => SliceEnd::Fault(ExecError::MemoryFault {
                pc: at,
                addr: state.fault_addr,
                len: state.fault_len as u32,
                write: state.fault_write != 0,
            }),
            exit::HELPER => SliceEnd::Fault(
                helper
                    .fault
                    .take()
                    .unwrap_or(ExecError::HelperFault {
                        pc: at,
                        helper: 0,
                        addr: 0,
                        len: 0,
                    }),
            ),
            exit::DEPTH => SliceEnd::Fault(ExecError::CallDepthExceeded { pc: at }),
            // FUEL, ELSEWHERE: the interpreter goes on from `pc`.
            _ => SliceEnd::Fuel,
        };
        NativeExit {
            end,
            budget_left: state.budget,
            helper_fuel: state.helper_fuel,
        }
    }
}

impl Drop for Code {
    fn drop(&mut self) {
        if let Some(module) = self.module.take() {
            // SAFETY: `entry` is the only pointer into the module's memory and it dies with
            // this `Code`; no call into it is running (`run` borrows `self`).
            unsafe { module.free_memory() };
        }
    }
}
