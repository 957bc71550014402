//! Metadata records (docs/FORMAT.md, "Records"): a tag byte and the record's fields; a
//! chunk's payload is a run of them.

use crate::ids::{Lba, ZoneId};
use crate::inode::{Attr, FileKind, InodeNo};

use super::codec::{Corrupt, Encode, Reader, Writer};
use super::{NAME_MAX, SYMLINK_MAX, XATTR_VALUE_MAX};

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
        lba: Lba,
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

impl Encode for Record {
    /// The record: tag `u8`, then its fields.
    fn encode(&self, w: &mut Writer) {
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
                w.lba(*lba);
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
}

impl Record {
    /// Reads one record of a chunk of `version` (see [`ChunkHeader::VERSION`]); unknown
    /// tags and out-of-range fields are corruption.
    pub fn decode(r: &mut Reader<'_>, version: u16) -> Result<Record, Corrupt> {
        let ino = |r: &mut Reader<'_>| r.u64().map(InodeNo);
        let kind = |r: &mut Reader<'_>| {
            let k = r.u8()?;
            FileKind::from_u8(k)
                .filter(|&k| version >= 2 || (k as u8) <= FileKind::Symlink as u8)
                .ok_or(Corrupt::FileKind { kind: k, version })
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
                lba: r.lba()?,
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
                    u => return Err(Corrupt::ZoneUse(u)),
                },
                born: r.u64()?,
            },
            tag::NEXT_INO => Record::NextIno { next: r.u64()? },
            t => return Err(Corrupt::RecordTag(t)),
        })
    }
}

/// A transaction: its records one after the other.
impl Encode for [Record] {
    fn encode(&self, w: &mut Writer) {
        for r in self {
            r.encode(w);
        }
    }
}

/// Decodes the payload of a chunk of `version` into its records.
pub fn decode_records(payload: &[u8], version: u16) -> Result<Vec<Record>, Corrupt> {
    let mut r = Reader::new(payload, "a metadata record");
    let mut out = Vec::new();
    while !r.is_empty() {
        out.push(Record::decode(&mut r, version)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::tests::hex;
    use super::super::ChunkHeader;
    use super::*;
    use crate::inode::Time;

    /// Truncated records are corruption, not panics.
    #[test]
    fn short_record_is_corruption() {
        let payload = Record::Free { ino: InodeNo(3) }.to_bytes();
        assert!(decode_records(&payload[..5], ChunkHeader::VERSION).is_err());
        assert!(decode_records(&[200], ChunkHeader::VERSION).is_err());
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
                    lba: Lba(0x0102),
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
            assert_eq!(record.to_bytes(), want, "{record:?}");
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
        let bytes = Record::Inode(a).to_bytes();
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
        let mut v1 = Record::Inode(a).to_bytes();
        v1.truncate(v1.len() - 4);
        assert_eq!(decode_records(&v1, 1).unwrap(), [Record::Inode(a)]);
        v1[9] = FileKind::Fifo as u8;
        assert!(decode_records(&v1, 1).is_err());
        // A v2 decoder does not read v1 bytes as v2: the record ends early.
        let mut v1 = Record::Inode(a).to_bytes();
        v1.truncate(v1.len() - 4);
        assert!(decode_records(&v1, 2).is_err());
    }
}
