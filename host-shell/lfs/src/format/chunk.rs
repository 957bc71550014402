//! Chunks of the metadata stream (docs/FORMAT.md, "The metadata stream: chunks"): a 48-byte
//! header, the payload of records, zeros to whole blocks.

use crate::ids::ZoneId;

use super::codec::{Corrupt, Encode, Reader, Writer};
use super::{BLOCK_BYTES, CRC32C};

/// What a chunk of the metadata stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkKind {
    /// Records of operations since the checkpoint (roll-forward).
    Log = 1,
    /// Records that describe the whole state at a checkpoint.
    Image = 2,
    /// The stream continues at the start of zone `link_zone`.
    Link = 3,
}

/// The header at the start of every chunk of the metadata stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    pub kind: ChunkKind,
    pub fs_id: u64,
    /// Position in the stream; each chunk's is the previous one's plus one.
    pub seq: u64,
    /// Blocks the chunk takes, its header's included.
    pub blocks: u32,
    pub payload_len: u32,
    /// For [`ChunkKind::Link`]: the zone the stream continues in.
    pub link_zone: ZoneId,
    pub payload_crc: u32,
    /// The record format of the payload ([`ChunkHeader::VERSION`] or an older one still read).
    pub version: u16,
}

/// A whole chunk to write: its header's fields and payload (the header's sizes and CRCs are
/// computed from the payload).
#[derive(Debug, Clone, Copy)]
pub struct Chunk<'a> {
    pub kind: ChunkKind,
    pub fs_id: u64,
    pub seq: u64,
    pub link_zone: ZoneId,
    pub payload: &'a [u8],
}

impl ChunkHeader {
    pub const MAGIC: u32 = 0x4B48_434C; // "LCHK"
    /// The version chunks are written with. 2: Inode records carry `rdev` and kinds 4 to 7
    /// (FIFO, character and block device, socket).
    pub const VERSION: u16 = 2;
    /// The oldest version still read. 1: Inode records without `rdev` (read as 0), kinds 1
    /// to 3 only. A mount rewrites everything as the current version in its checkpoint.
    pub const MIN_VERSION: u16 = 1;
    const VERSION_AT: usize = 4;
    const KIND: usize = 6;
    const FS_ID: usize = 8;
    const SEQ: usize = 16;
    const BLOCKS: usize = 24;
    const PAYLOAD_LEN: usize = 28;
    const LINK_ZONE: usize = 32;
    const PAYLOAD_CRC: usize = 40;
    pub(super) const HEADER_CRC: usize = 44;
    /// Bytes of the header; the payload follows.
    pub const BYTES: usize = 48;
    const WHAT: &'static str = "a chunk header";

    /// Payload bytes that fit in a chunk of `blocks` blocks.
    pub const fn capacity(blocks: usize) -> usize {
        blocks * BLOCK_BYTES - Self::BYTES
    }

    /// Blocks a chunk with `payload_len` payload bytes takes.
    pub const fn blocks_for(payload_len: usize) -> usize {
        (payload_len + Self::BYTES).div_ceil(BLOCK_BYTES)
    }

    /// Checks the header in the first block of a chunk: magic, then checksum, then version
    /// (so [`Corrupt::Version`] means an intact header of a version this code does not read),
    /// then kind and sizes.
    pub fn decode(block: &[u8]) -> Result<ChunkHeader, Corrupt> {
        let what = Self::WHAT;
        let mut r = Reader::new(block, what);
        if r.at(0).u32()? != Self::MAGIC {
            return Err(Corrupt::Magic { what });
        }
        let crc = r.at(Self::HEADER_CRC).u32()?;
        r.check_crc(Self::HEADER_CRC, crc)?;
        let version = r.at(Self::VERSION_AT).u16()?;
        if !(Self::MIN_VERSION..=Self::VERSION).contains(&version) {
            return Err(Corrupt::Version { what, version });
        }
        let kind = match r.at(Self::KIND).u8()? {
            1 => ChunkKind::Log,
            2 => ChunkKind::Image,
            3 => ChunkKind::Link,
            k => return Err(Corrupt::ChunkKind(k)),
        };
        let header = ChunkHeader {
            kind,
            fs_id: r.at(Self::FS_ID).u64()?,
            seq: r.at(Self::SEQ).u64()?,
            blocks: r.at(Self::BLOCKS).u32()?,
            payload_len: r.at(Self::PAYLOAD_LEN).u32()?,
            link_zone: ZoneId(r.at(Self::LINK_ZONE).u32()?),
            payload_crc: r.at(Self::PAYLOAD_CRC).u32()?,
            version,
        };
        let fits = header.blocks >= 1
            && header.payload_len as usize <= Self::capacity(header.blocks as usize);
        if !fits {
            return Err(Corrupt::ChunkSize {
                blocks: header.blocks,
                payload_len: header.payload_len,
            });
        }
        Ok(header)
    }

    /// The payload of the whole chunk `bytes` if its checksum holds.
    pub fn payload<'a>(&self, bytes: &'a [u8]) -> Result<&'a [u8], Corrupt> {
        let what = "a chunk's payload";
        let mut r = Reader::new(bytes, what);
        let p = r.at(Self::BYTES).raw(self.payload_len as usize)?;
        if CRC32C.checksum(p) == self.payload_crc {
            Ok(p)
        } else {
            Err(Corrupt::Checksum { what })
        }
    }
}

impl Encode for Chunk<'_> {
    /// The whole chunk: header, payload, zero padding to whole blocks.
    fn encode(&self, w: &mut Writer) {
        let blocks = ChunkHeader::blocks_for(self.payload.len());
        let start = w.len();
        let mut h = Writer::default();
        h.u32(ChunkHeader::MAGIC);
        h.at(ChunkHeader::VERSION_AT).u16(ChunkHeader::VERSION);
        h.at(ChunkHeader::KIND).u8(self.kind as u8);
        h.at(ChunkHeader::FS_ID).u64(self.fs_id);
        h.at(ChunkHeader::SEQ).u64(self.seq);
        h.at(ChunkHeader::BLOCKS).u32(blocks as u32);
        h.at(ChunkHeader::PAYLOAD_LEN)
            .u32(self.payload.len() as u32);
        h.at(ChunkHeader::LINK_ZONE).u32(self.link_zone.0);
        h.at(ChunkHeader::PAYLOAD_CRC)
            .u32(CRC32C.checksum(self.payload));
        h.at(ChunkHeader::HEADER_CRC);
        let crc = h.crc();
        h.u32(crc).pad_to(ChunkHeader::BYTES);
        w.raw(&h.into_bytes()).raw(self.payload);
        w.pad_to(start + blocks * BLOCK_BYTES);
    }
}

#[cfg(test)]
mod tests {
    use super::super::record::{decode_records, Record};
    use super::super::tests::{hex, want_block};
    use super::*;
    use crate::ids::Lba;
    use crate::inode::InodeNo;

    fn log_chunk(payload: &[u8]) -> Vec<u8> {
        Chunk {
            kind: ChunkKind::Log,
            fs_id: 5,
            seq: 42,
            link_zone: ZoneId(0),
            payload,
        }
        .to_bytes()
    }

    /// A chunk round-trips, and a flipped payload byte fails its checksum.
    #[test]
    fn chunk_round_trip_and_crc() {
        let rec = Record::Map {
            ino: InodeNo(7),
            file_block: 3,
            lba: Lba(99),
            count: 2,
        };
        let payload = rec.to_bytes();
        let mut chunk = log_chunk(&payload);
        let h = ChunkHeader::decode(&chunk).unwrap();
        assert_eq!((h.seq, h.fs_id, h.blocks), (42, 5, 1));
        assert_eq!(
            decode_records(h.payload(&chunk).unwrap(), h.version).unwrap(),
            [rec]
        );
        chunk[ChunkHeader::BYTES] ^= 1;
        assert!(matches!(h.payload(&chunk), Err(Corrupt::Checksum { .. })));
    }

    /// A log chunk and a link chunk are pinned byte for byte (docs/FORMAT.md, "The metadata
    /// stream: chunks"): the 48-byte header, the payload, zeros to the block's end.
    #[test]
    fn chunk_golden_bytes() {
        let payload = Record::Free { ino: InodeNo(3) }.to_bytes();
        let chunk = log_chunk(&payload);
        let want = hex("4c43484b 0200 01 00
             0500000000000000
             2a00000000000000
             01000000 09000000 00000000 00000000
             15cbec2c cd8c1a54
             09 0300000000000000");
        assert_eq!(chunk.len(), BLOCK_BYTES);
        assert_eq!(chunk[..want.len()], want[..]);
        assert!(chunk[want.len()..].iter().all(|&x| x == 0));
        let h = ChunkHeader::decode(&want_block(&want)).unwrap();
        assert_eq!((h.kind, h.seq, h.payload_len), (ChunkKind::Log, 42, 9));

        let link = Chunk {
            kind: ChunkKind::Link,
            fs_id: 5,
            seq: 43,
            link_zone: ZoneId(7),
            payload: &[],
        }
        .to_bytes();
        let want = hex("4c43484b 0200 03 00
             0500000000000000
             2b00000000000000
             01000000 00000000 07000000 00000000
             00000000 3f56ad88");
        assert_eq!(link[..want.len()], want[..]);
        assert!(link[want.len()..].iter().all(|&x| x == 0));
        let h = ChunkHeader::decode(&link).unwrap();
        assert_eq!((h.kind, h.link_zone), (ChunkKind::Link, ZoneId(7)));
    }

    /// Chunks of version 1 and 2 are read; version 0 and 3 are not (a newer format is not
    /// mistaken for this one) and their intact header says which version it is.
    #[test]
    fn chunk_versions_read() {
        let payload = Record::Free { ino: InodeNo(3) }.to_bytes();
        let chunk = log_chunk(&payload);
        assert_eq!(ChunkHeader::decode(&chunk).map(|h| h.version), Ok(2));
        for (version, read) in [(0u16, false), (1, true), (3, false)] {
            let mut c = chunk.clone();
            c[4..6].copy_from_slice(&version.to_le_bytes());
            let crc = CRC32C.checksum(&c[..ChunkHeader::HEADER_CRC]);
            c[ChunkHeader::HEADER_CRC..ChunkHeader::HEADER_CRC + 4]
                .copy_from_slice(&crc.to_le_bytes());
            let want = if read {
                Ok(version)
            } else {
                Err(Corrupt::Version {
                    what: "a chunk header",
                    version,
                })
            };
            assert_eq!(
                ChunkHeader::decode(&c).map(|h| h.version),
                want,
                "version {version}"
            );
        }
    }

    /// A damaged header is named: bad magic, bad checksum, a short block.
    #[test]
    fn damaged_headers() {
        let chunk = log_chunk(&[]);
        let mut c = chunk.clone();
        c[0] ^= 1;
        assert!(matches!(
            ChunkHeader::decode(&c),
            Err(Corrupt::Magic { .. })
        ));
        let mut c = chunk.clone();
        c[ChunkHeader::SEQ] ^= 1;
        assert!(matches!(
            ChunkHeader::decode(&c),
            Err(Corrupt::Checksum { .. })
        ));
        assert!(matches!(
            ChunkHeader::decode(&chunk[..20]),
            Err(Corrupt::EndsEarly { .. })
        ));
    }
}
