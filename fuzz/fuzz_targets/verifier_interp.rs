//! The verifier, the interpreter and the JIT on hostile input.
//!
//! The first byte picks the mode:
//! - even: the rest is a program image: `Program::load` refuses it with a typed error or it
//!   runs with bounded fuel against an `Env` serving a small file; never a panic or a hang.
//!   The JIT runs it too and must agree with the interpreter on everything (result or fault,
//!   fuel, counters, memory, helper effects), in one slice and in small ones.
//! - odd: the rest drives `arbitrary` to build a terminating program in the subset rbpf 0.4
//!   defines like RFC 9669 (the generator of `firmware/tests/ebpf/diff.rs`); both interpreters
//!   must return the same r0, which folds in every data register and the stack window, and
//!   the JIT must agree with ours.
#![no_main]

use arbitrary::Unstructured;
use firmware::ebpf::{encode_image, Context, Env, HelperError, Program, Step};
use libfuzzer_sys::fuzz_target;

use testkit::ebpf_diff::{self, G};
use testkit::executors;

/// Enough for any terminating loop of a small program to show up as `OutOfFuel` quickly (and
/// for the comparison's one-fuel slices to stay fast).
const FUEL: u64 = 20_000;

/// A small file snapshot, an output sink and an optional write-stream input.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    let env = FuzzEnv {
        file: core::array::from_fn(|i| i as u8),
        out: 0,
        input_left: 300,
    };
    // Both executors, in one slice and in slices of 7 fuel (which end inside blocks and at
    // their starts), so resuming is exercised as well as running to the end.
    let c = ctx(common::abi::op::WRITE_STREAM);
    let run = executors::agree_in(&program, &c, &env, FUEL, 4096, &[7]);
    assert!(run.env.out as u64 <= 512, "emit overran out_cap");
    let stats = run.stats;
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

// ---- the differential mode: the generator of firmware/tests/ebpf/diff.rs, over `arbitrary`.

/// A data register.
fn reg(u: &mut Unstructured<'_>) -> arbitrary::Result<u8> {
    u.int_in_range(0..=ebpf_diff::MAX_REG)
}

fn maybe_reg(u: &mut Unstructured<'_>) -> arbitrary::Result<Option<u8>> {
    Ok(if u.arbitrary()? { Some(reg(u)?) } else { None })
}

/// One operation of the shared generator, drawn from the fuzzer's bytes.
fn op(u: &mut Unstructured<'_>) -> arbitrary::Result<G> {
    Ok(match u.int_in_range(0..=6u8)? {
        0 => G::Alu {
            code: *u.choose(&ebpf_diff::ALU_CODES)?,
            alu64: u.arbitrary()?,
            dst: reg(u)?,
            src: maybe_reg(u)?,
            imm: u.arbitrary()?,
        },
        1 => G::Neg {
            alu64: u.arbitrary()?,
            dst: reg(u)?,
        },
        2 => G::Endian {
            be: u.arbitrary()?,
            width: *u.choose(&ebpf_diff::WIDTHS)?,
            dst: reg(u)?,
        },
        3 => G::Lddw {
            dst: reg(u)?,
            value: u.arbitrary()?,
        },
        4 => G::Jump {
            code: *u.choose(&ebpf_diff::JMP_CODES)?,
            jmp32: u.arbitrary()?,
            dst: reg(u)?,
            src: maybe_reg(u)?,
            imm: u.arbitrary()?,
            skip: u.int_in_range(0..=ebpf_diff::MAX_SKIP)?,
        },
        5 => G::Store {
            size: u.int_in_range(0..=3)?,
            slot: u.arbitrary()?,
            src: maybe_reg(u)?,
            imm: u.arbitrary()?,
        },
        _ => G::Load {
            size: u.int_in_range(0..=3)?,
            slot: u.arbitrary()?,
            dst: reg(u)?,
            ctx: u.arbitrary()?,
        },
    })
}

/// The initial registers and up to 80 operations.
fn diff_input(bytes: &[u8]) -> arbitrary::Result<([u64; 9], Vec<G>)> {
    let mut u = Unstructured::new(bytes);
    let init: [u64; 9] = u.arbitrary()?;
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < 80 {
        ops.push(op(&mut u)?);
    }
    Ok((init, ops))
}

fn diff_mode(bytes: &[u8]) {
    let Ok((init, ops)) = diff_input(bytes) else {
        return;
    };
    let text = ebpf_diff::program(&ops, &init);
    let c = ctx(common::abi::op::FILE_JOB);
    let program = Program::load(&encode_image(&text, &[]))
        .unwrap_or_else(|e| panic!("our verifier refused a generated program: {e}"));
    let env = FuzzEnv {
        file: [0; 256],
        out: 0,
        input_left: 0,
    };
    let ours = match executors::agree_in(&program, &c, &env, 10_000_000, 0, &[7]).end {
        Ok(Step::Exited { r0 }) => r0,
        other => panic!("our run failed: {other:?}"),
    };
    let rbpf_vm = rbpf::EbpfVmRaw::new(Some(&text))
        .unwrap_or_else(|e| panic!("rbpf refused a generated program: {e}"));
    let mut mem = c.encode(0).to_vec();
    let theirs = rbpf_vm
        .execute_program(&mut mem)
        .unwrap_or_else(|e| panic!("rbpf failed: {e}"));
    assert_eq!(ours, theirs, "r0 differs from rbpf for {init:x?} {ops:?}");
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((mode, rest)) if mode & 1 == 1 => diff_mode(rest),
        Some((_, rest)) => raw_mode(rest),
        None => {}
    }
});
