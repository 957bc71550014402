//! A NAND image in a host file, reached through semihosting, so a device outlives QEMU.
//!
//! The format is the host shell's (`docs/FORMAT.md`, section 2; `host-shell/src/nand/image.rs`),
//! so `csd` and the board open the same image file: a 4096-byte header (magic `CSDIMAGE`,
//! version, geometry, zone configuration, CRC-32), one state byte per page padded to 4096
//! bytes, then every page's data and spare bytes. Erased pages are never read from the file.
//!
//! The header code mirrors host-shell's field for field (the host's needs `std`); both would
//! better share one `no_std` definition in `firmware::nand`.

use alloc::vec;
use alloc::vec::Vec;
use core::ffi::CStr;

use crc::{Crc, CRC_32_ISO_HDLC};
use firmware::nand::sim::{PageState, PageStore};
use firmware::nand::{Geometry, PageAddr};
use firmware::zns::ZoneConfig;
use semihosting::fs::{File, OpenOptions};
use semihosting::io::{Read, Seek, SeekFrom, Write};

const MAGIC: &[u8; 8] = b"CSDIMAGE";
const FORMAT_VERSION: u32 = 1;
/// Bytes of the header block.
pub const HEADER_BYTES: usize = 4096;
const VERSION: usize = 8;
const HEADER_LEN: usize = 12;
const GEOMETRY: usize = 16;
const ZONE_BLOCKS: usize = 40;
const ZONE_CAP: usize = 44;
const NR_ZONES: usize = 52;
/// Spare blocks, max open, max active, ZASL and MDTS, one u32 each.
const LIMITS: usize = 56;
const CROSS_ZONE_READ: usize = 76;
const HEADER_CRC: usize = 80;
/// Most pages an image may hold (as the host's `MAX_PAGES`).
const MAX_PAGES: u64 = 1 << 28;
const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

/// Why an image could not be opened or created.
#[derive(Debug)]
pub enum ImageError {
    /// The host file could not be opened, read or written.
    Io(semihosting::io::Error),
    /// The file does not start with an image header of a supported version.
    NotAnImage,
    /// The header's checksum does not match: the header is corrupt.
    BadHeader,
}

impl core::fmt::Display for ImageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ImageError::Io(e) => write!(f, "the image file failed: {e:?}"),
            ImageError::NotAnImage => write!(f, "the file is not a csd image (no CSDIMAGE header)"),
            ImageError::BadHeader => write!(f, "the image header's checksum does not match"),
        }
    }
}

impl From<semihosting::io::Error> for ImageError {
    fn from(e: semihosting::io::Error) -> Self {
        ImageError::Io(e)
    }
}

/// What the image header says about the device.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub geometry: Geometry,
    pub zones: ZoneConfig,
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Header {
    /// The header block.
    pub fn encode(&self) -> [u8; 128] {
        let mut b = [0u8; 128];
        let g = &self.geometry;
        let z = &self.zones;
        b[..8].copy_from_slice(MAGIC);
        put32(&mut b, VERSION, FORMAT_VERSION);
        put32(&mut b, HEADER_LEN, HEADER_BYTES as u32);
        for (i, v) in [
            g.channels,
            g.dies_per_channel,
            g.blocks_per_die,
            g.pages_per_block,
            g.page_bytes,
            g.spare_bytes,
        ]
        .into_iter()
        .enumerate()
        {
            put32(&mut b, GEOMETRY + 4 * i, v);
        }
        put32(&mut b, ZONE_BLOCKS, z.zone_blocks);
        b[ZONE_CAP..ZONE_CAP + 8].copy_from_slice(&z.zone_cap_lbas.unwrap_or(0).to_le_bytes());
        put32(&mut b, NR_ZONES, z.nr_zones.unwrap_or(0));
        for (i, v) in [
            z.spare_blocks,
            z.max_open,
            z.max_active,
            z.zasl_lbas,
            z.mdts_lbas,
        ]
        .into_iter()
        .enumerate()
        {
            put32(&mut b, LIMITS + 4 * i, v);
        }
        b[CROSS_ZONE_READ] = u8::from(z.cross_zone_read);
        let crc = CRC32.checksum(&b[..HEADER_CRC]);
        put32(&mut b, HEADER_CRC, crc);
        b
    }

    /// Checks and reads a header block.
    pub fn decode(b: &[u8]) -> Result<Self, ImageError> {
        if b.len() < 128 || &b[..8] != MAGIC || get32(b, VERSION) != FORMAT_VERSION {
            return Err(ImageError::NotAnImage);
        }
        if CRC32.checksum(&b[..HEADER_CRC]) != get32(b, HEADER_CRC)
            || get32(b, HEADER_LEN) as usize != HEADER_BYTES
        {
            return Err(ImageError::BadHeader);
        }
        let g = |i: usize| get32(b, GEOMETRY + 4 * i);
        let geometry = Geometry {
            channels: g(0),
            dies_per_channel: g(1),
            blocks_per_die: g(2),
            pages_per_block: g(3),
            page_bytes: g(4),
            spare_bytes: g(5),
        };
        let pages = u64::from(geometry.blocks()) * u64::from(geometry.pages_per_block);
        if pages == 0 || pages > MAX_PAGES || geometry.page_bytes != common::LBA_BYTES {
            return Err(ImageError::BadHeader);
        }
        let mut cap = [0u8; 8];
        cap.copy_from_slice(&b[ZONE_CAP..ZONE_CAP + 8]);
        let cap = u64::from_le_bytes(cap);
        let nr_zones = get32(b, NR_ZONES);
        let limit = |i: usize| get32(b, LIMITS + 4 * i);
        let zones = ZoneConfig {
            zone_blocks: get32(b, ZONE_BLOCKS),
            zone_cap_lbas: (cap != 0).then_some(cap),
            nr_zones: (nr_zones != 0).then_some(nr_zones),
            spare_blocks: limit(0),
            max_open: limit(1),
            max_active: limit(2),
            zasl_lbas: limit(3),
            mdts_lbas: limit(4),
            cross_zone_read: b[CROSS_ZONE_READ] != 0,
        };
        Ok(Header { geometry, zones })
    }

    fn pages(&self) -> u64 {
        u64::from(self.geometry.blocks()) * u64::from(self.geometry.pages_per_block)
    }

    fn data_offset(&self) -> u64 {
        HEADER_BYTES as u64 + self.pages().div_ceil(4096) * 4096
    }
}

fn state_byte(s: PageState) -> u8 {
    match s {
        PageState::Erased => 0,
        PageState::Programmed => 1,
        PageState::Torn => 2,
        PageState::Undefined => 3,
    }
}

fn byte_state(b: u8) -> PageState {
    match b {
        0 => PageState::Erased,
        1 => PageState::Programmed,
        2 => PageState::Torn,
        // An unknown state byte is a page nobody can trust.
        _ => PageState::Undefined,
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
        let header = Header::decode(&block)?;
        let mut raw = vec![0u8; header.pages() as usize];
        read_full(&mut file, &mut raw)?;
        let states = raw.into_iter().map(byte_state).collect();
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
        let mut block = vec![0u8; HEADER_BYTES];
        block[..128].copy_from_slice(&header.encode());
        file.write_all(&block)?;
        let pages = header.pages() as usize;
        let erased = vec![state_byte(PageState::Erased); pages.div_ceil(4096) * 4096];
        file.write_all(&erased)?;
        // The host checks the file's exact length: end it after the last page (the bytes
        // between are a hole, read as zero, never read while their pages are erased).
        let g = &header.geometry;
        let end = header.data_offset() + header.pages() * u64::from(g.page_bytes + g.spare_bytes);
        file.seek(SeekFrom::Start(end - 1))?;
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
        let g = &self.header.geometry;
        self.header.data_offset() + index * u64::from(g.page_bytes + g.spare_bytes)
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
        return Err(ImageError::NotAnImage);
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

    fn load(&self, addr: PageAddr, data: &mut [u8], spare: &mut [u8]) -> PageState {
        let i = self.index(addr);
        let state = self.states[i as usize];
        data.fill(0xFF);
        spare.fill(0xFF);
        if state == PageState::Erased {
            return state;
        }
        let mut file = &self.file;
        must("seeking", file.seek(SeekFrom::Start(self.page_offset(i))));
        // A page past the end of a short file was never written: it stays 0xFF.
        must("reading a page", read_up_to(file, data));
        must("reading a spare area", read_up_to(file, spare));
        state
    }

    fn state(&self, addr: PageAddr) -> PageState {
        self.states[self.index(addr) as usize]
    }

    fn save(&mut self, addr: PageAddr, data: &[u8], spare: &[u8], state: PageState) {
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
            self.file.write_all(&[state_byte(state)]),
        );
        self.states[i as usize] = state;
    }
}
