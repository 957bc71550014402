//! The firmware on the Cortex-R52 in QEMU, driven over the emulated serial link: the same host
//! driver as in-process, a device image that outlives QEMU (and opens in-process too), a
//! clang-built kernel run on the board, and a link that shrugs off corrupt frames.
//!
//! Needs `qemu-system-arm` and the board's link image (`cargo xtask board build`, which
//! `cargo xtask test` runs before these tests).

use common::{
    command::{Command, CommandId, CommandResult, Submission},
    program::{ExecOutcome, ExecuteProgram, Extent, ProgramOp, ProgramSlot, RangeSetId},
    Status, LBA_BYTES,
};
use host_shell::{
    device::{Device, DeviceOptions},
    link::{qemu::QemuBoard, Fault, QemuDevice, QemuOptions},
    loader,
};
use tests::kernel_object;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Create a device in a new image file over QEMU, write, append and read through the driver,
/// run the passthrough kernel on the board over what was written, stop QEMU, start it again on
/// the same image and read everything back; then open the image in-process too.
#[test]
fn qemu_device_survives_restart_and_runs_a_kernel() {
    let dir = tempfile::tempdir().expect("temp dir");
    let image = dir.path().join("dev.img");
    let options = QemuOptions::new(Some(image.clone()));
    let lba = u64::from(LBA_BYTES);

    let first = pattern(8 * LBA_BYTES as usize, 1);
    let second = pattern(3 * LBA_BYTES as usize, 2);
    let (zone_size, appended_at) = {
        let device = QemuDevice::start(&options).expect("QEMU device starts");
        let driver = device.driver();
        let zone_size = device.identify().zone_size_lbas;
        driver.write(0, &first).expect("write at the write pointer");
        let at = driver
            .append(zone_size, second.clone())
            .expect("append to zone 1");
        assert_eq!(at, zone_size, "the first append lands at the zone start");
        assert_eq!(driver.read(0, 8).expect("read back"), first);

        // The passthrough kernel over the first 5 blocks, run on the Cortex-R52.
        let object = kernel_object("passthrough");
        let program = loader::load_object(&object)
            .expect("kernel links")
            .to_bytes();
        driver
            .load_program(ProgramSlot(0), &program)
            .expect("program loads");
        driver
            .activate(ProgramSlot(0), true)
            .expect("program activates");
        let file_len = 5 * lba;
        let extents = [Extent {
            start_lba: 0,
            lba_count: 5,
        }];
        driver
            .set_ranges(RangeSetId(1), &extents, file_len, 64 * 1024)
            .expect("range set");
        let exec = ExecuteProgram {
            slot: ProgramSlot(0),
            range_set: RangeSetId(1),
            op: ProgramOp::FileJob,
            offset: 100,
            len: 10_000,
            param0: 0,
            param1: 0,
            fuel: 0,
        };
        let result = driver.execute(exec, Vec::new()).expect("kernel runs");
        assert_eq!(result.outcome, ExecOutcome::Exited { r0: 10_000 });
        assert!(result.stats.instructions > 0);
        let out = driver
            .read_output(RangeSetId(1), 0, 10_000)
            .expect("output");
        assert_eq!(out, first[100..10_100]);

        let stats = device.stop().expect("device stops cleanly");
        assert!(stats.frames_sent > 0);
        (zone_size, at)
    };

    // Power on again over the same image: the firmware rebuilds its state from the NAND.
    {
        let device = QemuDevice::start(&options).expect("QEMU device restarts");
        let driver = device.driver();
        assert_eq!(driver.read(0, 8).expect("read after restart"), first);
        assert_eq!(driver.read(appended_at, 3).expect("read appended"), second);
        // The write pointer came back too: the next write at it succeeds, one before fails.
        let more = pattern(LBA_BYTES as usize, 3);
        driver
            .write(8, &more)
            .expect("write at the recovered pointer");
        assert!(
            driver.write(2, &more).is_err(),
            "a write behind the pointer fails"
        );
        device.stop();
    }

    // The host shell opens the image the board wrote.
    let device = Device::open(&image, DeviceOptions::default()).expect("host opens the image");
    let driver = device.driver();
    assert_eq!(driver.read(0, 8).expect("host reads"), first);
    assert_eq!(driver.read(zone_size, 3).expect("host reads"), second);
}

/// The board serves regular commands while a kernel runs: a kernel counting until its fuel
/// runs out (hundreds of slices) on one queue, and reads and appends on another that all
/// complete before it does, every completion reaching the command that asked.
#[test]
fn the_board_serves_io_between_kernel_slices() {
    let device = QemuDevice::start(&QemuOptions::new(None)).expect("QEMU device starts");
    let zone_size = device.identify().zone_size_lbas;
    let kernel = device.driver_on(1);
    let program = loader::load_object(kernel_object("tests/hostile_infinite_loop"))
        .expect("kernel links")
        .to_bytes();
    kernel
        .load_program(ProgramSlot(0), &program)
        .expect("program loads");
    kernel.activate(ProgramSlot(0), true).expect("activates");
    kernel
        .set_ranges(RangeSetId(0), &[], 0, 64)
        .expect("range set");
    let kernel_done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let exec = testkit::programs::slot_0_file_job(0, 20_000_000);
            let result = kernel.execute(exec, Vec::new()).expect("kernel runs");
            kernel_done.store(true, std::sync::atomic::Ordering::SeqCst);
            assert_eq!(
                result.outcome,
                ExecOutcome::Faulted(common::program::ExecFault::OutOfFuel)
            );
        });
        // Let the kernel start.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let io = device.driver_on(2);
        for i in 0..4u8 {
            let block = vec![i; LBA_BYTES as usize];
            let at = io.append(zone_size, block).expect("append");
            assert_eq!(at, zone_size + u64::from(i));
            assert!(io.read(at, 1).expect("read").iter().all(|&b| b == i));
        }
        assert!(
            !kernel_done.load(std::sync::atomic::Ordering::SeqCst),
            "the I/O waited for the kernel's end"
        );
    });
    device.stop();
}

/// Garbage on the line, a bit flipped in a request and a request cut short are all rejected
/// by the board (a Nak or silence), the host retransmits, and every command completes once.
#[test]
fn corrupt_and_truncated_frames_are_rejected_and_the_link_recovers() {
    let mut board = QemuBoard::start(&QemuOptions::new(None)).expect("QEMU starts");
    let identify = Submission::new(CommandId(1), Command::Identify);

    board
        .link()
        .send_raw(b"\x00line noise\xff\x13\x37\x00\x05\x01")
        .expect("garbage sent");
    let (done, _) = board
        .call(&identify, 4096, &[])
        .expect("identify after garbage");
    assert_eq!(done.status, Status::Success);

    board.link().inject(Fault::FlipBit(5));
    let (done, _) = board
        .call(&identify, 4096, &[])
        .expect("identify after a flip");
    assert_eq!(done.status, Status::Success);
    let after_flip = board.link().stats();
    assert!(after_flip.naks >= 1, "the board refused the flipped frame");
    assert!(after_flip.retransmits >= 1);

    // A truncated Zone Append: if it ran twice, the zone would hold two copies.
    board.link().set_timeouts(
        std::time::Duration::from_millis(500),
        std::time::Duration::from_secs(120),
    );
    let data = pattern(LBA_BYTES as usize, 9);
    let append = Submission::new(CommandId(2), Command::ZoneAppend { zslba: 0, nlb: 1 });
    board.link().inject(Fault::Truncate(40));
    let (done, _) = board
        .call(&append, data.len(), &data)
        .expect("append after a truncated frame");
    assert_eq!(done.status, Status::Success);
    assert_eq!(done.result, CommandResult::Lba(0));
    // Had the append run twice, the next one would land at LBA 2.
    let again = Submission::new(CommandId(3), Command::ZoneAppend { zslba: 0, nlb: 1 });
    let (done, _) = board
        .call(&again, data.len(), &data)
        .expect("second append");
    assert_eq!(
        done.result,
        CommandResult::Lba(1),
        "the first append ran once"
    );
    let read = Submission::new(CommandId(4), Command::Read { slba: 0, nlb: 1 });
    let (done, bytes) = board.call(&read, LBA_BYTES as usize, &[]).expect("read");
    assert_eq!(done.status, Status::Success);
    assert_eq!(bytes, data);
    board.stop();
}

/// Reads and writes 1 MiB over the link and checks it; prints the link's throughput (a
/// relative figure: QEMU TCG and a polled one-byte UART).
#[test]
fn link_throughput() {
    let device = QemuDevice::start(&QemuOptions::new(None)).expect("QEMU device starts");
    let driver = device.driver();
    let data = pattern(1 << 20, 7);
    let started = std::time::Instant::now();
    driver.write(0, &data).expect("write 1 MiB");
    let wrote = started.elapsed();
    let started = std::time::Instant::now();
    let back = driver
        .read(0, (data.len() / LBA_BYTES as usize) as u64)
        .expect("read 1 MiB");
    let read = started.elapsed();
    assert_eq!(back, data);
    let stats = device.stop().expect("device stops");
    eprintln!(
        "link: write {:.0} KiB/s, read {:.0} KiB/s ({} frames, {} retransmits)",
        1024.0 / wrote.as_secs_f64(),
        1024.0 / read.as_secs_f64(),
        stats.frames_sent,
        stats.retransmits
    );
}
