//! The reference model of the power-loss workload: which namespaces and which file contents
//! may come back after a cut.
//!
//! Files are tracked by identity ([`FileId`]), not by name, so a rename keeps a file's history
//! and a rename cut in flight may show the file under its old or its new name, with any content
//! it may have either way.
//!
//! What the file system promises, and the model accepts exactly:
//! - Namespace operations (create, unlink, rename, mkdir, rmdir) are logged as transactions in
//!   the order they are made, and every log flush writes all of them; so the namespace after a
//!   cut is the one after some prefix of them, no shorter than the prefix at the last fsync or
//!   checkpoint that returned.
//! - A file's data is written as one transaction per flush, so its content is one it had
//!   between operations (or the one an operation in flight would have made), no older than the
//!   one its last fsync or the last checkpoint saw.

use std::collections::BTreeMap;

/// A file of the model.
pub type FileId = usize;

/// What a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    Dir,
    File(FileId),
}

/// Every path (`"a/f1"`, no leading slash; the root is not listed) and what it names.
pub type Namespace = BTreeMap<String, Node>;

/// What a mounted file system shows at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Dir,
    File {
        ino: u64,
        bytes: Vec<u8>,
    },
    /// Anything else (the workload makes no symlinks).
    Other,
}

/// Every path of a mounted file system and what it shows there.
pub type Observed = BTreeMap<String, Seen>;

#[derive(Debug, Clone)]
struct History {
    /// Every content the file had, oldest first.
    states: Vec<Vec<u8>>,
    /// The oldest state that may still come back.
    durable: usize,
}

/// The workload's reference model; see the module docs.
#[derive(Debug, Clone)]
pub struct Model {
    /// The namespace after each namespace operation, oldest first.
    namespaces: Vec<Namespace>,
    /// The oldest namespace that may still come back.
    durable_ns: usize,
    files: Vec<History>,
}

impl Model {
    /// A freshly made file system: an empty root, durable.
    pub fn empty() -> Model {
        Model {
            namespaces: vec![Namespace::new()],
            durable_ns: 0,
            files: Vec::new(),
        }
    }

    /// The state a mount showed, all of it durable (mount writes a checkpoint).
    pub fn from_observed(seen: &Observed) -> Model {
        let mut model = Model::empty();
        let mut ns = Namespace::new();
        for (path, s) in seen {
            let node = match s {
                Seen::File { bytes, .. } => {
                    let f = model.new_file();
                    model.files[f].states = vec![bytes.clone()];
                    Node::File(f)
                }
                _ => Node::Dir,
            };
            ns.insert(path.clone(), node);
        }
        model.namespaces = vec![ns];
        model
    }

    /// The namespace as the latest operation left it.
    pub fn ns(&self) -> &Namespace {
        self.namespaces
            .last()
            .expect("the model always has a namespace")
    }

    /// File `f`'s latest content.
    pub fn content(&self, f: FileId) -> &[u8] {
        self.files[f].states.last().map_or(&[], Vec::as_slice)
    }

    /// A new, empty file (it gets a name through [`Model::set_ns`]).
    pub fn new_file(&mut self) -> FileId {
        self.files.push(History {
            states: vec![Vec::new()],
            durable: 0,
        });
        self.files.len() - 1
    }

    /// An operation on file `f` is about to make its content `bytes`.
    pub fn set_content(&mut self, f: FileId, bytes: Vec<u8>) {
        self.files[f].states.push(bytes);
    }

    /// A namespace operation is about to make the namespace `ns`.
    pub fn set_ns(&mut self, ns: Namespace) {
        self.namespaces.push(ns);
    }

    /// fsync of `f` returned: its content and every namespace operation so far are durable.
    pub fn fsynced(&mut self, f: FileId) {
        let h = &mut self.files[f];
        h.durable = h.states.len() - 1;
        self.durable_ns = self.namespaces.len() - 1;
    }

    /// A checkpoint returned: everything is durable.
    pub fn synced_all(&mut self) {
        for h in &mut self.files {
            h.durable = h.states.len() - 1;
        }
        self.durable_ns = self.namespaces.len() - 1;
    }

    /// Whether `seen` is a state a cut may leave; if not, what is wrong with it.
    pub fn check(&self, seen: &Observed) -> Result<(), String> {
        // The reason to show: the latest namespace whose names match, else the latest.
        let mut closest: Option<(usize, String, bool)> = None;
        for j in (self.durable_ns..self.namespaces.len()).rev() {
            match self.matches(&self.namespaces[j], seen) {
                Ok(()) => return Ok(()),
                Err(why) => {
                    let names_match = self.namespaces[j].keys().eq(seen.keys());
                    if closest.as_ref().is_none_or(|c| names_match && !c.2) {
                        closest = Some((j, why, names_match));
                    }
                }
            }
        }
        let (j, why, _) = closest.expect("the model always has a namespace");
        let shows: Vec<String> = seen
            .iter()
            .map(|(p, s)| match s {
                Seen::File { ino, bytes } => format!("{p} (inode {ino}, {} bytes)", bytes.len()),
                other => format!("{p} ({})", kind(other)),
            })
            .collect();
        Err(format!(
            "the state matches none of the {} namespaces that may come back (operations {}..={}); \
             closest, after operation {j}: {why}; the file system shows {}",
            self.namespaces.len() - self.durable_ns,
            self.durable_ns,
            self.namespaces.len() - 1,
            shows.join(", ")
        ))
    }

    fn matches(&self, ns: &Namespace, seen: &Observed) -> Result<(), String> {
        let missing: Vec<&String> = ns.keys().filter(|p| !seen.contains_key(*p)).collect();
        let extra: Vec<&String> = seen.keys().filter(|p| !ns.contains_key(*p)).collect();
        if !missing.is_empty() || !extra.is_empty() {
            return Err(format!("missing {missing:?}, unexpected {extra:?}"));
        }
        let mut inode_of: BTreeMap<FileId, u64> = BTreeMap::new();
        let mut file_of: BTreeMap<u64, FileId> = BTreeMap::new();
        for (path, node) in ns {
            match (node, &seen[path]) {
                (Node::Dir, Seen::Dir) => {}
                (Node::File(f), Seen::File { ino, bytes }) => {
                    if *inode_of.entry(*f).or_insert(*ino) != *ino
                        || *file_of.entry(*ino).or_insert(*f) != *f
                    {
                        return Err(format!("{path}: inode {ino} also shows another file"));
                    }
                    let h = &self.files[*f];
                    if !h.states[h.durable..].contains(bytes) {
                        let lens: Vec<usize> = h.states[h.durable..].iter().map(Vec::len).collect();
                        let first_diff = h.states[h.durable..]
                            .iter()
                            .filter(|s| s.len() == bytes.len())
                            .map(|s| s.iter().zip(bytes).position(|(a, b)| a != b))
                            .min()
                            .flatten();
                        return Err(format!(
                            "{path}: {} bytes, in none of its {} possible states (lengths \
                             {lens:?}; first differing byte among those of equal length: \
                             {first_diff:?})",
                            bytes.len(),
                            lens.len(),
                        ));
                    }
                }
                (want, got) => {
                    return Err(format!("{path}: expected {want:?}, found {}", kind(got)));
                }
            }
        }
        Ok(())
    }
}

fn kind(seen: &Seen) -> &'static str {
    match seen {
        Seen::Dir => "a directory",
        Seen::File { .. } => "a file",
        Seen::Other => "neither a file nor a directory",
    }
}

/// `path`'s parent ("" for the root) and last name.
pub fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

/// `name` in directory `dir` ("" for the root).
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// `ns` after renaming `from` to `to` (a directory takes everything below it along; a file
/// at `to` is replaced).
pub fn renamed(ns: &Namespace, from: &str, to: &str) -> Namespace {
    let below = format!("{from}/");
    let mut out = Namespace::new();
    for (path, node) in ns {
        if path == to {
            continue;
        }
        if path == from {
            out.insert(to.to_string(), *node);
        } else if let Some(rest) = path.strip_prefix(&below) {
            out.insert(format!("{to}/{rest}"), *node);
        } else {
            out.insert(path.clone(), *node);
        }
    }
    out
}
