//! The header of a device image file: explicit little-endian fields at fixed offsets, checked
//! before anything else of the file is trusted.
//!
//! ```text
//! offset size field
//!      0    8 magic "CSDIMAGE"
//!      8    4 format version (1)
//!     12    4 header bytes (4096)
//!     16   24 geometry: channels, dies_per_channel, blocks_per_die, pages_per_block,
//!             page_bytes, spare_bytes (u32 each)
//!     40    4 zone_blocks           (zone configuration, see firmware::zns::ZoneConfig)
//!     44    8 zone_cap_lbas         (0: every page of the zone's blocks)
//!     52    4 nr_zones              (0: as many as fit)
//!     56    4 spare_blocks
//!     60    4 max_open
//!     64    4 max_active
//!     68    4 zasl_lbas
//!     72    4 mdts_lbas
//!     76    1 cross_zone_read (0 or 1)
//!     77    1 timing preset the image was made with (0: none recorded; the host shell's
//!             presets name the others: 1 small, 2 zn540, 3 newport)
//!     78    2 reserved, zero
//!     80    4 CRC-32 (ISO-HDLC) of bytes 0..80
//!     84 4012 zero
//! ```
//! After the header: one state byte per page ([`encode_state`]), padded to a multiple of 4096
//! bytes, then every page's data and spare bytes, page after page ([`ImageLayout`]).
//!
//! The one definition of the format: the host shell's image files and the board's semihosting
//! files both use it, so `csd` and the Cortex-R52 open the same image.

use crate::{nand::Geometry, zns::ZoneConfig};

/// First bytes of every image.
pub const MAGIC: [u8; 8] = *b"CSDIMAGE";
/// The format this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Size of the header.
pub const HEADER_BYTES: usize = 4096;

const VERSION: usize = 8;
const HEADER_LEN: usize = 12;
const GEOMETRY: usize = 16;
const ZONE_BLOCKS: usize = 40;
const ZONE_CAP: usize = 44;
const NR_ZONES: usize = 52;
const SPARE_BLOCKS: usize = 56;
const MAX_OPEN: usize = 60;
const MAX_ACTIVE: usize = 64;
const ZASL: usize = 68;
const MDTS: usize = 72;
const CROSS_ZONE_READ: usize = 76;
const TIMING_PRESET: usize = 77;
const CRC: usize = 80;

const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// What an image header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The NAND's shape.
    pub geometry: Geometry,
    /// How the zone manager carves it into zones.
    pub zones: ZoneConfig,
    /// The timing preset the image was made with (0: none recorded). The firmware does not
    /// interpret it; the host shell's device model does.
    pub timing_preset: u8,
}

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// No `CSDIMAGE` signature at the start.
    NotAnImage,
    /// Another format version.
    UnsupportedVersion {
        /// The version the header names.
        found: u32,
    },
    /// The checksum or a fixed field does not match.
    Corrupt,
    /// The geometry is impossible.
    BadGeometry(&'static str),
    /// Fewer bytes than a header.
    Truncated {
        /// Bytes available.
        len: usize,
    },
}

impl core::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            HeaderError::NotAnImage => {
                f.write_str("it is not a csd device image (no CSDIMAGE signature at its start)")
            }
            HeaderError::UnsupportedVersion { found } => write!(
                f,
                "it is a csd device image of format {found}, but this csd reads format {FORMAT_VERSION}"
            ),
            HeaderError::Corrupt => f.write_str("its header is corrupt (checksum mismatch)"),
            HeaderError::BadGeometry(why) => {
                write!(f, "its header describes an impossible geometry ({why})")
            }
            HeaderError::Truncated { len } => {
                write!(f, "it is shorter than its header ({len} bytes)")
            }
        }
    }
}

impl core::error::Error for HeaderError {}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

impl Header {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        b[..8].copy_from_slice(&MAGIC);
        put_u32(&mut b, VERSION, FORMAT_VERSION);
        put_u32(&mut b, HEADER_LEN, HEADER_BYTES as u32);
        let g = &self.geometry;
        let fields = [
            g.channels,
            g.dies_per_channel,
            g.blocks_per_die,
            g.pages_per_block,
            g.page_bytes,
            g.spare_bytes,
        ];
        for (i, v) in fields.into_iter().enumerate() {
            put_u32(&mut b, GEOMETRY + 4 * i, v);
        }
        let z = &self.zones;
        put_u32(&mut b, ZONE_BLOCKS, z.zone_blocks);
        put_u64(&mut b, ZONE_CAP, z.zone_cap_lbas.unwrap_or(0));
        put_u32(&mut b, NR_ZONES, z.nr_zones.unwrap_or(0));
        put_u32(&mut b, SPARE_BLOCKS, z.spare_blocks);
        put_u32(&mut b, MAX_OPEN, z.max_open);
        put_u32(&mut b, MAX_ACTIVE, z.max_active);
        put_u32(&mut b, ZASL, z.zasl_lbas);
        put_u32(&mut b, MDTS, z.mdts_lbas);
        b[CROSS_ZONE_READ] = u8::from(z.cross_zone_read);
        b[TIMING_PRESET] = self.timing_preset;
        let crc = CRC32.checksum(&b[..CRC]);
        put_u32(&mut b, CRC, crc);
        b
    }

    /// Reads a header from untrusted bytes: signature, version, checksum, then sanity of every
    /// field.
    pub fn decode(b: &[u8]) -> Result<Header, HeaderError> {
        if b.len() < 8 || b[..8] != MAGIC {
            return Err(HeaderError::NotAnImage);
        }
        if b.len() < HEADER_BYTES {
            return Err(HeaderError::Truncated { len: b.len() });
        }
        let version = u32_at(b, VERSION);
        if version != FORMAT_VERSION {
            return Err(HeaderError::UnsupportedVersion { found: version });
        }
        if CRC32.checksum(&b[..CRC]) != u32_at(b, CRC) {
            return Err(HeaderError::Corrupt);
        }
        if u32_at(b, HEADER_LEN) as usize != HEADER_BYTES {
            return Err(HeaderError::Corrupt);
        }
        let g = |i: usize| u32_at(b, GEOMETRY + 4 * i);
        let geometry = Geometry {
            channels: g(0),
            dies_per_channel: g(1),
            blocks_per_die: g(2),
            pages_per_block: g(3),
            page_bytes: g(4),
            spare_bytes: g(5),
        };
        check_geometry(&geometry)?;
        let optional = |v: u64| (v != 0).then_some(v);
        let zones = ZoneConfig {
            zone_blocks: u32_at(b, ZONE_BLOCKS),
            zone_cap_lbas: optional(u64_at(b, ZONE_CAP)),
            nr_zones: optional(u64::from(u32_at(b, NR_ZONES))).map(|v| v as u32),
            spare_blocks: u32_at(b, SPARE_BLOCKS),
            max_open: u32_at(b, MAX_OPEN),
            max_active: u32_at(b, MAX_ACTIVE),
            zasl_lbas: u32_at(b, ZASL),
            mdts_lbas: u32_at(b, MDTS),
            cross_zone_read: match b[CROSS_ZONE_READ] {
                0 => false,
                1 => true,
                _ => return Err(HeaderError::Corrupt),
            },
        };
        Ok(Header {
            geometry,
            zones,
            timing_preset: b[TIMING_PRESET],
        })
    }
}

/// Most pages an image may hold (1 TiB of 4 KiB pages): bounds the state array a corrupt or
/// hostile header could ask for.
pub const MAX_PAGES: u64 = 1 << 28;

/// Refuses geometries no image should have.
pub fn check_geometry(g: &Geometry) -> Result<(), HeaderError> {
    if g.channels == 0 || g.dies_per_channel == 0 || g.blocks_per_die == 0 || g.pages_per_block == 0
    {
        return Err(HeaderError::BadGeometry("a count is zero"));
    }
    if g.page_bytes != common::LBA_BYTES {
        return Err(HeaderError::BadGeometry("pages must hold 4096 data bytes"));
    }
    if g.spare_bytes == 0 || g.spare_bytes > 4096 {
        return Err(HeaderError::BadGeometry("spare bytes must be 1 to 4096"));
    }
    // Four u32 counts: their product can pass even u64 (a header the fuzzer made did).
    let pages = [g.dies_per_channel, g.blocks_per_die, g.pages_per_block]
        .into_iter()
        .try_fold(u64::from(g.channels), |n, c| n.checked_mul(u64::from(c)));
    if pages.is_none_or(|p| p > MAX_PAGES) {
        return Err(HeaderError::BadGeometry("more than 2^28 pages"));
    }
    Ok(())
}

/// Where the parts of an image sit, derived from its geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLayout {
    /// Pages in the array.
    pub pages: u64,
    /// Bytes of one page in the file: data then spare.
    pub stride: u64,
    /// Offset of the first page state byte.
    pub states_at: u64,
    /// Offset of the first page.
    pub pages_at: u64,
    /// Length of the whole file.
    pub len: u64,
}

impl ImageLayout {
    /// The layout of an image of `geometry`.
    pub fn of(geometry: &Geometry) -> Self {
        let pages = u64::from(geometry.blocks()) * u64::from(geometry.pages_per_block);
        let stride = u64::from(geometry.page_bytes) + u64::from(geometry.spare_bytes);
        let states_at = HEADER_BYTES as u64;
        let pages_at = states_at + pages.div_ceil(4096) * 4096;
        ImageLayout {
            pages,
            stride,
            states_at,
            pages_at,
            len: pages_at + pages * stride,
        }
    }

    /// Offset of page `index` (block-major) in the file.
    pub fn page_offset(&self, index: u64) -> u64 {
        self.pages_at + index * self.stride
    }
}

/// The state byte of a page in an image.
#[cfg(feature = "sim")]
pub const fn encode_state(state: crate::nand::sim::PageState) -> u8 {
    use crate::nand::sim::PageState;
    match state {
        PageState::Erased => 0,
        PageState::Programmed => 1,
        PageState::Torn => 2,
        PageState::Undefined => 3,
    }
}

/// The page state a state byte stands for; `None` for a byte no image holds.
#[cfg(feature = "sim")]
pub const fn decode_state(value: u8) -> Option<crate::nand::sim::PageState> {
    use crate::nand::sim::PageState;
    Some(match value {
        0 => PageState::Erased,
        1 => PageState::Programmed,
        2 => PageState::Torn,
        3 => PageState::Undefined,
        _ => return None,
    })
}
