//! Directories: names -> (inode, kind), with stable cookies for readdir resumption.

use std::collections::BTreeMap;

use super::inode::{FileKind, InodeNo};

/// One name in a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub ino: InodeNo,
    pub kind: FileKind,
    /// The entry's position for readdir: stable while it exists, never reused while the
    /// directory exists in memory.
    pub cookie: u64,
}

/// Cookies 1 and 2 are "." and "..".
pub const FIRST_COOKIE: u64 = 3;

/// A directory's entries.
#[derive(Debug, Clone)]
pub struct Dir {
    entries: BTreeMap<Vec<u8>, Entry>,
    by_cookie: BTreeMap<u64, Vec<u8>>,
    next_cookie: u64,
}

impl Default for Dir {
    fn default() -> Self {
        Dir {
            entries: BTreeMap::new(),
            by_cookie: BTreeMap::new(),
            next_cookie: FIRST_COOKIE,
        }
    }
}

/// Equal when the entries are: the next cookie is not stored (after a remount it restarts
/// above the highest cookie in use).
impl PartialEq for Dir {
    fn eq(&self, other: &Dir) -> bool {
        self.entries == other.entries
    }
}

impl Eq for Dir {}

impl Dir {
    pub fn get(&self, name: &[u8]) -> Option<Entry> {
        self.entries.get(name).copied()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The cookie the next new entry gets.
    pub fn next_cookie(&self) -> u64 {
        self.next_cookie
    }

    /// Adds `name`; false if it exists or the cookie is taken.
    pub fn add(&mut self, name: &[u8], entry: Entry) -> bool {
        if self.entries.contains_key(name) || self.by_cookie.contains_key(&entry.cookie) {
            return false;
        }
        self.entries.insert(name.to_vec(), entry);
        self.by_cookie.insert(entry.cookie, name.to_vec());
        self.next_cookie = self.next_cookie.max(entry.cookie + 1);
        true
    }

    pub fn remove(&mut self, name: &[u8]) -> Option<Entry> {
        let e = self.entries.remove(name)?;
        self.by_cookie.remove(&e.cookie);
        Some(e)
    }

    /// Entries in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Entry)> + '_ {
        self.entries.iter().map(|(n, e)| (n.as_slice(), *e))
    }

    /// Entries with a cookie above `after`, in cookie order.
    pub fn after(&self, after: u64) -> impl Iterator<Item = (&[u8], Entry)> + '_ {
        self.by_cookie
            .range(after.saturating_add(1)..)
            .filter_map(|(_, n)| self.entries.get(n).map(|e| (n.as_slice(), *e)))
    }
}
