//! Device presets: NAND shapes a person can ask for by name.

use firmware::nand::Geometry;

use super::timing::TimingModel;
use crate::{
    device::clock::{CpuModel, DeviceModel, InsnCycles},
    units::Bytes,
};

/// A named device: NAND shape and timing, and the CPU that runs kernels. Where the figures
/// come from is in docs/TIMING.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// 2 channels x 2 dies, 256 KiB blocks, four Cortex-A53 cores: small and quick, for
    /// tests and trying things.
    Small,
    /// 8 channels x 4 dies, 1 MiB blocks, with the NAND timing of a WD ZN540 as NVMeVirt
    /// models it and two Cortex-R5-class controller cores for kernels.
    Zn540,
    /// A computational drive like NGD's: the zn540's NAND with four Cortex-A53 cores.
    Newport,
}

/// An SSD controller's Cortex-R5-class cores: two for kernels at 800 MHz.
const CORTEX_R5: CpuModel = CpuModel {
    core: "Cortex-R5",
    cores: 2,
    clock_hz: 800_000_000,
    interpreted: InsnCycles {
        alu: 28,
        memory: 40,
        branch: 32,
        call: 45,
    },
    compiled: InsnCycles {
        alu: 3,
        memory: 5,
        branch: 4,
        call: 20,
    },
    helper_call_cycles: 30,
    helper_bytes_per_cycle: 2,
};

/// A computational drive's quad Cortex-A53 at 1.2 GHz.
const CORTEX_A53: CpuModel = CpuModel {
    core: "Cortex-A53",
    cores: 4,
    clock_hz: 1_200_000_000,
    interpreted: InsnCycles {
        alu: 20,
        memory: 32,
        branch: 26,
        call: 40,
    },
    compiled: InsnCycles {
        alu: 1,
        memory: 2,
        branch: 3,
        call: 12,
    },
    helper_call_cycles: 20,
    helper_bytes_per_cycle: 4,
};

/// Every preset, in the order of their ids.
pub const ALL: [Preset; 3] = [Preset::Small, Preset::Zn540, Preset::Newport];

/// The capacity asked for does not fit the preset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a {preset} device holds between {} and {} in steps of {}; {} ({asked} bytes) does not fit",
    Bytes(*min), Bytes(*max), Bytes(*step), Bytes(*asked)
)]
pub struct CapacityError {
    preset: &'static str,
    asked: u64,
    min: u64,
    max: u64,
    step: u64,
}

impl Preset {
    /// The preset's name as the CLI spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Preset::Small => "small",
            Preset::Zn540 => "zn540",
            Preset::Newport => "newport",
        }
    }

    /// The id an image header records (see `firmware::nand::image`); 0 means none.
    pub const fn id(self) -> u8 {
        match self {
            Preset::Small => 1,
            Preset::Zn540 => 2,
            Preset::Newport => 3,
        }
    }

    /// The preset an image header's id names, if any.
    pub fn from_id(id: u8) -> Option<Preset> {
        ALL.into_iter().find(|p| p.id() == id)
    }

    /// The CPU that runs kernels.
    pub const fn cpu(self) -> CpuModel {
        match self {
            Preset::Small | Preset::Newport => CORTEX_A53,
            Preset::Zn540 => CORTEX_R5,
        }
    }

    /// The whole timing model.
    pub const fn model(self) -> DeviceModel {
        DeviceModel {
            nand: self.timing(),
            cpu: self.cpu(),
        }
    }

    /// Raw capacity when none is asked for.
    pub const fn default_capacity(self) -> u64 {
        match self {
            Preset::Small => 64 << 20,
            Preset::Zn540 | Preset::Newport => 1 << 30,
        }
    }

    /// Channels, dies per channel, pages per block, spare bytes.
    const fn shape(self) -> (u32, u32, u32, u32) {
        match self {
            Preset::Small => (2, 2, 64, 64),
            Preset::Zn540 | Preset::Newport => (8, 4, 256, 128),
        }
    }

    /// The timing model of this preset's NAND.
    pub const fn timing(self) -> TimingModel {
        match self {
            Preset::Small => TimingModel {
                read_ns: 50_000,
                program_ns: 500_000,
                erase_ns: 3_000_000,
                channel_bytes_per_s: 450_000_000,
                link_bytes_per_s: 3_050_000_000,
            },
            Preset::Zn540 | Preset::Newport => TimingModel::ZN540,
        }
    }

    /// The geometry holding `capacity` raw bytes (a whole number of blocks on every die).
    pub fn geometry(self, capacity: u64) -> Result<Geometry, CapacityError> {
        let (channels, dies_per_channel, pages_per_block, spare_bytes) = self.shape();
        let page_bytes = common::LBA_BYTES;
        let step = u64::from(channels * dies_per_channel)
            * u64::from(pages_per_block)
            * u64::from(page_bytes);
        // At least 8 blocks per die: the metadata log and spare blocks need room beside the zones.
        let (min, max) = (8 * step, (1u64 << 16) * step);
        if !capacity.is_multiple_of(step) || capacity < min || capacity > max {
            return Err(CapacityError {
                preset: self.name(),
                asked: capacity,
                min,
                max,
                step,
            });
        }
        Ok(Geometry {
            channels,
            dies_per_channel,
            blocks_per_die: (capacity / step) as u32,
            pages_per_block,
            page_bytes,
            spare_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Default capacities give whole blocks on every die.
    #[test]
    fn default_capacities_fit() {
        let small = Preset::Small
            .geometry(Preset::Small.default_capacity())
            .unwrap();
        assert_eq!((small.dies(), small.blocks_per_die), (4, 64));
        let zn = Preset::Zn540
            .geometry(Preset::Zn540.default_capacity())
            .unwrap();
        assert_eq!(
            (zn.dies(), zn.blocks_per_die, zn.pages_per_block),
            (32, 32, 256)
        );
    }

    /// Every preset's id names it back (so ids are distinct), and none is 0 (no preset).
    #[test]
    fn ids_round_trip() {
        for p in ALL {
            assert_ne!(p.id(), 0);
            assert_eq!(Preset::from_id(p.id()), Some(p));
        }
        assert_eq!(Preset::from_id(0), None);
    }

    /// A capacity that is not a whole number of block stripes is refused with the step size.
    #[test]
    fn odd_capacity_is_refused() {
        let err = Preset::Small.geometry((64 << 20) + 4096).unwrap_err();
        assert!(err.to_string().contains("steps of 1.0 MiB"), "{err}");
        assert!(Preset::Small.geometry(0).is_err());
    }
}
