//! `csd kernel run|link|asm|disasm`: running clang-built kernels on the device, linking them
//! into program images, and eBPF text.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, Context};
use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use std::sync::Arc;

use common::{
    abi,
    program::{ExecFault, ExecOutcome, ExecResult, Extent, ProgramOp},
    zns::ZoneState,
    LBA_BYTES,
};
use host_shell::{
    driver::Driver,
    lfs::Lfs,
    loader,
    offload::{Engine, Job, Kernel, Ranges, RunError},
    units::{parse_size, Nanos},
};

use super::{driver_error, output_writer, print_json, spinner, with_device, zone_start, During};

#[derive(Debug, Subcommand)]
pub enum KernelCommand {
    /// Load a kernel into the device and run it over a zone's data or an LBA range.
    Run(RunArgs),
    /// Link a kernel object (clang -target bpf) into a program image, as `run` would before
    /// loading it; for images embedded elsewhere (the board's on-target self-test).
    Link(LinkArgs),
    /// Assemble eBPF assembler text (rbpf's syntax) into a program image.
    Asm(AsmArgs),
    /// Disassemble a kernel object (.o), a program image or raw eBPF instructions.
    Disasm(DisasmArgs),
}

/// What the kernel is run for (`csd_ctx.op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OpArg {
    /// One whole-file job over the data.
    FileJob,
    /// One read-stream request over the data.
    ReadStream,
    /// One write-stream request: the kernel transforms the bytes of --input (`csd_input`).
    WriteStream,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("data").args(["zone", "lba", "file"])))]
pub struct RunArgs {
    /// The device image.
    image: PathBuf,
    /// The kernel: an eBPF object built with `clang -O2 -target bpf -c`, or a program image
    /// from `csd kernel asm`.
    kernel: PathBuf,
    /// Run over the written blocks of this zone (zslba to the write pointer; a full zone's
    /// whole capacity).
    #[arg(long)]
    zone: Option<u32>,
    /// Run over the bytes from this LBA (needs --len).
    #[arg(long, requires = "len")]
    lba: Option<u64>,
    /// Run over this file of the image's file system (made by `csd mkfs`; not mounted), e.g.
    /// /data/big.bin: a snapshot of its blocks, as a mount's offload would take.
    #[arg(long, value_name = "PATH")]
    file: Option<String>,
    /// Bytes from --lba, e.g. 64K: the kernel's file size.
    #[arg(long, value_name = "BYTES", value_parser = parse_size, requires = "lba")]
    len: Option<u64>,
    /// The kernel's first parameter (`ctx->param0`).
    #[arg(long, default_value_t = 0)]
    param0: u64,
    /// The kernel's second parameter (`ctx->param1`).
    #[arg(long, default_value_t = 0)]
    param1: u64,
    /// The run's fuel budget (instructions plus helper costs; 0: the device's default).
    #[arg(long, default_value_t = 0)]
    fuel: u64,
    /// What the kernel is run for.
    #[arg(long, value_enum, default_value_t = OpArg::FileJob)]
    op: OpArg,
    /// The incoming bytes of a write stream (`-`: stdin); the kernel reads them with
    /// csd_input. --zone or --lba are optional then.
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Most output bytes the kernel may emit.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "16M")]
    out_cap: u64,
    /// Write the kernel's output to this file (`-`: stdout) instead of printing it as hex.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Print JSON: ret, instructions, fuel_used, device_bytes_read, bytes_returned, the
    /// modeled device_ns, device_compute_ns and device_nand_ns, and output_hex unless --output
    /// is given; on a fault or out of fuel, also "error".
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct LinkArgs {
    /// The kernel object, built with `clang -O2 -target bpf -c`.
    input: PathBuf,
    /// The program image to write.
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
}

#[derive(Debug, Args)]
pub struct AsmArgs {
    /// eBPF assembler text, one instruction per line, e.g. `mov64 r0, 1` and `exit`.
    input: PathBuf,
    /// The output file.
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
    /// Write the raw 8-byte instructions instead of a program image (header, text, no rodata).
    #[arg(long)]
    raw: bool,
}

#[derive(Debug, Args)]
pub struct DisasmArgs {
    /// A kernel object (ELF, linked first as `csd kernel run` would), a program image (starts
    /// with "CSDP"), or raw little-endian eBPF instructions.
    input: PathBuf,
    /// Print a JSON list of {pc, text}, one per instruction (pc counts 8-byte slots: a 64-bit
    /// immediate load takes two).
    #[arg(long)]
    json: bool,
}

pub fn run(command: KernelCommand) -> anyhow::Result<()> {
    match command {
        KernelCommand::Run(args) => run_kernel(&args),
        KernelCommand::Link(args) => link(&args),
        KernelCommand::Asm(args) => asm(&args),
        KernelCommand::Disasm(args) => disasm(&args),
    }
}

/// How a run ended, and what it produced.
struct Run {
    result: ExecResult,
    output: Vec<u8>,
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into(),
    )
}

fn run_kernel(args: &RunArgs) -> anyhow::Result<()> {
    let kernel = Kernel::from_image(file_name(&args.kernel), program_image(&args.kernel)?);
    let input = match (args.op, &args.input) {
        (OpArg::WriteStream, Some(path)) => super::read_input(path)?,
        (OpArg::WriteStream, None) => {
            return Err(anyhow!(
                "--op write-stream needs --input FILE: the bytes being written"
            ))
        }
        (_, Some(_)) => return Err(anyhow!("--input is only for --op write-stream")),
        (_, None) => Vec::new(),
    };
    if args.op != OpArg::WriteStream
        && args.zone.is_none()
        && args.lba.is_none()
        && args.file.is_none()
    {
        return Err(anyhow!(
            "give the kernel its data: --zone ZONE, --lba LBA --len BYTES or --file PATH"
        ));
    }
    let out_cap = u32::try_from(args.out_cap)
        .map_err(|_| anyhow!("--out-cap {} is over 4 GiB", args.out_cap))?;
    // The run's length is the kernel's: a spinner, not a bar.
    if args.file.is_some() {
        super::open::use_file_system(format!("csd kernel run (pid {})", std::process::id()));
    }
    let bar = spinner(&format!("running {}", kernel.name()));
    let run = with_device(&args.image, |_, driver| {
        let engine = Engine::new(driver.clone());
        // A file's snapshot pins its blocks while the kernel runs; the file system is
        // unmounted (a checkpoint) afterwards.
        let (ranges, fs) = ranges(args, driver, &engine, out_cap)?;
        let len = if args.op == OpArg::WriteStream {
            input.len() as u64
        } else {
            ranges.file_size()
        };
        let job = Job {
            op: match args.op {
                OpArg::FileJob => ProgramOp::FileJob,
                OpArg::ReadStream => ProgramOp::ReadStream,
                OpArg::WriteStream => ProgramOp::WriteStream,
            },
            offset: 0,
            len,
            params: (args.param0, args.param1),
            fuel: args.fuel,
            input,
            max_output: out_cap,
        };
        let ran = (|| -> anyhow::Result<_> {
            let mut lease = engine.lease()?;
            // The output crosses the link only for a kernel that exited.
            let ran = engine.run(&mut lease, &kernel, &ranges, job, |result, _log| {
                Ok::<_, RunError>(matches!(result.outcome, ExecOutcome::Exited { .. }))
            });
            let released = engine.release(lease);
            let ran = ran.map_err(|e| run_error(e, &kernel))?;
            released.during("program deactivation")?;
            Ok(ran)
        })();
        // The snapshot and the file system are given back whatever the run did; the run's own
        // error comes first.
        let closed = match fs {
            Some(fs) => close_fs(ranges, fs),
            None => Ok(()),
        };
        let ran = ran?;
        closed?;
        Ok(Run {
            result: ran.result,
            output: ran.output,
        })
    })?;
    bar.finish_and_clear();
    report_run(args, &run)
}

/// Releases a file's snapshot and unmounts its file system (a checkpoint).
fn close_fs(ranges: Ranges, fs: Arc<Lfs>) -> anyhow::Result<()> {
    ranges
        .release()
        .context("could not release the file's snapshot")?;
    let fs = Arc::try_unwrap(fs)
        .map_err(|_| anyhow!("the file system is still in use after the run"))?;
    fs.unmount().context("could not unmount the file system")
}

/// What the kernel runs over (`--file`, `--zone`, `--lba`; nothing for a write stream without
/// them), and the file system a file's snapshot was taken in.
fn ranges(
    args: &RunArgs,
    driver: &Driver,
    engine: &Engine,
    out_cap: u32,
) -> anyhow::Result<(Ranges, Option<Arc<Lfs>>)> {
    if let Some(path) = args.file.as_deref() {
        let fs = Arc::new(Lfs::mount(driver).with_context(|| {
            format!(
                "could not mount the file system on {}",
                args.image.display()
            )
        })?);
        let attr = super::fs::lookup_path(&fs, path)?;
        let ranges = engine
            .snapshot(&fs, attr.ino, out_cap)
            .with_context(|| format!("{path}: could not snapshot it"))?;
        return Ok((ranges, Some(fs)));
    }
    let (extents, file_size) = match (args.zone, args.lba, args.len) {
        (Some(zone), _, _) => {
            let zslba = zone_start(driver, zone)?;
            let (_, zones) = driver
                .report(zslba, common::zns::ReportFilter::All, 1)
                .during("zone report")?;
            let z = zones
                .first()
                .ok_or_else(|| anyhow!("the device reported no zone {zone}"))?;
            let end = if z.state == ZoneState::Full {
                z.zslba + z.zcap
            } else {
                z.wp
            };
            let blocks = end - z.zslba;
            let extents = if blocks == 0 {
                Vec::new()
            } else {
                vec![Extent {
                    start_lba: zslba,
                    lba_count: u32::try_from(blocks)
                        .map_err(|_| anyhow!("zone {zone} is too large for one extent"))?,
                }]
            };
            (extents, blocks * u64::from(LBA_BYTES))
        }
        (None, Some(lba), Some(len)) => {
            if len == 0 {
                return Err(anyhow!(
                    "--len 0 gives the kernel no data: give a positive length"
                ));
            }
            let blocks = u32::try_from(len.div_ceil(u64::from(LBA_BYTES)))
                .map_err(|_| anyhow!("--len {len} is too large for one extent"))?;
            (
                vec![Extent {
                    start_lba: lba,
                    lba_count: blocks,
                }],
                len,
            )
        }
        _ => (Vec::new(), 0),
    };
    Ok((Ranges::raw(extents, file_size, out_cap), None))
}

/// One sentence for a run that failed: the device refused the kernel (naming why) or one of
/// the run's commands.
fn run_error(e: RunError, kernel: &Kernel) -> anyhow::Error {
    match e {
        RunError::Rejected { reason, .. } => {
            anyhow!("the device refused {}: {reason}", kernel.name())
        }
        RunError::Device { step, source } => driver_error(&step.to_string(), source),
        RunError::Snapshot(e) => anyhow!("the file's snapshot: {e}"),
    }
}

/// The program image of `path`: a kernel object linked by the loader, or an image as is.
fn program_image(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("could not read {}", path.display()))?;
    if bytes.starts_with(&abi::image::MAGIC) {
        return Ok(bytes);
    }
    Ok(loader::link(&bytes)
        .with_context(|| format!("could not link {}", path.display()))?
        .to_bytes())
}

/// One sentence for a kernel that did not exit.
fn fault_sentence(fault: ExecFault, stats: &common::program::RunStats) -> String {
    match fault {
        ExecFault::OutOfFuel => format!(
            "kernel ran out of fuel after {} instructions ({} fuel used); give it more with --fuel",
            stats.instructions, stats.fuel_used
        ),
        ExecFault::MemoryFault {
            pc,
            addr,
            len,
            write,
        } => format!(
            "kernel faulted: memory fault at pc {pc} ({len} bytes at {addr:#x}, {})",
            if write { "write" } else { "read" }
        ),
        ExecFault::HelperFault {
            pc,
            helper,
            addr,
            len,
        } => format!(
            "kernel faulted: helper {helper} was given {len} bytes at {addr:#x}, outside the kernel's memory, at pc {pc}"
        ),
        ExecFault::CallDepthExceeded { pc } => format!(
            "kernel faulted: calls nested deeper than {} frames at pc {pc}",
            abi::MAX_CALL_DEPTH
        ),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `csd kernel run --json`.
#[derive(Debug, serde::Serialize)]
struct RunJson {
    /// `r0` at exit; null when the kernel did not exit.
    ret: Option<u64>,
    instructions: u64,
    fuel_used: u64,
    device_bytes_read: u64,
    bytes_returned: u64,
    /// Modeled device time of the run and its parts (0 with timing off).
    device_ns: u64,
    device_compute_ns: u64,
    device_nand_ns: u64,
    /// What ran the kernel: `jit` or `interp`.
    executor: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_hex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn report_run(args: &RunArgs, run: &Run) -> anyhow::Result<()> {
    let stats = run.result.stats;
    let (ret, error) = match run.result.outcome {
        ExecOutcome::Exited { r0 } => (Some(r0), None),
        ExecOutcome::Faulted(fault) => (None, Some(fault_sentence(fault, &stats))),
    };
    if error.is_none() {
        if let Some(path) = &args.output {
            let mut out = output_writer(Some(path))?;
            out.write_all(&run.output)
                .and_then(|()| out.flush())
                .with_context(|| format!("could not write {}", path.display()))?;
        }
    }
    let to_stdout = args.output.as_deref().is_some_and(super::is_stdio);
    if args.json && !to_stdout {
        print_json(&RunJson {
            ret,
            instructions: stats.instructions,
            fuel_used: stats.fuel_used,
            device_bytes_read: stats.device_bytes_read,
            bytes_returned: stats.bytes_returned,
            device_ns: stats.device_ns,
            device_compute_ns: stats.device_compute_ns,
            device_nand_ns: stats.device_nand_ns,
            executor: if stats.jit { "jit" } else { "interp" },
            output_hex: args.output.is_none().then(|| hex(&run.output)),
            error: error.clone(),
        })?;
    } else if !to_stdout {
        if let Some(ret) = ret {
            println!("ret                {ret} ({})", ret as i64);
        }
        println!("instructions       {}", stats.instructions);
        println!("fuel used          {}", stats.fuel_used);
        println!("device bytes read  {}", stats.device_bytes_read);
        println!("bytes returned     {}", stats.bytes_returned);
        println!(
            "executor           {}",
            if stats.jit { "jit" } else { "interp" }
        );
        if stats.device_ns > 0 {
            println!(
                "device time        {} modeled ({} compute, {} NAND reads)",
                Nanos(stats.device_ns),
                Nanos(stats.device_compute_ns),
                Nanos(stats.device_nand_ns)
            );
        }
        if args.output.is_none() && error.is_none() {
            println!("output             {}", hex(&run.output));
        }
    }
    match error {
        Some(error) => Err(anyhow!(error)),
        None => Ok(()),
    }
}

fn link(args: &LinkArgs) -> anyhow::Result<()> {
    let bytes = std::fs::read(&args.input)
        .with_context(|| format!("could not read {}", args.input.display()))?;
    if !bytes.starts_with(b"\x7fELF") {
        return Err(anyhow!(
            "{} is not a kernel object (ELF): build it with `clang -O2 -target bpf -c`",
            args.input.display()
        ));
    }
    let image = loader::link(&bytes)
        .with_context(|| format!("could not link {}", args.input.display()))?
        .to_bytes();
    std::fs::write(&args.output, image)
        .with_context(|| format!("could not write {}", args.output.display()))
}

fn asm(args: &AsmArgs) -> anyhow::Result<()> {
    let source = std::fs::read_to_string(&args.input)
        .with_context(|| format!("could not read {}", args.input.display()))?;
    let text = rbpf::assembler::assemble(&source)
        .map_err(|e| anyhow!("{} does not assemble: {e}", args.input.display()))?;
    let bytes = if args.raw {
        text
    } else {
        firmware::ebpf::encode_image(&text, &[])
    };
    std::fs::write(&args.output, bytes)
        .with_context(|| format!("could not write {}", args.output.display()))
}

/// The instructions of a kernel object, a program image or a raw instruction file.
fn instructions(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("could not read {}", path.display()))?;
    if bytes.starts_with(b"\x7fELF") {
        let image =
            loader::link(&bytes).with_context(|| format!("could not link {}", path.display()))?;
        return Ok(image.text);
    }
    if bytes.starts_with(&abi::image::MAGIC) {
        let (text, _) = firmware::ebpf::split_image(&bytes)
            .map_err(|e| anyhow!("{} is not a usable program image: {e}", path.display()))?;
        return Ok(text.to_vec());
    }
    if bytes.is_empty() || !bytes.len().is_multiple_of(8) {
        return Err(anyhow!(
            "{} is not a kernel object, a program image or whole 8-byte eBPF instructions",
            path.display()
        ));
    }
    Ok(bytes)
}

/// One instruction of `csd kernel disasm --json`.
#[derive(Debug, serde::Serialize)]
struct InsnJson {
    pc: usize,
    text: String,
}

fn disasm(args: &DisasmArgs) -> anyhow::Result<()> {
    let text = instructions(&args.input)?;
    let mut listing = Vec::new();
    let mut pc = 0usize;
    for insn in rbpf::disassembler::to_insn_vec(&text) {
        // A 64-bit immediate load takes two instruction slots.
        let slots = if insn.opc == 0x18 { 2 } else { 1 };
        listing.push(InsnJson {
            pc,
            text: insn.desc,
        });
        pc += slots;
    }
    if args.json {
        return print_json(&listing);
    }
    let mut out = std::io::stdout().lock();
    for insn in &listing {
        writeln!(out, "{:>5}: {}", insn.pc, insn.text)?;
    }
    Ok(())
}
