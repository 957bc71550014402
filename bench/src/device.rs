//! `device.append`: Zone Append and Read through the device's queues against a plain memcpy of
//! the same bytes in the same pieces, measured in one run. `device.queue_latency`: a 4 KiB read
//! through the driver and its queue pair against the same read submitted to the controller
//! directly, one at a time.
//!
//! The device is in RAM with timing off, so the figures are the cost of the host shell itself:
//! the queue pairs, the device thread, the controller, the zone manager and the strict NAND
//! emulator. Appends are the device's append limit (128 KiB), reads its transfer limit
//! (256 KiB). Each of the four queue pairs is driven by its own thread, on its own zones.

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use common::{
    command::{Command, CommandId, Submission},
    LBA_BYTES,
};
use firmware::{
    controller::{Controller, ProgramConfig, SliceDma},
    nand::sim::SimNand,
    zns::{ZoneConfig, ZoneManager},
};
use serde::Serialize;

use crate::report::Spread;
use host_shell::{
    device::{DeviceOptions, RamDevice},
    nand::{
        preset::Preset,
        timing::{Timed, TimingModel},
    },
};

const QUEUES: u16 = 4;

/// Append and read against memcpy, bytes per second.
#[derive(Debug, Serialize)]
pub struct Figures {
    pub data_bytes: u64,
    pub queues: u16,
    pub append_bytes: u64,
    pub read_bytes: u64,
    pub append: Spread,
    pub memcpy_in: Spread,
    pub read: Spread,
    pub memcpy_out: Spread,
    /// Append throughput / memcpy throughput (medians).
    pub ratio_vs_memcpy: f64,
    pub read_ratio_vs_memcpy: f64,
}

/// Nanoseconds per 4 KiB read, one at a time, through the queues and directly.
#[derive(Debug, Serialize)]
pub struct QueueLatency {
    pub reads: u64,
    /// `Driver::read` of one block: the queue pair, the controller (taken by the submitting
    /// thread when it is idle), the completion.
    pub queued_ns: Spread,
    /// `Controller::submit` of the same Read on an identical device, in the calling thread.
    pub direct_ns: Spread,
    /// What the queues add to a read (medians).
    pub overhead_ns: f64,
}

#[derive(Debug, Serialize)]
pub struct Device {
    pub append: Figures,
    pub queue_latency: QueueLatency,
}

fn per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64()
}

/// Measures `mib` MiB `reps` times.
pub fn run(mib: u64, reps: usize) -> anyhow::Result<Device> {
    let mut samples = [vec![], vec![], vec![], vec![]];
    let mut shape = (0, 0, 0);
    for _ in 0..reps {
        let (one, bytes, append_bytes, read_bytes) = once(mib)?;
        for (s, v) in samples.iter_mut().zip(one) {
            s.push(v);
        }
        shape = (bytes, append_bytes, read_bytes);
    }
    let [append, memcpy_in, read, memcpy_out] = samples.map(|s| Spread::of(&s));
    let reads = mib * 1024;
    let (mut queued, mut direct) = (vec![], vec![]);
    for _ in 0..reps {
        let (q, d) = latency_once(reads)?;
        queued.push(q);
        direct.push(d);
    }
    let (queued_ns, direct_ns) = (Spread::of(&queued), Spread::of(&direct));
    Ok(Device {
        queue_latency: QueueLatency {
            reads,
            overhead_ns: queued_ns.median - direct_ns.median,
            queued_ns,
            direct_ns,
        },
        append: Figures {
            data_bytes: shape.0,
            queues: QUEUES,
            append_bytes: shape.1,
            read_bytes: shape.2,
            ratio_vs_memcpy: append.median / memcpy_in.median,
            read_ratio_vs_memcpy: read.median / memcpy_out.median,
            append,
            memcpy_in,
            read,
            memcpy_out,
        },
    })
}

/// One run: append, read, memcpy in, memcpy out (bytes per second), the bytes, the pieces.
fn once(mib: u64) -> anyhow::Result<([f64; 4], u64, u64, u64)> {
    let total = mib << 20;
    // Room for the data plus the metadata and spare blocks, in whole 1 MiB block stripes.
    let geometry = Preset::Small.geometry((mib + mib / 8 + 16) << 20)?;
    let zones = ZoneConfig::for_geometry(&geometry);
    let options = DeviceOptions {
        queues: QUEUES,
        ..DeviceOptions::default()
    };
    let device = RamDevice::in_ram(geometry, zones, options)?;
    let info = device.identify();
    let append_bytes = info.zasl_lbas as usize * LBA_BYTES as usize;
    let read_lbas = u64::from(info.mdts_lbas);
    let zone_bytes = info.zone_cap_lbas * u64::from(LBA_BYTES);
    let zones_needed = total.div_ceil(zone_bytes);
    anyhow::ensure!(
        zones_needed <= u64::from(info.nr_zones),
        "the device has too few zones"
    );
    let source: Vec<u8> = (0..append_bytes).map(|i| (i * 7 + 3) as u8).collect();

    // Appends: thread t fills zones t, t+4, t+8, ... in append-limit pieces.
    let zone_list = |t: u16| (u64::from(t)..zones_needed).step_by(usize::from(QUEUES));
    let start = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let handles: Vec<_> = (0..QUEUES)
            .map(|t| {
                let driver = device.driver_on(t);
                let source = &source;
                s.spawn(move || -> anyhow::Result<()> {
                    for zone in zone_list(t) {
                        let zslba = zone * info.zone_size_lbas;
                        for _ in 0..zone_bytes / append_bytes as u64 {
                            driver.append(zslba, source.clone())?;
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for handle in handles {
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("an append thread panicked"))??;
        }
        Ok(())
    })?;
    let append_time = start.elapsed();
    let appended = zones_needed * zone_bytes;

    // Reads: the same zones back in transfer-limit pieces.
    let start = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let handles: Vec<_> = (0..QUEUES)
            .map(|t| {
                let driver = device.driver_on(t);
                s.spawn(move || -> anyhow::Result<u64> {
                    let mut check = 0u64;
                    for zone in zone_list(t) {
                        let zslba = zone * info.zone_size_lbas;
                        for piece in 0..info.zone_cap_lbas / read_lbas {
                            let data = driver.read(zslba + piece * read_lbas, read_lbas)?;
                            check = check.wrapping_add(u64::from(data[data.len() - 1]));
                        }
                    }
                    Ok(black_box(check))
                })
            })
            .collect();
        for handle in handles {
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("a read thread panicked"))??;
        }
        Ok(())
    })?;
    let read_time = start.elapsed();
    device.close()?;

    // The baseline: memcpy of the same bytes in the same piece sizes.
    // Touch every page first: the device's RAM NAND is allocated and touched before the run too.
    let mut target = vec![1u8; appended as usize];
    let start = Instant::now();
    for piece in target.chunks_mut(append_bytes) {
        piece.copy_from_slice(black_box(&source[..piece.len()]));
    }
    black_box(&mut target);
    let copy_in = start.elapsed();
    let mut back = vec![0u8; read_lbas as usize * LBA_BYTES as usize];
    let start = Instant::now();
    for piece in target.chunks(back.len()) {
        back[..piece.len()].copy_from_slice(black_box(piece));
        black_box(&mut back);
    }
    let copy_out = start.elapsed();

    let read_bytes = read_lbas * u64::from(LBA_BYTES);
    Ok((
        [
            per_s(appended, append_time),
            per_s(appended, copy_in),
            per_s(appended, read_time),
            per_s(appended, copy_out),
        ],
        appended,
        append_bytes as u64,
        read_bytes,
    ))
}

/// One latency run: nanoseconds per 4 KiB read through the queues, then directly.
fn latency_once(reads: u64) -> anyhow::Result<(f64, f64)> {
    let geometry = Preset::Small.geometry(64 << 20)?;
    let zones = ZoneConfig::for_geometry(&geometry);
    let device = RamDevice::in_ram(geometry, zones, DeviceOptions::default())?;
    let driver = device.driver();
    let info = device.identify();
    let append_lbas = u64::from(info.zasl_lbas);
    // The reads cycle over zone 0, written first in whole appends.
    let blocks = info.zone_cap_lbas / append_lbas * append_lbas;
    for _ in 0..blocks / append_lbas {
        driver.append(0, vec![7u8; (append_lbas * u64::from(LBA_BYTES)) as usize])?;
    }
    let start = Instant::now();
    for i in 0..reads {
        black_box(driver.read(i % blocks, 1)?);
    }
    let queued = start.elapsed().as_nanos() as f64 / reads as f64;
    device.close()?;

    let manager = ZoneManager::format(Timed::new(SimNand::new(geometry), TimingModel::OFF), zones)
        .map_err(|e| anyhow::anyhow!("format: {e}"))?;
    let mut controller = Controller::new(manager, ProgramConfig::default());
    let mut call = |command: Command, mut buffer: Vec<u8>| -> anyhow::Result<Vec<u8>> {
        let sub = Submission::new(CommandId(0), command);
        let done = controller.submit_command(0, &sub, &mut SliceDma::new(&mut buffer));
        match done {
            Some(c) if c.status.is_success() => Ok(buffer),
            other => anyhow::bail!("the controller answered {other:?}"),
        }
    };
    for _ in 0..blocks / append_lbas {
        let data = vec![7u8; (append_lbas * u64::from(LBA_BYTES)) as usize];
        call(
            Command::ZoneAppend {
                zslba: 0,
                nlb: append_lbas as u32,
            },
            data,
        )?;
    }
    let start = Instant::now();
    for i in 0..reads {
        // A new buffer per read, as the driver makes.
        let buffer = vec![0u8; LBA_BYTES as usize];
        let read = Command::Read {
            slba: i % blocks,
            nlb: 1,
        };
        black_box(call(read, buffer)?);
    }
    let direct = start.elapsed().as_nanos() as f64 / reads as f64;
    Ok((queued, direct))
}
