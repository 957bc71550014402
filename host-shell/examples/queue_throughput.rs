//! Append and read throughput through the device's queues, against a plain memcpy of the same
//! bytes, measured in one run. A measurement, not a test:
//!
//! ```text
//! cargo run --release -p host-shell --example queue_throughput [MIB]
//! ```
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
use host_shell::{
    device::{DeviceOptions, RamDevice},
    nand::preset::Preset,
};

const QUEUES: u16 = 4;

fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64()
}

fn main() -> anyhow::Result<()> {
    let mib: u64 = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => 256,
    };
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
    let stats = device.stats();
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

    let append = mb_per_s(appended, append_time);
    let read = mb_per_s(appended, read_time);
    let memcpy_in = mb_per_s(appended, copy_in);
    let memcpy_out = mb_per_s(appended, copy_out);
    println!(
        "{} MiB through {QUEUES} queues from {QUEUES} threads (RAM NAND, timing off), {} commands",
        appended >> 20,
        stats.commands
    );
    println!(
        "append ({} KiB):  {append:>8.0} MB/s   memcpy in same pieces: {memcpy_in:>8.0} MB/s   ratio {:.3}",
        append_bytes >> 10,
        append / memcpy_in
    );
    println!(
        "read ({} KiB):    {read:>8.0} MB/s   memcpy in same pieces: {memcpy_out:>8.0} MB/s   ratio {:.3}",
        (read_lbas * u64::from(LBA_BYTES)) >> 10,
        read / memcpy_out
    );
    Ok(())
}
