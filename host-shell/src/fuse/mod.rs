//! The FUSE mount: a thin [`fuser::Filesystem`] over [`Lfs`] and the offload keys
//! ([`Offload`]), and the session around them ([`serve`]).
//!
//! Each method makes one typed call (into [`Lfs`], or into [`Offload`] for the data path and
//! the `user.csd.*` keys, which falls through to [`Lfs`]) and converts its error once. No
//! offload logic lives here: that is [`crate::offload`]'s.
//!
//! Decisions (docs/ARCHITECTURE.md, "The mount"):
//! - Permissions: the kernel checks them (`default_permissions`) against the attributes
//!   getattr returns and the caller's full credentials (supplementary groups included), for
//!   every operation: lookup, open, create, unlink, rename, chmod/chown/utimes, sticky
//!   directories, `access(2)` and xattrs. `--no-permissions` mounts without it (and
//!   `access` then always succeeds). Offload paths are resolved by the daemon, so it checks
//!   them itself: search permission on every directory and read permission on the kernel file.
//! - Two kinds of handle. An open by a process with a read or write stream on the file gives
//!   an *offload handle*: `FOPEN_DIRECT_IO`, its reads and writes go through the process's
//!   streams, and nothing it reads enters the page cache (mappings of it fill the page cache,
//!   so its process is refused the reads that fill them: see [`ReadPath`]). Every other open
//!   gives a *regular handle*: the file's bytes through the kernel's page cache, never a
//!   stream, also when its process sets a stream later. So an offload applies to the
//!   handles opened after its key was set.
//! - The page cache is kept across opens (`FOPEN_KEEP_CACHE`) while nothing bypassed it:
//!   regular writes go through it (write-through: no writeback cache, so fsync needs nothing
//!   from the kernel), and a write on an offload handle makes the next regular open drop the
//!   file's cached pages (the kernel itself drops the written range from the cache of handles
//!   already open).
//! - fallocate answers `EOPNOTSUPP`: a log-structured file system cannot reserve blocks in
//!   place, and glibc's `posix_fallocate` then writes zeros itself, which does reserve them.

mod attr;
mod cache;
mod reply;
mod serve;
mod xattr;

pub use serve::{mount, Background, MountConfig, Mounted, ServeError, StopSignals};

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileHandle, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner,
    OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::lfs::{FileKind, Lfs, RenameFlags, SetAttr};
use crate::offload::keys::{Offload, ReadPath};
use attr::{caller, file_attr, file_type, has_fsetid, ino, time};
use reply::{lfs_errno, offload_errno, reply_empty, reply_entry};

/// How long the kernel may cache attributes and names (this mount is their only writer).
const TTL: Duration = Duration::from_secs(1);
/// Largest read and write request.
const MAX_IO_BYTES: u32 = 1 << 20;

/// The handle of an open on which the process's streams apply (see the module's rules).
const OFFLOAD_HANDLE: FileHandle = FileHandle(1);
/// The handle of every other open.
const REGULAR_HANDLE: FileHandle = FileHandle(0);

/// The file system FUSE calls.
#[derive(Debug)]
pub struct CsdFs {
    lfs: Arc<Lfs>,
    offload: Arc<Offload>,
    /// Files written through an offload handle since their last regular open: their cached
    /// pages may be stale.
    uncached: Mutex<HashSet<u64>>,
    /// Drops the ranges written through offload handles from the page cache of handles
    /// already open.
    invalidate: Arc<cache::Invalidator>,
}

impl CsdFs {
    pub fn new(lfs: Arc<Lfs>, offload: Arc<Offload>) -> CsdFs {
        CsdFs {
            lfs,
            offload,
            uncached: Mutex::default(),
            invalidate: Arc::default(),
        }
    }

    fn uncached(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.uncached.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl fuser::Filesystem for CsdFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_IO_BYTES);
        let _ = config.set_max_readahead(MAX_IO_BYTES);
        let _ = config.add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP);
        // Set-ID bits are cleared here, on writes (the kernel flags writers without
        // CAP_FSETID), truncations and owner changes (`SetAttr::fsetid`). Otherwise the kernel
        // asks for `security.capability` before every write, to see whether it must clear
        // privileges: one more round trip per write. (This file system stores no
        // `security.` attributes, so there are no file capabilities to clear.)
        let _ = config.add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        reply_entry(reply, self.lfs.lookup(ino(parent), name.as_bytes()));
    }

    fn getattr(&self, _req: &Request, i: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.lfs.getattr(ino(i)) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(lfs_errno(&e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        i: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time),
            mtime: mtime.map(time),
            fsetid: size.is_some() && has_fsetid(req),
        };
        match self.lfs.setattr(ino(i), set) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(lfs_errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, i: INodeNo, reply: ReplyData) {
        match self.lfs.readlink(ino(i)) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(lfs_errno(&e)),
        }
    }

    // The kernel opens FIFOs, sockets and device nodes itself (its pipe, socket and device
    // code): no open, read or write of one reaches this file system.
    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let made = self.lfs.mknod(
            ino(parent),
            name.as_bytes(),
            mode & !umask,
            rdev,
            req.uid(),
            req.gid(),
        );
        reply_entry(reply, made);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let made = self.lfs.mkdir(
            ino(parent),
            name.as_bytes(),
            mode & !umask,
            req.uid(),
            req.gid(),
        );
        reply_entry(reply, made);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(
            reply,
            self.lfs.unlink(ino(parent), name.as_bytes()),
            lfs_errno,
        );
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(
            reply,
            self.lfs.rmdir(ino(parent), name.as_bytes()),
            lfs_errno,
        );
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let made = self.lfs.symlink(
            ino(parent),
            link_name.as_bytes(),
            target.as_os_str().as_bytes(),
            req.uid(),
            req.gid(),
        );
        reply_entry(reply, made);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(fuser::RenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::EINVAL);
        }
        let flags = RenameFlags {
            noreplace: flags.contains(fuser::RenameFlags::RENAME_NOREPLACE),
            exchange: flags.contains(fuser::RenameFlags::RENAME_EXCHANGE),
        };
        let renamed = self.lfs.rename(
            ino(parent),
            name.as_bytes(),
            ino(newparent),
            newname.as_bytes(),
            flags,
        );
        reply_empty(reply, renamed, lfs_errno);
    }

    fn link(
        &self,
        _req: &Request,
        i: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply_entry(
            reply,
            self.lfs.link(ino(i), ino(newparent), newname.as_bytes()),
        );
    }

    fn open(&self, req: &Request, i: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if let Err(e) = self.lfs.open(ino(i)) {
            return reply.error(lfs_errno(&e));
        }
        if self.offload.streams(caller(req), ino(i)) {
            return reply.opened(OFFLOAD_HANDLE, FopenFlags::FOPEN_DIRECT_IO);
        }
        if self.uncached().remove(&i.0) {
            reply.opened(REGULAR_HANDLE, FopenFlags::empty())
        } else {
            reply.opened(REGULAR_HANDLE, FopenFlags::FOPEN_KEEP_CACHE)
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let made = self.lfs.create_open(
            ino(parent),
            name.as_bytes(),
            mode & !umask,
            req.uid(),
            req.gid(),
        );
        match made {
            // A new file: no process has a stream on it yet.
            Ok(a) => reply.created(
                &TTL,
                &file_attr(&a),
                Generation(0),
                REGULAR_HANDLE,
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(lfs_errno(&e)),
        }
    }

    fn read(
        &self,
        req: &Request,
        i: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if fh != OFFLOAD_HANDLE {
            return match self.lfs.read(ino(i), offset, size) {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(lfs_errno(&e)),
            };
        }
        // The kernel names a lock owner (FUSE_READ_LOCKOWNER) on every direct read and on no
        // read for the page cache (a mapping's page fault, readahead).
        let path = if lock_owner.is_some() {
            ReadPath::Direct
        } else {
            ReadPath::PageCache
        };
        match self.offload.read(caller(req), ino(i), offset, size, path) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(offload_errno("read", &e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        i: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // Direct I/O writes do not strip set-id bits in the kernel: it asks us to, for every
        // writer without CAP_FSETID, whatever was negotiated at init.
        let kill = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        let written = if fh == OFFLOAD_HANDLE {
            // Before and after: a regular open while the kernel runs may fill the cache with
            // the bytes as they were.
            self.uncached().insert(i.0);
            let written = self.offload.write(caller(req), ino(i), offset, data, kill);
            self.uncached().insert(i.0);
            // The kernel's output may be longer than the write: from the offset on.
            self.invalidate.from(i.0, offset);
            written
        } else {
            self.lfs
                .write_as(ino(i), offset, data, kill)
                .map_err(Into::into)
        };
        match written {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(offload_errno("write", &e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2): the file's buffer goes to the device (not durable: that is fsync's), so a
        // write that fails there is the closing process's error, not lost in release. A
        // buffer that failed stays and is tried again, so the next fsync reports it too.
        reply_empty(reply, self.lfs.flush(ino(i)), lfs_errno);
    }

    fn release(
        &self,
        _req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.offload.sweep();
        reply_empty(reply, self.lfs.release(ino(i)), lfs_errno);
    }

    fn fsync(
        &self,
        _req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.lfs.fsync(ino(i), datasync), lfs_errno);
    }

    fn opendir(&self, _req: &Request, i: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.lfs.getattr(ino(i)) {
            Ok(a) if a.kind == FileKind::Dir => reply.opened(FileHandle(0), FopenFlags::empty()),
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(lfs_errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.lfs.readdir(ino(i), offset) {
            Ok(entries) => {
                for e in entries {
                    if reply.add(
                        INodeNo(e.ino.0),
                        e.offset,
                        file_type(e.kind),
                        OsStr::from_bytes(&e.name),
                    ) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(lfs_errno(&e)),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _i: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.lfs.sync(), lfs_errno);
    }

    fn statfs(&self, _req: &Request, _i: INodeNo, reply: ReplyStatfs) {
        match self.lfs.statfs() {
            Ok(s) => reply.statfs(
                s.blocks,
                s.bfree,
                s.bavail,
                s.files,
                s.ffree,
                s.block_bytes,
                s.name_max,
                s.block_bytes,
            ),
            Err(e) => reply.error(lfs_errno(&e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        i: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let set = xattr::Set {
            name: name.as_bytes(),
            value,
            flags,
        };
        xattr::set(&self.lfs, &self.offload, caller(req), i, set, reply);
    }

    fn getxattr(&self, req: &Request, i: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let got = xattr::get(&self.lfs, &self.offload, caller(req), i, name.as_bytes());
        xattr::reply(reply, size, got);
    }

    fn listxattr(&self, _req: &Request, i: INodeNo, size: u32, reply: ReplyXattr) {
        xattr::reply(reply, size, xattr::list(&self.lfs, i));
    }

    fn removexattr(&self, req: &Request, i: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let removed = xattr::remove(&self.lfs, &self.offload, caller(req), i, name.as_bytes());
        reply_empty(reply, removed, |e| *e);
    }

    fn access(&self, _req: &Request, i: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // Only asked without default_permissions (`--no-permissions`), where access(2) always
        // succeeds on a file that exists: with it, the kernel checks access(2) itself.
        reply_empty(reply, self.lfs.getattr(ino(i)).map(|_| ()), lfs_errno);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _i: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::from_i32(libc::EOPNOTSUPP));
    }
}
