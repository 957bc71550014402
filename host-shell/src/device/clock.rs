//! The device's modeled time: its cores, its NAND and its link, on one clock.
//!
//! The NAND half is [`Timed`](crate::nand::timing::Timed): dies and channels busy for their
//! operations. This half adds the device's CPU ([`CpuModel`]): cores that run kernel slices for
//! a time computed from the slice's instruction counts (exact, from the executor) and the
//! preset's cycles per instruction class, never from the host's wall clock.
//!
//! The schedule, in modeled time:
//! - **The host** issues regular commands one after another: a command starts when the previous
//!   one ended (or when a kernel's completion reached the host, whichever is later), so
//!   modeled time is what a host thread issuing them back to back would see.
//! - **Regular commands** are served by the firmware on core 0 between kernel slices: a command
//!   that arrives while core 0 runs a slice waits for that slice to end (one slice at most).
//!   Its NAND operations then queue on their dies and channels, and its data crosses the link;
//!   it ends when the later of the two does.
//! - **Kernel slices** go, in the order the firmware runs them, to the core that is free first
//!   (core 0, the firmware's, last on a tie). A slice starts when its core is free and its run
//!   is ready (submitted, or its previous slice ended); it lasts its compute time or its NAND
//!   reads' time, whichever is longer (reads overlap compute, as a controller's DMA engines
//!   let them). A run's modeled time is from its submission to the end of its last slice.

use std::collections::{HashMap, VecDeque};

use common::{command::CommandId, program::RunStats};

/// Cycles per eBPF instruction of each class (see [`RunStats`]) on a device core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct InsnCycles {
    /// Arithmetic, moves, byte swaps, 64-bit immediates.
    pub alu: u64,
    /// Loads, stores, atomics.
    pub memory: u64,
    /// Jumps, taken or not.
    pub branch: u64,
    /// Helper and bpf-to-bpf calls, exits.
    pub call: u64,
}

/// A device's CPU: the cores that run kernels, and what an instruction costs on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CpuModel {
    /// The core, as the preset's sources name it.
    pub core: &'static str,
    /// Cores that run kernels (core 0 also serves regular commands between slices).
    pub cores: u32,
    /// Clock of each core, in Hz.
    pub clock_hz: u64,
    /// Cycles per instruction when the kernel is interpreted.
    pub interpreted: InsnCycles,
    /// Cycles per instruction when the kernel is compiled to the core's code.
    pub compiled: InsnCycles,
    /// Cycles of a helper call's own work (argument checks, the lookup of its region).
    pub helper_call_cycles: u64,
    /// Bytes a helper moves per cycle (its memory copy).
    pub helper_bytes_per_cycle: u64,
}

/// A device's whole timing: its NAND and link, and its CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceModel {
    pub nand: crate::nand::timing::TimingModel,
    pub cpu: CpuModel,
}

impl DeviceModel {
    /// No modeled time at all.
    pub const OFF: DeviceModel = DeviceModel {
        nand: crate::nand::timing::TimingModel::OFF,
        cpu: CpuModel::OFF,
    };
}

/// How kernels are executed on the device, for the cycles of their instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Execution {
    Interpreted,
    Compiled,
}

impl CpuModel {
    /// No CPU time at all (timing off).
    pub const OFF: CpuModel = CpuModel {
        core: "none",
        cores: 1,
        clock_hz: 0,
        interpreted: InsnCycles {
            alu: 0,
            memory: 0,
            branch: 0,
            call: 0,
        },
        compiled: InsnCycles {
            alu: 0,
            memory: 0,
            branch: 0,
            call: 0,
        },
        helper_call_cycles: 0,
        helper_bytes_per_cycle: 1,
    };

    /// Cycles of the work `stats` counts.
    pub fn cycles(&self, stats: &RunStats, execution: Execution) -> u64 {
        let c = match execution {
            Execution::Interpreted => self.interpreted,
            Execution::Compiled => self.compiled,
        };
        stats.alu_insns() * c.alu
            + stats.memory_insns * c.memory
            + stats.branch_insns * c.branch
            + stats.call_insns * c.call
            + stats.helper_calls * self.helper_call_cycles
            + stats
                .helper_bytes
                .div_ceil(self.helper_bytes_per_cycle.max(1))
    }

    /// Nanoseconds of `cycles` on one core (0 when the model is off).
    pub fn ns(&self, cycles: u64) -> u64 {
        if self.clock_hz == 0 {
            return 0;
        }
        (u128::from(cycles) * 1_000_000_000 / u128::from(self.clock_hz)) as u64
    }
}

/// What the clock modeled of one kernel run, in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunTime {
    /// From its submission to the end of its last slice.
    pub device_ns: u64,
    /// Its slices' compute on their cores.
    pub compute_ns: u64,
    /// Its NAND reads (overlapping its compute).
    pub nand_ns: u64,
}

#[derive(Debug, Default)]
struct Run {
    submitted_ns: u64,
    /// When its next slice may start: the end of its previous slice (or its submission).
    ready_ns: u64,
    /// Its counters at the end of its previous slice.
    counted: RunStats,
    compute_ns: u64,
    nand_ns: u64,
}

/// A slice in progress: where and when it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceStart {
    pub core: usize,
    pub start_ns: u64,
}

/// The device's clock. See the module docs.
#[derive(Debug)]
pub struct Clock {
    cpu: CpuModel,
    execution: Execution,
    link_bytes_per_s: u64,
    /// When the host's next regular command arrives.
    host_ns: u64,
    /// When each core is free.
    cores: Vec<u64>,
    /// Slices on core 0 that end after `host_ns`, in order: regular commands wait for the one
    /// they arrive in.
    firmware_slices: VecDeque<(u64, u64)>,
    runs: HashMap<(u16, CommandId), Run>,
    /// The latest modeled time anything reached.
    latest_ns: u64,
    /// The longest a regular command waited for core 0.
    max_wait_ns: u64,
    /// The longest slice core 0 ran.
    max_firmware_slice_ns: u64,
}

impl Clock {
    /// A clock for a device with `cpu`, executing kernels as `execution`, whose host link
    /// moves `link_bytes_per_s` (0: untimed), ready for commands at `ready_ns` (after its
    /// power-on recovery).
    pub fn new(cpu: CpuModel, execution: Execution, link_bytes_per_s: u64, ready_ns: u64) -> Self {
        Clock {
            cpu,
            execution,
            link_bytes_per_s,
            host_ns: ready_ns,
            cores: vec![ready_ns; cpu.cores.max(1) as usize],
            firmware_slices: VecDeque::new(),
            runs: HashMap::new(),
            latest_ns: ready_ns,
            max_wait_ns: 0,
            max_firmware_slice_ns: 0,
        }
    }

    /// Modeled time since power-on: the latest time anything reached.
    pub fn now_ns(&self) -> u64 {
        self.latest_ns.max(self.host_ns)
    }

    fn reach(&mut self, ns: u64) {
        self.latest_ns = self.latest_ns.max(ns);
    }

    /// When a regular command arriving now starts: the host's time, or the end of the slice
    /// core 0 is running then.
    pub fn command_start(&mut self) -> u64 {
        let at = self.host_ns;
        while self
            .firmware_slices
            .front()
            .is_some_and(|&(_, end)| end <= at)
        {
            self.firmware_slices.pop_front();
        }
        let start = match self.firmware_slices.front() {
            Some(&(start, end)) if start <= at => end,
            _ => at,
        };
        self.max_wait_ns = self.max_wait_ns.max(start - at);
        start
    }

    /// The longest a regular command has waited for core 0 (for a slice to end).
    pub fn max_wait_ns(&self) -> u64 {
        self.max_wait_ns
    }

    /// The longest slice core 0 has run: its compute, or its NAND reads when their dies were
    /// busy longer.
    pub fn max_firmware_slice_ns(&self) -> u64 {
        self.max_firmware_slice_ns
    }

    /// Ends a regular command that started at `start_ns`, whose NAND work ended at `nand_end_ns`
    /// and which moved `link_bytes` over the host link; returns its end.
    pub fn command_end(&mut self, start_ns: u64, nand_end_ns: u64, link_bytes: u64) -> u64 {
        let link = crate::nand::timing::TimingModel::transfer_ns(link_bytes, self.link_bytes_per_s);
        let end = nand_end_ns.max(start_ns + link);
        self.host_ns = self.host_ns.max(end);
        self.reach(end);
        end
    }

    /// A kernel run `(sqid, cid)` was submitted, ready to run at `at_ns`.
    pub fn submitted(&mut self, sqid: u16, cid: CommandId, at_ns: u64) {
        self.runs.insert(
            (sqid, cid),
            Run {
                submitted_ns: at_ns,
                ready_ns: at_ns,
                ..Run::default()
            },
        );
    }

    /// Where and when the next slice of run `(sqid, cid)` starts.
    pub fn slice_start(&self, sqid: u16, cid: CommandId) -> SliceStart {
        let ready = self
            .runs
            .get(&(sqid, cid))
            .map_or(self.host_ns, |r| r.ready_ns);
        // The first free core; on a tie the highest, so core 0 serves I/O as long as it can.
        let (core, free) = self
            .cores
            .iter()
            .copied()
            .enumerate()
            .rev()
            .min_by_key(|&(_, free)| free.max(ready))
            .unwrap_or((0, 0));
        SliceStart {
            core,
            start_ns: ready.max(free),
        }
    }

    /// Ends the slice of run `(sqid, cid)` that started at `slice`, whose NAND reads ended at
    /// `nand_end_ns`, with the run's counters `stats` (cumulative); returns the slice's end.
    pub fn slice_end(
        &mut self,
        sqid: u16,
        cid: CommandId,
        slice: SliceStart,
        nand_end_ns: u64,
        stats: &RunStats,
    ) -> u64 {
        let run = self.runs.entry((sqid, cid)).or_default();
        let delta = RunStats {
            instructions: stats.instructions - run.counted.instructions,
            memory_insns: stats.memory_insns - run.counted.memory_insns,
            branch_insns: stats.branch_insns - run.counted.branch_insns,
            call_insns: stats.call_insns - run.counted.call_insns,
            helper_calls: stats.helper_calls - run.counted.helper_calls,
            helper_bytes: stats.helper_bytes - run.counted.helper_bytes,
            ..RunStats::default()
        };
        run.counted = *stats;
        let compute = self.cpu.ns(self.cpu.cycles(&delta, self.execution));
        let nand = nand_end_ns.saturating_sub(slice.start_ns);
        let end = slice.start_ns + compute.max(nand);
        run.ready_ns = end;
        run.compute_ns += compute;
        run.nand_ns += nand;
        if let Some(free) = self.cores.get_mut(slice.core) {
            *free = end;
        }
        if slice.core == 0 && end > slice.start_ns {
            self.firmware_slices.push_back((slice.start_ns, end));
            self.max_firmware_slice_ns = self.max_firmware_slice_ns.max(end - slice.start_ns);
        }
        self.reach(end);
        end
    }

    /// Run `(sqid, cid)` completed and its completion reaches the host: the host's next
    /// command comes after it. Returns what the run took.
    pub fn finished(&mut self, sqid: u16, cid: CommandId) -> RunTime {
        let Some(run) = self.runs.remove(&(sqid, cid)) else {
            return RunTime::default();
        };
        self.host_ns = self.host_ns.max(run.ready_ns);
        RunTime {
            device_ns: run.ready_ns - run.submitted_ns,
            compute_ns: run.compute_ns,
            nand_ns: run.nand_ns,
        }
    }
}

#[cfg(test)]
mod tests {
    use firmware::nand::{sim::SimNand, Nand, PageAddr};

    use super::*;
    use crate::nand::timing::{
        fixtures::{geometry, MODEL},
        Timed,
    };

    /// 1 GHz, so a cycle is a nanosecond; interpreted: ALU 10, memory 20, branch 15, call 30
    /// cycles; a helper call 100 cycles and 4 bytes per cycle.
    const CPU: CpuModel = CpuModel {
        core: "test",
        cores: 1,
        clock_hz: 1_000_000_000,
        interpreted: InsnCycles {
            alu: 10,
            memory: 20,
            branch: 15,
            call: 30,
        },
        compiled: InsnCycles {
            alu: 1,
            memory: 2,
            branch: 2,
            call: 5,
        },
        helper_call_cycles: 100,
        helper_bytes_per_cycle: 4,
    };

    fn stats(alu: u64, memory: u64, branch: u64, call: u64) -> RunStats {
        RunStats {
            instructions: alu + memory + branch + call,
            memory_insns: memory,
            branch_insns: branch,
            call_insns: call,
            ..RunStats::default()
        }
    }

    const CID: CommandId = CommandId(7);

    /// A kernel of known classes on one core: 1000 ALU, 200 memory, 300 branch and 2 calls
    /// (one a helper call moving 4096 bytes) interpreted take
    /// 10,000 + 4,000 + 4,500 + 60 + 100 + 1,024 = 19,684 cycles, 19,684 ns at 1 GHz.
    #[test]
    fn a_kernel_of_known_classes_on_one_core() {
        let run = RunStats {
            helper_calls: 1,
            helper_bytes: 4096,
            ..stats(1000, 200, 300, 2)
        };
        assert_eq!(CPU.cycles(&run, Execution::Interpreted), 19_684);
        // Compiled: 1,000 + 400 + 600 + 10 + 100 + 1,024.
        assert_eq!(CPU.cycles(&run, Execution::Compiled), 3_134);
        let mut clock = Clock::new(CPU, Execution::Interpreted, 0, 0);
        clock.submitted(1, CID, 500);
        let slice = clock.slice_start(1, CID);
        assert_eq!(
            slice,
            SliceStart {
                core: 0,
                start_ns: 500
            }
        );
        // No NAND reads: the slice is its compute.
        assert_eq!(clock.slice_end(1, CID, slice, 500, &run), 500 + 19_684);
        let time = clock.finished(1, CID);
        assert_eq!(
            time,
            RunTime {
                device_ns: 19_684,
                compute_ns: 19_684,
                nand_ns: 0
            }
        );
        // The host's next command comes after the completion.
        assert_eq!(clock.command_start(), 500 + 19_684);
    }

    /// Two kernels on two cores run side by side; on one core, one after the other, their
    /// slices taking turns.
    #[test]
    fn two_kernels_on_two_cores() {
        let slice = stats(1000, 0, 0, 0); // 10,000 ns a slice
        let twice = stats(2000, 0, 0, 0);
        for (cores, want_end) in [(2, 20_000), (1, 40_000)] {
            let mut clock = Clock::new(CpuModel { cores, ..CPU }, Execution::Interpreted, 0, 0);
            let (a, b) = (CommandId(1), CommandId(2));
            clock.submitted(0, a, 0);
            clock.submitted(0, b, 0);
            // Two slices each, in turns: a, b, a, b.
            for (cid, counters) in [(a, &slice), (b, &slice), (a, &twice), (b, &twice)] {
                let at = clock.slice_start(0, cid);
                clock.slice_end(0, cid, at, at.start_ns, counters);
            }
            let (ta, tb) = (clock.finished(0, a), clock.finished(0, b));
            assert_eq!(ta.compute_ns, 20_000);
            assert_eq!(tb.compute_ns, 20_000);
            assert_eq!(ta.device_ns.max(tb.device_ns), want_end, "{cores} core(s)");
            assert_eq!(clock.now_ns(), want_end);
        }
    }

    /// A slice's reads overlap its compute: the slice lasts the longer of the two.
    #[test]
    fn reads_overlap_compute() {
        let g = geometry();
        let mut nand = Timed::new(SimNand::new(g), MODEL);
        let mut clock = Clock::new(CPU, Execution::Interpreted, 0, 0);
        let (mut data, mut spare) = (vec![0u8; 4096], vec![0u8; 64]);
        clock.submitted(0, CID, 0);
        // Slice 1: two reads on one die (100 us) under 30 us of compute: 100 us.
        let at = clock.slice_start(0, CID);
        nand.start_at(at.start_ns);
        for page in 0..2 {
            let addr = PageAddr {
                block: g.block(0, 0),
                page,
            };
            nand.read_page(addr, &mut data, &mut spare).unwrap();
        }
        let first = stats(3000, 0, 0, 0);
        assert_eq!(
            clock.slice_end(0, CID, at, nand.finished_ns(), &first),
            100_000
        );
        // Slice 2: one read (50 us) under 80 us of compute: 80 us.
        let at = clock.slice_start(0, CID);
        assert_eq!(at.start_ns, 100_000);
        nand.start_at(at.start_ns);
        let addr = PageAddr {
            block: g.block(1, 0),
            page: 0,
        };
        nand.read_page(addr, &mut data, &mut spare).unwrap();
        let second = stats(3000 + 8000, 0, 0, 0);
        assert_eq!(
            clock.slice_end(0, CID, at, nand.finished_ns(), &second),
            180_000
        );
        assert_eq!(
            clock.finished(0, CID),
            RunTime {
                device_ns: 180_000,
                compute_ns: 110_000,
                nand_ns: 150_000
            }
        );
    }

    /// A regular command arriving while core 0 runs a slice waits for that slice, and only
    /// that one; its own NAND and link time follow.
    #[test]
    fn io_waits_for_the_slice_in_progress() {
        let g = geometry();
        let mut nand = Timed::new(SimNand::new(g), MODEL);
        // 4096 bytes per 4 us over the link.
        let mut clock = Clock::new(CPU, Execution::Interpreted, 1_024_000_000, 0);
        let (mut data, mut spare) = (vec![0u8; 4096], vec![0u8; 64]);
        clock.submitted(0, CID, 0);
        // Three 1 ms slices on the one core: 0-1 ms, 1-2 ms, 2-3 ms.
        for n in 1..=3 {
            let at = clock.slice_start(0, CID);
            clock.slice_end(0, CID, at, at.start_ns, &stats(100_000 * n, 0, 0, 0));
        }
        // The host's clock is at 0, inside the first slice: the read starts at 1 ms, reads a
        // page (50 us) and sends it (4 us, overlapping): it ends at 1.05 ms.
        let start = clock.command_start();
        assert_eq!(start, 1_000_000);
        nand.start_at(start);
        let addr = PageAddr {
            block: g.block(2, 0),
            page: 0,
        };
        nand.read_page(addr, &mut data, &mut spare).unwrap();
        assert_eq!(
            clock.command_end(start, nand.finished_ns(), 4096),
            1_050_000
        );
        // The next one arrives at 1.05 ms, in the second slice: it waits until 2 ms, and a
        // command without NAND work takes its link time.
        let start = clock.command_start();
        assert_eq!(start, 2_000_000);
        assert_eq!(clock.command_end(start, start, 4096), 2_004_000);
        // The first waited a whole slice (it arrived as the slice began).
        assert_eq!(clock.max_wait_ns(), 1_000_000);
        assert_eq!(clock.max_firmware_slice_ns(), 1_000_000);
        // After the slices, nothing to wait for.
        clock.finished(0, CID);
        assert_eq!(clock.command_start(), 3_000_000);
    }
}
