//! The recovery record in each programmed page's spare area, and the page checksum.
//!
//! Every page the zone manager programs carries a 32-byte record at the start of its spare
//! area (little-endian, offsets below); the rest of the spare area is zero.
//!
//! | offset | size | data page (`KIND_DATA`)   | metadata page (`KIND_META`) |
//! |--------|------|---------------------------|-----------------------------|
//! | 0      | 1    | kind                      | kind                        |
//! | 1      | 1    | version (1)               | version (1)                 |
//! | 2      | 2    | 0                         | page index in checkpoint    |
//! | 4      | 4    | zone id                   | checkpoint page count       |
//! | 8      | 4/8  | zone generation (u32)     | checkpoint sequence (u64)   |
//! | 12     | 4    | LBA offset in the zone    | (sequence, high half)       |
//! | 16     | 4    | the block's erase count   | the block's erase count     |
//! | 20     | 4    | CRC-32C of the page data  | CRC-32C of the page data    |
//! | 24     | 4    | CRC-32C of bytes 0..24    | CRC-32C of bytes 0..24      |
//!
//! A page is *valid* only if both CRCs match, so a torn program is never mistaken for data.

#[cfg(not(feature = "host-crc"))]
use crc::{Crc, Table, CRC_32_ISCSI};

use crate::nand::{Nand, NandError, NandErrorKind, PageAddr};

/// Bytes of the record at the start of the spare area.
pub const RECORD_BYTES: usize = 32;

// Slice-by-16 tables (16 KiB of read-only data): every page program and read checksums 4 KiB,
// and the byte-at-a-time table held the zone manager to about 400 MB/s. In the host's process
// the CPU does it (feature `host-crc`): the tables still cost a fifth of the host CPU of a
// sequential read through the mount. `crc-fast` folds with carry-less multiplies (AVX-512
// VPCLMULQDQ here): 16.5 us per MiB of 4 KiB pages, against 37 with the `crc32c` crate's
// CRC32C instructions, out of about 300 us of daemon CPU per MiB read through the mount.
#[cfg(not(feature = "host-crc"))]
const CRC32C: Crc<u32, Table<16>> = Crc::<u32, Table<16>>::new(&CRC_32_ISCSI);

const KIND: usize = 0;
const VERSION: usize = 1;
const INDEX: usize = 2;
const ZONE: usize = 4;
const GEN: usize = 8;
const OFFSET: usize = 12;
const ERASE_COUNT: usize = 16;
const DATA_CRC: usize = 20;
const RECORD_CRC: usize = 24;

const KIND_DATA: u8 = 0xD1;
const KIND_META: u8 = 0x3E;
const RECORD_VERSION: u8 = 1;

/// The CRC-32C (Castagnoli) of `bytes`.
pub fn crc32c(bytes: &[u8]) -> u32 {
    #[cfg(feature = "host-crc")]
    return crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32;
    #[cfg(not(feature = "host-crc"))]
    CRC32C.checksum(bytes)
}

/// A decoded spare-area record.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A page of zone data.
    Data {
        /// The zone.
        zone: u32,
        /// The zone's generation (bumped at each reset).
        gen: u32,
        /// The LBA's offset in the zone.
        offset: u32,
        /// The erase count of the page's block.
        erase_count: u32,
    },
    /// A page of a metadata checkpoint.
    Meta {
        /// The checkpoint's sequence number.
        seq: u64,
        /// This page's index in the checkpoint.
        index: u16,
        /// The checkpoint's page count.
        count: u16,
        /// The erase count of the page's block.
        erase_count: u32,
    },
}

/// What a page read back as.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PageContent {
    /// Every byte is `0xFF`: nothing was programmed since the last erase (as far as reads tell).
    Erased,
    /// A complete page with this record.
    Valid(Record),
    /// Programmed but not valid: torn, garbage or foreign.
    Invalid,
}

/// Fills `spare` with the record for `record` over `data`.
pub fn encode(record: Record, data: &[u8], spare: &mut [u8]) {
    spare.fill(0);
    let put32 = |s: &mut [u8], at: usize, v: u32| s[at..at + 4].copy_from_slice(&v.to_le_bytes());
    spare[VERSION] = RECORD_VERSION;
    match record {
        Record::Data {
            zone,
            gen,
            offset,
            erase_count,
        } => {
            spare[KIND] = KIND_DATA;
            put32(spare, ZONE, zone);
            put32(spare, GEN, gen);
            put32(spare, OFFSET, offset);
            put32(spare, ERASE_COUNT, erase_count);
        }
        Record::Meta {
            seq,
            index,
            count,
            erase_count,
        } => {
            spare[KIND] = KIND_META;
            spare[INDEX..INDEX + 2].copy_from_slice(&index.to_le_bytes());
            put32(spare, ZONE, u32::from(count));
            spare[GEN..GEN + 8].copy_from_slice(&seq.to_le_bytes());
            put32(spare, ERASE_COUNT, erase_count);
        }
    }
    put32(spare, DATA_CRC, crc32c(data));
    let crc = crc32c(&spare[..RECORD_CRC]);
    put32(spare, RECORD_CRC, crc);
}

/// Classifies a page read back as `data` and `spare` (untrusted bytes).
pub fn decode(data: &[u8], spare: &[u8]) -> PageContent {
    if data.iter().chain(spare).all(|&b| b == 0xFF) {
        return PageContent::Erased;
    }
    let Some(rec) = spare.get(..RECORD_BYTES) else {
        return PageContent::Invalid;
    };
    let get32 = |at: usize| u32::from_le_bytes([rec[at], rec[at + 1], rec[at + 2], rec[at + 3]]);
    if rec[VERSION] != RECORD_VERSION
        || get32(RECORD_CRC) != crc32c(&rec[..RECORD_CRC])
        || get32(DATA_CRC) != crc32c(data)
    {
        return PageContent::Invalid;
    }
    let erase_count = get32(ERASE_COUNT);
    match rec[KIND] {
        KIND_DATA => PageContent::Valid(Record::Data {
            zone: get32(ZONE),
            gen: get32(GEN),
            offset: get32(OFFSET),
            erase_count,
        }),
        KIND_META => {
            let Ok(count) = u16::try_from(get32(ZONE)) else {
                return PageContent::Invalid;
            };
            PageContent::Valid(Record::Meta {
                seq: u64::from(get32(GEN)) | (u64::from(get32(OFFSET)) << 32),
                index: u16::from_le_bytes([rec[INDEX], rec[INDEX + 1]]),
                count,
                erase_count,
            })
        }
        _ => PageContent::Invalid,
    }
}

/// Reads page `addr` and classifies it. An uncorrectable page is [`PageContent::Invalid`];
/// other device errors (power loss) are returned.
pub fn read<N: Nand>(
    nand: &mut N,
    addr: PageAddr,
    data: &mut [u8],
    spare: &mut [u8],
) -> Result<PageContent, N::Error> {
    match nand.read_page(addr, data, spare) {
        Ok(()) => Ok(decode(data, spare)),
        Err(e) if e.kind() == NandErrorKind::Uncorrectable => Ok(PageContent::Invalid),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CRC-32C's check value (the checksum of "123456789", RFC 3720 appendix B.4's polynomial),
    /// whichever way it is computed: images move between the board and the host.
    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[]), 0);
    }

    /// The host's CRC (feature `host-crc`, which folds long inputs differently from short
    /// ones) agrees with the board's tables at every length up to a page and its spare area.
    #[test]
    fn crc32c_agrees_with_the_tables() {
        let tables = crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);
        let bytes: alloc::vec::Vec<u8> = (0..4160u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        for len in 0..=bytes.len() {
            assert_eq!(
                crc32c(&bytes[..len]),
                tables.checksum(&bytes[..len]),
                "{len} bytes"
            );
        }
    }

    /// Records round-trip, and a flipped data or record bit makes the page invalid.
    #[test]
    fn round_trip_and_torn_detection() {
        let data = [7u8; 4096];
        let mut spare = [0xFFu8; 64];
        let rec = Record::Data {
            zone: 3,
            gen: 9,
            offset: 17,
            erase_count: 5,
        };
        encode(rec, &data, &mut spare);
        assert_eq!(decode(&data, &spare), PageContent::Valid(rec));
        let mut torn = data;
        torn[4000] ^= 1;
        assert_eq!(decode(&torn, &spare), PageContent::Invalid);
        spare[4] ^= 0x80;
        assert_eq!(decode(&data, &spare), PageContent::Invalid);
        let meta = Record::Meta {
            seq: 1 << 40 | 3,
            index: 1,
            count: 2,
            erase_count: 4,
        };
        encode(meta, &data, &mut spare);
        assert_eq!(decode(&data, &spare), PageContent::Valid(meta));
        assert_eq!(decode(&[0xFF; 4096], &[0xFF; 64]), PageContent::Erased);
    }

    /// The record layout is pinned byte for byte.
    #[test]
    fn golden_record() {
        let data = [0u8; 4096];
        let mut spare = [0u8; 32];
        encode(
            Record::Data {
                zone: 1,
                gen: 2,
                offset: 3,
                erase_count: 4,
            },
            &data,
            &mut spare,
        );
        assert_eq!(
            spare[..20],
            [0xD1, 1, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0]
        );
        // CRC-32C (Castagnoli) of 4096 zero bytes, then of bytes 0..24, computed independently
        // of this code; the rest of the record is zero.
        assert_eq!(spare[20..24], [0x89, 0x41, 0xF9, 0x98]);
        assert_eq!(spare[24..28], [0x13, 0x79, 0xB1, 0x84]);
        assert_eq!(spare[28..32], [0; 4]);
    }
}
