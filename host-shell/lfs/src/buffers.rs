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
    /// Blocks of `blocks` the file's map had no block for when they were buffered: the new
    /// space they take when flushed. (A buffered block's mapping cannot change before the
    /// flush: only the flush maps the file's blocks, and the cleaner moves mapped blocks.)
    fresh: u64,
}

/// Every file's write buffer and open count.
///
/// Invariants:
/// - Buffers are ordered by inode number: flushing them all goes in that order, so the same
///   operations make the same device writes every time (a power-cut point names one moment).
/// - A buffer's attributes are the file's current ones: they replace the inode's until the
///   buffer is flushed ([`Buffers::attr`]).
/// - An open count is never zero: the last close removes it ([`Buffers::close`]).
/// - `blocks` and `fresh` are the sums of every buffer's block count and `fresh`: blocks are
///   only added or cut through [`Buffers::insert`] and [`Buffers::cut`], so a write's
///   admission and the pressure check cost the same however much is buffered.
#[derive(Debug, Clone, Default)]
pub struct Buffers {
    dirty: BTreeMap<InodeNo, Dirty>,
    open: HashMap<InodeNo, u32>,
    blocks: usize,
    fresh: u64,
}

impl Buffers {
    /// `ino`'s buffer, if it has one.
    pub fn get(&self, ino: InodeNo) -> Option<&Dirty> {
        self.dirty.get(&ino)
    }

    /// `ino`'s buffered attributes, to change in place.
    pub fn attr_mut(&mut self, ino: InodeNo) -> Option<&mut Attr> {
        self.dirty.get_mut(&ino).map(|d| &mut d.attr)
    }

    /// Buffered block `b` of `ino`, to edit in place.
    pub fn block_mut(&mut self, ino: InodeNo, b: u64) -> Option<&mut Vec<u8>> {
        self.dirty.get_mut(&ino).and_then(|d| d.blocks.get_mut(&b))
    }

    /// `ino`'s buffer, made with attributes `attr` if it has none. Its blocks change only
    /// through [`Buffers::insert`] and [`Buffers::cut`].
    pub fn entry(&mut self, ino: InodeNo, attr: Attr) -> &mut Dirty {
        self.dirty.entry(ino).or_insert_with(|| Dirty {
            attr,
            blocks: BTreeMap::new(),
            trunc: None,
            fresh: 0,
        })
    }

    /// Buffers `block` as block `b` of `ino` (whose buffer is made with `attr` if it has none);
    /// `fresh` if the file's map has no block `b`.
    pub fn insert(&mut self, ino: InodeNo, attr: Attr, b: u64, block: Vec<u8>, fresh: bool) {
        let d = self.entry(ino, attr);
        let old = d.blocks.insert(b, block);
        let fresh = u64::from(fresh);
        if old.is_none() {
            d.fresh += fresh;
            self.blocks += 1;
            self.fresh += fresh;
        }
    }

    /// Drops `ino`'s buffered blocks from `keep` on; `fresh(b)` says whether block `b` was
    /// counted as fresh.
    pub fn cut(&mut self, ino: InodeNo, keep: u64, fresh: impl Fn(u64) -> bool) {
        let Some(d) = self.dirty.get_mut(&ino) else {
            return;
        };
        let cut = d.blocks.split_off(&keep);
        let cut_fresh = cut.keys().filter(|&&b| fresh(b)).count() as u64;
        d.fresh -= cut_fresh;
        self.blocks -= cut.len();
        self.fresh -= cut_fresh;
    }

    /// Blocks buffered over all files that take new space when flushed.
    pub fn fresh_blocks(&self) -> u64 {
        self.fresh
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
        let d = self.dirty.remove(&ino)?;
        self.blocks -= d.blocks.len();
        self.fresh -= d.fresh;
        Some(d)
    }

    /// Puts back a buffer whose flush failed (nothing of it was logged).
    pub fn put_back(&mut self, ino: InodeNo, d: Dirty) {
        self.blocks += d.blocks.len();
        self.fresh += d.fresh;
        if let Some(old) = self.dirty.insert(ino, d) {
            // Unreachable while the state lock is held from take to put_back; kept honest.
            self.blocks -= old.blocks.len();
            self.fresh -= old.fresh;
        }
    }

    /// Every buffer, by inode number.
    #[cfg(debug_assertions)]
    pub fn iter(&self) -> impl Iterator<Item = (InodeNo, &Dirty)> {
        self.dirty.iter().map(|(&i, d)| (i, d))
    }

    /// Inodes with a buffer, in flush order.
    pub fn inos(&self) -> Vec<InodeNo> {
        self.dirty.keys().copied().collect()
    }

    /// Blocks buffered over all files.
    pub fn total_blocks(&self) -> usize {
        self.blocks
    }

    /// Whether the buffers hold more than memory allows: all files' blocks.
    pub fn over_total_limit(&self) -> bool {
        self.total_blocks() >= TOTAL_DIRTY_LIMIT
    }

    /// Open handles on `ino`.
    pub fn open_count(&self, ino: InodeNo) -> u32 {
        self.open.get(&ino).copied().unwrap_or(0)
    }

    /// The inodes with handles open.
    pub fn opened(&self) -> impl Iterator<Item = InodeNo> + '_ {
        self.open.keys().copied()
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
            b.insert(InodeNo(ino), attr(ino), 0, vec![1], true);
        }
        b.insert(InodeNo(3), attr(99), 1, vec![2], false);
        assert_eq!(b.inos(), [InodeNo(3), InodeNo(5), InodeNo(9)]);
        assert_eq!(b.attr(InodeNo(3)).map(|a| a.ino), Some(InodeNo(3)));
        assert_eq!((b.total_blocks(), b.fresh_blocks()), (4, 3));
        assert_eq!(b.block(InodeNo(3), 1), Some(&vec![2]));
        let d = b.take(InodeNo(3)).unwrap();
        assert!(b.get(InodeNo(3)).is_none());
        assert_eq!((b.total_blocks(), b.fresh_blocks()), (2, 2));
        b.put_back(InodeNo(3), d);
        assert_eq!((b.total_blocks(), b.fresh_blocks()), (4, 3));
        // Rewriting a buffered block counts it once; cutting takes its counts away.
        b.insert(InodeNo(3), attr(3), 0, vec![7], true);
        assert_eq!((b.total_blocks(), b.fresh_blocks()), (4, 3));
        b.cut(InodeNo(3), 0, |blk| blk == 0);
        assert_eq!((b.total_blocks(), b.fresh_blocks()), (2, 2));
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
