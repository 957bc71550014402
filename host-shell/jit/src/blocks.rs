//! Basic blocks of a verified program: where native code may be entered, and how many
//! instructions run from any instruction to the end of its block.
//!
//! A block starts at instruction 0, at every jump and call target, and after every jump,
//! call and exit; it ends at its last instruction before the next start. Helper calls end a
//! block because their fuel is only known after they ran, and the interpreter stops before
//! the next instruction once the budget is gone. Native code charges a block's instructions
//! when it enters the block, so a block runs natively only when all of it fits the budget.

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
        Blocks { start, rest }
    }

    /// What [`firmware::ebpf::Native::block_at`] answers.
    pub fn at(&self, pc: usize) -> (bool, u64) {
        match (self.start.get(pc), self.rest.get(pc)) {
            (Some(&start), Some(&rest)) => (start, u64::from(rest.max(1))),
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
        assert_eq!(b.at(0), (true, 3));
        assert_eq!(b.at(1), (false, 2));
        assert_eq!(b.at(8), (false, 1));
    }
}
