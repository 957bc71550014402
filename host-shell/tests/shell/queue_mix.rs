//! Mixed commands on several queues at once: a long kernel on one queue must not hold up reads
//! and appends on the others (the controller runs kernels in fuel-bounded slices and serves I/O
//! between them), and every completion goes back to the command that asked for it.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use common::{
    program::{ExecFault, ExecOutcome, ProgramSlot, RangeSetId},
    LBA_BYTES,
};
use host_shell::device::{DeviceOptions, ExecutorKind, RamDevice};
use testkit::geometry;

/// A kernel that never exits on its own: it counts until its fuel runs out.
const ENDLESS: &str = "mov64 r0, 0\nadd64 r0, 1\nja -2\nexit\n";

/// While a kernel burns 100 million fuel (about 95 slices) on queue 3, three threads append and read on queues
/// 0 to 2; their commands all complete, correctly, before the kernel does. (Each I/O command
/// waits for at most one slice, so 8 commands per queue need about 8 of the kernel's slices.)
/// The interpreter runs it: the JIT would burn the fuel before the I/O threads start, and
/// the scheduling between slices is the same under both.
#[test]
fn io_runs_beside_a_long_kernel() {
    let geometry = geometry::small();
    let device = RamDevice::in_ram(
        geometry,
        geometry::zones_for(&geometry),
        DeviceOptions {
            executor: ExecutorKind::Interp,
            ..DeviceOptions::default()
        },
    )
    .unwrap();
    let zones = device.driver().all_zones().unwrap();
    let text = rbpf::assembler::assemble(ENDLESS).unwrap();
    let kernel = device.driver_on(3);
    kernel
        .load_program(ProgramSlot(0), &firmware::ebpf::encode_image(&text, &[]))
        .unwrap();
    kernel.activate(ProgramSlot(0), true).unwrap();
    kernel.set_ranges(RangeSetId(0), &[], 0, 64).unwrap();

    let kernel_done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let result = kernel
                .execute(
                    testkit::programs::slot_0_file_job(0, 100_000_000),
                    Vec::new(),
                )
                .unwrap();
            kernel_done.store(true, Ordering::SeqCst);
            assert_eq!(result.outcome, ExecOutcome::Faulted(ExecFault::OutOfFuel));
            assert_eq!(result.stats.fuel_used, 100_000_000);
        });
        // Let the kernel start its first slice.
        std::thread::sleep(Duration::from_millis(20));
        let io: Vec<_> = (0..3u16)
            .map(|t| {
                let driver = device.driver_on(t);
                let zslba = zones[usize::from(t) + 1].zslba;
                let kernel_done = &kernel_done;
                s.spawn(move || {
                    for i in 0..4u8 {
                        let block = vec![t as u8 * 16 + i; LBA_BYTES as usize];
                        assert_eq!(driver.append(zslba, block).unwrap(), zslba + u64::from(i));
                        let back = driver.read(zslba + u64::from(i), 1).unwrap();
                        assert!(back.iter().all(|&b| b == t as u8 * 16 + i));
                    }
                    assert!(
                        !kernel_done.load(Ordering::SeqCst),
                        "queue {t}'s I/O waited for the kernel"
                    );
                })
            })
            .collect();
        for handle in io {
            handle.join().unwrap();
        }
    });
}
