//! Loops whose accesses can be checked once for many iterations.
//!
//! A block that jumps back to its own start is a loop of one block (entropy's byte loop is
//! one). If every access in it is to an address the block computes as `r + s + ... + k + x`,
//! a sum of values some registers had when the iteration began, a constant `k` and a value
//! `x` in a small range known from the instructions (a byte loaded and shifted, say), and each
//! of those registers changes by a constant step `c >= 0` per iteration, then the `j`-th
//! iteration from now accesses `a0 + j * (c + ...) + x`, `a0` the address at `x = 0` now. One computation at the loop's head then bounds how many
//! iterations stay inside scratch, and how many the budget covers, and those run without a
//! check each ([`crate::codegen`] emits them as a copy of the block). The accesses and their
//! order are the same, so is everything the run shows.

use firmware::ebpf::{Insn, Op, FRAME_BYTES};

use crate::blocks::is_jump;

/// The largest `x` a range may reach: offsets stay far from wrapping around 2^64.
const RANGE_MAX: u64 = u32::MAX as u64;

/// A value as the iteration computes it: the sum of the registers in `regs` (bit `n` for
/// the value `rn` had when the iteration began), `k`, and `x` in `lo..=hi`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Sym {
    Known { regs: u16, k: i64, lo: u64, hi: u64 },
    Unknown,
}

impl Sym {
    fn constant(k: i64) -> Sym {
        Sym::Known {
            regs: 0,
            k,
            lo: 0,
            hi: 0,
        }
    }

    fn range(hi: u64) -> Sym {
        Sym::Known {
            regs: 0,
            k: 0,
            lo: 0,
            hi,
        }
    }

    fn offset(self, by: i64) -> Sym {
        match self {
            Sym::Known { regs, k, lo, hi } => Sym::Known {
                regs,
                k: k.wrapping_add(by),
                lo,
                hi,
            },
            Sym::Unknown => Sym::Unknown,
        }
    }

    fn add(self, other: Sym) -> Sym {
        match (self, other) {
            (
                Sym::Known { regs, k, lo, hi },
                Sym::Known {
                    regs: regs2,
                    k: k2,
                    lo: lo2,
                    hi: hi2,
                },
            ) if regs & regs2 == 0 && hi + hi2 <= RANGE_MAX => Sym::Known {
                regs: regs | regs2,
                k: k.wrapping_add(k2),
                lo: lo + lo2,
                hi: hi + hi2,
            },
            _ => Sym::Unknown,
        }
    }

    /// A value without a register: a constant `k` (`lo == hi == 0`) or a range (`k == 0`).
    fn plain(self) -> Option<(i64, u64, u64)> {
        match self {
            Sym::Known { regs: 0, k, lo, hi } if k == 0 || hi == 0 => Some((k, lo, hi)),
            _ => None,
        }
    }

    fn shl(self, by: u64) -> Sym {
        match self.plain() {
            Some((k, 0, 0)) => Sym::constant(k.wrapping_shl(by as u32)),
            Some((0, lo, hi)) if by < 32 && hi << by <= RANGE_MAX => Sym::Known {
                regs: 0,
                k: 0,
                lo: lo << by,
                hi: hi << by,
            },
            _ => Sym::Unknown,
        }
    }

    fn and(self, mask: u64) -> Sym {
        match self.plain() {
            Some((k, 0, 0)) => Sym::constant(k & mask as i64),
            Some((0, _, hi)) => Sym::range(hi.min(mask)),
            _ if mask <= RANGE_MAX => Sym::range(mask),
            _ => Sym::Unknown,
        }
    }
}

/// One access of the loop: `len` bytes at the sum of the registers in `regs` (their values
/// at the iteration's start) plus `k` plus at most `hi`, an address that moves by `step` per
/// iteration.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Access {
    pub regs: u16,
    pub step: i64,
    pub k: i64,
    pub hi: u64,
    pub len: i64,
}

/// The accesses of a one-block loop over `pcs` (its instructions in order, the last one the
/// jump back), if every one is an access this module can bound; `None` otherwise. Accesses
/// to the frame below `r10`, which need no check, are left out.
pub(crate) fn accesses(insns: &[Insn], pcs: &[usize]) -> Option<Vec<Access>> {
    let mut regs: [Sym; 11] = std::array::from_fn(|r| Sym::Known {
        regs: 1 << r,
        k: 0,
        lo: 0,
        hi: 0,
    });
    let reg = |i: u8| usize::from((i & 15).min(10));
    // (register, offset, length) of each access, with the register's value at the access.
    let mut found = Vec::new();
    for &pc in pcs {
        let i = insns[pc];
        let (d, s) = (reg(i.dst), reg(i.src));
        let imm = i.imm as i64;
        use Op::*;
        let value = match i.op {
            Mov64Imm | Lddw => Some(Sym::constant(imm)),
            Mov32Imm => Some(Sym::constant(i64::from(imm as u32))),
            Mov64Reg => Some(regs[s]),
            Add64Imm => Some(regs[d].offset(imm)),
            Sub64Imm => Some(regs[d].offset(imm.wrapping_neg())),
            Add64Reg => Some(regs[d].add(regs[s])),
            Lsh64Imm => Some(regs[d].shl(imm as u64 & 63)),
            And64Imm => Some(regs[d].and(imm as u64)),
            Mov32Reg | ZeroExt32 => {
                let v = regs[if i.op == Mov32Reg { s } else { d }];
                Some(match v.plain() {
                    Some((0, _, hi)) => v.and(hi),
                    Some((k, 0, 0)) => Sym::constant(i64::from(k as u32)),
                    _ => Sym::range(RANGE_MAX),
                })
            }
            Ldx8 => Some(Sym::range(0xFF)),
            Ldx16 => Some(Sym::range(0xFFFF)),
            Ldx32 => Some(Sym::range(RANGE_MAX)),
            St8 | St16 | St32 | St64 | Stx8 | Stx16 | Stx32 | Stx64 | Atomic32 | Atomic64 | Nop
            | WideSecondHalf => None,
            op if is_jump(op) => None,
            _ => Some(Sym::Unknown),
        };
        let len = match i.op {
            Ldx8 | Ldsx8 | St8 | Stx8 => 1,
            Ldx16 | Ldsx16 | St16 | Stx16 => 2,
            Ldx32 | Ldsx32 | St32 | Stx32 | Atomic32 => 4,
            Ldx64 | St64 | Stx64 | Atomic64 => 8,
            _ => 0,
        };
        if len > 0 {
            let base = if matches!(i.op, Ldx8 | Ldx16 | Ldx32 | Ldx64 | Ldsx8 | Ldsx16 | Ldsx32) {
                s
            } else {
                d
            };
            let off = i64::from(i.off);
            let in_frame = base == 10 && off >= -(FRAME_BYTES as i64) && off + len <= 0;
            if !in_frame {
                found.push((regs[base].offset(off), len));
            }
        }
        if let Some(v) = value {
            regs[d] = v;
        }
        // An atomic that hands back a value writes a register the table above left alone.
        if matches!(i.op, Atomic32 | Atomic64) {
            regs[s] = Sym::Unknown;
            regs[0] = Sym::Unknown;
        }
    }
    // A register steps by `c` if the iteration leaves it at its own start value plus `c`.
    let step = |r: usize| match regs[r] {
        Sym::Known {
            regs: same,
            k,
            lo: 0,
            hi: 0,
        } if same == 1 << r && k >= 0 => Some(k),
        _ => None,
    };
    found
        .into_iter()
        .map(|(at, len)| match at {
            Sym::Known { regs, k, hi, .. } => {
                let mut total: i64 = 0;
                for r in (0..11).filter(|r| regs & (1 << r) != 0) {
                    total = total.checked_add(step(r)?)?;
                }
                Some(Access {
                    regs,
                    step: total,
                    k,
                    hi,
                    len,
                })
            }
            Sym::Unknown => None,
        })
        .collect()
}

/// Instructions for the tests here and in `codegen`.
#[cfg(test)]
pub(crate) mod fixtures {
    use firmware::ebpf::{Insn, Op};

    pub fn insn(op: Op, dst: u8, src: u8, off: i32, imm: u64) -> Insn {
        Insn {
            op,
            dst,
            src,
            off,
            imm,
        }
    }

    /// entropy.c's byte loop, `counts[p[i]]++` for i from r4 on, placed at pc `start` (its
    /// last instruction jumps back there).
    pub fn byte_loop(start: usize) -> Vec<Insn> {
        use Op::*;
        vec![
            insn(Mov64Reg, 5, 2, 0, 0),
            insn(Add64Reg, 5, 4, 0, 0),
            insn(Ldx8, 5, 5, 0, 0),
            insn(Lsh64Imm, 5, 0, 0, 3),
            insn(Mov64Reg, 0, 1, 0, 0),
            insn(Add64Reg, 0, 5, 0, 0),
            insn(Ldx64, 5, 0, 0, 0),
            insn(Add64Imm, 5, 0, 0, 1),
            insn(Stx64, 0, 5, 0, 0),
            insn(Add64Imm, 4, 0, 0, 1),
            insn(JgtReg, 3, 4, start as i32, 0),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{byte_loop, insn};
    use super::*;

    #[test]
    fn the_byte_loop_is_bounded() {
        let insns = byte_loop(0);
        let pcs: Vec<usize> = (0..insns.len()).collect();
        let got = accesses(&insns, &pcs).expect("bounded");
        // p[i]: r2 + r4, stepping by 1 (r4 += 1); counts[b]: r1 + 8 * b, b a byte.
        let byte = Access {
            regs: 1 << 2 | 1 << 4,
            step: 1,
            k: 0,
            hi: 0,
            len: 1,
        };
        let counts = Access {
            regs: 1 << 1,
            step: 0,
            k: 0,
            hi: 0xFF << 3,
            len: 8,
        };
        assert_eq!(got, [byte, counts, counts]);
    }

    #[test]
    fn unbounded_loops_are_refused() {
        use Op::*;
        let all = |insns: &[Insn]| accesses(insns, &(0..insns.len()).collect::<Vec<_>>());
        // The address is a loaded value.
        let chase = [insn(Ldx64, 1, 1, 0, 0), insn(JneImm, 1, 0, 0, 0)];
        assert_eq!(all(&chase), None);
        // The base steps down.
        let down = [
            insn(Ldx8, 0, 1, 0, 0),
            insn(Add64Imm, 1, 0, 0, (-1i64) as u64),
            insn(JneImm, 1, 0, 0, 0),
        ];
        assert_eq!(all(&down), None);
        // The same register twice (2 * r1).
        let twice = [
            insn(Mov64Reg, 2, 1, 0, 0),
            insn(Add64Reg, 2, 1, 0, 0),
            insn(Ldx8, 0, 2, 0, 0),
            insn(JneImm, 0, 0, 0, 0),
        ];
        assert_eq!(all(&twice), None);
        // Frame accesses below r10 need no bound; a loop with only those has none to check.
        let frame = [insn(Ldx64, 0, 10, -8, 0), insn(JneImm, 0, 0, 0, 0)];
        assert_eq!(all(&frame), Some(vec![]));
    }
}
