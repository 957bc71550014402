//! Write buffers: each file's changes not yet on the device (whole blocks, attributes, the
//! smallest size it was cut to), and the open handles that keep unlinked files alive.

use std::collections::{BTreeMap, HashMap};

use crate::error::{LfsError, Result};
use crate::inode::{Attr, InodeNo};

/// Dirty blocks of one file that trigger its flush.
pub const FILE_DIRTY_LIMIT: usize = 256;
/// Dirty blocks of all files that trigger a flush.
pub const TOTAL_DIRTY_LIMIT: usize = 2048;

/// A file's changes not yet on the device.
#[derive(Debug, Clone)]
pub struct Dirty {
    /// The file's current attributes (size, times).
    pub attr: Attr,
    /// Whole blocks by file block number.
    pub blocks: BTreeMap<u64, Vec<u8>>,
    /// The smallest size the file was truncated to since the last flush.
    pub trunc: Option<u64>,
}

/// Every file's write buffer and open count.
///
/// Invariants:
/// - Buffers are ordered by inode number: flushing them all goes in that order, so the same
///   operations make the same device writes every time (a power-cut point names one moment).
/// - A buffer's attributes are the file's current ones: they replace the inode's until the
///   buffer is flushed ([`Buffers::attr`]).
/// - An open count is never zero: the last close removes it ([`Buffers::close`]).
#[derive(Debug, Clone, Default)]
pub struct Buffers {
    dirty: BTreeMap<InodeNo, Dirty>,
    open: HashMap<InodeNo, u32>,
}

impl Buffers {
    /// `ino`'s buffer, if it has one.
    pub fn get(&self, ino: InodeNo) -> Option<&Dirty> {
        self.dirty.get(&ino)
    }

    pub fn get_mut(&mut self, ino: InodeNo) -> Option<&mut Dirty> {
        self.dirty.get_mut(&ino)
    }

    /// `ino`'s buffer, made with attributes `attr` if it has none.
    pub fn entry(&mut self, ino: InodeNo, attr: Attr) -> &mut Dirty {
        self.dirty.entry(ino).or_insert_with(|| Dirty {
            attr,
            blocks: BTreeMap::new(),
            trunc: None,
        })
    }

    /// `ino`'s buffered attributes, if it has a buffer.
    pub fn attr(&self, ino: InodeNo) -> Option<Attr> {
        self.dirty.get(&ino).map(|d| d.attr)
    }

    /// Buffered block `b` of `ino`.
    pub fn block(&self, ino: InodeNo, b: u64) -> Option<&Vec<u8>> {
        self.dirty.get(&ino).and_then(|d| d.blocks.get(&b))
    }

    /// Takes `ino`'s buffer (to flush it, or because the file is gone).
    pub fn take(&mut self, ino: InodeNo) -> Option<Dirty> {
        self.dirty.remove(&ino)
    }

    /// Puts back a buffer whose flush failed (nothing of it was logged).
    pub fn put_back(&mut self, ino: InodeNo, d: Dirty) {
        self.dirty.insert(ino, d);
    }

    /// Every buffer, by inode number.
    pub fn iter(&self) -> impl Iterator<Item = (InodeNo, &Dirty)> {
        self.dirty.iter().map(|(&i, d)| (i, d))
    }

    /// Inodes with a buffer, in flush order.
    pub fn inos(&self) -> Vec<InodeNo> {
        self.dirty.keys().copied().collect()
    }

    /// Blocks buffered over all files.
    pub fn total_blocks(&self) -> usize {
        self.dirty.values().map(|d| d.blocks.len()).sum()
    }

    /// Whether the buffers hold more than memory allows: all files' blocks.
    pub fn over_total_limit(&self) -> bool {
        self.total_blocks() >= TOTAL_DIRTY_LIMIT
    }

    /// Open handles on `ino`.
    pub fn open_count(&self, ino: InodeNo) -> u32 {
        self.open.get(&ino).copied().unwrap_or(0)
    }

    /// One more handle on `ino`.
    pub fn open(&mut self, ino: InodeNo) {
        *self.open.entry(ino).or_insert(0) += 1;
    }

    /// One handle on `ino` fewer; returns how many there were.
    pub fn close(&mut self, ino: InodeNo) -> Result<u32> {
        let count = self.open_count(ino);
        match count {
            0 => return Err(LfsError::InvalidArgument("release without open")),
            1 => self.open.remove(&ino),
            _ => self.open.insert(ino, count - 1),
        };
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inode::{FileKind, Time};

    fn attr(ino: u64) -> Attr {
        Attr {
            ino: InodeNo(ino),
            kind: FileKind::File,
            perm: 0o644,
            uid: 0,
            gid: 0,
            nlink: 1,
            size: 0,
            atime: Time::default(),
            mtime: Time::default(),
            ctime: Time::default(),
            parent: InodeNo(0),
            rdev: 0,
        }
    }

    /// Buffers are listed by inode number whatever the order they were made in; a buffer
    /// keeps the attributes it was made with until changed, and counts its blocks.
    #[test]
    fn buffers_in_inode_order() {
        let mut b = Buffers::default();
        for ino in [9, 3, 5] {
            b.entry(InodeNo(ino), attr(ino)).blocks.insert(0, vec![1]);
        }
        b.entry(InodeNo(3), attr(99)).blocks.insert(1, vec![2]);
        assert_eq!(b.inos(), [InodeNo(3), InodeNo(5), InodeNo(9)]);
        assert_eq!(b.attr(InodeNo(3)).map(|a| a.ino), Some(InodeNo(3)));
        assert_eq!(b.total_blocks(), 4);
        assert_eq!(b.block(InodeNo(3), 1), Some(&vec![2]));
        let d = b.take(InodeNo(3)).unwrap();
        assert!(b.get(InodeNo(3)).is_none());
        b.put_back(InodeNo(3), d);
        assert_eq!(b.total_blocks(), 4);
    }

    /// Open counts go up and down; closing a file with no handle is refused.
    #[test]
    fn open_counts() {
        let mut b = Buffers::default();
        b.open(InodeNo(4));
        b.open(InodeNo(4));
        assert_eq!(b.close(InodeNo(4)).unwrap(), 2);
        assert_eq!(b.close(InodeNo(4)).unwrap(), 1);
        assert_eq!(b.open_count(InodeNo(4)), 0);
        assert!(matches!(
            b.close(InodeNo(4)),
            Err(LfsError::InvalidArgument("release without open"))
        ));
    }
}
