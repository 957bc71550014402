//! Basic blocks of a verified program: where native code may be entered, and how many
//! instructions run from any instruction to the end of its block.
//!
//! A block starts at instruction 0, at every jump and call target, and after every jump,
//! call and exit; it ends at its last instruction before the next start. Helper calls end a
//! block because their fuel is only known after they ran, and the interpreter stops before
//! the next instruction once the budget is gone. Native code charges a block's instructions
//! when it enters the block, so a block runs natively only when all of it fits the budget.
//!
//! Checking the budget at every block would cost a compare and a branch per block, so only
//! *heads* check: the entry, targets of backward jumps, call targets, the instructions after
//! calls. A head checks that the budget covers its *reach*, the most instructions any path
//! from it runs before it enters the next head or leaves native code; every other block is
//! reached only by forward edges inside some head's reach, so it always fits. Entered from
//! outside (after the interpreter ran a slice's tail), any block checks its reach first.

use firmware::ebpf::{Insn, Op};

/// Whether an instruction ends its block.
pub(crate) fn ends_block(op: Op) -> bool {
    is_jump(op) || matches!(op, Op::CallHelper | Op::CallLocal | Op::Exit)
}

/// `ja` and the conditional jumps.
pub(crate) fn is_jump(op: Op) -> bool {
    (Op::Ja as u8..=Op::Jsle32Reg as u8).contains(&(op as u8))
}

/// The slot after `pc` (a 64-bit immediate load takes two).
pub(crate) fn next_pc(insns: &[Insn], pc: usize) -> usize {
    if insns[pc].op == Op::Lddw {
        pc + 2
    } else {
        pc + 1
    }
}

/// The block structure of one program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Blocks {
    /// Per slot: whether a block starts there.
    pub start: Vec<bool>,
    /// Per slot: instructions from it to the end of its block (0 for the second slot of a
    /// wide load, which is never executed).
    pub rest: Vec<u32>,
    /// Per slot: whether a head starts there.
    pub head: Vec<bool>,
    /// Per block start: the most instructions a path from it runs before it enters a head
    /// or leaves native code (its own included).
    pub reach: Vec<u64>,
}

impl Blocks {
    pub fn of(insns: &[Insn]) -> Blocks {
        let len = insns.len();
        let mut start = vec![false; len];
        let mut mark = |pc: usize| {
            if let Some(s) = start.get_mut(pc) {
                *s = true;
            }
        };
        mark(0);
        let mut pc = 0;
        while pc < len {
            let insn = insns[pc];
            if is_jump(insn.op) || insn.op == Op::CallLocal {
                mark(insn.off as usize);
            }
            if ends_block(insn.op) {
                mark(pc + 1);
            }
            pc = next_pc(insns, pc);
        }
        let mut rest = vec![0u32; len];
        for pc in (0..len).rev() {
            if insns[pc].op == Op::WideSecondHalf {
                continue;
            }
            let next = next_pc(insns, pc);
            let falls_into = next < len && !start[next] && !ends_block(insns[pc].op);
            rest[pc] = if falls_into { 1 + rest[next] } else { 1 };
        }
        let mut head = vec![false; len];
        if let Some(h) = head.first_mut() {
            *h = true;
        }
        for (pc, insn) in insns.iter().enumerate() {
            let target = insn.off as usize;
            let backward = (is_jump(insn.op) && target <= pc) || insn.op == Op::CallLocal;
            if backward && target < len {
                head[target] = true;
            }
            if matches!(insn.op, Op::CallLocal | Op::CallHelper) && pc + 1 < len {
                head[pc + 1] = true;
            }
        }
        let mut reach = vec![0u64; len];
        for pc in (0..len).rev() {
            if !start[pc] {
                continue;
            }
            // The block's last slot, and where control goes from it.
            let mut last = pc;
            while !ends_block(insns[last].op) {
                let next = next_pc(insns, last);
                if next >= len || start[next] {
                    break;
                }
                last = next;
            }
            let insn = insns[last];
            let next = next_pc(insns, last);
            let successors: [Option<usize>; 2] = match insn.op {
                Op::Ja => [Some(insn.off as usize), None],
                op if is_jump(op) => [Some(insn.off as usize), Some(next)],
                Op::CallHelper | Op::CallLocal | Op::Exit => [None, None],
                _ => [Some(next), None],
            };
            let onward = successors
                .into_iter()
                .flatten()
                .filter(|&s| s < len && !head[s])
                .map(|s| reach[s])
                .max()
                .unwrap_or(0);
            reach[pc] = u64::from(rest[pc]) + onward;
        }
        Blocks {
            start,
            rest,
            head,
            reach,
        }
    }

    /// What [`firmware::ebpf::Native::block_at`] answers: at a block start the reach native
    /// code needs the budget to cover, elsewhere the instructions to the end of the block
    /// (which the interpreter runs).
    pub fn at(&self, pc: usize) -> (bool, u64) {
        match (self.start.get(pc), self.rest.get(pc)) {
            (Some(true), _) => (true, self.reach[pc].max(1)),
            (Some(false), Some(&rest)) => (false, u64::from(rest.max(1))),
            _ => (false, 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insn(op: Op, off: i32) -> Insn {
        Insn {
            op,
            dst: 0,
            src: 0,
            off,
            imm: 0,
        }
    }

    #[test]
    fn blocks_start_at_targets_and_after_control_transfers() {
        // 0: mov; 1: lddw (2 slots); 3: jeq -> 6; 4: add; 5: call helper; 6: add; 7: exit
        let insns = [
            insn(Op::Mov64Imm, 0),
            insn(Op::Lddw, 0),
            insn(Op::WideSecondHalf, 0),
            insn(Op::JeqImm, 6),
            insn(Op::Add64Imm, 0),
            insn(Op::CallHelper, 0),
            insn(Op::Add64Imm, 0),
            insn(Op::Exit, 0),
        ];
        let b = Blocks::of(&insns);
        assert_eq!(
            b.start,
            [true, false, false, false, true, false, true, false]
        );
        // Block 0 is mov, lddw, jeq: three instructions over four slots.
        assert_eq!(b.rest, [3, 2, 0, 1, 2, 1, 2, 1]);
        // Heads: the entry, and the instruction after the helper call.
        assert_eq!(
            b.head,
            [true, false, false, false, false, false, true, false]
        );
        // From 0: its 3, then the longer of 4..5 (2, ending at the call) or 6 (a head): 5.
        assert_eq!(b.reach[0], 5);
        assert_eq!(b.reach[4], 2);
        assert_eq!(b.reach[6], 2);
        assert_eq!(b.at(0), (true, 5));
        assert_eq!(b.at(1), (false, 2));
        assert_eq!(b.at(8), (false, 1));
    }
}
