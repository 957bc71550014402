//! On-media structures of the file system (docs/FORMAT.md section 3): explicit little-endian
//! encoding with field offsets as consts, checked decoding of untrusted bytes, CRC-32C.

use super::error::{corrupted, Result};
use super::ids::ZoneId;
use super::inode::{Attr, FileKind, InodeNo, Time};

/// Bytes of a file-system block: one LBA.
pub const BLOCK_BYTES: usize = common::LBA_BYTES as usize;

/// CRC-32C (Castagnoli), as the device's own records use.
pub const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// Appends little-endian fields to a buffer.
#[derive(Debug, Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// A byte string with a `u32` length in front.
    pub fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
    }
    pub fn time(&mut self, t: Time) {
        self.i64(t.sec);
        self.u32(t.nsec);
    }
}

/// Reads little-endian fields from untrusted bytes; running out is corruption.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| corrupted(format!("{} ends early", self.what)))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    pub fn bytes(&mut self, max: usize) -> Result<Vec<u8>> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(corrupted(format!("{}: a {n}-byte string", self.what)));
        }
        Ok(self.take(n)?.to_vec())
    }
    pub fn time(&mut self) -> Result<Time> {
        let sec = self.i64()?;
        let nsec = self.u32()?;
        if nsec >= 1_000_000_000 {
            return Err(corrupted(format!("{}: {nsec} nanoseconds", self.what)));
        }
        Ok(Time { sec, nsec })
    }
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

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

impl ChunkHeader {
    pub const MAGIC: u32 = 0x4B48_434C; // "LCHK"
    /// The version chunks are written with. 2: Inode records carry `rdev` and kinds 4 to 7
    /// (FIFO, character and block device, socket).
    pub const VERSION: u16 = 2;
    /// The oldest version still read. 1: Inode records without `rdev` (read as 0), kinds 1
    /// to 3 only. A mount rewrites everything as the current version in its checkpoint.
    pub const MIN_VERSION: u16 = 1;
    const KIND: usize = 6;
    const FS_ID: usize = 8;
    const SEQ: usize = 16;
    const BLOCKS: usize = 24;
    const PAYLOAD_LEN: usize = 28;
    const LINK_ZONE: usize = 32;
    const PAYLOAD_CRC: usize = 40;
    const HEADER_CRC: usize = 44;
    /// Bytes of the header; the payload follows.
    pub const BYTES: usize = 48;

    /// Payload bytes that fit in a chunk of `blocks` blocks.
    pub const fn capacity(blocks: usize) -> usize {
        blocks * BLOCK_BYTES - Self::BYTES
    }

    /// Blocks a chunk with `payload_len` payload bytes takes.
    pub const fn blocks_for(payload_len: usize) -> usize {
        (payload_len + Self::BYTES).div_ceil(BLOCK_BYTES)
    }

    /// The whole chunk (header, payload, zero padding to whole blocks).
    pub fn encode_chunk(
        kind: ChunkKind,
        fs_id: u64,
        seq: u64,
        link_zone: ZoneId,
        payload: &[u8],
    ) -> Vec<u8> {
        let blocks = Self::blocks_for(payload.len());
        let mut b = vec![0u8; blocks * BLOCK_BYTES];
        b[0..4].copy_from_slice(&Self::MAGIC.to_le_bytes());
        b[4..6].copy_from_slice(&Self::VERSION.to_le_bytes());
        b[Self::KIND] = kind as u8;
        b[Self::FS_ID..Self::FS_ID + 8].copy_from_slice(&fs_id.to_le_bytes());
        b[Self::SEQ..Self::SEQ + 8].copy_from_slice(&seq.to_le_bytes());
        b[Self::BLOCKS..Self::BLOCKS + 4].copy_from_slice(&(blocks as u32).to_le_bytes());
        b[Self::PAYLOAD_LEN..Self::PAYLOAD_LEN + 4]
            .copy_from_slice(&(payload.len() as u32).to_le_bytes());
        b[Self::LINK_ZONE..Self::LINK_ZONE + 4].copy_from_slice(&link_zone.0.to_le_bytes());
        let pcrc = CRC32C.checksum(payload);
        b[Self::PAYLOAD_CRC..Self::PAYLOAD_CRC + 4].copy_from_slice(&pcrc.to_le_bytes());
        let hcrc = CRC32C.checksum(&b[..Self::HEADER_CRC]);
        b[Self::HEADER_CRC..Self::HEADER_CRC + 4].copy_from_slice(&hcrc.to_le_bytes());
        b[Self::BYTES..Self::BYTES + payload.len()].copy_from_slice(payload);
        b
    }

    /// Checks the header in the first block of a chunk. `None` if it is not a valid header
    /// (a version this code does not read included).
    pub fn decode(block: &[u8]) -> Option<ChunkHeader> {
        if block.len() < Self::BYTES
            || get_u32(block, 0) != Self::MAGIC
            || CRC32C.checksum(&block[..Self::HEADER_CRC]) != get_u32(block, Self::HEADER_CRC)
        {
            return None;
        }
        let version = u16::from_le_bytes([block[4], block[5]]);
        if !(Self::MIN_VERSION..=Self::VERSION).contains(&version) {
            return None;
        }
        let kind = match block[Self::KIND] {
            1 => ChunkKind::Log,
            2 => ChunkKind::Image,
            3 => ChunkKind::Link,
            _ => return None,
        };
        let header = ChunkHeader {
            kind,
            fs_id: get_u64(block, Self::FS_ID),
            seq: get_u64(block, Self::SEQ),
            blocks: get_u32(block, Self::BLOCKS),
            payload_len: get_u32(block, Self::PAYLOAD_LEN),
            link_zone: ZoneId(get_u32(block, Self::LINK_ZONE)),
            payload_crc: get_u32(block, Self::PAYLOAD_CRC),
            version,
        };
        let fits = header.blocks >= 1
            && header.payload_len as usize <= Self::capacity(header.blocks as usize);
        fits.then_some(header)
    }

    /// The version of a chunk header that is intact (magic and checksum hold) but of a
    /// version this code does not read; `None` for any other block.
    pub fn unread_version(block: &[u8]) -> Option<u16> {
        let intact = block.len() >= Self::BYTES
            && get_u32(block, 0) == Self::MAGIC
            && CRC32C.checksum(&block[..Self::HEADER_CRC]) == get_u32(block, Self::HEADER_CRC);
        let version = u16::from_le_bytes([*block.get(4)?, *block.get(5)?]);
        (intact && !(Self::MIN_VERSION..=Self::VERSION).contains(&version)).then_some(version)
    }

    /// The payload of the whole chunk `bytes` if its checksum holds.
    pub fn payload<'a>(&self, bytes: &'a [u8]) -> Option<&'a [u8]> {
        let p = bytes.get(Self::BYTES..Self::BYTES + self.payload_len as usize)?;
        (CRC32C.checksum(p) == self.payload_crc).then_some(p)
    }
}

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
    pub image_lba: u64,
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

    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK_BYTES];
        let put = |b: &mut [u8], at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
        put(&mut b, 0, &Self::MAGIC.to_le_bytes());
        put(&mut b, 4, &Self::VERSION.to_le_bytes());
        put(&mut b, Self::FS_ID, &self.fs_id.to_le_bytes());
        put(&mut b, Self::SEQ, &self.seq.to_le_bytes());
        put(&mut b, Self::ZONE_SIZE, &self.zone_size_lbas.to_le_bytes());
        put(&mut b, Self::ZONE_CAP, &self.zone_cap_lbas.to_le_bytes());
        put(&mut b, Self::NR_ZONES, &self.nr_zones.to_le_bytes());
        put(
            &mut b,
            Self::BLOCK_BYTES_AT,
            &(BLOCK_BYTES as u32).to_le_bytes(),
        );
        put(&mut b, Self::IMAGE_LBA, &self.image_lba.to_le_bytes());
        put(&mut b, Self::IMAGE_SEQ, &self.image_seq.to_le_bytes());
        put(&mut b, Self::IMAGE_CHUNKS, &self.image_chunks.to_le_bytes());
        put(&mut b, Self::CREATED, &self.created.to_le_bytes());
        let crc = CRC32C.checksum(&b[..Self::CRC]);
        put(&mut b, Self::CRC, &crc.to_le_bytes());
        b
    }

    /// The record in `block`, if it is one (magic, version and checksum hold).
    pub fn decode(block: &[u8]) -> Option<CheckpointRecord> {
        if block.len() < BLOCK_BYTES
            || get_u32(block, 0) != Self::MAGIC
            || block[4..6] != Self::VERSION.to_le_bytes()
            || CRC32C.checksum(&block[..Self::CRC]) != get_u32(block, Self::CRC)
            || get_u32(block, Self::BLOCK_BYTES_AT) != BLOCK_BYTES as u32
        {
            return None;
        }
        Some(CheckpointRecord {
            fs_id: get_u64(block, Self::FS_ID),
            seq: get_u64(block, Self::SEQ),
            zone_size_lbas: get_u64(block, Self::ZONE_SIZE),
            zone_cap_lbas: get_u64(block, Self::ZONE_CAP),
            nr_zones: get_u32(block, Self::NR_ZONES),
            image_lba: get_u64(block, Self::IMAGE_LBA),
            image_seq: get_u64(block, Self::IMAGE_SEQ),
            image_chunks: get_u32(block, Self::IMAGE_CHUNKS),
            created: get_u64(block, Self::CREATED) as i64,
        })
    }
}

/// Longest name in a directory.
pub const NAME_MAX: usize = 255;
/// Longest symbolic link target.
pub const SYMLINK_MAX: usize = 4095;
/// Longest extended attribute value.
pub const XATTR_VALUE_MAX: usize = 64 * 1024;

/// How a zone is used, as the stream records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneUse {
    /// Holds data blocks (or nothing live); not written to any more.
    Data = 0,
    /// The active zone for new file data.
    Hot = 1,
    /// The active zone for data the cleaner moves.
    Cold = 2,
}

/// One change to the file system's metadata. A transaction is a run of records that lands in
/// one chunk; replaying the records in order rebuilds the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Creates or replaces an inode's attributes.
    Inode(Attr),
    /// File blocks `file_block..+count` live at `lba..+count`.
    Map {
        ino: InodeNo,
        file_block: u64,
        lba: u64,
        count: u32,
    },
    /// Blocks past `size` are dropped (a partial last block keeps its mapping).
    Truncate {
        ino: InodeNo,
        size: u64,
    },
    DirAdd {
        dir: InodeNo,
        cookie: u64,
        child: InodeNo,
        kind: FileKind,
        name: Vec<u8>,
    },
    DirRemove {
        dir: InodeNo,
        name: Vec<u8>,
    },
    XattrSet {
        ino: InodeNo,
        name: Vec<u8>,
        value: Vec<u8>,
    },
    XattrRemove {
        ino: InodeNo,
        name: Vec<u8>,
    },
    Symlink {
        ino: InodeNo,
        target: Vec<u8>,
    },
    /// The inode and its blocks are gone.
    Free {
        ino: InodeNo,
    },
    /// Zone `zone` is now used as `use_`; `born` orders zones by age for the cleaner.
    Zone {
        zone: ZoneId,
        use_: ZoneUse,
        born: u64,
    },
    /// The next inode number to hand out.
    NextIno {
        next: u64,
    },
}

mod tag {
    pub const INODE: u8 = 1;
    pub const MAP: u8 = 2;
    pub const TRUNCATE: u8 = 3;
    pub const DIR_ADD: u8 = 4;
    pub const DIR_REMOVE: u8 = 5;
    pub const XATTR_SET: u8 = 6;
    pub const XATTR_REMOVE: u8 = 7;
    pub const SYMLINK: u8 = 8;
    pub const FREE: u8 = 9;
    pub const ZONE: u8 = 10;
    pub const NEXT_INO: u8 = 11;
}

impl Record {
    /// Appends the record: tag `u8`, then its fields.
    pub fn encode(&self, w: &mut Writer) {
        match self {
            Record::Inode(a) => {
                w.u8(tag::INODE);
                w.u64(a.ino.0);
                w.u8(a.kind as u8);
                w.u16(a.perm);
                w.u32(a.uid);
                w.u32(a.gid);
                w.u32(a.nlink);
                w.u64(a.size);
                w.time(a.atime);
                w.time(a.mtime);
                w.time(a.ctime);
                w.u64(a.parent.0);
                w.u32(a.rdev);
            }
            Record::Map {
                ino,
                file_block,
                lba,
                count,
            } => {
                w.u8(tag::MAP);
                w.u64(ino.0);
                w.u64(*file_block);
                w.u64(*lba);
                w.u32(*count);
            }
            Record::Truncate { ino, size } => {
                w.u8(tag::TRUNCATE);
                w.u64(ino.0);
                w.u64(*size);
            }
            Record::DirAdd {
                dir,
                cookie,
                child,
                kind,
                name,
            } => {
                w.u8(tag::DIR_ADD);
                w.u64(dir.0);
                w.u64(*cookie);
                w.u64(child.0);
                w.u8(*kind as u8);
                w.bytes(name);
            }
            Record::DirRemove { dir, name } => {
                w.u8(tag::DIR_REMOVE);
                w.u64(dir.0);
                w.bytes(name);
            }
            Record::XattrSet { ino, name, value } => {
                w.u8(tag::XATTR_SET);
                w.u64(ino.0);
                w.bytes(name);
                w.bytes(value);
            }
            Record::XattrRemove { ino, name } => {
                w.u8(tag::XATTR_REMOVE);
                w.u64(ino.0);
                w.bytes(name);
            }
            Record::Symlink { ino, target } => {
                w.u8(tag::SYMLINK);
                w.u64(ino.0);
                w.bytes(target);
            }
            Record::Free { ino } => {
                w.u8(tag::FREE);
                w.u64(ino.0);
            }
            Record::Zone { zone, use_, born } => {
                w.u8(tag::ZONE);
                w.u32(zone.0);
                w.u8(*use_ as u8);
                w.u64(*born);
            }
            Record::NextIno { next } => {
                w.u8(tag::NEXT_INO);
                w.u64(*next);
            }
        }
    }

    /// Reads one record of a chunk of `version` (see [`ChunkHeader::VERSION`]); unknown
    /// tags and out-of-range fields are corruption.
    pub fn decode(r: &mut Reader<'_>, version: u16) -> Result<Record> {
        let ino = |r: &mut Reader<'_>| r.u64().map(InodeNo);
        let kind = |r: &mut Reader<'_>| {
            let k = r.u8()?;
            FileKind::from_u8(k)
                .filter(|&k| version >= 2 || (k as u8) <= FileKind::Symlink as u8)
                .ok_or_else(|| corrupted(format!("file kind {k} in a version {version} chunk")))
        };
        Ok(match r.u8()? {
            tag::INODE => Record::Inode(Attr {
                ino: ino(r)?,
                kind: kind(r)?,
                perm: r.u16()? & 0o7777,
                uid: r.u32()?,
                gid: r.u32()?,
                nlink: r.u32()?,
                size: r.u64()?,
                atime: r.time()?,
                mtime: r.time()?,
                ctime: r.time()?,
                parent: ino(r)?,
                rdev: if version >= 2 { r.u32()? } else { 0 },
            }),
            tag::MAP => Record::Map {
                ino: ino(r)?,
                file_block: r.u64()?,
                lba: r.u64()?,
                count: r.u32()?,
            },
            tag::TRUNCATE => Record::Truncate {
                ino: ino(r)?,
                size: r.u64()?,
            },
            tag::DIR_ADD => Record::DirAdd {
                dir: ino(r)?,
                cookie: r.u64()?,
                child: ino(r)?,
                kind: kind(r)?,
                name: r.bytes(NAME_MAX)?,
            },
            tag::DIR_REMOVE => Record::DirRemove {
                dir: ino(r)?,
                name: r.bytes(NAME_MAX)?,
            },
            tag::XATTR_SET => Record::XattrSet {
                ino: ino(r)?,
                name: r.bytes(NAME_MAX)?,
                value: r.bytes(XATTR_VALUE_MAX)?,
            },
            tag::XATTR_REMOVE => Record::XattrRemove {
                ino: ino(r)?,
                name: r.bytes(NAME_MAX)?,
            },
            tag::SYMLINK => Record::Symlink {
                ino: ino(r)?,
                target: r.bytes(SYMLINK_MAX)?,
            },
            tag::FREE => Record::Free { ino: ino(r)? },
            tag::ZONE => Record::Zone {
                zone: ZoneId(r.u32()?),
                use_: match r.u8()? {
                    0 => ZoneUse::Data,
                    1 => ZoneUse::Hot,
                    2 => ZoneUse::Cold,
                    u => return Err(corrupted(format!("zone use {u}"))),
                },
                born: r.u64()?,
            },
            tag::NEXT_INO => Record::NextIno { next: r.u64()? },
            t => return Err(corrupted(format!("record tag {t}"))),
        })
    }
}

/// Encodes a transaction.
pub fn encode_records(records: &[Record]) -> Vec<u8> {
    let mut w = Writer::default();
    for r in records {
        r.encode(&mut w);
    }
    w.0
}

/// Decodes the payload of a chunk of `version` into its records.
pub fn decode_records(payload: &[u8], version: u16) -> Result<Vec<Record>> {
    let mut r = Reader::new(payload, "a metadata record");
    let mut out = Vec::new();
    while !r.is_empty() {
        out.push(Record::decode(&mut r, version)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chunk round-trips, and a flipped payload byte fails its checksum.
    #[test]
    fn chunk_round_trip_and_crc() {
        let rec = Record::Map {
            ino: InodeNo(7),
            file_block: 3,
            lba: 99,
            count: 2,
        };
        let payload = encode_records(std::slice::from_ref(&rec));
        let mut chunk = ChunkHeader::encode_chunk(ChunkKind::Log, 5, 42, ZoneId(0), &payload);
        let h = ChunkHeader::decode(&chunk).unwrap();
        assert_eq!((h.seq, h.fs_id, h.blocks), (42, 5, 1));
        assert_eq!(
            decode_records(h.payload(&chunk).unwrap(), h.version).unwrap(),
            [rec]
        );
        chunk[ChunkHeader::BYTES] ^= 1;
        assert!(h.payload(&chunk).is_none());
    }

    /// Checkpoint records are pinned byte for byte at their magic and checked by CRC.
    #[test]
    fn checkpoint_record_round_trip() {
        let c = CheckpointRecord {
            fs_id: 1,
            seq: 2,
            zone_size_lbas: 256,
            zone_cap_lbas: 256,
            nr_zones: 15,
            image_lba: 512,
            image_seq: 9,
            image_chunks: 1,
            created: 1_700_000_000,
        };
        let mut b = c.encode();
        assert_eq!(&b[0..4], b"LSCK");
        assert_eq!(CheckpointRecord::decode(&b), Some(c));
        b[17] ^= 1;
        assert_eq!(CheckpointRecord::decode(&b), None);
    }

    /// Truncated records are corruption, not panics.
    #[test]
    fn short_record_is_corruption() {
        let payload = encode_records(&[Record::Free { ino: InodeNo(3) }]);
        assert!(decode_records(&payload[..5], ChunkHeader::VERSION).is_err());
        assert!(decode_records(&[200], ChunkHeader::VERSION).is_err());
    }

    /// Bytes written out as hex pairs; spaces and newlines separate fields.
    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    /// The checkpoint record is pinned byte for byte (docs/FORMAT.md, "The checkpoint log"):
    /// fields at their offsets, zero gaps, the CRC-32C of bytes 0..80, zeros to the block's end.
    #[test]
    fn checkpoint_record_golden_bytes() {
        let c = CheckpointRecord {
            fs_id: 0x1122_3344_5566_7788,
            seq: 2,
            zone_size_lbas: 256,
            zone_cap_lbas: 250,
            nr_zones: 15,
            image_lba: 512,
            image_seq: 9,
            image_chunks: 3,
            created: 1_700_000_000,
        };
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
        let b = c.encode();
        assert_eq!(b.len(), BLOCK_BYTES);
        assert_eq!(b[..want.len()], want[..]);
        assert!(b[want.len()..].iter().all(|&x| x == 0));
        assert_eq!(CheckpointRecord::decode(&want_block(&want)), Some(c));
    }

    fn want_block(head: &[u8]) -> Vec<u8> {
        let mut b = head.to_vec();
        b.resize(BLOCK_BYTES, 0);
        b
    }

    /// A log chunk and a link chunk are pinned byte for byte (docs/FORMAT.md, "The metadata
    /// stream: chunks"): the 48-byte header, the payload, zeros to the block's end.
    #[test]
    fn chunk_golden_bytes() {
        let payload = encode_records(&[Record::Free { ino: InodeNo(3) }]);
        let chunk = ChunkHeader::encode_chunk(ChunkKind::Log, 5, 42, ZoneId(0), &payload);
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

        let link = ChunkHeader::encode_chunk(ChunkKind::Link, 5, 43, ZoneId(7), &[]);
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

    /// Every record but Inode (pinned in `inode_record_v2_golden_bytes`) is pinned byte for
    /// byte (docs/FORMAT.md, "Records"), and decodes back to itself.
    #[test]
    fn record_golden_bytes() {
        let cases = [
            (
                Record::Map {
                    ino: InodeNo(7),
                    file_block: 3,
                    lba: 0x0102,
                    count: 4,
                },
                "02 0700000000000000 0300000000000000 0201000000000000 04000000",
            ),
            (
                Record::Truncate {
                    ino: InodeNo(7),
                    size: 5000,
                },
                "03 0700000000000000 8813000000000000",
            ),
            (
                Record::DirAdd {
                    dir: InodeNo(1),
                    cookie: 3,
                    child: InodeNo(7),
                    kind: FileKind::Symlink,
                    name: b"ab".to_vec(),
                },
                "04 0100000000000000 0300000000000000 0700000000000000 03 02000000 6162",
            ),
            (
                Record::DirRemove {
                    dir: InodeNo(1),
                    name: b"ab".to_vec(),
                },
                "05 0100000000000000 02000000 6162",
            ),
            (
                Record::XattrSet {
                    ino: InodeNo(7),
                    name: b"n".to_vec(),
                    value: b"vw".to_vec(),
                },
                "06 0700000000000000 01000000 6e 02000000 7677",
            ),
            (
                Record::XattrRemove {
                    ino: InodeNo(7),
                    name: b"n".to_vec(),
                },
                "07 0700000000000000 01000000 6e",
            ),
            (
                Record::Symlink {
                    ino: InodeNo(7),
                    target: b"/t".to_vec(),
                },
                "08 0700000000000000 02000000 2f74",
            ),
            (Record::Free { ino: InodeNo(7) }, "09 0700000000000000"),
            (
                Record::Zone {
                    zone: ZoneId(5),
                    use_: ZoneUse::Cold,
                    born: 9,
                },
                "0a 05000000 02 0900000000000000",
            ),
            (Record::NextIno { next: 0x10 }, "0b 1000000000000000"),
        ];
        for (record, bytes) in cases {
            let want = hex(bytes);
            assert_eq!(
                encode_records(std::slice::from_ref(&record)),
                want,
                "{record:?}"
            );
            assert_eq!(
                decode_records(&want, ChunkHeader::VERSION).unwrap(),
                [record]
            );
        }
    }

    fn device_node() -> Attr {
        let t = Time {
            sec: 0x0102_0304,
            nsec: 5,
        };
        Attr {
            ino: InodeNo(0x11),
            kind: FileKind::CharDevice,
            perm: 0o640,
            uid: 0x22,
            gid: 0x33,
            nlink: 1,
            size: 0,
            atime: t,
            mtime: t,
            ctime: t,
            parent: InodeNo(0),
            rdev: 0x0000_0103,
        }
    }

    /// A version 2 Inode record is pinned byte for byte: the v1 fields, then `rdev` (`u32`).
    #[test]
    fn inode_record_v2_golden_bytes() {
        let a = device_node();
        let bytes = encode_records(&[Record::Inode(a)]);
        let mut want = vec![1u8];
        want.extend(0x11u64.to_le_bytes());
        want.push(5);
        want.extend(0o640u16.to_le_bytes());
        want.extend(0x22u32.to_le_bytes());
        want.extend(0x33u32.to_le_bytes());
        want.extend(1u32.to_le_bytes());
        want.extend(0u64.to_le_bytes());
        for _ in 0..3 {
            want.extend(0x0102_0304i64.to_le_bytes());
            want.extend(5u32.to_le_bytes());
        }
        want.extend(0u64.to_le_bytes());
        want.extend(0x103u32.to_le_bytes());
        assert_eq!(bytes, want);
        assert_eq!(decode_records(&bytes, 2).unwrap(), [Record::Inode(a)]);
    }

    /// A version 1 chunk (written before device nodes existed) still mounts: its Inode
    /// records have no `rdev` and read as 0; a special kind in one is corruption.
    #[test]
    fn inode_record_v1_still_read() {
        let mut a = device_node();
        a.kind = FileKind::File;
        a.rdev = 0;
        let mut v1 = encode_records(&[Record::Inode(a)]);
        v1.truncate(v1.len() - 4);
        assert_eq!(decode_records(&v1, 1).unwrap(), [Record::Inode(a)]);
        v1[9] = FileKind::Fifo as u8;
        assert!(decode_records(&v1, 1).is_err());
        // A v2 decoder does not read v1 bytes as v2: the record ends early.
        let mut v1 = encode_records(&[Record::Inode(a)]);
        v1.truncate(v1.len() - 4);
        assert!(decode_records(&v1, 2).is_err());
    }

    /// Chunks of version 1 and 2 are read; version 0 and 3 are not (a newer format is not
    /// mistaken for this one).
    #[test]
    fn chunk_versions_read() {
        let payload = encode_records(&[Record::Free { ino: InodeNo(3) }]);
        let chunk = ChunkHeader::encode_chunk(ChunkKind::Log, 5, 42, ZoneId(0), &payload);
        assert_eq!(ChunkHeader::decode(&chunk).map(|h| h.version), Some(2));
        for (version, read) in [(0u16, false), (1, true), (3, false)] {
            let mut c = chunk.clone();
            c[4..6].copy_from_slice(&version.to_le_bytes());
            let crc = CRC32C.checksum(&c[..ChunkHeader::HEADER_CRC]);
            c[ChunkHeader::HEADER_CRC..ChunkHeader::HEADER_CRC + 4]
                .copy_from_slice(&crc.to_le_bytes());
            assert_eq!(
                ChunkHeader::decode(&c).map(|h| h.version),
                read.then_some(version),
                "version {version}"
            );
            assert_eq!(
                ChunkHeader::unread_version(&c),
                (!read).then_some(version),
                "version {version}"
            );
        }
    }
}
