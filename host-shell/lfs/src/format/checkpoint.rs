//! The checkpoint record (docs/FORMAT.md, "The checkpoint log"): one block holding the
//! superblock's fields and where the latest checkpoint's image starts.

use super::codec::{Corrupt, Encode, Reader, Writer};
use super::BLOCK_BYTES;
use crate::ids::Lba;

/// One block of the checkpoint log: the superblock's fields and where the latest checkpoint's
/// image starts in the metadata stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointRecord {
    pub fs_id: u64,
    pub seq: u64,
    pub zone_size_lbas: u64,
    pub zone_cap_lbas: u64,
    pub nr_zones: u32,
    /// LBA of the image's first chunk.
    pub image_lba: Lba,
    /// Stream sequence number of the image's first chunk.
    pub image_seq: u64,
    /// Chunks of the image (links between zones included).
    pub image_chunks: u32,
    /// When the file system was made (seconds since the epoch).
    pub created: i64,
}

impl CheckpointRecord {
    pub const MAGIC: u32 = 0x4B43_534C; // "LSCK"
    pub const VERSION: u16 = 1;
    const VERSION_AT: usize = 4;
    const FS_ID: usize = 8;
    const SEQ: usize = 16;
    const ZONE_SIZE: usize = 24;
    const ZONE_CAP: usize = 32;
    const NR_ZONES: usize = 40;
    const BLOCK_BYTES_AT: usize = 44;
    const IMAGE_LBA: usize = 48;
    const IMAGE_SEQ: usize = 56;
    const IMAGE_CHUNKS: usize = 64;
    const CREATED: usize = 72;
    const CRC: usize = 80;
    const WHAT: &'static str = "a checkpoint record";

    /// The record in `block`: magic, version, checksum and block size must hold (the caller
    /// checks the geometry against the device).
    pub fn decode(block: &[u8]) -> Result<CheckpointRecord, Corrupt> {
        let what = Self::WHAT;
        if block.len() < BLOCK_BYTES {
            return Err(Corrupt::EndsEarly { what });
        }
        let mut r = Reader::new(block, what);
        if r.at(0).u32()? != Self::MAGIC {
            return Err(Corrupt::Magic { what });
        }
        let version = r.at(Self::VERSION_AT).u16()?;
        if version != Self::VERSION {
            return Err(Corrupt::Version { what, version });
        }
        let crc = r.at(Self::CRC).u32()?;
        r.check_crc(Self::CRC, crc)?;
        let bytes = r.at(Self::BLOCK_BYTES_AT).u32()?;
        if bytes != BLOCK_BYTES as u32 {
            return Err(Corrupt::BlockBytes { what, bytes });
        }
        Ok(CheckpointRecord {
            fs_id: r.at(Self::FS_ID).u64()?,
            seq: r.at(Self::SEQ).u64()?,
            zone_size_lbas: r.at(Self::ZONE_SIZE).u64()?,
            zone_cap_lbas: r.at(Self::ZONE_CAP).u64()?,
            nr_zones: r.at(Self::NR_ZONES).u32()?,
            image_lba: r.at(Self::IMAGE_LBA).lba()?,
            image_seq: r.at(Self::IMAGE_SEQ).u64()?,
            image_chunks: r.at(Self::IMAGE_CHUNKS).u32()?,
            created: r.at(Self::CREATED).i64()?,
        })
    }
}

impl Encode for CheckpointRecord {
    /// One whole block: the fields, the CRC-32C of bytes 0..80, zeros.
    fn encode(&self, w: &mut Writer) {
        let mut b = Writer::default();
        b.u32(Self::MAGIC);
        b.at(Self::VERSION_AT).u16(Self::VERSION);
        b.at(Self::FS_ID).u64(self.fs_id);
        b.at(Self::SEQ).u64(self.seq);
        b.at(Self::ZONE_SIZE).u64(self.zone_size_lbas);
        b.at(Self::ZONE_CAP).u64(self.zone_cap_lbas);
        b.at(Self::NR_ZONES).u32(self.nr_zones);
        b.at(Self::BLOCK_BYTES_AT).u32(BLOCK_BYTES as u32);
        b.at(Self::IMAGE_LBA).lba(self.image_lba);
        b.at(Self::IMAGE_SEQ).u64(self.image_seq);
        b.at(Self::IMAGE_CHUNKS).u32(self.image_chunks);
        b.at(Self::CREATED).i64(self.created);
        b.at(Self::CRC);
        let crc = b.crc();
        b.u32(crc).pad_to(BLOCK_BYTES);
        w.raw(&b.into_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{hex, want_block};
    use super::*;

    fn record() -> CheckpointRecord {
        CheckpointRecord {
            fs_id: 0x1122_3344_5566_7788,
            seq: 2,
            zone_size_lbas: 256,
            zone_cap_lbas: 250,
            nr_zones: 15,
            image_lba: Lba(512),
            image_seq: 9,
            image_chunks: 3,
            created: 1_700_000_000,
        }
    }

    /// Checkpoint records are pinned at their magic and checked by CRC.
    #[test]
    fn checkpoint_record_round_trip() {
        let c = record();
        let mut b = c.to_bytes();
        assert_eq!(&b[0..4], b"LSCK");
        assert_eq!(CheckpointRecord::decode(&b), Ok(c));
        b[17] ^= 1;
        assert!(matches!(
            CheckpointRecord::decode(&b),
            Err(Corrupt::Checksum { .. })
        ));
    }

    /// The checkpoint record is pinned byte for byte (docs/FORMAT.md, "The checkpoint log"):
    /// fields at their offsets, zero gaps, the CRC-32C of bytes 0..80, zeros to the block's end.
    #[test]
    fn checkpoint_record_golden_bytes() {
        let want = hex("4c53434b 0100 0000
             8877665544332211
             0200000000000000
             0001000000000000
             fa00000000000000
             0f000000 00100000
             0002000000000000
             0900000000000000
             03000000 00000000
             00f1536500000000
             ed7ee124");
        let b = record().to_bytes();
        assert_eq!(b.len(), BLOCK_BYTES);
        assert_eq!(b[..want.len()], want[..]);
        assert!(b[want.len()..].iter().all(|&x| x == 0));
        assert_eq!(CheckpointRecord::decode(&want_block(&want)), Ok(record()));
    }

    /// A short block, another magic, another version are named as such.
    #[test]
    fn damaged_records() {
        let b = record().to_bytes();
        assert!(matches!(
            CheckpointRecord::decode(&b[..100]),
            Err(Corrupt::EndsEarly { .. })
        ));
        let mut c = b.clone();
        c[1] ^= 1;
        assert!(matches!(
            CheckpointRecord::decode(&c),
            Err(Corrupt::Magic { .. })
        ));
        let mut c = b;
        c[4] = 2;
        assert!(matches!(
            CheckpointRecord::decode(&c),
            Err(Corrupt::Version { version: 2, .. })
        ));
    }
}
