//! Both executors on one program: the interpreter and the JIT must agree on everything a run
//! shows (each slice's outcome, the result or the fault, every counter, the memory the run
//! leaves, and what its helpers did to the environment).

use std::fmt::Debug;

use firmware::ebpf::{Context, Env, ExecError, Native, Program, RunStats, Step, Vm};

/// Slice sizes every comparison runs at, besides the whole budget in one slice: small and odd,
/// so slices end inside blocks, at block starts and right after helper calls.
pub const SLICES: [u64; 3] = [1, 7, 61];

/// What one executor's run showed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome<E> {
    /// Slices that ended with [`Step::Yielded`].
    pub yields: u64,
    /// How the last slice ended.
    pub end: Result<Step, ExecError>,
    pub stats: RunStats,
    pub scratch: Vec<u8>,
    pub stack: Vec<u8>,
    pub env: E,
}

/// Runs `program` to its end in slices of `slice` fuel, on the interpreter or on `native`.
pub fn run<E: Env>(
    native: Option<&dyn Native>,
    program: &Program,
    ctx: &Context,
    mut env: E,
    fuel: u64,
    slice: u64,
    scratch_bytes: u32,
) -> Outcome<E> {
    let mut vm = Vm::new(scratch_bytes);
    vm.start(program, ctx, fuel);
    let mut yields = 0;
    let end = loop {
        let step = match native {
            Some(native) => vm.resume_native(program, native, &mut env, slice),
            None => vm.resume(program, &mut env, slice),
        };
        match step {
            Ok(Step::Yielded) => yields += 1,
            end => break end,
        }
    };
    Outcome {
        yields,
        end,
        stats: vm.stats(),
        scratch: vm.scratch().to_vec(),
        stack: vm.stack().to_vec(),
        env,
    }
}

/// Runs `program` on the interpreter and on the JIT, in one slice and in each of [`SLICES`],
/// each run with an environment of its own from `env`; panics where they differ. Returns the
/// interpreter's one-slice outcome.
pub fn agree<E: Env + Clone + PartialEq + Debug>(
    program: &Program,
    ctx: &Context,
    env: &E,
    fuel: u64,
    scratch_bytes: u32,
) -> Outcome<E> {
    agree_in(program, ctx, env, fuel, scratch_bytes, &SLICES)
}

/// [`agree`] with the small slices `slices` (the fuzz target keeps to fewer, for speed).
pub fn agree_in<E: Env + Clone + PartialEq + Debug>(
    program: &Program,
    ctx: &Context,
    env: &E,
    fuel: u64,
    scratch_bytes: u32,
    slices: &[u64],
) -> Outcome<E> {
    let jit = jit::Jit::new().unwrap_or_else(|e| panic!("no JIT on this host: {e}"));
    let compiled = jit
        .compile(program)
        .unwrap_or_else(|e| panic!("the JIT refused a verified program: {e}"));
    let whole = run(None, program, ctx, env.clone(), fuel, fuel, scratch_bytes);
    for &slice in std::iter::once(&fuel).chain(slices) {
        let interp = if slice == fuel {
            whole.clone()
        } else {
            run(None, program, ctx, env.clone(), fuel, slice, scratch_bytes)
        };
        let native = run(
            Some(&compiled),
            program,
            ctx,
            env.clone(),
            fuel,
            slice,
            scratch_bytes,
        );
        if native != interp {
            panic!(
                "the JIT and the interpreter differ in slices of {slice} fuel:\n{}",
                differences(&interp, &native)
            );
        }
    }
    whole
}

/// The fields in which two outcomes differ, memory as its first differing byte.
fn differences<E: PartialEq + Debug>(interp: &Outcome<E>, native: &Outcome<E>) -> String {
    let mut out = String::new();
    let mut field = |name: &str, a: String, b: String| {
        if a != b {
            out.push_str(&format!("  {name}: interpreter {a}, JIT {b}\n"));
        }
    };
    field(
        "yields",
        interp.yields.to_string(),
        native.yields.to_string(),
    );
    field(
        "end",
        format!("{:?}", interp.end),
        format!("{:?}", native.end),
    );
    field(
        "stats",
        format!("{:?}", interp.stats),
        format!("{:?}", native.stats),
    );
    for (name, a, b) in [
        ("scratch", &interp.scratch, &native.scratch),
        ("stack", &interp.stack, &native.stack),
    ] {
        if let Some(at) = (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i)) {
            field(
                name,
                format!("byte {at} = {:?}", a.get(at)),
                format!("{:?}", b.get(at)),
            );
        }
    }
    field(
        "env",
        format!("{:?}", interp.env),
        format!("{:?}", native.env),
    );
    out
}
