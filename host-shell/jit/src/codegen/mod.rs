//! Translation of a verified program into Cranelift IR: one function per program, one IR
//! block per basic block ([`Blocks`]), eBPF registers in SSA variables.
//!
//! The function takes the [`State`](crate::native) pointer, enters at the state's `pc` through
//! a jump table over block starts, and returns an exit reason ([`exit`]) with the registers,
//! budget, counters and `pc` written back. Each block first checks that all of its
//! instructions fit the budget (otherwise it returns, and the interpreter runs the part that
//! fits), then charges them and adds its instruction classes to the counters. A fault inside
//! a block gives back what the block charged for the instructions after the faulting one, so
//! fuel and counters match the interpreter's, which charges as it goes.

use cranelift_codegen::ir::{
    condcodes::IntCC, types, Block, BlockArg, FuncRef, InstBuilder, JumpTableData, MemFlagsData,
    Type, Value,
};
use cranelift_frontend::{FunctionBuilder, Variable};
use firmware::ebpf::{Insn, Op, FRAME_BYTES, MAX_FRAMES};

use crate::blocks::{ends_block, is_jump, next_pc, Blocks};
use crate::live::{self, Regs};
use crate::native::{classes, exit, field, STACK_REGION};

mod memory;
mod unchecked;

pub(crate) use unchecked::{loops_of, translate_loop, Loop};

const I8: Type = types::I8;
const I16: Type = types::I16;
const I32: Type = types::I32;
const I64: Type = types::I64;

/// Instruction classes of a stretch of instructions, as `RunStats` counts them.
#[derive(Copy, Clone, Debug, Default)]
struct Classes {
    insns: i64,
    memory: i64,
    branches: i64,
    calls: i64,
}

impl Classes {
    /// The three counters as the `classes` variable adds them.
    fn packed(self) -> i64 {
        classes::pack(self.memory as u64, self.branches as u64, self.calls as u64) as i64
    }

    fn add(&mut self, op: Op) {
        self.insns += 1;
        if is_memory(op) {
            self.memory += 1;
        } else if is_jump(op) {
            self.branches += 1;
        } else if matches!(op, Op::CallHelper | Op::CallLocal | Op::Exit) {
            self.calls += 1;
        }
    }
}

fn is_memory(op: Op) -> bool {
    (Op::Ldx8 as u8..=Op::Atomic64 as u8).contains(&(op as u8))
}

/// The binary ALU operations.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Bin {
    Add,
    Sub,
    Mul,
    Div,
    SDiv,
    Mod,
    SMod,
    Or,
    And,
    Xor,
    Lsh,
    Rsh,
    Arsh,
}

/// The register a field names, `r0` to `r10` (the verifier refuses any other, so nothing
/// past `r10` is ever used).
fn reg_index(i: u8) -> u8 {
    (i & 15).min(10)
}

/// Where `r10` is in the VM's registers. Native code keeps `r10` there rather than in a
/// value of its own: it changes only at calls and returns, and a value live everywhere would
/// hold a machine register in every loop.
const R10_AT: i32 = 8 * 10;

/// The memory flags of kernel memory: checked before every access (so no trap), maybe
/// unaligned.
fn kernel_mem() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// The flags of the state and frame fields: aligned, always mapped.
fn host_mem() -> MemFlagsData {
    MemFlagsData::trusted()
}

/// The flags of state fields that no code writes during a stretch (pointers, bounds).
fn fixed() -> MemFlagsData {
    MemFlagsData::trusted().with_readonly().with_can_move()
}

/// Builds the function body for `insns` into `b`, whose signature is `(ptr) -> i32`;
/// `loop_fns` are the functions [`translate_loop`] built for its [`Loop`]s.
pub(crate) fn translate<'a>(
    b: FunctionBuilder<'_>,
    insns: &'a [Insn],
    blocks: &'a Blocks,
    loop_fns: Vec<(&'a Loop, FuncRef)>,
    isa: &dyn cranelift_codegen::isa::TargetIsa,
) {
    let mut g = Gen::new(b, insns, blocks, loop_fns);
    g.body();
    g.b.seal_all_blocks();
    g.b.finalize(isa.frontend_config());
}

/// The instruction classes of `pcs`.
fn classes_of(insns: &[Insn], pcs: &[usize]) -> Classes {
    let mut total = Classes::default();
    for &pc in pcs {
        total.add(insns[pc].op);
    }
    total
}

/// The instructions of the block at `start`.
fn block_pcs(insns: &[Insn], blocks: &Blocks, start: usize) -> Vec<usize> {
    let mut pcs = Vec::new();
    let mut pc = start;
    loop {
        let op = insns[pc].op;
        pcs.push(pc);
        let next = next_pc(insns, pc);
        if ends_block(op) || next >= insns.len() || blocks.start[next] {
            return pcs;
        }
        pc = next;
    }
}

struct Gen<'a, 'f> {
    b: FunctionBuilder<'f>,
    insns: &'a [Insn],
    blocks: &'a Blocks,
    /// IR block of every slot where a basic block starts: where jumps inside the code go
    /// (a head's budget check, or straight to the body).
    block_of: Vec<Option<Block>>,
    /// The block's instructions, after any check.
    body_of: Vec<Option<Block>>,
    /// Registers live on entry to each slot.
    live: Vec<Regs>,
    /// Enters the code at a pc: param (pc: i64).
    dispatch: Block,
    /// Where a jump to a slot without a block would go: back to the interpreter, at a pc
    /// past the program (where it faults).
    nowhere: Block,
    /// Returns from a local call to a pc: param (pc: i64).
    returns: Block,
    state: Value,
    /// Checked accesses of the current basic block, for later accesses at the same address.
    checked: Vec<memory::Checked>,
    /// Emitting a loop's unchecked copy: its guard proved every access inside scratch.
    unchecked: bool,
    /// The one-block loops with functions that run them unchecked.
    loop_fns: Vec<(&'a Loop, FuncRef)>,
    r: [Variable; 11],
    budget: Variable,
    /// Instruction classes, packed ([`classes`]).
    classes: Variable,
}

impl<'a, 'f> Gen<'a, 'f> {
    /// The kernel's function: enters at the state's `pc` with its budget.
    fn new(
        mut b: FunctionBuilder<'f>,
        insns: &'a [Insn],
        blocks: &'a Blocks,
        loop_fns: Vec<(&'a Loop, FuncRef)>,
    ) -> Self {
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let state = b.block_params(entry)[0];
        let mut g = Gen::parts(b, insns, blocks, state, loop_fns);
        let v = g.b.ins().load(I64, host_mem(), state, field::BUDGET);
        g.b.def_var(g.budget, v);
        let zero = g.b.ins().iconst(I64, 0);
        g.b.def_var(g.classes, zero);
        let pc = g.b.ins().load(I64, host_mem(), state, field::PC);
        g.b.ins().jump(g.dispatch, &[BlockArg::Value(pc)]);
        g
    }

    /// What code for `insns` is built with, in the current block of `b` (`state`: the
    /// state pointer there).
    fn parts(
        mut b: FunctionBuilder<'f>,
        insns: &'a [Insn],
        blocks: &'a Blocks,
        state: Value,
        loop_fns: Vec<(&'a Loop, FuncRef)>,
    ) -> Self {
        // Registers are loaded where the code is entered, each block its live ones.
        let r: [Variable; 11] = std::array::from_fn(|_| b.declare_var(I64));
        let budget = b.declare_var(I64);
        let classes = b.declare_var(I64);
        let dispatch = b.create_block();
        b.append_block_param(dispatch, I64);
        let returns = b.create_block();
        b.append_block_param(returns, I64);
        let nowhere = b.create_block();

        let block_of: Vec<Option<Block>> = blocks
            .start
            .iter()
            .map(|&s| s.then(|| b.create_block()))
            .collect();
        let body_of = block_of
            .iter()
            .zip(&blocks.head)
            .map(|(block, &head)| block.map(|block| if head { b.create_block() } else { block }))
            .collect();
        Gen {
            b,
            insns,
            blocks,
            live: live::live_in(insns),
            block_of,
            body_of,
            dispatch,
            nowhere,
            returns,
            state,
            checked: Vec::new(),
            unchecked: false,
            loop_fns,
            r,
            budget,
            classes,
        }
    }

    fn body(&mut self) {
        self.emit_dispatch();
        self.b.switch_to_block(self.nowhere);
        self.b.set_cold_block(self.nowhere);
        self.leave(exit::ELSEWHERE, self.insns.len(), live::ALL);
        for pc in 0..self.insns.len() {
            if let Some(block) = self.block_of[pc] {
                self.emit_block(pc, block);
            }
        }
    }

    /// `dispatch(pc)`, the way in: a jump table over the slots to a stub per block that
    /// loads the block's live registers from the VM; a slot that starts no block returns
    /// [`exit::ELSEWHERE`] for the interpreter. `returns(pc)`, the way back from a local call:
    /// a jump table over the call sites' next slots, registers staying where they are.
    fn emit_dispatch(&mut self) {
        let elsewhere = self.b.create_block();
        self.b.append_block_param(elsewhere, I64);
        self.b.set_cold_block(elsewhere);
        let mut stubs = Vec::with_capacity(self.block_of.len());
        for pc in 0..self.block_of.len() {
            stubs.push(self.body_of[pc].map(|body| {
                let stub = self.b.create_block();
                self.b.switch_to_block(stub);
                if self.blocks.head[pc] {
                    // Through the head's own check (and a loop's guard after it).
                    self.load_regs(self.live[pc]);
                    self.b.ins().jump(self.block_of[pc].unwrap_or(body), &[]);
                    return stub;
                }
                // Entered from outside, any other block checks its reach (the registers are
                // still in the VM if it does not fit).
                let loaded = self.b.create_block();
                self.check_reach(pc, loaded, 0);
                self.b.switch_to_block(loaded);
                self.load_regs(self.live[pc]);
                self.b.ins().jump(body, &[]);
                stub
            }));
        }
        self.jump_table(self.dispatch, &stubs, elsewhere);
        self.b.switch_to_block(elsewhere);
        let pc = self.b.block_params(elsewhere)[0];
        self.finish(exit::ELSEWHERE, pc);

        let mut sites = vec![None; self.block_of.len()];
        for (pc, insn) in self.insns.iter().enumerate() {
            if insn.op == Op::CallLocal {
                if let Some(site) = sites.get_mut(pc + 1) {
                    *site = self.block_of[pc + 1];
                }
            }
        }
        let lost = self.b.create_block();
        self.b.append_block_param(lost, I64);
        self.b.set_cold_block(lost);
        self.jump_table(self.returns, &sites, lost);
        // Unreachable (return addresses are call sites' next slots): the interpreter decides.
        self.b.switch_to_block(lost);
        let pc = self.b.block_params(lost)[0];
        self.store_regs(live::ALL);
        self.finish(exit::ELSEWHERE, pc);
    }

    /// Fills `from(pc)` with a jump table to `targets[pc]`, `default` (given `pc`) elsewhere.
    fn jump_table(&mut self, from: Block, targets: &[Option<Block>], default: Block) {
        self.b.switch_to_block(from);
        let pc = self.b.block_params(from)[0];
        let args = [BlockArg::Value(pc)];
        let fallback = self.b.func.dfg.block_call(default, &args);
        let table: Vec<_> = targets
            .iter()
            .map(|target| match target {
                Some(block) => self.b.func.dfg.block_call(*block, &[]),
                None => self.b.func.dfg.block_call(default, &args),
            })
            .collect();
        let jt = self
            .b
            .create_jump_table(JumpTableData::new(fallback, &table));
        // Slots number at most 65,536, and a pc past them takes the default.
        let past = self
            .b
            .ins()
            .icmp_imm_s(IntCC::UnsignedGreaterThan, pc, 1 << 20);
        let clamped = self.b.ins().iconst(I64, 1 << 20);
        let pc = self.b.ins().select(past, clamped, pc);
        let index = self.b.ins().ireduce(I32, pc);
        self.b.ins().br_table(index, jt);
    }

    /// Reads the registers in `regs` from the VM.
    fn load_regs(&mut self, regs: Regs) {
        let base = self.fixed_field(field::REGS);
        for i in 0..10 {
            if regs & (1 << i) != 0 {
                let v = self.b.ins().load(I64, host_mem(), base, 8 * i as i32);
                self.b.def_var(self.r[i], v);
            }
        }
    }

    /// Writes the registers in `regs` back to the VM.
    fn store_regs(&mut self, regs: Regs) {
        if regs == 0 {
            return;
        }
        let base = self.fixed_field(field::REGS);
        for i in 0..10 {
            if regs & (1 << i) != 0 {
                let v = self.b.use_var(self.r[i]);
                self.b.ins().store(host_mem(), v, base, 8 * i as i32);
            }
        }
    }

    /// Writes the budget, counters and `pc` back and returns `reason`. Every exit returns on
    /// its own: one shared exit block would tie the budget's and counters' live ranges
    /// together across the whole function, and the register allocator would keep them in
    /// memory.
    fn finish(&mut self, reason: u32, pc: Value) {
        let fields = [(self.budget, field::BUDGET), (self.classes, field::CLASSES)];
        for (var, off) in fields {
            let v = self.b.use_var(var);
            self.b.ins().store(host_mem(), v, self.state, off);
        }
        self.b.ins().store(host_mem(), pc, self.state, field::PC);
        let reason = self.b.ins().iconst(I32, i64::from(reason));
        self.b.ins().return_(&[reason]);
    }

    /// Writes the registers `regs` back and returns `reason` at `pc`.
    fn leave(&mut self, reason: u32, pc: usize, regs: Regs) {
        self.store_regs(regs);
        let pc = self.b.ins().iconst(I64, pc as i64);
        self.finish(reason, pc);
    }

    /// Jumps to the block starting at `pc`, or leaves for the interpreter if none does (the
    /// verifier rules out running off the end; the interpreter reports it if it ever did).
    fn goto(&mut self, pc: usize) {
        match self.block_of.get(pc).copied().flatten() {
            Some(block) => {
                self.b.ins().jump(block, &[]);
            }
            None => self.leave(exit::ELSEWHERE, pc, live::ALL),
        }
    }

    fn block_at(&self, pc: usize) -> Block {
        // Jump and call targets start blocks (`Blocks::of`, over targets the verifier checked
        // are inside the program), so `nowhere` is never taken.
        self.block_of
            .get(pc)
            .copied()
            .flatten()
            .unwrap_or(self.nowhere)
    }

    /// A state field that does not change during a stretch.
    fn fixed_field(&mut self, off: i32) -> Value {
        self.b.ins().load(I64, fixed(), self.state, off)
    }

    fn add_var(&mut self, var: Variable, n: i64) {
        if n != 0 {
            let v = self.b.use_var(var);
            let v = self.b.ins().iadd_imm_s(v, n);
            self.b.def_var(var, v);
        }
    }

    /// Emits the basic block starting at `start`.
    fn emit_block(&mut self, start: usize, block: Block) {
        let pcs = block_pcs(self.insns, self.blocks, start);
        let total = classes_of(self.insns, &pcs);
        let body = self.body_of[start].unwrap_or(block);
        if self.blocks.head[start] {
            self.b.switch_to_block(block);
            let found = self
                .loop_fns
                .iter()
                .find(|(l, _)| l.start == start)
                .copied();
            if let Some((l, loop_fn)) = found {
                self.emit_loop(l, total, body, loop_fn);
                return;
            }
            self.check_reach(start, body, self.live[start]);
        }
        self.emit_body(start, &pcs, total, body);
    }

    /// The instructions `pcs` of the block at `start` into `body`, charged `total`.
    fn emit_body(&mut self, start: usize, pcs: &[usize], total: Classes, body: Block) {
        self.b.switch_to_block(body);
        self.checked.clear();
        self.add_var(self.budget, -total.insns);
        self.add_var(self.classes, total.packed());

        let mut done = Classes::default();
        for &pc in pcs {
            let op = self.insns[pc].op;
            done.add(op);
            // What the block charged for the instructions after this one.
            let after = Classes {
                insns: total.insns - done.insns,
                memory: total.memory - done.memory,
                branches: total.branches - done.branches,
                calls: total.calls - done.calls,
            };
            self.emit_insn(pc, after);
        }
        let last = *pcs.last().unwrap_or(&start);
        if !ends_block(self.insns[last].op) {
            self.goto(next_pc(self.insns, last));
        }
    }

    /// In the current block: goes on to `then` if the budget covers the reach of the block
    /// at `start`, or leaves for the interpreter there, writing back the registers `regs`.
    fn check_reach(&mut self, start: usize, then: Block, regs: Regs) {
        let budget = self.b.use_var(self.budget);
        let reach = self.blocks.reach[start].min(i64::MAX as u64) as i64;
        let fits = self
            .b
            .ins()
            .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, budget, reach);
        let short = self.b.create_block();
        self.b.set_cold_block(short);
        self.b.ins().brif(fits, then, &[], short, &[]);
        self.b.switch_to_block(short);
        self.leave(exit::FUEL, start, regs);
    }

    fn reg(&mut self, i: u8) -> Value {
        let i = reg_index(i);
        if i == 10 {
            let base = self.fixed_field(field::REGS);
            return self.b.ins().load(I64, host_mem(), base, R10_AT);
        }
        self.b.use_var(self.r[usize::from(i)])
    }

    fn set(&mut self, i: u8, v: Value) {
        let i = reg_index(i);
        self.checked.retain(|c| c.base != i);
        if i == 10 {
            let base = self.fixed_field(field::REGS);
            self.b.ins().store(host_mem(), v, base, R10_AT);
            return;
        }
        self.b.def_var(self.r[usize::from(i)], v);
    }

    fn emit_insn(&mut self, pc: usize, after: Classes) {
        let i = self.insns[pc];
        let (d, s) = (i.dst, i.src);
        let imm = i.imm as i64;
        use Op::*;
        match i.op {
            Add64Imm | Sub64Imm | Mul64Imm | Div64Imm | SDiv64Imm | Mod64Imm | SMod64Imm
            | Or64Imm | And64Imm | Xor64Imm | Lsh64Imm | Rsh64Imm | Arsh64Imm => {
                let a = self.reg(d);
                let b = self.b.ins().iconst(I64, imm);
                let v = self.bin(I64, bin_of(i.op), a, b);
                self.set(d, v);
            }
            Add64Reg | Sub64Reg | Mul64Reg | Div64Reg | SDiv64Reg | Mod64Reg | SMod64Reg
            | Or64Reg | And64Reg | Xor64Reg | Lsh64Reg | Rsh64Reg | Arsh64Reg => {
                let a = self.reg(d);
                let b = self.reg(s);
                let v = self.bin(I64, bin_of(i.op), a, b);
                self.set(d, v);
            }
            Add32Imm | Sub32Imm | Mul32Imm | Div32Imm | SDiv32Imm | Mod32Imm | SMod32Imm
            | Or32Imm | And32Imm | Xor32Imm | Lsh32Imm | Rsh32Imm | Arsh32Imm => {
                let a = self.reg(d);
                let a = self.b.ins().ireduce(I32, a);
                let b = self.b.ins().iconst(I32, i64::from(imm as u32));
                let v = self.bin(I32, bin_of(i.op), a, b);
                let v = self.b.ins().uextend(I64, v);
                self.set(d, v);
            }
            Add32Reg | Sub32Reg | Mul32Reg | Div32Reg | SDiv32Reg | Mod32Reg | SMod32Reg
            | Or32Reg | And32Reg | Xor32Reg | Lsh32Reg | Rsh32Reg | Arsh32Reg => {
                let a = self.reg(d);
                let a = self.b.ins().ireduce(I32, a);
                let b = self.reg(s);
                let b = self.b.ins().ireduce(I32, b);
                let v = self.bin(I32, bin_of(i.op), a, b);
                let v = self.b.ins().uextend(I64, v);
                self.set(d, v);
            }
            Neg64 => {
                let a = self.reg(d);
                let v = self.b.ins().ineg(a);
                self.set(d, v);
            }
            Neg32 => {
                let a = self.reg(d);
                let a = self.b.ins().ireduce(I32, a);
                let v = self.b.ins().ineg(a);
                let v = self.b.ins().uextend(I64, v);
                self.set(d, v);
            }
            Mov64Imm => {
                let v = self.b.ins().iconst(I64, imm);
                self.set(d, v);
            }
            Mov64Reg => {
                let v = self.reg(s);
                self.set(d, v);
            }
            Mov32Imm => {
                let v = self.b.ins().iconst(I64, i64::from(imm as u32));
                self.set(d, v);
            }
            Mov32Reg | ZeroExt32 => {
                let v = self.reg(if i.op == Mov32Reg { s } else { d });
                let v = self.b.ins().ireduce(I32, v);
                let v = self.b.ins().uextend(I64, v);
                self.set(d, v);
            }
            ZeroExt16 => {
                let v = self.reg(d);
                let v = self.b.ins().ireduce(I16, v);
                let v = self.b.ins().uextend(I64, v);
                self.set(d, v);
            }
            MovSx64B | MovSx64H | MovSx64W => {
                let narrow = match i.op {
                    MovSx64B => I8,
                    MovSx64H => I16,
                    _ => I32,
                };
                let v = self.reg(s);
                let v = self.b.ins().ireduce(narrow, v);
                let v = self.b.ins().sextend(I64, v);
                self.set(d, v);
            }
            MovSx32B | MovSx32H => {
                let narrow = if i.op == MovSx32B { I8 } else { I16 };
                let v = self.reg(s);
                let v = self.b.ins().ireduce(narrow, v);
                let v = self.b.ins().sextend(I32, v);
                let v = self.b.ins().uextend(I64, v);
                self.set(d, v);
            }
            Nop => {}
            Swap16 | Swap32 => {
                let narrow = if i.op == Swap16 { I16 } else { I32 };
                let v = self.reg(d);
                let v = self.b.ins().ireduce(narrow, v);
                let v = self.b.ins().bswap(v);
                let v = self.b.ins().uextend(I64, v);
                self.set(d, v);
            }
            Swap64 => {
                let v = self.reg(d);
                let v = self.b.ins().bswap(v);
                self.set(d, v);
            }

            Ldx8 | Ldx16 | Ldx32 | Ldx64 | Ldsx8 | Ldsx16 | Ldsx32 => {
                let len = match i.op {
                    Ldx8 | Ldsx8 => 1,
                    Ldx16 | Ldsx16 => 2,
                    Ldx32 | Ldsx32 => 4,
                    _ => 8,
                };
                let ptr = self.access(pc, after, s, i.off, len, false);
                let f = kernel_mem();
                let ins = self.b.ins();
                let v = match i.op {
                    Ldx8 => ins.uload8(I64, f, ptr, 0),
                    Ldx16 => ins.uload16(I64, f, ptr, 0),
                    Ldx32 => ins.uload32(f, ptr, 0),
                    Ldx64 => ins.load(I64, f, ptr, 0),
                    Ldsx8 => ins.sload8(I64, f, ptr, 0),
                    Ldsx16 => ins.sload16(I64, f, ptr, 0),
                    _ => ins.sload32(f, ptr, 0),
                };
                self.set(d, v);
            }
            St8 | St16 | St32 | St64 | Stx8 | Stx16 | Stx32 | Stx64 => {
                let len = match i.op {
                    St8 | Stx8 => 1,
                    St16 | Stx16 => 2,
                    St32 | Stx32 => 4,
                    _ => 8,
                };
                let ptr = self.access(pc, after, d, i.off, len, true);
                let v = if matches!(i.op, St8 | St16 | St32 | St64) {
                    self.b.ins().iconst(I64, imm)
                } else {
                    self.reg(s)
                };
                let f = kernel_mem();
                let ins = self.b.ins();
                match len {
                    1 => ins.istore8(f, v, ptr, 0),
                    2 => ins.istore16(f, v, ptr, 0),
                    4 => ins.istore32(f, v, ptr, 0),
                    _ => ins.store(f, v, ptr, 0),
                };
            }
            Atomic32 | Atomic64 => self.atomic(pc, after, i),
            Lddw => {
                let v = self.b.ins().iconst(I64, imm);
                self.set(d, v);
            }

            Ja => {
                let target = self.block_at(i.off as usize);
                self.b.ins().jump(target, &[]);
            }
            JeqImm | JeqReg | JgtImm | JgtReg | JgeImm | JgeReg | JltImm | JltReg | JleImm
            | JleReg | JsetImm | JsetReg | JneImm | JneReg | JsgtImm | JsgtReg | JsgeImm
            | JsgeReg | JsltImm | JsltReg | JsleImm | JsleReg | Jeq32Imm | Jeq32Reg | Jgt32Imm
            | Jgt32Reg | Jge32Imm | Jge32Reg | Jlt32Imm | Jlt32Reg | Jle32Imm | Jle32Reg
            | Jset32Imm | Jset32Reg | Jne32Imm | Jne32Reg | Jsgt32Imm | Jsgt32Reg | Jsge32Imm
            | Jsge32Reg | Jslt32Imm | Jslt32Reg | Jsle32Imm | Jsle32Reg => {
                self.cond_jump(pc, i);
            }

            CallHelper => self.call_helper(pc, i),
            CallLocal => self.call_local(pc, i),
            Exit => self.exit_insn(pc),
            // Never executed: the verifier rules out jumps into a wide load, and blocks step
            // over it.
            WideSecondHalf => {}
        }
    }

    /// `a op b` at width `ty`, with RFC 9669's answers where the machine would trap:
    /// division by zero gives 0, modulo by zero keeps the dividend, and the signed overflow
    /// `MIN / -1` wraps (to `MIN`, remainder 0).
    fn bin(&mut self, ty: Type, op: Bin, a: Value, b: Value) -> Value {
        let ins = self.b.ins();
        match op {
            Bin::Add => ins.iadd(a, b),
            Bin::Sub => ins.isub(a, b),
            Bin::Mul => ins.imul(a, b),
            Bin::Or => ins.bor(a, b),
            Bin::And => ins.band(a, b),
            Bin::Xor => ins.bxor(a, b),
            // Cranelift takes shift amounts modulo the width, as RFC 9669 does.
            Bin::Lsh => ins.ishl(a, b),
            Bin::Rsh => ins.ushr(a, b),
            Bin::Arsh => ins.sshr(a, b),
            Bin::Div | Bin::Mod => {
                let zero = self.b.ins().icmp_imm_s(IntCC::Equal, b, 0);
                let one = self.b.ins().iconst(ty, 1);
                let safe = self.b.ins().select(zero, one, b);
                if op == Bin::Div {
                    let q = self.b.ins().udiv(a, safe);
                    let z = self.b.ins().iconst(ty, 0);
                    self.b.ins().select(zero, z, q)
                } else {
                    let r = self.b.ins().urem(a, safe);
                    self.b.ins().select(zero, a, r)
                }
            }
            Bin::SDiv | Bin::SMod => {
                let min = if ty == I32 {
                    i64::from(i32::MIN)
                } else {
                    i64::MIN
                };
                let zero = self.b.ins().icmp_imm_s(IntCC::Equal, b, 0);
                let a_min = self.b.ins().icmp_imm_s(IntCC::Equal, a, min);
                let b_neg1 = self.b.ins().icmp_imm_s(IntCC::Equal, b, -1);
                let overflow = self.b.ins().band(a_min, b_neg1);
                let unsafe_div = self.b.ins().bor(zero, overflow);
                let one = self.b.ins().iconst(ty, 1);
                let safe = self.b.ins().select(unsafe_div, one, b);
                if op == Bin::SDiv {
                    // MIN / 1 is MIN: the wrapped quotient of MIN / -1.
                    let q = self.b.ins().sdiv(a, safe);
                    let z = self.b.ins().iconst(ty, 0);
                    self.b.ins().select(zero, z, q)
                } else {
                    // MIN % 1 is 0: the wrapped remainder of MIN % -1.
                    let r = self.b.ins().srem(a, safe);
                    self.b.ins().select(zero, a, r)
                }
            }
        }
    }

    /// Whether the conditional jump `i` is taken.
    fn condition(&mut self, i: Insn) -> Value {
        use Op::*;
        let wide = (JeqImm as u8..=JsleReg as u8).contains(&(i.op as u8));
        let reg_src = matches!(
            i.op,
            JeqReg
                | JgtReg
                | JgeReg
                | JltReg
                | JleReg
                | JsetReg
                | JneReg
                | JsgtReg
                | JsgeReg
                | JsltReg
                | JsleReg
                | Jeq32Reg
                | Jgt32Reg
                | Jge32Reg
                | Jlt32Reg
                | Jle32Reg
                | Jset32Reg
                | Jne32Reg
                | Jsgt32Reg
                | Jsge32Reg
                | Jslt32Reg
                | Jsle32Reg
        );
        let mut a = self.reg(i.dst);
        let mut b = if reg_src {
            self.reg(i.src)
        } else {
            self.b.ins().iconst(I64, i.imm as i64)
        };
        if !wide {
            a = self.b.ins().ireduce(I32, a);
            b = self.b.ins().ireduce(I32, b);
        }
        let cc = match i.op {
            JeqImm | JeqReg | Jeq32Imm | Jeq32Reg => Some(IntCC::Equal),
            JneImm | JneReg | Jne32Imm | Jne32Reg => Some(IntCC::NotEqual),
            JgtImm | JgtReg | Jgt32Imm | Jgt32Reg => Some(IntCC::UnsignedGreaterThan),
            JgeImm | JgeReg | Jge32Imm | Jge32Reg => Some(IntCC::UnsignedGreaterThanOrEqual),
            JltImm | JltReg | Jlt32Imm | Jlt32Reg => Some(IntCC::UnsignedLessThan),
            JleImm | JleReg | Jle32Imm | Jle32Reg => Some(IntCC::UnsignedLessThanOrEqual),
            JsgtImm | JsgtReg | Jsgt32Imm | Jsgt32Reg => Some(IntCC::SignedGreaterThan),
            JsgeImm | JsgeReg | Jsge32Imm | Jsge32Reg => Some(IntCC::SignedGreaterThanOrEqual),
            JsltImm | JsltReg | Jslt32Imm | Jslt32Reg => Some(IntCC::SignedLessThan),
            JsleImm | JsleReg | Jsle32Imm | Jsle32Reg => Some(IntCC::SignedLessThanOrEqual),
            _ => None, // jset
        };
        match cc {
            Some(cc) => self.b.ins().icmp(cc, a, b),
            None => {
                let both = self.b.ins().band(a, b);
                self.b.ins().icmp_imm_s(IntCC::NotEqual, both, 0)
            }
        }
    }

    fn cond_jump(&mut self, pc: usize, i: Insn) {
        let taken = self.condition(i);
        let target = self.block_at(i.off as usize);
        let next = pc + 1;
        match self.block_of.get(next).copied().flatten() {
            Some(fall) => {
                self.b.ins().brif(taken, target, &[], fall, &[]);
            }
            None => {
                let off_end = self.b.create_block();
                self.b.ins().brif(taken, target, &[], off_end, &[]);
                self.b.switch_to_block(off_end);
                self.leave(exit::ELSEWHERE, next, live::ALL);
            }
        }
    }

    /// A helper call returns to the host, which runs the helper and enters again at the
    /// next instruction (a block start), so generated code never calls out.
    fn call_helper(&mut self, pc: usize, i: Insn) {
        let id = self.b.ins().iconst(I64, i.imm as i64);
        self.b
            .ins()
            .store(host_mem(), id, self.state, field::HELPER_ID);
        self.leave(exit::HELPER, pc, self.live[pc]);
    }

    /// The stack region's lowest live offset moves by `delta` (a call or return).
    fn move_stack_lo(&mut self, delta: i64) {
        let at = field::READ + STACK_REGION as i32 * field::REGION_BYTES as i32 + field::REGION_LO;
        let lo = self.b.ins().load(I64, host_mem(), self.state, at);
        let lo = self.b.ins().iadd_imm_s(lo, delta);
        self.b.ins().store(host_mem(), lo, self.state, at);
        let at = field::WRITE + STACK_REGION as i32 * field::REGION_BYTES as i32 + field::REGION_LO;
        self.b.ins().store(host_mem(), lo, self.state, at);
        let r10 = self.reg(10);
        let r10 = self.b.ins().iadd_imm_s(r10, delta);
        self.set(10, r10);
        let frame = self.b.ins().load(I64, host_mem(), self.state, field::FRAME);
        let frame = self.b.ins().iadd_imm_s(frame, delta);
        self.b
            .ins()
            .store(host_mem(), frame, self.state, field::FRAME);
    }

    /// The frame record of the caller at `depth` (frames[depth - 1]).
    fn frame_at(&mut self, depth: Value) -> Value {
        let index = self.b.ins().iadd_imm_s(depth, -1);
        let off = self.b.ins().imul_imm_s(index, field::FRAME_BYTES);
        let frames = self.fixed_field(field::FRAMES);
        self.b.ins().iadd(frames, off)
    }

    fn call_local(&mut self, pc: usize, i: Insn) {
        let depth = self.b.ins().load(I64, host_mem(), self.state, field::DEPTH);
        let full =
            self.b
                .ins()
                .icmp_imm_s(IntCC::UnsignedGreaterThanOrEqual, depth, MAX_FRAMES as i64);
        let ok = self.b.create_block();
        let fault = self.b.create_block();
        self.b.set_cold_block(fault);
        self.b.ins().brif(full, fault, &[], ok, &[]);
        self.b.switch_to_block(fault);
        self.leave(exit::DEPTH, pc, 0);

        self.b.switch_to_block(ok);
        let frame = self.frame_at(depth);
        for n in 0..4u8 {
            let v = self.reg(6 + n);
            self.b
                .ins()
                .store(host_mem(), v, frame, field::FRAME_SAVED + 8 * i32::from(n));
        }
        let ret = self.b.ins().iconst(I64, pc as i64 + 1);
        self.b
            .ins()
            .store(host_mem(), ret, frame, field::FRAME_RET_PC);
        let deeper = self.b.ins().iadd_imm_s(depth, 1);
        self.b
            .ins()
            .store(host_mem(), deeper, self.state, field::DEPTH);
        self.move_stack_lo(-(FRAME_BYTES as i64));
        let target = self.block_at(i.off as usize);
        self.b.ins().jump(target, &[]);
    }

    fn exit_insn(&mut self, pc: usize) {
        let depth = self.b.ins().load(I64, host_mem(), self.state, field::DEPTH);
        let outermost = self
            .b
            .ins()
            .icmp_imm_s(IntCC::UnsignedLessThanOrEqual, depth, 1);
        let ret = self.b.create_block();
        let done = self.b.create_block();
        self.b.ins().brif(outermost, done, &[], ret, &[]);
        self.b.switch_to_block(done);
        self.leave(exit::EXIT, pc + 1, 1);

        self.b.switch_to_block(ret);
        let shallower = self.b.ins().iadd_imm_s(depth, -1);
        self.b
            .ins()
            .store(host_mem(), shallower, self.state, field::DEPTH);
        let frame = self.frame_at(shallower);
        for n in 0..4u8 {
            let v = self.b.ins().load(
                I64,
                host_mem(),
                frame,
                field::FRAME_SAVED + 8 * i32::from(n),
            );
            self.set(6 + n, v);
        }
        let ret_pc = self
            .b
            .ins()
            .load(I64, host_mem(), frame, field::FRAME_RET_PC);
        self.move_stack_lo(FRAME_BYTES as i64);
        self.b.ins().jump(self.returns, &[BlockArg::Value(ret_pc)]);
    }
}

fn bin_of(op: Op) -> Bin {
    use Op::*;
    match op {
        Add64Imm | Add64Reg | Add32Imm | Add32Reg => Bin::Add,
        Sub64Imm | Sub64Reg | Sub32Imm | Sub32Reg => Bin::Sub,
        Mul64Imm | Mul64Reg | Mul32Imm | Mul32Reg => Bin::Mul,
        Div64Imm | Div64Reg | Div32Imm | Div32Reg => Bin::Div,
        SDiv64Imm | SDiv64Reg | SDiv32Imm | SDiv32Reg => Bin::SDiv,
        Mod64Imm | Mod64Reg | Mod32Imm | Mod32Reg => Bin::Mod,
        SMod64Imm | SMod64Reg | SMod32Imm | SMod32Reg => Bin::SMod,
        Or64Imm | Or64Reg | Or32Imm | Or32Reg => Bin::Or,
        And64Imm | And64Reg | And32Imm | And32Reg => Bin::And,
        Xor64Imm | Xor64Reg | Xor32Imm | Xor32Reg => Bin::Xor,
        Lsh64Imm | Lsh64Reg | Lsh32Imm | Lsh32Reg => Bin::Lsh,
        Rsh64Imm | Rsh64Reg | Rsh32Imm | Rsh32Reg => Bin::Rsh,
        _ => Bin::Arsh,
    }
}
