//! A device image file: NAND that outlives the process.
//!
//! [`FileStore`] is a [`PageStore`] for the firmware's strict emulator
//! ([`firmware::nand::sim::SimNand`]), so a file-backed device is checked exactly as the
//! firmware's own tests are. Layout: the [`super::image`] header, one state byte per page, then
//! each page's data and spare bytes.
//!
//! Durability: every program writes the page's bytes with `pwrite` and then its state byte, and
//! the emulator reports the program complete only after both. The kernel keeps written bytes
//! across any exit of this process, `kill -9` included, so the next open finds every completed
//! program and erase; a program cut short by a kill leaves its state byte "erased", which is
//! what a never-acknowledged program may leave. (Surviving a crash of the host itself would
//! need an fsync per program, which this emulator does not pay.)
//!
//! The [`PageStore`] trait has no error channel: a failing host disk under the emulator is an
//! environment fault, so it panics naming the file. The device thread's panic reaches the host
//! as "the device has stopped".

use std::{
    fs::{File, OpenOptions},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use firmware::nand::{
    image::{decode_state, encode_state, Header, HeaderError, ImageLayout, HEADER_BYTES},
    sim::{PageState, PageStore},
    Geometry, PageAddr,
};

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
pub struct FileStore {
    file: File,
    path: PathBuf,
    header: Header,
    states: Vec<u8>,
    pages_at: u64,
    /// Bytes of one page in the file: data then spare.
    stride: u64,
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
        file.set_len(lay.len).map_err(io)?;
        file.write_all_at(&header.encode(), 0).map_err(io)?;
        Ok(FileStore {
            file,
            path: path.into(),
            header,
            states: vec![STATE_ERASED; lay.pages as usize],
            pages_at: lay.pages_at,
            stride: lay.stride,
        })
    }

    /// Opens an existing image, checking its header, its length and every page state.
    pub fn open(path: &Path) -> Result<Self, ImageError> {
        let io = |source| ImageError::Io {
            path: path.into(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io)?;
        let actual = file.metadata().map_err(io)?.len();
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
        Ok(FileStore {
            file,
            path: path.into(),
            header,
            states,
            pages_at: lay.pages_at,
            stride: lay.stride,
        })
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

    fn fail(&self, what: &str, err: std::io::Error) -> ! {
        panic!(
            "device image {}: could not {what}: {err}",
            self.path.display()
        )
    }
}

impl PageStore for FileStore {
    fn geometry(&self) -> Geometry {
        self.header.geometry
    }

    fn load(&self, addr: PageAddr, data: &mut [u8], spare: &mut [u8]) -> PageState {
        let index = self.index(addr);
        let state = decode_state(self.states[index]).unwrap_or(PageState::Undefined);
        if state == PageState::Erased {
            data.fill(0xFF);
            spare.fill(0xFF);
            return state;
        }
        let at = self.page_offset(index);
        if let Err(e) = self.file.read_exact_at(data, at) {
            self.fail("read a page", e);
        }
        if let Err(e) = self.file.read_exact_at(spare, at + data.len() as u64) {
            self.fail("read a page's spare area", e);
        }
        state
    }

    fn state(&self, addr: PageAddr) -> PageState {
        decode_state(self.states[self.index(addr)]).unwrap_or(PageState::Undefined)
    }

    fn save(&mut self, addr: PageAddr, data: &[u8], spare: &[u8], state: PageState) {
        let index = self.index(addr);
        if state != PageState::Erased {
            let at = self.page_offset(index);
            if let Err(e) = self.file.write_all_at(data, at) {
                self.fail("write a page", e);
            }
            if let Err(e) = self.file.write_all_at(spare, at + data.len() as u64) {
                self.fail("write a page's spare area", e);
            }
        }
        // The state byte last: a kill before it leaves the page as it was.
        let value = encode_state(state);
        if let Err(e) = self
            .file
            .write_all_at(&[value], HEADER_BYTES as u64 + index as u64)
        {
            self.fail("write a page state", e);
        }
        self.states[index] = value;
    }
}
