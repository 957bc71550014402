//! A reply as the kernel reads it out of a ring entry: the `fuse_out_header` in the header,
//! and the reply's arguments in the payload, written field by field (`include/uapi/linux/fuse.h`).

use fuser::Errno;

use super::abi::ENT_IN_OUT;
use crate::fuse::attr::kind_bits;
use crate::fuse::{Answer, Opened, Xattr, TTL};
use crate::lfs::{Attr, StatFs};

/// A reply's arguments, written into the payload.
pub(super) struct Out<'a> {
    pub(super) payload: &'a mut [u8],
    pub(super) len: usize,
}

impl Out<'_> {
    pub(super) fn put(&mut self, bytes: &[u8]) -> Answer<()> {
        let end = self.len + bytes.len();
        self.payload
            .get_mut(self.len..end)
            .ok_or(Errno::EIO)?
            .copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    pub(super) fn u32(&mut self, v: u32) -> Answer<()> {
        self.put(&v.to_le_bytes())
    }

    pub(super) fn u64(&mut self, v: u64) -> Answer<()> {
        self.put(&v.to_le_bytes())
    }

    /// `struct fuse_attr`.
    pub(super) fn attr(&mut self, a: &Attr) -> Answer<()> {
        for v in [a.ino.0, a.size, a.size.div_ceil(512)] {
            self.u64(v)?;
        }
        // Seconds as the kernel's signed 64 bits.
        for t in [a.atime, a.mtime, a.ctime] {
            self.u64(t.sec as u64)?;
        }
        for v in [
            a.atime.nsec,
            a.mtime.nsec,
            a.ctime.nsec,
            kind_bits(a.kind) | u32::from(a.perm),
            a.nlink,
            a.uid,
            a.gid,
            a.rdev,
            4096,
            0,
        ] {
            self.u32(v)?;
        }
        Ok(())
    }

    /// `struct fuse_entry_out`.
    pub(super) fn entry(&mut self, a: &Attr) -> Answer<()> {
        let ttl = TTL.as_secs();
        for v in [a.ino.0, 0, ttl, ttl] {
            self.u64(v)?;
        }
        self.u64(0)?;
        self.attr(a)
    }

    /// `struct fuse_attr_out`.
    pub(super) fn attr_out(&mut self, a: &Attr) -> Answer<()> {
        self.u64(TTL.as_secs())?;
        self.u64(0)?;
        self.attr(a)
    }

    /// `struct fuse_open_out`.
    pub(super) fn open(&mut self, o: Opened) -> Answer<()> {
        self.u64(o.fh)?;
        self.u32(o.flags.bits())?;
        self.u32(0)
    }

    /// `struct fuse_kstatfs`.
    pub(super) fn statfs(&mut self, s: &StatFs) -> Answer<()> {
        for v in [s.blocks, s.bfree, s.bavail, s.files, s.ffree] {
            self.u64(v)?;
        }
        for v in [
            s.block_bytes,
            s.name_max,
            s.block_bytes,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        ] {
            self.u32(v)?;
        }
        Ok(())
    }

    pub(super) fn xattr(&mut self, x: &Xattr) -> Answer<()> {
        match x {
            Xattr::Size(n) => {
                self.u32(*n)?;
                self.u32(0)
            }
            Xattr::Value(v) => self.put(v),
        }
    }
}

/// Writes the `fuse_out_header` (the request's unique id is already in place) and the
/// payload's length.
pub(super) fn finish(header: &mut [u8], replied: Answer<usize>) {
    let (error, len) = match replied {
        Ok(len) => (0, len),
        Err(e) => (-e.code(), 0),
    };
    let len32 = u32::try_from(len).unwrap_or(u32::MAX);
    header[0..4].copy_from_slice(&(16 + len32).to_le_bytes());
    header[4..8].copy_from_slice(&error.to_le_bytes());
    header[ENT_IN_OUT + 16..ENT_IN_OUT + 20].copy_from_slice(&len32.to_le_bytes());
}
