//! The offload engine on an in-process device: its pool follows the device's Identify, the
//! device's verifier says why it refused a kernel, and a run sends only what the lease does
//! not hold yet.

use common::load_error::{LoadError, VerifyError};
use common::program::{ExecOutcome, ProgramOp, ProgramResources};
use firmware::controller::ProgramConfig;
use firmware::zns::ZoneConfig;
use host_shell::{
    device::{DeviceOptions, RamDevice},
    offload::{Engine, Job, Kernel, Ranges, RunError},
};

fn device(programs: ProgramConfig) -> RamDevice {
    let geometry = testkit::geometry::small();
    let options = DeviceOptions {
        programs,
        ..DeviceOptions::default()
    };
    RamDevice::in_ram(geometry, ZoneConfig::for_geometry(&geometry), options).expect("device")
}

/// A kernel from eBPF assembler text.
fn kernel(name: &str, source: &str) -> Kernel {
    let text = rbpf::assembler::assemble(source).expect("assembles");
    Kernel::from_image(name, firmware::ebpf::encode_image(&text, &[]))
}

fn job() -> Job {
    Job {
        op: ProgramOp::FileJob,
        offset: 0,
        len: 0,
        params: (0, 0),
        fuel: 0,
        input: Vec::new(),
        max_output: 4096,
    }
}

fn exited(result: &common::program::ExecResult, _log: &[Vec<u8>]) -> Result<bool, RunError> {
    Ok(matches!(result.outcome, ExecOutcome::Exited { .. }))
}

/// Identify reports the controller's slots and range sets, and the engine leases exactly
/// those: one more is Busy until a lease comes back.
#[test]
fn the_pool_is_what_identify_reports() {
    let config = ProgramConfig {
        slots: 2,
        range_sets: 3,
        ..ProgramConfig::default()
    };
    let device = device(config);
    let driver = device.driver();
    let reported = ProgramResources {
        slots: 2,
        range_sets: 3,
        max_extents: config.max_extents,
        max_output_bytes: config.max_output_bytes,
    };
    assert_eq!(driver.info().programs, reported);
    assert_eq!(driver.identify().expect("identify").programs, reported);
    let engine = Engine::new(driver);
    assert_eq!(engine.resources(), reported);
    let a = engine.lease().expect("first slot");
    let b = engine.lease().expect("second slot");
    assert_eq!((a.slot().0, b.slot().0), (0, 1), "lowest ids first");
    assert!(engine.lease().is_err(), "a third lease finds no slot");
    engine.release(a).expect("deactivated");
    let c = engine.lease().expect("a slot came back");
    assert_eq!(c.slot().0, 0);
    engine.release(b).expect("deactivated");
    engine.release(c).expect("deactivated");
    device.close().expect("closes");
}

/// A kernel the device's verifier refuses fails its run with the device's own reason.
#[test]
fn the_rejection_reason_comes_from_the_device() {
    let device = device(ProgramConfig::default());
    let engine = Engine::new(device.driver());
    let mut lease = engine.lease().expect("a slot");
    let bad = kernel("bad", "mov64 r0, 0\ncall 99\nexit");
    let ranges = Ranges::raw(Vec::new(), 0, 4096);
    let err = engine
        .run(&mut lease, &bad, &ranges, job(), exited)
        .expect_err("rejected");
    let RunError::Rejected { kernel, reason } = err else {
        panic!("not a rejection: {err}");
    };
    assert_eq!(kernel, "bad");
    assert!(matches!(
        reason,
        LoadError::Verify(VerifyError::UnknownHelper { pc: 1, id: 99 })
    ));
    engine.release(lease).expect("deactivated");
    device.close().expect("closes");
}

/// An empty image, or one past the ABI's size limits, which the device refuses before it
/// holds it to verify, is rejected in the loader's and verifier's words.
#[test]
fn an_oversized_image_names_what_is_too_large() {
    let device = device(ProgramConfig::default());
    let driver = device.driver();
    let insns = common::abi::MAX_PROGRAM_INSNS + 10;
    let text: Vec<u8> = (0..insns)
        .flat_map(|_| [0x95, 0, 0, 0, 0, 0, 0, 0])
        .collect();
    let image = firmware::ebpf::encode_image(&text, &[]);
    let err = driver
        .load_program(common::program::ProgramSlot(0), &image)
        .expect_err("too large");
    assert!(
        matches!(
            err,
            host_shell::driver::DriverError::Rejected(LoadError::Verify(VerifyError::TooLarge {
                insns: n
            })) if n == insns
        ),
        "{err}"
    );
    assert!(err.to_string().contains(&insns.to_string()), "{err}");
    let rodata = vec![0u8; common::abi::MAX_RODATA_BYTES as usize + 4096];
    let text: Vec<u8> = (0..common::abi::MAX_PROGRAM_INSNS)
        .flat_map(|_| [0x95, 0, 0, 0, 0, 0, 0, 0])
        .collect();
    let image = firmware::ebpf::encode_image(&text, &rodata);
    let err = driver
        .load_program(common::program::ProgramSlot(0), &image)
        .expect_err("too much read-only data");
    assert!(
        matches!(
            err,
            host_shell::driver::DriverError::Rejected(LoadError::RodataTooLarge { .. })
        ),
        "{err}"
    );
    // Past the limit and not an image at all: the loader's first complaint, as the device's.
    let mut not_an_image = image;
    not_an_image[..4].copy_from_slice(b"ELF!");
    let err = driver
        .load_program(common::program::ProgramSlot(0), &not_an_image)
        .expect_err("not an image");
    assert!(
        matches!(
            err,
            host_shell::driver::DriverError::Rejected(LoadError::BadMagic { .. })
        ),
        "{err}"
    );
    let err = driver
        .load_program(common::program::ProgramSlot(0), &[])
        .expect_err("empty");
    assert!(
        matches!(
            err,
            host_shell::driver::DriverError::Rejected(LoadError::TooShort { len: 0 })
        ),
        "{err}"
    );
    device.close().expect("closes");
}

/// The first run loads, activates and defines the range set; the next run of the same kernel
/// over the same ranges only executes; new ranges are defined again, a new kernel loaded.
#[test]
fn a_run_sends_only_what_the_lease_lacks() {
    let device = device(ProgramConfig::default());
    let engine = Engine::new(device.driver());
    let mut lease = engine.lease().expect("a slot");
    let seven = kernel("seven", "mov64 r0, 7\nexit");
    let ranges = Ranges::raw(Vec::new(), 0, 4096);
    let mut run = |k: &Kernel, r: &Ranges| {
        let before = device.stats().commands;
        let ran = engine.run(&mut lease, k, r, job(), exited).expect("runs");
        (ran.result.outcome, device.stats().commands - before)
    };
    let seven_exit = ExecOutcome::Exited { r0: 7 };
    assert_eq!(
        run(&seven, &ranges),
        (seven_exit, 4),
        "load, activate, ranges, execute"
    );
    assert_eq!(run(&seven, &ranges), (seven_exit, 1), "execute only");
    let other = Ranges::raw(Vec::new(), 0, 4096);
    assert_eq!(run(&seven, &other), (seven_exit, 2), "ranges, execute");
    let eight = kernel("eight", "mov64 r0, 8\nexit");
    assert_eq!(
        run(&eight, &other),
        (ExecOutcome::Exited { r0: 8 }, 3),
        "load, activate, execute"
    );
    engine.release(lease).expect("deactivated");
    device.close().expect("closes");
}
