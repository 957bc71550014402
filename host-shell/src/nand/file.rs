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
//! Reads: one `preadv` of a page's data and spare ([`ImageFile::read_pair_at`]); an image the
//! store creates or opens itself is a [`MappedFile`], which copies pages out of a mapping of
//! the file instead. A page's state always comes from the state bytes: an erased page is never
//! read from the file.
//!
//! Host faults on writes and syncs are device conditions, never panics: a write that finds the
//! host disk full (ENOSPC, EDQUOT, or a write that makes no progress) answers
//! [`NandErrorKind::StoreFull`], any other I/O error [`NandErrorKind::StoreFailed`], and the
//! page's state stays as it was. A failed sync may have dropped cached pages (Linux forgets the
//! error after reporting it once), so every later sync fails too, until the image is opened
//! again. A read the host fails is [`NandErrorKind::StoreFailed`] too when the file is read
//! with `preadv`; through the mapping it is a `SIGBUS` that stops the device, with a line in
//! its log ([`super::mapped`]).

use std::{
    fs::{File, OpenOptions},
    io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use super::mapped::MappedFile;
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
pub struct FileStore<F: ImageFile = MappedFile> {
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
            MappedFile::new(file),
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
        FileStore::open_file(MappedFile::new(file), path)
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
        self.file
            .read_pair_at(data, spare, self.page_offset(index))
            .map_err(read_fault)?;
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
    use crate::nand::hostcache::RamFile;
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

    /// Pages read back as programmed, interleaved across blocks as a zone's stripe reads them;
    /// programming a page or erasing its block is seen by the next read.
    fn reads_follow_programs_and_erases<F: ImageFile>(mut store: FileStore<F>) {
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

        for round in 1..4u8 {
            store.erase(blocks[1]).expect("an erase");
            for page in [0, 1, 2] {
                let got = read(&store, PageAddr::new(blocks[1], page));
                assert_eq!(got, (vec![0xFF; 4096], vec![0xFF; 64], PageState::Erased));
            }
            for page in 0..12 {
                program(&mut store, blocks[1], page..page + 1, round);
                for below in 0..=page {
                    let (d, s) = page_bytes(blocks[1].0, below, round);
                    assert_eq!(
                        read(&store, PageAddr::new(blocks[1], below)),
                        (d, s, PageState::Programmed),
                        "round {round} page {below}"
                    );
                }
            }
        }
    }

    #[test]
    fn reads_of_a_file_in_ram_follow_programs_and_erases() {
        reads_follow_programs_and_erases(ram_store(4));
    }

    /// The same through a real file's mapping, and the store reopened reads the same.
    #[test]
    fn mapped_reads_follow_programs_and_erases() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("image");
        let store = FileStore::create(&path, header(4)).expect("image");
        assert!(store.file.is_mapped(), "a real file is mapped");
        reads_follow_programs_and_erases(store);
        let store = FileStore::open(&path).expect("the image reopened");
        let (d, s) = page_bytes(6, 11, 3);
        assert_eq!(
            read(&store, PageAddr::new(BlockId(6), 11)),
            (d, s, PageState::Programmed)
        );
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
