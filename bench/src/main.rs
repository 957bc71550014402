//! `csd-bench`: csd measured side by side with its peers, in one run on one machine.
//!
//! Writes `report.json` and `report.md` into `--out` (default `target/bench`). Every figure
//! records its sizes and repetitions (min/median/max) and is a ratio against a peer measured in
//! the same run. Figures that need parts not built yet are listed as not measured, never
//! estimated. Run it through `cargo xtask bench [--quick]`, which builds the kernels first.

mod concurrent;
mod crossover;
mod device;
mod executor;
mod fs;
mod gc;
mod mount;
mod offload;
mod plot;
mod report;

use std::{fmt::Write as _, path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use clap::Parser;
use serde::Serialize;

/// csd's benchmark harness.
#[derive(Debug, Parser)]
#[command(name = "csd-bench")]
struct Cli {
    /// A small version that runs in seconds (the harness's own check in `cargo xtask test`).
    #[arg(long)]
    quick: bool,
    /// Where to write the report.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// The workspace root (kernels are read from its target/kernels).
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// Code bytes (text + rodata) of the Cortex-R52 image, as `cargo xtask board size` reads them.
    #[arg(long, requires = "firmware_ram")]
    firmware_text: Option<u64>,
    /// Static RAM bytes (data + bss) of the Cortex-R52 image.
    #[arg(long, requires = "firmware_text")]
    firmware_ram: Option<u64>,
    /// Internal: run entropy file jobs on FILE until killed (a `concurrent` worker).
    #[arg(long, hide = true, value_name = "FILE")]
    offload_worker: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Executor {
    /// The smallest speedup over rbpf's interpreter across the kernels (the goal: at least 2).
    speedup_vs_rbpf_interp: f64,
    kernels: Vec<executor::KernelFigures>,
    /// The JIT per kernel (the in-process device's default executor).
    jit: std::collections::BTreeMap<&'static str, executor::JitFigures>,
}

#[derive(Debug, Serialize)]
struct Offload {
    entropy: offload::Entropy,
    crossover: crossover::Crossover,
}

#[derive(Debug, Serialize)]
struct Firmware {
    text_bytes: u64,
    static_ram_bytes: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: report::Machine,
    quick: bool,
    executor: Executor,
    offload: Offload,
    fs: fs::Fs,
    concurrent: concurrent::Concurrent,
    device: device::Device,
    gc: gc::Gc,
    firmware: Option<Firmware>,
}

/// Sizes and repetitions of one run.
struct Plan {
    executor_bytes: usize,
    offload_bytes: usize,
    fs_bytes: u64,
    concurrent_window: Duration,
    device_mib: u64,
    gc_device_bytes: u64,
    gc_overwrite_factor: u64,
    reps: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                executor_bytes: 4 << 20,
                offload_bytes: 16 << 20,
                fs_bytes: 16 << 20,
                concurrent_window: Duration::from_millis(500),
                device_mib: 32,
                gc_device_bytes: 16 << 20,
                gc_overwrite_factor: 1,
                reps: 1,
            }
        } else {
            Plan {
                executor_bytes: 64 << 20,
                offload_bytes: 256 << 20,
                fs_bytes: 256 << 20,
                concurrent_window: Duration::from_secs(8),
                device_mib: 256,
                gc_device_bytes: 64 << 20,
                gc_overwrite_factor: 3,
                reps: 3,
            }
        }
    }
}

/// The sections of a run, for the progress bar.
const SECTIONS: u64 = 6;

/// The run's progress on stderr, when it is a terminal: sections done, the one running and
/// the time so far (each section also logs a line as it starts and ends).
fn progress() -> &'static indicatif::ProgressBar {
    static BAR: std::sync::OnceLock<indicatif::ProgressBar> = std::sync::OnceLock::new();
    BAR.get_or_init(|| {
        let bar = indicatif::ProgressBar::new(SECTIONS);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} [{bar:20}] {pos}/{len} sections, now {msg} ({elapsed})",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        bar
    })
}

/// Runs one section, saying so first (a full run takes minutes).
fn section<T>(name: &str, run: impl FnOnce() -> Result<T>) -> Result<T> {
    let bar = progress();
    bar.set_message(name.to_string());
    // Printed above the bar (or alone, when stderr is not a terminal).
    bar.suspend(|| eprintln!("csd-bench: {name}"));
    let started = std::time::Instant::now();
    let out = run().with_context(|| format!("the {name} figures"));
    bar.inc(1);
    if bar.position() >= SECTIONS || out.is_err() {
        bar.finish_and_clear();
    }
    let out = out?;
    bar.suspend(|| {
        eprintln!(
            "csd-bench: {name} done in {:.1} s",
            started.elapsed().as_secs_f64()
        )
    });
    Ok(out)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(file) = &cli.offload_worker {
        return concurrent::worker(file);
    }
    let plan = Plan::new(cli.quick);
    let root = &cli.root;
    let kernels = section("executor", || {
        executor::run(root, plan.executor_bytes, plan.reps)
    })?;
    let speedup = kernels
        .iter()
        .map(|k| k.speedup_vs_rbpf_interp)
        .fold(f64::INFINITY, f64::min);
    let entropy = section("offload.entropy", || {
        offload::run(root, plan.offload_bytes, plan.reps)
    })?;
    let fs = section("fs", || fs::run(plan.fs_bytes, plan.reps))?;
    let concurrent = section("concurrent", || {
        concurrent::run(root, plan.offload_bytes, plan.concurrent_window)
    })?;
    let device = section("device.append", || device::run(plan.device_mib, plan.reps))?;
    let gc = section("gc", || {
        gc::run(plan.gc_device_bytes, plan.gc_overwrite_factor)
    })?;
    let entropy_run = kernels
        .iter()
        .find(|k| k.kernel == "entropy")
        .context("the executor figures have no entropy kernel")?;
    let crossover = crossover::model(
        "entropy",
        &entropy_run.run,
        entropy_run.data_bytes,
        entropy_run.native.median,
        device.append.memcpy_out.median,
        plan.offload_bytes as u64,
    );
    let firmware = cli
        .firmware_text
        .zip(cli.firmware_ram)
        .map(|(text_bytes, static_ram_bytes)| Firmware {
            text_bytes,
            static_ram_bytes,
        });
    let report = Report {
        machine: report::Machine::this(),
        quick: cli.quick,
        executor: Executor {
            speedup_vs_rbpf_interp: speedup,
            jit: kernels.iter().map(|k| (k.kernel, k.jit.clone())).collect(),
            kernels,
        },
        offload: Offload { entropy, crossover },
        fs,
        concurrent,
        device,
        gc,
        firmware,
    };
    std::fs::create_dir_all(&cli.out)
        .with_context(|| format!("could not create {}", cli.out.display()))?;
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(cli.out.join("report.json"), json)?;
    plots(&report, &cli.out)?;
    let md = markdown(&report);
    std::fs::write(cli.out.join("report.md"), &md)?;
    print!("{md}");
    Ok(())
}

fn plots(report: &Report, out: &std::path::Path) -> Result<()> {
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let k = &report.executor.kernels;
    plot::draw(
        &plot::Bars {
            title: "Executor: million eBPF instructions per second",
            y_label: "M insn/s",
            categories: k.iter().map(|k| k.kernel.to_string()).collect(),
            series: vec![
                plot::Series {
                    name: "csd",
                    values: k.iter().map(|k| k.csd_insns_per_s / 1e6).collect(),
                },
                plot::Series {
                    name: "rbpf interpreter",
                    values: k.iter().map(|k| k.rbpf_interp_insns_per_s / 1e6).collect(),
                },
            ],
            reference: None,
        },
        &out.join("executor.svg"),
    )?;
    let fs = &report.fs;
    let (jobs1, jobs4) = (fs.jobs1.named(), fs.jobs4.named());
    plot::draw(
        &plot::Bars {
            title: "File system (fio): csd throughput / peer throughput",
            y_label: "ratio (1 = equal)",
            categories: names(&[
                "seq write 1M",
                "seq read 1M",
                "seq read 1M, cached",
                "rand read 4K",
                "rand write 4K",
            ]),
            series: vec![
                plot::Series {
                    name: "vs bindfs over tmpfs, 1 job",
                    values: jobs1.iter().map(|(_, j)| j.ratio_vs_bindfs).collect(),
                },
                plot::Series {
                    name: "vs bindfs over tmpfs, 4 jobs",
                    values: jobs4.iter().map(|(_, j)| j.ratio_vs_bindfs).collect(),
                },
                plot::Series {
                    name: "vs tmpfs, 1 job",
                    values: jobs1.iter().map(|(_, j)| j.ratio_vs_tmpfs).collect(),
                },
            ],
            reference: Some(1.0),
        },
        &out.join("fs.svg"),
    )?;
    let c = &report.concurrent.throughput;
    plot::draw(
        &plot::Bars {
            title: "Regular reads while processes offload on the same file",
            y_label: "MiB/s",
            categories: c
                .iter()
                .map(|t| format!("{} offloading", t.offloaders))
                .collect(),
            series: vec![plot::Series {
                name: "sequential read",
                values: c.iter().map(|t| t.read_bytes_per_s / MIB).collect(),
            }],
            reference: None,
        },
        &out.join("concurrent.svg"),
    )?;
    let x = &report.offload.crossover;
    let devices: Vec<u64> = (0..=12).map(|i| 1u64 << i).collect();
    let mut lines = vec![plot::Line {
        name: "regular: read over the shared link, compute on the host".into(),
        points: devices
            .iter()
            .map(|&n| (n as f64, x.regular_at(n)))
            .collect(),
    }];
    for l in &x.lines {
        lines.push(plot::Line {
            name: format!(
                "offload: {} x {} at {} MHz, {}",
                l.cores,
                l.core,
                l.clock_hz / 1_000_000,
                l.execution
            ),
            points: devices
                .iter()
                .map(|&n| (n as f64, x.offload_at(l, n)))
                .collect(),
        });
    }
    plot::draw_lines(
        &plot::Lines {
            title: &format!(
                "{}: seconds to process {} MiB on each of N devices",
                x.kernel,
                x.data_bytes_per_device >> 20
            ),
            x_label: "N devices on one host",
            y_label: "modeled seconds",
            lines,
        },
        &out.join("crossover.svg"),
    )?;
    let g = &report.gc.write_amplification;
    plot::draw(
        &plot::Bars {
            title: "Write amplification of random 4 KiB overwrites",
            y_label: "NAND bytes / user bytes",
            categories: g
                .iter()
                .map(|p| format!("{:.0}% full", p.utilization * 100.0))
                .collect(),
            series: vec![plot::Series {
                name: "csd",
                values: g.iter().map(|p| p.write_amplification).collect(),
            }],
            reference: Some(1.0),
        },
        &out.join("gc.svg"),
    )?;
    let title = format!(
        "Zones after random 4 KiB overwrites at {:.0}% full: state, write pointer, live data, erase counts",
        g.last().map_or(0.0, |p| p.utilization * 100.0)
    );
    let path = out.join(ZONE_MAP_SVG);
    std::fs::write(&path, report.gc.zone_map.to_svg(&title))
        .with_context(|| format!("could not write {}", path.display()))?;
    Ok(())
}

/// The picture of the cleaner's device after its fullest run (`csd zone map --svg` of it).
const ZONE_MAP_SVG: &str = "zone-map.svg";

const MIB: f64 = (1u64 << 20) as f64;

fn markdown(report: &Report) -> String {
    let mut md = String::new();
    let m = &report.machine;
    let _ = writeln!(
        md,
        "# csd benchmark report{}\n",
        if report.quick { " (quick)" } else { "" }
    );
    let _ = writeln!(
        md,
        "Machine: {}, {} cores, {} GiB, {}.\n",
        m.cpu,
        m.cores,
        m.memory_bytes >> 30,
        m.os
    );
    let _ = writeln!(
        md,
        "## Executor (this executor vs rbpf 0.4, same linked C kernels, same data)\n"
    );
    let _ = writeln!(md, "| kernel | data | instructions | csd M insn/s | rbpf interp M insn/s | vs rbpf interp | vs rbpf JIT | vs native |");
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for k in &report.executor.kernels {
        let jit = k
            .speedup_vs_rbpf_jit
            .map_or("n/a".to_string(), |s| format!("{s:.2}x"));
        let _ = writeln!(
            md,
            "| {} | {} MiB | {} | {:.0} | {:.0} | {:.2}x | {} | {:.3}x |",
            k.kernel,
            k.data_bytes >> 20,
            k.instructions,
            k.csd_insns_per_s / 1e6,
            k.rbpf_interp_insns_per_s / 1e6,
            k.speedup_vs_rbpf_interp,
            jit,
            k.ratio_vs_native
        );
    }
    let reps = report.executor.kernels.first().map_or(0, |k| k.csd.reps);
    let _ = writeln!(md, "\nMedians of {reps} runs; min and max are in report.json. \"vs\" columns: peer time / csd time.\n");
    let _ = writeln!(
        md,
        "### JIT (the in-process device's default executor; same kernels, same data)\n"
    );
    let _ = writeln!(
        md,
        "| kernel | compile ms | M insn/s | vs interpreter | vs native Rust |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|");
    for (kernel, j) in &report.executor.jit {
        let _ = writeln!(
            md,
            "| {kernel} | {:.2} | {:.0} | {:.1}x | {:.3}x |",
            j.compile_ms,
            j.insns_per_s / 1e6,
            j.speedup_vs_interp,
            j.ratio_vs_native
        );
    }
    let _ = writeln!(md);
    let e = &report.offload.entropy;
    let _ = writeln!(
        md,
        "## Offload: entropy of a {} MiB file through the mount (ZN540 preset)\n",
        e.data_bytes >> 20
    );
    let _ = writeln!(md, "| way | wall s | client CPU s | link bytes | modeled device s | modeled end to end s | throughput vs regular | client CPU reduction | link bytes reduction |");
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let way = |md: &mut String, name: &str, w: &offload::Way, v: Option<&offload::Versus>| {
        let (a, b, c) = v.map_or(("1".into(), "1".into(), "1".into()), |v| {
            (
                format!("{:.3}x", v.wall_ratio),
                format!("{:.0}x", v.client_cpu_reduction),
                format!("{:.0}x", v.link_bytes_reduction),
            )
        });
        let _ = writeln!(
            md,
            "| {name} | {:.3} | {:.5} | {} ({} to device) | {:.3} | {:.3} | {a} | {b} | {c} |",
            w.wall.median,
            w.client_cpu.median,
            w.link_bytes,
            w.link_to_device_bytes,
            w.modeled_device_s,
            w.modeled_end_to_end_s
        );
    };
    way(&mut md, "regular read + native histogram", &e.regular, None);
    way(
        &mut md,
        "`user.csd.file_job`",
        &e.file_job.way,
        Some(&e.file_job),
    );
    way(
        &mut md,
        "`user.csd.read_stream`",
        &e.read_stream.way,
        Some(&e.read_stream),
    );
    let _ = writeln!(md, "\nMedians of {} runs. Client CPU: the job's thread (user + system); the mount's threads are not the client.\n", e.regular.wall.reps);
    let _ = writeln!(
        md,
        "Modeled end to end: the device's modeled time plus the host's own work (regular: the histogram natively, {:.3} s; offloads: the client CPU). The last file job on the device: {:.3} s, of it {:.3} s compute on one {} core and {:.3} s of NAND reads overlapping it.\n",
        e.native_histogram_s.median,
        e.file_job_device_s,
        e.file_job_device_compute_s,
        host_shell::nand::preset::Preset::Zn540.cpu().core,
        e.file_job_device_nand_s
    );
    let x = &report.offload.crossover;
    let _ = writeln!(
        md,
        "## When the offload pays off: {} over {} MiB on each of N devices sharing one host ([crossover.svg](crossover.svg))\n",
        x.kernel,
        x.data_bytes_per_device >> 20
    );
    let _ = writeln!(
        md,
        "Host side: link {:.0} MB/s, memcpy {:.0} MB/s, native {} on {} cores {:.0} MB/s; device NAND {:.0} MB/s. Regular way at N = 1: {:.3} s. Formula in docs/TIMING.md.\n",
        x.link_bytes_per_s / 1e6,
        x.host_memcpy_bytes_per_s / 1e6,
        x.kernel,
        x.host_cores,
        x.host_compute_bytes_per_s / 1e6,
        x.nand_bytes_per_s / 1e6,
        x.regular_s
    );
    let _ = writeln!(md, "| device CPU (preset) | execution | cycles per byte | device MB/s | offload s at N = 1 | offload first from N |");
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|");
    for l in &x.lines {
        let _ = writeln!(
            md,
            "| {} x {} at {} MHz ({}) | {} | {:.1} | {:.1} | {:.2} | {} |",
            l.cores,
            l.core,
            l.clock_hz / 1_000_000,
            l.preset,
            l.execution,
            l.cycles_per_byte,
            l.device_bytes_per_s / 1e6,
            l.offload_s,
            l.crossover_devices
                .map_or(format!("over {}", crossover::MAX_DEVICES), |n| n
                    .to_string())
        );
    }
    let _ = writeln!(md);

    let f = &report.fs;
    let _ = writeln!(
        md,
        "## File system: fio ({}), {} MiB file per job, psync, 1 and 4 jobs\n",
        f.fio_version,
        f.file_bytes >> 20
    );
    let _ = writeln!(
        md,
        "| jobs | pattern | csd MiB/s | bindfs over tmpfs MiB/s | tmpfs MiB/s | vs bindfs | vs tmpfs |"
    );
    let _ = writeln!(md, "|---:|---|---:|---:|---:|---:|---:|");
    for (jobs, patterns) in [(1, &f.jobs1), (4, &f.jobs4)] {
        for (name, j) in patterns.named() {
            let _ = writeln!(
                md,
                "| {jobs} | {name} | {:.0} | {:.0} | {:.0} | {:.2}x | {:.3}x |",
                j.csd.median / MIB,
                j.bindfs.median / MIB,
                j.tmpfs.median / MIB,
                j.ratio_vs_bindfs,
                j.ratio_vs_tmpfs
            );
        }
    }
    let _ = writeln!(
        md,
        "\nMedians of {} runs; \"vs\": csd throughput / peer throughput (all jobs together).\n",
        f.jobs1.seq_read.csd.reps
    );

    let c = &report.concurrent;
    let _ = writeln!(
        md,
        "## Concurrent: regular reads of a {} MiB file while processes offload on it ({:.1} s windows)\n",
        c.file_bytes >> 20,
        c.window_s
    );
    let _ = writeln!(
        md,
        "| offloading processes | read MiB/s | vs none | kernel runs finished |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|");
    for t in &c.throughput {
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.2}x | {} |",
            t.offloaders,
            t.read_bytes_per_s / MIB,
            t.ratio_vs_idle,
            t.offloads_finished
        );
    }
    let _ = writeln!(
        md,
        "\n4 KiB random reads: p50 {:.0} us, p99 {:.0} us idle ({} reads); p50 {:.0} us, p99 {:.0} us while two kernels run ({} reads): p99 {:.2}x.\n",
        c.read_4k_idle.p50_us,
        c.read_4k_idle.p99_us,
        c.read_4k_idle.reads,
        c.read_4k_during_kernel.p50_us,
        c.read_4k_during_kernel.p99_us,
        c.read_4k_during_kernel.reads,
        c.p99_ratio
    );
    let _ = writeln!(
        md,
        "Modeled on the device (zn540: {} cores): the longest any regular command waited for the firmware's core was {:.0} us, for the slice in progress there; the longest slice that core ran took {:.0} us (a slice's compute is at most {:.0} us; its NAND reads take longer when their dies are busy).\n",
        host_shell::nand::preset::Preset::Zn540.cpu().cores,
        c.modeled_wait_max_us,
        c.modeled_slice_max_us,
        c.modeled_slice_compute_max_us
    );

    let d = &report.device.append;
    let _ = writeln!(
        md,
        "## Device: {} MiB through {} queues (RAM NAND, timing off)\n",
        d.data_bytes >> 20,
        d.queues
    );
    let _ = writeln!(
        md,
        "| operation | csd MB/s | memcpy MB/s (same pieces) | vs memcpy |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|");
    let _ = writeln!(
        md,
        "| Zone Append {} KiB | {:.0} | {:.0} | {:.3}x |",
        d.append_bytes >> 10,
        d.append.median / 1e6,
        d.memcpy_in.median / 1e6,
        d.ratio_vs_memcpy
    );
    let _ = writeln!(
        md,
        "| Read {} KiB | {:.0} | {:.0} | {:.3}x |\n",
        d.read_bytes >> 10,
        d.read.median / 1e6,
        d.memcpy_out.median / 1e6,
        d.read_ratio_vs_memcpy
    );
    let q = &report.device.queue_latency;
    let _ = writeln!(
        md,
        "A 4 KiB read, one at a time ({} reads): {:.0} ns through the driver and its queue pair, {:.0} ns submitted to the controller directly: the queues add {:.0} ns.\n",
        q.reads, q.queued_ns.median, q.direct_ns.median, q.overhead_ns
    );

    let g = &report.gc;
    let _ = writeln!(
        md,
        "## Cleaner: random 4 KiB overwrites of {}x the capacity of a {} MiB device\n",
        g.overwrite_factor,
        g.device_bytes >> 20
    );
    let _ = writeln!(
        md,
        "| utilization | user MiB | NAND programmed MiB | write amplification | zones cleaned |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|");
    for p in &g.write_amplification {
        let _ = writeln!(
            md,
            "| {:.0}% | {:.0} | {:.0} | {:.2} | {} |",
            p.utilization * 100.0,
            p.user_bytes as f64 / MIB,
            p.nand_program_bytes as f64 / MIB,
            p.write_amplification,
            p.zones_cleaned
        );
    }
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "Write amplification: [gc.svg](gc.svg). The device's zones after the fullest run, as `csd zone map --svg` draws them (state, write pointer, live data, erase counts): [{ZONE_MAP_SVG}]({ZONE_MAP_SVG}).\n"
    );
    match &report.firmware {
        Some(fw) => {
            let _ = writeln!(
                md,
                "## Firmware: Cortex-R52 link image, {} bytes of code (text + rodata), {} bytes of static RAM (data + bss)\n",
                fw.text_bytes, fw.static_ram_bytes
            );
        }
        None => {
            let _ = writeln!(md, "## Firmware: not measured (run through `cargo xtask bench`, which builds the board image)\n");
        }
    }
    let _ = writeln!(
        md,
        "Plots: executor.svg, fs.svg, concurrent.svg, gc.svg, {ZONE_MAP_SVG}, crossover.svg."
    );
    md
}
