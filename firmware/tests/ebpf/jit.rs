//! The JIT against the interpreter on programs written for neither: random instruction
//! streams that pass the verifier, with memory faults, helper calls with random arguments,
//! local calls, backward jumps cut short by fuel, and every opcode the verifier takes. (The
//! other modules compare the two executors too: `util::run` runs both.)

use crate::util::{ctx, load, prog, raw, run, TestEnv};
use common::abi::{self, helper};
use proptest::prelude::*;
use testkit::executors;

/// Opcodes the verifier takes, by kind (the immediate and offset are chosen per kind).
fn alu_opcodes() -> Vec<u8> {
    let mut ops = Vec::new();
    for class in [0x04u8, 0x07] {
        for code in [
            0x00u8, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x90, 0xa0, 0xb0, 0xc0,
        ] {
            ops.push(code | class);
            ops.push(code | 0x08 | class);
        }
        ops.push(0x80 | class); // neg
    }
    ops
}

fn jump_opcodes() -> Vec<u8> {
    let mut ops = vec![0x05]; // ja
    for class in [0x05u8, 0x06] {
        for code in [
            0x10u8, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0xa0, 0xb0, 0xc0, 0xd0,
        ] {
            ops.push(code | class);
            ops.push(code | 0x08 | class);
        }
    }
    ops
}

const LOADS: [u8; 7] = [0x61, 0x69, 0x71, 0x79, 0x81, 0x89, 0x91];
const STORES: [u8; 8] = [0x62, 0x6a, 0x72, 0x7a, 0x63, 0x6b, 0x73, 0x7b];
const ATOMIC_OPS: [i32; 10] = [0x00, 0x01, 0x40, 0x41, 0x50, 0x51, 0xa0, 0xa1, 0xe1, 0xf1];

/// One generated piece: one slot, or two for `lddw`.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    let reg = 0u8..=10;
    let dst = 0u8..=9;
    let small = prop_oneof![-70i16..70, Just(-512i16), Just(-520), Just(4096)];
    let imm = prop_oneof![
        -8i32..8,
        any::<i32>(),
        Just(i32::MIN),
        Just(31),
        Just(32),
        Just(63),
        Just(64)
    ];
    prop_oneof![
        6 => (prop::sample::select(alu_opcodes()), dst.clone(), reg.clone(), 0i16..2, imm.clone())
            // off 1 makes div and mod signed; elsewhere the verifier wants 0.
            .prop_map(|(op, d, s, off, imm)| {
                let off = if matches!(op & 0xf0, 0x30 | 0x90) { off } else { 0 };
                raw(op, d, s, off, imm)
            }),
        1 => (dst.clone(), reg.clone(), prop::sample::select(vec![(0xbfu8, 8i16), (0xbf, 16), (0xbf, 32), (0xbc, 8), (0xbc, 16)]))
            .prop_map(|(d, s, (op, off))| raw(op, d, s, off, 0)),
        1 => (dst.clone(), prop::sample::select(vec![(0xd4u8, 16), (0xd4, 32), (0xd4, 64), (0xdc, 16), (0xdc, 32), (0xdc, 64), (0xd7, 16), (0xd7, 32), (0xd7, 64)]))
            .prop_map(|(d, (op, w))| raw(op, d, 0, 0, w)),
        1 => (dst.clone(), any::<u64>()).prop_map(|(d, v)| {
            [raw(0x18, d, 0, 0, v as u32 as i32), raw(0, 0, 0, 0, (v >> 32) as u32 as i32)].concat()
        }),
        3 => (prop::sample::select(jump_opcodes()), dst.clone(), reg.clone(), -5i16..6, imm.clone())
            .prop_map(|(op, d, s, off, imm)| raw(op, d, s, off, imm)),
        3 => (prop::sample::select(LOADS.to_vec()), dst.clone(), reg.clone(), small.clone())
            .prop_map(|(op, d, s, off)| raw(op, d, s, off, 0)),
        3 => (prop::sample::select(STORES.to_vec()), reg.clone(), reg.clone(), small.clone(), imm.clone())
            .prop_map(|(op, d, s, off, imm)| raw(op, d, s, off, imm)),
        1 => (any::<bool>(), reg.clone(), reg.clone(), small, prop::sample::select(ATOMIC_OPS.to_vec()))
            .prop_map(|(wide, d, s, off, op)| raw(if wide { 0xdb } else { 0xc3 }, d, s, off, op)),
        2 => (1u32..=helper::MAX_ID).prop_map(|id| raw(0x85, 0, 0, 0, id as i32)),
        1 => (-6i32..6).prop_map(|rel| raw(0x85, 0, 1, 0, rel)),
        1 => Just(raw(0x95, 0, 0, 0, 0)),
    ]
}

/// A prologue that leaves useful pointers in registers (so many accesses land, and many do
/// not), the generated pieces, and a final exit.
fn program(pieces: &[Vec<u8>]) -> Vec<u8> {
    let mut text = [
        raw(0xbf, 6, 1, 0, 0),                      // r6 = ctx
        raw(0x85, 0, 0, 0, helper::SCRATCH as i32), // r0 = scratch
        raw(0xbf, 7, 0, 0, 0),                      // r7 = scratch
        raw(0xbf, 8, 10, 0, 0),                     // r8 = r10 - 64
        raw(0x07, 8, 0, 0, -64),
        raw(0xb7, 2, 0, 0, 16), // r2 = 16 (a length)
        raw(0xbf, 1, 7, 0, 0),  // r1 = scratch
    ]
    .concat();
    for p in pieces {
        text.extend_from_slice(p);
    }
    text.extend(raw(0x95, 0, 0, 0, 0));
    text
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    /// Whatever a verified program does (exit, fault, run out of fuel), the JIT does the same
    /// to the instruction: result, fault, fuel, counters, memory and helper effects, in one
    /// slice and in small ones.
    #[test]
    fn verified_programs_run_alike(pieces in prop::collection::vec(piece(), 1..40), op in 0u64..3) {
        let text = program(&pieces);
        // Most random programs fail verification; those that pass are what this compares.
        let Ok(p) = load(&text) else { return Ok(()) };
        let mut env = TestEnv::with_file((0..=255u8).cycle().take(700).collect());
        if op == abi::op::WRITE_STREAM {
            env.input = Some(vec![0x5a; 300]);
        }
        let c = firmware::ebpf::Context { op, file_size: 700, len: 700, out_cap: 96, ..ctx() };
        executors::agree(&p, &c, &env, 3_000, 4096);
    }
}

/// The generator is not vacuous: a good share of its programs pass the verifier, and they end
/// in every way a run can (exit, each fault, out of fuel).
#[test]
fn generated_programs_end_every_way() {
    use firmware::ebpf::{ExecError, Step};
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let strategy = prop::collection::vec(piece(), 1..40);
    let (mut loaded, mut exits, mut memory, mut helper, mut depth, mut fuel) = (0, 0, 0, 0, 0, 0);
    for _ in 0..400 {
        let pieces = strategy.new_tree(&mut runner).expect("generate").current();
        let Ok(p) = load(&program(&pieces)) else {
            continue;
        };
        loaded += 1;
        let env = TestEnv::with_file(vec![7; 700]);
        let run = executors::run(None, &p, &ctx(), env, 3_000, 3_000, 4096);
        match run.end {
            Ok(Step::Exited { .. }) => exits += 1,
            Err(ExecError::MemoryFault { .. }) => memory += 1,
            Err(ExecError::HelperFault { .. }) => helper += 1,
            Err(ExecError::CallDepthExceeded { .. }) => depth += 1,
            Err(ExecError::OutOfFuel { .. }) => fuel += 1,
            other => panic!("unexpected end {other:?}"),
        }
    }
    let counts = (loaded, exits, memory, helper, depth, fuel);
    eprintln!("(loaded, exits, memory, helper, depth, fuel) of 400: {counts:?}");
    assert!(loaded >= 100, "{counts:?}");
    assert!(
        exits > 0 && memory > 0 && helper > 0 && depth > 0 && fuel > 0,
        "(loaded, exits, memory, helper, depth, fuel) = {counts:?}"
    );
}

/// Accesses at an address the block checked already (the JIT checks once per block and
/// register): a read-modify-write in scratch, a write after a read of the read-only context
/// (which must still fault, at the store, as a write), and a register moved between two
/// accesses (the second is checked again, and faults past scratch). `run` compares the JIT
/// with the interpreter on each, whole and in slices.
#[test]
fn repeated_addresses_in_a_block() {
    let scratch = format!("call {}\nmov64 r6, r0\n", helper::SCRATCH);
    let rmw = format!(
        "{scratch}ldxdw r2, [r6+8]\nadd64 r2, 42\nstxdw [r6+8], r2\nldxdw r0, [r6+8]\nexit"
    );
    assert_eq!(run(&prog(&rmw)).map(|r| r.0), Ok(42));

    let ctx_write = "ldxdw r2, [r1+8]\nadd64 r2, 1\nstxdw [r1+8], r2\nexit";
    assert_eq!(
        run(&prog(ctx_write)).map(|r| r.0),
        Err(firmware::ebpf::ExecError::MemoryFault {
            pc: 2,
            addr: abi::region::CTX_BASE + 8,
            len: 8,
            write: true
        })
    );

    let moved = format!(
        "{scratch}ldxdw r2, [r6+0]\nlddw r3, {}\nadd64 r6, r3\nstxdw [r6+0], r2\nexit",
        abi::DEFAULT_SCRATCH_BYTES
    );
    assert_eq!(
        run(&prog(&moved)).map(|r| r.0),
        Err(firmware::ebpf::ExecError::MemoryFault {
            pc: 6,
            addr: abi::region::SCRATCH_BASE + u64::from(abi::DEFAULT_SCRATCH_BYTES),
            len: 8,
            write: true
        })
    );
}

/// `dst = a + b` (mov64, add64), then `access`: an address a loop body builds and uses.
fn at_sum(dst: u8, a: u8, b: u8, access: Vec<u8>) -> Vec<u8> {
    [raw(0xbf, dst, a, 0, 0), raw(0x0f, dst, b, 0, 0), access].concat()
}

/// One piece of a generated loop body (no jumps: the loop stays one block).
fn loop_piece() -> impl Strategy<Value = Vec<u8>> {
    let k = -9i16..9;
    prop_oneof![
        // A byte at r2 + r4 (r4 steps), into r5.
        k.clone()
            .prop_map(|k| at_sum(5, 2, 4, raw(0x71, 5, 5, k, 0))),
        (0i32..5).prop_map(|s| raw(0x67, 5, 0, 0, s)),
        prop::sample::select(vec![0i32, 7, 255, 4095, -1]).prop_map(|m| raw(0x57, 5, 0, 0, m)),
        // counts[r5]++ at r1 + r5, by a load and a store or by an atomic add.
        k.clone().prop_map(|k| at_sum(
            0,
            1,
            5,
            [
                raw(0x79, 7, 0, k, 0),
                raw(0x07, 7, 0, 0, 1),
                raw(0x7b, 0, 7, k, 0)
            ]
            .concat()
        )),
        k.clone()
            .prop_map(|k| at_sum(0, 1, 5, raw(0xdb, 0, 9, k, 0))),
        // A store of a byte and a 32-bit load at r2 + r4.
        (k.clone(), any::<i32>()).prop_map(|(k, v)| at_sum(8, 2, 4, raw(0x72, 8, 0, k, v))),
        k.clone()
            .prop_map(|k| at_sum(8, 2, 4, raw(0x61, 7, 8, k, 0))),
        // Addresses the guard cannot bound: a loaded pointer, a scaled induction variable.
        k.clone().prop_map(|k| raw(0x79, 5, 1, k, 0)),
        Just(
            [
                raw(0xbf, 8, 4, 0, 0),
                raw(0x67, 8, 0, 0, 2),
                raw(0x0f, 8, 1, 0, 0),
                raw(0x61, 7, 8, 0, 0)
            ]
            .concat()
        ),
        // A frame access, which needs no bound.
        Just([raw(0x7b, 10, 4, -8, 0), raw(0x79, 7, 10, -8, 0)].concat()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Loops of one block, which the JIT runs without checks for as many iterations as its
    /// guard bounds: bases near either end of scratch (so runs walk off it at some iteration
    /// and fault there), counts and steps that end the loop before or after that, and fuel
    /// that runs out part way. Everything matches the interpreter, whole and in slices.
    #[test]
    fn one_block_loops_run_alike(
        a in prop_oneof![-24i32..24, 4000i32..4120],
        b in prop_oneof![-24i32..24, 3500i32..4120],
        n in 0i32..700,
        start in 0i32..9,
        step in 1i32..4,
        body in prop::collection::vec(loop_piece(), 1..6),
        fuel in prop_oneof![50u64..400, 400u64..40_000],
    ) {
        let mut text = [
            raw(0x85, 0, 0, 0, helper::SCRATCH as i32),
            raw(0xbf, 6, 0, 0, 0),
            raw(0xbf, 1, 6, 0, 0), raw(0x07, 1, 0, 0, a),
            raw(0xbf, 2, 6, 0, 0), raw(0x07, 2, 0, 0, b),
            raw(0xb7, 3, 0, 0, n),
            raw(0xb7, 4, 0, 0, start),
            raw(0xb7, 9, 0, 0, 3),
        ]
        .concat();
        let head = text.len() / 8;
        for piece in &body {
            text.extend_from_slice(piece);
        }
        text.extend(raw(0x07, 4, 0, 0, step));
        let back = head as i32 - (text.len() / 8) as i32 - 1;
        text.extend(raw(0x2d, 3, 4, back as i16, 0));
        text.extend([raw(0xbf, 0, 4, 0, 0), raw(0x95, 0, 0, 0, 0)].concat());
        let p = load(&text).expect("a loop the verifier takes");
        let env = TestEnv::with_file(vec![7; 64]);
        executors::agree(&p, &ctx(), &env, fuel, 4096);
    }
}
