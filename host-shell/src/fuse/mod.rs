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
mod dev;
mod reply;
mod ring;
mod serve;
mod xattr;

pub use serve::{mount, Background, MountConfig, Mounted, ServeError, StopSignals};

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fuser::{Errno, FopenFlags};

use crate::lfs::{Attr, DirEntry, FileKind, InodeNo, Lfs, RenameFlags, SetAttr, StatFs};
use crate::offload::keys::{Caller, Offload, ReadPath};
use attr::has_fsetid;
use reply::{lfs_errno, offload_errno};

/// How long the kernel may cache attributes and names (this mount is their only writer).
const TTL: Duration = Duration::from_secs(1);
/// Largest read and write request.
const MAX_IO_BYTES: u32 = 1 << 20;

/// The handle of an open on which the process's streams apply (see the module's rules).
const OFFLOAD_HANDLE: u64 = 1;
/// The handle of every other open.
const REGULAR_HANDLE: u64 = 0;

/// What an operation answers the kernel: a value, or the error number it fails with.
type Answer<T> = Result<T, Errno>;

/// An open: the handle and how the kernel serves it.
#[derive(Debug, Clone, Copy)]
struct Opened {
    fh: u64,
    flags: FopenFlags,
}

/// An extended attribute's value, or only its size when the caller asked with size 0.
#[derive(Debug)]
enum Xattr {
    Size(u32),
    Value(Vec<u8>),
}

/// The file system FUSE calls. Its methods are the operations, whichever way the kernel's
/// requests arrive (`dev`: `/dev/fuse` through fuser).
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

    fn lookup(&self, parent: u64, name: &[u8]) -> Answer<Attr> {
        self.lfs
            .lookup(InodeNo(parent), name)
            .map_err(|e| lfs_errno(&e))
    }

    fn getattr(&self, i: u64) -> Answer<Attr> {
        self.lfs.getattr(InodeNo(i)).map_err(|e| lfs_errno(&e))
    }

    /// `set.fsetid` is filled in here, from the caller's capabilities, when the size changes.
    fn setattr(&self, caller: Caller, i: u64, mut set: SetAttr) -> Answer<Attr> {
        set.fsetid = set.size.is_some() && has_fsetid(caller.tid);
        self.lfs.setattr(InodeNo(i), set).map_err(|e| lfs_errno(&e))
    }

    fn readlink(&self, i: u64) -> Answer<Vec<u8>> {
        self.lfs.readlink(InodeNo(i)).map_err(|e| lfs_errno(&e))
    }

    // The kernel opens FIFOs, sockets and device nodes itself (its pipe, socket and device
    // code): no open, read or write of one reaches this file system.
    fn mknod(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u32,
    ) -> Answer<Attr> {
        self.lfs
            .mknod(InodeNo(parent), name, mode, rdev, caller.uid, caller.gid)
            .map_err(|e| lfs_errno(&e))
    }

    fn mkdir(&self, caller: Caller, parent: u64, name: &[u8], mode: u32) -> Answer<Attr> {
        self.lfs
            .mkdir(InodeNo(parent), name, mode, caller.uid, caller.gid)
            .map_err(|e| lfs_errno(&e))
    }

    fn unlink(&self, parent: u64, name: &[u8]) -> Answer<()> {
        self.lfs
            .unlink(InodeNo(parent), name)
            .map_err(|e| lfs_errno(&e))
    }

    fn rmdir(&self, parent: u64, name: &[u8]) -> Answer<()> {
        self.lfs
            .rmdir(InodeNo(parent), name)
            .map_err(|e| lfs_errno(&e))
    }

    fn symlink(&self, caller: Caller, parent: u64, name: &[u8], target: &[u8]) -> Answer<Attr> {
        self.lfs
            .symlink(InodeNo(parent), name, target, caller.uid, caller.gid)
            .map_err(|e| lfs_errno(&e))
    }

    /// `flags`: `renameat2`'s.
    fn rename(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: u32,
    ) -> Answer<()> {
        if flags & libc::RENAME_WHITEOUT != 0 {
            return Err(Errno::EINVAL);
        }
        let flags = RenameFlags {
            noreplace: flags & libc::RENAME_NOREPLACE != 0,
            exchange: flags & libc::RENAME_EXCHANGE != 0,
        };
        self.lfs
            .rename(InodeNo(parent), name, InodeNo(newparent), newname, flags)
            .map_err(|e| lfs_errno(&e))
    }

    fn link(&self, i: u64, newparent: u64, newname: &[u8]) -> Answer<Attr> {
        self.lfs
            .link(InodeNo(i), InodeNo(newparent), newname)
            .map_err(|e| lfs_errno(&e))
    }

    fn open(&self, caller: Caller, i: u64) -> Answer<Opened> {
        self.lfs.open(InodeNo(i)).map_err(|e| lfs_errno(&e))?;
        if self.offload.streams(caller, InodeNo(i)) {
            return Ok(Opened {
                fh: OFFLOAD_HANDLE,
                flags: FopenFlags::FOPEN_DIRECT_IO,
            });
        }
        let flags = if self.uncached().remove(&i) {
            FopenFlags::empty()
        } else {
            FopenFlags::FOPEN_KEEP_CACHE
        };
        Ok(Opened {
            fh: REGULAR_HANDLE,
            flags,
        })
    }

    fn create(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        mode: u32,
    ) -> Answer<(Attr, Opened)> {
        let attr = self
            .lfs
            .create_open(InodeNo(parent), name, mode, caller.uid, caller.gid)
            .map_err(|e| lfs_errno(&e))?;
        // A new file: no process has a stream on it yet.
        let opened = Opened {
            fh: REGULAR_HANDLE,
            flags: FopenFlags::empty(),
        };
        Ok((attr, opened))
    }

    /// `direct`: the kernel named a lock owner (`FUSE_READ_LOCKOWNER`), which it does on every
    /// direct read and on no read for the page cache (a mapping's page fault, readahead).
    fn read(
        &self,
        caller: Caller,
        i: u64,
        fh: u64,
        offset: u64,
        size: u32,
        direct: bool,
    ) -> Answer<Vec<u8>> {
        if fh != OFFLOAD_HANDLE {
            return self
                .lfs
                .read(InodeNo(i), offset, size)
                .map_err(|e| lfs_errno(&e));
        }
        let path = if direct {
            ReadPath::Direct
        } else {
            ReadPath::PageCache
        };
        self.offload
            .read(caller, InodeNo(i), offset, size, path)
            .map_err(|e| offload_errno("read", &e))
    }

    /// `kill`: the writer has no `CAP_FSETID` (`FUSE_WRITE_KILL_SUIDGID`). Direct I/O writes
    /// do not strip set-id bits in the kernel: it asks us to, for every such writer, whatever
    /// was negotiated at init.
    fn write(
        &self,
        caller: Caller,
        i: u64,
        fh: u64,
        offset: u64,
        data: &[u8],
        kill: bool,
    ) -> Answer<u32> {
        let written = if fh == OFFLOAD_HANDLE {
            // Before and after: a regular open while the kernel runs may fill the cache with
            // the bytes as they were.
            self.uncached().insert(i);
            let written = self.offload.write(caller, InodeNo(i), offset, data, kill);
            self.uncached().insert(i);
            // The kernel's output may be longer than the write: from the offset on.
            self.invalidate.from(i, offset);
            written
        } else {
            self.lfs
                .write_as(InodeNo(i), offset, data, kill)
                .map_err(Into::into)
        };
        written.map_err(|e| offload_errno("write", &e))
    }

    /// close(2): the file's buffer goes to the device (not durable: that is fsync's), so a
    /// write that fails there is the closing process's error, not lost in release. A buffer
    /// that failed stays and is tried again, so the next fsync reports it too.
    fn flush(&self, i: u64) -> Answer<()> {
        self.lfs.flush(InodeNo(i)).map_err(|e| lfs_errno(&e))
    }

    fn release(&self, i: u64) -> Answer<()> {
        self.offload.sweep();
        self.lfs.release(InodeNo(i)).map_err(|e| lfs_errno(&e))
    }

    fn fsync(&self, i: u64, datasync: bool) -> Answer<()> {
        self.lfs
            .fsync(InodeNo(i), datasync)
            .map_err(|e| lfs_errno(&e))
    }

    fn opendir(&self, i: u64) -> Answer<Opened> {
        match self.getattr(i)? {
            a if a.kind == FileKind::Dir => Ok(Opened {
                fh: 0,
                flags: FopenFlags::empty(),
            }),
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn readdir(&self, i: u64, offset: u64) -> Answer<Vec<DirEntry>> {
        self.lfs
            .readdir(InodeNo(i), offset)
            .map_err(|e| lfs_errno(&e))
    }

    fn fsyncdir(&self) -> Answer<()> {
        self.lfs.sync().map_err(|e| lfs_errno(&e))
    }

    fn statfs(&self) -> Answer<StatFs> {
        self.lfs.statfs().map_err(|e| lfs_errno(&e))
    }

    /// Answers through `done`, maybe from another thread: an offload key is set in a thread
    /// of its own (see [`xattr::set`]).
    fn setxattr(
        &self,
        caller: Caller,
        i: u64,
        set: xattr::Set<'_>,
        done: impl FnOnce(Answer<()>) + Send + 'static,
    ) {
        xattr::set(&self.lfs, &self.offload, caller, InodeNo(i), set, done);
    }

    fn getxattr(&self, caller: Caller, i: u64, name: &[u8], size: u32) -> Answer<Xattr> {
        xattr::sized(
            size,
            xattr::get(&self.lfs, &self.offload, caller, InodeNo(i), name),
        )
    }

    fn listxattr(&self, i: u64, size: u32) -> Answer<Xattr> {
        xattr::sized(size, xattr::list(&self.lfs, InodeNo(i)))
    }

    fn removexattr(&self, caller: Caller, i: u64, name: &[u8]) -> Answer<()> {
        xattr::remove(&self.lfs, &self.offload, caller, InodeNo(i), name)
    }

    /// Only asked without default_permissions (`--no-permissions`), where access(2) always
    /// succeeds on a file that exists: with it, the kernel checks access(2) itself.
    fn access(&self, i: u64) -> Answer<()> {
        self.getattr(i).map(|_| ())
    }

    /// A log-structured file system cannot reserve blocks in place (see the module's rules).
    fn fallocate(&self) -> Answer<()> {
        Err(Errno::from_i32(libc::EOPNOTSUPP))
    }
}
