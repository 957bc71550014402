//! `offload.crossover`: does offloading pay off, and from how many devices? The model of
//! docs/TIMING.md ("When the offload pays off"), fed with this run's figures:
//!
//! N devices each hold `S` bytes to process. The regular way moves every byte over the one
//! host link (`L`), through host memory (twice: the DMA in, the CPU reading it; `M` is this
//! machine's memcpy bandwidth) and through the host's cores (`H`: the native kernel's measured
//! throughput times the host's cores). Offloaded, every device runs the kernel over its own
//! bytes on its own cores (`k` cores at `f` Hz, `c` cycles per byte from the kernel's exact
//! instruction classes and the preset's cycles), in parallel with the others, and only the
//! results cross the link. Both read the NAND at the device's internal bandwidth `B`:
//!
//! ```text
//! T_regular(N) = max(S / B, N * S / min(L, M / 2, H))
//! T_offload(N) = max(S / B, S * c / (k * f)) + N * R / L      (R: result bytes per device)
//! ```
//!
//! The offload finishes first from N* = min(L, M/2, H) / min(B, k f / c) devices on.

use common::program::RunStats;
use host_shell::{
    device::clock::{CpuModel, Execution},
    nand::preset::{self, Preset},
};
use serde::Serialize;

/// The largest number of devices considered.
pub const MAX_DEVICES: u64 = 4096;

/// One device CPU and execution.
#[derive(Debug, Serialize)]
pub struct Line {
    /// The first preset with this CPU.
    pub preset: &'static str,
    pub core: &'static str,
    pub cores: u32,
    pub clock_hz: u64,
    pub execution: &'static str,
    /// Device cycles per input byte of the kernel.
    pub cycles_per_byte: f64,
    /// Bytes per second one device processes (its cores together, or its NAND if slower).
    pub device_bytes_per_s: f64,
    /// Seconds for one device's share when offloaded, at N = 1.
    pub offload_s: f64,
    /// The fewest devices from which the offload finishes first (none up to MAX_DEVICES).
    pub crossover_devices: Option<u64>,
}

/// The model's inputs and its answer per device CPU.
#[derive(Debug, Serialize)]
pub struct Crossover {
    pub kernel: &'static str,
    /// `S`: bytes each device holds.
    pub data_bytes_per_device: u64,
    /// `R`: result bytes per device.
    pub result_bytes: u64,
    /// `L`: the host link (the zn540 preset's).
    pub link_bytes_per_s: f64,
    /// `M`: this machine's memcpy bandwidth.
    pub host_memcpy_bytes_per_s: f64,
    /// `H`: the native kernel on all of this machine's cores.
    pub host_compute_bytes_per_s: f64,
    pub host_cores: usize,
    /// `B`: the device's internal NAND read bandwidth (zn540).
    pub nand_bytes_per_s: f64,
    /// Seconds of the regular way at N = 1.
    pub regular_s: f64,
    pub lines: Vec<Line>,
}

impl Crossover {
    /// The regular way's time for `n` devices.
    pub fn regular_at(&self, n: u64) -> f64 {
        let s = self.data_bytes_per_device as f64;
        let host = self
            .link_bytes_per_s
            .min(self.host_memcpy_bytes_per_s / 2.0)
            .min(self.host_compute_bytes_per_s);
        (s / self.nand_bytes_per_s).max(n as f64 * s / host)
    }

    /// The offloaded way's time for `n` devices with `line`'s CPU.
    pub fn offload_at(&self, line: &Line, n: u64) -> f64 {
        line.offload_s + n as f64 * self.result_bytes as f64 / self.link_bytes_per_s
    }
}

/// The NAND read bandwidth inside a device of `preset`: every die reading pages back to back,
/// or the channels, whichever is less.
fn nand_bytes_per_s(preset: Preset) -> f64 {
    let g = preset
        .geometry(preset.default_capacity())
        .expect("a preset's default capacity fits it");
    let t = preset.timing();
    let page = f64::from(g.page_bytes);
    let dies = f64::from(g.dies()) * page / (t.read_ns as f64 / 1e9);
    let channels = f64::from(g.channels) * t.channel_bytes_per_s as f64;
    dies.min(channels)
}

/// The model for a kernel whose run over `data_bytes` counted `run`, and which the host
/// computes natively in `native_s` on one core.
pub fn model(
    kernel: &'static str,
    run: &RunStats,
    data_bytes: u64,
    native_s: f64,
    memcpy_bytes_per_s: f64,
    data_bytes_per_device: u64,
) -> Crossover {
    let host_cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let zn540 = Preset::Zn540;
    let mut c = Crossover {
        kernel,
        data_bytes_per_device,
        result_bytes: run.bytes_returned,
        link_bytes_per_s: zn540.timing().link_bytes_per_s as f64,
        host_memcpy_bytes_per_s: memcpy_bytes_per_s,
        host_compute_bytes_per_s: data_bytes as f64 / native_s * host_cores as f64,
        host_cores,
        nand_bytes_per_s: nand_bytes_per_s(zn540),
        regular_s: 0.0,
        lines: Vec::new(),
    };
    c.regular_s = c.regular_at(1);
    let mut cpus: Vec<(Preset, CpuModel)> = Vec::new();
    for p in preset::ALL {
        if !cpus.iter().any(|(_, cpu)| *cpu == p.cpu()) {
            cpus.push((p, p.cpu()));
        }
    }
    let s = data_bytes_per_device as f64;
    for (p, cpu) in cpus {
        for (execution, name) in [
            (Execution::Interpreted, "interpreted"),
            (Execution::Compiled, "compiled"),
        ] {
            let cycles_per_byte = cpu.cycles(run, execution) as f64 / data_bytes as f64;
            let compute = f64::from(cpu.cores) * cpu.clock_hz as f64 / cycles_per_byte;
            let device_bytes_per_s = compute.min(c.nand_bytes_per_s);
            let mut line = Line {
                preset: p.name(),
                core: cpu.core,
                cores: cpu.cores,
                clock_hz: cpu.clock_hz,
                execution: name,
                cycles_per_byte,
                device_bytes_per_s,
                offload_s: s / device_bytes_per_s,
                crossover_devices: None,
            };
            line.crossover_devices =
                (1..=MAX_DEVICES).find(|&n| c.offload_at(&line, n) <= c.regular_at(n));
            c.lines.push(line);
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The crossover of a hand-computed case: 1 GB/s on the host side, devices at 10 MB/s of
    /// compute, 1 GiB each: N* = 100 (the result bytes are negligible).
    #[test]
    fn the_crossover_of_a_hand_computed_case() {
        let mut c = Crossover {
            kernel: "k",
            data_bytes_per_device: 1 << 30,
            result_bytes: 0,
            link_bytes_per_s: 1e9,
            host_memcpy_bytes_per_s: 1e12,
            host_compute_bytes_per_s: 1e12,
            host_cores: 1,
            nand_bytes_per_s: 1e12,
            regular_s: 0.0,
            lines: Vec::new(),
        };
        let line = Line {
            preset: "p",
            core: "c",
            cores: 1,
            clock_hz: 1,
            execution: "interpreted",
            cycles_per_byte: 1.0,
            device_bytes_per_s: 1e7,
            offload_s: (1u64 << 30) as f64 / 1e7,
            crossover_devices: None,
        };
        assert!(c.offload_at(&line, 99) > c.regular_at(99));
        assert!(c.offload_at(&line, 100) <= c.regular_at(100));
        // Host compute slower than the link: it binds instead.
        c.host_compute_bytes_per_s = 5e8;
        assert!(c.offload_at(&line, 49) > c.regular_at(49));
        assert!(c.offload_at(&line, 50) <= c.regular_at(50));
    }
}
