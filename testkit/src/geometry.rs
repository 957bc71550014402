//! Device geometries the tests use.

use firmware::{nand::Geometry, zns::ZoneConfig};

/// The `small` preset's shape at 16 MiB: 2 channels x 2 dies, 16 blocks per die of 64 pages
/// (4 KiB data, 64 bytes spare); 15 zones of 256 blocks. (`host-shell`'s tests check it is
/// what `Preset::Small.geometry(16 << 20)` gives.)
pub const fn small() -> Geometry {
    Geometry {
        channels: 2,
        dies_per_channel: 2,
        blocks_per_die: 16,
        pages_per_block: 64,
        page_bytes: common::LBA_BYTES,
        spare_bytes: 64,
    }
}

/// A tiny device for power-loss and cleaner tests: [`small`] with 16-page blocks, so zones are
/// 64 blocks (256 KiB) and there are 15 of them.
pub const fn tiny() -> Geometry {
    Geometry {
        pages_per_block: 16,
        ..small()
    }
}

/// The zone layout the firmware picks for `geometry`.
pub fn zones_for(geometry: &Geometry) -> ZoneConfig {
    ZoneConfig::for_geometry(geometry)
}

/// The NAND geometry a device reports in Identify.
pub fn of_identify(identify: &common::zns::IdentifyZns) -> Geometry {
    let n = identify.nand;
    Geometry {
        channels: n.channels,
        dies_per_channel: n.dies_per_channel,
        blocks_per_die: n.blocks_per_die,
        pages_per_block: n.pages_per_block,
        page_bytes: n.page_bytes,
        spare_bytes: n.spare_bytes,
    }
}
