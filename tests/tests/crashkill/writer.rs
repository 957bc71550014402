//! The writer: a separate process that changes files through the mount and journals each
//! change outside it.

use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    io::Write,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use testkit::rng::Rng;

use super::op::Op;
use super::{pattern, DIRS, MAX_FILE_BYTES, MAX_ORPHANS, MAX_WRITE_BYTES, NAMES};

/// What the writer knows of one of its names.
#[derive(Debug)]
struct WFile {
    size: u64,
    fd: Option<File>,
}

#[derive(Debug)]
struct Writer {
    root: PathBuf,
    rng: Rng,
    seq: u64,
    files: BTreeMap<String, WFile>,
    orphans: Vec<File>,
    journal: File,
}

impl Writer {
    fn journal(&mut self, line: &str) {
        self.journal
            .write_all(format!("{line}\n").as_bytes())
            .expect("write the journal");
    }

    /// Makes one change, journaled: `do N OP` before it, `ok N` or `err N ERRNO` after. The
    /// journal is fsync'ed after each sync that returned, so what was durable is known even
    /// if this machine crashed next. An error ends the writer.
    fn run(&mut self, op: &Op) -> std::io::Result<()> {
        self.seq += 1;
        let seq = self.seq;
        self.journal(&format!("do {seq} {op}"));
        let done = self.open(op).and_then(|()| self.apply(op));
        match &done {
            Ok(()) => {
                self.journal(&format!("ok {seq}"));
                if matches!(op, Op::Fsync { .. } | Op::SyncDirs) {
                    self.journal.sync_data().expect("fsync the journal");
                }
            }
            Err(e) => self.journal(&format!("err {seq} {}", e.raw_os_error().unwrap_or(0))),
        }
        done
    }

    /// Opens the descriptor `op` needs if it is not open yet (which changes nothing).
    fn open(&mut self, op: &Op) -> std::io::Result<()> {
        if let Op::Write { name, .. } | Op::Truncate { name, .. } | Op::Fsync { name, .. } = op {
            let file = self
                .files
                .get_mut(name)
                .expect("the writer picks present names");
            if file.fd.is_none() {
                file.fd = Some(
                    OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open(self.root.join(name))?,
                );
            }
        }
        Ok(())
    }

    fn fd(&self, name: &str) -> &File {
        self.files[name]
            .fd
            .as_ref()
            .expect("run opened the descriptor")
    }

    fn apply(&mut self, op: &Op) -> std::io::Result<()> {
        match op {
            Op::Create(name) => {
                let fd = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(self.root.join(name))?;
                self.files.insert(
                    name.clone(),
                    WFile {
                        size: 0,
                        fd: Some(fd),
                    },
                );
            }
            Op::Write {
                name,
                offset,
                len,
                tag,
            } => {
                self.fd(name)
                    .write_all_at(&pattern(*tag, *offset, *len as usize), *offset)?;
                let file = self.files.get_mut(name).expect("present");
                file.size = file.size.max(offset + len);
            }
            Op::Truncate { name, len } => {
                self.fd(name).set_len(*len)?;
                self.files.get_mut(name).expect("present").size = *len;
            }
            Op::Fsync { name, data_only } => {
                if *data_only {
                    self.fd(name).sync_data()?;
                } else {
                    self.fd(name).sync_all()?;
                }
            }
            Op::SyncDirs => {
                for dir in DIRS {
                    File::open(self.root.join(dir))?.sync_all()?;
                }
            }
            Op::Close(name) => {
                self.files.get_mut(name).expect("present").fd = None;
            }
            Op::Rename { from, to } => {
                fs::rename(self.root.join(from), self.root.join(to))?;
                let moved = self.files.remove(from).expect("present");
                if let Some(WFile { fd: Some(fd), .. }) = self.files.insert(to.clone(), moved) {
                    self.orphans.push(fd);
                }
            }
            Op::Unlink(name) => {
                fs::remove_file(self.root.join(name))?;
                if let Some(WFile { fd: Some(fd), .. }) = self.files.remove(name) {
                    self.orphans.push(fd);
                }
            }
            Op::CloseOrphan => {
                self.orphans.remove(0);
            }
        }
        Ok(())
    }

    fn absent_name(&mut self) -> Option<String> {
        let absent: Vec<&str> = NAMES
            .iter()
            .copied()
            .filter(|n| !self.files.contains_key(*n))
            .collect();
        (!absent.is_empty()).then(|| absent[self.rng.below(absent.len() as u64) as usize].into())
    }

    fn write_op(&mut self, name: &str, offset: u64) -> Op {
        let offset = offset.min(MAX_FILE_BYTES - 1);
        let len = if self.rng.chance(50) {
            self.rng.between(1, 4096)
        } else {
            self.rng.between(1, MAX_WRITE_BYTES)
        };
        Op::Write {
            name: name.into(),
            offset,
            len: len.min(MAX_FILE_BYTES - offset),
            tag: self.rng.next_u64(),
        }
    }

    /// The next changes: one operation, or the steps of a replacement.
    fn pick(&mut self) -> Vec<Op> {
        if self.orphans.len() > MAX_ORPHANS {
            return vec![Op::CloseOrphan];
        }
        let name = NAMES[self.rng.below(NAMES.len() as u64) as usize].to_string();
        let Some(size) = self.files.get(&name).map(|f| f.size) else {
            return vec![if self.rng.chance(80) {
                Op::Create(name)
            } else {
                Op::SyncDirs
            }];
        };
        let roll = self.rng.below(100);
        let op = match roll {
            0..=27 => {
                let mut offset = self.rng.below(size + 8192);
                if self.rng.chance(50) {
                    offset -= offset % 4096;
                }
                self.write_op(&name, offset)
            }
            28..=39 => self.write_op(&name, size),
            40..=44 => Op::Truncate {
                len: if self.rng.chance(70) {
                    self.rng.below(size + 1)
                } else {
                    (size + self.rng.below(8192)).min(MAX_FILE_BYTES)
                },
                name,
            },
            45..=59 => Op::Fsync {
                name,
                data_only: self.rng.chance(33),
            },
            60..=66 => {
                let to = loop {
                    let to = NAMES[self.rng.below(NAMES.len() as u64) as usize];
                    if to != name {
                        break to.to_string();
                    }
                };
                Op::Rename { from: name, to }
            }
            67..=70 => Op::Unlink(name),
            71..=75 => Op::Close(name),
            76..=81 => Op::SyncDirs,
            82..=89 => match self.absent_name() {
                // Replace `name` the careful way: a new file written and fsync'ed, renamed
                // over the old one, the directory fsync'ed.
                Some(tmp) => {
                    let mut ops = vec![Op::Create(tmp.clone())];
                    let mut at = 0;
                    for _ in 0..self.rng.between(1, 3) {
                        let w = self.write_op(&tmp, at);
                        if let Op::Write { len, .. } = w {
                            at += len;
                        }
                        ops.push(w);
                    }
                    ops.push(Op::Fsync {
                        name: tmp.clone(),
                        data_only: false,
                    });
                    ops.push(Op::Rename {
                        from: tmp,
                        to: name,
                    });
                    ops.push(Op::SyncDirs);
                    return ops;
                }
                None => Op::SyncDirs,
            },
            _ => {
                let offset = self.rng.below(size.max(1));
                self.write_op(&name, offset)
            }
        };
        vec![op]
    }
}

/// Lists the files under `root` (the mount), writes `start` to the journal at `journal`, then
/// changes the files until an operation fails (the daemon was killed) or a minute has passed.
pub fn run(root: PathBuf, journal: &Path, seed: u64) {
    let journal = OpenOptions::new()
        .create(true)
        .append(true)
        .open(journal)
        .expect("open the journal");
    let mut files = BTreeMap::new();
    for name in NAMES {
        if let Ok(meta) = fs::metadata(root.join(name)) {
            files.insert(
                name.to_string(),
                WFile {
                    size: meta.len(),
                    fd: None,
                },
            );
        }
    }
    let mut w = Writer {
        root,
        rng: Rng::new(seed),
        seq: 0,
        files,
        orphans: Vec::new(),
        journal,
    };
    w.journal("start");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        for op in w.pick() {
            if w.run(&op).is_err() {
                return;
            }
        }
    }
}
