//! Zone Append throughput of the in-memory path: the zone manager over the RAM NAND emulator,
//! against a plain memcpy of the same bytes, measured in one run. Not a test: run with
//! `cargo run --release -p firmware --features sim --example zns_append`.

use std::time::Instant;

use firmware::{
    nand::{sim::SimNand, Geometry},
    zns::{ZoneConfig, ZoneManager},
};

fn main() {
    // 8 channels x 4 dies, 64 blocks of 256 pages each: 2 GiB raw.
    let geometry = Geometry {
        channels: 8,
        dies_per_channel: 4,
        blocks_per_die: 64,
        pages_per_block: 256,
        page_bytes: 4096,
        spare_bytes: 64,
    };
    let config = ZoneConfig::for_geometry(&geometry);
    let Ok(mut zones) = ZoneManager::format(SimNand::new(geometry), config) else {
        eprintln!("could not format the device");
        std::process::exit(1);
    };
    let info = zones.identify();
    let append_bytes = info.zasl_lbas as usize * 4096;
    let chunk: Vec<u8> = (0..append_bytes).map(|i| (i * 7) as u8).collect();
    let total_zones = info.nr_zones.min(32) as u64;
    let per_zone = info.zone_cap_lbas as usize * 4096 / append_bytes;

    let started = Instant::now();
    let mut bytes = 0usize;
    for zone in 0..total_zones {
        let zslba = zone * info.zone_size_lbas;
        for _ in 0..per_zone {
            if zones.append(zslba, &chunk).is_err() {
                eprintln!("append failed in zone {zone}");
                std::process::exit(1);
            }
            bytes += append_bytes;
        }
    }
    let append_s = started.elapsed().as_secs_f64();

    let mut dst = vec![0u8; append_bytes];
    let started = Instant::now();
    for _ in 0..bytes / append_bytes {
        dst.copy_from_slice(std::hint::black_box(&chunk));
        std::hint::black_box(&mut dst);
    }
    let memcpy_s = started.elapsed().as_secs_f64();

    let mb = bytes as f64 / 1e6;
    println!(
        "appended {:.0} MB in {}-byte appends over {total_zones} zones",
        mb, append_bytes
    );
    println!("zone append: {:>9.1} MB/s", mb / append_s);
    println!("memcpy:      {:>9.1} MB/s", mb / memcpy_s);
    println!(
        "ratio:       {:>9.3} (append / memcpy)",
        (mb / append_s) / (mb / memcpy_s)
    );
}
