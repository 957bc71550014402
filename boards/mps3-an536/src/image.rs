//! A NAND image in a host file, reached through semihosting, so a device outlives QEMU.
//!
//! The format is the host shell's (`docs/FORMAT.md`, section 2; `host-shell/src/nand/image.rs`),
//! so `csd` and the board open the same image file: a 4096-byte header (magic `CSDIMAGE`,
//! version, geometry, zone configuration, CRC-32), one state byte per page padded to 4096
//! bytes, then every page's data and spare bytes. Erased pages are never read from the file.
//!
//! The header, layout and state bytes are `firmware::nand::image`'s, the one definition both
//! sides share; this file adds only the semihosting file access.

use alloc::vec;
use alloc::vec::Vec;
use core::ffi::CStr;

use firmware::nand::image::{
    decode_state, encode_state, Header, HeaderError, ImageLayout, HEADER_BYTES,
};
use firmware::nand::sim::{PageState, PageStore};
use firmware::nand::{Geometry, NandErrorKind, PageAddr};
use semihosting::fs::{File, OpenOptions};
use semihosting::io::{Read, Seek, SeekFrom, Write};

/// Why an image could not be opened or created.
#[derive(Debug)]
pub enum ImageError {
    /// The host file could not be opened, read or written.
    Io(semihosting::io::Error),
    /// The header is not a usable image header.
    Header(HeaderError),
    /// The file ends before its header or page states do.
    Truncated,
}

impl core::fmt::Display for ImageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ImageError::Io(e) => write!(f, "the image file failed: {e:?}"),
            ImageError::Header(e) => write!(f, "the file is not a usable csd image: {e}"),
            ImageError::Truncated => write!(f, "the image file is truncated"),
        }
    }
}

impl From<semihosting::io::Error> for ImageError {
    fn from(e: semihosting::io::Error) -> Self {
        ImageError::Io(e)
    }
}

/// Pages of a NAND image file (see the module docs), the states cached in RAM.
#[derive(Debug)]
pub struct FileStore {
    file: File,
    header: Header,
    states: Vec<PageState>,
}

impl FileStore {
    /// Opens the image at `path`.
    pub fn open(path: &CStr) -> Result<Self, ImageError> {
        let mut file = OpenOptions::new().read(true).write(true).open(path)?;
        let mut block = vec![0u8; HEADER_BYTES];
        read_full(&mut file, &mut block)?;
        let header = Header::decode(&block).map_err(ImageError::Header)?;
        let mut raw = vec![0u8; ImageLayout::of(&header.geometry).pages as usize];
        read_full(&mut file, &mut raw)?;
        // An unknown state byte is a page nobody can trust.
        let states = raw
            .into_iter()
            .map(|b| decode_state(b).unwrap_or(PageState::Undefined))
            .collect();
        Ok(FileStore {
            file,
            header,
            states,
        })
    }

    /// Creates (or truncates) the image at `path` as an erased device described by `header`.
    pub fn create(path: &CStr, header: Header) -> Result<Self, ImageError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        file.write_all(&header.encode())?;
        let layout = ImageLayout::of(&header.geometry);
        let pages = layout.pages as usize;
        let erased =
            vec![encode_state(PageState::Erased); (layout.pages_at - layout.states_at) as usize];
        file.write_all(&erased)?;
        // The host checks the file's exact length: end it after the last page (the bytes
        // between are a hole, read as zero, never read while their pages are erased).
        file.seek(SeekFrom::Start(layout.len - 1))?;
        file.write_all(&[0xFF])?;
        Ok(FileStore {
            file,
            header,
            states: vec![PageState::Erased; pages],
        })
    }

    /// The image's header.
    pub fn header(&self) -> Header {
        self.header
    }

    fn index(&self, addr: PageAddr) -> u64 {
        u64::from(addr.block.0) * u64::from(self.header.geometry.pages_per_block)
            + u64::from(addr.page)
    }

    fn page_offset(&self, index: u64) -> u64 {
        ImageLayout::of(&self.header.geometry).page_offset(index)
    }
}

/// Reads until `buf` is full or the file ends; the rest of `buf` is left as it was.
fn read_up_to(mut file: &File, buf: &mut [u8]) -> Result<usize, semihosting::io::Error> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            got => n += got,
        }
    }
    Ok(n)
}

fn read_full(file: &mut File, buf: &mut [u8]) -> Result<(), ImageError> {
    if read_up_to(file, buf)? != buf.len() {
        return Err(ImageError::Truncated);
    }
    Ok(())
}

/// The page store cannot report errors: a failing image file ends the run with a clear panic.
fn must<T>(what: &str, r: Result<T, semihosting::io::Error>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("the NAND image file failed while {what}: {e:?}"),
    }
}

impl PageStore for FileStore {
    fn geometry(&self) -> Geometry {
        self.header.geometry
    }

    fn load(
        &self,
        addr: PageAddr,
        data: &mut [u8],
        spare: &mut [u8],
    ) -> Result<PageState, NandErrorKind> {
        let i = self.index(addr);
        let state = self.states[i as usize];
        data.fill(0xFF);
        spare.fill(0xFF);
        if state == PageState::Erased {
            return Ok(state);
        }
        let mut file = &self.file;
        must("seeking", file.seek(SeekFrom::Start(self.page_offset(i))));
        // A page past the end of a short file was never written: it stays 0xFF.
        must("reading a page", read_up_to(file, data));
        must("reading a spare area", read_up_to(file, spare));
        Ok(state)
    }

    fn state(&self, addr: PageAddr) -> PageState {
        self.states[self.index(addr) as usize]
    }

    fn save(
        &mut self,
        addr: PageAddr,
        data: &[u8],
        spare: &[u8],
        state: PageState,
    ) -> Result<(), NandErrorKind> {
        let i = self.index(addr);
        if state != PageState::Erased {
            must(
                "seeking",
                self.file.seek(SeekFrom::Start(self.page_offset(i))),
            );
            must("writing a page", self.file.write_all(data));
            must("writing a spare area", self.file.write_all(spare));
        }
        must(
            "seeking",
            self.file.seek(SeekFrom::Start(HEADER_BYTES as u64 + i)),
        );
        must(
            "writing a page state",
            self.file.write_all(&[encode_state(state)]),
        );
        self.states[i as usize] = state;
        Ok(())
    }
}
