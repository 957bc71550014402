//! What the checker makes of a journal: every state each file and each name may be in after
//! the daemon was killed.

use nix::errno::Errno;
use std::collections::{BTreeMap, HashMap};

use super::op::Op;
use super::pattern;

/// A change of a file's bytes.
#[derive(Debug, Clone)]
pub enum Edit {
    Write { offset: u64, len: u64, tag: u64 },
    Truncate(u64),
}

pub fn edit(content: &mut Vec<u8>, e: &Edit) {
    match *e {
        Edit::Write { offset, len, tag } => {
            let (start, end) = (offset as usize, (offset + len) as usize);
            if content.len() < end {
                content.resize(end, 0);
            }
            content[start..end].copy_from_slice(&pattern(tag, offset, len as usize));
        }
        Edit::Truncate(len) => content.resize(len as usize, 0),
    }
}

/// One file (an inode): its state at its last fsync and the edits since.
#[derive(Debug, Clone)]
pub struct FileModel {
    base: Vec<u8>,
    /// Whether `base` was fsync'ed (or survived a remount); false for a file made since.
    durable: bool,
    edits: Vec<Edit>,
}

impl FileModel {
    /// Whether `content` is one of the states since the last fsync.
    fn allows(&self, content: &[u8]) -> bool {
        let mut state = self.base.clone();
        if state == content {
            return true;
        }
        for e in &self.edits {
            edit(&mut state, e);
            if state == content {
                return true;
            }
        }
        false
    }

    fn current(&self) -> Vec<u8> {
        let mut state = self.base.clone();
        for e in &self.edits {
            edit(&mut state, e);
        }
        state
    }
}

pub type Names = BTreeMap<String, usize>;

/// Every state the tree may be in after a crash.
#[derive(Debug)]
pub struct Model {
    files: Vec<FileModel>,
    names: Names,
    /// The names at the last directory fsync and after each change since.
    history: Vec<Names>,
}

/// How an operation ended, as far as the journal knows.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Failed because the daemon died, or never reported: it may or may not have happened.
    Maybe,
}

impl Model {
    /// The tree as read after a remount: all of it durable (the mount wrote a checkpoint).
    pub fn durable(tree: &BTreeMap<String, Vec<u8>>) -> Model {
        let mut names = Names::new();
        let mut files = Vec::new();
        for (name, content) in tree {
            names.insert(name.clone(), files.len());
            files.push(FileModel {
                base: content.clone(),
                durable: true,
                edits: Vec::new(),
            });
        }
        Model {
            files,
            history: vec![names.clone()],
            names,
        }
    }

    fn id(&self, name: &str) -> Result<usize, String> {
        self.names
            .get(name)
            .copied()
            .ok_or_else(|| format!("the journal names {name}, which the model does not have"))
    }

    fn apply(&mut self, op: &Op, outcome: Outcome) -> Result<(), String> {
        let namespace = matches!(op, Op::Create(_) | Op::Rename { .. } | Op::Unlink(_));
        match op {
            Op::Create(name) => {
                self.names.insert(name.clone(), self.files.len());
                self.files.push(FileModel {
                    base: Vec::new(),
                    durable: false,
                    edits: Vec::new(),
                });
            }
            Op::Write {
                name,
                offset,
                len,
                tag,
            } => {
                let id = self.id(name)?;
                self.files[id].edits.push(Edit::Write {
                    offset: *offset,
                    len: *len,
                    tag: *tag,
                });
            }
            Op::Truncate { name, len } => {
                let id = self.id(name)?;
                self.files[id].edits.push(Edit::Truncate(*len));
            }
            Op::Fsync { name, .. } => {
                let id = self.id(name)?;
                if outcome == Outcome::Done {
                    let file = &mut self.files[id];
                    file.base = file.current();
                    file.edits.clear();
                    file.durable = true;
                }
            }
            Op::SyncDirs => {
                if outcome == Outcome::Done {
                    self.history = vec![self.names.clone()];
                }
            }
            Op::Rename { from, to } => {
                let id = self.id(from)?;
                self.names.remove(from);
                self.names.insert(to.clone(), id);
            }
            Op::Unlink(name) => {
                self.id(name)?;
                self.names.remove(name);
            }
            Op::Close(_) | Op::CloseOrphan => {}
        }
        if namespace {
            self.history.push(self.names.clone());
        }
        Ok(())
    }

    /// Replays a journal. `Err` for a journal that makes no sense; an operation that failed
    /// with another error than the daemon's death (the workload never fails on a healthy
    /// mount) is added to `findings` and counts as one that may have happened.
    pub fn replay(&mut self, journal: &str, findings: &mut Vec<String>) -> Result<(), String> {
        let mut pending: Option<(u64, Op)> = None;
        for line in journal.lines() {
            let mut words = line.splitn(3, ' ');
            let (kind, seq) = (
                words.next(),
                words.next().and_then(|s| s.parse::<u64>().ok()),
            );
            match (kind, seq, pending.take()) {
                (Some("start"), ..) => {}
                (Some("do"), Some(seq), None) => {
                    let op = words
                        .next()
                        .and_then(Op::parse)
                        .ok_or_else(|| format!("journal line {line:?}"))?;
                    pending = Some((seq, op));
                }
                (Some("ok"), Some(seq), Some((s, op))) if s == seq => {
                    self.apply(&op, Outcome::Done)?;
                }
                (Some("err"), Some(seq), Some((s, op))) if s == seq => {
                    let errno: i32 = words.next().and_then(|e| e.parse().ok()).unwrap_or(0);
                    // ENOTCONN or ECONNABORTED: the daemon is gone. Over FUSE over io_uring
                    // the kernel also fails with ECANCELED the requests the killed daemon's
                    // threads had taken (the daemon never answers ECANCELED itself).
                    use nix::errno::Errno::{ECANCELED, ECONNABORTED, ENOTCONN};
                    if ![ENOTCONN, ECONNABORTED, ECANCELED].contains(&Errno::from_raw(errno)) {
                        findings.push(format!(
                            "the writer's `{op}` failed with {}",
                            std::io::Error::from_raw_os_error(errno)
                        ));
                    }
                    self.apply(&op, Outcome::Maybe)?;
                }
                _ => return Err(format!("journal line {line:?} out of order")),
            }
        }
        if let Some((_, op)) = pending {
            self.apply(&op, Outcome::Maybe)?;
        }
        Ok(())
    }

    /// Findings about `found` (the tree after the crash): empty if it is a state the model
    /// allows. Each finding is one lost file or name.
    pub fn check(&self, found: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
        let mut memo: HashMap<(String, usize), bool> = HashMap::new();
        let mut allows = |name: &str, id: usize, content: &[u8]| -> bool {
            *memo
                .entry((name.to_string(), id))
                .or_insert_with(|| self.files[id].allows(content))
        };
        let same_names = |names: &Names| names.keys().eq(found.keys());
        for names in self.history.iter().rev() {
            if same_names(names)
                && names
                    .iter()
                    .all(|(name, &id)| allows(name, id, &found[name]))
            {
                return Vec::new();
            }
        }
        // Explain against the latest state with the same names, or the last directory fsync.
        let names = self
            .history
            .iter()
            .rev()
            .find(|n| same_names(n))
            .unwrap_or(&self.history[0]);
        let mut findings = Vec::new();
        for (name, &id) in names {
            let file = &self.files[id];
            let Some(content) = found.get(name) else {
                findings.push(format!(
                    "{name} is gone ({} bytes {})",
                    file.base.len(),
                    if file.durable {
                        "fsync'ed"
                    } else {
                        "since it was made"
                    }
                ));
                continue;
            };
            if !allows(name, id, content) {
                let differ = file
                    .base
                    .iter()
                    .zip(content)
                    .filter(|(a, b)| a != b)
                    .count()
                    + file.base.len().abs_diff(content.len());
                let first = file
                    .base
                    .iter()
                    .zip(content)
                    .position(|(a, b)| a != b)
                    .unwrap_or(file.base.len().min(content.len()));
                findings.push(format!(
                    "{name}: {} bytes match none of its {} states since its last fsync \
                     ({} bytes {}; {differ} bytes differ from that, the first at {first})",
                    content.len(),
                    file.edits.len() + 1,
                    file.base.len(),
                    if file.durable {
                        "fsync'ed"
                    } else {
                        "when it was made"
                    }
                ));
            }
        }
        for name in found.keys().filter(|n| !names.contains_key(*n)) {
            findings.push(format!("{name} is there but was not then"));
        }
        if findings.is_empty() {
            findings.push(format!(
                "the names {:?} match no state since the last directory fsync",
                found.keys().collect::<Vec<_>>()
            ));
        }
        findings
    }
}
