//! One-block loops that run unchecked for as many iterations as a guard bounds ([`loops`]):
//! the guard and the charges in the kernel's function, the unchecked copy as a function of
//! its own.

use cranelift_codegen::ir::{condcodes::IntCC, Block, BlockArg, FuncRef, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;
use firmware::ebpf::{Insn, Op};

use super::{block_pcs, Classes, Gen, I64};
use crate::blocks::{is_jump, Blocks};
use crate::live::{self, Regs};
use crate::loops;

/// The fewest iterations a guard sends to a loop's unchecked copy (a call, and the loop's
/// registers through the VM both ways, cost a few checked iterations).
const MIN_UNCHECKED: i64 = 8;

/// The registers the instructions `pcs` read or write, but `r10`.
fn loop_regs(insns: &[Insn], pcs: &[usize]) -> Regs {
    let all = pcs.iter().fold(0, |regs, &pc| {
        let (uses, defs) = live::uses_defs(&insns[pc]);
        regs | uses | defs
    });
    all & !(1 << 10)
}

/// A block that jumps back to its own start, with its accesses bounded ([`loops`]): its
/// unchecked copy is a function of its own (so the registers its iterations use are its own
/// to allocate, not shared with the whole kernel's).
#[derive(Debug)]
pub(crate) struct Loop {
    pub start: usize,
    pcs: Vec<usize>,
    accesses: Vec<loops::Access>,
}

/// The one-block loops of `insns` whose accesses [`loops`] bounds.
pub(crate) fn loops_of(insns: &[Insn], blocks: &Blocks) -> Vec<Loop> {
    let mut found = Vec::new();
    for start in (0..insns.len()).filter(|&pc| blocks.head[pc]) {
        let pcs = block_pcs(insns, blocks, start);
        let Some(&last) = pcs.last() else { continue };
        let last = insns[last];
        let back = is_jump(last.op) && last.op != Op::Ja && last.off as usize == start;
        if let Some(accesses) = back.then(|| loops::accesses(insns, &pcs)).flatten() {
            found.push(Loop {
                start,
                pcs,
                accesses,
            });
        }
    }
    found
}

/// Builds the unchecked copy of `l` into `b`, a function `(state, count) -> (left, ended)`: it
/// takes the loop's registers from the VM, runs at most `count` iterations without checks
/// (the caller's guard proved them inside scratch and the budget), puts the registers back
/// and returns how many of the `count` are left and whether the loop ended (1) or the count
/// ran out (0). The caller charges the budget and the counters.
pub(crate) fn translate_loop(
    mut b: FunctionBuilder<'_>,
    insns: &[Insn],
    blocks: &Blocks,
    l: &Loop,
    isa: &dyn cranelift_codegen::isa::TargetIsa,
) {
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let (state, count) = (b.block_params(entry)[0], b.block_params(entry)[1]);
    let mut g = Gen::parts(b, insns, blocks, state, Vec::new());
    let regs = loop_regs(insns, &l.pcs);
    g.load_regs(regs);
    let fast = g.b.create_block();
    g.b.append_block_param(fast, I64);
    g.b.ins().jump(fast, &[BlockArg::Value(count)]);

    g.b.switch_to_block(fast);
    let left = g.b.block_params(fast)[0];
    g.unchecked = true;
    let (last, rest) = l.pcs.split_last().expect("a block has instructions");
    for &pc in rest {
        g.emit_insn(pc, Classes::default());
    }
    let taken = g.condition(g.insns[*last]);
    let left = g.b.ins().iadd_imm_s(left, -1);
    let again = g.b.create_block();
    let out = g.b.create_block();
    g.b.ins().brif(taken, again, &[], out, &[]);
    g.b.switch_to_block(again);
    let spent = g.b.create_block();
    g.b.ins()
        .brif(left, fast, &[BlockArg::Value(left)], spent, &[]);
    for (block, ended) in [(out, 1), (spent, 0)] {
        g.b.switch_to_block(block);
        g.store_regs(regs);
        let ended = g.b.ins().iconst(I64, ended);
        g.b.ins().return_(&[left, ended]);
    }
    g.b.seal_all_blocks();
    g.b.finalize(isa.frontend_config());
}

impl Gen<'_, '_> {
    /// The loop `l`, whose head is the current block (`block_of[l.start]`). The head
    /// (`block`) checks the budget as any head does, then a guard works out how many
    /// iterations from here on fit the budget and keep every access inside scratch; those
    /// run in `loop_fn` ([`translate_loop`]), the block without checks, and are charged to
    /// the budget and the counters when it returns. The others, and any iteration after its
    /// count ran out and the guard found too few left, run the checked block, whose jump back
    /// goes to a second head that checks the budget without the guard.
    pub(super) fn emit_loop(&mut self, l: &Loop, total: Classes, body: Block, loop_fn: FuncRef) {
        let (start, pcs) = (l.start, &l.pcs[..]);
        let head = self.block_of[start].unwrap_or(body);
        let guard = self.b.create_block();
        self.check_reach(start, guard, self.live[start]);

        self.b.switch_to_block(guard);
        let count = self.iterations(start, total, &l.accesses);
        let enough =
            self.b
                .ins()
                .icmp_imm_s(IntCC::UnsignedGreaterThanOrEqual, count, MIN_UNCHECKED);
        let fast = self.b.create_block();
        self.b.ins().brif(enough, fast, &[], body, &[]);

        self.b.switch_to_block(fast);
        let regs = loop_regs(self.insns, pcs);
        self.store_regs(regs);
        let call = self.b.ins().call(loop_fn, &[self.state, count]);
        let (left, ended) = {
            let results = self.b.inst_results(call);
            (results[0], results[1])
        };
        self.load_regs(regs);
        let ran = self.b.ins().isub(count, left);
        let insns = self.b.ins().imul_imm_s(ran, total.insns);
        let budget = self.b.use_var(self.budget);
        let budget = self.b.ins().isub(budget, insns);
        self.b.def_var(self.budget, budget);
        let more = self.b.ins().imul_imm_s(ran, total.packed());
        let classes = self.b.use_var(self.classes);
        let classes = self.b.ins().iadd(classes, more);
        self.b.def_var(self.classes, classes);
        let out = self.b.create_block();
        self.b.ins().brif(ended, out, &[], head, &[]);
        self.b.switch_to_block(out);
        self.goto(pcs.last().copied().unwrap_or(start) + 1);

        // The checked block, looping back through a head without the guard.
        let checked_head = self.b.create_block();
        self.b.switch_to_block(checked_head);
        self.check_reach(start, body, self.live[start]);
        self.block_of[start] = Some(checked_head);
        self.emit_body(start, pcs, total, body);
        self.block_of[start] = Some(head);
    }

    /// How many iterations of the loop at `start`, from the one about to begin, fit the budget
    /// (each needs the head's reach and uses `total.insns`) and keep every access inside
    /// scratch; 0 when this one would not.
    fn iterations(&mut self, start: usize, total: Classes, accesses: &[loops::Access]) -> Value {
        let reach = self.blocks.reach[start].min(i64::MAX as u64) as i64;
        let budget = self.b.use_var(self.budget);
        // The head checked `budget >= reach`; iteration j needs budget - j * insns >= reach.
        let spare = self.b.ins().iadd_imm_s(budget, -reach);
        let per = total.insns.max(1);
        let mut count = self.b.ins().udiv_imm_u(spare, per);
        count = self.b.ins().iadd_imm_s(count, 1);
        for a in accesses {
            let mut addr = self.b.ins().iconst(I64, a.k);
            for r in (0..11u8).filter(|r| a.regs & (1 << r) != 0) {
                let v = self.reg(r);
                addr = self.b.ins().iadd(addr, v);
            }
            // The scratch offset of the access at x = 0, as the checked access computes it.
            let (_, offset, limit) = self.scratch_offset(addr, a.len);
            // Offsets offset + x + j * step, x <= hi, must stay below the limit: room for
            // `(limit - 1 - hi - offset) / step` more iterations after this one.
            let inside = self.b.ins().icmp(IntCC::UnsignedLessThan, offset, limit);
            let room = self.b.ins().isub(limit, offset);
            let hi = a.hi as i64;
            let fits = self
                .b
                .ins()
                .icmp_imm_s(IntCC::UnsignedGreaterThan, room, hi);
            let ok = self.b.ins().band(inside, fits);
            let allowed = if a.step == 0 {
                self.b.ins().iconst(I64, i64::MAX)
            } else {
                let more = self.b.ins().iadd_imm_s(room, -1 - hi);
                let more = self.b.ins().udiv_imm_u(more, a.step);
                self.b.ins().iadd_imm_s(more, 1)
            };
            let zero = self.b.ins().iconst(I64, 0);
            let allowed = self.b.ins().select(ok, allowed, zero);
            count = self.b.ins().umin(count, allowed);
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loops::fixtures::{byte_loop, insn};

    /// A kernel with entropy's byte loop at 1..=11 gets that loop, with its three accesses;
    /// the same loop chasing a loaded pointer gets none.
    #[test]
    fn the_byte_loop_gets_a_function() {
        let mut insns = vec![insn(Op::Mov64Imm, 4, 0, 0, 0)];
        insns.extend(byte_loop(1));
        insns.push(insn(Op::Exit, 0, 0, 0, 0));
        let found = loops_of(&insns, &Blocks::of(&insns));
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].start, found[0].pcs.len(), found[0].accesses.len()),
            (1, 11, 3)
        );

        insns[5] = insn(Op::Ldx64, 0, 1, 0, 0);
        assert!(loops_of(&insns, &Blocks::of(&insns)).is_empty());
    }
}
