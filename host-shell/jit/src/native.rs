//! The one module of the crate allowed `unsafe`: it owns the executable memory of compiled
//! code, lays out the [`State`] the code works on, and calls into the code.
//!
//! Generated code sees a run only through [`State`]: raw pointers to the VM's registers, call
//! frames, stack and scratch, and a table of the kernel's memory regions (host pointer, lowest
//! and end offset that may be touched) for reads and one for writes. Every access the code
//! makes is checked against scratch's bounds or that table (or, for `r10`-relative stack
//! accesses, proven inside the live frame when compiled), so it never reaches outside the
//! buffers the VM lent it. The code calls nothing: for a helper call it returns, the helper
//! runs here in safe Rust through the firmware's own dispatch, and the code is entered again
//! after the call.
#![allow(unsafe_code)]

use std::mem::{offset_of, size_of};

use common::abi;
use cranelift_jit::JITModule;
use cranelift_module::FuncId;
use firmware::ebpf::{
    call_helper, Env, ExecError, Frame, Mem, NativeExit, NativeRun, SliceEnd, FRAME_BYTES,
    STACK_TOTAL,
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
    /// The instruction at `pc` calls helper `helper_id`: run it, then enter at `pc + 1`.
    pub const HELPER: u32 = 3;
    /// The local call at `pc` would nest too deep.
    pub const DEPTH: u32 = 4;
    /// `pc` is not a block start native code enters: the interpreter goes on there.
    pub const ELSEWHERE: u32 = 5;
}

/// The compiled entry's type: `(state) -> exit reason`.
type EntryFn = unsafe extern "C" fn(*mut State) -> u32;

/// What compiled code reads and writes (offsets in [`field`]).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct State {
    regs: *mut [u64; 16],
    frames: *mut Frame,
    stack: *mut u8,
    /// The host address `r10` stands for (its frame's top), moved by calls and returns.
    frame: *mut u8,
    depth: u64,
    budget: i64,
    pc: u64,
    /// Instruction classes, packed by [`classes`].
    classes: u64,
    /// The scratch buffer, and per access width (1, 2, 4, 8 bytes) the bound of the fast
    /// check: an access at scratch offset `o` fits when `o < scratch_limit[w]`.
    scratch: *mut u8,
    scratch_limit: [u64; 4],
    /// The scratch buffer's host address less its kernel address (modulo 2^64): a kernel
    /// address plus this is the host address it stands for, if it is in scratch.
    scratch_bias: u64,
    fault_addr: u64,
    fault_len: u64,
    fault_write: u64,
    helper_id: u64,
    /// Why the code returned (set here, not by the code).
    reason: u32,
    read: [Region; REGIONS],
    write: [Region; REGIONS],
}

/// Byte offsets of [`State`]'s fields and of [`Frame`]'s, for the code generator.
pub(crate) mod field {
    use super::*;

    pub const REGS: i32 = offset_of!(State, regs) as i32;
    pub const FRAMES: i32 = offset_of!(State, frames) as i32;
    pub const FRAME: i32 = offset_of!(State, frame) as i32;
    pub const DEPTH: i32 = offset_of!(State, depth) as i32;
    pub const BUDGET: i32 = offset_of!(State, budget) as i32;
    pub const PC: i32 = offset_of!(State, pc) as i32;
    pub const CLASSES: i32 = offset_of!(State, classes) as i32;
    pub const SCRATCH: i32 = offset_of!(State, scratch) as i32;
    pub const SCRATCH_LIMIT: i32 = offset_of!(State, scratch_limit) as i32;
    pub const SCRATCH_BIAS: i32 = offset_of!(State, scratch_bias) as i32;
    pub const FAULT_ADDR: i32 = offset_of!(State, fault_addr) as i32;
    pub const FAULT_LEN: i32 = offset_of!(State, fault_len) as i32;
    pub const FAULT_WRITE: i32 = offset_of!(State, fault_write) as i32;
    pub const READ: i32 = offset_of!(State, read) as i32;
    pub const WRITE: i32 = offset_of!(State, write) as i32;
    pub const HELPER_ID: i32 = offset_of!(State, helper_id) as i32;
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

/// Three instruction counters in one word, so a block adds them with one instruction: memory
/// accesses in bits 0..21, branches in 21..42, calls in 42..63 (a typical block's sum fits
/// a 32-bit immediate). A stretch of native code runs at most [`STRETCH`] instructions, so
/// no field overflows into the next.
pub(crate) mod classes {
    pub const BITS: u32 = 21;
    pub const MASK: u64 = (1 << BITS) - 1;

    pub const fn pack(memory: u64, branches: u64, calls: u64) -> u64 {
        (calls << (2 * BITS)) | (branches << BITS) | memory
    }

    /// (memory, branches, calls)
    pub const fn unpack(packed: u64) -> (u64, u64, u64) {
        (packed & MASK, (packed >> BITS) & MASK, packed >> (2 * BITS))
    }
}

/// Most fuel one call into generated code may use (the caller calls again for more).
pub(crate) const STRETCH: i64 = 1 << 20;
const _: () = assert!(
    STRETCH as u64 <= classes::MASK,
    "a stretch's counts fit their fields"
);

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

    /// Runs the code over `run` from `*run.pc` with `budget` (see [`firmware::ebpf::Native`]),
    /// serving its helper calls in between.
    pub(crate) fn run(&self, run: NativeRun<'_>, env: &mut dyn Env, budget: i64) -> NativeExit {
        let NativeRun {
            regs,
            pc,
            depth,
            frames,
            mut mem,
            stats,
            out_cap,
        } = run;
        let mut left = budget;
        let mut helper_fuel = 0;
        let end = loop {
            let granted = left.min(STRETCH);
            let out = self.enter(regs, pc, depth, frames, &mut mem, granted);
            left -= granted - out.budget;
            let (memory, branches, calls) = classes::unpack(out.classes);
            stats.memory_insns += memory;
            stats.branch_insns += branches;
            stats.call_insns += calls;
            let at = *pc as u32;
            match out.reason {
                exit::EXIT => break SliceEnd::Exit(regs[0]),
                exit::HELPER => {
                    match call_helper(
                        out.helper_id as u32,
                        at,
                        regs,
                        &mut mem,
                        env,
                        out_cap,
                        stats,
                    ) {
                        Ok(cost) => {
                            left = left.saturating_sub(cost.min(i64::MAX as u64) as i64);
                            helper_fuel += cost;
                            *pc += 1;
                            if left <= 0 {
                                break SliceEnd::Fuel;
                            }
                        }
                        Err(fault) => break SliceEnd::Fault(fault),
                    }
                }
                exit::MEMORY => {
                    break SliceEnd::Fault(ExecError::MemoryFault {
                        pc: at,
                        addr: out.fault_addr,
                        len: out.fault_len as u32,
                        write: out.fault_write != 0,
                    })
                }
                exit::DEPTH => break SliceEnd::Fault(ExecError::CallDepthExceeded { pc: at }),
                // FUEL, ELSEWHERE: the interpreter (or another stretch) goes on from `pc`.
                _ => break SliceEnd::Fuel,
            }
        };
        NativeExit {
            end,
            budget_left: left,
            helper_fuel,
        }
    }

    /// One call into the code: from `*pc` with `budget`; `pc`, `depth`, the registers, frames
    /// and memory as the code left them.
    fn enter(
        &self,
        regs: &mut [u64; 16],
        pc: &mut usize,
        depth: &mut usize,
        frames: &mut [Frame],
        mem: &mut Mem<'_>,
        budget: i64,
    ) -> State {
        let stack_lo = STACK_TOTAL - *depth * FRAME_BYTES as usize;
        let stack_ptr = mem.stack.as_mut_ptr();
        let scratch_ptr = mem.scratch.as_mut_ptr();
        // The context and read-only data are only ever read: their write entries map nothing.
        let ctx_ptr = mem.ctx.as_ptr().cast_mut();
        let rodata_ptr = mem.rodata.as_ptr().cast_mut();
        let mut read = [Region::NONE; REGIONS];
        read[CTX_REGION] = Region::new(ctx_ptr, 0, mem.ctx.len());
        read[STACK_REGION] = Region::new(stack_ptr, stack_lo, mem.stack.len());
        read[SCRATCH_REGION] = Region::new(scratch_ptr, 0, mem.scratch.len());
        read[RODATA_REGION] = Region::new(rodata_ptr, 0, mem.rodata.len());
        let mut write = [Region::NONE; REGIONS];
        write[STACK_REGION] = read[STACK_REGION];
        write[SCRATCH_REGION] = read[SCRATCH_REGION];
        let scratch_len = mem.scratch.len() as u64;
        let mut state = State {
            regs,
            frames: frames.as_mut_ptr(),
            stack: stack_ptr,
            frame: stack_ptr.wrapping_add(regs[10].wrapping_sub(abi::region::STACK_BASE) as usize),
            depth: *depth as u64,
            budget,
            pc: *pc as u64,
            classes: 0,
            scratch: scratch_ptr,
            scratch_limit: [1u64, 2, 4, 8].map(|w| (scratch_len + 1).saturating_sub(w)),
            scratch_bias: (scratch_ptr as u64).wrapping_sub(abi::region::SCRATCH_BASE),
            fault_addr: 0,
            fault_len: 0,
            fault_write: 0,
            helper_id: 0,
            reason: 0,
            read,
            write,
        };
        debug_assert_eq!(mem.stack.len(), STACK_TOTAL);
        debug_assert_eq!(frames.len(), firmware::ebpf::MAX_FRAMES);
        // SAFETY: the code was generated for this `State` layout (the offsets in `field`) from
        // a verified program. It touches memory only through the state's pointers: the 16
        // registers and `MAX_FRAMES` frames, and kernel memory within the bounds of the region
        // tables and `scratch_limit`, all derived just above from buffers this function
        // borrows mutably for the call. It calls nothing and returns an exit reason.
        state.reason = unsafe { (self.entry)(&raw mut state) };
        *pc = state.pc as usize;
        *depth = state.depth as usize;
        mem.stack_lo = STACK_TOTAL - *depth * FRAME_BYTES as usize;
        state
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
