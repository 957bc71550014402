//! Shared helpers for the eBPF executor tests: assembling, image building, a test `Env`.

use firmware::ebpf::{self, Context, Env, ExecError, HelperError, Program, RunStats, Step};
use testkit::executors;

/// Default fuel for tests that expect to finish.
pub const FUEL: u64 = 1_000_000;

/// Assembles rbpf assembler text into instruction bytes.
pub fn asm(src: &str) -> Vec<u8> {
    rbpf::assembler::assemble(src).unwrap_or_else(|e| panic!("assemble {src:?}: {e}"))
}

/// One raw instruction slot (for v4 opcodes rbpf's assembler cannot express).
pub fn raw(opcode: u8, dst: u8, src: u8, off: i16, imm: i32) -> Vec<u8> {
    let mut b = vec![opcode, (src << 4) | (dst & 0x0f)];
    b.extend_from_slice(&off.to_le_bytes());
    b.extend_from_slice(&imm.to_le_bytes());
    b
}

/// Concatenates instruction byte pieces.
pub fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// Loads instruction bytes (no read-only data) as a program.
pub fn load(text: &[u8]) -> Result<Program, ebpf::LoadError> {
    Program::load(&ebpf::encode_image(text, &[]))
}

/// Loads assembler text, panicking if the verifier refuses it.
pub fn prog(src: &str) -> Program {
    load(&asm(src)).unwrap_or_else(|e| panic!("load: {e}"))
}

/// A test environment: a file snapshot, collected output and logs, optional write input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TestEnv {
    pub file: Vec<u8>,
    pub out: Vec<u8>,
    pub logs: Vec<Vec<u8>>,
    pub input: Option<Vec<u8>>,
    pub input_pos: usize,
    pub calls: u32,
}

impl TestEnv {
    pub fn with_file(file: Vec<u8>) -> Self {
        TestEnv {
            file,
            ..Default::default()
        }
    }
}

impl Env for TestEnv {
    fn read(&mut self, file_off: u64, dst: &mut [u8]) -> Result<usize, HelperError> {
        self.calls += 1;
        let Ok(off) = usize::try_from(file_off) else {
            return Ok(0);
        };
        let Some(rest) = self.file.get(off..) else {
            return Ok(0);
        };
        let n = rest.len().min(dst.len());
        dst[..n].copy_from_slice(&rest[..n]);
        Ok(n)
    }
    fn emit(&mut self, src: &[u8]) -> Result<(), HelperError> {
        self.calls += 1;
        self.out.extend_from_slice(src);
        Ok(())
    }
    fn log(&mut self, msg: &[u8]) {
        self.calls += 1;
        self.logs.push(msg.to_vec());
    }
    fn input(&mut self, dst: &mut [u8]) -> Result<usize, HelperError> {
        self.calls += 1;
        let input = self.input.as_ref().ok_or(HelperError::NotSupported)?;
        let rest = &input[self.input_pos..];
        let n = rest.len().min(dst.len());
        dst[..n].copy_from_slice(&rest[..n]);
        self.input_pos += n;
        Ok(n)
    }
}

/// A context with a generous output capacity.
pub fn ctx() -> Context {
    Context {
        op: common::abi::op::FILE_JOB,
        out_cap: 4096,
        ..Default::default()
    }
}

/// Runs a program to its end with a default context and an empty file, on the interpreter
/// and on the JIT (which must agree on everything, in whole and in small slices).
pub fn run(p: &Program) -> Result<(u64, RunStats), ExecError> {
    run_env(p, &mut TestEnv::default())
}

/// Runs assembler text and returns r0, panicking on any error.
pub fn r0(src: &str) -> u64 {
    r0_bytes(&asm(src))
}

/// Runs instruction bytes and returns r0, panicking on any error.
pub fn r0_bytes(text: &[u8]) -> u64 {
    let p = load(text).unwrap_or_else(|e| panic!("load: {e}"));
    run(&p).unwrap_or_else(|e| panic!("run: {e}")).0
}

/// Runs a program to its end with a default context and the given environment, on the
/// interpreter and on the JIT (which must agree); `env` ends as the run left it.
pub fn run_env(p: &Program, env: &mut TestEnv) -> Result<(u64, RunStats), ExecError> {
    let outcome = executors::agree(p, &ctx(), env, FUEL, common::abi::DEFAULT_SCRATCH_BYTES);
    *env = outcome.env;
    match outcome.end {
        Ok(Step::Exited { r0 }) => Ok((r0, outcome.stats)),
        Ok(Step::Yielded) => unreachable!("a run to its end does not yield"),
        Err(e) => Err(e),
    }
}
