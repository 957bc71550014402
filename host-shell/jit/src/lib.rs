//! Native code for csd's eBPF kernels on the in-process device.
//!
//! [`Jit`] is a firmware [`Executor`]: it compiles each verified program once with Cranelift
//! (keyed by its image, so loading the same kernel again reuses the code) and runs it through
//! [`Vm::resume_native`], which passes a run between native code and the interpreter at block
//! boundaries. Results, faults, fuel and every counter are the interpreter's, instruction for
//! instruction; only the time they take differs. [`HostExecutor`] is what a device is built
//! with: the JIT, or the interpreter, as the user chose.
//!
//! All `unsafe` is in the `native` module (executable memory, the call into it, the helper
//! trampoline); the translation (`codegen`), the block analysis (`blocks`) and the bounds of
//! one-block loops (`loops`) are safe code.

mod blocks;
mod codegen;
mod live;
mod loops;
mod native;

use std::{fmt, str::FromStr, time::Instant};

use cranelift_codegen::{
    ir::{types, AbiParam, Function, UserFuncName},
    isa::OwnedTargetIsa,
    settings::{self, Configurable},
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, Linkage, Module};
use firmware::ebpf::{
    Env, ExecError, Executor, Insn, Native, NativeExit, NativeRun, Program, Step, Vm,
};

use blocks::Blocks;
use native::Code;

/// Why a program could not be compiled (the device then runs it on the interpreter).
#[derive(Debug, thiserror::Error)]
pub enum JitError {
    #[error("this host has no native code generator: {0}")]
    UnsupportedHost(String),
    #[error("compiling the kernel failed: {0}")]
    Compile(String),
}

/// One program's native code and its block structure.
#[derive(Debug)]
pub struct Compiled {
    blocks: Blocks,
    code: Code,
    /// Wall time the compilation took.
    compile_ns: u64,
}

impl Compiled {
    /// Nanoseconds the compilation took.
    pub fn compile_ns(&self) -> u64 {
        self.compile_ns
    }
}

impl Native for Compiled {
    fn block_at(&self, pc: usize) -> (bool, u64) {
        self.blocks.at(pc)
    }

    fn run(&self, run: NativeRun<'_>, env: &mut dyn Env, budget: i64) -> NativeExit {
        self.code.run(run, env, budget)
    }
}

/// Compiled programs a [`Jit`] keeps: the most recently used first.
const CACHED: usize = 16;

struct Cached {
    fingerprint: u64,
    insns: Vec<Insn>,
    compiled: Compiled,
}

/// The JIT: a code generator for this host and the programs it compiled.
pub struct Jit {
    isa: OwnedTargetIsa,
    cache: Vec<Cached>,
    /// Programs that failed to compile (run on the interpreter), with why.
    failed: Vec<(u64, String)>,
}

impl fmt::Debug for Jit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jit")
            .field("isa", &self.isa.triple().to_string())
            .field("cached", &self.cache.len())
            .field("failed", &self.failed)
            .finish()
    }
}

/// With `CSD_JIT_DUMP=PATH`, writes the machine code just compiled in `ctx` to
/// `PATH.<name>` (for `objdump -D -b binary -m i386:x86-64`).
fn dump(ctx: &cranelift_codegen::Context, name: &str) {
    let (Some(path), Some(code)) = (std::env::var_os("CSD_JIT_DUMP"), ctx.compiled_code()) else {
        return;
    };
    let mut path = std::path::PathBuf::from(path);
    path.set_extension(name);
    let _ = std::fs::write(path, code.code_buffer());
}

impl Jit {
    /// A JIT for this host, if Cranelift generates code for it (x86-64, aarch64, ...).
    pub fn new() -> Result<Jit, JitError> {
        let mut flags = settings::builder();
        let set = |flags: &mut settings::Builder, name: &str, value: &str| {
            flags
                .set(name, value)
                .map_err(|e| JitError::UnsupportedHost(format!("setting {name}: {e}")))
        };
        set(&mut flags, "opt_level", "speed")?;
        set(&mut flags, "use_colocated_libcalls", "false")?;
        set(&mut flags, "is_pic", "false")?;
        set(
            &mut flags,
            "enable_verifier",
            if cfg!(debug_assertions) {
                "true"
            } else {
                "false"
            },
        )?;
        let isa = cranelift_native::builder()
            .map_err(|e| JitError::UnsupportedHost(e.to_string()))?
            .finish(settings::Flags::new(flags))
            .map_err(|e| JitError::UnsupportedHost(e.to_string()))?;
        Ok(Jit {
            isa,
            cache: Vec::new(),
            failed: Vec::new(),
        })
    }

    /// Compiles `program` (a verified program) to native code.
    pub fn compile(&self, program: &Program) -> Result<Compiled, JitError> {
        let started = Instant::now();
        let insns = program.insns();
        let blocks = Blocks::of(insns);
        let mut module = JITModule::new(JITBuilder::with_isa(
            self.isa.clone(),
            default_libcall_names(),
        ));
        let mut sig = module.make_signature();
        sig.params.push(AbiParam::new(types::I64));
        sig.returns.push(AbiParam::new(types::I32));
        let func = module
            .declare_function("kernel", Linkage::Local, &sig)
            .map_err(|e| JitError::Compile(e.to_string()))?;
        // Each one-block loop the JIT can run unchecked is a function of its own:
        // `(state, count) -> (left, ended)`.
        let loops = codegen::loops_of(insns, &blocks);
        let mut loop_sig = module.make_signature();
        loop_sig.params = vec![AbiParam::new(types::I64); 2];
        loop_sig.returns = vec![AbiParam::new(types::I64); 2];
        let mut loop_ids = Vec::with_capacity(loops.len());
        for l in &loops {
            let id = module
                .declare_function(&format!("loop{}", l.start), Linkage::Local, &loop_sig)
                .map_err(|e| JitError::Compile(e.to_string()))?;
            loop_ids.push(id);
        }
        let mut ctx = module.make_context();
        ctx.func = Function::with_name_signature(UserFuncName::user(0, func.as_u32()), sig);
        let loop_fns = loops
            .iter()
            .zip(&loop_ids)
            .map(|(l, &id)| (l, module.declare_func_in_func(id, &mut ctx.func)))
            .collect();
        let mut fctx = FunctionBuilderContext::new();
        codegen::translate(
            FunctionBuilder::new(&mut ctx.func, &mut fctx),
            insns,
            &blocks,
            loop_fns,
            &*self.isa,
        );
        module
            .define_function(func, &mut ctx)
            .map_err(|e| JitError::Compile(format!("{e:?}")))?;
        dump(&ctx, &insns.len().to_string());
        for (l, &id) in loops.iter().zip(&loop_ids) {
            module.clear_context(&mut ctx);
            ctx.func =
                Function::with_name_signature(UserFuncName::user(0, id.as_u32()), loop_sig.clone());
            codegen::translate_loop(
                FunctionBuilder::new(&mut ctx.func, &mut fctx),
                insns,
                &blocks,
                l,
                &*self.isa,
            );
            module
                .define_function(id, &mut ctx)
                .map_err(|e| JitError::Compile(format!("{e:?}")))?;
            dump(&ctx, &format!("{}.loop{}", insns.len(), l.start));
        }
        module
            .finalize_definitions()
            .map_err(|e| JitError::Compile(e.to_string()))?;
        Ok(Compiled {
            blocks,
            code: Code::new(module, func),
            compile_ns: started.elapsed().as_nanos() as u64,
        })
    }

    /// The compiled code of `program`, compiling it on first use; `None` if it failed to
    /// compile (see [`Jit::failures`]).
    pub fn code_for(&mut self, program: &Program) -> Option<&Compiled> {
        let fingerprint = program.fingerprint();
        if let Some(at) = self
            .cache
            .iter()
            .position(|c| c.fingerprint == fingerprint && c.insns == program.insns())
        {
            let hit = self.cache.remove(at);
            self.cache.insert(0, hit);
        } else {
            if self.failed.iter().any(|(f, _)| *f == fingerprint) {
                return None;
            }
            match self.compile(program) {
                Ok(compiled) => {
                    self.cache.truncate(CACHED - 1);
                    self.cache.insert(
                        0,
                        Cached {
                            fingerprint,
                            insns: program.insns().to_vec(),
                            compiled,
                        },
                    );
                }
                Err(e) => {
                    self.failed.push((fingerprint, e.to_string()));
                    return None;
                }
            }
        }
        self.cache.first().map(|c| &c.compiled)
    }

    /// Programs that failed to compile and ran on the interpreter instead, with why.
    pub fn failures(&self) -> &[(u64, String)] {
        &self.failed
    }
}

impl Executor for Jit {
    fn prepare(&mut self, program: &Program) {
        let _ = self.code_for(program);
    }

    fn resume<E: Env>(
        &mut self,
        vm: &mut Vm,
        program: &Program,
        env: &mut E,
        slice: u64,
    ) -> Result<Step, ExecError> {
        match self.code_for(program) {
            Some(code) => vm.resume_native(program, code, env, slice),
            None => vm.resume(program, env, slice),
        }
    }
}

/// Which executor runs kernels (`--executor jit|interp`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ExecutorKind {
    /// Native code (Cranelift).
    Jit,
    /// The metered interpreter, as on the board.
    Interp,
}

impl ExecutorKind {
    /// The JIT where this host has a code generator, the interpreter elsewhere.
    pub fn for_host() -> ExecutorKind {
        static KIND: std::sync::OnceLock<ExecutorKind> = std::sync::OnceLock::new();
        *KIND.get_or_init(|| match Jit::new() {
            Ok(_) => ExecutorKind::Jit,
            Err(_) => ExecutorKind::Interp,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            ExecutorKind::Jit => "jit",
            ExecutorKind::Interp => "interp",
        }
    }
}

impl fmt::Display for ExecutorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ExecutorKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "jit" => Ok(ExecutorKind::Jit),
            "interp" => Ok(ExecutorKind::Interp),
            other => Err(format!(
                "unknown executor {other:?}: expected \"jit\" or \"interp\""
            )),
        }
    }
}

/// The executor a device runs kernels on.
#[derive(Debug)]
pub enum HostExecutor {
    Jit(Box<Jit>),
    Interp(firmware::ebpf::Interpreter),
}

impl HostExecutor {
    /// The executor of `kind`: for [`ExecutorKind::Jit`] on a host without a code generator,
    /// the error says why.
    pub fn new(kind: ExecutorKind) -> Result<HostExecutor, JitError> {
        Ok(match kind {
            ExecutorKind::Jit => HostExecutor::Jit(Box::new(Jit::new()?)),
            ExecutorKind::Interp => HostExecutor::Interp(firmware::ebpf::Interpreter),
        })
    }

    /// What it is.
    pub fn kind(&self) -> ExecutorKind {
        match self {
            HostExecutor::Jit(_) => ExecutorKind::Jit,
            HostExecutor::Interp(_) => ExecutorKind::Interp,
        }
    }
}

impl Executor for HostExecutor {
    fn prepare(&mut self, program: &Program) {
        match self {
            HostExecutor::Jit(jit) => jit.prepare(program),
            HostExecutor::Interp(i) => i.prepare(program),
        }
    }

    fn resume<E: Env>(
        &mut self,
        vm: &mut Vm,
        program: &Program,
        env: &mut E,
        slice: u64,
    ) -> Result<Step, ExecError> {
        match self {
            HostExecutor::Jit(jit) => jit.resume(vm, program, env, slice),
            HostExecutor::Interp(i) => i.resume(vm, program, env, slice),
        }
    }
}
