//! Zone manager configuration and the layout derived from it and the NAND geometry.
//!
//! A zone is `zone_blocks` erase blocks ("slots"), striped: LBA offset `o` of a zone lives in
//! slot `o % zone_blocks`, page `o / zone_blocks`, so consecutive LBAs go to different dies.
//! Slot `s` of zone `z` prefers die `(z * zone_blocks + s) % dies`. Two blocks hold the
//! metadata log (block 0 of die 0, and block 0 of die 1, or block 1 of die 0 on a one-die
//! device); `spare_blocks` more stay out of the zone budget to replace retired blocks.

use core::fmt;

use crate::nand::{BlockId, Geometry, PAGE_DATA_BYTES};

use super::record::RECORD_BYTES;

/// How the zone manager carves the NAND into zones.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ZoneConfig {
    /// Erase blocks per zone, striped across dies.
    pub zone_blocks: u32,
    /// Zone capacity in LBAs; `None` means every page of the zone's blocks.
    pub zone_cap_lbas: Option<u64>,
    /// Number of zones; `None` means as many as fit beside the spare blocks.
    pub nr_zones: Option<u32>,
    /// Blocks kept out of the zones to replace retired (bad) blocks.
    pub spare_blocks: u32,
    /// Maximum open zones (0: no limit).
    pub max_open: u32,
    /// Maximum active zones (0: no limit).
    pub max_active: u32,
    /// Largest Zone Append in LBAs.
    pub zasl_lbas: u32,
    /// Largest Read or Write in LBAs.
    pub mdts_lbas: u32,
    /// Whether a Read may cross zone boundaries (QEMU's `cross_zone_read`).
    pub cross_zone_read: bool,
}

impl ZoneConfig {
    /// Defaults for `geometry`: one block per die in each zone, about 3% spare blocks (at least
    /// two), 14 open and active zones like a ZN540, 32-LBA appends, 64-LBA transfers.
    pub fn for_geometry(geometry: &Geometry) -> Self {
        ZoneConfig {
            zone_blocks: geometry.dies().max(1),
            zone_cap_lbas: None,
            nr_zones: None,
            spare_blocks: (geometry.blocks() / 32).max(2),
            max_open: 14,
            max_active: 14,
            zasl_lbas: 32,
            mdts_lbas: 64,
            cross_zone_read: true,
        }
    }
}

/// Why a configuration does not fit the NAND.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// Pages must hold exactly one 4096-byte LBA.
    PageSize {
        /// The NAND's page data size.
        page_bytes: u32,
    },
    /// The spare area cannot hold the per-page recovery record.
    SpareTooSmall {
        /// The NAND's spare bytes per page.
        spare_bytes: u32,
    },
    /// A count that must be positive is zero.
    Zero,
    /// The zone capacity is larger than the zone's blocks can hold.
    CapacityTooLarge,
    /// Not enough blocks for the zones, the metadata log and the spares.
    NotEnoughBlocks,
    /// The metadata checkpoint would not fit in one erase block.
    CheckpointTooLarge,
    /// Max open zones exceeds max active zones.
    OpenAboveActive,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::PageSize { page_bytes } => {
                write!(
                    f,
                    "NAND pages hold {page_bytes} bytes, the zone manager needs {PAGE_DATA_BYTES}"
                )
            }
            ConfigError::SpareTooSmall { spare_bytes } => {
                write!(
                    f,
                    "NAND spare area of {spare_bytes} bytes is below {RECORD_BYTES}"
                )
            }
            ConfigError::Zero => f.write_str("a zone count, size or limit is zero"),
            ConfigError::CapacityTooLarge => f.write_str("zone capacity exceeds the zone's blocks"),
            ConfigError::NotEnoughBlocks => f.write_str("not enough NAND blocks for the zones"),
            ConfigError::CheckpointTooLarge => f.write_str("metadata checkpoint exceeds one block"),
            ConfigError::OpenAboveActive => f.write_str("max open zones exceeds max active zones"),
        }
    }
}

impl core::error::Error for ConfigError {}

/// Everything derived from a [`ZoneConfig`] and a [`Geometry`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The NAND's shape.
    pub geometry: Geometry,
    /// The configuration it came from.
    pub config: ZoneConfig,
    /// Zone capacity in LBAs.
    pub zone_cap: u64,
    /// Zone size in LBAs (power of two, `>= zone_cap`).
    pub zone_size: u64,
    /// Number of zones.
    pub nr_zones: u32,
    /// The two blocks of the metadata log.
    pub meta_blocks: [BlockId; 2],
    /// Pages of one checkpoint.
    pub checkpoint_pages: u32,
}

impl Layout {
    /// Checks `config` against `geometry` and derives the layout.
    pub fn new(geometry: Geometry, config: ZoneConfig) -> Result<Self, ConfigError> {
        if geometry.page_bytes != PAGE_DATA_BYTES {
            return Err(ConfigError::PageSize {
                page_bytes: geometry.page_bytes,
            });
        }
        if (geometry.spare_bytes as usize) < RECORD_BYTES {
            return Err(ConfigError::SpareTooSmall {
                spare_bytes: geometry.spare_bytes,
            });
        }
        let c = &config;
        if geometry.blocks() == 0 || geometry.pages_per_block == 0 || c.zone_blocks == 0 {
            return Err(ConfigError::Zero);
        }
        if c.zasl_lbas == 0
            || c.mdts_lbas == 0
            || c.nr_zones == Some(0)
            || c.zone_cap_lbas == Some(0)
        {
            return Err(ConfigError::Zero);
        }
        if c.max_active != 0 && (c.max_open == 0 || c.max_open > c.max_active) {
            return Err(ConfigError::OpenAboveActive);
        }
        let full_cap = u64::from(c.zone_blocks) * u64::from(geometry.pages_per_block);
        let zone_cap = c.zone_cap_lbas.unwrap_or(full_cap);
        if zone_cap > full_cap {
            return Err(ConfigError::CapacityTooLarge);
        }
        // `spare_blocks` comes from an image header: any u32, so the sum must not overflow.
        let budget = c
            .spare_blocks
            .checked_add(2)
            .and_then(|reserved| geometry.blocks().checked_sub(reserved))
            .ok_or(ConfigError::NotEnoughBlocks)?;
        let nr_zones = c.nr_zones.unwrap_or(budget / c.zone_blocks);
        if nr_zones == 0 || u64::from(nr_zones) * u64::from(c.zone_blocks) > u64::from(budget) {
            return Err(ConfigError::NotEnoughBlocks);
        }
        let meta_blocks = if geometry.dies() > 1 {
            [geometry.block(0, 0), geometry.block(1, 0)]
        } else {
            [BlockId(0), BlockId(1)]
        };
        let bytes = super::checkpoint::encoded_len(geometry.blocks(), nr_zones);
        let checkpoint_pages = bytes.div_ceil(PAGE_DATA_BYTES as usize) as u32;
        if checkpoint_pages > geometry.pages_per_block {
            return Err(ConfigError::CheckpointTooLarge);
        }
        Ok(Layout {
            geometry,
            config,
            zone_cap,
            zone_size: zone_cap.next_power_of_two(),
            nr_zones,
            meta_blocks,
            checkpoint_pages,
        })
    }

    /// Namespace size in LBAs.
    pub fn nsze(&self) -> u64 {
        u64::from(self.nr_zones) * self.zone_size
    }

    /// The zone holding `lba` and the LBA's offset in it.
    pub fn split(&self, lba: u64) -> (u32, u64) {
        ((lba / self.zone_size) as u32, lba % self.zone_size)
    }

    /// The first LBA of zone `zone`.
    pub fn zslba(&self, zone: u32) -> u64 {
        u64::from(zone) * self.zone_size
    }

    /// The slot and page of LBA offset `offset` in a zone.
    pub fn place(&self, offset: u64) -> (usize, u32) {
        let w = u64::from(self.config.zone_blocks);
        ((offset % w) as usize, (offset / w) as u32)
    }

    /// The die that slot `slot` of zone `zone` prefers.
    pub fn slot_die(&self, zone: u32, slot: usize) -> u32 {
        let z = u64::from(zone) * u64::from(self.config.zone_blocks) + slot as u64;
        (z % u64::from(self.geometry.dies())) as u32
    }

    /// Whether `block` belongs to the metadata log.
    pub fn is_meta(&self, block: BlockId) -> bool {
        self.meta_blocks.contains(&block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GEOMETRY: Geometry = Geometry {
        channels: 1,
        dies_per_channel: 2,
        blocks_per_die: 16,
        pages_per_block: 8,
        page_bytes: 4096,
        spare_bytes: 64,
    };

    /// Absurd counts from a hostile image header are refused, never overflow. (Found by the
    /// hostile image corpus: `spare_blocks = u32::MAX` overflowed `2 + spare_blocks`.)
    #[test]
    fn absurd_counts_are_refused() {
        let base = ZoneConfig::for_geometry(&GEOMETRY);
        for spare_blocks in [u32::MAX, u32::MAX - 1, 31] {
            let c = ZoneConfig {
                spare_blocks,
                ..base
            };
            assert_eq!(Layout::new(GEOMETRY, c), Err(ConfigError::NotEnoughBlocks));
        }
        let c = ZoneConfig {
            zone_blocks: u32::MAX,
            ..base
        };
        assert_eq!(Layout::new(GEOMETRY, c), Err(ConfigError::NotEnoughBlocks));
        let c = ZoneConfig {
            nr_zones: Some(u32::MAX),
            ..base
        };
        assert_eq!(Layout::new(GEOMETRY, c), Err(ConfigError::NotEnoughBlocks));
    }
}
