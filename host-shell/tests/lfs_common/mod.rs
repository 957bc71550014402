//! Helpers shared by the file-system tests: small devices, remounts, path walking.
#![allow(dead_code)] // reason: each test file uses a different subset of the helpers

use firmware::{
    nand::{sim::RamStore, Geometry},
    zns::ZoneConfig,
};
use host_shell::{
    device::{DeviceOptions, RamDevice},
    lfs::{Attr, InodeNo, Lfs},
    nand::preset::Preset,
};

/// The small preset at 16 MiB: 15 zones of 256 blocks.
pub fn small_geometry() -> Geometry {
    Preset::Small
        .geometry(16 << 20)
        .expect("16 MiB fits the small preset")
}

/// A tiny device for power-loss and GC tests: the small preset's shape with 16-page
/// blocks, so zones are 64 blocks (256 KiB) and there are 15 of them.
pub fn tiny_geometry() -> Geometry {
    Geometry {
        pages_per_block: 16,
        ..small_geometry()
    }
}

pub fn zones_for(geometry: &Geometry) -> ZoneConfig {
    ZoneConfig::for_geometry(geometry)
}

/// A formatted device in RAM with a fresh file system.
pub fn fresh(geometry: Geometry) -> RamDevice {
    let device = RamDevice::in_ram(geometry, zones_for(&geometry), DeviceOptions::default())
        .expect("the device starts");
    Lfs::mkfs(&device.driver(), 0, 0).expect("mkfs");
    device
}

/// Powers the device off and on again over the same NAND.
pub fn reboot(device: RamDevice, options: DeviceOptions) -> RamDevice {
    let geometry = device_geometry(&device);
    let store: RamStore = device.close().expect("the device stops");
    RamDevice::mount(store, zones_for(&geometry), options, "ram").expect("the device remounts")
}

pub fn device_geometry(device: &RamDevice) -> Geometry {
    let n = device.identify().nand;
    Geometry {
        channels: n.channels,
        dies_per_channel: n.dies_per_channel,
        blocks_per_die: n.blocks_per_die,
        pages_per_block: n.pages_per_block,
        page_bytes: n.page_bytes,
        spare_bytes: n.spare_bytes,
    }
}

/// Unmounts, reboots the device and mounts again; fsck must be clean.
pub fn remount(lfs: Lfs, device: RamDevice) -> (Lfs, RamDevice) {
    lfs.unmount().expect("unmount");
    let device = reboot(device, DeviceOptions::default());
    let lfs = Lfs::mount(&device.driver()).expect("mount");
    assert_clean(&lfs);
    (lfs, device)
}

pub fn assert_clean(lfs: &Lfs) {
    let problems = lfs.fsck().expect("fsck runs");
    assert!(problems.is_empty(), "fsck: {problems:#?}");
}

/// The inode at `path` ("/a/b").
pub fn walk(lfs: &Lfs, path: &str) -> Result<Attr, host_shell::lfs::LfsError> {
    let mut attr = lfs.getattr(InodeNo::ROOT)?;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        attr = lfs.lookup(attr.ino, part.as_bytes())?;
    }
    Ok(attr)
}

/// The whole content of file `ino`.
pub fn read_all(lfs: &Lfs, ino: InodeNo) -> Vec<u8> {
    let size = lfs.getattr(ino).expect("getattr").size;
    lfs.read(ino, 0, size as u32).expect("read")
}

/// Deterministic bytes for a test pattern.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
