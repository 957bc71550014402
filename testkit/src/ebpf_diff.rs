//! The generator of terminating eBPF programs that this executor and rbpf 0.4 must agree on,
//! shared by `firmware/tests/ebpf/diff.rs` (proptest) and the fuzz target
//! `fuzz/fuzz_targets/verifier_interp.rs` (arbitrary). It only encodes instructions: the
//! tests bring rbpf and their source of randomness.
//!
//! Only comparable behaviour is generated: no pointers reach results (rbpf uses host
//! addresses), memory stays in a 64-byte stack window or reads the 64-byte context (r9), and
//! the places where rbpf departs from RFC 9669 are steered around where they are encoded.

/// ALU operation codes the generator uses (every one but `neg`, `mov`... `end`).
pub const ALU_CODES: [u8; 12] = [
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x90, 0xa0, 0xb0, 0xc0,
];
/// Conditional jump codes.
pub const JMP_CODES: [u8; 11] = [
    0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0xa0, 0xb0, 0xc0, 0xd0,
];
/// Byte-swap widths.
pub const WIDTHS: [i32; 3] = [16, 32, 64];
/// The highest data register (r9 holds the context pointer, r10 the frame).
pub const MAX_REG: u8 = 8;
/// Most instructions a jump skips over, in whole operations.
pub const MAX_SKIP: u8 = 5;

/// One instruction slot.
fn raw(opcode: u8, dst: u8, src: u8, off: i16, imm: i32) -> Vec<u8> {
    let mut b = vec![opcode, (src << 4) | (dst & 0x0f)];
    b.extend_from_slice(&off.to_le_bytes());
    b.extend_from_slice(&imm.to_le_bytes());
    b
}

/// One generated operation: `code` is one of [`ALU_CODES`] / [`JMP_CODES`], registers are at
/// most [`MAX_REG`], `width` one of [`WIDTHS`], `size` below 4, `skip` at most [`MAX_SKIP`];
/// `slot` may be anything (it is folded into the 64-byte window).
#[derive(Clone, Copy, Debug)]
pub enum G {
    Alu {
        code: u8,
        alu64: bool,
        dst: u8,
        src: Option<u8>,
        imm: i32,
    },
    Neg {
        alu64: bool,
        dst: u8,
    },
    Endian {
        be: bool,
        width: i32,
        dst: u8,
    },
    Lddw {
        dst: u8,
        value: u64,
    },
    Jump {
        code: u8,
        jmp32: bool,
        dst: u8,
        src: Option<u8>,
        imm: i32,
        skip: u8,
    },
    Store {
        size: u8,
        slot: u8,
        src: Option<u8>,
        imm: i32,
    },
    Load {
        size: u8,
        slot: u8,
        dst: u8,
        ctx: bool,
    },
}

/// Store/load size bits and byte lengths: b, h, w, dw.
const SIZES: [(u8, i16); 4] = [(0x10, 1), (0x08, 2), (0x00, 4), (0x18, 8)];

/// The whole program: `mov64 r9, r1` (the context), `init` in r0..r8, the operations (jumps
/// skip forward over whole operations only, so it terminates), then an epilogue folding r0..r8
/// and the 64-byte stack window into r0.
pub fn program(ops: &[G], init: &[u64; 9]) -> Vec<u8> {
    let mut out = raw(0xbf, 9, 1, 0, 0);
    for (r, v) in init.iter().enumerate() {
        out.extend(raw(0x18, r as u8, 0, 0, *v as u32 as i32));
        out.extend(raw(0, 0, 0, 0, (*v >> 32) as u32 as i32));
    }
    // Slot index of each operation's first instruction, relative to the first op.
    let pieces: Vec<Vec<Vec<u8>>> = ops.iter().map(encode_one).collect();
    let mut starts = Vec::with_capacity(ops.len() + 1);
    let mut at = 0usize;
    for p in &pieces {
        starts.push(at);
        at += p.iter().map(|i| i.len() / 8).sum::<usize>();
    }
    starts.push(at);
    for (i, (op, mut piece)) in ops.iter().zip(pieces).enumerate() {
        if let G::Jump { skip, .. } = op {
            let target = starts[(i + 1 + *skip as usize).min(ops.len())];
            // The jump is the last instruction of its piece.
            let jump_pc = starts[i + 1] - 1;
            let off = (target - jump_pc - 1) as i16;
            let last = piece.len() - 1;
            piece[last][2..4].copy_from_slice(&off.to_le_bytes());
        }
        out.extend(piece.concat());
    }
    out.extend(epilogue());
    out
}

/// Folds r0..r8 and the 64-byte stack window into r0, then exits: what the comparison sees.
pub fn epilogue() -> Vec<u8> {
    let mut out = Vec::new();
    for r in 1..=8u8 {
        out.extend(raw(0x27, 0, 0, 0, 1_000_003)); // mul64 r0, 1000003
        out.extend(raw(0xaf, 0, r, 0, 0)); // xor64 r0, rR
    }
    for k in 1..=8i16 {
        out.extend(raw(0x79, 1, 10, -8 * k, 0)); // ldxdw r1, [r10-8k]
        out.extend(raw(0x27, 0, 0, 0, 1_000_003));
        out.extend(raw(0xaf, 0, 1, 0, 0));
    }
    out.extend(raw(0x95, 0, 0, 0, 0)); // exit
    out
}

/// The instructions of one operation (a jump's offset is patched by [`program`]).
fn encode_one(op: &G) -> Vec<Vec<u8>> {
    match *op {
        G::Alu {
            code,
            alu64,
            dst,
            src,
            imm,
        } => {
            let class = if alu64 { 0x07 } else { 0x04 };
            match src {
                Some(s) => {
                    let mut v = Vec::new();
                    // 32-bit modulo by zero differs in rbpf: make the divisor non-zero.
                    if code == 0x90 && !alu64 {
                        v.push(raw(0x47, s, 0, 0, 1)); // or64 src, 1
                    }
                    v.push(raw(code | 0x08 | class, dst, s, 0, 0));
                    v
                }
                None => {
                    let imm = if (code == 0x30 || code == 0x90) && imm == 0 {
                        3
                    } else {
                        imm
                    };
                    vec![raw(code | class, dst, 0, 0, imm)]
                }
            }
        }
        // rbpf's neg64 overflows (a debug panic) on i64::MIN: make the low bit set first.
        G::Neg { alu64: true, dst } => vec![raw(0x47, dst, 0, 0, 1), raw(0x87, dst, 0, 0, 0)],
        G::Neg { alu64: false, dst } => vec![raw(0x84, dst, 0, 0, 0)],
        G::Endian { be, width, dst } => vec![raw(if be { 0xdc } else { 0xd4 }, dst, 0, 0, width)],
        G::Lddw { dst, value } => vec![
            raw(0x18, dst, 0, 0, value as u32 as i32),
            raw(0, 0, 0, 0, (value >> 32) as u32 as i32),
        ],
        G::Jump {
            code,
            jmp32,
            dst,
            src,
            imm,
            ..
        } => {
            let class = if jmp32 { 0x06 } else { 0x05 };
            match src {
                Some(s) => vec![raw(code | 0x08 | class, dst, s, 0, 0)],
                None => {
                    // rbpf zero-extends the immediate of unsigned 64-bit compares.
                    let unsigned = matches!(code, 0x10 | 0x20 | 0x30 | 0x50 | 0xa0 | 0xb0);
                    let imm = if unsigned && !jmp32 {
                        imm & i32::MAX
                    } else {
                        imm
                    };
                    vec![raw(code | class, dst, 0, 0, imm)]
                }
            }
        }
        G::Store {
            size,
            slot,
            src,
            imm,
        } => {
            let (bits, len) = SIZES[size as usize];
            let off = -64 + i16::from(slot) % (64 - len + 1);
            match src {
                Some(s) => vec![raw(0x63 | bits, 10, s, off, 0)],
                None => vec![raw(0x62 | bits, 10, 0, off, imm)],
            }
        }
        G::Load {
            size,
            slot,
            dst,
            ctx,
        } => {
            let (bits, len) = SIZES[size as usize];
            if ctx {
                let off = i16::from(slot) % (64 - len + 1);
                vec![raw(0x61 | bits, dst, 9, off, 0)]
            } else {
                let off = -64 + i16::from(slot) % (64 - len + 1);
                vec![raw(0x61 | bits, dst, 10, off, 0)]
            }
        }
    }
}
