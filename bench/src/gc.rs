//! `gc.write_amplification`: NAND bytes programmed / bytes the user wrote, for random 4 KiB
//! overwrites of files that fill 50% and 80% of the file system.
//!
//! The file system runs in this process on a device in RAM (small preset, timing off), the
//! cleaner as the mount's background thread runs it (`gc_step` while `wants_cleaning`), and
//! writers clean inline when they run out. Only the overwrite phase counts: filling the files
//! first is not part of the figure. The peer is the ideal of 1.0 (every byte written once).
//!
//! After the last run the device's zones are mapped as `csd zone map` maps an image
//! ([`ZoneMap::read`], then the erase counts from the powered-off media): the report's
//! `zone-map.svg`.

use anyhow::{Context, Result};
use firmware::zns::ZoneConfig;
use host_shell::{
    device::{zone_erase_counts, DeviceOptions, RamDevice},
    lfs::{InodeNo, Lfs},
    nand::preset::Preset,
    zonemap::ZoneMap,
};
use serde::Serialize;
use testkit::rng::Rng;

const FILE_BYTES: u64 = 1 << 20;
const BLOCK: u64 = 4096;
/// An fsync after this many 4 KiB writes.
const FSYNC_EVERY: u64 = 64;

/// One utilization.
#[derive(Debug, Serialize)]
pub struct Point {
    /// Live file bytes / the file system's capacity (statfs).
    pub utilization: f64,
    pub user_bytes: u64,
    pub nand_program_bytes: u64,
    pub write_amplification: f64,
    pub zones_cleaned: u64,
}

#[derive(Debug, Serialize)]
pub struct Gc {
    pub device_bytes: u64,
    /// Overwritten bytes per run, in multiples of the capacity.
    pub overwrite_factor: u64,
    pub write_amplification: Vec<Point>,
    /// The zones after the last (fullest) run, drawn as `zone-map.svg`.
    #[serde(skip)]
    pub zone_map: ZoneMap,
}

/// Runs the overwrite workload at 50% and 80% on a device of `device_bytes`.
pub fn run(device_bytes: u64, overwrite_factor: u64) -> Result<Gc> {
    let mut points = Vec::new();
    let mut maps = Vec::new();
    for utilization in [0.5, 0.8] {
        let (p, map) = point(device_bytes, utilization, overwrite_factor)
            .with_context(|| format!("at {:.0}% utilization", utilization * 100.0))?;
        points.push(p);
        maps.push(map);
    }
    Ok(Gc {
        device_bytes,
        overwrite_factor,
        write_amplification: points,
        zone_map: maps.pop().context("no utilization was run")?,
    })
}

/// One utilization's figure, and the device's zones at its end.
fn point(device_bytes: u64, utilization: f64, overwrite_factor: u64) -> Result<(Point, ZoneMap)> {
    let geometry = Preset::Small.geometry(device_bytes)?;
    let zones = ZoneConfig::for_geometry(&geometry);
    let device = RamDevice::in_ram(geometry, zones, DeviceOptions::default())?;
    let driver = device.driver();
    Lfs::mkfs(&driver, 0, 0)?;
    let lfs = Lfs::mount(&driver)?;
    let capacity = lfs.statfs()?.blocks * BLOCK;
    let files = ((capacity as f64 * utilization) as u64 / FILE_BYTES).max(1);
    let mut inodes = Vec::new();
    let data = vec![0x5au8; FILE_BYTES as usize];
    for i in 0..files {
        let ino = lfs
            .create(InodeNo::ROOT, format!("f{i}").as_bytes(), 0o644, 0, 0)?
            .ino;
        lfs.write(ino, 0, &data)?;
        lfs.fsync(ino, false)?;
        inodes.push(ino);
    }
    let before = device.stats();
    let gc_before = lfs.stats()?.gc_zones;
    let blocks_per_file = FILE_BYTES / BLOCK;
    let writes = capacity * overwrite_factor / BLOCK;
    let mut rng = Rng::new(0);
    let block = vec![0xa5u8; BLOCK as usize];
    for n in 0..writes {
        let ino = inodes[rng.below(files) as usize];
        let offset = rng.below(blocks_per_file) * BLOCK;
        lfs.write(ino, offset, &block)?;
        if n % FSYNC_EVERY == FSYNC_EVERY - 1 {
            lfs.fsync(ino, false)?;
            while lfs.wants_cleaning()? && lfs.gc_step()? {}
        }
    }
    for &ino in &inodes {
        lfs.fsync(ino, false)?;
    }
    let nand_program_bytes = device.stats().since(&before).nand_program_bytes;
    let zones_cleaned = lfs.stats()?.gc_zones - gc_before;
    let user_bytes = writes * BLOCK;
    lfs.unmount()?;
    let map = ZoneMap::read(&driver)?;
    drop(driver);
    let (erase_counts, _) = zone_erase_counts(device.close()?, zones, "the cleaner's device")?;
    let point = Point {
        utilization: (files * FILE_BYTES) as f64 / capacity as f64,
        user_bytes,
        nand_program_bytes,
        write_amplification: nand_program_bytes as f64 / user_bytes as f64,
        zones_cleaned,
    };
    Ok((point, map.with_erase_counts(erase_counts)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The quick run's cleaner figure also maps the device's zones: every zone is there, the
    /// files' blocks are its live data (the cleaner moved and the writers overwrote, so some
    /// written blocks are dead), erase counts came back from the media, and the picture has one
    /// `rect.zone` per zone.
    #[test]
    fn the_cleaner_run_maps_its_zones() {
        let gc = run(16 << 20, 1).expect("the cleaner's run");
        let map = gc.zone_map;
        assert!(map.file_system);
        let geometry = Preset::Small.geometry(16 << 20).expect("a geometry");
        let layout = firmware::zns::Layout::new(geometry, ZoneConfig::for_geometry(&geometry))
            .expect("a layout");
        assert_eq!(map.zones.len(), layout.nr_zones as usize);
        let live: u64 = map.zones.iter().filter_map(|z| z.live_blocks).sum();
        let written: u64 = map.zones.iter().map(|z| z.written_lbas).sum();
        let files = gc.write_amplification.last().expect("a point").utilization;
        assert!(live > 0 && live < written, "live {live}, written {written}");
        assert!(files > 0.7, "{files}");
        assert!(map.zones.iter().any(|z| z.erase_max() > 2), "{map:?}");
        let svg = map.to_svg("zones");
        assert_eq!(
            svg.matches(r#"<rect class="zone""#).count(),
            map.zones.len()
        );
    }
}
