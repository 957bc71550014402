//! The verifier and the interpreter on hostile input.
//!
//! The first byte picks the mode:
//! - even: the rest is a program image: `Program::load` refuses it with a typed error or it
//!   runs with bounded fuel against an `Env` serving a small file; never a panic or a hang.
//! - odd: the rest drives `arbitrary` to build a terminating program in the subset rbpf 0.4
//!   defines like RFC 9669 (the generator of `firmware/tests/ebpf_diff.rs`); both interpreters
//!   must return the same r0, which folds in every data register and the stack window.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use firmware::ebpf::{encode_image, Context, Env, HelperError, Program, Vm};
use libfuzzer_sys::fuzz_target;

/// Enough for any terminating loop of a small program to show up as `OutOfFuel` quickly.
const FUEL: u64 = 200_000;

/// A small file snapshot, an output sink and an optional write-stream input.
struct FuzzEnv {
    file: [u8; 256],
    out: usize,
    input_left: usize,
}

impl Env for FuzzEnv {
    fn read(&mut self, file_off: u64, dst: &mut [u8]) -> Result<usize, HelperError> {
        let Some(rest) = usize::try_from(file_off)
            .ok()
            .and_then(|o| self.file.get(o..))
        else {
            return Ok(0);
        };
        let n = rest.len().min(dst.len());
        dst[..n].copy_from_slice(&rest[..n]);
        Ok(n)
    }
    fn emit(&mut self, src: &[u8]) -> Result<(), HelperError> {
        self.out += src.len();
        Ok(())
    }
    fn log(&mut self, msg: &[u8]) {
        assert!(msg.len() <= common::abi::LOG_MAX_BYTES as usize);
    }
    fn input(&mut self, dst: &mut [u8]) -> Result<usize, HelperError> {
        let n = self.input_left.min(dst.len());
        dst[..n].fill(0x5a);
        self.input_left -= n;
        Ok(n)
    }
}

fn ctx(op: u64) -> Context {
    Context {
        op,
        file_size: 256,
        offset: 0,
        len: 256,
        param0: 7,
        param1: u64::MAX,
        out_cap: 512,
    }
}

fn raw_mode(image: &[u8]) {
    let Ok(program) = Program::load(image) else {
        return;
    };
    let mut env = FuzzEnv {
        file: core::array::from_fn(|i| i as u8),
        out: 0,
        input_left: 300,
    };
    // Slices of every size, so resuming is exercised as well as running to the end.
    let mut vm = Vm::new(4096);
    vm.start(&program, &ctx(common::abi::op::WRITE_STREAM), FUEL);
    let mut slices = 0u32;
    while let Ok(firmware::ebpf::Step::Yielded) = vm.resume(&program, &mut env, 997) {
        slices += 1;
        assert!(slices <= 1_000, "the fuel budget did not end the run");
    }
    assert!(env.out as u64 <= 512, "emit overran out_cap");
    let stats = vm.stats();
    // One helper call may overrun the budget by its own cost.
    let most_moved = u64::from(common::abi::MAX_RODATA_BYTES) + 4096;
    let overrun =
        firmware::ebpf::HELPER_CALL_FUEL + most_moved.div_ceil(firmware::ebpf::BYTES_PER_FUEL);
    assert!(
        stats.fuel_used <= FUEL + overrun,
        "fuel {} over budget",
        stats.fuel_used
    );
}

// ---- the differential mode: the generator of firmware/tests/ebpf_diff.rs, over `arbitrary`.

/// One instruction slot.
fn raw(opcode: u8, dst: u8, src: u8, off: i16, imm: i32) -> Vec<u8> {
    let mut b = vec![opcode, (src << 4) | (dst & 0x0f)];
    b.extend_from_slice(&off.to_le_bytes());
    b.extend_from_slice(&imm.to_le_bytes());
    b
}

const ALU: [u8; 12] = [
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x90, 0xa0, 0xb0, 0xc0,
];
const JMP: [u8; 11] = [
    0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0xa0, 0xb0, 0xc0, 0xd0,
];
const SIZES: [(u8, i16); 4] = [(0x10, 1), (0x08, 2), (0x00, 4), (0x18, 8)];

/// A data register r0..r8 (r9 holds the context pointer, r10 the frame).
#[derive(Debug, Clone, Copy)]
struct Reg(u8);
impl<'a> Arbitrary<'a> for Reg {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Reg(u.int_in_range(0..=8)?))
    }
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum G {
    Alu {
        code: u8,
        alu64: bool,
        dst: Reg,
        src: Option<Reg>,
        imm: i32,
    },
    Neg {
        alu64: bool,
        dst: Reg,
    },
    Endian {
        be: bool,
        width: u8,
        dst: Reg,
    },
    Lddw {
        dst: Reg,
        value: u64,
    },
    Jump {
        code: u8,
        jmp32: bool,
        dst: Reg,
        src: Option<Reg>,
        imm: i32,
        skip: u8,
    },
    Store {
        size: u8,
        slot: u8,
        src: Option<Reg>,
        imm: i32,
    },
    Load {
        size: u8,
        slot: u8,
        dst: Reg,
        ctx: bool,
    },
}

#[derive(Debug, Arbitrary)]
struct DiffInput {
    init: [u64; 9],
    ops: Vec<G>,
}

fn encode_one(op: &G) -> Vec<Vec<u8>> {
    match *op {
        G::Alu {
            code,
            alu64,
            dst: Reg(dst),
            src,
            imm,
        } => {
            let code = ALU[usize::from(code) % ALU.len()];
            let class = if alu64 { 0x07 } else { 0x04 };
            match src {
                Some(Reg(s)) => {
                    let mut v = Vec::new();
                    // rbpf deviation: 32-bit modulo by zero keeps the upper half.
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
        // rbpf deviation: its neg64 overflows (a debug panic) on i64::MIN; set the low bit.
        G::Neg {
            alu64: true,
            dst: Reg(dst),
        } => vec![raw(0x47, dst, 0, 0, 1), raw(0x87, dst, 0, 0, 0)],
        G::Neg {
            alu64: false,
            dst: Reg(dst),
        } => vec![raw(0x84, dst, 0, 0, 0)],
        G::Endian {
            be,
            width,
            dst: Reg(dst),
        } => {
            let width = [16, 32, 64][usize::from(width) % 3];
            vec![raw(if be { 0xdc } else { 0xd4 }, dst, 0, 0, width)]
        }
        G::Lddw {
            dst: Reg(dst),
            value,
        } => vec![
            raw(0x18, dst, 0, 0, value as u32 as i32),
            raw(0, 0, 0, 0, (value >> 32) as u32 as i32),
        ],
        G::Jump {
            code,
            jmp32,
            dst: Reg(dst),
            src,
            imm,
            ..
        } => {
            let code = JMP[usize::from(code) % JMP.len()];
            let class = if jmp32 { 0x06 } else { 0x05 };
            match src {
                Some(Reg(s)) => vec![raw(code | 0x08 | class, dst, s, 0, 0)],
                None => {
                    // rbpf deviation: unsigned 64-bit compares zero-extend the immediate.
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
            let (bits, len) = SIZES[usize::from(size) % 4];
            let off = -64 + i16::from(slot) % (64 - len + 1);
            match src {
                Some(Reg(s)) => vec![raw(0x63 | bits, 10, s, off, 0)],
                None => vec![raw(0x62 | bits, 10, 0, off, imm)],
            }
        }
        G::Load {
            size,
            slot,
            dst: Reg(dst),
            ctx,
        } => {
            let (bits, len) = SIZES[usize::from(size) % 4];
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

/// The program: `mov64 r9, r1`, the initial registers, the operations (jumps skip forward
/// over whole operations only), then an epilogue folding r0..r8 and the stack window into r0.
fn encode(input: &DiffInput) -> Vec<u8> {
    let ops = &input.ops[..input.ops.len().min(80)];
    let mut out = raw(0xbf, 9, 1, 0, 0);
    for (r, v) in input.init.iter().enumerate() {
        out.extend(raw(0x18, r as u8, 0, 0, *v as u32 as i32));
        out.extend(raw(0, 0, 0, 0, (*v >> 32) as u32 as i32));
    }
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
            let skip = usize::from(*skip % 6);
            let target = starts[(i + 1 + skip).min(ops.len())];
            let jump_pc = starts[i + 1] - 1;
            let off = (target - jump_pc - 1) as i16;
            let last = piece.len() - 1;
            piece[last][2..4].copy_from_slice(&off.to_le_bytes());
        }
        out.extend(piece.concat());
    }
    for r in 1..=8u8 {
        out.extend(raw(0x27, 0, 0, 0, 1_000_003)); // mul64 r0, 1000003
        out.extend(raw(0xaf, 0, r, 0, 0)); // xor64 r0, rR
    }
    for k in 1..=8i16 {
        out.extend(raw(0x79, 1, 10, -8 * k, 0)); // ldxdw r1, [r10-8k]
        out.extend(raw(0x27, 0, 0, 0, 1_000_003));
        out.extend(raw(0xaf, 0, 1, 0, 0));
    }
    out.extend(raw(0x95, 0, 0, 0, 0));
    out
}

/// The context bytes our VM shows the kernel, given to rbpf as its memory.
fn ctx_bytes(c: &Context) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [
        c.op,
        c.file_size,
        c.offset,
        c.len,
        c.param0,
        c.param1,
        c.out_cap,
        0,
    ] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b
}

fn diff_mode(bytes: &[u8]) {
    let Ok(input) = DiffInput::arbitrary_take_rest(Unstructured::new(bytes)) else {
        return;
    };
    let text = encode(&input);
    let c = ctx(common::abi::op::FILE_JOB);
    let program = Program::load(&encode_image(&text, &[]))
        .unwrap_or_else(|e| panic!("our verifier refused a generated program: {e}"));
    let mut vm = Vm::new(0);
    let mut env = FuzzEnv {
        file: [0; 256],
        out: 0,
        input_left: 0,
    };
    let ours = vm
        .run_to_end(&program, &c, &mut env, 10_000_000)
        .unwrap_or_else(|e| panic!("our run failed: {e}"))
        .0;
    let rbpf_vm = rbpf::EbpfVmRaw::new(Some(&text))
        .unwrap_or_else(|e| panic!("rbpf refused a generated program: {e}"));
    let mut mem = ctx_bytes(&c);
    let theirs = rbpf_vm
        .execute_program(&mut mem)
        .unwrap_or_else(|e| panic!("rbpf failed: {e}"));
    assert_eq!(ours, theirs, "r0 differs from rbpf for {input:?}");
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((mode, rest)) if mode & 1 == 1 => diff_mode(rest),
        Some((_, rest)) => raw_mode(rest),
        None => {}
    }
});
