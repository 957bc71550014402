//! `csd device start|stop`: a device kept running between commands, whose zone states follow
//! the commands one by one (QEMU's ZNS semantics) until it powers off.

use std::path::Path;

use tests::{csd_fails, csd_json, csd_ok, RunningDevice};

/// Each zone's state, from `csd zone report --json`.
fn states(image: &Path) -> Vec<String> {
    let report = csd_json([
        "zone".as_ref(),
        "report".as_ref(),
        image.as_os_str(),
        "--json".as_ref(),
    ]);
    report
        .as_array()
        .expect("a zone array")
        .iter()
        .map(|z| z["state"].as_str().expect("a state").to_string())
        .collect()
}

/// With at most 2 open and 3 active zones: an append leaves its zone implicitly open; two
/// explicit opens stay open and close the implicitly opened zone (the oldest); a third open
/// goes past the active limit and is refused; `device stop` powers off, which closes zones with
/// data and empties explicitly opened zones without.
#[test]
fn zone_states_follow_the_commands_until_power_off() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("dev.img");
    let img = image.to_str().unwrap();
    csd_ok([
        "device",
        "create",
        img,
        "--capacity",
        "64M",
        "--max-open",
        "2",
        "--max-active",
        "3",
    ]);
    let data = dir.path().join("data.bin");
    std::fs::write(&data, vec![0x5a; 8192]).unwrap();
    let data = data.to_str().unwrap();

    let mut device = RunningDevice::start(&[], &image);
    let err = csd_fails(1, ["device", "start", img]);
    assert!(err.contains("already running"), "{err}");

    csd_ok(["zone", "append", img, "0", "--input", data]);
    assert_eq!(states(&image)[..3], ["implicit_open", "empty", "empty"]);
    csd_ok(["zone", "open", img, "1"]);
    assert_eq!(
        states(&image)[..3],
        ["implicit_open", "explicit_open", "empty"]
    );
    csd_ok(["zone", "open", img, "2"]);
    assert_eq!(
        states(&image)[..3],
        ["closed", "explicit_open", "explicit_open"],
        "opening a zone past the open limit closes the oldest implicitly opened one"
    );
    let err = csd_fails(1, ["zone", "open", img, "3"]);
    assert!(err.contains("Too Many Active Zones"), "{err}");
    // The zone written through the running device reads back.
    let back = csd_ok(["zone", "read", img, "0", "--len", "8192"]);
    assert_eq!(back, vec![0x5a; 8192]);

    let stopped = device.stop().expect("device stop");
    assert!(stopped.contains("powered off"), "{stopped}");
    assert!(!image.with_extension("img.sock").exists());
    assert_eq!(states(&image)[..4], ["closed", "empty", "empty", "empty"]);
    let err = csd_fails(1, ["device", "stop", img]);
    assert!(err.contains("no device is running"), "{err}");
}
