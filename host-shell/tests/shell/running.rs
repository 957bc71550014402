//! The running device's server (`host_shell::link::running`) over a RAM device: sessions over
//! its socket each number program slots and range sets from 0 without loading into each
//! other's, and while a file-system session is attached, other sessions may not change zones.

use std::{os::unix::net::UnixListener, time::Duration};

use common::{
    program::{ExecOutcome, ExecuteProgram, ProgramOp, ProgramSlot, RangeSetId},
    LBA_BYTES,
};
use host_shell::{
    device::{DeviceOptions, RamDevice},
    driver::Driver,
    link::{running, AttachedDevice, Session},
};
use testkit::geometry;

/// Loads a kernel that returns `value` into slot 0 and range set 0 of the session's own
/// numbering.
fn load_returning(driver: &Driver, value: u32) {
    let text = rbpf::assembler::assemble(&format!("mov64 r0, {value}\nexit\n")).expect("assembles");
    driver
        .load_program(ProgramSlot(0), &firmware::ebpf::encode_image(&text, &[]))
        .expect("load program");
    driver.activate(ProgramSlot(0), true).expect("activate");
    driver
        .set_ranges(RangeSetId(0), &[], 0, 64)
        .expect("range set");
}

fn run_slot_0(driver: &Driver) -> u64 {
    let result = driver
        .execute(
            ExecuteProgram {
                slot: ProgramSlot(0),
                range_set: RangeSetId(0),
                op: ProgramOp::FileJob,
                offset: 0,
                len: 0,
                param0: 0,
                param1: 0,
                fuel: 1000,
            },
            Vec::new(),
        )
        .expect("execute");
    match result.outcome {
        ExecOutcome::Exited { r0 } => r0,
        other => panic!("the kernel did not exit: {other:?}"),
    }
}

#[test]
fn sessions_keep_their_slots_and_the_file_system_its_zones() {
    let geometry = geometry::small();
    let device = RamDevice::in_ram(
        geometry,
        geometry::zones_for(&geometry),
        DeviceOptions::default(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("dev.img");
    let listener = UnixListener::bind(running::socket_path(&image)).unwrap();
    let server = running::Server::new(device.driver());
    let stop = server.stopper();
    std::thread::scope(|s| {
        s.spawn(|| server.run(listener, Duration::from_secs(5)).unwrap());

        // Stopped whatever the checks say, so that a failure ends the test.
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sessions(&image)));
        stop();
        if let Err(panic) = checked {
            std::panic::resume_unwind(panic);
        }
    });
}

fn sessions(image: &std::path::Path) {
    let a = AttachedDevice::attach(image, &Session::Raw)
        .expect("attach")
        .expect("a running device");
    let b = AttachedDevice::attach(image, &Session::Raw)
        .expect("attach")
        .expect("a running device");
    load_returning(&a.driver(), 1);
    load_returning(&b.driver(), 2);
    assert_eq!(run_slot_0(&a.driver()), 1, "session a runs its own kernel");
    assert_eq!(run_slot_0(&b.driver()), 2, "session b runs its own kernel");

    let zslba = a.driver().all_zones().expect("zone report")[1].zslba;
    let block = vec![7u8; LBA_BYTES as usize];
    a.driver().append(zslba, block.clone()).expect("append");
    let fs = AttachedDevice::attach(
        image,
        &Session::FileSystem {
            holder: "a test".into(),
        },
    )
    .expect("attach")
    .expect("a running device");
    let err = AttachedDevice::attach(
        image,
        &Session::FileSystem {
            holder: "another".into(),
        },
    )
    .expect_err("a second file system");
    assert!(err.to_string().contains("in use by a test"), "{err}");
    let denied = a.driver().append(zslba, block.clone()).expect_err("denied");
    assert!(denied.to_string().contains("Access Denied"), "{denied}");
    assert_eq!(
        a.driver().read(zslba, 1).expect("read"),
        block,
        "reads still work"
    );
    fs.driver().append(zslba, block.clone()).expect("append");
    fs.detach();
    // The file system gone, raw sessions may change zones again.
    a.driver().append(zslba, block).expect("append");
    a.detach();
    b.detach();
}
