//! `device.append`: Zone Append and Read through the device's queues against a plain memcpy of
//! the same bytes in the same pieces, measured in one run.
//!
//! The device is in RAM with timing off, so the figures are the cost of the host shell itself:
//! the queue pairs, the device thread, the controller, the zone manager and the strict NAND
//! emulator. Appends are the device's append limit (128 KiB), reads its transfer limit
//! (256 KiB). Each of the four queue pairs is driven by its own thread, on its own zones.

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use common::LBA_BYTES;
use firmware::zns::ZoneConfig;
use serde::Serialize;

use crate::report::Spread;
use host_shell::{
    device::{DeviceOptions, RamDevice},
    nand::preset::Preset,
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

#[derive(Debug, Serialize)]
pub struct Device {
    pub append: Figures,
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
    Ok(Device {
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
