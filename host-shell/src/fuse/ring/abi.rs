//! A FUSE request as it arrives in a ring entry, served by the operations of `CsdFs`; its reply
//! goes back into the entry through [`super::reply`].
//!
//! An entry is two buffers the kernel was given at registration (Linux's
//! `fs/fuse/dev_uring.c`, `include/uapi/linux/fuse.h`):
//! - the header (`struct fuse_uring_req_header`): 128 bytes for the request's
//!   `fuse_in_header` and then the reply's `fuse_out_header`, 128 bytes for the operation's
//!   first argument (`fuse_read_in`, `fuse_write_in`, ...; nothing for the operations whose
//!   first argument is a name), and 32 bytes of `fuse_uring_ent_in_out`, whose `commit_id`
//!   names the request and whose `payload_sz` gives the bytes in the payload, both ways;
//! - the payload: the request's other arguments (names, the data of a write), then the
//!   reply's arguments (attributes, the data of a read).
//!
//! Layouts are those of FUSE 7.x (little endian on every host Linux runs FUSE over io_uring
//! on), written field by field.

use fuser::Errno;

use super::super::attr::kind_bits;
use super::super::xattr::Set;
use super::super::{Answer, CsdFs, Opened, Xattr};
use super::reply::{finish, Out};
use crate::lfs::{Attr, DirEntry, SetAttr, StatFs, Time};
use crate::offload::keys::Caller;

/// Bytes of an entry's header.
pub(crate) const HEADER_BYTES: usize = 128 + 128 + 32;
const OP_IN: usize = 128;
pub(super) const ENT_IN_OUT: usize = 256;

mod opcode {
    pub const LOOKUP: u32 = 1;
    pub const GETATTR: u32 = 3;
    pub const SETATTR: u32 = 4;
    pub const READLINK: u32 = 5;
    pub const SYMLINK: u32 = 6;
    pub const MKNOD: u32 = 8;
    pub const MKDIR: u32 = 9;
    pub const UNLINK: u32 = 10;
    pub const RMDIR: u32 = 11;
    pub const RENAME: u32 = 12;
    pub const LINK: u32 = 13;
    pub const OPEN: u32 = 14;
    pub const READ: u32 = 15;
    pub const WRITE: u32 = 16;
    pub const STATFS: u32 = 17;
    pub const RELEASE: u32 = 18;
    pub const FSYNC: u32 = 20;
    pub const SETXATTR: u32 = 21;
    pub const GETXATTR: u32 = 22;
    pub const LISTXATTR: u32 = 23;
    pub const REMOVEXATTR: u32 = 24;
    pub const FLUSH: u32 = 25;
    pub const OPENDIR: u32 = 27;
    pub const READDIR: u32 = 28;
    pub const RELEASEDIR: u32 = 29;
    pub const FSYNCDIR: u32 = 30;
    pub const ACCESS: u32 = 34;
    pub const CREATE: u32 = 35;
    pub const DESTROY: u32 = 38;
    pub const FALLOCATE: u32 = 43;
    pub const RENAME2: u32 = 45;
}

/// `fuse_setattr_in.valid` bits.
mod fattr {
    pub const MODE: u32 = 1 << 0;
    pub const UID: u32 = 1 << 1;
    pub const GID: u32 = 1 << 2;
    pub const SIZE: u32 = 1 << 3;
    pub const ATIME: u32 = 1 << 4;
    pub const MTIME: u32 = 1 << 5;
    pub const ATIME_NOW: u32 = 1 << 7;
    pub const MTIME_NOW: u32 = 1 << 8;
}

/// `fuse_read_in.read_flags`: the kernel names a lock owner (on direct reads).
const FUSE_READ_LOCKOWNER: u32 = 1 << 1;
/// `fuse_write_in.write_flags`: the writer has no `CAP_FSETID`.
const FUSE_WRITE_KILL_SUIDGID: u32 = 1 << 2;
/// `fuse_fsync_in.fsync_flags`: `fdatasync`.
const FUSE_FSYNC_FDATASYNC: u32 = 1 << 0;

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// The id a commit names the request by.
pub(super) fn commit_id(header: &[u8]) -> u64 {
    u64_at(header, ENT_IN_OUT + 8)
}

/// What an entry's request came to.
pub(super) enum Outcome {
    /// The reply is in the entry: commit it.
    Replied,
    /// The operation answers later, through what `later` made for it.
    Later,
}

/// Reads of this many bytes or more are the page cache's readahead of a stream: served off
/// the caller's CPU, they overlap the caller's copying of the pages it has (see
/// [`super`]).
const LARGE_READ_BYTES: u32 = 128 << 10;

/// Whether the request in `header` is a read of at least [`LARGE_READ_BYTES`].
pub(super) fn is_large_read(header: &[u8]) -> bool {
    u32_at(header, 4) == opcode::READ && u32_at(header, OP_IN + 16) >= LARGE_READ_BYTES
}

/// The NUL-terminated names at the start of `payload`.
fn names(payload: &[u8]) -> impl Iterator<Item = &[u8]> {
    payload.split(|b| *b == 0)
}

fn name(payload: &[u8]) -> &[u8] {
    names(payload).next().unwrap_or_default()
}

fn two_names(payload: &[u8]) -> (&[u8], &[u8]) {
    let mut n = names(payload);
    (n.next().unwrap_or_default(), n.next().unwrap_or_default())
}

fn time(sec: u64, nsec: u32, now: bool) -> Time {
    if now {
        Time::now()
    } else {
        Time {
            sec: sec as i64,
            nsec,
        }
    }
}

/// Serves the request in an entry (`header`, and the first `payload_sz` bytes of `payload`)
/// and writes its reply there. `later` makes the answer of an operation that answers later
/// (a setxattr: offload keys are set in threads of their own); it is called for no other.
pub(super) fn serve<L: FnOnce(Answer<()>) + Send + 'static>(
    fs: &CsdFs,
    header: &mut [u8],
    payload: &mut [u8],
    later: impl FnOnce() -> L,
) -> Outcome {
    let opcode = u32_at(header, 4);
    let node = u64_at(header, 16);
    let caller = Caller {
        uid: u32_at(header, 24),
        gid: u32_at(header, 28),
        tid: u32_at(header, 32),
    };
    let op = header.get(OP_IN..ENT_IN_OUT).unwrap_or_default();
    let sent = (u32_at(header, ENT_IN_OUT + 16) as usize).min(payload.len());
    let args = &payload[..sent];
    if opcode == opcode::SETXATTR {
        // `fuse_setxattr_in` without FUSE_SETXATTR_EXT: size, flags.
        let size = u32_at(op, 0) as usize;
        let flags = u32_at(op, 4) as i32;
        let name_len = name(args).len();
        let value = args
            .get(name_len + 1..name_len + 1 + size)
            .unwrap_or_default();
        let set = Set {
            name: name(args),
            value,
            flags,
        };
        fs.setxattr(caller, node, set, later());
        return Outcome::Later;
    }
    let answer = answer(fs, opcode, node, caller, op, args);
    let mut out = Out { payload, len: 0 };
    let replied = match answer {
        Ok(Reply::Empty) => Ok(()),
        Ok(Reply::Entry(a)) => out.entry(&a),
        Ok(Reply::Attr(a)) => out.attr_out(&a),
        Ok(Reply::Open(o)) => out.open(o),
        Ok(Reply::Created(a, o)) => out.entry(&a).and_then(|()| out.open(o)),
        Ok(Reply::Data(d)) => out.put(&d),
        Ok(Reply::Written(n)) => out.u32(n).and_then(|()| out.u32(0)),
        Ok(Reply::Statfs(s)) => out.statfs(&s),
        Ok(Reply::Xattr(x)) => out.xattr(&x),
        Ok(Reply::Dir(entries, size)) => dirents(&entries, size, &mut out),
        Err(e) => Err(e),
    };
    let len = out.len;
    finish(header, replied.map(|()| len));
    Outcome::Replied
}

/// An operation's answer before it is written into the payload.
enum Reply {
    Empty,
    Entry(Attr),
    Attr(Attr),
    Open(Opened),
    Created(Attr, Opened),
    Data(Vec<u8>),
    Written(u32),
    Statfs(StatFs),
    Xattr(Xattr),
    /// A directory's entries from the listing's offset, as many as fit in this many bytes.
    Dir(Vec<DirEntry>, usize),
}

fn answer(
    fs: &CsdFs,
    opcode: u32,
    node: u64,
    caller: Caller,
    op: &[u8],
    args: &[u8],
) -> Answer<Reply> {
    use opcode::*;
    Ok(match opcode {
        LOOKUP => Reply::Entry(fs.lookup(node, name(args))?),
        GETATTR => Reply::Attr(fs.getattr(node)?),
        SETATTR => Reply::Attr(fs.setattr(caller, node, change(op))?),
        READLINK => Reply::Data(fs.readlink(node)?),
        SYMLINK => {
            let (name, target) = two_names(args);
            Reply::Entry(fs.symlink(caller, node, name, target)?)
        }
        MKNOD => {
            // `fuse_mknod_in`: mode, rdev, umask.
            let mode = u32_at(op, 0) & !u32_at(op, 8);
            Reply::Entry(fs.mknod(caller, node, name(args), mode, u32_at(op, 4))?)
        }
        MKDIR => {
            // `fuse_mkdir_in`: mode, umask.
            let mode = u32_at(op, 0) & !u32_at(op, 4);
            Reply::Entry(fs.mkdir(caller, node, name(args), mode)?)
        }
        UNLINK => {
            fs.unlink(node, name(args))?;
            Reply::Empty
        }
        RMDIR => {
            fs.rmdir(node, name(args))?;
            Reply::Empty
        }
        RENAME | RENAME2 => {
            // `fuse_rename_in`: newdir; `fuse_rename2_in`: newdir, flags.
            let flags = if opcode == RENAME2 { u32_at(op, 8) } else { 0 };
            let (name, newname) = two_names(args);
            fs.rename(node, name, u64_at(op, 0), newname, flags)?;
            Reply::Empty
        }
        // `fuse_link_in`: the inode to link; the node is the new parent.
        LINK => Reply::Entry(fs.link(u64_at(op, 0), node, name(args))?),
        OPEN => Reply::Open(fs.open(caller, node)?),
        READ => {
            // `fuse_read_in`: fh, offset, size, read_flags.
            let direct = u32_at(op, 20) & FUSE_READ_LOCKOWNER != 0;
            let (fh, offset, size) = (u64_at(op, 0), u64_at(op, 8), u32_at(op, 16));
            Reply::Data(fs.read(caller, node, fh, offset, size, direct)?)
        }
        WRITE => {
            // `fuse_write_in`: fh, offset, size, write_flags.
            let size = (u32_at(op, 16) as usize).min(args.len());
            let kill = u32_at(op, 20) & FUSE_WRITE_KILL_SUIDGID != 0;
            let n = fs.write(
                caller,
                node,
                u64_at(op, 0),
                u64_at(op, 8),
                &args[..size],
                kill,
            )?;
            Reply::Written(n)
        }
        STATFS => Reply::Statfs(fs.statfs()?),
        RELEASE => {
            fs.release(node)?;
            Reply::Empty
        }
        FSYNC => {
            fs.fsync(node, u32_at(op, 8) & FUSE_FSYNC_FDATASYNC != 0)?;
            Reply::Empty
        }
        // `fuse_getxattr_in`: size.
        GETXATTR => Reply::Xattr(fs.getxattr(caller, node, name(args), u32_at(op, 0))?),
        LISTXATTR => Reply::Xattr(fs.listxattr(node, u32_at(op, 0))?),
        REMOVEXATTR => {
            fs.removexattr(caller, node, name(args))?;
            Reply::Empty
        }
        FLUSH => {
            fs.flush(node)?;
            Reply::Empty
        }
        OPENDIR => Reply::Open(fs.opendir(node)?),
        // `fuse_read_in`: offset, size.
        READDIR => Reply::Dir(fs.readdir(node, u64_at(op, 8))?, u32_at(op, 16) as usize),
        RELEASEDIR | DESTROY => Reply::Empty,
        FSYNCDIR => {
            fs.fsyncdir()?;
            Reply::Empty
        }
        ACCESS => {
            fs.access(node)?;
            Reply::Empty
        }
        CREATE => {
            // `fuse_create_in`: flags, mode, umask.
            let mode = u32_at(op, 4) & !u32_at(op, 8);
            let (attr, opened) = fs.create(caller, node, name(args), mode)?;
            Reply::Created(attr, opened)
        }
        FALLOCATE => {
            fs.fallocate()?;
            Reply::Empty
        }
        // What fuser answers for an operation a file system does not implement.
        _ => return Err(Errno::ENOSYS),
    })
}

/// `fuse_setattr_in`: valid, padding, fh, size, lock_owner, atime, mtime, ctime, atimensec,
/// mtimensec, ctimensec, mode, unused, uid, gid.
fn change(op: &[u8]) -> SetAttr {
    let valid = u32_at(op, 0);
    let has = |bit: u32| valid & bit != 0;
    SetAttr {
        mode: has(fattr::MODE).then(|| u32_at(op, 68)),
        uid: has(fattr::UID).then(|| u32_at(op, 76)),
        gid: has(fattr::GID).then(|| u32_at(op, 80)),
        size: has(fattr::SIZE).then(|| u64_at(op, 16)),
        atime: has(fattr::ATIME)
            .then(|| time(u64_at(op, 32), u32_at(op, 56), has(fattr::ATIME_NOW))),
        mtime: has(fattr::MTIME)
            .then(|| time(u64_at(op, 40), u32_at(op, 60), has(fattr::MTIME_NOW))),
        // The operation decides from the caller's capabilities.
        fsetid: false,
    }
}

/// `struct fuse_dirent`s of `entries`, as many as fit in `size` bytes.
fn dirents(entries: &[DirEntry], size: usize, out: &mut Out<'_>) -> Answer<()> {
    for e in entries {
        let bytes = (24 + e.name.len()).next_multiple_of(8);
        if out.len + bytes > size {
            break;
        }
        out.u64(e.ino.0)?;
        out.u64(e.offset)?;
        out.u32(e.name.len() as u32)?;
        out.u32(kind_bits(e.kind) >> 12)?;
        out.put(&e.name)?;
        out.put(&[0; 7][..bytes - 24 - e.name.len()])?;
    }
    Ok(())
}
