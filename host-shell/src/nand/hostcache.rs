//! Strict emulators at the image-file seam ([`ImageFile`]): a host disk in RAM, and the host's
//! page cache in front of any image file, so tests can crash the host and fill its disk.
//!
//! - [`RamFile`]: a sparse file in memory (a page never written reads as zeros).
//! - [`CachedFile`]: a page cache of [`HOST_PAGE_BYTES`] pages over an inner file. Writes stay
//!   in the cache until [`ImageFile::sync_data`] writes them through and syncs the inner file.
//!   [`CachedFile::crash`] is a crash of the host: the inner file keeps what was synced plus
//!   any chosen subset of the cached pages, in no particular order, as a kernel writing back
//!   dirty pages on its own would leave it. Over a real [`std::fs::File`] a `kill -9` of the
//!   process is the crash that keeps none of them.
//!
//!   It also stands for the host's disk: [`HostFaults`] (shared with the test while the device
//!   runs) limits the pages it may hold, a write that needs more fails with `ENOSPC` after
//!   writing the pages that fit (a short write, as a real file system does), and writes or
//!   syncs can be made to fail with `EIO`.

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use super::file::ImageFile;

/// The page size of the emulated host page cache.
pub const HOST_PAGE_BYTES: u64 = 4096;

/// A sparse file in RAM.
#[derive(Debug, Clone, Default)]
pub struct RamFile {
    len: u64,
    pages: BTreeMap<u64, Box<[u8]>>,
}

impl RamFile {
    /// A file of `len` zero bytes.
    pub fn new(len: u64) -> RamFile {
        RamFile {
            len,
            pages: BTreeMap::new(),
        }
    }

    fn check(&self, offset: u64, len: usize) -> io::Result<()> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(past_end()),
        }
    }

    fn page(&self, page: u64) -> Box<[u8]> {
        self.pages
            .get(&page)
            .cloned()
            .unwrap_or_else(|| vec![0; HOST_PAGE_BYTES as usize].into_boxed_slice())
    }
}

/// The pages `[offset, offset + len)` touches, with each piece's range inside its page and
/// inside the buffer.
fn pieces(offset: u64, len: usize) -> impl Iterator<Item = (u64, usize, usize, usize)> {
    let end = offset + len as u64;
    let first = offset / HOST_PAGE_BYTES;
    let last = end.div_ceil(HOST_PAGE_BYTES);
    (first..last).map(move |page| {
        let start = (page * HOST_PAGE_BYTES).max(offset);
        let stop = ((page + 1) * HOST_PAGE_BYTES).min(end);
        let in_page = (start - page * HOST_PAGE_BYTES) as usize;
        let in_buf = (start - offset) as usize;
        (page, in_page, in_buf, (stop - start) as usize)
    })
}

fn past_end() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "access past the end of the file",
    )
}

impl ImageFile for RamFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check(offset, buf.len())?;
        for (page, in_page, in_buf, n) in pieces(offset, buf.len()) {
            let out = &mut buf[in_buf..in_buf + n];
            match self.pages.get(&page) {
                Some(p) => out.copy_from_slice(&p[in_page..in_page + n]),
                None => out.fill(0),
            }
        }
        Ok(())
    }

    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check(offset, buf.len())?;
        for (page, in_page, in_buf, n) in pieces(offset, buf.len()) {
            let mut p = self.page(page);
            p[in_page..in_page + n].copy_from_slice(&buf[in_buf..in_buf + n]);
            self.pages.insert(page, p);
        }
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn len_bytes(&self) -> io::Result<u64> {
        Ok(self.len)
    }
}

/// The emulated host disk's faults, shared between a [`CachedFile`] and the test driving it.
#[derive(Debug, Clone, Default)]
pub struct HostFaults(Arc<Mutex<Faults>>);

#[derive(Debug, Default)]
struct Faults {
    /// Pages the disk can hold for this file; `None`: no limit.
    room_pages: Option<u64>,
    /// Every write fails with EIO.
    fail_writes: bool,
    /// Every sync fails with EIO.
    fail_syncs: bool,
    /// Syncs that reached the inner file.
    syncs: u64,
}

impl HostFaults {
    fn lock(&self) -> MutexGuard<'_, Faults> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The disk holds at most `pages` pages of this file (`None`: no limit).
    pub fn set_room_pages(&self, pages: Option<u64>) {
        self.lock().room_pages = pages;
    }

    /// Every write fails with EIO while `on`.
    pub fn fail_writes(&self, on: bool) {
        self.lock().fail_writes = on;
    }

    /// Every sync fails with EIO while `on`.
    pub fn fail_syncs(&self, on: bool) {
        self.lock().fail_syncs = on;
    }

    /// Syncs that reached the inner file so far.
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }
}

/// The host's page cache over `F`; see the module docs. A clone is a copy of the host at that
/// moment (so one moment can crash in several ways), sharing the faults handle.
#[derive(Debug, Clone)]
pub struct CachedFile<F: ImageFile> {
    inner: F,
    /// Pages written since the last sync.
    dirty: BTreeMap<u64, Box<[u8]>>,
    /// Pages the disk holds for this file: written through this cache or present when it was
    /// made (counted against [`HostFaults::set_room_pages`]).
    held: BTreeSet<u64>,
    faults: HostFaults,
}

impl CachedFile<RamFile> {
    /// A cache over a file in RAM (whose allocated pages count as held).
    pub fn over_ram(inner: RamFile) -> Self {
        let held = inner.pages.keys().copied().collect();
        CachedFile {
            inner,
            dirty: BTreeMap::new(),
            held,
            faults: HostFaults::default(),
        }
    }
}

impl<F: ImageFile> CachedFile<F> {
    /// A cache over `inner` (its existing pages are not counted against the room).
    pub fn new(inner: F) -> Self {
        CachedFile {
            inner,
            dirty: BTreeMap::new(),
            held: BTreeSet::new(),
            faults: HostFaults::default(),
        }
    }

    /// The handle on this file's faults.
    pub fn faults(&self) -> HostFaults {
        self.faults.clone()
    }

    /// Pages written and not synced, in page order.
    pub fn unsynced_pages(&self) -> Vec<u64> {
        self.dirty.keys().copied().collect()
    }

    /// A crash of the host: the inner file as it is on disk afterwards, holding what was
    /// synced and the unsynced pages `keep` chooses (not synced either).
    pub fn crash(mut self, mut keep: impl FnMut(u64) -> bool) -> io::Result<F> {
        for (page, bytes) in std::mem::take(&mut self.dirty) {
            if keep(page) {
                self.write_through(page, &bytes)?;
            }
        }
        Ok(self.inner)
    }

    fn write_through(&mut self, page: u64, bytes: &[u8]) -> io::Result<()> {
        let at = page * HOST_PAGE_BYTES;
        let n = (self.inner.len_bytes()? - at).min(HOST_PAGE_BYTES) as usize;
        self.inner.write_all_at(&bytes[..n], at)
    }

    fn cached_page(&self, page: u64) -> io::Result<Box<[u8]>> {
        if let Some(p) = self.dirty.get(&page) {
            return Ok(p.clone());
        }
        let mut p = vec![0; HOST_PAGE_BYTES as usize].into_boxed_slice();
        let at = page * HOST_PAGE_BYTES;
        let n = (self.inner.len_bytes()?.saturating_sub(at)).min(HOST_PAGE_BYTES) as usize;
        self.inner.read_exact_at(&mut p[..n], at)?;
        Ok(p)
    }
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("injected host I/O error on {what}"))
}

impl<F: ImageFile> ImageFile for CachedFile<F> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).ok_or_else(past_end)?;
        if end > self.inner.len_bytes()? {
            return Err(past_end());
        }
        for (page, in_page, in_buf, n) in pieces(offset, buf.len()) {
            let out = &mut buf[in_buf..in_buf + n];
            match self.dirty.get(&page) {
                Some(p) => out.copy_from_slice(&p[in_page..in_page + n]),
                None => self
                    .inner
                    .read_exact_at(out, page * HOST_PAGE_BYTES + in_page as u64)?,
            }
        }
        Ok(())
    }

    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).ok_or_else(past_end)?;
        if end > self.inner.len_bytes()? {
            return Err(past_end());
        }
        let (room, fail) = {
            let f = self.faults.lock();
            (f.room_pages, f.fail_writes)
        };
        if fail {
            return Err(eio("write"));
        }
        for (page, in_page, in_buf, n) in pieces(offset, buf.len()) {
            if !self.held.contains(&page) && room.is_some_and(|r| self.held.len() as u64 >= r) {
                return Err(io::Error::from(io::ErrorKind::StorageFull));
            }
            let mut p = self.cached_page(page)?;
            p[in_page..in_page + n].copy_from_slice(&buf[in_buf..in_buf + n]);
            self.dirty.insert(page, p);
            self.held.insert(page);
        }
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        if self.faults.lock().fail_syncs {
            // As Linux does after a failed writeback: the dirty pages are dropped.
            self.dirty.clear();
            return Err(eio("sync"));
        }
        for (page, bytes) in std::mem::take(&mut self.dirty) {
            self.write_through(page, &bytes)?;
        }
        self.inner.sync_data()?;
        self.faults.lock().syncs += 1;
        Ok(())
    }

    fn len_bytes(&self) -> io::Result<u64> {
        self.inner.len_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unsynced writes read back through the cache, are lost in a crash that keeps none, and
    /// survive one after a sync.
    #[test]
    fn a_crash_keeps_what_was_synced() {
        let mut f = CachedFile::over_ram(RamFile::new(3 * HOST_PAGE_BYTES));
        f.write_all_at(b"synced", 10).unwrap();
        f.sync_data().unwrap();
        f.write_all_at(b"cached", 5000).unwrap();
        let mut got = [0u8; 6];
        f.read_exact_at(&mut got, 5000).unwrap();
        assert_eq!(&got, b"cached");
        assert_eq!(f.unsynced_pages(), vec![1]);
        let disk = f.crash(|_| false).unwrap();
        disk.read_exact_at(&mut got, 10).unwrap();
        assert_eq!(&got, b"synced");
        disk.read_exact_at(&mut got, 5000).unwrap();
        assert_eq!(got, [0; 6]);
    }

    /// A crash keeps exactly the unsynced pages it is told to, each whole.
    #[test]
    fn a_crash_keeps_a_chosen_subset() {
        let mut f = CachedFile::over_ram(RamFile::new(4 * HOST_PAGE_BYTES));
        let data = vec![7u8; 3 * HOST_PAGE_BYTES as usize];
        f.write_all_at(&data, 100).unwrap();
        assert_eq!(f.unsynced_pages(), vec![0, 1, 2, 3]);
        let disk = f.crash(|p| p == 2).unwrap();
        let mut b = [0u8; 1];
        for (at, want) in [(100, 0), (HOST_PAGE_BYTES + 5, 0), (2 * HOST_PAGE_BYTES, 7)] {
            disk.read_exact_at(&mut b, at).unwrap();
            assert_eq!(b[0], want, "byte at {at}");
        }
    }

    /// A full disk writes the pages that fit, then fails with StorageFull; pages it already
    /// holds can still be rewritten.
    #[test]
    fn a_full_disk_makes_a_short_write() {
        let mut f = CachedFile::over_ram(RamFile::new(4 * HOST_PAGE_BYTES));
        f.faults().set_room_pages(Some(2));
        let data = vec![1u8; 3 * HOST_PAGE_BYTES as usize];
        let err = f.write_all_at(&data, 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert_eq!(f.unsynced_pages(), vec![0, 1]);
        f.write_all_at(b"again", 10).unwrap();
        f.faults().set_room_pages(None);
        f.write_all_at(&data, 0).unwrap();
    }

    /// A failed sync drops the dirty pages and reports EIO; the count of syncs excludes it.
    #[test]
    fn a_failed_sync_loses_the_cache() {
        let mut f = CachedFile::over_ram(RamFile::new(HOST_PAGE_BYTES));
        let faults = f.faults();
        f.write_all_at(b"x", 0).unwrap();
        faults.fail_syncs(true);
        assert!(f.sync_data().is_err());
        faults.fail_syncs(false);
        f.sync_data().unwrap();
        assert_eq!(faults.syncs(), 1);
        let disk = f.crash(|_| true).unwrap();
        let mut b = [9u8; 1];
        disk.read_exact_at(&mut b, 0).unwrap();
        assert_eq!(b[0], 0);
    }
}
