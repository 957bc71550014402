//! `executor`: this executor against rbpf's interpreter (the goal: at least 2x), rbpf's JIT and
//! native Rust, on the C kernels over the same data.
//!
//! Each kernel is the clang-built object from `target/kernels/`, linked by the host loader; our
//! executor and rbpf run the same linked instructions over the same bytes, and their outputs
//! must match before any time counts. Instructions per second use the instruction count our
//! metered run reports (the same program on the same input takes the same path on both).

mod rbpf_shim;

use std::{path::Path, time::Instant};

use anyhow::{bail, ensure, Context as _, Result};
use common::abi;
use firmware::ebpf::{Context, Env, HelperError, Program, Step, Vm};
use serde::Serialize;
use testkit::rng::Rng;

use crate::report::Spread;

/// One kernel's figures.
#[derive(Debug, Serialize)]
pub struct KernelFigures {
    pub kernel: &'static str,
    pub data_bytes: u64,
    pub instructions: u64,
    /// Seconds per run, this executor.
    pub csd: Spread,
    pub rbpf_interp: Spread,
    /// `None` when rbpf's JIT cannot run the kernel (say, bpf-to-bpf calls).
    pub rbpf_jit: Option<Spread>,
    pub native: Spread,
    /// Instructions per second (medians).
    pub csd_insns_per_s: f64,
    pub rbpf_interp_insns_per_s: f64,
    /// rbpf interpreter time / this executor's time (medians).
    pub speedup_vs_rbpf_interp: f64,
    pub speedup_vs_rbpf_jit: Option<f64>,
    /// Native time / this executor's time (below 1: how far from native).
    pub ratio_vs_native: f64,
    /// The run's counters (instruction classes, helper calls), for the device-time model.
    #[serde(skip)]
    pub run: common::program::RunStats,
    /// The JIT on the same kernel and data.
    #[serde(skip)]
    pub jit: JitFigures,
}

/// The JIT against the interpreter and native Rust, one kernel (`executor.jit.<kernel>`).
#[derive(Clone, Debug, Serialize)]
pub struct JitFigures {
    /// Seconds per run.
    pub seconds: Spread,
    /// Milliseconds compiling the kernel took.
    pub compile_ms: f64,
    pub insns_per_s: f64,
    /// Interpreter time / JIT time (medians).
    pub speedup_vs_interp: f64,
    /// Native Rust time / JIT time (below 1: how far from native).
    pub ratio_vs_native: f64,
}

struct Kernel {
    name: &'static str,
    param0: u64,
    param1: u64,
    native: fn(&[u8], u64, u64) -> Vec<u8>,
}

const KERNELS: [Kernel; 3] = [
    Kernel {
        name: "entropy",
        param0: 0,
        param1: 0,
        native: |data, _, _| {
            tests::reference::histogram_bytes(&tests::reference::entropy_histogram(data))
        },
    },
    Kernel {
        name: "filter_u32",
        param0: 0x8000_0000,
        param1: 0,
        native: |data, threshold, _| {
            tests::reference::filter_u32_count(data, threshold)
                .to_le_bytes()
                .to_vec()
        },
    },
    Kernel {
        name: "pattern",
        param0: u64::from_le_bytes(*b"zone\0\0\0\0"),
        param1: 4,
        native: |data, pattern, len| {
            tests::reference::pattern_count(data, pattern, len)
                .unwrap_or(0)
                .to_le_bytes()
                .to_vec()
        },
    },
];

/// The file a kernel sees, for our executor.
struct FileEnv<'a> {
    file: &'a [u8],
    out: Vec<u8>,
}

impl Env for FileEnv<'_> {
    fn read(&mut self, file_off: u64, dst: &mut [u8]) -> Result<usize, HelperError> {
        let start = (file_off as usize).min(self.file.len());
        let n = dst.len().min(self.file.len() - start);
        dst[..n].copy_from_slice(&self.file[start..start + n]);
        Ok(n)
    }

    fn emit(&mut self, src: &[u8]) -> Result<(), HelperError> {
        self.out.extend_from_slice(src);
        Ok(())
    }

    fn log(&mut self, _msg: &[u8]) {}

    fn input(&mut self, _dst: &mut [u8]) -> Result<usize, HelperError> {
        Err(HelperError::NotSupported)
    }
}

fn context(len: u64, param0: u64, param1: u64) -> Context {
    Context {
        op: abi::op::FILE_JOB,
        file_size: len,
        offset: 0,
        len,
        param0,
        param1,
        out_cap: 1 << 20,
    }
}

/// Sample data: text-like words from a fixed-seed generator.
pub fn sample_data(len: usize) -> Vec<u8> {
    const WORDS: [&[u8]; 8] = [
        b"zone ",
        b"append ",
        b"kernel ",
        b"flash ",
        b"\x00\x00\x80\xff",
        b"page ",
        b"data ",
        b"near\n",
    ];
    let mut out = Vec::with_capacity(len + 8);
    let mut rng = Rng::new(0);
    while out.len() < len {
        out.extend_from_slice(WORDS[rng.below(8) as usize]);
    }
    out.truncate(len);
    out
}

fn time<T>(reps: usize, mut f: impl FnMut() -> Result<T>) -> Result<(Spread, T)> {
    let mut times = Vec::with_capacity(reps);
    let mut last = None;
    for _ in 0..reps {
        let started = Instant::now();
        last = Some(f()?);
        times.push(started.elapsed().as_secs_f64());
    }
    let last = last.context("at least one repetition")?;
    Ok((Spread::of(&times), last))
}

/// Measures every kernel over `data_bytes` bytes, `reps` times each.
pub fn run(root: &Path, data_bytes: usize, reps: usize) -> Result<Vec<KernelFigures>> {
    let data = sample_data(data_bytes);
    let scratch_len = abi::DEFAULT_SCRATCH_BYTES;
    let mut figures = Vec::new();
    for kernel in &KERNELS {
        let object = root
            .join("target/kernels")
            .join(format!("{}.o", kernel.name));
        ensure!(
            object.is_file(),
            "{} is missing: run `cargo xtask kernels`",
            object.display()
        );
        let image = host_shell::loader::load_object(&object)?;
        let program = Program::load(&image.to_bytes())?;
        let ctx = context(data.len() as u64, kernel.param0, kernel.param1);

        let mut vm = Vm::new(scratch_len);
        let (csd, (r0, stats, out)) = time(reps, || {
            let mut env = FileEnv {
                file: &data,
                out: Vec::new(),
            };
            let (r0, stats) = vm.run_to_end(&program, &ctx, &mut env, u64::MAX)?;
            Ok((r0, stats, env.out))
        })?;
        let expected = (kernel.native)(&data, kernel.param0, kernel.param1);
        if out != expected {
            bail!(
                "{}: this executor's output differs from the native computation",
                kernel.name
            );
        }

        let jit = jit::Jit::new()?;
        let compile_started = Instant::now();
        let compiled = jit.compile(&program)?;
        let compile_ms = compile_started.elapsed().as_secs_f64() * 1e3;
        let (jit_time, (jit_r0, jit_stats, jit_out)) = time(reps, || {
            let mut env = FileEnv {
                file: &data,
                out: Vec::new(),
            };
            vm.start(&program, &ctx, u64::MAX);
            match vm.resume_native(&program, &compiled, &mut env, u64::MAX)? {
                Step::Exited { r0 } => Ok((r0, vm.stats(), env.out)),
                Step::Yielded => bail!("a run with all the fuel in one slice yielded"),
            }
        })?;
        ensure!(
            (jit_r0, &jit_stats, &jit_out) == (r0, &stats, &out),
            "{}: the JIT disagrees with the interpreter (result, counters or output)",
            kernel.name
        );

        let ctx_bytes = ctx.encode(scratch_len);
        let mode = rbpf_shim::Mode::Interpreter;
        let (rbpf_interp, (rbpf_r0, rbpf_out)) = time(reps, || {
            rbpf_shim::run(&image.text, &data, &ctx_bytes, scratch_len as usize, mode)
        })?;
        if (rbpf_r0, &rbpf_out) != (r0, &out) {
            bail!(
                "{}: rbpf's interpreter disagrees with this executor",
                kernel.name
            );
        }
        let rbpf_jit = time(reps, || {
            rbpf_shim::run(
                &image.text,
                &data,
                &ctx_bytes,
                scratch_len as usize,
                rbpf_shim::Mode::Jit,
            )
        })
        .ok()
        .filter(|(_, (jr0, jout))| (*jr0, jout) == (r0, &out))
        .map(|(spread, _)| spread);

        let (native, _) = time(reps, || {
            Ok((kernel.native)(
                std::hint::black_box(&data),
                kernel.param0,
                kernel.param1,
            ))
        })?;

        let insns = stats.instructions as f64;
        eprintln!(
            "csd-bench: {}: interpreter {:.0} M insn/s, JIT {:.0} M insn/s ({:.1}x; {:.3}x native; compiled in {compile_ms:.2} ms)",
            kernel.name,
            insns / csd.median / 1e6,
            insns / jit_time.median / 1e6,
            csd.median / jit_time.median,
            native.median / jit_time.median,
        );
        figures.push(KernelFigures {
            kernel: kernel.name,
            data_bytes: data.len() as u64,
            instructions: stats.instructions,
            csd_insns_per_s: insns / csd.median,
            rbpf_interp_insns_per_s: insns / rbpf_interp.median,
            speedup_vs_rbpf_interp: rbpf_interp.median / csd.median,
            speedup_vs_rbpf_jit: rbpf_jit.map(|jit| jit.median / csd.median),
            ratio_vs_native: native.median / csd.median,
            run: stats,
            jit: JitFigures {
                compile_ms,
                insns_per_s: insns / jit_time.median,
                speedup_vs_interp: csd.median / jit_time.median,
                ratio_vs_native: native.median / jit_time.median,
                seconds: jit_time,
            },
            csd,
            rbpf_interp,
            rbpf_jit,
            native,
        });
    }
    Ok(figures)
}
