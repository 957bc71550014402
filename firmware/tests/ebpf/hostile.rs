//! Hostile kernels: every misbehaviour ends the run with a typed error, never a panic or an
//! access outside the VM's buffers.

use crate::util::{asm, ctx, load, prog, run, TestEnv, FUEL};
use common::abi::{self, region};
use firmware::ebpf::{encode_image, ExecError, LoadError, Program, Step, VerifyError, Vm};

fn fault(src: &str) -> ExecError {
    match run(&prog(src)) {
        Err(e) => e,
        Ok(v) => panic!("expected a fault, got {v:?}"),
    }
}

/// An infinite loop ends with OutOfFuel after exactly the budget's instructions.
#[test]
fn infinite_loop_runs_out_of_fuel() {
    let p = prog("mov64 r0, 0\nja -1\nexit");
    let mut vm = Vm::new(0);
    let e = vm
        .run_to_end(&p, &ctx(), &mut TestEnv::default(), 1000)
        .expect_err("must not finish");
    assert!(
        matches!(e, ExecError::OutOfFuel { instructions: 1000 }),
        "{e:?}"
    );
    assert_eq!(vm.stats().instructions, 1000);
    assert_eq!(vm.stats().fuel_used, 1000);
}

/// A long loop run in small slices yields many times and ends with the same result and
/// counters as one big slice; an exhausted total budget ends it even across slices.
#[test]
fn resumable_slices() {
    let p = prog("mov64 r0, 0\nmov64 r1, 1000\nadd64 r0, r1\nsub64 r1, 1\njne r1, 0, -3\nexit");
    let (want, want_stats) = run(&p).expect("run");
    assert_eq!(want, 500_500);

    let mut vm = Vm::new(0);
    let mut env = TestEnv::default();
    vm.start(&p, &ctx(), FUEL);
    let mut yields = 0;
    let r0 = loop {
        match vm.resume(&p, &mut env, 7).expect("resume") {
            Step::Yielded => yields += 1,
            Step::Exited { r0 } => break r0,
        }
    };
    assert_eq!(r0, want);
    assert_eq!(vm.stats(), want_stats);
    assert_eq!(yields, 428, "slices of 7 fuel");
    assert!(matches!(
        vm.resume(&p, &mut env, 7),
        Err(ExecError::NotRunning)
    ));

    vm.start(&p, &ctx(), 100);
    assert_eq!(vm.resume(&p, &mut env, 60), Ok(Step::Yielded));
    assert!(matches!(
        vm.resume(&p, &mut env, 60),
        Err(ExecError::OutOfFuel { instructions: 100 })
    ));
}

/// Resuming with a different program than the run started with is refused.
#[test]
fn resume_with_other_program() {
    let p = prog("ja -1\nexit");
    let q = prog("mov64 r0, 1\nexit");
    let mut vm = Vm::new(0);
    vm.start(&p, &ctx(), 100);
    assert!(matches!(
        vm.resume(&q, &mut TestEnv::default(), 10),
        Err(ExecError::ProgramMismatch)
    ));
}

/// A load that starts inside the 64-byte context and ends past it faults.
#[test]
fn load_straddling_region_end() {
    assert_eq!(
        fault("ldxdw r0, [r1+60]\nexit"),
        ExecError::MemoryFault {
            pc: 0,
            addr: region::CTX_BASE + 60,
            len: 8,
            write: false
        }
    );
    // The last whole word is fine.
    assert_eq!(
        run(&prog("ldxdw r0, [r1+56]\nexit")).map(|r| r.0),
        Ok(u64::from(abi::DEFAULT_SCRATCH_BYTES))
    );
}

/// Loads and stores outside the stack: above the top, below the entry frame, and into a
/// callee frame after it returned.
#[test]
fn stack_bounds() {
    assert!(matches!(
        fault("ldxb r0, [r10+0]\nexit"),
        ExecError::MemoryFault {
            pc: 0,
            len: 1,
            write: false,
            ..
        }
    ));
    assert!(matches!(
        fault("ldxw r0, [r10-2]\nexit"),
        ExecError::MemoryFault { pc: 0, len: 4, .. }
    ));
    assert!(matches!(
        fault("stb [r10-513], 1\nexit"),
        ExecError::MemoryFault {
            pc: 0,
            len: 1,
            write: true,
            ..
        }
    ));
    // The callee stores to its own frame; the caller reads it after return: not live.
    let src = "
        callx 3
        mov64 r1, r10
        ldxdw r0, [r10-520]
        exit
        stdw [r10-8], 5
        exit";
    assert!(matches!(
        fault(src),
        ExecError::MemoryFault {
            pc: 2,
            write: false,
            ..
        }
    ));
}

/// Writes to the read-only context and read-only data fault; reads of rodata work and a read
/// past its end faults.
#[test]
fn read_only_regions() {
    assert_eq!(
        fault("stb [r1+0], 1\nexit"),
        ExecError::MemoryFault {
            pc: 0,
            addr: region::CTX_BASE,
            len: 1,
            write: true
        }
    );
    assert!(matches!(
        fault("mov64 r2, 5\nstxdw [r1+8], r2\nexit"),
        ExecError::MemoryFault {
            pc: 1,
            write: true,
            ..
        }
    ));
    let text = asm(&format!(
        "lddw r1, {:#x}\nldxw r0, [r1+0]\nstb [r1+0], 1\nexit",
        region::RODATA_BASE
    ));
    let p = Program::load(&encode_image(&text, b"abcd")).expect("load");
    assert!(matches!(
        run(&p),
        Err(ExecError::MemoryFault {
            pc: 3,
            write: true,
            ..
        })
    ));
    let text = asm(&format!(
        "lddw r1, {:#x}\nldxw r0, [r1+0]\nldxw r0, [r1+1]\nexit",
        region::RODATA_BASE
    ));
    let p = Program::load(&encode_image(&text, b"abcd")).expect("load");
    assert!(matches!(
        run(&p),
        Err(ExecError::MemoryFault {
            pc: 3,
            len: 4,
            write: false,
            ..
        })
    ));
}

/// Scratch is bounded by its size; unmapped addresses and wrapping addresses fault.
#[test]
fn scratch_and_unmapped() {
    let end = abi::DEFAULT_SCRATCH_BYTES - 4;
    assert!(matches!(
        fault(&format!("call 3\nadd64 r0, {end}\nldxdw r0, [r0+0]\nexit")),
        ExecError::MemoryFault { pc: 2, len: 8, .. }
    ));
    assert!(matches!(
        fault("mov64 r1, 0\nldxb r0, [r1+0]\nexit"),
        ExecError::MemoryFault { pc: 1, addr: 0, .. }
    ));
    assert!(matches!(
        fault("lddw r1, 0x500000000\nstb [r1+0], 1\nexit"),
        ExecError::MemoryFault { pc: 2, .. }
    ));
    assert!(matches!(
        fault("mov64 r1, -1\nldxdw r0, [r1+0]\nexit"),
        ExecError::MemoryFault {
            pc: 1,
            addr: u64::MAX,
            ..
        }
    ));
    assert!(matches!(
        fault("lddw r1, 0x2ffffffff\nldxdw r0, [r1+0]\nexit"),
        ExecError::MemoryFault { pc: 2, .. }
    ));
    let mut vm = Vm::new(0);
    let e = vm
        .run_to_end(
            &prog("call 3\nldxb r0, [r0+0]\nexit"),
            &ctx(),
            &mut TestEnv::default(),
            FUEL,
        )
        .expect_err("no scratch");
    assert!(matches!(e, ExecError::MemoryFault { pc: 1, .. }));
}

/// Helpers handed memory outside the kernel's regions fault the kernel without calling the
/// environment: a wild pointer, a length running past a region, a read into read-only memory.
#[test]
fn bad_helper_pointers() {
    let cases = [
        ("mov64 r1, 0\nmov64 r2, 8\ncall 2\nexit", abi::helper::EMIT),
        (
            "mov64 r1, r10\nsub64 r1, 8\nmov64 r2, 16\ncall 2\nexit",
            abi::helper::EMIT,
        ),
        (
            "mov64 r1, r10\nsub64 r1, 8\nmov64 r2, -1\ncall 2\nexit",
            abi::helper::EMIT,
        ),
        (
            "mov64 r2, r1\nmov64 r1, 0\nmov64 r3, 8\ncall 1\nexit",
            abi::helper::READ,
        ),
        (
            "mov64 r2, r10\nsub64 r2, 520\nmov64 r3, 8\ncall 1\nexit",
            abi::helper::READ,
        ),
        (
            "call 3\nmov64 r2, r0\nmov64 r1, 0\nlddw r3, 0x100000000\ncall 1\nexit",
            abi::helper::READ,
        ),
        ("mov64 r1, 12\nmov64 r2, 8\ncall 4\nexit", abi::helper::LOG),
        ("mov64 r2, 8\ncall 5\nexit", abi::helper::INPUT),
    ];
    for (src, id) in cases {
        let mut env = TestEnv::with_file(vec![1; 64]);
        env.input = Some(vec![2; 64]);
        let e = crate::util::run_env(&prog(src), &mut env).expect_err(src);
        assert!(
            matches!(e, ExecError::HelperFault { helper, .. } if helper == id),
            "{src}: {e:?}"
        );
        assert_eq!(env.calls, 0, "{src}: the environment must not be called");
    }
}

/// Unknown helper ids are refused at load, before anything runs.
#[test]
fn unknown_helper_refused() {
    assert!(matches!(
        load(&asm("call 99\nexit")),
        Err(LoadError::Verify(VerifyError::UnknownHelper {
            pc: 0,
            id: 99
        }))
    ));
}

/// A jump out of the program and an oversized program are refused at load.
#[test]
fn jump_out_and_oversized() {
    assert!(matches!(
        load(&asm("ja +1000\nexit")),
        Err(LoadError::Verify(VerifyError::JumpOutOfRange { pc: 0, .. }))
    ));
    let huge = asm("exit").repeat(abi::MAX_PROGRAM_INSNS as usize + 1);
    assert!(matches!(
        load(&huge),
        Err(LoadError::Verify(VerifyError::TooLarge { .. }))
    ));
}

/// Unbounded recursion (no static depth) ends with CallDepthExceeded at the call that would
/// open frame MAX_CALL_DEPTH + 1.
#[test]
fn deep_recursion() {
    let p = prog("callx 1\nexit\ncallx -1\nexit");
    assert_eq!(run(&p), Err(ExecError::CallDepthExceeded { pc: 2 }));
}

/// A recursion that stops within the limit works: depth 8 frames (entry included).
#[test]
fn bounded_recursion() {
    // f(n): if n == 0 return 0; return 1 + f(n - 1). f(6) opens 7 frames below the entry.
    let src = "
        mov64 r1, 6
        callx 1
        exit
        mov64 r0, 0
        jeq r1, 0, +4
        mov64 r6, r1
        sub64 r1, 1
        callx -5
        add64 r0, 1
        exit";
    assert_eq!(run(&prog(src)).map(|r| r.0), Ok(6));
    let deeper = src.replace("mov64 r1, 6", "mov64 r1, 7");
    assert!(matches!(
        run(&prog(&deeper)),
        Err(ExecError::CallDepthExceeded { .. })
    ));
}

/// A fresh run never sees the previous run's stack or scratch.
#[test]
fn runs_do_not_leak_memory() {
    let writer = prog("stdw [r10-8], 42\ncall 3\nstdw [r0+0], 43\nmov64 r0, 0\nexit");
    let reader = prog("ldxdw r0, [r10-8]\ncall 3\nldxdw r1, [r0+0]\nmov64 r0, r1\nldxdw r1, [r10-8]\nadd64 r0, r1\nexit");
    let mut vm = Vm::new(4096);
    let mut env = TestEnv::default();
    vm.run_to_end(&writer, &ctx(), &mut env, FUEL)
        .expect("writer");
    assert_eq!(
        vm.run_to_end(&reader, &ctx(), &mut env, FUEL).map(|r| r.0),
        Ok(0)
    );
}
