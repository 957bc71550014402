//! `csd --device qemu ...`: the command line with the device on the Cortex-R52 in QEMU, over the
//! same image file that in-process commands open.
//!
//! Needs `qemu-system-arm`, the board's link image (`cargo xtask board build`, which
//! `cargo xtask test` runs before these tests) and the clang-built kernels (`cargo xtask
//! kernels`).

use std::path::Path;

use serde_json::Value;
use testkit::hex;
use tests::{csd_fails, csd_ok, json, kernel_object, reference};

const BLOCK: usize = 4096;

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i / BLOCK) as u8 ^ (i as u8).wrapping_mul(29) ^ seed)
        .collect()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// One zone's entry of `csd [--device qemu] zone report IMAGE --json`.
fn zone(device: &str, img: &Path, index: usize) -> Value {
    let out = csd_ok(["--device", device, "zone", "report", path(img), "--json"]);
    json(&out)[index].clone()
}

/// Zone append, report and read through QEMU, a kernel run on the board, and a hostile kernel
/// stopped there; then the same image opened in-process sees exactly what the board wrote.
#[test]
fn zone_and_kernel_commands_through_qemu_then_in_process() {
    let dir = tempfile::tempdir().expect("temp dir");
    let img = dir.path().join("dev.img");
    csd_ok(["device", "create", path(&img), "--capacity", "16M"]);
    // More than the append limit (32 LBAs), not a whole number of blocks.
    let first = data(40 * BLOCK + 1000, 1);
    let input = dir.path().join("first.bin");
    std::fs::write(&input, &first).expect("write input");

    let out = csd_ok([
        "--device",
        "qemu",
        "zone",
        "append",
        path(&img),
        "1",
        "--input",
        path(&input),
        "--json",
    ]);
    let z1 = zone("qemu", &img, 1);
    let zslba = z1["zslba"].as_u64().expect("zslba");
    assert_eq!(
        json(&out)["lba"],
        zslba,
        "the first append lands at the zone start"
    );
    assert_eq!(z1["wp"].as_u64(), Some(zslba + 41), "41 blocks appended");
    assert_eq!(
        z1["state"], "closed",
        "a new QEMU boot is a power cycle: the zone the last one opened is closed"
    );

    let back = dir.path().join("back.bin");
    let len = first.len().to_string();
    csd_ok([
        "--device",
        "qemu",
        "zone",
        "read",
        path(&img),
        &zslba.to_string(),
        "--len",
        &len,
        "-o",
        path(&back),
    ]);
    assert_eq!(std::fs::read(&back).expect("read output"), first);

    // The entropy kernel over zone 1, on the board.
    let out = csd_ok([
        "--device",
        "qemu",
        "kernel",
        "run",
        path(&img),
        path(&kernel_object("entropy")),
        "--zone",
        "1",
        "--json",
    ]);
    let run = json(&out);
    let mut padded = first.clone();
    padded.resize(41 * BLOCK, 0);
    let counts = reference::histogram_bytes(&reference::entropy_histogram(&padded));
    assert_eq!(run["ret"], padded.len() as u64);
    assert_eq!(run["output_hex"], hex::encode(&counts));

    // A hostile kernel on the board is stopped by its fuel; the command says so.
    let err = csd_fails(
        1,
        [
            "--device",
            "qemu",
            "kernel",
            "run",
            path(&img),
            path(&kernel_object("tests/hostile_infinite_loop")),
            "--zone",
            "1",
            "--fuel",
            "50000",
        ],
    );
    assert!(err.contains("ran out of fuel"), "{err}");

    // In-process, the same image holds what the board wrote.
    let z1 = zone("inprocess", &img, 1);
    assert_eq!(z1["wp"].as_u64(), Some(zslba + 41));
    let out = csd_ok([
        "zone",
        "read",
        path(&img),
        &zslba.to_string(),
        "--len",
        &len,
        "-o",
        "-",
    ]);
    assert_eq!(out, first);
}

/// A missing image is an error naming it, not a device the board would create on its own.
#[test]
fn qemu_needs_an_existing_image() {
    let dir = tempfile::tempdir().expect("temp dir");
    let img = dir.path().join("missing.img");
    let err = csd_fails(1, ["--device", "qemu", "zone", "report", path(&img)]);
    assert!(err.contains("no such device image"), "{err}");
    assert!(!img.exists(), "nothing was created");
}

/// `csd --device qemu device start` keeps the board running in QEMU between commands: the same
/// walk through zone states as in-process (see
/// [`tests::running::zone_states_follow_the_commands_until_power_off`]).
#[test]
fn a_running_board_keeps_its_zone_states_between_commands() {
    tests::running::zone_states_follow_the_commands_until_power_off(&["--device", "qemu"]);
}
