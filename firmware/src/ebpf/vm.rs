//! The metered interpreter.
//!
//! A [`Vm`] owns every buffer a run needs (stack, scratch, context), allocated once in
//! [`Vm::new`]; a run allocates nothing. [`Vm::start`] sets up a run with a total fuel budget,
//! [`Vm::resume`] executes at most one slice of fuel and returns [`Step::Yielded`] so the
//! controller can serve I/O between slices, until the kernel exits or fails.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use common::abi::{self, region};
use common::program::{ExecFault, RunStats};

use super::helpers::{self, Env};
use super::image::Program;
use super::insn::{atomic, Op};
use super::mem::{Mem, STACK_TOTAL};

const FRAME: u64 = abi::STACK_BYTES as u64;
const MAX_DEPTH: usize = abi::MAX_CALL_DEPTH as usize;
/// `r10` of the entry frame: the top of the stack region.
const STACK_TOP: u64 = region::STACK_BASE + STACK_TOTAL as u64;

/// The caller-chosen fields of the kernel's context (`struct csd_ctx`). The VM fills in
/// `scratch_len` itself from its scratch size.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    /// One of [`abi::op`].
    pub op: u64,
    pub file_size: u64,
    pub offset: u64,
    pub len: u64,
    pub param0: u64,
    pub param1: u64,
    /// Most bytes `csd_emit` may append in this run (enforced by the VM).
    pub out_cap: u64,
}

impl Context {
    /// The `struct csd_ctx` bytes a kernel sees, with `scratch_len` bytes of scratch memory
    /// (little-endian fields at the offsets of [`abi::ctx`]).
    pub fn encode(&self, scratch_len: u32) -> [u8; abi::ctx::SIZE as usize] {
        let mut bytes = [0u8; abi::ctx::SIZE as usize];
        let fields = [
            (abi::ctx::OP, self.op),
            (abi::ctx::FILE_SIZE, self.file_size),
            (abi::ctx::OFFSET, self.offset),
            (abi::ctx::LEN, self.len),
            (abi::ctx::PARAM0, self.param0),
            (abi::ctx::PARAM1, self.param1),
            (abi::ctx::OUT_CAP, self.out_cap),
            (abi::ctx::SCRATCH_LEN, u64::from(scratch_len)),
        ];
        for (off, v) in fields {
            let off = off as usize;
            bytes[off..off + 8].copy_from_slice(&v.to_le_bytes());
        }
        bytes
    }
}

/// How a slice of execution ended without error.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The kernel returned `r0` from its entry function; the run is over.
    Exited { r0: u64 },
    /// The slice's fuel is used up; call [`Vm::resume`] again to continue.
    Yielded,
}

/// Why a run stopped with an error. `pc` is the index of the instruction slot at fault.
/// After an error the run is over.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExecError {
    /// The run's total fuel budget is used up after `instructions` instructions.
    OutOfFuel { instructions: u64 },
    /// A load or store of `len` bytes at `addr` is not wholly inside one region, or writes a
    /// read-only region (context, read-only data).
    MemoryFault {
        pc: u32,
        addr: u64,
        len: u32,
        write: bool,
    },
    /// Helper `helper` was handed `len` bytes at `addr` that are not inside one suitable
    /// region; the helper did not run.
    HelperFault {
        pc: u32,
        helper: u32,
        addr: u64,
        len: u64,
    },
    /// A bpf-to-bpf call would nest deeper than [`abi::MAX_CALL_DEPTH`] frames.
    CallDepthExceeded { pc: u32 },
    /// [`Vm::resume`] without a run in progress (never started, or already ended).
    NotRunning,
    /// [`Vm::resume`] was given another program than [`Vm::start`].
    ProgramMismatch,
}

impl ExecError {
    /// The wire form of this error for an Execute completion, if it is the kernel's fault
    /// (`None` for caller mistakes: [`ExecError::NotRunning`], [`ExecError::ProgramMismatch`]).
    pub fn fault(&self) -> Option<ExecFault> {
        Some(match *self {
            ExecError::OutOfFuel { .. } => ExecFault::OutOfFuel,
            ExecError::MemoryFault {
                pc,
                addr,
                len,
                write,
            } => ExecFault::MemoryFault {
                pc,
                addr,
                len,
                write,
            },
            ExecError::HelperFault {
                pc,
                helper,
                addr,
                len,
            } => ExecFault::HelperFault {
                pc,
                helper,
                addr,
                len,
            },
            ExecError::CallDepthExceeded { pc } => ExecFault::CallDepthExceeded { pc },
            ExecError::NotRunning | ExecError::ProgramMismatch => return None,
        })
    }
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ExecError::OutOfFuel { instructions } => write!(
                f,
                "kernel ran out of fuel after {instructions} instructions; raise the budget or shorten the work"
            ),
            ExecError::MemoryFault {
                pc,
                addr,
                len,
                write,
            } => write!(
                f,
                "kernel {} {len} bytes at {addr:#x} outside its memory (instruction {pc})",
                if write { "wrote" } else { "read" }
            ),
            ExecError::HelperFault {
                pc,
                helper,
                addr,
                len,
            } => write!(
                f,
                "kernel passed helper {helper} {len} bytes at {addr:#x} outside its memory (instruction {pc})"
            ),
            ExecError::CallDepthExceeded { pc } => write!(
                f,
                "kernel call at instruction {pc} nests deeper than {} frames",
                abi::MAX_CALL_DEPTH
            ),
            ExecError::NotRunning => write!(f, "no kernel run is in progress"),
            ExecError::ProgramMismatch => {
                write!(f, "resumed a run with another program than it started with")
            }
        }
    }
}

impl core::error::Error for ExecError {}

/// Saved state of a caller while a bpf-to-bpf callee runs (`repr(C)`: native code reads
/// and writes it).
#[derive(Copy, Clone, Debug, Default)]
#[repr(C)]
pub struct Frame {
    /// The caller's `r6`..`r9`.
    pub saved: [u64; 4],
    /// The instruction after the call.
    pub ret_pc: usize,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum State {
    Idle,
    Running,
}

/// Why a stretch of execution stopped (the interpreter's hot loop, or native code).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SliceEnd {
    /// The kernel returned `r0` from its entry function.
    Exit(u64),
    /// The budget is used up (or, for native code, too small for the next block).
    Fuel,
    /// The kernel faulted; the run is over.
    Fault(ExecError),
}

/// Native code for one verified program, run by [`Vm::resume_native`] a basic block at a
/// time.
///
/// Native code keeps a run's state in the interpreter's own form (registers, pc, call frames,
/// counters), so a run passes between the two at any block boundary: the interpreter takes
/// over wherever a slice ends inside a block, which keeps fuel exact to the instruction.
pub trait Native {
    /// Whether native code enters at instruction `pc` (a block start), and the instructions
    /// from `pc` to the end of its block (at least 1).
    fn block_at(&self, pc: usize) -> (bool, u64);
    /// Runs whole blocks from `*run.pc`, an entry whose block fits in `budget`, until the
    /// kernel exits or faults or the next block does not fit in what is left. Charges each
    /// block's instructions before running it, adds its instruction classes to `run.stats`,
    /// and calls helpers through [`super::helpers::call`].
    fn run(&self, run: NativeRun<'_>, env: &mut dyn Env, budget: i64) -> NativeExit;
}

/// A run's state lent to native code for one stretch.
#[derive(Debug)]
pub struct NativeRun<'a> {
    /// `r0`..`r10` (indices 11..15 unused).
    pub regs: &'a mut [u64; 16],
    pub pc: &'a mut usize,
    /// Live call frames, the entry frame included.
    pub depth: &'a mut usize,
    /// Saved callers: `frames[d - 1]` is the caller of the frame at depth `d + 1`.
    pub frames: &'a mut [Frame; MAX_DEPTH],
    /// The run's memory; `mem.stack_lo` matches `depth`.
    pub mem: Mem<'a>,
    pub stats: &'a mut RunStats,
    /// The context's `out_cap`, which `csd_emit` enforces.
    pub out_cap: u64,
}

/// How a stretch of native code ended.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct NativeExit {
    pub end: SliceEnd,
    /// The budget left (negative when a helper's cost overran it).
    pub budget_left: i64,
    /// Fuel charged by helpers (the rest of the fuel used is instructions).
    pub helper_fuel: u64,
}

/// Most call frames of a run.
pub const MAX_FRAMES: usize = MAX_DEPTH;
/// Bytes of one call frame of the stack.
pub const FRAME_BYTES: u64 = FRAME;
/// `r10` of the entry frame: the top of the stack region.
pub const STACK_TOP_ADDR: u64 = STACK_TOP;

/// An eBPF virtual machine: the buffers and registers of one run at a time.
#[derive(Debug)]
pub struct Vm {
    stack: Vec<u8>,
    scratch: Vec<u8>,
    ctx: [u8; abi::ctx::SIZE as usize],
    /// r0..r10; indices 11..15 are never used (they let register indices be masked, not
    /// bounds-checked).
    regs: [u64; 16],
    pc: usize,
    frames: [Frame; MAX_DEPTH],
    /// Live frames, the entry frame included.
    depth: usize,
    fuel_left: u64,
    stats: RunStats,
    state: State,
    prog_id: u64,
}

impl Vm {
    /// A VM with `scratch_bytes` of scratch memory and the full call stack, allocated now.
    pub fn new(scratch_bytes: u32) -> Vm {
        Vm {
            stack: vec![0; STACK_TOTAL],
            scratch: vec![0; scratch_bytes as usize],
            ctx: [0; abi::ctx::SIZE as usize],
            regs: [0; 16],
            pc: 0,
            frames: [Frame::default(); MAX_DEPTH],
            depth: 1,
            fuel_left: 0,
            stats: RunStats::default(),
            state: State::Idle,
            prog_id: 0,
        }
    }

    /// Bytes of scratch memory (what kernels see as `csd_ctx.scratch_len`).
    pub fn scratch_len(&self) -> u32 {
        // Created from a u32.
        self.scratch.len() as u32
    }

    /// The scratch memory as the last run left it.
    pub fn scratch(&self) -> &[u8] {
        &self.scratch
    }

    /// The stack memory as the last run left it (lowest address first).
    pub fn stack(&self) -> &[u8] {
        &self.stack
    }

    /// Counters of the current or last run.
    pub fn stats(&self) -> RunStats {
        self.stats
    }

    /// Begins a run of `program` with context `ctx` and a total budget of `fuel`: zeroes the
    /// stack and scratch, sets `r1` to the context and `r10` to the top of the entry frame.
    /// Abandons any run in progress.
    pub fn start(&mut self, program: &Program, ctx: &Context, fuel: u64) {
        self.stack.fill(0);
        self.scratch.fill(0);
        self.ctx = ctx.encode(self.scratch_len());
        self.regs = [0; 16];
        self.regs[1] = region::CTX_BASE;
        self.regs[10] = STACK_TOP;
        self.pc = 0;
        self.depth = 1;
        self.fuel_left = fuel;
        self.stats = RunStats::default();
        self.state = State::Running;
        self.prog_id = program.fingerprint;
    }

    /// Runs the started program for at most `slice` fuel (and never past the run's total).
    ///
    /// Returns [`Step::Exited`] when the kernel exits, [`Step::Yielded`] when the slice is
    /// used up with budget left, [`ExecError::OutOfFuel`] when the total budget is gone, or
    /// the kernel's fault. `program` must be the one given to [`Vm::start`].
    pub fn resume<E: Env + ?Sized>(
        &mut self,
        program: &Program,
        env: &mut E,
        slice: u64,
    ) -> Result<Step, ExecError> {
        let budget = self.slice_budget(program, slice)?;
        let (end, left, helper_fuel) = self.run(program, env, budget);
        self.end_slice(budget, end, left, helper_fuel)
    }

    /// [`Vm::resume`] with native code for `program`: whole blocks run natively, and the
    /// interpreter runs where a block does not fit the slice (and where a run stopped inside
    /// one). Same results, faults, fuel and counters as [`Vm::resume`].
    pub fn resume_native<N: Native + ?Sized>(
        &mut self,
        program: &Program,
        native: &N,
        env: &mut dyn Env,
        slice: u64,
    ) -> Result<Step, ExecError> {
        let budget = self.slice_budget(program, slice)?;
        let mut left = budget;
        let mut helper_fuel = 0;
        let end = loop {
            if left <= 0 {
                break SliceEnd::Fuel;
            }
            let (entry, rest) = native.block_at(self.pc);
            let rest = rest.clamp(1, i64::MAX as u64) as i64;
            let end = if entry && rest <= left {
                let out_cap = u64::from_le_bytes(self.ctx_field(abi::ctx::OUT_CAP));
                let stack_lo = STACK_TOTAL - self.depth * FRAME as usize;
                let exit = native.run(
                    NativeRun {
                        regs: &mut self.regs,
                        pc: &mut self.pc,
                        depth: &mut self.depth,
                        frames: &mut self.frames,
                        mem: Mem {
                            ctx: &self.ctx,
                            stack: &mut self.stack,
                            stack_lo,
                            scratch: &mut self.scratch,
                            rodata: &program.rodata,
                        },
                        stats: &mut self.stats,
                        out_cap,
                    },
                    env,
                    left,
                );
                left = exit.budget_left;
                helper_fuel += exit.helper_fuel;
                exit.end
            } else {
                let part = rest.min(left);
                let (end, part_left, part_helpers) = self.run(program, env, part);
                left -= part - part_left;
                helper_fuel += part_helpers;
                end
            };
            if end != SliceEnd::Fuel {
                break end;
            }
        };
        self.end_slice(budget, end, left, helper_fuel)
    }

    /// Checks that `program`'s run is in progress; the fuel of a slice of at most `slice`.
    fn slice_budget(&self, program: &Program, slice: u64) -> Result<i64, ExecError> {
        if self.state != State::Running {
            return Err(ExecError::NotRunning);
        }
        if self.prog_id != program.fingerprint {
            return Err(ExecError::ProgramMismatch);
        }
        Ok(slice.min(self.fuel_left).min(i64::MAX as u64) as i64)
    }

    /// Books a slice that started with `budget` and ended with `left`.
    fn end_slice(
        &mut self,
        budget: i64,
        end: SliceEnd,
        left: i64,
        helper_fuel: u64,
    ) -> Result<Step, ExecError> {
        let consumed = (budget - left) as u64;
        self.stats.fuel_used += consumed;
        self.stats.instructions += consumed - helper_fuel;
        self.fuel_left = self.fuel_left.saturating_sub(consumed);
        match end {
            SliceEnd::Exit(r0) => {
                self.state = State::Idle;
                Ok(Step::Exited { r0 })
            }
            SliceEnd::Fault(e) => {
                self.state = State::Idle;
                Err(e)
            }
            SliceEnd::Fuel if self.fuel_left == 0 => {
                self.state = State::Idle;
                Err(ExecError::OutOfFuel {
                    instructions: self.stats.instructions,
                })
            }
            SliceEnd::Fuel => Ok(Step::Yielded),
        }
    }

    /// Starts and runs `program` to its end in one slice.
    pub fn run_to_end<E: Env + ?Sized>(
        &mut self,
        program: &Program,
        ctx: &Context,
        env: &mut E,
        fuel: u64,
    ) -> Result<(u64, RunStats), ExecError> {
        self.start(program, ctx, fuel);
        match self.resume(program, env, fuel)? {
            Step::Exited { r0 } => Ok((r0, self.stats)),
            // Unreachable: the slice is the whole budget.
            Step::Yielded => Err(ExecError::OutOfFuel {
                instructions: self.stats.instructions,
            }),
        }
    }

    /// The hot loop. Returns why it stopped, the budget left (negative when a helper's cost
    /// overran it) and the fuel helpers took.
    fn run<E: Env + ?Sized>(
        &mut self,
        program: &Program,
        env: &mut E,
        mut budget: i64,
    ) -> (SliceEnd, i64, u64) {
        let insns = program.insns.as_slice();
        let out_cap = u64::from_le_bytes(self.ctx_field(abi::ctx::OUT_CAP));
        let mut r = self.regs;
        let mut pc = self.pc;
        let mut depth = self.depth;
        let mut helper_fuel = 0u64;
        // Instructions by class (see `RunStats`); the ALU class is what is left.
        let (mut memory, mut branches, mut calls) = (0u64, 0u64, 0u64);
        let frames = &mut self.frames;
        let stats = &mut self.stats;
        let mut mem = Mem {
            ctx: &self.ctx,
            stack: &mut self.stack,
            stack_lo: STACK_TOTAL - depth * FRAME as usize,
            scratch: &mut self.scratch,
            rodata: &program.rodata,
        };

        let stop = loop {
            if budget <= 0 {
                break SliceEnd::Fuel;
            }
            budget -= 1;
            let Some(&i) = insns.get(pc) else {
                // The verifier rules this out (no fall-through past the end).
                break SliceEnd::Fault(ExecError::MemoryFault {
                    pc: pc as u32,
                    addr: 0,
                    len: 0,
                    write: false,
                });
            };
            let at = pc as u32;
            pc += 1;
            let d = usize::from(i.dst & 15);
            let s = usize::from(i.src & 15);
            let imm = i.imm;

            macro_rules! load {
                ($n:literal, $conv:expr) => {{
                    memory += 1;
                    let addr = r[s].wrapping_add(i.off as i64 as u64);
                    match mem.load::<$n>(addr) {
                        Some(b) => r[d] = $conv(b),
                        None => break fault(at, addr, $n, false),
                    }
                }};
            }
            macro_rules! store {
                ($n:literal, $bytes:expr) => {{
                    memory += 1;
                    let addr = r[d].wrapping_add(i.off as i64 as u64);
                    if mem.store::<$n>(addr, $bytes).is_none() {
                        break fault(at, addr, $n, true);
                    }
                }};
            }
            macro_rules! jump_if {
                ($cond:expr) => {{
                    branches += 1;
                    if $cond {
                        pc = i.off as usize;
                    }
                }};
            }

            match i.op {
                Op::Add64Imm => r[d] = r[d].wrapping_add(imm),
                Op::Add64Reg => r[d] = r[d].wrapping_add(r[s]),
                Op::Sub64Imm => r[d] = r[d].wrapping_sub(imm),
                Op::Sub64Reg => r[d] = r[d].wrapping_sub(r[s]),
                Op::Mul64Imm => r[d] = r[d].wrapping_mul(imm),
                Op::Mul64Reg => r[d] = r[d].wrapping_mul(r[s]),
                Op::Div64Imm => r[d] = r[d].checked_div(imm).unwrap_or(0),
                Op::Div64Reg => r[d] = r[d].checked_div(r[s]).unwrap_or(0),
                Op::SDiv64Imm => r[d] = sdiv64(r[d], imm),
                Op::SDiv64Reg => r[d] = sdiv64(r[d], r[s]),
                Op::Mod64Imm => r[d] = r[d].checked_rem(imm).unwrap_or(r[d]),
                Op::Mod64Reg => r[d] = r[d].checked_rem(r[s]).unwrap_or(r[d]),
                Op::SMod64Imm => r[d] = smod64(r[d], imm),
                Op::SMod64Reg => r[d] = smod64(r[d], r[s]),
                Op::Or64Imm => r[d] |= imm,
                Op::Or64Reg => r[d] |= r[s],
                Op::And64Imm => r[d] &= imm,
                Op::And64Reg => r[d] &= r[s],
                Op::Xor64Imm => r[d] ^= imm,
                Op::Xor64Reg => r[d] ^= r[s],
                Op::Lsh64Imm => r[d] = r[d].wrapping_shl(imm as u32),
                Op::Lsh64Reg => r[d] = r[d].wrapping_shl(r[s] as u32),
                Op::Rsh64Imm => r[d] = r[d].wrapping_shr(imm as u32),
                Op::Rsh64Reg => r[d] = r[d].wrapping_shr(r[s] as u32),
                Op::Arsh64Imm => r[d] = (r[d] as i64).wrapping_shr(imm as u32) as u64,
                Op::Arsh64Reg => r[d] = (r[d] as i64).wrapping_shr(r[s] as u32) as u64,
                Op::Neg64 => r[d] = r[d].wrapping_neg(),
                Op::Mov64Imm => r[d] = imm,
                Op::Mov64Reg => r[d] = r[s],
                Op::MovSx64B => r[d] = r[s] as i8 as i64 as u64,
                Op::MovSx64H => r[d] = r[s] as i16 as i64 as u64,
                Op::MovSx64W => r[d] = r[s] as i32 as i64 as u64,

                Op::Add32Imm => r[d] = u64::from((r[d] as u32).wrapping_add(imm as u32)),
                Op::Add32Reg => r[d] = u64::from((r[d] as u32).wrapping_add(r[s] as u32)),
                Op::Sub32Imm => r[d] = u64::from((r[d] as u32).wrapping_sub(imm as u32)),
                Op::Sub32Reg => r[d] = u64::from((r[d] as u32).wrapping_sub(r[s] as u32)),
                Op::Mul32Imm => r[d] = u64::from((r[d] as u32).wrapping_mul(imm as u32)),
                Op::Mul32Reg => r[d] = u64::from((r[d] as u32).wrapping_mul(r[s] as u32)),
                Op::Div32Imm => r[d] = u64::from(div32(r[d], imm)),
                Op::Div32Reg => r[d] = u64::from(div32(r[d], r[s])),
                Op::SDiv32Imm => r[d] = u64::from(sdiv32(r[d], imm)),
                Op::SDiv32Reg => r[d] = u64::from(sdiv32(r[d], r[s])),
                Op::Mod32Imm => r[d] = u64::from(mod32(r[d], imm)),
                Op::Mod32Reg => r[d] = u64::from(mod32(r[d], r[s])),
                Op::SMod32Imm => r[d] = u64::from(smod32(r[d], imm)),
                Op::SMod32Reg => r[d] = u64::from(smod32(r[d], r[s])),
                Op::Or32Imm => r[d] = u64::from(r[d] as u32 | imm as u32),
                Op::Or32Reg => r[d] = u64::from(r[d] as u32 | r[s] as u32),
                Op::And32Imm => r[d] = u64::from(r[d] as u32 & imm as u32),
                Op::And32Reg => r[d] = u64::from(r[d] as u32 & r[s] as u32),
                Op::Xor32Imm => r[d] = u64::from(r[d] as u32 ^ imm as u32),
                Op::Xor32Reg => r[d] = u64::from(r[d] as u32 ^ r[s] as u32),
                Op::Lsh32Imm => r[d] = u64::from((r[d] as u32).wrapping_shl(imm as u32)),
                Op::Lsh32Reg => r[d] = u64::from((r[d] as u32).wrapping_shl(r[s] as u32)),
                Op::Rsh32Imm => r[d] = u64::from((r[d] as u32).wrapping_shr(imm as u32)),
                Op::Rsh32Reg => r[d] = u64::from((r[d] as u32).wrapping_shr(r[s] as u32)),
                Op::Arsh32Imm => r[d] = u64::from((r[d] as i32).wrapping_shr(imm as u32) as u32),
                Op::Arsh32Reg => r[d] = u64::from((r[d] as i32).wrapping_shr(r[s] as u32) as u32),
                Op::Neg32 => r[d] = u64::from((r[d] as u32).wrapping_neg()),
                Op::Mov32Imm => r[d] = u64::from(imm as u32),
                Op::Mov32Reg => r[d] = u64::from(r[s] as u32),
                Op::MovSx32B => r[d] = u64::from(r[s] as i8 as i32 as u32),
                Op::MovSx32H => r[d] = u64::from(r[s] as i16 as i32 as u32),

                Op::ZeroExt16 => r[d] = u64::from(r[d] as u16),
                Op::ZeroExt32 => r[d] = u64::from(r[d] as u32),
                Op::Nop => {}
                Op::Swap16 => r[d] = u64::from((r[d] as u16).swap_bytes()),
                Op::Swap32 => r[d] = u64::from((r[d] as u32).swap_bytes()),
                Op::Swap64 => r[d] = r[d].swap_bytes(),

                Op::Ldx8 => load!(1, |b: [u8; 1]| u64::from(b[0])),
                Op::Ldx16 => load!(2, |b| u64::from(u16::from_le_bytes(b))),
                Op::Ldx32 => load!(4, |b| u64::from(u32::from_le_bytes(b))),
                Op::Ldx64 => load!(8, u64::from_le_bytes),
                Op::Ldsx8 => load!(1, |b: [u8; 1]| b[0] as i8 as i64 as u64),
                Op::Ldsx16 => load!(2, |b| i16::from_le_bytes(b) as i64 as u64),
                Op::Ldsx32 => load!(4, |b| i32::from_le_bytes(b) as i64 as u64),
                Op::St8 => store!(1, [imm as u8]),
                Op::St16 => store!(2, (imm as u16).to_le_bytes()),
                Op::St32 => store!(4, (imm as u32).to_le_bytes()),
                Op::St64 => store!(8, imm.to_le_bytes()),
                Op::Stx8 => store!(1, [r[s] as u8]),
                Op::Stx16 => store!(2, (r[s] as u16).to_le_bytes()),
                Op::Stx32 => store!(4, (r[s] as u32).to_le_bytes()),
                Op::Stx64 => store!(8, r[s].to_le_bytes()),
                Op::Atomic32 | Op::Atomic64 => {
                    memory += 1;
                    let wide = i.op == Op::Atomic64;
                    let addr = r[d].wrapping_add(i.off as i64 as u64);
                    if atomic_rmw(&mut mem, &mut r, addr, s, imm as i32, wide).is_none() {
                        break fault(at, addr, if wide { 8 } else { 4 }, true);
                    }
                }
                Op::Lddw => {
                    r[d] = imm;
                    pc += 1;
                }

                Op::Ja => {
                    branches += 1;
                    pc = i.off as usize;
                }
                Op::JeqImm => jump_if!(r[d] == imm),
                Op::JeqReg => jump_if!(r[d] == r[s]),
                Op::JgtImm => jump_if!(r[d] > imm),
                Op::JgtReg => jump_if!(r[d] > r[s]),
                Op::JgeImm => jump_if!(r[d] >= imm),
                Op::JgeReg => jump_if!(r[d] >= r[s]),
                Op::JltImm => jump_if!(r[d] < imm),
                Op::JltReg => jump_if!(r[d] < r[s]),
                Op::JleImm => jump_if!(r[d] <= imm),
                Op::JleReg => jump_if!(r[d] <= r[s]),
                Op::JsetImm => jump_if!(r[d] & imm != 0),
                Op::JsetReg => jump_if!(r[d] & r[s] != 0),
                Op::JneImm => jump_if!(r[d] != imm),
                Op::JneReg => jump_if!(r[d] != r[s]),
                Op::JsgtImm => jump_if!((r[d] as i64) > imm as i64),
                Op::JsgtReg => jump_if!((r[d] as i64) > r[s] as i64),
                Op::JsgeImm => jump_if!((r[d] as i64) >= imm as i64),
                Op::JsgeReg => jump_if!((r[d] as i64) >= r[s] as i64),
                Op::JsltImm => jump_if!((r[d] as i64) < imm as i64),
                Op::JsltReg => jump_if!((r[d] as i64) < r[s] as i64),
                Op::JsleImm => jump_if!((r[d] as i64) <= imm as i64),
                Op::JsleReg => jump_if!((r[d] as i64) <= r[s] as i64),
                Op::Jeq32Imm => jump_if!(r[d] as u32 == imm as u32),
                Op::Jeq32Reg => jump_if!(r[d] as u32 == r[s] as u32),
                Op::Jgt32Imm => jump_if!(r[d] as u32 > imm as u32),
                Op::Jgt32Reg => jump_if!(r[d] as u32 > r[s] as u32),
                Op::Jge32Imm => jump_if!(r[d] as u32 >= imm as u32),
                Op::Jge32Reg => jump_if!(r[d] as u32 >= r[s] as u32),
                Op::Jlt32Imm => jump_if!((r[d] as u32) < imm as u32),
                Op::Jlt32Reg => jump_if!((r[d] as u32) < r[s] as u32),
                Op::Jle32Imm => jump_if!(r[d] as u32 <= imm as u32),
                Op::Jle32Reg => jump_if!(r[d] as u32 <= r[s] as u32),
                Op::Jset32Imm => jump_if!(r[d] as u32 & imm as u32 != 0),
                Op::Jset32Reg => jump_if!(r[d] as u32 & r[s] as u32 != 0),
                Op::Jne32Imm => jump_if!(r[d] as u32 != imm as u32),
                Op::Jne32Reg => jump_if!(r[d] as u32 != r[s] as u32),
                Op::Jsgt32Imm => jump_if!((r[d] as i32) > imm as i32),
                Op::Jsgt32Reg => jump_if!((r[d] as i32) > r[s] as i32),
                Op::Jsge32Imm => jump_if!((r[d] as i32) >= imm as i32),
                Op::Jsge32Reg => jump_if!((r[d] as i32) >= r[s] as i32),
                Op::Jslt32Imm => jump_if!((r[d] as i32) < imm as i32),
                Op::Jslt32Reg => jump_if!((r[d] as i32) < r[s] as i32),
                Op::Jsle32Imm => jump_if!((r[d] as i32) <= imm as i32),
                Op::Jsle32Reg => jump_if!((r[d] as i32) <= r[s] as i32),

                Op::CallHelper => {
                    calls += 1;
                    match helpers::call(imm as u32, at, &mut r, &mut mem, env, out_cap, stats) {
                        Ok(cost) => {
                            helper_fuel += cost;
                            budget = budget.saturating_sub(cost.min(i64::MAX as u64) as i64);
                        }
                        Err(e) => break SliceEnd::Fault(e),
                    }
                }
                Op::CallLocal => {
                    calls += 1;
                    if depth >= MAX_DEPTH {
                        break SliceEnd::Fault(ExecError::CallDepthExceeded { pc: at });
                    }
                    frames[depth - 1] = Frame {
                        saved: [r[6], r[7], r[8], r[9]],
                        ret_pc: pc,
                    };
                    depth += 1;
                    r[10] -= FRAME;
                    mem.stack_lo -= FRAME as usize;
                    pc = i.off as usize;
                }
                Op::Exit => {
                    calls += 1;
                    if depth == 1 {
                        break SliceEnd::Exit(r[0]);
                    }
                    depth -= 1;
                    let f = frames[depth - 1];
                    r[6..10].copy_from_slice(&f.saved);
                    r[10] += FRAME;
                    mem.stack_lo += FRAME as usize;
                    pc = f.ret_pc;
                }
                Op::WideSecondHalf => {
                    // Unreachable after verification; treat as a no-op rather than panic.
                }
            }
        };
        self.regs = r;
        self.pc = pc;
        self.depth = depth;
        self.stats.memory_insns += memory;
        self.stats.branch_insns += branches;
        self.stats.call_insns += calls;
        (stop, budget, helper_fuel)
    }

    fn ctx_field(&self, off: u32) -> [u8; 8] {
        let mut b = [0u8; 8];
        let off = off as usize;
        b.copy_from_slice(&self.ctx[off..off + 8]);
        b
    }
}

/// Creates a VM with [`abi::DEFAULT_SCRATCH_BYTES`] of scratch and runs `program` to its
/// end. Allocates the VM: for tests and the host, not the device's hot path.
pub fn run_to_end<E: Env + ?Sized>(
    program: &Program,
    ctx: &Context,
    env: &mut E,
    fuel: u64,
) -> Result<(u64, RunStats), ExecError> {
    Vm::new(abi::DEFAULT_SCRATCH_BYTES).run_to_end(program, ctx, env, fuel)
}

#[cold]
fn fault(pc: u32, addr: u64, len: u32, write: bool) -> SliceEnd {
    SliceEnd::Fault(ExecError::MemoryFault {
        pc,
        addr,
        len,
        write,
    })
}

#[inline(always)]
fn sdiv64(a: u64, b: u64) -> u64 {
    match b {
        0 => 0,
        _ => (a as i64).wrapping_div(b as i64) as u64,
    }
}

#[inline(always)]
fn smod64(a: u64, b: u64) -> u64 {
    match b {
        0 => a,
        _ => (a as i64).wrapping_rem(b as i64) as u64,
    }
}

#[inline(always)]
fn div32(a: u64, b: u64) -> u32 {
    (a as u32).checked_div(b as u32).unwrap_or(0)
}

#[inline(always)]
fn mod32(a: u64, b: u64) -> u32 {
    (a as u32).checked_rem(b as u32).unwrap_or(a as u32)
}

#[inline(always)]
fn sdiv32(a: u64, b: u64) -> u32 {
    match b as u32 {
        0 => 0,
        _ => (a as i32).wrapping_div(b as i32) as u32,
    }
}

#[inline(always)]
fn smod32(a: u64, b: u64) -> u32 {
    match b as u32 {
        0 => a as u32,
        _ => (a as i32).wrapping_rem(b as i32) as u32,
    }
}

/// Atomic read-modify-write (single-threaded, so plain). `None` on a memory fault.
#[inline(never)]
fn atomic_rmw(
    mem: &mut Mem<'_>,
    r: &mut [u64; 16],
    addr: u64,
    s: usize,
    op: i32,
    wide: bool,
) -> Option<()> {
    let old = if wide {
        u64::from_le_bytes(mem.load::<8>(addr)?)
    } else {
        u64::from(u32::from_le_bytes(mem.load::<4>(addr)?))
    };
    let src = r[s];
    let new = match op & !atomic::FETCH {
        atomic::ADD => old.wrapping_add(src),
        atomic::OR => old | src,
        atomic::AND => old & src,
        atomic::XOR => old ^ src,
        0xe0 => src, // xchg
        _ => {
            // cmpxchg: compare with r0, write src if equal; r0 gets the old value.
            let expected = if wide { r[0] } else { u64::from(r[0] as u32) };
            let new = if old == expected { src } else { old };
            r[0] = old;
            return store(mem, addr, new, wide);
        }
    };
    store(mem, addr, new, wide)?;
    if op & atomic::FETCH != 0 {
        r[s] = old;
    }
    Some(())
}

fn store(mem: &mut Mem<'_>, addr: u64, v: u64, wide: bool) -> Option<()> {
    if wide {
        mem.store::<8>(addr, v.to_le_bytes())
    } else {
        mem.store::<4>(addr, (v as u32).to_le_bytes())
    }
}
