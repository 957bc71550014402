//! The emulated device: the firmware's controller running in its own thread as the controller
//! CPU, fed by NVMe-style queue pairs, over NAND in a file or in RAM.
//!
//! Every open runs the firmware's power-on recovery ([`ZoneManager::mount`]) over the media, so
//! every CLI invocation on an image exercises it.

pub mod clock;
pub mod inprocess;
pub mod queue;
pub mod runner;

use std::{path::Path, sync::Arc};

use firmware::{
    controller::{Controller, ProgramConfig},
    nand::{
        sim::{PageStore, RamStore, SimNand},
        Geometry,
    },
    zns::{MountError, ZoneConfig, ZoneManager},
};

use crate::{
    driver::Driver,
    nand::{
        file::{FileStore, ImageError, ImageFile},
        image::Header,
        preset::Preset,
        timing::Timed,
    },
};
use clock::{Clock, DeviceModel, Execution};
use inprocess::{Counters, InProcess, Stats};
pub use jit::ExecutorKind;
use jit::HostExecutor;
use runner::Runner;

/// How a device runs.
#[derive(Debug, Clone, Copy)]
pub struct DeviceOptions {
    /// Submission/completion queue pairs.
    pub queues: u16,
    /// Commands in flight per queue pair.
    pub queue_depth: usize,
    /// The timing model modeled device time follows.
    pub timing: Timing,
    /// Limits of the computational side.
    pub programs: ProgramConfig,
    /// What runs kernels: the JIT (the default where the host has a code generator) or the
    /// interpreter. The modeled device CPU follows it (compiled or interpreted cycles).
    pub executor: ExecutorKind,
    /// Fault injection for power-loss tests: the NAND loses power after this many operations,
    /// counted from when the device is ready (after format or power-on recovery); the
    /// operation in flight is torn and every later command fails. `None` in normal use.
    pub power_cut_after_ops: Option<u64>,
    /// Fault injection for torn programs: the NAND loses power once this many more bytes
    /// (data and spare) have been programmed, counted like `power_cut_after_ops`; the program
    /// in flight is torn right there (its first bytes as intended, the rest garbled).
    pub power_cut_after_program_bytes: Option<u64>,
}

impl Default for DeviceOptions {
    fn default() -> Self {
        DeviceOptions {
            queues: 16,
            queue_depth: 32,
            timing: Timing::Image,
            programs: ProgramConfig::default(),
            executor: ExecutorKind::for_host(),
            power_cut_after_ops: None,
            power_cut_after_program_bytes: None,
        }
    }
}

/// Which timing model a device keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Timing {
    /// None: modeled time stays zero.
    Off,
    /// The preset the image was made with; none for an image that records none, and for a
    /// device in RAM.
    #[default]
    Image,
    /// This model.
    Model(DeviceModel),
}

impl Timing {
    /// The model for an image that records preset id `recorded` (0: none).
    pub fn for_image(self, recorded: u8) -> DeviceModel {
        match self {
            Timing::Off => DeviceModel::OFF,
            Timing::Image => Preset::from_id(recorded).map_or(DeviceModel::OFF, Preset::model),
            Timing::Model(model) => model,
        }
    }
}

/// Why a device could not be created or opened.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("the device could not be formatted: {0}")]
    Format(String),
    #[error("{path}: {reason}")]
    Mount { path: String, reason: String },
    #[error("could not start the device thread: {0}")]
    Thread(#[from] std::io::Error),
    #[error("the device stopped unexpectedly (its thread panicked); see the message above")]
    Crashed,
    #[error("cannot run kernels with the JIT: {0} (use --executor interp)")]
    Executor(jit::JitError),
}

/// Media a device runs on.
pub trait Media: PageStore + Send + std::fmt::Debug + 'static {}
impl<T: PageStore + Send + std::fmt::Debug + 'static> Media for T {}

/// A running device.
#[derive(Debug)]
pub struct Device<S: Media> {
    runner: Runner<InProcess<S>>,
    counters: Arc<Counters>,
    identify: common::zns::IdentifyZns,
}

/// A device over an image file.
pub type FileDevice = Device<FileStore>;
/// A device over RAM.
pub type RamDevice = Device<RamStore>;

/// Creates a device image at `path` (which must not exist) and formats it.
pub fn create_image(path: &Path, header: Header) -> Result<(), DeviceError> {
    let store = FileStore::create(path, header)?;
    format_store(store, header.zones)
        .map(drop)
        .inspect_err(|_| {
            // Leave no half-made image behind.
            let _ = std::fs::remove_file(path);
        })
}

/// Formats the media in `store` with `zones` (every block erased, the first checkpoint
/// written and flushed) and gives it back powered off.
pub fn format_store<S: PageStore>(store: S, zones: ZoneConfig) -> Result<S, DeviceError> {
    let mut manager = ZoneManager::format(SimNand::with_store(store), zones)
        .map_err(|e| DeviceError::Format(e.to_string()))?;
    manager
        .flush()
        .map_err(|s| DeviceError::Format(format!("the image could not be synced: {s}")))?;
    Ok(manager.into_nand().into_store())
}

/// The erase counts of the NAND blocks each zone holds now, by zone (in slot order; a zone
/// holds blocks from its first write until its reset, so an empty zone has none), read from
/// powered-off media as power-on recovery reads them: the zone manager's latest checkpoint and
/// each block's first page. Nothing is written; the media comes back with the counts. `name`
/// names the media in an error.
pub fn zone_erase_counts<S: PageStore>(
    store: S,
    zones: ZoneConfig,
    name: &str,
) -> Result<(Vec<Vec<u32>>, S), DeviceError> {
    let manager =
        ZoneManager::mount(SimNand::with_store(store), zones).map_err(|e| DeviceError::Mount {
            path: name.to_string(),
            reason: mount_reason(&e),
        })?;
    let layout = *manager.layout();
    let counts = (0..layout.nr_zones)
        .map(|zone| {
            (0..layout.config.zone_blocks as usize)
                .filter_map(|slot| manager.slot_block(zone, slot))
                .filter_map(|block| manager.erase_count(block))
                .collect()
        })
        .collect();
    Ok((counts, manager.into_nand().into_store()))
}

/// [`zone_erase_counts`] of the image at `path`, which no device may have open.
pub fn image_zone_erase_counts(path: &Path) -> Result<Vec<Vec<u32>>, DeviceError> {
    let store = FileStore::open(path)?;
    let zones = store.header().zones;
    let name = path.display().to_string();
    zone_erase_counts(store, zones, &name).map(|(counts, _)| counts)
}

impl Device<FileStore> {
    /// Opens the image at `path`: checks it, runs power-on recovery and starts the device.
    pub fn open(path: &Path, options: DeviceOptions) -> Result<Self, DeviceError> {
        Self::open_image(FileStore::open(path)?, options)
    }
}

impl<F: ImageFile + Send + std::fmt::Debug + 'static> Device<FileStore<F>> {
    /// Starts the device over an opened image: its zones and timing preset are the header's.
    pub fn open_image(store: FileStore<F>, options: DeviceOptions) -> Result<Self, DeviceError> {
        let header = store.header();
        let model = options.timing.for_image(header.timing_preset);
        let name = store.path().display().to_string();
        let nand = Timed::new(SimNand::with_store(store), model.nand);
        Self::recover(nand, header.zones, options, model, &name)
    }
}

impl Device<RamStore> {
    /// A freshly formatted device in RAM.
    pub fn in_ram(
        geometry: Geometry,
        zones: ZoneConfig,
        options: DeviceOptions,
    ) -> Result<Self, DeviceError> {
        let model = options.timing.for_image(0);
        let nand = Timed::new(SimNand::new(geometry), model.nand);
        let manager =
            ZoneManager::format(nand, zones).map_err(|e| DeviceError::Format(e.to_string()))?;
        Self::start(manager, options, model)
    }
}

impl<S: Media> Device<S> {
    /// Mounts existing media and starts the device. (`Timing::Image` means none here: media
    /// without an image header record no preset; [`Device::open_image`] reads it.)
    pub fn mount(
        store: S,
        zones: ZoneConfig,
        options: DeviceOptions,
        name: &str,
    ) -> Result<Self, DeviceError> {
        let model = options.timing.for_image(0);
        let nand = Timed::new(SimNand::with_store(store), model.nand);
        Self::recover(nand, zones, options, model, name)
    }

    /// Power-on recovery over `nand`, then the device.
    fn recover(
        nand: Timed<SimNand<S>>,
        zones: ZoneConfig,
        options: DeviceOptions,
        model: DeviceModel,
        name: &str,
    ) -> Result<Self, DeviceError> {
        let manager = ZoneManager::mount(nand, zones).map_err(|e| DeviceError::Mount {
            path: name.to_string(),
            reason: mount_reason(&e),
        })?;
        Self::start(manager, options, model)
    }

    fn start(
        mut manager: ZoneManager<Timed<SimNand<S>>>,
        options: DeviceOptions,
        model: DeviceModel,
    ) -> Result<Self, DeviceError> {
        if let Some(n) = options.power_cut_after_ops {
            manager.nand_mut().inner_mut().cut_power_after_ops(n);
        }
        if let Some(n) = options.power_cut_after_program_bytes {
            manager
                .nand_mut()
                .inner_mut()
                .cut_power_after_program_bytes(n);
        }
        // Modeled time starts with the power-on recovery's NAND work.
        let ready_ns = manager.nand().busy_until_ns();
        let executor = HostExecutor::new(options.executor).map_err(DeviceError::Executor)?;
        let execution = match options.executor {
            ExecutorKind::Jit => Execution::Compiled,
            ExecutorKind::Interp => Execution::Interpreted,
        };
        let controller = Controller::with_executor(manager, options.programs, executor);
        let identify = controller.identify();
        let counters = Arc::new(Counters::default());
        let clock = Clock::new(model.cpu, execution, model.nand.link_bytes_per_s, ready_ns);
        let backend = InProcess::new(controller, clock, Arc::clone(&counters));
        let runner = Runner::start(backend, options.queues, options.queue_depth)?;
        Ok(Device {
            runner,
            counters,
            identify,
        })
    }

    /// A driver over every queue pair: each thread that uses it submits on its own (see
    /// [`Driver`]).
    pub fn driver(&self) -> Driver {
        let queues = (0..self.runner.queues()).map(|q| self.runner.queue(q));
        Driver::new(queues.collect(), self.identify)
    }

    /// A driver on queue pair `qid` (modulo the number of queues).
    pub fn driver_on(&self, qid: u16) -> Driver {
        Driver::new(vec![self.runner.queue(qid)], self.identify)
    }

    /// What the device said when it started.
    pub fn identify(&self) -> common::zns::IdentifyZns {
        self.identify
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// Stops the device (after the commands it has taken) and gives the media back.
    pub fn close(self) -> Result<S, DeviceError> {
        let backend = self.runner.stop().ok_or(DeviceError::Crashed)?;
        Ok(backend
            .into_controller()
            .into_zones()
            .into_nand()
            .into_inner()
            .into_store())
    }
}

fn mount_reason<E: std::fmt::Debug>(err: &MountError<E>) -> String {
    match err {
        MountError::Unformatted => {
            "the device holds no zone metadata (it was never formatted); create it with `csd device create`".into()
        }
        MountError::Corrupted => {
            "the device's zone metadata is corrupt; the image cannot be mounted".into()
        }
        other => other.to_string(),
    }
}
