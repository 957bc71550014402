//! The board's own log: defmt frames from the Cortex-R52 in QEMU, decoded on the host with the
//! table of the image QEMU runs (`QemuDevice::board_log`, `QemuBoard::board_log`, and
//! `csd --device qemu --board-log`), and the error of a board that stops at start-up.
//!
//! Only lines the board logs before it answers the host's last command are asserted: a line
//! logged after the answer may not be in the file yet when the host reads it.
//!
//! Needs `qemu-system-arm`, the board's link image (`cargo xtask board build`, which
//! `cargo xtask test` runs before these tests) and the clang-built kernels (`cargo xtask
//! kernels`).

use std::path::Path;

use common::{
    command::{Command, CommandId, Submission},
    program::{ExecuteProgram, Extent, ProgramOp, ProgramSlot, RangeSetId},
    Status, LBA_BYTES,
};
use host_shell::{
    link::{qemu::QemuBoard, LinkError, QemuDevice, QemuOptions},
    loader,
};
use tests::{csd, csd_ok, kernel_object};

/// The board's start-up lines for its own geometry (`BOARD_GEOMETRY`, the NAND of a new image
/// or of board memory).
const UP: [&str; 2] = [
    "INFO  link: up on the Cortex-R52: NAND of 2 channels x 2 dies x 32 blocks x 32 pages of \
     4096 bytes",
    "INFO  link: 30 zones of 128 LBAs (capacity 128), at most 14 open and 14 active; serving on \
     UART0",
];

fn lines(device: &QemuDevice) -> Vec<String> {
    let log = device.board_log().expect("the board's log decodes");
    log.iter().map(ToString::to_string).collect()
}

/// A board started over a new image file logs creating and formatting it and its geometry; a
/// kernel that reads a wild address is logged as a warning with its fault; started again over
/// the same image, the board logs what power-on recovery found (the written zone, Closed).
#[test]
fn the_board_logs_its_geometry_faults_and_what_mount_found() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = QemuOptions::new(Some(dir.path().join("dev.img")));

    let device = QemuDevice::start(&options).expect("QEMU device starts");
    let driver = device.driver();
    driver
        .write(0, &vec![7u8; 4 * LBA_BYTES as usize])
        .expect("write zone 0");
    let kernel = loader::load_object(kernel_object("tests/hostile_wild_load"))
        .expect("kernel links")
        .to_bytes();
    driver
        .load_program(ProgramSlot(0), &kernel)
        .expect("program loads");
    driver
        .activate(ProgramSlot(0), true)
        .expect("program activates");
    let extents = [Extent {
        start_lba: 0,
        lba_count: 4,
    }];
    driver
        .set_ranges(RangeSetId(1), &extents, 4 * u64::from(LBA_BYTES), 4096)
        .expect("range set");
    let exec = ExecuteProgram {
        slot: ProgramSlot(0),
        range_set: RangeSetId(1),
        op: ProgramOp::FileJob,
        offset: 0,
        len: 0,
        // The address the kernel loads 8 bytes from.
        param0: 0x1234_5678,
        param1: 0,
        fuel: 0,
    };
    driver.execute(exec, Vec::new()).expect("the run completes");

    let log = lines(&device);
    assert_eq!(
        log[..4],
        [
            "INFO  link: no NAND image yet, creating one",
            "INFO  link: formatted the NAND image",
            UP[0],
            UP[1],
        ],
        "{log:#?}"
    );
    let fault = log
        .iter()
        .filter(|l| l.starts_with("WARN  link: program run "))
        .collect::<Vec<_>>();
    assert_eq!(fault.len(), 1, "{log:#?}");
    assert!(
        fault[0].ends_with(
            " stopped: Faulted(MemoryFault { pc: 1, addr: 305419896, len: 8, write: false })"
        ),
        "{log:#?}"
    );
    device.stop();

    let device = QemuDevice::start(&options).expect("QEMU device restarts");
    let log = lines(&device);
    assert_eq!(
        log[..4],
        [
            "INFO  link: NAND image opened",
            "INFO  link: mounted the NAND image: 0 open, 1 closed, 0 full, 0 read-only and 0 \
             offline zones; 0 bad blocks",
            UP[0],
            UP[1],
        ],
        "{log:#?}"
    );
    device.stop();
}

/// A board with its NAND in board memory says so, and warns of each frame it rejects as
/// corrupt before it answers the next good one.
#[test]
fn the_board_logs_rejected_frames() {
    let mut board = QemuBoard::start(&QemuOptions::new(None)).expect("QEMU starts");
    board
        .link()
        .send_raw(b"\x00line noise\xff\x13\x37\x00")
        .expect("garbage sent");
    let identify = Submission::new(CommandId(1), Command::Identify);
    let (done, _) = board.call(&identify, 4096, &[]).expect("identify");
    assert_eq!(done.status, Status::Success);
    let log: Vec<String> = board
        .board_log()
        .expect("the board's log decodes")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        log[..4],
        [
            "INFO  link: NAND in board memory",
            UP[0],
            UP[1],
            "WARN  link: rejected a frame: CorruptFrame",
        ],
        "{log:#?}"
    );
    board.stop();
}

/// A board that cannot open its image stops, and starting it fails with an error that says
/// QEMU exited and what the board said, not with a broken socket.
#[test]
fn a_board_that_stops_at_start_up_says_why() {
    let dir = tempfile::tempdir().expect("temp dir");
    let image = dir.path().join("not-an-image.img");
    std::fs::write(&image, vec![0x5a; 8192]).expect("write the file");
    let err = QemuDevice::start(&QemuOptions::new(Some(image))).expect_err("the board stops");
    assert!(matches!(err, LinkError::Exited(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("exit status: 1")
            && text.contains("link: could not open the NAND image: Header(NotAnImage)"),
        "{text}"
    );
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// `csd --device qemu --board-log` prints the board's decoded log on stderr, one `board:` line
/// per message, and the command's own output as without it.
#[test]
fn csd_board_log_prints_the_decoded_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let img = dir.path().join("dev.img");
    csd_ok(["device", "create", path(&img), "--capacity", "16M"]);
    let plain = csd_ok(["--device", "qemu", "zone", "report", path(&img), "--json"]);

    let out = csd([
        "--device",
        "qemu",
        "--board-log",
        "zone",
        "report",
        path(&img),
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(out.stdout, plain, "the report is the same");
    let log: Vec<&str> = stderr.lines().collect();
    assert!(log.iter().all(|l| l.starts_with("board: ")), "{stderr}");
    assert_eq!(
        log[..2],
        [
            "board: INFO  link: NAND image opened",
            "board: INFO  link: mounted the NAND image: 0 open, 0 closed, 0 full, 0 read-only \
             and 0 offline zones; 0 bad blocks",
        ],
        "{stderr}"
    );
    assert!(
        log[2].starts_with("board: INFO  link: up on the Cortex-R52: NAND of "),
        "{stderr}"
    );
}
