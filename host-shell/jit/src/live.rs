//! Which eBPF registers are live (may be read before they are written) at each instruction.
//!
//! Native code keeps registers in SSA values and writes them back to the VM only where it
//! returns. A register that is dead there cannot change anything the run shows (its value is
//! overwritten before any read, by native code or by the interpreter that takes over), so
//! the exits write back the live ones only; the others need not stay in machine registers.
//!
//! Conservative where the flow is not local: a local call reads every register (the callee
//! sees them all), and an exit reads `r0`..`r5` (the result, and what a return hands back to
//! its caller, whose `r6`..`r9` come back from the frame). `r10` is always live.

use firmware::ebpf::{atomic, Insn, Op};

use crate::blocks::{is_jump, next_pc};

/// A set of registers, bit `n` for `rn`.
pub(crate) type Regs = u16;

pub(crate) const ALL: Regs = 0x07ff;
const R10: Regs = 1 << 10;
const ARGS: Regs = 0b11_1110;

fn bit(r: u8) -> Regs {
    1 << (r & 15).min(10)
}

/// (read, written) registers of one instruction.
pub(crate) fn uses_defs(i: &Insn) -> (Regs, Regs) {
    use Op::*;
    let (d, s) = (bit(i.dst), bit(i.src));
    match i.op {
        Mov64Imm | Mov32Imm | Lddw => (0, d),
        Mov64Reg | Mov32Reg | MovSx64B | MovSx64H | MovSx64W | MovSx32B | MovSx32H => (s, d),
        Neg64 | Neg32 | ZeroExt16 | ZeroExt32 | Swap16 | Swap32 | Swap64 => (d, d),
        Nop | WideSecondHalf | Ja => (0, 0),
        Ldx8 | Ldx16 | Ldx32 | Ldx64 | Ldsx8 | Ldsx16 | Ldsx32 => (s, d),
        St8 | St16 | St32 | St64 => (d, 0),
        Stx8 | Stx16 | Stx32 | Stx64 => (d | s, 0),
        Atomic32 | Atomic64 => {
            let code = i.imm as i32;
            if code == atomic::CMPXCHG {
                (d | s | 1, 1)
            } else if code & atomic::FETCH != 0 {
                (d | s, s)
            } else {
                (d | s, 0)
            }
        }
        CallHelper => (ARGS, 1),
        CallLocal => (ALL, 0),
        Exit => (ARGS | 1, 0),
        op if is_jump(op) => {
            let reg_src = (op as u8 - JeqImm as u8) % 2 == 1;
            (if reg_src { d | s } else { d }, 0)
        }
        // The ALU operations left: `dst op= src|imm`.
        op => {
            let reg_src = (op as u8 - Add64Imm as u8) % 2 == 1;
            (if reg_src { d | s } else { d }, d)
        }
    }
}

/// Registers live on entry to each slot.
pub(crate) fn live_in(insns: &[Insn]) -> Vec<Regs> {
    let len = insns.len();
    let mut live = vec![0 as Regs; len];
    let at = |live: &[Regs], pc: usize| live.get(pc).copied().unwrap_or(ALL);
    loop {
        let mut changed = false;
        for pc in (0..len).rev() {
            let i = &insns[pc];
            if i.op == Op::WideSecondHalf {
                continue;
            }
            let next = next_pc(insns, pc);
            let out = match i.op {
                Op::Exit => 0,
                Op::Ja => at(&live, i.off as usize),
                Op::CallLocal => at(&live, i.off as usize) | at(&live, next),
                op if is_jump(op) => at(&live, i.off as usize) | at(&live, next),
                _ => at(&live, next),
            };
            let (uses, defs) = uses_defs(i);
            let value = (out & !defs) | uses | R10;
            if value != live[pc] {
                live[pc] = value;
                changed = true;
            }
        }
        if !changed {
            return live;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insn(op: Op, dst: u8, src: u8, off: i32) -> Insn {
        Insn {
            op,
            dst,
            src,
            off,
            imm: 0,
        }
    }

    #[test]
    fn liveness_follows_reads_and_writes() {
        // 0: r1 = 5; 1: r2 += r1; 2: if r2 == 0 goto 1; 3: r0 = r2; 4: exit
        let insns = [
            insn(Op::Mov64Imm, 1, 0, 0),
            insn(Op::Add64Reg, 2, 1, 0),
            insn(Op::JeqImm, 2, 0, 1),
            insn(Op::Mov64Reg, 0, 2, 0),
            insn(Op::Exit, 0, 0, 0),
        ];
        let live = live_in(&insns);
        // The exit reads r0..r5; the move before it writes r0 and reads r2.
        assert_eq!(live[4], 0b11_1111 | R10);
        assert_eq!(live[3], 0b11_1110 | R10);
        assert_eq!(live[1] & 0b110, 0b110, "r1 and r2 are read at 1");
        assert_eq!(live[0] & 0b10, 0, "r1 is written at 0 before any read");
        assert_eq!(live[0] & 0b100, 0b100, "r2 is read at 1");
    }
}
