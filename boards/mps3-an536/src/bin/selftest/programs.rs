//! The eBPF executor through the controller: clang-built kernels, linked into program images by
//! the host loader before the board build (`cargo xtask board build` runs `csd kernel link`),
//! loaded, activated and run over a zone; and hostile kernels that the executor must stop.
//!
//! The interpreter's speed goes to standard error as a `perf:` line: it is a timing, so it
//! never enters the golden output.

use alloc::vec;
use alloc::vec::Vec;

use common::command::{Command, CommandResult, Completion};
use common::program::{
    ActivateProgram, ExecFault, ExecOutcome, ExecResult, ExecuteProgram, Extent, LoadProgram,
    MemoryRangeSet, ProgramOp, ProgramSlot, RangeSetId, ReadOutput,
};
use common::Status;
use semihosting::experimental::time::Instant;
use semihosting::{eprintln, println};

use crate::device::Host;
use crate::{pattern, Checks, LBA};

/// A kernel linked into a program image before the build.
macro_rules! kernel_image {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/target/kernels/",
            $name,
            ".img"
        ))
    };
}

const PASSTHROUGH: &[u8] = kernel_image!("passthrough");
const ENTROPY: &[u8] = kernel_image!("entropy");
const INFINITE_LOOP: &[u8] = kernel_image!("hostile_infinite_loop");
const WILD_LOAD: &[u8] = kernel_image!("hostile_wild_load");

/// The zone the kernels run over.
const DATA_ZONE: u32 = 6;
/// The range set of every run.
const RANGES: RangeSetId = RangeSetId(0);

/// Runs the program part.
pub fn run(host: &mut Host, checks: &mut Checks) {
    println!("-- executor: clang-built kernels");
    let zone_cap = host.ctrl.zones().layout().zone_cap as usize;
    let mdts = host.ctrl.zones().identify().mdts_lbas as usize;
    let data = pattern(12, zone_cap * LBA);
    let zslba = host.zslba(DATA_ZONE);
    println!(
        "fill zone {DATA_ZONE}, {zone_cap} LBAs: {}",
        host.write(zslba, &data, mdts)
    );
    let extent = Extent {
        start_lba: zslba,
        lba_count: zone_cap as u32,
    };
    let file_size = data.len() as u64;
    let ranges = set_ranges(host, extent, file_size, data.len() as u32);
    println!("memory range set over zone {DATA_ZONE}: {ranges}");

    // passthrough: the output is the file.
    install(host, 0, "passthrough", PASSTHROUGH);
    let (done, result) = execute(host, exec(0, file_size, 0, 0));
    print_run("passthrough", &done, &result);
    let output = read_output(host, data.len());
    let same = output == data;
    println!(
        "  output: {} bytes, {}",
        output.len(),
        if same { "equal to the zone" } else { "differs" }
    );
    checks.check(same, "passthrough returns the zone's data");

    // entropy: a byte histogram, timed for the interpreter's speed.
    install(host, 1, "entropy", ENTROPY);
    let started = Instant::now();
    let (done, result) = execute(host, exec(1, file_size, 0, 0));
    let took = started.elapsed();
    print_run("entropy", &done, &result);
    let mut want = [0u64; 256];
    for &b in &data {
        want[usize::from(b)] += 1;
    }
    let got: Vec<u64> = read_output(host, 2048)
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();
    let same = got[..] == want[..];
    println!(
        "  histogram: {}",
        if same {
            "equal to the board's own count"
        } else {
            "differs"
        }
    );
    checks.check(same, "entropy's histogram is right");
    perf("entropy", &result, took);

    // Hostile kernels: stopped by fuel, faulted by the memory checks; the device goes on.
    install(host, 2, "hostile_infinite_loop", INFINITE_LOOP);
    let (done, result) = execute(host, exec(2, file_size, 100_000, 0));
    print_run("hostile_infinite_loop, fuel 100000", &done, &result);
    checks.check(
        matches!(result.outcome, ExecOutcome::Faulted(ExecFault::OutOfFuel)),
        "an endless kernel runs out of fuel",
    );
    install(host, 3, "hostile_wild_load", WILD_LOAD);
    for addr in [0u64, 0x1234_5678] {
        let (done, result) = execute(host, exec(3, file_size, 0, addr));
        print_run("hostile_wild_load", &done, &result);
        checks.check(
            matches!(
                result.outcome,
                ExecOutcome::Faulted(ExecFault::MemoryFault { addr: a, .. }) if a == addr
            ),
            "a wild load faults at its address",
        );
    }
    let (done, result) = execute(host, exec(0, file_size, 0, 0));
    print_run("passthrough again", &done, &result);
    checks.check(
        done.status == Status::Success,
        "the device runs kernels after hostile ones",
    );
}

/// Loads `image` into `slot` in 4 KiB chunks and activates it.
fn install(host: &mut Host, slot: u8, name: &str, image: &[u8]) {
    let mut status = Status::Success;
    for (i, chunk) in image.chunks(4096).enumerate() {
        let load = LoadProgram {
            slot: ProgramSlot(slot),
            offset: (i * 4096) as u32,
            total_len: image.len() as u32,
            chunk_len: chunk.len() as u32,
        };
        status = host
            .submit(Command::LoadProgram(load), &mut chunk.to_vec())
            .status;
        if status != Status::Success {
            break;
        }
    }
    let activate = ActivateProgram {
        slot: ProgramSlot(slot),
        activate: true,
    };
    let activated = host
        .submit(Command::ActivateProgram(activate), &mut [])
        .status;
    println!("load {name} into slot {slot}: {status}; activate: {activated}");
}

fn set_ranges(host: &mut Host, extent: Extent, file_size: u64, out_cap: u32) -> Status {
    let set = MemoryRangeSet {
        id: RANGES,
        extent_count: 1,
        file_size,
        out_cap,
    };
    host.submit(Command::MemoryRangeSet(set), &mut extent.to_le_bytes())
        .status
}

fn exec(slot: u8, len: u64, fuel: u64, param0: u64) -> ExecuteProgram {
    ExecuteProgram {
        slot: ProgramSlot(slot),
        range_set: RANGES,
        op: ProgramOp::FileJob,
        offset: 0,
        len,
        param0,
        param1: 0,
        fuel,
    }
}

/// Runs Execute Program to its completion (in slices, through `poll`).
fn execute(host: &mut Host, exec: ExecuteProgram) -> (Completion, ExecResult) {
    let done = host.submit(Command::ExecuteProgram(exec), &mut []);
    let result = match done.result {
        CommandResult::Exec(result) => result,
        _ => ExecResult {
            outcome: ExecOutcome::Exited { r0: u64::MAX },
            stats: Default::default(),
        },
    };
    (done, result)
}

fn read_output(host: &mut Host, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let read = ReadOutput {
        range_set: RANGES,
        offset: 0,
        len: len as u32,
    };
    let done = host.submit(Command::ReadOutput(read), &mut buf);
    let n = match done.result {
        CommandResult::Transferred(n) => n as usize,
        _ => 0,
    };
    buf.truncate(n);
    buf
}

/// One line per run: status and outcome. Instruction counts depend on clang's code generation,
/// so they stay out of the golden text; bytes read and returned do not.
fn print_run(name: &str, done: &Completion, result: &ExecResult) {
    let stats = result.stats;
    match result.outcome {
        ExecOutcome::Exited { r0 } => println!(
            "run {name}: {}, exited with {r0}, read {} bytes, returned {} bytes",
            done.status, stats.device_bytes_read, stats.bytes_returned
        ),
        ExecOutcome::Faulted(ExecFault::OutOfFuel) => println!(
            "run {name}: {}, out of fuel, fuel used {}",
            done.status, stats.fuel_used
        ),
        ExecOutcome::Faulted(ExecFault::MemoryFault {
            addr, len, write, ..
        }) => println!(
            "run {name}: {}, memory fault: {} of {len} bytes at {addr:#x}",
            done.status,
            if write { "write" } else { "read" }
        ),
        ExecOutcome::Faulted(fault) => println!("run {name}: {}, {fault:?}", done.status),
    }
}

/// The interpreter's speed on this (emulated) core, to standard error.
fn perf(name: &str, result: &ExecResult, took: core::time::Duration) {
    let insns = result.stats.instructions;
    let ms = took.as_millis() as u64;
    let per_s = if ms == 0 { 0 } else { insns * 1000 / ms };
    eprintln!(
        "perf: {name}: {insns} eBPF instructions in {ms} ms (semihosting clock, 10 ms steps): \
         {per_s} instructions/s"
    );
}
