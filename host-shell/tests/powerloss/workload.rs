//! The power-loss workload: random file-system operations drawn from a seed, driven by the
//! model (it picks names that exist, or not, as each operation needs). Each operation's
//! after-state enters the model before the operation runs, so an operation cut in flight may
//! show its before or its after state.

use host_shell::lfs::{InodeNo, Lfs, LfsError, RenameFlags, SetAttr};
use proptest::prelude::Rng as _;
use proptest::test_runner::{RngAlgorithm, TestRng};

use super::model::{join, renamed, split, FileId, Model, Namespace, Node};
use testkit::rng::pattern;

/// The largest file the workload makes (6 blocks).
const MAX_FILE: usize = 24 * 1024;
/// Names files take, in any directory.
const FILE_NAMES: [&str; 5] = ["f0", "f1", "f2", "f3", "f4"];
/// Directories made first and never removed.
const FIXED_DIRS: [&str; 2] = ["a", "b"];
/// Directories that come, go and move, directly below the root, `a` or `b`.
const MOVING_DIRS: [&str; 2] = ["c", "d"];
/// A file written once and never changed: zones holding it stay partly live, so the cleaner
/// has to move it.
const COLD: &str = "a/cold";
const COLD_BYTES: usize = 40 * 1024;
/// The name the replace pattern writes to before renaming over its target.
const TMP: &str = "tmp";

/// A workload: its seed and how many operations it draws after setting up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub seed: u64,
    pub steps: usize,
}

/// What a workload did, each operation counted when it starts.
#[derive(Debug, Default, Clone, Copy)]
pub struct Coverage {
    pub writes: u64,
    pub truncates: u64,
    pub creates: u64,
    pub unlinks: u64,
    pub renames: u64,
    /// Renames onto an existing file (which they replace).
    pub renames_over: u64,
    /// Renames into another directory.
    pub renames_across: u64,
    pub dir_renames: u64,
    pub mkdirs: u64,
    pub rmdirs: u64,
    /// Write a temporary file, fsync it, rename it over the target.
    pub replaces: u64,
    pub fsyncs: u64,
    pub gc_steps: u64,
    pub checkpoints: u64,
}

/// The workload's random numbers: proptest's ChaCha, not `testkit::rng`, because the sweeps'
/// seeds, the placement regression's seed and every replay string printed so far name
/// workloads drawn from this sequence.
#[derive(Debug)]
pub struct Rng(TestRng);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        Rng(TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
    }

    pub fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            items.get(self.below(items.len() as u64) as usize)
        }
    }
}

/// The inode at `path` ("" for the root).
fn ino(lfs: &Lfs, path: &str) -> Result<InodeNo, LfsError> {
    let mut ino = InodeNo::ROOT;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        ino = lfs.lookup(ino, part.as_bytes())?.ino;
    }
    Ok(ino)
}

/// Files the workload may change (not the cold one).
fn files(ns: &Namespace) -> Vec<(String, FileId)> {
    ns.iter()
        .filter_map(|(p, n)| match n {
            Node::File(f) if p != COLD => Some((p.clone(), *f)),
            _ => None,
        })
        .collect()
}

/// Directories files may go in ("" for the root).
fn dirs(ns: &Namespace) -> Vec<String> {
    std::iter::once(String::new())
        .chain(
            ns.iter()
                .filter(|(_, n)| **n == Node::Dir)
                .map(|(p, _)| p.clone()),
        )
        .collect()
}

/// Where the moving directory `name` is, if it exists.
fn moving_dir(ns: &Namespace, name: &str) -> Option<String> {
    ns.iter()
        .find(|(p, n)| **n == Node::Dir && split(p).1 == name)
        .map(|(p, _)| p.clone())
}

/// Runs `spec` against `lfs`, recording every operation in `model`; stops at the first error
/// (the power cut).
pub fn run(lfs: &Lfs, model: &mut Model, spec: Spec, cov: &mut Coverage) -> Result<(), LfsError> {
    let mut w = Workload {
        lfs,
        model,
        rng: Rng::new(spec.seed),
        cov,
        trace: std::env::var_os("CSD_POWERCUT_TRACE").is_some(),
    };
    w.set_up()?;
    for _ in 0..spec.steps {
        w.step()?;
    }
    Ok(())
}

struct Workload<'a> {
    lfs: &'a Lfs,
    model: &'a mut Model,
    rng: Rng,
    cov: &'a mut Coverage,
    /// Print each operation (`CSD_POWERCUT_TRACE` set), to follow a replayed case.
    trace: bool,
}

impl Workload<'_> {
    fn note(&self, what: std::fmt::Arguments<'_>) {
        if self.trace {
            println!("  op: {what}");
        }
    }

    /// The fixed directories and the cold file, if they are not there (a workload may start
    /// on what a cut left).
    fn set_up(&mut self) -> Result<(), LfsError> {
        for d in FIXED_DIRS {
            if !self.model.ns().contains_key(d) {
                self.mkdir("", d)?;
            }
        }
        if !self.model.ns().contains_key(COLD) {
            let f = self.create(COLD)?;
            let bytes = pattern(self.rng.next(), COLD_BYTES);
            self.write_at(f, COLD, 0, bytes)?;
            self.fsync(f, COLD)?;
        }
        Ok(())
    }

    fn step(&mut self) -> Result<(), LfsError> {
        let ns = self.model.ns().clone();
        let file = self.rng.pick(&files(&ns)).cloned();
        let roll = self.rng.below(100);
        let Some((path, f)) = file else {
            let dir = self.rng.pick(&dirs(&ns)).cloned().unwrap_or_default();
            let name = self.rng.pick(&FILE_NAMES).copied().unwrap_or("f0");
            self.create(&join(&dir, name))?;
            return Ok(());
        };
        match roll {
            0..30 => self.write(f, &path),
            30..36 => self.truncate(f, &path),
            36..44 => {
                let dir = self.rng.pick(&dirs(&ns)).cloned().unwrap_or_default();
                let name = self.rng.pick(&FILE_NAMES).copied().unwrap_or("f0");
                let target = join(&dir, name);
                match ns.get(&target) {
                    None => self.create(&target).map(|_| ()),
                    Some(Node::File(g)) if target != COLD => self.write(*g, &target),
                    Some(_) => Ok(()),
                }
            }
            44..49 => self.unlink(&path),
            49..61 => self.rename_file(&path),
            61..65 => self.replace(&path),
            65..71 => self.dir_op(),
            71..87 => self.fsync(f, &path),
            87..96 => {
                self.cov.gc_steps += 1;
                self.note(format_args!("gc_step"));
                self.lfs.gc_step().map(|_| ())
            }
            _ => {
                self.cov.checkpoints += 1;
                self.note(format_args!("checkpoint"));
                self.lfs.checkpoint()?;
                self.model.synced_all();
                Ok(())
            }
        }
    }

    fn mkdir(&mut self, parent: &str, name: &str) -> Result<(), LfsError> {
        self.cov.mkdirs += 1;
        self.note(format_args!("mkdir {}", join(parent, name)));
        let mut ns = self.model.ns().clone();
        ns.insert(join(parent, name), Node::Dir);
        let p = ino(self.lfs, parent)?;
        self.model.set_ns(ns);
        self.lfs.mkdir(p, name.as_bytes(), 0o755, 0, 0).map(|_| ())
    }

    fn create(&mut self, path: &str) -> Result<FileId, LfsError> {
        self.cov.creates += 1;
        self.note(format_args!("create {path}"));
        let (parent, name) = split(path);
        let p = ino(self.lfs, parent)?;
        let f = self.model.new_file();
        let mut ns = self.model.ns().clone();
        ns.insert(path.to_string(), Node::File(f));
        self.model.set_ns(ns);
        self.lfs.create(p, name.as_bytes(), 0o644, 0, 0)?;
        Ok(f)
    }

    fn write_at(
        &mut self,
        f: FileId,
        path: &str,
        off: usize,
        data: Vec<u8>,
    ) -> Result<(), LfsError> {
        self.cov.writes += 1;
        self.note(format_args!("write {path} at {off}, {} bytes", data.len()));
        let i = ino(self.lfs, path)?;
        let mut bytes = self.model.content(f).to_vec();
        let end = off + data.len();
        if bytes.len() < end {
            bytes.resize(end, 0);
        }
        bytes[off..end].copy_from_slice(&data);
        self.model.set_content(f, bytes);
        self.lfs.write(i, off as u64, &data).map(|_| ())
    }

    /// A write somewhere in or just past the file: a few bytes, whole blocks, or up to two
    /// blocks and a bit at any offset.
    fn write(&mut self, f: FileId, path: &str) -> Result<(), LfsError> {
        let len_now = self.model.content(f).len() as u64;
        let (off, len) = match self.rng.below(4) {
            0 => (self.rng.below(len_now + 1), 1 + self.rng.below(600)),
            1 => (
                4096 * self.rng.below((MAX_FILE / 4096) as u64),
                4096 * (1 + self.rng.below(3)),
            ),
            _ => (self.rng.below(len_now + 2048), 1 + self.rng.below(9000)),
        };
        let off = off.min(MAX_FILE as u64 - 1) as usize;
        let len = (len as usize).min(MAX_FILE - off);
        let data = pattern(self.rng.next(), len);
        self.write_at(f, path, off, data)
    }

    fn truncate(&mut self, f: FileId, path: &str) -> Result<(), LfsError> {
        self.cov.truncates += 1;
        let len_now = self.model.content(f).len() as u64;
        let size = self.rng.below((len_now + 3000).min(MAX_FILE as u64) + 1);
        self.note(format_args!("truncate {path} to {size}"));
        let i = ino(self.lfs, path)?;
        let mut bytes = self.model.content(f).to_vec();
        bytes.resize(size as usize, 0);
        self.model.set_content(f, bytes);
        self.lfs
            .setattr(
                i,
                SetAttr {
                    size: Some(size),
                    ..SetAttr::default()
                },
            )
            .map(|_| ())
    }

    fn unlink(&mut self, path: &str) -> Result<(), LfsError> {
        self.cov.unlinks += 1;
        self.note(format_args!("unlink {path}"));
        let (parent, name) = split(path);
        let p = ino(self.lfs, parent)?;
        let mut ns = self.model.ns().clone();
        ns.remove(path);
        self.model.set_ns(ns);
        self.lfs.unlink(p, name.as_bytes())
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), LfsError> {
        self.cov.renames += 1;
        self.note(format_args!("rename {from} to {to}"));
        let ns = self.model.ns();
        if ns.contains_key(to) {
            self.cov.renames_over += 1;
        }
        let ((fp, fname), (tp, tname)) = (split(from), split(to));
        if fp != tp {
            self.cov.renames_across += 1;
        }
        let after = renamed(ns, from, to);
        let (fi, ti) = (ino(self.lfs, fp)?, ino(self.lfs, tp)?);
        self.model.set_ns(after);
        self.lfs.rename(
            fi,
            fname.as_bytes(),
            ti,
            tname.as_bytes(),
            RenameFlags::default(),
        )
    }

    /// Renames a file to a name in any directory; over the file there if there is one.
    fn rename_file(&mut self, path: &str) -> Result<(), LfsError> {
        let ns = self.model.ns().clone();
        let dir = self.rng.pick(&dirs(&ns)).cloned().unwrap_or_default();
        let name = self.rng.pick(&FILE_NAMES).copied().unwrap_or("f0");
        let to = join(&dir, name);
        match ns.get(&to) {
            Some(Node::Dir) => Ok(()),
            _ if to == path => Ok(()),
            _ => self.rename(path, &to),
        }
    }

    /// The atomic-replace pattern: a new file with the whole new content, fsync'ed, renamed
    /// over `target`.
    fn replace(&mut self, target: &str) -> Result<(), LfsError> {
        let tmp = join(split(target).0, TMP);
        if self.model.ns().contains_key(&tmp) {
            return Ok(());
        }
        self.cov.replaces += 1;
        let f = self.create(&tmp)?;
        let len = 1 + self.rng.below(MAX_FILE as u64 / 2) as usize;
        let bytes = pattern(self.rng.next(), len);
        self.write_at(f, &tmp, 0, bytes)?;
        self.fsync(f, &tmp)?;
        self.rename(&tmp, target)
    }

    /// Makes, moves or removes one of the moving directories (files inside move along).
    fn dir_op(&mut self) -> Result<(), LfsError> {
        let ns = self.model.ns().clone();
        let name = self.rng.pick(&MOVING_DIRS).copied().unwrap_or("c");
        let parent = *self.rng.pick(&["", "a", "b"]).unwrap_or(&"");
        let Some(path) = moving_dir(&ns, name) else {
            return self.mkdir(parent, name);
        };
        let empty = !ns.keys().any(|p| p.starts_with(&format!("{path}/")));
        if empty && self.rng.below(3) == 0 {
            self.cov.rmdirs += 1;
            self.note(format_args!("rmdir {path}"));
            let (pp, pname) = split(&path);
            let p = ino(self.lfs, pp)?;
            let mut after = ns.clone();
            after.remove(&path);
            self.model.set_ns(after);
            return self.lfs.rmdir(p, pname.as_bytes());
        }
        // Keep its name or take the other moving name if it is free.
        let other = MOVING_DIRS.iter().find(|n| **n != name).copied();
        let new_name = match other {
            Some(o) if moving_dir(&ns, o).is_none() && self.rng.below(2) == 0 => o,
            _ => name,
        };
        let to = join(parent, new_name);
        if to == path || ns.contains_key(&to) {
            return Ok(());
        }
        self.cov.dir_renames += 1;
        self.rename(&path, &to)
    }

    fn fsync(&mut self, f: FileId, path: &str) -> Result<(), LfsError> {
        self.cov.fsyncs += 1;
        self.note(format_args!("fsync {path}"));
        let i = ino(self.lfs, path)?;
        self.lfs.fsync(i, false)?;
        self.model.fsynced(f);
        Ok(())
    }
}
