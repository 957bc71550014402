//! The running device's server (`host_shell::link::running`) over a RAM device: sessions over
//! its socket each number program slots and range sets from 0 without loading into each
//! other's, and while a file-system session is attached, other sessions may not change zones.
//! A request sent again after a refused frame gets its answer again.

use std::{
    io::{Read, Write},
    os::unix::net::UnixListener,
    path::Path,
    time::Duration,
};

use common::{
    command::{Command, CommandId, Submission},
    link::{self, DeviceMessage, FrameReader, HostMessage, SubmissionEntry},
    program::{ExecOutcome, ExecResult, ProgramSlot, RangeSetId},
    LBA_BYTES,
};
use host_shell::{
    device::{DeviceOptions, RamDevice},
    driver::{Driver, DriverError},
    link::{running, AttachedDevice, Session},
};
use testkit::geometry;

/// Loads into slot 0 of the session's own numbering a kernel that returns `value` plus its
/// output capacity, and sets range set 0 (also the session's own) to `64 * value` bytes of
/// output: a run returns `65 * value` only with this session's kernel and range set.
fn load_returning(driver: &Driver, value: u32) {
    let text = rbpf::assembler::assemble(&format!(
        "ldxdw r0, [r1+{}]\nadd64 r0, {value}\nexit\n",
        common::abi::ctx::OUT_CAP
    ))
    .expect("assembles");
    driver
        .load_program(ProgramSlot(0), &firmware::ebpf::encode_image(&text, &[]))
        .expect("load program");
    driver.activate(ProgramSlot(0), true).expect("activate");
    driver
        .set_ranges(RangeSetId(0), &[], 0, 64 * value)
        .expect("range set");
}

/// Runs slot 0 over range set 0, both of the session's numbering.
fn execute_slot_0(driver: &Driver) -> Result<ExecResult, DriverError> {
    driver.execute(testkit::programs::slot_0_file_job(0, 1000), Vec::new())
}

fn run_slot_0(driver: &Driver) -> u64 {
    let result = execute_slot_0(driver).expect("execute");
    match result.outcome {
        ExecOutcome::Exited { r0 } => r0,
        other => panic!("the kernel did not exit: {other:?}"),
    }
}

/// Runs `check` against a running-device server over a RAM device, on the socket of
/// `dir/dev.img`; the server stops whatever `check` does.
fn with_server(check: impl FnOnce(&Path)) {
    let geometry = geometry::small();
    let device = RamDevice::in_ram(
        geometry,
        geometry::zones_for(&geometry),
        DeviceOptions::default(),
    )
    .expect("a RAM device");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let image = dir.path().join("dev.img");
    let listener = UnixListener::bind(running::socket_path(&image)).expect("the socket");
    let server = running::Server::new(device.driver());
    let stop = server.stopper();
    std::thread::scope(|s| {
        s.spawn(|| server.run(listener, Duration::from_secs(5)).expect("serve"));

        // Stopped whatever the checks say, so that a failure ends the test.
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&image)));
        stop();
        if let Err(panic) = checked {
            std::panic::resume_unwind(panic);
        }
    });
}

#[test]
fn sessions_keep_their_slots_and_the_file_system_its_zones() {
    with_server(sessions);
}

/// The server keeps its last answer for a request sent again (a lost answer must not run a
/// command twice); a frame it refuses in between does not replace that answer.
#[test]
fn a_request_sent_again_after_a_refused_frame_gets_its_answer() {
    with_server(|image| {
        let (mut stream, _) = running::connect(image, &Session::Raw)
            .expect("connect")
            .expect("a running device");
        let (mut body, mut frame) = (vec![0u8; link::MAX_BODY_BYTES], vec![0u8; 4096]);
        let request = HostMessage::Request {
            submission: SubmissionEntry::of(&Submission::new(CommandId(9), Command::Flush), 0)
                .expect("a flush encodes"),
            host_len: 0,
            data: &[],
        };
        let len = link::encode(7, &request, &mut body, &mut frame).expect("encode");
        let sent = frame[..len].to_vec();
        let mut reader = FrameReader::new(vec![0u8; link::MAX_FRAME_BYTES]);
        let mut next = |stream: &mut std::os::unix::net::UnixStream| -> (u32, Vec<u8>) {
            let mut byte = [0u8; 1];
            loop {
                stream.read_exact(&mut byte).expect("a frame");
                if let Some(f) = reader.push(byte[0]) {
                    let f = f.expect("a good frame");
                    return (f.seq, f.message.to_vec());
                }
            }
        };
        stream.write_all(&sent).expect("send");
        let first = next(&mut stream);
        let answer: DeviceMessage<'_> = postcard::from_bytes(&first.1).expect("decode");
        assert!(
            matches!(answer, DeviceMessage::Response { .. }),
            "{answer:?}"
        );
        stream.write_all(&[0, 1, 2, 3, 0]).expect("send garbage");
        let (_, refused) = next(&mut stream);
        let refused: DeviceMessage<'_> = postcard::from_bytes(&refused).expect("decode");
        assert!(matches!(refused, DeviceMessage::Nak(_)), "{refused:?}");
        stream.write_all(&sent).expect("send again");
        assert_eq!(next(&mut stream), first, "the same answer, replayed");
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
    assert_eq!(
        run_slot_0(&a.driver()),
        65,
        "session a: its own kernel and range set"
    );
    assert_eq!(
        run_slot_0(&b.driver()),
        130,
        "session b: its own kernel and range set"
    );

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
    // Their slots were given back deactivated: a new session's slot 0 holds no kernel.
    let c = AttachedDevice::attach(image, &Session::Raw)
        .expect("attach")
        .expect("a running device");
    c.driver()
        .set_ranges(RangeSetId(0), &[], 0, 64)
        .expect("range set");
    let run = execute_slot_0(&c.driver());
    assert!(run.is_err(), "an ended session's kernel ran: {run:?}");
    c.detach();
}
