//! A NAND image in a host file, reached through semihosting, so a device outlives QEMU.
//!
//! # Image format (version 1, little-endian)
//!
//! ```text
//! 0     8 bytes  magic "CSDIMAGE"
//! 8     u32      format version (1)
//! 12    u32 x 6  geometry: channels, dies per channel, blocks per die, pages per block,
//!                page bytes, spare bytes
//! 36    u32      zone blocks
//! 40    u64      zone capacity in LBAs (0: every page of the zone's blocks)
//! 48    u32      number of zones (0: as many as fit)
//! 52    u32 x 5  spare blocks, max open, max active, ZASL (LBAs), MDTS (LBAs)
//! 72    u8       cross-zone read (0 or 1)
//! 73..HEADER_CRC zero
//! 124   u32      CRC-32 (ISO-HDLC) of bytes 0..124
//! 128..4096      zero
//! 4096           one state byte per page (0 erased, 1 programmed, 2 torn, 3 undefined),
//!                pages numbered block after block
//! data_offset    per page: data then spare bytes (data_offset = 4096 + pages rounded up to
//!                4096). The page of an erased state reads as 0xFF whatever the file holds, so
//!                a new image is its header and states only.
//! ```

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
const HEADER_CRC: usize = 124;
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
        put32(&mut b, 8, FORMAT_VERSION);
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
            put32(&mut b, 12 + 4 * i, v);
        }
        put32(&mut b, 36, z.zone_blocks);
        b[40..48].copy_from_slice(&z.zone_cap_lbas.unwrap_or(0).to_le_bytes());
        put32(&mut b, 48, z.nr_zones.unwrap_or(0));
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
            put32(&mut b, 52 + 4 * i, v);
        }
        b[72] = u8::from(z.cross_zone_read);
        let crc = CRC32.checksum(&b[..HEADER_CRC]);
        put32(&mut b, HEADER_CRC, crc);
        b
    }

    /// Checks and reads a header block.
    pub fn decode(b: &[u8]) -> Result<Self, ImageError> {
        if b.len() < 128 || &b[..8] != MAGIC || get32(b, 8) != FORMAT_VERSION {
            return Err(ImageError::NotAnImage);
        }
        if CRC32.checksum(&b[..HEADER_CRC]) != get32(b, HEADER_CRC) {
            return Err(ImageError::BadHeader);
        }
        let geometry = Geometry {
            channels: get32(b, 12),
            dies_per_channel: get32(b, 16),
            blocks_per_die: get32(b, 20),
            pages_per_block: get32(b, 24),
            page_bytes: get32(b, 28),
            spare_bytes: get32(b, 32),
        };
        let mut cap = [0u8; 8];
        cap.copy_from_slice(&b[40..48]);
        let cap = u64::from_le_bytes(cap);
        let nr_zones = get32(b, 48);
        let zones = ZoneConfig {
            zone_blocks: get32(b, 36),
            zone_cap_lbas: (cap != 0).then_some(cap),
            nr_zones: (nr_zones != 0).then_some(nr_zones),
            spare_blocks: get32(b, 52),
            max_open: get32(b, 56),
            max_active: get32(b, 60),
            zasl_lbas: get32(b, 64),
            mdts_lbas: get32(b, 68),
            cross_zone_read: b[72] != 0,
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
            must("seeking", self.file.seek(SeekFrom::Start(self.page_offset(i))));
            must("writing a page", self.file.write_all(data));
            must("writing a spare area", self.file.write_all(spare));
        }
        must(
            "seeking",
            self.file.seek(SeekFrom::Start(HEADER_BYTES as u64 + i)),
        );
        must("writing a page state", self.file.write_all(&[state_byte(state)]));
        self.states[i as usize] = state;
    }
}
