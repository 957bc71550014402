//! Power loss under the file system, the firmware's zone manager and the emulated NAND (the
//! zone manager runs in the test's thread, `testkit::device`): run the workload, cut power at a
//! chosen point, power on, mount, fsck and compare what is there with the model.
//!
//! Three classes of cuts, each a [`cases::Tally`] that prints one line
//! `reliability: powercut <class> tried=N failures=M` (read by `cargo xtask reliability`):
//! - `every-op`: one fixed workload, cut at every single NAND operation in turn;
//! - `random-pairs`: a cut, power on, mount (its recovery may be cut too) and more workload,
//!   then a second cut, both at random points;
//! - `torn`: a cut after a random number of programmed bytes, so a page program is torn
//!   mid-page;
//! - `host-crash`: the device's image file behind the emulated host page cache
//!   (`host_shell::nand::hostcache`); power goes at a cut point and the host crashes with it,
//!   its disk keeping what was synced plus none, all or a random half of the unsynced pages.
//!
//! Short mode (no `CSD_RELIABILITY_SECONDS`) is deterministic: the sweep and a few random
//! cases from a fixed seed. Long mode loops the random classes until the seconds are spent,
//! from `CSD_RELIABILITY_SEED` or a seed of the clock; every failure names a case that
//! `CSD_POWERCUT_CASE='...'` replays (see [`cases::Case`]).

pub mod cases;
pub mod model;
pub mod workload;

use std::path::Path;

use common::Status;
use firmware::{nand::sim::RamStore, zns::ZoneConfig};
use host_shell::{
    device::format_store,
    lfs::{FileKind, InodeNo, Lfs, LfsError, LfsStats},
    nand::{
        file::FileStore,
        hostcache::{CachedFile, RamFile},
        image::{Header, ImageLayout},
    },
};
use testkit::{
    device::{self as ram, Media},
    fs::read_all,
    geometry,
};

use model::{Model, Observed, Seen};
use workload::{Coverage, Spec};

/// Where power goes off, counted from when the device is ready after power-on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    None,
    /// After this many NAND operations (the next one is torn).
    Ops(u64),
    /// After this many programmed bytes (the program passing them is torn there).
    ProgramBytes(u64),
}

/// Each file's blocks: (path, LBA runs as (start, count)).
pub type Placement = Vec<(String, Vec<(u64, u32)>)>;

/// What one power-on did until the cut.
#[derive(Debug, Clone, Copy, Default)]
pub struct Phase {
    /// NAND operations and programmed bytes from when the device was ready.
    pub ops: u64,
    pub program_bytes: u64,
    /// Whether the cut interrupted the mount or the workload.
    pub interrupted: bool,
    pub coverage: Coverage,
    pub lfs: Option<LfsStats>,
}

/// A formatted device with a fresh file system, powered off: in RAM, and as an image file on
/// an emulated host disk (for host crashes).
#[derive(Debug, Clone)]
pub struct Bench {
    store: RamStore,
    image: RamFile,
    zones: ZoneConfig,
}

/// Which unsynced host pages a host crash keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    None,
    All,
    /// Each page with even odds, drawn from this seed.
    Random(u64),
}

type ImageStore = FileStore<CachedFile<RamFile>>;

fn open_image(disk: RamFile) -> Result<ImageStore, String> {
    FileStore::open_file(CachedFile::over_ram(disk), Path::new("host.img"))
        .map_err(|e| format!("the image does not open: {e}"))
}

impl Bench {
    /// The tiny device with zones of two blocks (32 LBAs, 30 zones): data zones fill, the
    /// metadata stream moves on and checkpoints come after few operations, so a short
    /// workload meets all of them.
    pub fn new() -> Bench {
        let geometry = geometry::tiny();
        let zones = ZoneConfig {
            zone_blocks: 2,
            ..geometry::zones_for(&geometry)
        };
        let device = ram::format(geometry, zones);
        Lfs::mkfs(&device, 0, 0).expect("mkfs");
        let store = ram::power_off(&device);
        let header = Header {
            geometry,
            zones,
            timing_preset: 0,
        };
        let cache = CachedFile::over_ram(RamFile::new(ImageLayout::of(&geometry).len));
        let image = FileStore::create_in(cache, Path::new("host.img"), header).expect("image");
        let image = format_store(image, zones).expect("format");
        let device = ram::power_on(image, zones, ram::Cut::NONE).expect("the device starts");
        Lfs::mkfs(&device, 0, 0).expect("mkfs");
        let cache = ram::power_off(&device).into_file();
        assert!(
            cache.unsynced_pages().is_empty(),
            "mkfs left pages unsynced"
        );
        let image = cache.crash(|_| false).expect("the host disk");
        Bench {
            store,
            image,
            zones,
        }
    }

    /// Powers on over `store` with `cut` armed, mounts and runs `spec`; gives the media back
    /// once the cut has happened (or the workload is done).
    fn phase<S: Media>(
        &self,
        store: S,
        cut: Cut,
        model: &mut Model,
        spec: Spec,
    ) -> Result<(S, Phase), String> {
        let cut = match cut {
            Cut::None => ram::Cut::NONE,
            Cut::Ops(n) => ram::Cut::ops(n),
            Cut::ProgramBytes(n) => ram::Cut::program_bytes(n),
        };
        let device = ram::power_on(store, self.zones, cut)?;
        let mut phase = Phase::default();
        let result = Lfs::mount(&device).and_then(|lfs| {
            let r = workload::run(&lfs, model, spec, &mut phase.coverage);
            phase.lfs = lfs.stats().ok();
            r
        });
        let s = ram::nand_stats(&device);
        phase.ops = s.reads + s.programs + s.erases;
        phase.program_bytes = s.program_bytes;
        phase.interrupted = result.is_err();
        match (cut, result) {
            (_, Ok(())) => {}
            (ram::Cut::NONE, Err(e)) => {
                return Err(format!("the workload failed with no cut: {e}"))
            }
            (_, Err(e)) if !is_power_loss(&e) => {
                return Err(format!("the cut surfaced as another error: {e}"));
            }
            (_, Err(_)) => {}
        }
        Ok((ram::power_off(&device), phase))
    }

    /// Powers on over `store`, mounts, runs fsck and checks the state against `model`;
    /// returns the media (with the mount's checkpoint) and what it showed.
    fn recover<S: Media>(&self, store: S, model: &Model) -> Result<(S, Observed), String> {
        let device = ram::power_on(store, self.zones, ram::Cut::NONE)
            .map_err(|e| format!("after the cut: {e}"))?;
        let lfs = Lfs::mount(&device).map_err(|e| format!("mount failed: {e}"))?;
        let problems = lfs.fsck().map_err(|e| format!("fsck failed: {e}"))?;
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
            return Err(format!("fsck: {}", list.join("; ")));
        }
        let seen = observe(&lfs).map_err(|e| format!("reading the tree back failed: {e}"))?;
        model.check(&seen)?;
        drop(lfs);
        Ok((ram::power_off(&device), seen))
    }

    /// Runs `spec` with no cut; fails if the workload or its final state is wrong.
    pub fn dry_run(&self, spec: Spec) -> Result<Phase, String> {
        let mut model = Model::empty();
        let (store, phase) = self.phase(self.store.clone(), Cut::None, &mut model, spec)?;
        self.recover(store, &model)?;
        Ok(phase)
    }

    /// Runs `spec` with no cut and tells where each file's blocks ended up, and the NAND
    /// operations it took.
    pub fn placement(&self, spec: Spec) -> Result<(Placement, u64), String> {
        let mut model = Model::empty();
        let (store, phase) = self.phase(self.store.clone(), Cut::None, &mut model, spec)?;
        let device = ram::power_on(store, self.zones, ram::Cut::NONE)?;
        let lfs = Lfs::mount(&device).map_err(|e| format!("mount failed: {e}"))?;
        let seen = observe(&lfs).map_err(|e| format!("reading the tree back failed: {e}"))?;
        let mut out = Vec::new();
        for (path, s) in seen {
            if let Seen::File { ino, .. } = s {
                let snap = lfs
                    .snapshot(InodeNo(ino))
                    .map_err(|e| format!("{path}: snapshot failed: {e}"))?;
                let runs = snap
                    .extents
                    .iter()
                    .map(|e| (e.start_lba, e.lba_count))
                    .collect();
                out.push((path, runs));
            }
        }
        Ok((out, phase.ops))
    }

    /// One cut at `cut` during `spec`, then recovery and the check.
    pub fn single(&self, spec: Spec, cut: Cut) -> Result<(), String> {
        let mut model = Model::empty();
        let (store, phase) = self.phase(self.store.clone(), cut, &mut model, spec)?;
        if !phase.interrupted {
            return Err("the cut fell after the workload's last operation".into());
        }
        self.recover(store, &model).map(|_| ())
    }

    /// Power goes after `cut` operations during `spec` over the image file, and the host
    /// crashes with it, its disk keeping the unsynced pages `keep` picks; then recovery and
    /// the check.
    pub fn host_crash(&self, spec: Spec, cut: u64, keep: Keep) -> Result<(), String> {
        let mut result = Err("no crash was tried".to_string());
        self.host_crashes(spec, cut, &[keep], |_, r| result = r)?;
        result
    }

    /// [`Bench::host_crash`] for each of `keeps` from the same moment (the workload runs
    /// once): `each` gets every crash's result. `Err` if the workload itself went wrong.
    pub fn host_crashes(
        &self,
        spec: Spec,
        cut: u64,
        keeps: &[Keep],
        mut each: impl FnMut(Keep, Result<(), String>),
    ) -> Result<(), String> {
        let mut model = Model::empty();
        let store = open_image(self.image.clone())?;
        let (store, phase) = self.phase(store, Cut::Ops(cut), &mut model, spec)?;
        if !phase.interrupted {
            return Err("the cut fell after the workload's last operation".into());
        }
        let cache = store.into_file();
        for &keep in keeps {
            let mut rng = workload::Rng::new(match keep {
                Keep::Random(seed) => seed,
                _ => 0,
            });
            let crashed = cache.clone().crash(|_| match keep {
                Keep::None => false,
                Keep::All => true,
                Keep::Random(_) => rng.below(2) == 1,
            });
            let result = crashed
                .map_err(|e| format!("the host crash: {e}"))
                .and_then(open_image)
                .and_then(|store| self.recover(store, &model).map(|_| ()));
            each(keep, result);
        }
        Ok(())
    }

    /// A cut after `a` operations during `spec`; power on, mount and run `then` with a cut
    /// after `b` operations (the mount's included); then recovery and the check. `b` is
    /// `None` to count the second power-on's operations instead (returned).
    pub fn pair(&self, spec: Spec, a: u64, then: Spec, b: Option<u64>) -> Result<u64, String> {
        let mut model = Model::empty();
        let (store, phase) = self.phase(self.store.clone(), Cut::Ops(a), &mut model, spec)?;
        if !phase.interrupted {
            return Err("the first cut fell after the workload's last operation".into());
        }
        // What the first recovery shows is fixed by the media: a recovery on a copy shows it
        // (and is the first check); the second power-on starts from it, all of it durable.
        let (_, seen) = self
            .recover(store.clone(), &model)
            .map_err(|e| format!("after the first cut: {e}"))?;
        let mut model = Model::from_observed(&seen);
        let cut = b.map_or(Cut::None, Cut::Ops);
        let (store, phase) = self.phase(store, cut, &mut model, then)?;
        if b.is_some() && !phase.interrupted {
            return Err("the second cut fell after the workload's last operation".into());
        }
        self.recover(store, &model)
            .map_err(|e| format!("after the second cut: {e}"))?;
        Ok(phase.ops)
    }
}

/// Whether `e` is how a power cut reaches the file system: the device aborts every command.
fn is_power_loss(e: &LfsError) -> bool {
    matches!(e, LfsError::Io(d) if d.status() == Some(Status::CommandAborted))
}

/// Every path below the root and what it holds.
fn observe(lfs: &Lfs) -> Result<Observed, LfsError> {
    let mut seen = Observed::new();
    let mut todo = vec![(InodeNo::ROOT, String::new())];
    while let Some((dir, path)) = todo.pop() {
        for e in lfs.readdir(dir, 0)? {
            if e.name == b"." || e.name == b".." {
                continue;
            }
            let name = String::from_utf8_lossy(&e.name);
            let p = model::join(&path, &name);
            let s = match e.kind {
                FileKind::Dir => {
                    todo.push((e.ino, p.clone()));
                    Seen::Dir
                }
                FileKind::File => Seen::File {
                    ino: e.ino.0,
                    bytes: read_all(lfs, e.ino),
                },
                _ => Seen::Other,
            };
            seen.insert(p, s);
        }
    }
    Ok(seen)
}
