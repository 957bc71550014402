//! Helper semantics, error codes, run statistics and the fuel cost model.

use crate::util::{ctx, prog, run_env, TestEnv, FUEL};
use common::abi;
use firmware::ebpf::{
    run_to_end, Context, Env, ExecError, HelperError, Vm, BYTES_PER_FUEL, HELPER_CALL_FUEL,
};

/// Reads the whole file in 16-byte pieces into the stack, emitting each piece: csd_read
/// returns the bytes read and 0 at the end; the stats count bytes read and returned.
#[test]
fn read_and_emit_copy_a_file() {
    let src = "
        mov64 r6, 0
        mov64 r1, r6
        mov64 r2, r10
        sub64 r2, 16
        mov64 r3, 16
        call 1
        jsle r0, 0, +7
        mov64 r7, r0
        mov64 r1, r10
        sub64 r1, 16
        mov64 r2, r7
        call 2
        add64 r6, r7
        ja -13
        mov64 r0, r6
        exit";
    let file: Vec<u8> = (0..100u8).collect();
    let mut env = TestEnv::with_file(file.clone());
    let (r0, stats) = run_env(&prog(src), &mut env).expect("run");
    assert_eq!(r0, 100);
    assert_eq!(env.out, file);
    assert_eq!(stats.device_bytes_read, 100);
    assert_eq!(stats.bytes_returned, 100);
}

/// csd_emit past out_cap returns NO_SPACE and appends nothing; up to the cap it succeeds.
#[test]
fn emit_respects_out_cap() {
    let src = "
        mov64 r1, r10
        sub64 r1, 8
        mov64 r2, 8
        call 2
        mov64 r6, r0
        mov64 r1, r10
        sub64 r1, 8
        mov64 r2, 1
        call 2
        mov64 r7, r0
        mov64 r0, r6
        mul64 r0, 1000
        add64 r0, r7
        exit";
    let mut env = TestEnv::default();
    let c = Context {
        out_cap: 8,
        ..ctx()
    };
    let (r0, stats) = run_to_end(&prog(src), &c, &mut env, FUEL).expect("run");
    // First emit returned 8, the second NO_SPACE.
    assert_eq!(r0 as i64, 8 * 1000 + abi::err::NO_SPACE);
    assert_eq!(env.out.len(), 8);
    assert_eq!(stats.bytes_returned, 8);
}

/// csd_log keeps at most LOG_MAX_BYTES and returns the count kept; reading the message from
/// rodata or the context is allowed.
#[test]
fn log_truncates() {
    let src = "
        call 3
        mov64 r1, r0
        mov64 r2, 1000
        call 4
        exit";
    let mut env = TestEnv::default();
    let (r0, _) = run_env(&prog(src), &mut env).expect("run");
    assert_eq!(r0, u64::from(abi::LOG_MAX_BYTES));
    assert_eq!(env.logs.len(), 1);
    assert_eq!(env.logs[0].len(), abi::LOG_MAX_BYTES as usize);
    let (r0, _) = run_env(&prog("mov64 r2, 8\ncall 4\nexit"), &mut env).expect("ctx log");
    assert_eq!(r0, 8);
    assert_eq!(env.logs[1], abi::op::FILE_JOB.to_le_bytes());
}

/// csd_input copies write-stream data and returns 0 when exhausted; outside a write stream
/// the environment's NotSupported reaches the kernel as NOT_SUPPORTED.
#[test]
fn input_stream() {
    let src = "
        mov64 r1, r10
        sub64 r1, 8
        mov64 r2, 8
        call 5
        mov64 r6, r0
        ldxdw r7, [r10-8]
        mov64 r1, r10
        sub64 r1, 8
        mov64 r2, 8
        call 5
        add64 r6, r0
        mov64 r0, r7
        add64 r0, r6
        exit";
    let mut env = TestEnv {
        input: Some(vec![1, 0, 0, 0, 0, 0, 0, 0]),
        ..Default::default()
    };
    assert_eq!(run_env(&prog(src), &mut env).map(|r| r.0), Ok(1 + 8));
    let mut env = TestEnv::default();
    let (r0, _) = run_env(
        &prog("mov64 r1, r10\nsub64 r1, 8\nmov64 r2, 8\ncall 5\nexit"),
        &mut env,
    )
    .expect("run");
    assert_eq!(r0 as i64, abi::err::NOT_SUPPORTED);
}

/// An environment failure becomes the matching negative error code in r0.
#[test]
fn env_errors_become_codes() {
    #[derive(Debug)]
    struct Failing;
    impl Env for Failing {
        fn read(&mut self, _: u64, _: &mut [u8]) -> Result<usize, HelperError> {
            Err(HelperError::Io)
        }
        fn emit(&mut self, _: &[u8]) -> Result<(), HelperError> {
            Err(HelperError::NoSpace)
        }
        fn log(&mut self, _: &[u8]) {}
        fn input(&mut self, _: &mut [u8]) -> Result<usize, HelperError> {
            Err(HelperError::Invalid)
        }
    }
    let read = prog("mov64 r1, 0\nmov64 r2, r10\nsub64 r2, 8\nmov64 r3, 8\ncall 1\nexit");
    let emit = prog("mov64 r1, r10\nsub64 r1, 8\nmov64 r2, 8\ncall 2\nexit");
    let input = prog("mov64 r1, r10\nsub64 r1, 8\nmov64 r2, 8\ncall 5\nexit");
    for (p, code) in [
        (read, abi::err::IO),
        (emit, abi::err::NO_SPACE),
        (input, abi::err::INVALID),
    ] {
        let (r0, stats) = run_to_end(&p, &ctx(), &mut Failing, FUEL).expect("run");
        assert_eq!(r0 as i64, code);
        assert_eq!(stats.bytes_returned, 0);
        assert_eq!(stats.device_bytes_read, 0);
    }
}

/// Zero-length helper calls do nothing and return 0, whatever the pointer.
#[test]
fn zero_length_helpers() {
    for src in [
        "mov64 r2, 0\nmov64 r3, 0\ncall 1\nexit",
        "mov64 r1, 0\nmov64 r2, 0\ncall 2\nexit",
        "mov64 r1, 0\nmov64 r2, 0\ncall 5\nexit",
        "mov64 r1, 0\nmov64 r2, 0\ncall 4\nexit",
    ] {
        let mut env = TestEnv::default();
        assert_eq!(run_env(&prog(src), &mut env).map(|r| r.0), Ok(0), "{src}");
        assert_eq!(env.calls, 0);
    }
}

/// Fuel = 1 per instruction + HELPER_CALL_FUEL per helper + 1 per BYTES_PER_FUEL bytes moved
/// (rounded up); scratch reads move nothing.
#[test]
fn fuel_cost_model() {
    let src = "
        call 3
        mov64 r1, 0
        mov64 r2, r0
        mov64 r3, 200
        call 1
        call 3
        mov64 r1, r0
        mov64 r2, 100
        call 2
        exit";
    let mut env = TestEnv::with_file(vec![7; 1000]);
    let (r0, stats) = run_env(&prog(src), &mut env).expect("run");
    assert_eq!(r0, 100);
    assert_eq!(stats.instructions, 10);
    let read = HELPER_CALL_FUEL + 200u64.div_ceil(BYTES_PER_FUEL);
    let emit = HELPER_CALL_FUEL + 100u64.div_ceil(BYTES_PER_FUEL);
    let scratch = HELPER_CALL_FUEL;
    assert_eq!(stats.fuel_used, 10 + read + emit + 2 * scratch);
    assert_eq!(stats.device_bytes_read, 200);
    assert_eq!(stats.bytes_returned, 100);
}

/// A helper whose cost overruns the remaining budget ends the run with OutOfFuel and the
/// instructions executed.
#[test]
fn helper_cost_can_exhaust_fuel() {
    let p = prog("call 3\nmov64 r0, 0\nexit");
    let mut vm = Vm::new(64);
    let e = vm
        .run_to_end(&p, &ctx(), &mut TestEnv::default(), 5)
        .expect_err("out of fuel");
    assert_eq!(e, ExecError::OutOfFuel { instructions: 1 });
    assert_eq!(vm.stats().fuel_used, 1 + HELPER_CALL_FUEL);
}

/// Errors map to the wire fault kinds the completion carries.
#[test]
fn faults_map_to_wire() {
    use common::program::ExecFault;
    assert_eq!(
        ExecError::OutOfFuel { instructions: 3 }.fault(),
        Some(ExecFault::OutOfFuel)
    );
    assert_eq!(
        ExecError::CallDepthExceeded { pc: 4 }.fault(),
        Some(ExecFault::CallDepthExceeded { pc: 4 })
    );
    assert_eq!(ExecError::NotRunning.fault(), None);
    assert!(ExecError::OutOfFuel { instructions: 3 }
        .to_string()
        .contains("3 instructions"));
}
