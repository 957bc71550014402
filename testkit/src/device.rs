//! A device in RAM: the firmware's zone manager over the strict NAND emulator, as a
//! [`lfs::Zoned`] device run in the caller's thread ([`lfs::zoned::Direct`]). Power goes off
//! and on again over the same NAND, with power cuts armed at a chosen point.

use firmware::{
    nand::{
        sim::{PageStore, RamStore, SimNand, Stats},
        Geometry,
    },
    zns::{ZoneConfig, ZoneManager},
};
use lfs::{zoned::Direct, Lfs, Zoned};

/// The NAND of a RAM device.
pub type RamNand = SimNand<RamStore>;
/// A device in RAM.
pub type RamZoned = Direct<RamNand>;

/// Where power goes off, counted from when the device is ready after power-on (its recovery
/// done). Both `None`: it stays on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cut {
    /// After this many NAND operations (the next one is torn).
    pub after_ops: Option<u64>,
    /// After this many programmed bytes (data and spare; the program passing them is torn
    /// there).
    pub after_program_bytes: Option<u64>,
}

impl Cut {
    /// No cut.
    pub const NONE: Cut = Cut {
        after_ops: None,
        after_program_bytes: None,
    };

    /// A cut after `n` NAND operations.
    pub fn ops(n: u64) -> Cut {
        Cut {
            after_ops: Some(n),
            ..Cut::NONE
        }
    }

    /// A cut after `n` programmed bytes.
    pub fn program_bytes(n: u64) -> Cut {
        Cut {
            after_program_bytes: Some(n),
            ..Cut::NONE
        }
    }
}

/// A freshly formatted device.
pub fn format(geometry: Geometry, zones: ZoneConfig) -> RamZoned {
    let manager = ZoneManager::format(SimNand::new(geometry), zones)
        .unwrap_or_else(|e| panic!("the device does not format: {e}"));
    Direct::new(manager)
}

/// A freshly formatted device of `geometry` (default zones) with a fresh file system.
pub fn fresh(geometry: Geometry) -> RamZoned {
    let device = format(geometry, crate::geometry::zones_for(&geometry));
    Lfs::mkfs(&device, 0, 0).expect("mkfs");
    device
}

/// Media a device runs on: RAM, or an image file (`host-shell`'s stores).
pub trait Media: PageStore + Send + std::fmt::Debug + 'static {}
impl<T: PageStore + Send + std::fmt::Debug + 'static> Media for T {}

/// Powers on over `store`: runs the firmware's power-on recovery, then arms `cut`.
pub fn power_on<S: Media>(
    store: S,
    zones: ZoneConfig,
    cut: Cut,
) -> Result<Direct<SimNand<S>>, String> {
    let manager = ZoneManager::mount(SimNand::with_store(store), zones)
        .map_err(|e| format!("the device does not power on: {e}"))?;
    let device = Direct::new(manager);
    device.with(|m| {
        let nand = m.nand_mut();
        nand.reset_stats();
        if let Some(n) = cut.after_ops {
            nand.cut_power_after_ops(n);
        }
        if let Some(n) = cut.after_program_bytes {
            nand.cut_power_after_program_bytes(n);
        }
    });
    Ok(device)
}

/// Powers the device off and gives its NAND's media back. Every clone of it (a mounted file
/// system's) fails its later commands as a device that stopped.
pub fn power_off<S: Media>(device: &Direct<SimNand<S>>) -> S {
    device
        .take()
        .expect("the device is on")
        .into_nand()
        .into_store()
}

/// Powers the device off and on again over the same NAND, with `cut` armed.
pub fn reboot<S: Media>(device: Direct<SimNand<S>>, cut: Cut) -> Direct<SimNand<S>> {
    let zones = zones_of(&device);
    power_on(power_off(&device), zones, cut).expect("the device powers on again")
}

/// The zone layout of a device.
pub fn zones_of<S: Media>(device: &Direct<SimNand<S>>) -> ZoneConfig {
    device
        .with(|m| m.layout().config)
        .expect("the device is on")
}

/// The NAND's counters since power-on (or since the device was formatted).
pub fn nand_stats<S: Media>(device: &Direct<SimNand<S>>) -> Stats {
    device.with(|m| m.nand().stats()).expect("the device is on")
}

/// The NAND geometry the device reports.
pub fn geometry_of<S: Media>(device: &Direct<SimNand<S>>) -> Geometry {
    crate::geometry::of_identify(device.info())
}
