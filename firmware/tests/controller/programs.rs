//! The controller's computational-program commands through `Controller::submit`: chunked
//! Load Program, activation, Memory Range Set validation, Execute Program completing through
//! `poll`, Read Output, typed faults, and regular I/O served between a kernel's slices.

use crate::support::{
    exec, exec_result, image, spin_result, Dev, ECHO_INPUT, LBA, READ_EMIT, SPIN,
};
use common::abi;
use common::command::{Command, CommandResult, Submission};
use common::load_error::{LoadError, VerifyError};
use common::program::{
    ExecFault, ExecOutcome, Extent, LoadProgram, ProgramOp, ProgramSlot, RangeSetId, ReadOutput,
};
use common::Status;
use firmware::controller::{ProgramConfig, SliceDma};
use testkit::rng::pattern;

/// A predicate on the fault a kernel must end with.
type FaultCheck = fn(ExecFault) -> bool;

fn dev() -> Dev {
    Dev::new(ProgramConfig::default())
}

/// A device whose kernels yield every `slice_fuel` units of fuel.
fn sliced(slice_fuel: u64) -> Dev {
    Dev::new(ProgramConfig {
        slice_fuel,
        ..ProgramConfig::default()
    })
}

/// Writes `blocks` blocks of data at `slba` and returns them.
fn fill(dev: &mut Dev, seed: u64, slba: u64, blocks: usize) -> Vec<u8> {
    let data = pattern(seed, blocks * LBA);
    assert_eq!(dev.write(slba, &data), Status::Success);
    data
}

fn extent(start_lba: u64, lba_count: u32) -> Extent {
    Extent {
        start_lba,
        lba_count,
    }
}

/// An image arrives in 4 KiB-or-smaller chunks in order, is verified when complete, and runs;
/// an out-of-order chunk is refused, and a chunk at offset 0 starts the download over.
#[test]
fn load_program_in_chunks() {
    let mut dev = dev();
    // Pad the program with dead instructions so it takes several chunks.
    let mut src = String::from(READ_EMIT);
    src.push_str(&"\n    mov64 r0, 0".repeat(2000));
    src.push_str("\n    exit");
    let img = image(&src);
    assert!(img.len() > 3 * 4096);

    assert_eq!(dev.load_chunk(0, &img, 0, 4096), Status::Success);
    assert_eq!(
        dev.load_chunk(0, &img, 8192, 4096),
        Status::InvalidField,
        "a chunk past the bytes received"
    );
    assert_eq!(
        dev.activate(0, true),
        Status::ProgramNotActive,
        "incomplete image"
    );
    // Starting over at offset 0 discards the partial image; then in order to the end.
    assert_eq!(dev.load(0, &img, 4096), Status::Success);
    assert_eq!(dev.activate(0, true), Status::Success);

    let data = fill(&mut dev, 1, 0, 2);
    assert_eq!(dev.ranges(0, &[extent(0, 2)], 8192, 8192), Status::Success);
    let done = dev.execute(exec(0, 0, ProgramOp::FileJob, 100, 5000), &[]);
    assert_eq!(done.status, Status::Success);
    assert_eq!(exec_result(&done).outcome, ExecOutcome::Exited { r0: 5000 });
    assert_eq!(dev.output(0), &data[100..5100]);

    // A chunk whose DMA buffer is short, and a chunk past the declared total, are refused.
    let mut short = vec![0u8; 16];
    let load = common::program::LoadProgram {
        slot: ProgramSlot(1),
        offset: 0,
        total_len: 64,
        chunk_len: 32,
    };
    let done = dev.submit(Command::LoadProgram(load), &mut short);
    assert_eq!(done.status, Status::DataTransferError);
    let over = common::program::LoadProgram {
        chunk_len: 65,
        ..load
    };
    assert_eq!(dev.status(Command::LoadProgram(over)), Status::InvalidField);
}

/// The verifier's verdict is ProgramRejected, the slot stays unusable, and an unknown slot is
/// InvalidProgramSlot for every program command.
#[test]
fn rejected_images_and_unknown_slots() {
    let mut dev = dev();
    assert_eq!(
        dev.load(0, &image("mov64 r0, 0\ncall 99\nexit"), 4096),
        Status::ProgramRejected,
        "unknown helper"
    );
    assert_eq!(
        dev.load(0, &image("mov64 r0, 0\nja +5\nexit"), 4096),
        Status::ProgramRejected,
        "jump out of the program"
    );
    assert_eq!(
        dev.load(0, b"not an image at all", 4096),
        Status::ProgramRejected,
        "bad header"
    );
    assert_eq!(dev.activate(0, true), Status::ProgramNotActive);
    // The completion carries the verifier's reason, so the host can name it.
    let bad = image("mov64 r0, 0\ncall 99\nexit");
    let mut buf = bad.clone();
    let load = LoadProgram {
        slot: ProgramSlot(0),
        offset: 0,
        total_len: bad.len() as u32,
        chunk_len: bad.len() as u32,
    };
    let done = dev.submit(Command::LoadProgram(load), &mut buf);
    assert_eq!(done.status, Status::ProgramRejected);
    assert_eq!(
        done.result,
        CommandResult::Rejected(LoadError::Verify(VerifyError::UnknownHelper {
            pc: 1,
            id: 99
        }))
    );

    let slots = ProgramConfig::default().slots;
    let img = image("mov64 r0, 1\nexit");
    assert_eq!(dev.load(slots, &img, 4096), Status::InvalidProgramSlot);
    assert_eq!(dev.activate(slots, true), Status::InvalidProgramSlot);
    assert_eq!(dev.ranges(0, &[], 0, 0), Status::Success);
    let cid = dev.cid();
    let sub = Submission::new(
        cid,
        Command::ExecuteProgram(exec(slots, 0, ProgramOp::FileJob, 0, 0)),
    );
    let done = dev
        .ctrl
        .submit_command(0, &sub, &mut SliceDma::new(&mut []))
        .unwrap();
    assert_eq!(done.status, Status::InvalidProgramSlot);

    // The device still loads and runs a good program in the same slot.
    dev.install(0, &img);
    let done = dev.execute(exec(0, 0, ProgramOp::FileJob, 0, 0), &[]);
    assert_eq!(exec_result(&done).outcome, ExecOutcome::Exited { r0: 1 });
}

/// Activation needs a loaded program, Execute needs an active one and a defined range set.
#[test]
fn activation_and_execute_preconditions() {
    let mut dev = dev();
    assert_eq!(
        dev.activate(2, true),
        Status::ProgramNotActive,
        "before load"
    );
    assert_eq!(dev.ranges(0, &[], 0, 0), Status::Success);
    let run = |dev: &mut Dev, slot: u8, set: u16| {
        let cid = dev.cid();
        let sub = Submission::new(
            cid,
            Command::ExecuteProgram(exec(slot, set, ProgramOp::FileJob, 0, 0)),
        );
        dev.ctrl
            .submit_command(0, &sub, &mut SliceDma::new(&mut []))
    };
    assert_eq!(
        run(&mut dev, 2, 0).unwrap().status,
        Status::ProgramNotActive
    );
    assert_eq!(
        dev.load(2, &image("mov64 r0, 9\nexit"), 4096),
        Status::Success
    );
    assert_eq!(
        run(&mut dev, 2, 0).unwrap().status,
        Status::ProgramNotActive,
        "loaded, not active"
    );
    assert_eq!(dev.activate(2, true), Status::Success);
    assert_eq!(
        run(&mut dev, 2, 9).unwrap().status,
        Status::InvalidMemoryRange,
        "undefined range set"
    );
    assert_eq!(dev.activate(2, false), Status::Success);
    assert_eq!(
        run(&mut dev, 2, 0).unwrap().status,
        Status::ProgramNotActive
    );
    assert!(!dev.ctrl.busy());
    assert_eq!(dev.activate(2, true), Status::Success);
    let done = dev.execute(exec(2, 0, ProgramOp::FileJob, 0, 0), &[]);
    assert_eq!(exec_result(&done).outcome, ExecOutcome::Exited { r0: 9 });
}

/// Memory Range Set refuses extents beyond the namespace, extents that do not cover
/// `file_size`, zero-length extents, too many extents, an output over the limit and an
/// unknown set id, and accepts a valid set.
#[test]
fn memory_range_set_validation() {
    let mut dev = Dev::new(ProgramConfig {
        max_extents: 4,
        max_output_bytes: 1 << 16,
        range_sets: 4,
        ..ProgramConfig::default()
    });
    let nsze = dev.ctrl.zones().layout().nsze();
    let bad = Status::InvalidMemoryRange;
    assert_eq!(
        dev.ranges(0, &[extent(nsze - 1, 2)], 100, 64),
        bad,
        "past nsze"
    );
    assert_eq!(
        dev.ranges(0, &[extent(u64::MAX - 1, 2)], 100, 64),
        bad,
        "overflow"
    );
    assert_eq!(
        dev.ranges(0, &[extent(Extent::HOLE, 0)], 0, 64),
        bad,
        "empty hole"
    );
    assert_eq!(
        dev.ranges(0, &[extent(0, 1), extent(300, 1)], 8193, 64),
        bad,
        "extents cover 8192 of 8193 bytes"
    );
    assert_eq!(dev.ranges(0, &[extent(0, 0)], 0, 64), bad, "empty extent");
    assert_eq!(
        dev.ranges(0, &[extent(0, 1)], 10, (1 << 16) + 1),
        bad,
        "out_cap"
    );
    assert_eq!(
        dev.ranges(4, &[extent(0, 1)], 10, 64),
        bad,
        "unknown set id"
    );
    let five: Vec<Extent> = (0..5).map(|i| extent(i * 10, 1)).collect();
    assert_eq!(dev.ranges(0, &five, 10, 64), bad, "too many extents");
    // Fewer extent bytes by DMA than extent_count says.
    let set = common::program::MemoryRangeSet {
        id: RangeSetId(0),
        extent_count: 2,
        file_size: 10,
        out_cap: 64,
    };
    let mut one = extent(0, 1).to_le_bytes().to_vec();
    let done = dev.submit(Command::MemoryRangeSet(set), &mut one);
    assert_eq!(done.status, Status::DataTransferError);

    assert_eq!(
        dev.ranges(3, &[extent(nsze - 2, 2), extent(0, 1)], 3 * 4096, 1 << 16),
        Status::Success
    );
    assert_eq!(
        dev.ranges(
            3,
            &[extent(Extent::HOLE, 2), extent(0, 1)],
            3 * 4096,
            1 << 16
        ),
        Status::Success,
        "a hole covers its blocks"
    );
}

/// A hole extent reads as zeros, in whole and partial blocks, between the extents around it.
#[test]
fn holes_read_as_zeros() {
    let mut dev = dev();
    dev.install(0, &image(READ_EMIT));
    let data = fill(&mut dev, 3, 0, 2);
    let size = 5 * LBA - 100;
    let extents = [extent(0, 1), extent(Extent::HOLE, 3), extent(1, 1)];
    assert_eq!(
        dev.ranges(0, &extents, size as u64, 65_536),
        Status::Success
    );
    let mut file = data[..LBA].to_vec();
    file.resize(4 * LBA, 0);
    file.extend_from_slice(&data[LBA..2 * LBA - 100]);
    for (offset, len) in [
        (0, size),
        (LBA - 10, 20),
        (LBA + 5, 3 * LBA),
        (3 * LBA + 7, 2 * LBA),
    ] {
        let done = dev.execute(
            exec(0, 0, ProgramOp::FileJob, offset as u64, len as u64),
            &[],
        );
        let end = (offset + len).min(size);
        assert_eq!(
            exec_result(&done).outcome,
            ExecOutcome::Exited {
                r0: (end - offset) as u64
            }
        );
        assert!(dev.output(0) == file[offset..end], "{offset}+{len}");
    }
}

/// Execute Program goes to the background; `poll` completes it with the run's r0 and
/// stats; Read Output returns the emitted bytes, windowed by offset and length; the context
/// carries file_size and out_cap.
#[test]
fn execute_completes_through_poll_and_read_output_returns_the_bytes() {
    let mut dev = dev();
    dev.install(0, &image(READ_EMIT));
    let data = fill(&mut dev, 2, 0, 3);
    assert_eq!(
        dev.ranges(1, &[extent(0, 3)], 10_000, 65_536),
        Status::Success
    );

    let cid = dev.cid();
    let sub = Submission::new(
        cid,
        Command::ExecuteProgram(exec(0, 1, ProgramOp::ReadStream, 4000, 3000)),
    );
    assert_eq!(
        dev.ctrl
            .submit_command(7, &sub, &mut SliceDma::new(&mut [])),
        None
    );
    assert!(dev.ctrl.busy());
    let (sqid, done) = dev.ctrl.poll().unwrap();
    assert_eq!((sqid, done.cid, done.status), (7, cid, Status::Success));
    assert!(!dev.ctrl.busy());
    assert_eq!(dev.ctrl.poll(), None, "nothing left to run");
    let result = exec_result(&done);
    assert_eq!(result.outcome, ExecOutcome::Exited { r0: 3000 });
    assert_eq!(result.stats.device_bytes_read, 3000);
    assert_eq!(result.stats.bytes_returned, 3000);
    assert_eq!(result.stats.instructions, 14);
    // 14 instructions; csd_scratch moves nothing (16 fuel); csd_read and csd_emit move 3000
    // bytes each (16 + 47 fuel each).
    assert_eq!(
        result.stats.fuel_used,
        14 + 16 + 2 * (16 + 3000_u64.div_ceil(64))
    );

    assert_eq!(dev.output(1), &data[4000..7000]);
    let mut window = vec![0u8; 100];
    let read = ReadOutput {
        range_set: RangeSetId(1),
        offset: 2950,
        len: 100,
    };
    let done = dev.submit(Command::ReadOutput(read), &mut window);
    assert_eq!(
        done.result,
        CommandResult::Transferred(50),
        "clipped at the output's end"
    );
    assert_eq!(&window[..50], &data[6950..7000]);

    // Reads past file_size are short, then empty.
    let done = dev.execute(exec(0, 1, ProgramOp::ReadStream, 9000, 4096), &[]);
    assert_eq!(exec_result(&done).outcome, ExecOutcome::Exited { r0: 1000 });
    assert_eq!(dev.output(1), &data[9000..10_000]);
    let done = dev.execute(exec(0, 1, ProgramOp::ReadStream, 10_000, 4096), &[]);
    assert_eq!(exec_result(&done).outcome, ExecOutcome::Exited { r0: 0 });
    assert!(dev.output(1).is_empty());

    // The output buffer holds at most out_cap bytes: the emit fails with NO_SPACE.
    assert_eq!(dev.ranges(2, &[extent(0, 3)], 10_000, 100), Status::Success);
    let done = dev.execute(exec(0, 2, ProgramOp::ReadStream, 0, 101), &[]);
    assert_eq!(exec_result(&done).outcome, ExecOutcome::Exited { r0: 101 });
    assert!(dev.output(2).is_empty());
    // out_cap and file_size in distinct digits, so swapped context fields would show.
    let ctx_out_cap = "ldxdw r0, [r1+48]\nmul64 r0, 1000000\nldxdw r2, [r1+8]\nadd64 r0, r2\nexit";
    dev.install(1, &image(ctx_out_cap));
    let done = dev.execute(exec(1, 2, ProgramOp::FileJob, 0, 0), &[]);
    assert_eq!(
        exec_result(&done).outcome,
        ExecOutcome::Exited {
            r0: 100 * 1_000_000 + 10_000
        }
    );
}

/// A write stream's kernel reads its input with csd_input, across many slices, exactly once;
/// outside a write stream csd_input answers NOT_SUPPORTED.
#[test]
fn write_stream_input_across_slices() {
    let mut dev = sliced(100);
    dev.install(0, &image(ECHO_INPUT));
    assert_eq!(dev.ranges(0, &[], 0, 65_536), Status::Success);
    let input = pattern(3, 5003);
    let mut run = exec(0, 0, ProgramOp::WriteStream, 0, input.len() as u64);
    run.fuel = 1_000_000;
    let done = dev.execute(run, &input);
    assert_eq!(done.status, Status::Success, "{:?}", done.result);
    assert_eq!(exec_result(&done).outcome, ExecOutcome::Exited { r0: 5003 });
    assert_eq!(dev.output(0), input);

    let done = dev.execute(exec(0, 0, ProgramOp::FileJob, 0, 0), &[]);
    assert_eq!(
        exec_result(&done).outcome,
        ExecOutcome::Exited {
            r0: abi::err::NOT_SUPPORTED as u64
        }
    );
    assert!(dev.output(0).is_empty());

    // The input comes by DMA: a host buffer shorter than len is a transfer error.
    let cid = dev.cid();
    let mut short = vec![0u8; 10];
    let sub = Submission::new(
        cid,
        Command::ExecuteProgram(exec(0, 0, ProgramOp::WriteStream, 0, 11)),
    );
    let done = dev
        .ctrl
        .submit_command(0, &sub, &mut SliceDma::new(&mut short));
    assert_eq!(done.unwrap().status, Status::DataTransferError);
    assert!(!dev.ctrl.busy());
}

/// While a long kernel (millions of instructions) runs in small slices, Read, Write, Append
/// and admin commands submitted between polls complete at once; the kernel's result and
/// stats equal those of one big slice.
#[test]
fn io_is_served_between_kernel_slices() {
    const TURNS: u64 = 1_000_000;
    let want = spin_result(TURNS);

    let mut big = dev();
    big.install(0, &image(SPIN));
    assert_eq!(big.ranges(0, &[], 0, 0), Status::Success);
    let mut run = exec(0, 0, ProgramOp::FileJob, 0, 0);
    run.param0 = TURNS;
    let one_slice = big.execute(run, &[]);
    let one_slice = exec_result(&one_slice);
    assert_eq!(one_slice.outcome, ExecOutcome::Exited { r0: want });
    assert_eq!(one_slice.stats.instructions, 4 * TURNS + 3);

    let mut dev = sliced(20_000);
    dev.install(0, &image(SPIN));
    assert_eq!(dev.ranges(0, &[], 0, 0), Status::Success);
    let cid = dev.cid();
    let sub = Submission::new(cid, Command::ExecuteProgram(run));
    assert_eq!(
        dev.ctrl
            .submit_command(1, &sub, &mut SliceDma::new(&mut [])),
        None
    );

    let mut written = Vec::new();
    let mut polls = 0u64;
    let done = loop {
        if let Some((sqid, done)) = dev.ctrl.poll() {
            assert_eq!((sqid, done.cid), (1, cid));
            break done;
        }
        polls += 1;
        assert!(dev.ctrl.busy());
        // A turn of regular I/O between slices: each command completes in submit.
        if polls.is_multiple_of(2) && written.len() < 64 {
            let lba = written.len() as u64;
            let block = pattern(1000 + lba, LBA);
            if lba.is_multiple_of(2) {
                assert_eq!(dev.write(lba, &block), Status::Success);
            } else {
                assert_eq!(dev.append(0, &block), Ok(lba));
            }
            written.push(block);
            assert_eq!(dev.read(lba, 1).unwrap(), written[lba as usize]);
            assert_eq!(dev.status(Command::Flush), Status::Success);
            let read = ReadOutput {
                range_set: RangeSetId(0),
                offset: 0,
                len: 8,
            };
            assert_eq!(
                dev.status(Command::ReadOutput(read)),
                Status::InvalidField,
                "the running set's output is not readable yet"
            );
        }
    };
    assert_eq!(polls, 200, "slices of the kernel");
    assert_eq!(written.len(), 64, "I/O was served while the kernel ran");
    assert_eq!(done.status, Status::Success);
    assert_eq!(
        exec_result(&done),
        one_slice,
        "same result and stats as one slice"
    );
    for (lba, block) in written.iter().enumerate() {
        assert_eq!(&dev.read(lba as u64, 1).unwrap(), block);
    }
}

/// A run that exhausts its fuel ends with ProgramOutOfFuel and Faulted(OutOfFuel), having
/// used exactly its budget, across slices; the device keeps serving afterwards.
#[test]
fn out_of_fuel_is_program_out_of_fuel() {
    let mut dev = sliced(1000);
    dev.install(0, &image(SPIN));
    assert_eq!(dev.ranges(0, &[], 0, 0), Status::Success);
    let mut run = exec(0, 0, ProgramOp::FileJob, 0, 0);
    run.param0 = u64::MAX;
    run.fuel = 25_000;
    let done = dev.execute(run, &[]);
    assert_eq!(done.status, Status::ProgramOutOfFuel);
    let result = exec_result(&done);
    assert_eq!(result.outcome, ExecOutcome::Faulted(ExecFault::OutOfFuel));
    assert_eq!(result.stats.fuel_used, 25_000);
    assert_eq!(result.stats.instructions, 25_000);

    assert_eq!(dev.write(0, &pattern(4, LBA)), Status::Success);
    run.param0 = 10;
    let done = dev.execute(run, &[]);
    assert_eq!(
        exec_result(&done).outcome,
        ExecOutcome::Exited {
            r0: spin_result(10)
        }
    );
}

/// Faulting kernels (a wild load, a store into the read-only context, a helper handed memory
/// outside the kernel) end with ProgramFault and their typed fault; the device keeps serving
/// I/O and runs the next kernel normally.
#[test]
fn faults_are_typed_and_the_device_keeps_serving() {
    let mut dev = dev();
    let data = fill(&mut dev, 5, 0, 1);
    assert_eq!(dev.ranges(0, &[extent(0, 1)], 4096, 4096), Status::Success);
    dev.install(0, &image(READ_EMIT));
    let cases: [(&str, FaultCheck); 4] = [
        ("mov64 r1, 0\nldxdw r0, [r1+0]\nexit", |f| {
            matches!(
                f,
                ExecFault::MemoryFault {
                    pc: 1,
                    addr: 0,
                    len: 8,
                    write: false
                }
            )
        }),
        ("stdw [r1+24], 1\nmov64 r0, 0\nexit", |f| {
            matches!(
                f,
                ExecFault::MemoryFault {
                    pc: 0,
                    write: true,
                    ..
                }
            )
        }),
        ("ldxdw r0, [r1+60]\nexit", |f| {
            matches!(f, ExecFault::MemoryFault { len: 8, .. })
        }),
        ("mov64 r1, 0\nmov64 r2, 16\ncall 2\nexit", |f| {
            matches!(
                f,
                ExecFault::HelperFault {
                    pc: 2,
                    helper: abi::helper::EMIT,
                    addr: 0,
                    len: 16
                }
            )
        }),
    ];
    for (src, expected) in cases {
        dev.install(1, &image(src));
        let done = dev.execute(exec(1, 0, ProgramOp::FileJob, 0, 0), &[]);
        assert_eq!(done.status, Status::ProgramFault, "{src}");
        match exec_result(&done).outcome {
            ExecOutcome::Faulted(fault) => assert!(expected(fault), "{src}: {fault:?}"),
            other => panic!("{src}: {other:?}"),
        }
        assert!(dev.output(0).is_empty(), "{src}");
        assert_eq!(dev.read(0, 1).unwrap(), data);
        let done = dev.execute(exec(0, 0, ProgramOp::ReadStream, 0, 4096), &[]);
        assert_eq!(exec_result(&done).outcome, ExecOutcome::Exited { r0: 4096 });
        assert_eq!(dev.output(0), data);
    }
}

/// Several Execute Programs queue up (each shorter than the next, so they also complete in
/// order as they take slices in turn); a slot or range set in use by a queued run cannot be
/// replaced until it completes.
#[test]
fn queued_runs_complete_in_order() {
    let mut dev = sliced(500);
    dev.install(0, &image(SPIN));
    for set in 0..3 {
        assert_eq!(dev.ranges(set, &[], 0, 0), Status::Success);
    }
    let mut cids = Vec::new();
    for set in 0..3u16 {
        let mut run = exec(0, set, ProgramOp::FileJob, 0, 0);
        run.param0 = 1000 * (u64::from(set) + 1);
        let cid = dev.cid();
        let sub = Submission::new(cid, Command::ExecuteProgram(run));
        assert_eq!(
            dev.ctrl
                .submit_command(2, &sub, &mut SliceDma::new(&mut [])),
            None
        );
        cids.push((cid, run.param0));
    }
    let again = Submission::new(
        dev.cid(),
        Command::ExecuteProgram(exec(0, 1, ProgramOp::FileJob, 0, 0)),
    );
    let done = dev
        .ctrl
        .submit_command(2, &again, &mut SliceDma::new(&mut []));
    assert_eq!(
        done.unwrap().status,
        Status::InvalidField,
        "range set already in use"
    );
    assert_eq!(
        dev.load(0, &image("mov64 r0, 0\nexit"), 64),
        Status::InvalidField
    );
    assert_eq!(dev.activate(0, false), Status::InvalidField);
    assert_eq!(dev.ranges(2, &[], 0, 0), Status::InvalidField);

    let mut finished = Vec::new();
    while finished.len() < 3 {
        if let Some((sqid, done)) = dev.ctrl.poll() {
            assert_eq!(sqid, 2);
            finished.push((done.cid, exec_result(&done).outcome));
        }
    }
    let want: Vec<_> = cids
        .iter()
        .map(|&(cid, turns)| {
            (
                cid,
                ExecOutcome::Exited {
                    r0: spin_result(turns),
                },
            )
        })
        .collect();
    assert_eq!(finished, want);
    assert!(!dev.ctrl.busy());
    assert_eq!(dev.activate(0, false), Status::Success, "free again");
}

/// Started runs take one slice each in turn: of three runs queued longest first, the shortest
/// finishes first, and `next_run` names them round-robin. With one run started at a time,
/// they finish in the order they came.
#[test]
fn runs_take_slices_in_turn() {
    for (running, want_order) in [(8, [2u16, 1, 0]), (1, [0, 1, 2])] {
        let mut dev = Dev::new(ProgramConfig {
            slice_fuel: 500,
            running,
            ..ProgramConfig::default()
        });
        dev.install(0, &image(SPIN));
        let mut cids = Vec::new();
        for set in 0..3u16 {
            assert_eq!(dev.ranges(set, &[], 0, 0), Status::Success);
            let mut run = exec(0, set, ProgramOp::FileJob, 0, 0);
            run.param0 = 1000 * (3 - u64::from(set));
            let cid = dev.cid();
            let sub = Submission::new(cid, Command::ExecuteProgram(run));
            assert_eq!(
                dev.ctrl
                    .submit_command(1, &sub, &mut SliceDma::new(&mut [])),
                None
            );
            cids.push(cid);
        }
        if running > 1 {
            let mut turns = Vec::new();
            for _ in 0..6 {
                turns.push(dev.ctrl.next_run().expect("a run is due").1);
                assert_eq!(dev.ctrl.poll(), None, "no run ends within two slices");
            }
            assert_eq!(turns, [cids.clone(), cids.clone()].concat());
        }
        let mut finished = Vec::new();
        while finished.len() < 3 {
            if let Some((_, done)) = dev.ctrl.poll() {
                let set = cids.iter().position(|&c| c == done.cid).expect("ours") as u16;
                let turns = 1000 * (3 - u64::from(set));
                assert_eq!(
                    exec_result(&done).outcome,
                    ExecOutcome::Exited {
                        r0: spin_result(turns)
                    }
                );
                finished.push(set);
            }
        }
        assert_eq!(finished, want_order, "{running} run(s) at once");
        assert!(!dev.ctrl.busy());
    }
}

/// Programs and range sets live in controller RAM: after a reboot over the same NAND the data
/// is there, the program slots are empty, and a reloaded kernel reads the data back.
#[test]
fn reboot_keeps_data_not_programs() {
    let mut dev = dev();
    dev.install(0, &image(READ_EMIT));
    let data = fill(&mut dev, 6, 256, 2);
    let mut dev = dev.reboot(ProgramConfig::default());
    assert_eq!(dev.read(256, 2).unwrap(), data);
    assert_eq!(
        dev.ranges(0, &[extent(256, 2)], 8000, 8192),
        Status::Success
    );
    let cid = dev.cid();
    let sub = Submission::new(
        cid,
        Command::ExecuteProgram(exec(0, 0, ProgramOp::FileJob, 0, 8000)),
    );
    let done = dev
        .ctrl
        .submit_command(0, &sub, &mut SliceDma::new(&mut []));
    assert_eq!(done.unwrap().status, Status::ProgramNotActive);
    dev.install(0, &image(READ_EMIT));
    let done = dev.execute(exec(0, 0, ProgramOp::FileJob, 0, 8000), &[]);
    assert_eq!(exec_result(&done).outcome, ExecOutcome::Exited { r0: 8000 });
    assert_eq!(dev.output(0), &data[..8000]);
}
