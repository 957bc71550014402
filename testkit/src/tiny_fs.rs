//! A tiny device holding a small file system, the media that the hostile-image tests
//! (`tests/tests/hostile/images.rs`) and the `mount_image` fuzz target damage: both damage
//! exactly the same thing. Made through the host shell's device (feature `host-shell`).

use firmware::{
    nand::{
        sim::{PageState, PageStore, RamStore},
        BlockId, Geometry, PageAddr,
    },
    zns::ZoneConfig,
};
use host_shell::{
    device::{DeviceOptions, RamDevice},
    driver::Driver,
    lfs::{InodeNo, Lfs},
};

/// 1 channel x 2 dies x 24 blocks x 8 pages: 22 zones of 16 LBAs, 1.5 MiB.
pub const GEOMETRY: Geometry = Geometry {
    channels: 1,
    dies_per_channel: 2,
    blocks_per_die: 24,
    pages_per_block: 8,
    page_bytes: 4096,
    spare_bytes: 64,
};

/// The zone configuration of [`GEOMETRY`].
pub fn zones() -> ZoneConfig {
    ZoneConfig::for_geometry(&GEOMETRY)
}

/// One small queue: the media, not the queues, is under test.
pub fn options() -> DeviceOptions {
    DeviceOptions {
        queues: 1,
        queue_depth: 4,
        ..DeviceOptions::default()
    }
}

/// Puts a small tree on the device's file system (a directory, a synced file and a file left
/// in the log) and unmounts it.
pub fn populate(driver: &Driver) {
    Lfs::mkfs(driver, 0, 0).expect("mkfs");
    let lfs = Lfs::mount(driver).expect("mount");
    let dir = lfs.mkdir(InodeNo::ROOT, b"d", 0o755, 0, 0).expect("mkdir");
    let a = lfs.create(dir.ino, b"a", 0o644, 0, 0).expect("create");
    lfs.write(a.ino, 0, &[0xA5; 9000]).expect("write");
    lfs.fsync(a.ino, false).expect("fsync");
    let b = lfs
        .create(InodeNo::ROOT, b"b", 0o600, 0, 0)
        .expect("create");
    lfs.write(b.ino, 100, b"hello").expect("write");
    lfs.unmount().expect("unmount");
}

/// A freshly formatted, populated device in RAM, powered off: its media.
pub fn populated() -> RamStore {
    let device = RamDevice::in_ram(GEOMETRY, zones(), options()).expect("device");
    populate(&device.driver());
    device.close().expect("close")
}

/// Every programmed page of `store`, block by block.
pub fn programmed_pages(store: &RamStore) -> Vec<PageAddr> {
    (0..GEOMETRY.blocks())
        .flat_map(|block| {
            (0..GEOMETRY.pages_per_block).map(move |page| PageAddr::new(BlockId(block), page))
        })
        .filter(|&addr| store.state(addr) == PageState::Programmed)
        .collect()
}
