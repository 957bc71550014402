//! Power loss under the whole stack (file system, driver, device, zone manager, emulated NAND):
//! run the workload, cut power at a chosen point, power on, mount, fsck and compare what is
//! there with the model.
//!
//! Three classes of cuts, each a [`Tally`] that prints one line
//! `reliability: powercut <class> tried=N failures=M` (read by `cargo xtask reliability`):
//! - `every-op`: one fixed workload, cut at every single NAND operation in turn;
//! - `random-pairs`: a cut, power on, mount (its recovery may be cut too) and more workload,
//!   then a second cut, both at random points;
//! - `torn`: a cut after a random number of programmed bytes, so a page program is torn
//!   mid-page.
//!
//! Short mode (no `CSD_RELIABILITY_SECONDS`) is deterministic: the sweep and a few random
//! cases from a fixed seed. Long mode loops the random classes until the seconds are spent,
//! from `CSD_RELIABILITY_SEED` or a seed of the clock; every failure names a case that
//! `CSD_POWERCUT_CASE='...'` replays (see [`Case`]).

pub mod model;
pub mod workload;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use common::Status;
use firmware::{
    nand::{sim::RamStore, Geometry},
    zns::ZoneConfig,
};
use host_shell::{
    device::{DeviceOptions, RamDevice},
    lfs::{FileKind, InodeNo, Lfs, LfsError, LfsStats},
};

use crate::lfs_common::{read_all, tiny_geometry, zones_for};
use model::{Model, Observed, Seen};
use workload::{Coverage, Rng, Spec};

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

/// A formatted device with a fresh file system, powered off.
#[derive(Debug, Clone)]
pub struct Bench {
    store: RamStore,
    zones: ZoneConfig,
}

impl Bench {
    /// The tiny device with zones of two blocks (32 LBAs, 30 zones): data zones fill, the
    /// metadata stream moves on and checkpoints come after few operations, so a short
    /// workload meets all of them.
    pub fn new() -> Bench {
        let geometry: Geometry = tiny_geometry();
        let zones = ZoneConfig {
            zone_blocks: 2,
            ..zones_for(&geometry)
        };
        let device = RamDevice::in_ram(geometry, zones, DeviceOptions::default())
            .expect("the device starts");
        Lfs::mkfs(&device.driver(), 0, 0).expect("mkfs");
        let store = device.close().expect("the device stops");
        Bench { store, zones }
    }

    /// Powers on over `store` with `cut` armed, mounts and runs `spec`; gives the media back
    /// once the cut has happened (or the workload is done).
    fn phase(
        &self,
        store: RamStore,
        cut: Cut,
        model: &mut Model,
        spec: Spec,
    ) -> Result<(RamStore, Phase), String> {
        let options = DeviceOptions {
            power_cut_after_ops: match cut {
                Cut::Ops(n) => Some(n),
                _ => None,
            },
            power_cut_after_program_bytes: match cut {
                Cut::ProgramBytes(n) => Some(n),
                _ => None,
            },
            ..DeviceOptions::default()
        };
        let device = RamDevice::mount(store, self.zones, options, "ram")
            .map_err(|e| format!("the device does not power on: {e}"))?;
        let start = device.stats();
        let mut phase = Phase::default();
        let result = Lfs::mount(&device.driver()).and_then(|lfs| {
            let r = workload::run(&lfs, model, spec, &mut phase.coverage);
            phase.lfs = lfs.stats().ok();
            r
        });
        let s = device.stats().since(&start);
        phase.ops = s.nand_reads + s.nand_programs + s.nand_erases;
        phase.program_bytes = s.nand_program_bytes;
        phase.interrupted = result.is_err();
        match (cut, result) {
            (_, Ok(())) => {}
            (Cut::None, Err(e)) => return Err(format!("the workload failed with no cut: {e}")),
            (_, Err(e)) if !is_power_loss(&e) => {
                return Err(format!("the cut surfaced as another error: {e}"));
            }
            (_, Err(_)) => {}
        }
        let store = device
            .close()
            .map_err(|e| format!("the device did not stop: {e}"))?;
        Ok((store, phase))
    }

    /// Powers on over `store`, mounts, runs fsck and checks the state against `model`;
    /// returns the media (with the mount's checkpoint) and what it showed.
    fn recover(&self, store: RamStore, model: &Model) -> Result<(RamStore, Observed), String> {
        let device = RamDevice::mount(store, self.zones, DeviceOptions::default(), "ram")
            .map_err(|e| format!("the device does not power on after the cut: {e}"))?;
        let lfs = Lfs::mount(&device.driver()).map_err(|e| format!("mount failed: {e}"))?;
        let problems = lfs.fsck().map_err(|e| format!("fsck failed: {e}"))?;
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
            return Err(format!("fsck: {}", list.join("; ")));
        }
        let seen = observe(&lfs).map_err(|e| format!("reading the tree back failed: {e}"))?;
        model.check(&seen)?;
        drop(lfs);
        let store = device
            .close()
            .map_err(|e| format!("the device did not stop: {e}"))?;
        Ok((store, seen))
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
        let device = RamDevice::mount(store, self.zones, DeviceOptions::default(), "ram")
            .map_err(|e| format!("the device does not power on: {e}"))?;
        let lfs = Lfs::mount(&device.driver()).map_err(|e| format!("mount failed: {e}"))?;
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
                FileKind::Symlink => Seen::Other,
            };
            seen.insert(p, s);
        }
    }
    Ok(seen)
}

/// A case of any class, as failures print it and `CSD_POWERCUT_CASE` takes it:
/// `every-op seed=S steps=N cut=C`, `torn seed=S steps=N bytes=B`,
/// `random-pairs seed=S steps=N a=A then=T b=B` (the second workload's seed is T; `b=end`
/// cuts after it is done).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    EveryOp {
        spec: Spec,
        cut: u64,
    },
    Torn {
        spec: Spec,
        bytes: u64,
    },
    /// `b: None` cuts the second time only after the second workload is done.
    Pair {
        spec: Spec,
        a: u64,
        then: u64,
        b: Option<u64>,
    },
}

impl Case {
    pub fn run(&self, bench: &Bench) -> Result<(), String> {
        match *self {
            Case::EveryOp { spec, cut } => bench.single(spec, Cut::Ops(cut)),
            Case::Torn { spec, bytes } => bench.single(spec, Cut::ProgramBytes(bytes)),
            Case::Pair { spec, a, then, b } => {
                bench.pair(spec, a, second(spec, then), b).map(|_| ())
            }
        }
    }

    pub fn parse(text: &str) -> Option<Case> {
        let mut words = text.split_whitespace();
        let class = words.next()?;
        let mut get = |key: &str| -> Option<u64> {
            let word = words.next()?;
            word.strip_prefix(key)?.strip_prefix('=')?.parse().ok()
        };
        let spec = Spec {
            seed: get("seed")?,
            steps: get("steps")? as usize,
        };
        match class {
            "every-op" => Some(Case::EveryOp {
                spec,
                cut: get("cut")?,
            }),
            "torn" => Some(Case::Torn {
                spec,
                bytes: get("bytes")?,
            }),
            "random-pairs" => Some(Case::Pair {
                spec,
                a: get("a")?,
                then: get("then")?,
                b: match words.next()?.strip_prefix("b=")? {
                    "end" => None,
                    n => Some(n.parse().ok()?),
                },
            }),
            _ => None,
        }
    }
}

impl std::fmt::Display for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Case::EveryOp { spec, cut } => {
                write!(
                    f,
                    "every-op seed={} steps={} cut={cut}",
                    spec.seed, spec.steps
                )
            }
            Case::Torn { spec, bytes } => {
                write!(
                    f,
                    "torn seed={} steps={} bytes={bytes}",
                    spec.seed, spec.steps
                )
            }
            Case::Pair { spec, a, then, b } => write!(
                f,
                "random-pairs seed={} steps={} a={a} then={then} b={}",
                spec.seed,
                spec.steps,
                b.map_or("end".to_string(), |b| b.to_string())
            ),
        }
    }
}

/// The workload after a first cut: as long as the first, from its own seed.
pub fn second(first: Spec, seed: u64) -> Spec {
    Spec {
        seed,
        steps: first.steps,
    }
}

/// Runs `f`, turning a panic into an error.
pub fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into());
        Err(format!("panicked: {what}"))
    })
}

/// Failures printed in full per class; the rest are counted.
const SHOWN_FAILURES: usize = 5;

/// Cases tried and failed in one class.
#[derive(Debug)]
pub struct Tally {
    class: &'static str,
    tried: u64,
    failures: u64,
}

impl Tally {
    pub fn new(class: &'static str) -> Tally {
        Tally {
            class,
            tried: 0,
            failures: 0,
        }
    }

    /// Runs `case` and counts it.
    pub fn run(&mut self, bench: &Bench, case: Case) {
        let result = guarded(|| case.run(bench));
        self.record(&case.to_string(), result);
    }

    pub fn record<T>(&mut self, case: &str, result: Result<T, String>) {
        self.tried += 1;
        if let Err(why) = result {
            self.failures += 1;
            if self.failures <= SHOWN_FAILURES as u64 {
                println!(
                    "powercut failure: {case}: {why}\n  replay: CSD_POWERCUT_CASE='{case}' cargo \
                     test --release -p host-shell --test lfs_powerloss replay -- --ignored \
                     --nocapture"
                );
            }
        }
    }

    /// Prints the summary line; fails the test if any case failed.
    pub fn finish(self) {
        println!(
            "reliability: powercut {} tried={} failures={}",
            self.class, self.tried, self.failures
        );
        assert!(
            self.failures == 0,
            "{} of {} {} cases failed (the first {SHOWN_FAILURES} are printed above)",
            self.failures,
            self.tried,
            self.class
        );
    }
}

/// How long the random classes run.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    /// Short mode: this many cases from a fixed seed.
    Cases(u64),
    /// Long mode: until this instant.
    Until(Instant),
}

impl Budget {
    /// Short mode with `cases`, or long mode when `CSD_RELIABILITY_SECONDS` is set.
    pub fn from_env(cases: u64) -> Budget {
        match std::env::var("CSD_RELIABILITY_SECONDS")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        {
            Some(s) => Budget::Until(Instant::now() + Duration::from_secs(s)),
            None => Budget::Cases(cases),
        }
    }

    /// Whether case number `n` (from 0) should run.
    pub fn allows(&self, n: u64) -> bool {
        match *self {
            Budget::Cases(c) => n < c,
            Budget::Until(t) => Instant::now() < t,
        }
    }

    /// The seed of the random classes: fixed in short mode.
    pub fn seed(&self) -> u64 {
        match self {
            Budget::Cases(_) => 1,
            Budget::Until(_) => std::env::var("CSD_RELIABILITY_SEED")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as u64)
                }),
        }
    }
}

/// A random workload for the random classes: its length varies so cuts meet the file system
/// at every size of its log and data.
pub fn random_spec(rng: &mut Rng) -> Spec {
    Spec {
        seed: rng.next(),
        steps: 30 + rng.below(150) as usize,
    }
}
