//! A device image file: NAND that outlives the process.
//!
//! [`FileStore`] is a [`PageStore`] for the firmware's strict emulator
//! ([`firmware::nand::sim::SimNand`]), so a file-backed device is checked exactly as the
//! firmware's own tests are. Layout: the [`super::image`] header, one state byte per page, then
//! each page's data and spare bytes. The file itself is behind the [`ImageFile`] seam: a real
//! [`File`], or in tests the host-cache emulator of [`super::hostcache`].
//!
//! Durability: every program writes the page's bytes with `pwrite` and then its state byte, and
//! the emulator reports the program complete only after both. The host keeps written bytes
//! across any exit of this process, `kill -9` included, but only in its page cache: the store
//! is a *volatile write cache* ([`PageStore::volatile_cache`]), and the device's Flush syncs it
//! with `fdatasync` ([`PageStore::sync`]), which is what makes data survive a crash of the host.
//! A sync with nothing written since the last one costs nothing, so concurrent Flushes share
//! one host sync.
//!
//! Reads: a reader going through a block page by page (a zone's sequential reader does, one
//! page per block of its stripe in turn) gets its pages from chunks read ahead of it, by itself
//! or by a helper thread ([`super::ahead`]). Programming a page forgets what was read ahead in
//! its block, and a page's state always comes from the state bytes (an erased page is never
//! read from the file).
//!
//! Host faults are device conditions, never panics: a write that finds the host disk full
//! (ENOSPC, EDQUOT, or a write that makes no progress) answers [`NandErrorKind::StoreFull`],
//! any other I/O error [`NandErrorKind::StoreFailed`], and the page's state stays as it was.
//! A failed sync may have dropped cached pages (Linux forgets the error after reporting it
//! once), so every later sync fails too, until the image is opened again.

use std::{
    fs::{File, OpenOptions},
    io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use super::ahead::{Loaded, ReadAhead};
use firmware::nand::{
    image::{decode_state, encode_state, Header, HeaderError, ImageLayout, HEADER_BYTES},
    sim::{PageState, PageStore},
    BlockId, Geometry, NandErrorKind, PageAddr,
};

/// The file under a device image: positioned reads and writes, and a data sync.
pub trait ImageFile: Send + std::fmt::Debug + 'static {
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Reads `first.len()` bytes at `offset` into `first` and the bytes right after them into
    /// `second` (a page's data and its spare area: one system call where the file allows).
    fn read_pair_at(&self, first: &mut [u8], second: &mut [u8], offset: u64) -> io::Result<()> {
        self.read_exact_at(first, offset)?;
        self.read_exact_at(second, offset + first.len() as u64)
    }
    /// Writes all of `buf` at `offset` (on an error, any prefix of it may have been written).
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every write so far durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
    /// The file's length in bytes.
    fn len_bytes(&self) -> io::Result<u64>;
    /// Another handle that reads the same bytes, for the read-ahead's helper thread, if the
    /// file has one (a file whose reads must go through this handle has none).
    fn reader(&self) -> Option<File> {
        None
    }
}

impl ImageFile for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }

    fn read_pair_at(&self, first: &mut [u8], second: &mut [u8], offset: u64) -> io::Result<()> {
        let mut bufs = [io::IoSliceMut::new(first), io::IoSliceMut::new(second)];
        let n = loop {
            match rustix::io::preadv(self, &mut bufs, offset) {
                Err(rustix::io::Errno::INTR) => continue,
                other => break other?,
            }
        };
        let (first_len, second_len) = (bufs[0].len(), bufs[1].len());
        // A short read (the end of the file, or a signal) finishes one piece at a time.
        if n < first_len + second_len {
            let [mut first, mut second] = bufs;
            let (done_first, done_second) = (n.min(first_len), n.saturating_sub(first_len));
            FileExt::read_exact_at(self, &mut first[done_first..], offset + done_first as u64)?;
            let at = offset + (first_len + done_second) as u64;
            FileExt::read_exact_at(self, &mut second[done_second..], at)?;
        }
        Ok(())
    }

    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn len_bytes(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn reader(&self) -> Option<File> {
        self.try_clone().ok()
    }
}

/// Why an image could not be created or opened.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} already exists; pick another path or remove it first")]
    Exists { path: PathBuf },
    #[error("{path} is not a usable device image: {source}")]
    Header { path: PathBuf, source: HeaderError },
    #[error("{path} is {actual} bytes long but its header describes {expected} bytes: the image is truncated or was extended")]
    WrongLength {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error(
        "{path} has an invalid page state byte {value:#04x} at page {page}: the image is corrupt"
    )]
    BadState { path: PathBuf, page: u64, value: u8 },
}

const STATE_ERASED: u8 = 0;

/// NAND pages in a file. See the module docs.
#[derive(Debug)]
pub struct FileStore<F: ImageFile = File> {
    file: F,
    path: PathBuf,
    header: Header,
    states: Vec<u8>,
    pages_at: u64,
    /// Bytes of one page in the file: data then spare.
    stride: u64,
    /// One page's data and spare, written with one `pwrite`.
    scratch: Vec<u8>,
    /// Whether pages were written since the last sync.
    unsynced: bool,
    /// A sync failed: what it should have made durable may be gone.
    sync_failed: bool,
    /// Pages read ahead for sequential readers (see the module docs).
    ahead: ReadAhead,
}

impl FileStore {
    /// Creates a new, fully erased image at `path` (which must not exist).
    pub fn create(path: &Path, header: Header) -> Result<Self, ImageError> {
        firmware::nand::image::check_geometry(&header.geometry).map_err(|source| {
            ImageError::Header {
                path: path.into(),
                source,
            }
        })?;
        let io = |source| ImageError::Io {
            path: path.into(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => ImageError::Exists { path: path.into() },
                _ => io(e),
            })?;
        let lay = ImageLayout::of(&header.geometry);
        // Sparse: state bytes of zero mean "erased", and erased pages are never read.
        let made = file
            .set_len(lay.len)
            .and_then(|()| FileExt::write_all_at(&file, &header.encode(), 0))
            .and_then(|()| file.sync_all());
        if let Err(e) = made {
            let _ = std::fs::remove_file(path);
            return Err(io(e));
        }
        Ok(FileStore::assemble(
            file,
            path,
            header,
            vec![STATE_ERASED; lay.pages as usize],
        ))
    }

    /// Opens an existing image, checking its header, its length and every page state.
    pub fn open(path: &Path) -> Result<Self, ImageError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| ImageError::Io {
                path: path.into(),
                source,
            })?;
        FileStore::open_file(file, path)
    }
}

impl<F: ImageFile> FileStore<F> {
    /// A new, fully erased image in `file`, which is [`ImageLayout::len`] bytes of zeros
    /// (`name` names it in errors).
    pub fn create_in(mut file: F, name: &Path, header: Header) -> Result<Self, ImageError> {
        firmware::nand::image::check_geometry(&header.geometry).map_err(|source| {
            ImageError::Header {
                path: name.into(),
                source,
            }
        })?;
        let lay = ImageLayout::of(&header.geometry);
        file.write_all_at(&header.encode(), 0)
            .map_err(|source| ImageError::Io {
                path: name.into(),
                source,
            })?;
        Ok(FileStore::assemble(
            file,
            name,
            header,
            vec![STATE_ERASED; lay.pages as usize],
        ))
    }

    fn assemble(file: F, path: &Path, header: Header, states: Vec<u8>) -> Self {
        let lay = ImageLayout::of(&header.geometry);
        let page = header.geometry.page_bytes as usize + header.geometry.spare_bytes as usize;
        let helper_file = file.reader();
        FileStore {
            file,
            path: path.into(),
            header,
            states,
            pages_at: lay.pages_at,
            stride: lay.stride,
            scratch: Vec::with_capacity(page),
            unsynced: false,
            sync_failed: false,
            ahead: ReadAhead::new(lay, header.geometry.pages_per_block, helper_file),
        }
    }

    /// Opens the image in `file`, checking its header, its length and every page state
    /// (`path` names it in errors).
    pub fn open_file(file: F, path: &Path) -> Result<Self, ImageError> {
        let io = |source| ImageError::Io {
            path: path.into(),
            source,
        };
        let actual = file.len_bytes().map_err(io)?;
        let mut head = vec![0u8; HEADER_BYTES.min(actual as usize)];
        file.read_exact_at(&mut head, 0).map_err(io)?;
        let header = Header::decode(&head).map_err(|source| ImageError::Header {
            path: path.into(),
            source,
        })?;
        let lay = ImageLayout::of(&header.geometry);
        if actual != lay.len {
            return Err(ImageError::WrongLength {
                path: path.into(),
                expected: lay.len,
                actual,
            });
        }
        let mut states = vec![0u8; lay.pages as usize];
        file.read_exact_at(&mut states, HEADER_BYTES as u64)
            .map_err(io)?;
        if let Some((page, &value)) = states
            .iter()
            .enumerate()
            .find(|(_, v)| decode_state(**v).is_none())
        {
            return Err(ImageError::BadState {
                path: path.into(),
                page: page as u64,
                value,
            });
        }
        Ok(FileStore::assemble(file, path, header, states))
    }

    /// Gives the file back (the store is closed).
    pub fn into_file(self) -> F {
        self.file
    }

    /// What the image's header says.
    pub fn header(&self) -> Header {
        self.header
    }

    /// The image's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn index(&self, addr: PageAddr) -> usize {
        addr.block.0 as usize * self.header.geometry.pages_per_block as usize + addr.page as usize
    }

    fn page_offset(&self, index: usize) -> u64 {
        self.pages_at + index as u64 * self.stride
    }

    /// A host I/O error as the NAND condition it stands for, reported once on stderr (the
    /// device's log) with the file and what failed.
    fn fault(&self, what: &str, err: &io::Error) -> NandErrorKind {
        let full = err.kind() == io::ErrorKind::StorageFull
            || err.kind() == io::ErrorKind::QuotaExceeded
            || err.kind() == io::ErrorKind::WriteZero;
        eprintln!(
            "csd device: image {}: could not {what}: {err}",
            self.path.display()
        );
        if full {
            NandErrorKind::StoreFull
        } else {
            NandErrorKind::StoreFailed
        }
    }

    fn write_state(&mut self, index: usize, values: &[u8]) -> Result<(), NandErrorKind> {
        let at = HEADER_BYTES as u64 + index as u64;
        self.unsynced = true;
        self.file
            .write_all_at(values, at)
            .map_err(|e| self.fault("write a page state", &e))?;
        self.states[index..index + values.len()].copy_from_slice(values);
        Ok(())
    }
}

impl<F: ImageFile> PageStore for FileStore<F> {
    fn geometry(&self) -> Geometry {
        self.header.geometry
    }

    fn load(
        &self,
        addr: PageAddr,
        data: &mut [u8],
        spare: &mut [u8],
    ) -> Result<PageState, NandErrorKind> {
        let index = self.index(addr);
        let state = decode_state(self.states[index]).unwrap_or(PageState::Undefined);
        if state == PageState::Erased {
            data.fill(0xFF);
            spare.fill(0xFF);
            return Ok(state);
        }
        let read_fault = |e: io::Error| match self.fault("read a page", &e) {
            // A read never needs room: whatever failed, it is the host disk failing.
            NandErrorKind::StoreFull => NandErrorKind::StoreFailed,
            other => other,
        };
        let loaded = self
            .ahead
            .load(addr, data, spare, |chunk, at| {
                self.file.read_exact_at(chunk, at)
            })
            .map_err(read_fault)?;
        if loaded == Loaded::Yours {
            self.file
                .read_pair_at(data, spare, self.page_offset(index))
                .map_err(read_fault)?;
        }
        Ok(state)
    }

    fn state(&self, addr: PageAddr) -> PageState {
        decode_state(self.states[self.index(addr)]).unwrap_or(PageState::Undefined)
    }

    fn save(
        &mut self,
        addr: PageAddr,
        data: &[u8],
        spare: &[u8],
        state: PageState,
    ) -> Result<(), NandErrorKind> {
        let index = self.index(addr);
        self.ahead.forget(addr.block);
        if state != PageState::Erased {
            let at = self.page_offset(index);
            let mut page = std::mem::take(&mut self.scratch);
            page.clear();
            page.extend_from_slice(data);
            page.extend_from_slice(spare);
            self.unsynced = true;
            let written = self.file.write_all_at(&page, at);
            self.scratch = page;
            written.map_err(|e| self.fault("write a page", &e))?;
        }
        // The state byte last: a kill (or a refusal) before it leaves the page as it was.
        self.write_state(index, &[encode_state(state)])
    }

    /// One write of the block's state bytes (they are consecutive): if it fails, the states
    /// this store answers with are unchanged.
    fn erase(&mut self, block: BlockId) -> Result<(), NandErrorKind> {
        let per_block = self.header.geometry.pages_per_block as usize;
        let first = self.index(PageAddr::new(block, 0));
        let erased = vec![encode_state(PageState::Erased); per_block];
        self.write_state(first, &erased)
    }

    fn volatile_cache(&self) -> bool {
        true
    }

    fn sync(&mut self) -> Result<(), NandErrorKind> {
        if self.sync_failed {
            return Err(NandErrorKind::StoreFailed);
        }
        if !self.unsynced {
            return Ok(());
        }
        if let Err(e) = self.file.sync_data() {
            self.sync_failed = true;
            return Err(self.fault("sync the image to disk", &e));
        }
        self.unsynced = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nand::{
        ahead::{READ_AHEAD_BLOCKS, READ_AHEAD_PAGES},
        hostcache::RamFile,
    };
    use firmware::{nand::image::ImageLayout, zns::ZoneConfig};

    fn header(blocks_per_die: u32) -> Header {
        let geometry = Geometry {
            channels: 1,
            dies_per_channel: 2,
            blocks_per_die,
            pages_per_block: 32,
            page_bytes: 4096,
            spare_bytes: 64,
        };
        Header {
            geometry,
            zones: ZoneConfig::for_geometry(&geometry),
            timing_preset: 0,
        }
    }

    fn ram_store(blocks_per_die: u32) -> FileStore<RamFile> {
        let header = header(blocks_per_die);
        let file = RamFile::new(ImageLayout::of(&header.geometry).len);
        FileStore::create_in(file, Path::new("ram.img"), header).expect("an image in RAM")
    }

    fn page_bytes(block: u32, page: u32, round: u8) -> (Vec<u8>, Vec<u8>) {
        let data = (0..4096u32)
            .map(|i| (i as u8) ^ (block as u8) ^ (page as u8).rotate_left(3) ^ round)
            .collect();
        (data, vec![page as u8 ^ round; 64])
    }

    /// Programs `pages` of `block` with [`page_bytes`] of `round`.
    fn program<F: ImageFile>(
        store: &mut FileStore<F>,
        block: BlockId,
        pages: std::ops::Range<u32>,
        round: u8,
    ) {
        for page in pages {
            let (d, s) = page_bytes(block.0, page, round);
            let addr = PageAddr::new(block, page);
            store
                .save(addr, &d, &s, PageState::Programmed)
                .expect("a program");
        }
    }

    fn read<F: ImageFile>(store: &FileStore<F>, addr: PageAddr) -> (Vec<u8>, Vec<u8>, PageState) {
        let (mut data, mut spare) = (vec![0; 4096], vec![0; 64]);
        let state = store.load(addr, &mut data, &mut spare).expect("a load");
        (data, spare, state)
    }

    /// Readers going through blocks page by page, interleaved as a zone's stripe reads them,
    /// get every page's own bytes; programming a page or erasing the block is seen by the next
    /// read, whatever was read ahead before.
    #[test]
    fn read_ahead_follows_programs_and_erases() {
        let mut store = ram_store(4);
        let blocks = [BlockId(1), BlockId(6)];
        for block in blocks {
            program(&mut store, block, 0..20, 0);
        }
        for page in 0..20 {
            for block in blocks {
                let (d, s) = page_bytes(block.0, page, 0);
                let got = read(&store, PageAddr::new(block, page));
                assert_eq!(got, (d, s, PageState::Programmed), "{block:?} page {page}");
            }
        }
        let (chunk, _) = store.ahead.pages_ahead(blocks[0]).expect("a stream");
        assert!(chunk > 1, "sequential reads were read ahead");

        // Pages 20 and 21 are still erased, though the last read ahead may cover them.
        let addr = PageAddr::new(blocks[0], 20);
        assert_eq!(
            read(&store, addr),
            (vec![0xFF; 4096], vec![0xFF; 64], PageState::Erased)
        );
        let (d, s) = page_bytes(blocks[0].0, 21, 7);
        store
            .save(PageAddr::new(blocks[0], 21), &d, &s, PageState::Programmed)
            .expect("a program");
        assert_eq!(
            read(&store, PageAddr::new(blocks[0], 21)),
            (d, s, PageState::Programmed)
        );

        store.erase(blocks[1]).expect("an erase");
        for page in [0, 1, 2] {
            let got = read(&store, PageAddr::new(blocks[1], page));
            assert_eq!(got, (vec![0xFF; 4096], vec![0xFF; 64], PageState::Erased));
        }
        program(&mut store, blocks[1], 0..12, 9);
        for page in 0..12 {
            let (d, s) = page_bytes(blocks[1].0, page, 9);
            assert_eq!(
                read(&store, PageAddr::new(blocks[1], page)),
                (d, s, PageState::Programmed)
            );
        }
    }

    /// More blocks read at once than the store follows: the streams it drops and reuses give
    /// every page its own bytes.
    #[test]
    fn read_ahead_of_more_blocks_than_it_follows() {
        let mut store = ram_store(READ_AHEAD_BLOCKS as u32);
        let blocks = 2 * READ_AHEAD_BLOCKS as u32;
        for block in 0..blocks {
            program(&mut store, BlockId(block), 0..3, 1);
        }
        for round in 0..2 {
            // Every other block, then the rest, each read through (and read ahead): streams
            // are dropped and reused for other blocks, their bytes with them.
            let order = (0..blocks).step_by(2).chain((1..blocks).step_by(2));
            for block in order {
                for page in 0..3 {
                    let (d, s) = page_bytes(block, page, 1);
                    let got = read(&store, PageAddr::new(BlockId(block), page));
                    assert_eq!(got, (d, s, PageState::Programmed), "round {round}");
                }
                let (chunk, _) = store.ahead.pages_ahead(BlockId(block)).expect("a stream");
                assert!(chunk > 1, "block {block} was read ahead");
            }
        }
        assert_eq!(store.ahead.followed(), READ_AHEAD_BLOCKS);
    }

    /// With a real file, the helper thread reads the next chunk of a sequential reader's block.
    /// A chunk it read while pages of it were still erased is dropped when they are
    /// programmed: the reader gets the programmed bytes.
    #[test]
    fn the_helper_reads_ahead_and_programs_win() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut store = FileStore::create(&dir.path().join("image"), header(2)).expect("image");
        assert!(store.ahead.helped(), "a real file has a helper");
        let block = BlockId(1);
        let chunk = READ_AHEAD_PAGES;
        program(&mut store, block, 0..2 * chunk + 3, 0);
        // Page 1 starts a chunk (page 0 could be a lone read), and page chunk + 1 goes on
        // into the next, so the helper is asked for the one after that: most of it still
        // erased in the file.
        for page in 0..chunk + 2 {
            let (d, s) = page_bytes(block.0, page, 0);
            assert_eq!(
                read(&store, PageAddr::new(block, page)),
                (d, s, PageState::Programmed)
            );
        }
        let waited = std::time::Instant::now();
        while store.ahead.pages_ahead(block) != Some((chunk, chunk)) {
            assert!(
                waited.elapsed() < std::time::Duration::from_secs(10),
                "the helper read the next chunk: {:?}",
                store.ahead.pages_ahead(block)
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        program(&mut store, block, 2 * chunk + 3..4 * chunk, 0);
        for page in chunk + 2..4 * chunk {
            let (d, s) = page_bytes(block.0, page, 0);
            assert_eq!(
                read(&store, PageAddr::new(block, page)),
                (d, s, PageState::Programmed),
                "page {page}"
            );
        }
    }

    /// Background work's reads ask nothing of the helper; the same reader outside it does.
    #[test]
    fn unhelped_reads_ask_nothing() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut store = FileStore::create(&dir.path().join("image"), header(2)).expect("image");
        let block = BlockId(0);
        program(&mut store, block, 0..32, 0);
        let chunk = READ_AHEAD_PAGES;
        let read_to = |store: &FileStore, pages: std::ops::Range<u32>| {
            for page in pages {
                let (d, s) = page_bytes(block.0, page, 0);
                assert_eq!(
                    read(store, PageAddr::new(block, page)),
                    (d, s, PageState::Programmed)
                );
            }
        };
        crate::nand::ahead::unhelped(|| read_to(&store, 0..chunk + 2));
        assert_eq!(store.ahead.asked(block), None);
        assert_eq!(store.ahead.pages_ahead(block), Some((chunk, 0)));
        read_to(&store, chunk + 2..2 * chunk + 2);
        assert_eq!(store.ahead.asked(block), Some(3 * chunk + 1));
    }

    /// Readers going through blocks that are erased and programmed again between their reads,
    /// with the helper reading ahead all along: every page reads as last programmed.
    #[test]
    fn the_helper_races_programs_and_erases() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut store = FileStore::create(&dir.path().join("image"), header(4)).expect("image");
        let blocks = [BlockId(0), BlockId(3), BlockId(5)];
        let pages = 32;
        for round in 0..20u8 {
            for &block in &blocks {
                store.erase(block).expect("an erase");
                for page in 0..pages {
                    program(&mut store, block, page..page + 1, round);
                    // Read the pages below as the stripe's reader would, so the helper is
                    // asked for chunks that the next programs change.
                    if page % 5 == 4 {
                        for below in 0..=page {
                            let (d, s) = page_bytes(block.0, below, round);
                            let got = read(&store, PageAddr::new(block, below));
                            assert_eq!(got, (d, s, PageState::Programmed), "round {round}");
                        }
                    }
                }
            }
        }
    }

    /// A page's data and spare come back from one read of a real file, whole, and a pair that
    /// runs past the end of the file is an error, not a short page.
    #[test]
    fn pair_reads_of_a_real_file() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("image");
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        std::fs::write(&path, &bytes).expect("write");
        let file = File::open(&path).expect("open");
        let (mut data, mut spare) = (vec![0; 4096], vec![0; 64]);
        file.read_pair_at(&mut data, &mut spare, 100).expect("read");
        assert_eq!(data, bytes[100..4196]);
        assert_eq!(spare, bytes[4196..4260]);
        let err = file
            .read_pair_at(&mut data, &mut spare, 10_000 - 4100)
            .expect_err("past the end");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
