//! The load-time verifier: checks every instruction slot once and pre-decodes it.
//!
//! What it proves (so the interpreter need not check it again): every opcode is known and
//! supported, register numbers are valid and `r10` is never written, every jump and local call
//! lands on an instruction inside the program and never on the second slot of a 64-bit
//! immediate load, helper ids are known, there is no division or modulo by an immediate zero,
//! control cannot run off the end, and the static bpf-to-bpf call depth (where the call graph
//! has no cycle) stays within [`abi::MAX_CALL_DEPTH`]. Memory accesses, recursion depth and
//! running time are checked while running. The errors themselves are wire types
//! ([`common::load_error`]): a rejected Load Program carries its reason to the host.

use alloc::vec;
use alloc::vec::Vec;

use common::abi;
pub use common::load_error::VerifyError;

use super::insn::{atomic, class, mode, size, Insn, Op, RawInsn, LDDW, SRC_X};

/// Verifies the instruction bytes (a multiple of 8) and returns the decoded program, one
/// [`Insn`] per slot.
pub(crate) fn verify(text: &[u8]) -> Result<Vec<Insn>, VerifyError> {
    let slots = text.len() / 8;
    if slots == 0 {
        return Err(VerifyError::Empty);
    }
    if slots > abi::MAX_PROGRAM_INSNS as usize {
        return Err(VerifyError::TooLarge {
            insns: u32::try_from(slots).unwrap_or(u32::MAX),
        });
    }
    let raw: Vec<RawInsn> = text
        .chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            RawInsn::from_bytes(b)
        })
        .collect();

    let mut insns = Vec::with_capacity(slots);
    let mut second_half = vec![false; slots];
    let mut pc = 0usize;
    while pc < slots {
        // `slots` <= MAX_PROGRAM_INSNS, so every pc fits in u32.
        let pc32 = pc as u32;
        let r = raw[pc];
        let insn = decode(pc32, r, slots)?;
        insns.push(insn);
        if r.opcode == LDDW {
            let Some(next) = raw.get(pc + 1) else {
                return Err(VerifyError::MalformedWideLoad { pc: pc32 });
            };
            if next.opcode != 0 || next.dst != 0 || next.src != 0 || next.off != 0 {
                return Err(VerifyError::MalformedWideLoad { pc: pc32 });
            }
            let value = u64::from(r.imm as u32) | (u64::from(next.imm as u32) << 32);
            if let Some(last) = insns.last_mut() {
                last.imm = value;
            }
            insns.push(Insn {
                op: Op::WideSecondHalf,
                dst: 0,
                src: 0,
                off: 0,
                imm: 0,
            });
            second_half[pc + 1] = true;
            pc += 2;
        } else {
            pc += 1;
        }
    }

    // Targets were range-checked in `decode`; now check none lands inside a wide load.
    for (pc, insn) in insns.iter().enumerate() {
        if is_jump(insn.op) || insn.op == Op::CallLocal {
            let target = insn.off as u32;
            if second_half[target as usize] {
                return Err(VerifyError::JumpIntoImmediate {
                    pc: pc as u32,
                    target,
                });
            }
        }
    }

    match insns.last().map(|i| i.op) {
        Some(Op::Exit) | Some(Op::Ja) => {}
        _ => return Err(VerifyError::FallsOffEnd),
    }

    check_call_depth(&insns)?;
    Ok(insns)
}

fn is_jump(op: Op) -> bool {
    (Op::Ja as u8..=Op::Jsle32Reg as u8).contains(&(op as u8))
}

/// Decodes one slot; `slots` bounds jump targets.
fn decode(pc: u32, r: RawInsn, slots: usize) -> Result<Insn, VerifyError> {
    for reg in [r.dst, r.src] {
        if reg > 10 {
            return Err(VerifyError::InvalidRegister { pc, reg });
        }
    }
    let unknown = VerifyError::UnknownOpcode {
        pc,
        opcode: r.opcode,
    };
    let unsupported = VerifyError::UnsupportedOpcode {
        pc,
        opcode: r.opcode,
    };
    let mut insn = Insn {
        op: Op::Nop,
        dst: r.dst,
        src: r.src,
        off: i32::from(r.off),
        imm: i64::from(r.imm) as u64,
    };
    let writes_dst;
    let cls = r.opcode & 0x07;
    match cls {
        class::ALU | class::ALU64 => {
            insn.op = decode_alu(pc, r)?;
            writes_dst = true;
            if r.opcode & SRC_X == 0 && r.imm == 0 {
                let code = r.opcode & 0xf0;
                if code == 0x30 || code == 0x90 {
                    return Err(VerifyError::DivisionByZero { pc });
                }
            }
        }
        class::JMP | class::JMP32 => {
            writes_dst = false;
            let code = r.opcode & 0xf0;
            let x = r.opcode & SRC_X != 0;
            let jmp64 = cls == class::JMP;
            match code {
                0x80 => {
                    // call
                    if !jmp64 || x {
                        return Err(if x { unsupported } else { unknown });
                    }
                    match r.src {
                        0 => {
                            let id = r.imm as u32;
                            if !(1..=abi::helper::MAX_ID).contains(&id) {
                                return Err(VerifyError::UnknownHelper { pc, id });
                            }
                            insn.op = Op::CallHelper;
                            insn.imm = u64::from(id);
                        }
                        1 => {
                            let target = i64::from(pc) + 1 + i64::from(r.imm);
                            if target < 0 || target >= slots as i64 {
                                return Err(VerifyError::CallOutOfRange { pc, target });
                            }
                            insn.op = Op::CallLocal;
                            insn.off = target as i32;
                        }
                        _ => return Err(unsupported),
                    }
                }
                0x90 => {
                    if !jmp64 || x {
                        return Err(unknown);
                    }
                    insn.op = Op::Exit;
                }
                0xf0 => return Err(unknown),
                0x00 => {
                    if x {
                        return Err(unknown);
                    }
                    // `ja` uses the offset, `gotol` (JMP32) the immediate.
                    let rel = if jmp64 {
                        i64::from(r.off)
                    } else {
                        i64::from(r.imm)
                    };
                    insn.op = Op::Ja;
                    insn.off = jump_target(pc, rel, slots)?;
                }
                _ => {
                    insn.op = decode_cond(code, x, jmp64).ok_or(unknown)?;
                    insn.off = jump_target(pc, i64::from(r.off), slots)?;
                }
            }
        }
        class::LD => {
            if r.opcode == LDDW {
                if r.src != 0 {
                    return Err(unsupported);
                }
                insn.op = Op::Lddw;
                writes_dst = true;
            } else if matches!(r.opcode & 0xe0, mode::ABS | mode::IND) {
                return Err(unsupported);
            } else {
                return Err(unknown);
            }
        }
        class::LDX => {
            writes_dst = true;
            insn.op = match (r.opcode & 0xe0, r.opcode & 0x18) {
                (mode::MEM, size::B) => Op::Ldx8,
                (mode::MEM, size::H) => Op::Ldx16,
                (mode::MEM, size::W) => Op::Ldx32,
                (mode::MEM, size::DW) => Op::Ldx64,
                (mode::MEMSX, size::B) => Op::Ldsx8,
                (mode::MEMSX, size::H) => Op::Ldsx16,
                (mode::MEMSX, size::W) => Op::Ldsx32,
                _ => return Err(unknown),
            };
        }
        class::ST => {
            writes_dst = false;
            insn.op = match (r.opcode & 0xe0, r.opcode & 0x18) {
                (mode::MEM, size::B) => Op::St8,
                (mode::MEM, size::H) => Op::St16,
                (mode::MEM, size::W) => Op::St32,
                (mode::MEM, size::DW) => Op::St64,
                _ => return Err(unknown),
            };
        }
        class::STX => {
            writes_dst = false;
            insn.op = match (r.opcode & 0xe0, r.opcode & 0x18) {
                (mode::MEM, size::B) => Op::Stx8,
                (mode::MEM, size::H) => Op::Stx16,
                (mode::MEM, size::W) => Op::Stx32,
                (mode::MEM, size::DW) => Op::Stx64,
                (mode::ATOMIC, sz @ (size::W | size::DW)) => {
                    let known = matches!(r.imm, atomic::XCHG | atomic::CMPXCHG)
                        || matches!(
                            r.imm & !atomic::FETCH,
                            atomic::ADD | atomic::OR | atomic::AND | atomic::XOR
                        );
                    if !known {
                        return Err(VerifyError::InvalidImmediate { pc, imm: r.imm });
                    }
                    // Fetching variants write `src` (cmpxchg writes r0 instead).
                    if r.imm & atomic::FETCH != 0 && r.imm != atomic::CMPXCHG && r.src == 10 {
                        return Err(VerifyError::WriteToFrameRegister { pc });
                    }
                    if sz == size::W {
                        Op::Atomic32
                    } else {
                        Op::Atomic64
                    }
                }
                _ => return Err(unknown),
            };
        }
        _ => return Err(unknown),
    }
    if writes_dst && r.dst == 10 {
        return Err(VerifyError::WriteToFrameRegister { pc });
    }
    Ok(insn)
}

/// Absolute target of a jump `rel` slots after the next instruction.
fn jump_target(pc: u32, rel: i64, slots: usize) -> Result<i32, VerifyError> {
    let target = i64::from(pc) + 1 + rel;
    if target < 0 || target >= slots as i64 {
        return Err(VerifyError::JumpOutOfRange { pc, target });
    }
    Ok(target as i32)
}

fn decode_cond(code: u8, x: bool, jmp64: bool) -> Option<Op> {
    use Op::*;
    let (k64, x64, k32, x32) = match code {
        0x10 => (JeqImm, JeqReg, Jeq32Imm, Jeq32Reg),
        0x20 => (JgtImm, JgtReg, Jgt32Imm, Jgt32Reg),
        0x30 => (JgeImm, JgeReg, Jge32Imm, Jge32Reg),
        0x40 => (JsetImm, JsetReg, Jset32Imm, Jset32Reg),
        0x50 => (JneImm, JneReg, Jne32Imm, Jne32Reg),
        0x60 => (JsgtImm, JsgtReg, Jsgt32Imm, Jsgt32Reg),
        0x70 => (JsgeImm, JsgeReg, Jsge32Imm, Jsge32Reg),
        0xa0 => (JltImm, JltReg, Jlt32Imm, Jlt32Reg),
        0xb0 => (JleImm, JleReg, Jle32Imm, Jle32Reg),
        0xc0 => (JsltImm, JsltReg, Jslt32Imm, Jslt32Reg),
        0xd0 => (JsleImm, JsleReg, Jsle32Imm, Jsle32Reg),
        _ => return None,
    };
    Some(match (jmp64, x) {
        (true, false) => k64,
        (true, true) => x64,
        (false, false) => k32,
        (false, true) => x32,
    })
}

fn decode_alu(pc: u32, r: RawInsn) -> Result<Op, VerifyError> {
    use Op::*;
    let alu64 = r.opcode & 0x07 == class::ALU64;
    let x = r.opcode & SRC_X != 0;
    let code = r.opcode & 0xf0;
    let bad_off = VerifyError::InvalidOffset { pc, off: r.off };
    // (64-bit imm, 64-bit reg, 32-bit imm, 32-bit reg)
    let pick = |ops: (Op, Op, Op, Op)| match (alu64, x) {
        (true, false) => ops.0,
        (true, true) => ops.1,
        (false, false) => ops.2,
        (false, true) => ops.3,
    };
    let plain = |ops| {
        if r.off == 0 {
            Ok(pick(ops))
        } else {
            Err(bad_off)
        }
    };
    match code {
        0x00 => plain((Add64Imm, Add64Reg, Add32Imm, Add32Reg)),
        0x10 => plain((Sub64Imm, Sub64Reg, Sub32Imm, Sub32Reg)),
        0x20 => plain((Mul64Imm, Mul64Reg, Mul32Imm, Mul32Reg)),
        0x30 => match r.off {
            0 => Ok(pick((Div64Imm, Div64Reg, Div32Imm, Div32Reg))),
            1 => Ok(pick((SDiv64Imm, SDiv64Reg, SDiv32Imm, SDiv32Reg))),
            _ => Err(bad_off),
        },
        0x40 => plain((Or64Imm, Or64Reg, Or32Imm, Or32Reg)),
        0x50 => plain((And64Imm, And64Reg, And32Imm, And32Reg)),
        0x60 => plain((Lsh64Imm, Lsh64Reg, Lsh32Imm, Lsh32Reg)),
        0x70 => plain((Rsh64Imm, Rsh64Reg, Rsh32Imm, Rsh32Reg)),
        0x80 => {
            if x {
                return Err(VerifyError::UnknownOpcode {
                    pc,
                    opcode: r.opcode,
                });
            }
            plain((Neg64, Neg64, Neg32, Neg32))
        }
        0x90 => match r.off {
            0 => Ok(pick((Mod64Imm, Mod64Reg, Mod32Imm, Mod32Reg))),
            1 => Ok(pick((SMod64Imm, SMod64Reg, SMod32Imm, SMod32Reg))),
            _ => Err(bad_off),
        },
        0xa0 => plain((Xor64Imm, Xor64Reg, Xor32Imm, Xor32Reg)),
        0xb0 => match (r.off, x, alu64) {
            (0, _, _) => Ok(pick((Mov64Imm, Mov64Reg, Mov32Imm, Mov32Reg))),
            (8, true, true) => Ok(MovSx64B),
            (16, true, true) => Ok(MovSx64H),
            (32, true, true) => Ok(MovSx64W),
            (8, true, false) => Ok(MovSx32B),
            (16, true, false) => Ok(MovSx32H),
            _ => Err(bad_off),
        },
        0xc0 => plain((Arsh64Imm, Arsh64Reg, Arsh32Imm, Arsh32Reg)),
        0xd0 => {
            if r.off != 0 {
                return Err(bad_off);
            }
            let bad_imm = VerifyError::InvalidImmediate { pc, imm: r.imm };
            match (alu64, x) {
                // le16/32/64: a little-endian machine only truncates.
                (false, false) => match r.imm {
                    16 => Ok(ZeroExt16),
                    32 => Ok(ZeroExt32),
                    64 => Ok(Nop),
                    _ => Err(bad_imm),
                },
                // be16/32/64 and the v4 unconditional bswap16/32/64.
                (false, true) | (true, false) => match r.imm {
                    16 => Ok(Swap16),
                    32 => Ok(Swap32),
                    64 => Ok(Swap64),
                    _ => Err(bad_imm),
                },
                (true, true) => Err(VerifyError::UnknownOpcode {
                    pc,
                    opcode: r.opcode,
                }),
            }
        }
        _ => Err(VerifyError::UnknownOpcode {
            pc,
            opcode: r.opcode,
        }),
    }
}

/// Rejects a program whose bpf-to-bpf calls, followed from the entry, nest deeper than
/// [`abi::MAX_CALL_DEPTH`] frames. Functions are the ranges between sorted call targets (and
/// instruction 0). Recursive cycles have no static depth; the interpreter bounds them.
fn check_call_depth(insns: &[Insn]) -> Result<(), VerifyError> {
    if !insns.iter().any(|i| i.op == Op::CallLocal) {
        return Ok(());
    }
    // Marked, then listed in order: sorted and without duplicates, with no sort (whose code
    // would cost the board's image about 3 KiB).
    let mut is_entry = vec![false; insns.len()];
    is_entry[0] = true;
    for i in insns.iter().filter(|i| i.op == Op::CallLocal) {
        // Call targets were checked to lie inside the program.
        if let Some(e) = is_entry.get_mut(i.off as usize) {
            *e = true;
        }
    }
    let entries: Vec<u32> = (0..insns.len() as u32)
        .filter(|&pc| is_entry[pc as usize])
        .collect();
    let func_of = |pc: u32| entries.partition_point(|&e| e <= pc) - 1;
    let mut callees: Vec<Vec<usize>> = vec![Vec::new(); entries.len()];
    for (pc, insn) in insns.iter().enumerate() {
        if insn.op == Op::CallLocal {
            callees[func_of(pc as u32)].push(func_of(insn.off as u32));
        }
    }
    // Iterative depth-first search for the longest call chain, ignoring back edges.
    const UNSEEN: u8 = 0;
    const ON_PATH: u8 = 1;
    const DONE: u8 = 2;
    let mut state = vec![UNSEEN; entries.len()];
    let mut depth = vec![1u32; entries.len()];
    let mut stack: Vec<(usize, usize)> = vec![(0, 0)];
    state[0] = ON_PATH;
    while let Some(top) = stack.last_mut() {
        let (f, next) = *top;
        if let Some(&g) = callees[f].get(next) {
            top.1 += 1;
            match state[g] {
                UNSEEN => {
                    state[g] = ON_PATH;
                    stack.push((g, 0));
                }
                DONE => depth[f] = depth[f].max(depth[g] + 1),
                _ => {} // recursion: bounded at run time
            }
        } else {
            state[f] = DONE;
            stack.pop();
            if let Some(&(parent, _)) = stack.last() {
                depth[parent] = depth[parent].max(depth[f] + 1);
            }
        }
    }
    if depth[0] > abi::MAX_CALL_DEPTH {
        return Err(VerifyError::CallDepthExceeded { depth: depth[0] });
    }
    Ok(())
}
