//! Modeled device time on the in-process device: kernels on the preset's cores side by side,
//! their compute from their instruction counts, and regular I/O waiting at most one slice.

use common::{
    program::{ExecResult, ProgramSlot, RangeSetId},
    LBA_BYTES,
};
use firmware::controller::ProgramConfig;
use host_shell::{
    device::{
        clock::{DeviceModel, Execution},
        DeviceOptions, ExecutorKind, RamDevice, Timing,
    },
    driver::Driver,
    nand::preset::Preset,
};
use testkit::geometry;

/// `turns` turns of a two-instruction loop: `turns + 2` ALU instructions, `turns` branches and
/// one exit, no memory access or helper.
fn spin(turns: u32) -> String {
    format!("mov64 r1, 0\nadd64 r1, 1\njlt r1, {turns}, -2\nmov64 r0, 0\nexit\n")
}

fn device(model: DeviceModel, executor: ExecutorKind) -> RamDevice {
    let geometry = geometry::small();
    let options = DeviceOptions {
        timing: Timing::Model(model),
        executor,
        ..DeviceOptions::default()
    };
    RamDevice::in_ram(geometry, geometry::zones_for(&geometry), options).expect("device")
}

/// Loads a loop of `turns` into slot 0 and defines range sets 0 to 3 (empty files).
fn prepare(driver: &Driver, turns: u32) {
    let text = rbpf::assembler::assemble(&spin(turns)).expect("assembles");
    driver
        .load_program(ProgramSlot(0), &firmware::ebpf::encode_image(&text, &[]))
        .expect("load");
    driver.activate(ProgramSlot(0), true).expect("activate");
    for set in 0..4 {
        driver
            .set_ranges(RangeSetId(set), &[], 0, 64)
            .expect("ranges");
    }
}

fn run(driver: &Driver, set: u16) -> ExecResult {
    driver
        .execute(testkit::programs::slot_0_file_job(set, 0), Vec::new())
        .expect("execute")
}

/// The loop's compute is its instruction classes times the preset's cycles, at its clock, in
/// the column of the executor that ran it (interpreted or compiled); a run without NAND reads
/// takes its compute and reads nothing. Both executors count the same classes.
#[test]
fn compute_follows_the_instruction_classes() {
    let model = Preset::Small.model();
    for (executor, execution, c) in [
        (
            ExecutorKind::Interp,
            Execution::Interpreted,
            model.cpu.interpreted,
        ),
        (ExecutorKind::Jit, Execution::Compiled, model.cpu.compiled),
    ] {
        let device = device(model, executor);
        let driver = device.driver();
        prepare(&driver, 100_000);
        let stats = run(&driver, 0).stats;
        assert_eq!(stats.jit, executor == ExecutorKind::Jit);
        assert_eq!(
            (
                stats.alu_insns(),
                stats.branch_insns,
                stats.call_insns,
                stats.memory_insns
            ),
            (100_002, 100_000, 1, 0)
        );
        let cycles = 100_002 * c.alu + 100_000 * c.branch + c.call;
        assert_eq!(model.cpu.cycles(&stats, execution), cycles);
        let want = cycles * 1_000_000_000 / model.cpu.clock_hz;
        // Summed per slice, each rounded down to the nanosecond.
        let slices = stats
            .fuel_used
            .div_ceil(ProgramConfig::default().slice_fuel);
        assert!(
            (want - slices..=want).contains(&stats.device_compute_ns),
            "{executor}: compute {} ns, want {want}",
            stats.device_compute_ns
        );
        assert_eq!(stats.device_nand_ns, 0);
        assert!(stats.device_ns >= stats.device_compute_ns);
        device.close().expect("closes");
    }
}

/// Four runs at once on a four-core preset take about a quarter of the modeled time of the
/// same four one after another; on one core, about the same. With a thread reading blocks
/// meanwhile, no read waits for the firmware's core longer than one slice.
///
/// The runs are long (4 million instructions, interpreted) and start together, so none
/// completes before the last is submitted; the ratios are measured without the reader, whose
/// commands move the host's clock (docs/TIMING.md: events take their modeled times in the
/// emulator's order).
#[test]
fn four_kernels_share_four_cores() {
    for cores in [4, 1] {
        let mut model = Preset::Small.model();
        model.cpu.cores = cores;
        let device = device(model, ExecutorKind::Interp);
        let driver = device.driver();
        prepare(&driver, 2_000_000);
        let zone = driver.all_zones().expect("zones")[1].zslba;
        driver
            .append(zone, vec![7; LBA_BYTES as usize])
            .expect("append");
        // Four runs at once; with `read`, a thread reads a block until they all finished.
        let at_once = |read: bool| {
            // The four runs and the reader start together.
            let start = std::sync::Barrier::new(5);
            std::thread::scope(|s| {
                let runs: Vec<_> = (0..4)
                    .map(|set| {
                        let driver = device.driver_on(set + 1);
                        let start = &start;
                        s.spawn(move || {
                            start.wait();
                            run(&driver, set).stats.device_ns
                        })
                    })
                    .collect();
                let reader = device.driver_on(6);
                start.wait();
                while read && !runs.iter().all(|r| r.is_finished()) {
                    assert!(reader.read(zone, 1).expect("read").iter().all(|&b| b == 7));
                }
                runs.into_iter()
                    .map(|r| r.join().expect("run"))
                    .max()
                    .expect("four runs")
            })
        };

        let one_after_another: u64 = (0..4).map(|set| run(&driver, set).stats.device_ns).sum();
        let together = at_once(false);
        let ratio = together as f64 / one_after_another as f64;
        let want = if cores == 4 { 0.2..0.3 } else { 0.95..1.05 };
        assert!(
            want.contains(&ratio),
            "{cores} core(s): four at once took {together} ns, one after another {one_after_another} ns"
        );

        at_once(true);
        // The longest slice: the slice's fuel at the dearest instruction class.
        let c = model.cpu.interpreted;
        let dearest = c.alu.max(c.branch).max(c.memory).max(c.call);
        let slice_ns =
            ProgramConfig::default().slice_fuel * dearest * 1_000_000_000 / model.cpu.clock_hz;
        let stats = device.stats();
        let waited = stats.modeled_wait_max_ns;
        assert!(
            waited <= slice_ns,
            "{cores} core(s): a read waited {waited} ns for the firmware's core, a slice is at most {slice_ns} ns"
        );
        // On one core every slice is core 0's. (Whether a read waits depends on where the
        // host's clock stands when the emulator serves it: `device::clock`'s tests pin the
        // waiting itself.)
        if cores == 1 {
            let longest = stats.modeled_slice_max_ns;
            assert!(
                longest > 0 && longest <= slice_ns,
                "the firmware's core ran slices of up to {longest} ns, a slice is at most {slice_ns} ns"
            );
        }
        device.close().expect("closes");
    }
}
