//! The one encoder ([`Writer`], driven by [`Encode`]) and the one decoder ([`Reader`]) of the
//! on-media format, and the one error for bytes that do not decode ([`Corrupt`]).
//!
//! Both go field by field, little-endian. Fixed-layout structures (the chunk header, the
//! checkpoint record) name each field's offset as a const and place it with
//! [`Writer::at`] / [`Reader::at`]; variable records are written and read in sequence.
//! Hand-written rather than `postcard`: the layouts are fixed by docs/FORMAT.md (fixed-width
//! fields at stated offsets, CRCs over byte ranges), which a serde format does not promise.

use crate::error::LfsError;
use crate::ids::Lba;
use crate::inode::Time;

use super::CRC32C;

/// Why bytes read from the media are not the structure they should be. Each names the
/// structure (`what`) or the field that failed; mount reports it as
/// [`LfsError::Corrupted`] where the damage is not expected (a torn chunk at the log's end
/// is).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Corrupt {
    #[error("{what} ends early")]
    EndsEarly { what: &'static str },
    #[error("{what}: a {len}-byte string")]
    LongString { what: &'static str, len: usize },
    #[error("{what}: {nsec} nanoseconds")]
    Nanoseconds { what: &'static str, nsec: u32 },
    #[error("{what}: not its magic number")]
    Magic { what: &'static str },
    #[error("{what}: its checksum does not match")]
    Checksum { what: &'static str },
    /// Intact (magic and checksum hold) but of a format version this code does not read.
    #[error("{what}: format version {version}")]
    Version { what: &'static str, version: u16 },
    #[error("{what}: {bytes}-byte blocks")]
    BlockBytes { what: &'static str, bytes: u32 },
    #[error("file kind {kind} in a version {version} chunk")]
    FileKind { kind: u8, version: u16 },
    #[error("zone use {0}")]
    ZoneUse(u8),
    #[error("record tag {0}")]
    RecordTag(u8),
    #[error("chunk kind {0}")]
    ChunkKind(u8),
    #[error("a chunk of {blocks} blocks with {payload_len} payload bytes")]
    ChunkSize { blocks: u32, payload_len: u32 },
    /// Structures that decode but contradict each other or the state replayed so far (a
    /// record naming a missing inode, a link to a zone already in the chain); the text says
    /// which ([`crate::error::corrupted`]).
    #[error("{0}")]
    Inconsistent(String),
}

impl From<Corrupt> for LfsError {
    fn from(c: Corrupt) -> LfsError {
        LfsError::Corrupted(c.to_string())
    }
}

/// A structure's one encoding.
pub trait Encode {
    /// Appends the structure's bytes.
    fn encode(&self, w: &mut Writer);

    /// The structure's bytes alone.
    fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::default();
        self.encode(&mut w);
        w.into_bytes()
    }
}

/// Appends little-endian fields to a buffer.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Moves to `offset` of a fixed layout, zero-filling the gap. A layout whose fields
    /// overlap is a bug in this code (the golden-bytes tests catch it), hence the panic.
    pub fn at(&mut self, offset: usize) -> &mut Self {
        assert!(
            self.buf.len() <= offset,
            "a field at offset {offset} overlaps the one before it (at {})",
            self.buf.len()
        );
        self.buf.resize(offset, 0);
        self
    }

    /// Zeros up to `len` bytes in all (padding to whole blocks).
    pub fn pad_to(&mut self, len: usize) -> &mut Self {
        self.at(len)
    }

    /// CRC-32C of everything written so far.
    pub fn crc(&self) -> u32 {
        CRC32C.checksum(&self.buf)
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }
    /// Bytes as they are (a payload).
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }
    /// A byte string with a `u32` length in front.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32).raw(v)
    }
    pub fn time(&mut self, t: Time) -> &mut Self {
        self.i64(t.sec).u32(t.nsec)
    }
    /// An LBA: the plain `u64` the device uses.
    pub fn lba(&mut self, lba: Lba) -> &mut Self {
        self.u64(lba.get())
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads little-endian fields from untrusted bytes; running out is [`Corrupt::EndsEarly`].
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

type Result<T> = std::result::Result<T, Corrupt>;

impl<'a> Reader<'a> {
    /// A reader of `buf`, which holds `what` (named in every error).
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    /// What this reader reads, for errors the caller finds.
    pub fn what(&self) -> &'static str {
        self.what
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Moves to `offset` of a fixed layout.
    pub fn at(&mut self, offset: usize) -> &mut Self {
        self.pos = offset;
        self
    }

    /// The next `n` bytes.
    pub fn raw(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or(Corrupt::EndsEarly { what: self.what })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// Checks that bytes `0..end` have the CRC-32C `crc`.
    pub fn check_crc(&self, end: usize, crc: u32) -> Result<()> {
        let covered = self
            .buf
            .get(..end)
            .ok_or(Corrupt::EndsEarly { what: self.what })?;
        if CRC32C.checksum(covered) == crc {
            Ok(())
        } else {
            Err(Corrupt::Checksum { what: self.what })
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.raw(N)?);
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.raw(1)?[0])
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
    /// A byte string with a `u32` length in front, at most `max` bytes.
    pub fn bytes(&mut self, max: usize) -> Result<Vec<u8>> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(Corrupt::LongString {
                what: self.what,
                len,
            });
        }
        Ok(self.raw(len)?.to_vec())
    }
    pub fn time(&mut self) -> Result<Time> {
        let sec = self.i64()?;
        let nsec = self.u32()?;
        if nsec >= 1_000_000_000 {
            return Err(Corrupt::Nanoseconds {
                what: self.what,
                nsec,
            });
        }
        Ok(Time { sec, nsec })
    }
    pub fn lba(&mut self) -> Result<Lba> {
        self.u64().map(Lba)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fields are little-endian, `at` zero-fills up to a field's offset, and what the writer
    /// wrote the reader reads back; a read past the end names the structure.
    #[test]
    fn writer_and_reader_agree() {
        let mut w = Writer::default();
        w.u8(1).u16(0x0203).at(4).u32(0x0405_0607).bytes(b"ab");
        w.time(Time { sec: -1, nsec: 9 }).pad_to(32);
        let b = w.into_bytes();
        assert_eq!(b[..12], [1, 3, 2, 0, 7, 6, 5, 4, 2, 0, 0, 0]);
        assert_eq!(b.len(), 32);
        let mut r = Reader::new(&b, "a test");
        assert_eq!(r.u8(), Ok(1));
        assert_eq!(r.u16(), Ok(0x0203));
        assert_eq!(r.at(4).u32(), Ok(0x0405_0607));
        assert_eq!(r.bytes(2), Ok(b"ab".to_vec()));
        assert_eq!(r.time(), Ok(Time { sec: -1, nsec: 9 }));
        assert_eq!(r.at(30).u32(), Err(Corrupt::EndsEarly { what: "a test" }));
    }

    /// Out-of-range strings and times are corruption, and the messages are the ones mount
    /// has always reported.
    #[test]
    fn corrupt_fields_are_named() {
        let mut w = Writer::default();
        w.bytes(b"abc").i64(0).u32(1_000_000_000);
        let b = w.into_bytes();
        let mut r = Reader::new(&b, "a metadata record");
        let e = r.bytes(2).unwrap_err();
        assert_eq!(e.to_string(), "a metadata record: a 3-byte string");
        let mut r = Reader::new(&b, "a metadata record");
        r.at(7);
        assert_eq!(
            r.time().unwrap_err().to_string(),
            "a metadata record: 1000000000 nanoseconds"
        );
        assert_eq!(
            LfsError::from(Corrupt::EndsEarly { what: "x" }).to_string(),
            "the file system on the device is corrupt: x ends early"
        );
    }

    /// A checksum over a byte range holds or is a named Checksum error.
    #[test]
    fn crc_checked_over_a_range() {
        let mut w = Writer::default();
        w.raw(b"123456789");
        assert_eq!(w.crc(), 0xE306_9283);
        let b = w.into_bytes();
        let r = Reader::new(&b, "a test");
        assert_eq!(r.check_crc(9, 0xE306_9283), Ok(()));
        assert_eq!(
            r.check_crc(8, 0xE306_9283),
            Err(Corrupt::Checksum { what: "a test" })
        );
        assert_eq!(
            r.check_crc(10, 0),
            Err(Corrupt::EndsEarly { what: "a test" })
        );
    }
}
