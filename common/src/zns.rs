//! Zoned Namespace (ZNS) wire types: zone states, zone actions, zone descriptors, report
//! filters and the namespace's identify data.
//!
//! Data only, shaped after the NVMe ZNS command set. The zone manager that gives them meaning
//! lives in `firmware::zns`. Enum variants are append-only (postcard encodes the variant's
//! position, pinned by the golden-bytes tests below); the specification's numeric values are
//! available separately through `spec_value`.

use serde::{Deserialize, Serialize};

use crate::program::ProgramResources;

/// The state of a zone (NVMe ZNS "Zone State", ZS).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ZoneState {
    /// ZSE: no data written, no resources held.
    Empty,
    /// ZSIO: opened by a write; the device may close it to make room for another.
    ImplicitlyOpened,
    /// ZSEO: opened by an Open zone action; only the host closes it.
    ExplicitlyOpened,
    /// ZSC: holds data and an active resource, but no open resource.
    Closed,
    /// ZSF: written to capacity or finished; readable, not writable until reset.
    Full,
    /// ZSRO: the media failed while writing; readable, only Offline is allowed.
    ReadOnly,
    /// ZSO: no data can be read or written.
    Offline,
}

impl ZoneState {
    /// Every state, from Empty to Offline.
    pub const ALL: [ZoneState; 7] = [
        ZoneState::Empty,
        ZoneState::ImplicitlyOpened,
        ZoneState::ExplicitlyOpened,
        ZoneState::Closed,
        ZoneState::Full,
        ZoneState::ReadOnly,
        ZoneState::Offline,
    ];

    /// The state's value in the specification's zone descriptor (`1h`..`4h`, `Dh`..`Fh`).
    pub const fn spec_value(self) -> u8 {
        match self {
            ZoneState::Empty => 0x1,
            ZoneState::ImplicitlyOpened => 0x2,
            ZoneState::ExplicitlyOpened => 0x3,
            ZoneState::Closed => 0x4,
            ZoneState::ReadOnly => 0xD,
            ZoneState::Full => 0xE,
            ZoneState::Offline => 0xF,
        }
    }
}

/// The type of a zone. Only sequential-write-required zones exist on this device.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ZoneType {
    /// Writes must land at the write pointer (specification value `2h`).
    SequentialWriteRequired,
}

/// A Zone Management Send action (NVMe ZNS "Zone Send Action", ZSA).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ZoneAction {
    /// Open the zone explicitly (ZSA `3h`).
    Open,
    /// Close an open zone (ZSA `1h`).
    Close,
    /// Move the zone to Full (ZSA `2h`).
    Finish,
    /// Empty the zone and rewind its write pointer (ZSA `4h`).
    Reset,
    /// Take a read-only zone offline (ZSA `5h`).
    Offline,
}

impl ZoneAction {
    /// The action's value in the specification's Zone Send Action field.
    pub const fn spec_value(self) -> u8 {
        match self {
            ZoneAction::Close => 0x1,
            ZoneAction::Finish => 0x2,
            ZoneAction::Open => 0x3,
            ZoneAction::Reset => 0x4,
            ZoneAction::Offline => 0x5,
        }
    }
}

/// Which zones a Zone Management Receive report lists (Reporting Options, `0h`..`7h`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ReportFilter {
    /// Every zone.
    All,
    /// Zones in [`ZoneState::Empty`].
    Empty,
    /// Zones in [`ZoneState::ImplicitlyOpened`].
    ImplicitlyOpened,
    /// Zones in [`ZoneState::ExplicitlyOpened`].
    ExplicitlyOpened,
    /// Zones in [`ZoneState::Closed`].
    Closed,
    /// Zones in [`ZoneState::Full`].
    Full,
    /// Zones in [`ZoneState::ReadOnly`].
    ReadOnly,
    /// Zones in [`ZoneState::Offline`].
    Offline,
}

/// Zone attribute bit: the device finished the zone on its own (ZFC), for example because a
/// write was torn by a power loss and the zone's remaining pages cannot be programmed.
pub const ZONE_ATTR_FINISHED_BY_CONTROLLER: u8 = 0x01;

/// One zone as Zone Management Receive reports it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ZoneDescriptor {
    /// The zone type.
    pub zone_type: ZoneType,
    /// The zone state.
    pub state: ZoneState,
    /// Zone attributes (`ZONE_ATTR_*` bits).
    pub attrs: u8,
    /// Zone capacity in LBAs: how many LBAs from `zslba` can be written.
    pub zcap: u64,
    /// The zone's first LBA.
    pub zslba: u64,
    /// The write pointer: the next LBA a Write must target. `zslba + zcap` once Full; only
    /// meaningful for Empty, open and Closed zones (as in the specification).
    pub wp: u64,
}

/// The NAND geometry behind the namespace, as Identify reports it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NandInfo {
    /// Independent channels.
    pub channels: u32,
    /// Dies on each channel.
    pub dies_per_channel: u32,
    /// Erase blocks in each die.
    pub blocks_per_die: u32,
    /// Pages in each erase block.
    pub pages_per_block: u32,
    /// Data bytes of a page (equal to the LBA size on this device).
    pub page_bytes: u32,
    /// Spare (out-of-band) bytes of a page.
    pub spare_bytes: u32,
}

/// Identify data of the zoned namespace (the parts of Identify Namespace and the ZNS-specific
/// Identify structures this device fills in).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct IdentifyZns {
    /// LBA size in bytes (always [`crate::LBA_BYTES`]).
    pub lba_bytes: u32,
    /// Namespace size in LBAs (`nr_zones * zone_size_lbas`).
    pub nsze_lbas: u64,
    /// Zone size in LBAs (a power of two).
    pub zone_size_lbas: u64,
    /// Zone capacity in LBAs (at most the zone size).
    pub zone_cap_lbas: u64,
    /// Number of zones.
    pub nr_zones: u32,
    /// Maximum open zones (MOR + 1); 0 means no limit.
    pub max_open: u32,
    /// Maximum active zones (MAR + 1); 0 means no limit.
    pub max_active: u32,
    /// Largest Zone Append in LBAs (ZASL).
    pub zasl_lbas: u32,
    /// Largest Read or Write in LBAs (MDTS).
    pub mdts_lbas: u32,
    /// Whether acknowledged writes may sit in a volatile cache until a Flush (NVMe's VWC).
    /// The firmware programs each LBA before the write completes, so only the storage below
    /// its NAND can cache: an emulated device's image file in the host's page cache.
    pub volatile_write_cache: bool,
    /// Whether a Read may cross zone boundaries.
    pub cross_zone_read: bool,
    /// The NAND geometry.
    pub nand: NandInfo,
    /// The computational side: program slots, range sets and their limits (appended after
    /// the first version of this structure). The zone manager alone has none and reports
    /// zeros; the controller's Identify fills them in.
    pub programs: ProgramResources,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Enum variants keep their postcard tags (append-only).
    #[test]
    fn golden_enum_tags() {
        let state = |s: ZoneState| postcard::to_allocvec(&s).unwrap();
        assert_eq!(state(ZoneState::Empty), [0]);
        assert_eq!(state(ZoneState::Offline), [6]);
        assert_eq!(postcard::to_allocvec(&ZoneAction::Offline).unwrap(), [4]);
        assert_eq!(postcard::to_allocvec(&ReportFilter::Offline).unwrap(), [7]);
    }

    /// Specification values of states and actions match NVMe ZNS.
    #[test]
    fn spec_values() {
        assert_eq!(ZoneState::ImplicitlyOpened.spec_value(), 0x2);
        assert_eq!(ZoneState::ReadOnly.spec_value(), 0xD);
        assert_eq!(ZoneState::Full.spec_value(), 0xE);
        assert_eq!(ZoneAction::Reset.spec_value(), 0x4);
        assert_eq!(ZoneAction::Open.spec_value(), 0x3);
    }

    /// A zone descriptor's postcard form is pinned byte for byte.
    #[test]
    fn golden_descriptor() {
        let d = ZoneDescriptor {
            zone_type: ZoneType::SequentialWriteRequired,
            state: ZoneState::Closed,
            attrs: 0,
            zcap: 16,
            zslba: 32,
            wp: 35,
        };
        let bytes = postcard::to_allocvec(&d).unwrap();
        assert_eq!(bytes, [0, 3, 0, 16, 32, 35]);
        assert_eq!(postcard::from_bytes::<ZoneDescriptor>(&bytes).unwrap(), d);
    }

    /// Identify data round-trips and its postcard form is pinned.
    #[test]
    fn golden_identify() {
        let id = IdentifyZns {
            lba_bytes: 4096,
            nsze_lbas: 64,
            zone_size_lbas: 16,
            zone_cap_lbas: 12,
            nr_zones: 4,
            max_open: 14,
            max_active: 14,
            zasl_lbas: 8,
            mdts_lbas: 16,
            volatile_write_cache: false,
            cross_zone_read: true,
            nand: NandInfo {
                channels: 1,
                dies_per_channel: 2,
                blocks_per_die: 16,
                pages_per_block: 8,
                page_bytes: 4096,
                spare_bytes: 64,
            },
            programs: ProgramResources {
                slots: 8,
                range_sets: 64,
                max_extents: 100,
                max_output_bytes: 4096,
            },
        };
        let bytes = postcard::to_allocvec(&id).unwrap();
        // The program resources come last, after the first version's bytes.
        assert_eq!(
            bytes,
            [
                128, 32, 64, 16, 12, 4, 14, 14, 8, 16, 0, 1, 1, 2, 16, 8, 128, 32, 64, 8, 64, 100,
                128, 32
            ]
        );
        assert_eq!(postcard::from_bytes::<IdentifyZns>(&bytes).unwrap(), id);
    }
}
