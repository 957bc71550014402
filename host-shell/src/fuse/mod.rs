//! The FUSE mount: a thin [`fuser::Filesystem`] over [`Lfs`], the offload keys
//! ([`offload`]) and the session around them ([`serve`]).
//!
//! Each method calls one typed function (of [`Lfs`], or of [`Offload`] for the data path and
//! the `user.csd.*` keys, which falls through to [`Lfs`]) and converts its error once.
//!
//! Decisions (docs/ARCHITECTURE.md, "The mount"):
//! - Permissions: the kernel checks them (`default_permissions`) against the attributes
//!   getattr returns and the caller's full credentials (supplementary groups included), for
//!   every operation: lookup, open, create, unlink, rename, chmod/chown/utimes, sticky
//!   directories, `access(2)` and xattrs. `--no-permissions` mounts without it (and
//!   `access` then always succeeds). Offload paths are resolved here, so they are checked
//!   here: search permission on every directory and read permission on the kernel file.
//! - Every file is opened with `FOPEN_DIRECT_IO`: the offload state of a process may be set
//!   after it opened the file, and the page cache is shared by all processes of an inode,
//!   so no read may ever be served from it. Shared mmap is allowed where the kernel offers
//!   `FUSE_DIRECT_IO_ALLOW_MMAP`; mappings fill the page cache, so a process with a read
//!   stream is refused the reads that fill it (see [`ReadPath`]).
//! - fallocate answers `EOPNOTSUPP`: a log-structured file system cannot reserve blocks in
//!   place, and glibc's `posix_fallocate` then writes zeros itself, which does reserve them.

mod offload;
mod process;

pub use offload::{parse_args, Caller, LinkCounters, Offload, OffloadError, ReadPath};

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};

use crate::lfs::{Attr, FileKind, InodeNo, Lfs, LfsError, RenameFlags, SetAttr, Time, XattrMode};

/// How long the kernel may cache attributes and names (this mount is their only writer).
const TTL: Duration = Duration::from_secs(1);
/// Largest read and write request.
const MAX_IO_BYTES: u32 = 1 << 20;

/// One line in the daemon log (stderr), naming the mount's process.
pub fn log(message: impl std::fmt::Display) {
    eprintln!("csd mount[{}]: {message}", std::process::id());
}

/// How a mount behaves.
#[derive(Debug, Clone)]
pub struct MountConfig {
    /// Let users other than the one mounting use it (`allow_other`).
    pub allow_other: bool,
    /// Check permissions (`default_permissions`).
    pub permissions: bool,
    /// Fuel of each kernel run (0: the device's default).
    pub fuel: u64,
    /// FUSE worker threads.
    pub threads: usize,
    /// How often the background thread looks for cleaning to do.
    pub gc_interval: Duration,
}

impl Default for MountConfig {
    fn default() -> Self {
        MountConfig {
            allow_other: false,
            permissions: true,
            fuel: 1 << 32,
            threads: 2,
            gc_interval: Duration::from_millis(500),
        }
    }
}

/// The file system FUSE calls.
#[derive(Debug)]
pub struct CsdFs {
    lfs: Arc<Lfs>,
    offload: Arc<Offload>,
}

fn errno(code: i32) -> Errno {
    Errno::from_i32(code)
}

fn lfs_errno(e: &LfsError) -> Errno {
    if matches!(
        e,
        LfsError::Io(_) | LfsError::Corrupted(_) | LfsError::LogicBug(_)
    ) {
        log(format_args!("file system error: {e}"));
    }
    errno(e.errno())
}

fn offload_errno(what: &str, e: &OffloadError) -> Errno {
    if e.worth_logging() {
        log(format_args!("{what}: {e} (errno {})", e.errno()));
    }
    errno(e.errno())
}

fn system_time(t: Time) -> SystemTime {
    if t.sec >= 0 {
        UNIX_EPOCH + Duration::new(t.sec as u64, t.nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs()) + Duration::from_nanos(t.nsec.into())
    }
}

fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::Socket => FileType::Socket,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino.0),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: system_time(a.atime),
        mtime: system_time(a.mtime),
        ctime: system_time(a.ctime),
        crtime: system_time(a.ctime),
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: 4096,
        flags: 0,
    }
}

fn time(t: TimeOrNow) -> Time {
    match t {
        TimeOrNow::Now => Time::now(),
        TimeOrNow::SpecificTime(t) => Time::from(t),
    }
}

fn ino(i: INodeNo) -> InodeNo {
    InodeNo(i.0)
}

fn caller(req: &Request) -> Caller {
    Caller {
        tid: req.pid(),
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn is_offload_key(name: &[u8]) -> bool {
    name.starts_with(offload::PREFIX)
}

/// Only the `user.` namespace is stored; the others belong to the kernel's security modules.
fn is_user_xattr(name: &[u8]) -> bool {
    name.starts_with(b"user.")
}

fn reply_entry(reply: ReplyEntry, result: Result<Attr, LfsError>) {
    match result {
        Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
        Err(e) => reply.error(lfs_errno(&e)),
    }
}

fn reply_empty<E>(reply: ReplyEmpty, result: Result<(), E>, conv: impl FnOnce(&E) -> Errno) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(conv(&e)),
    }
}

fn reply_xattr<E>(
    reply: ReplyXattr,
    size: u32,
    result: Result<Vec<u8>, E>,
    conv: impl FnOnce(&E) -> Errno,
) {
    match result {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(conv(&e)),
    }
}

impl CsdFs {
    pub fn new(lfs: Arc<Lfs>, offload: Arc<Offload>) -> CsdFs {
        CsdFs { lfs, offload }
    }
}

impl fuser::Filesystem for CsdFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_IO_BYTES);
        let _ = config.set_max_readahead(MAX_IO_BYTES);
        let _ = config.add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP);
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
        _req: &Request,
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

    fn open(&self, _req: &Request, i: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.lfs.open(ino(i)) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(lfs_errno(&e)),
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
            Ok(a) => reply.created(
                &TTL,
                &file_attr(&a),
                Generation(0),
                FileHandle(0),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(lfs_errno(&e)),
        }
    }

    fn read(
        &self,
        req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
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
        _fh: FileHandle,
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
        match self.offload.write(caller(req), ino(i), offset, data, kill) {
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
        let name = name.as_bytes();
        if is_offload_key(name) {
            let set = self.offload.setxattr(caller(req), ino(i), name, value);
            let what = format!(
                "setxattr {} on inode {}",
                String::from_utf8_lossy(name),
                i.0
            );
            return reply_empty(reply, set, |e| offload_errno(&what, e));
        }
        if !is_user_xattr(name) {
            return reply.error(Errno::from_i32(libc::EOPNOTSUPP));
        }
        let mode = if flags & libc::XATTR_CREATE != 0 {
            XattrMode::Create
        } else if flags & libc::XATTR_REPLACE != 0 {
            XattrMode::Replace
        } else {
            XattrMode::Any
        };
        reply_empty(
            reply,
            self.lfs.setxattr(ino(i), name, value, mode),
            lfs_errno,
        );
    }

    fn getxattr(&self, req: &Request, i: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let name = name.as_bytes();
        if is_offload_key(name) {
            let got = self.offload.getxattr(caller(req), ino(i), name);
            return reply_xattr(reply, size, got, |e| offload_errno("getxattr", e));
        }
        if !is_user_xattr(name) {
            return reply.error(Errno::from_i32(libc::ENODATA));
        }
        reply_xattr(reply, size, self.lfs.getxattr(ino(i), name), lfs_errno);
    }

    fn listxattr(&self, _req: &Request, i: INodeNo, size: u32, reply: ReplyXattr) {
        let names = self.lfs.listxattr(ino(i)).map(|names| {
            names
                .into_iter()
                .flat_map(|mut n| {
                    n.push(0);
                    n
                })
                .collect::<Vec<u8>>()
        });
        reply_xattr(reply, size, names, lfs_errno);
    }

    fn removexattr(&self, req: &Request, i: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.as_bytes();
        if is_offload_key(name) {
            let removed = self.offload.removexattr(caller(req), ino(i), name);
            return reply_empty(reply, removed, |e| offload_errno("removexattr", e));
        }
        if !is_user_xattr(name) {
            return reply.error(Errno::from_i32(libc::ENODATA));
        }
        reply_empty(reply, self.lfs.removexattr(ino(i), name), lfs_errno);
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

/// Why a mount could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("could not mount the file system: {0}")]
    Lfs(#[from] LfsError),
    #[error("could not mount on {path}: {source}")]
    Mount {
        path: String,
        source: std::io::Error,
    },
    #[error("the FUSE session failed: {0}")]
    Session(std::io::Error),
    #[error("could not start the cleaner thread: {0}")]
    Thread(std::io::Error),
    #[error("the file system did not unmount cleanly: {0}")]
    Unmount(LfsError),
    #[error("the thread serving the mount panicked")]
    Panicked,
}

/// A mount served by a thread of this process (the demo, the benchmarks): unmounts, and waits
/// for the file system's checkpoint, in [`Background::finish`] or when dropped.
#[derive(Debug)]
pub struct Background {
    unmounter: fuser::SessionUnmounter,
    session: Option<std::thread::JoinHandle<Result<(), ServeError>>>,
}

impl Background {
    /// Serves `mounted` in a new thread.
    pub fn serve(mut mounted: Mounted) -> Result<Background, ServeError> {
        let unmounter = mounted.unmounter();
        let session = std::thread::Builder::new()
            .name("csd-mount".into())
            .spawn(move || mounted.run())
            .map_err(ServeError::Thread)?;
        Ok(Background {
            unmounter,
            session: Some(session),
        })
    }

    /// Unmounts and waits until the file system has checkpointed.
    pub fn finish(mut self) -> Result<(), ServeError> {
        self.unmounter.unmount().map_err(ServeError::Session)?;
        match self.session.take().map(std::thread::JoinHandle::join) {
            Some(Ok(served)) => served,
            Some(Err(_)) => Err(ServeError::Panicked),
            None => Ok(()),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            if let Err(e) = self.unmounter.unmount() {
                log(format_args!("could not unmount: {e}"));
            }
            if !matches!(session.join(), Ok(Ok(()))) {
                log("the mount did not end cleanly");
            }
        }
    }
}

/// A mounted session, running until it is unmounted.
pub struct Mounted {
    session: fuser::Session<CsdFs>,
    lfs: Arc<Lfs>,
    offload: Arc<Offload>,
    gc_interval: Duration,
}

impl std::fmt::Debug for Mounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mounted").finish_non_exhaustive()
    }
}

/// Mounts the file system on the device behind `driver` at `mountpoint`. The mount is live
/// when this returns; [`Mounted::run`] serves it.
pub fn mount(
    driver: &crate::driver::Driver,
    mountpoint: &Path,
    config: &MountConfig,
    link: LinkCounters,
) -> Result<Mounted, ServeError> {
    let lfs = Arc::new(Lfs::mount(driver)?);
    lfs.report_halt_with(|halted| log(halted));
    let offload = Arc::new(Offload::new(
        Arc::clone(&lfs),
        driver.clone(),
        &firmware::controller::ProgramConfig::default(),
        config.fuel,
        config.permissions,
        link,
    ));
    let fs = CsdFs::new(Arc::clone(&lfs), Arc::clone(&offload));
    let mut options = vec![
        fuser::MountOption::FSName("csd".into()),
        fuser::MountOption::Subtype("csd".into()),
    ];
    if config.permissions {
        options.push(fuser::MountOption::DefaultPermissions);
    }
    let mut fuse_config = fuser::Config::default();
    fuse_config.mount_options = options;
    fuse_config.n_threads = Some(config.threads.max(1));
    fuse_config.acl = if config.allow_other {
        fuser::SessionACL::All
    } else {
        fuser::SessionACL::Owner
    };
    let session = match fuser::Session::new(fs, mountpoint, &fuse_config) {
        Ok(s) => s,
        Err(source) => {
            // Nothing was served: give the device back as it was.
            let unmounted = Arc::try_unwrap(lfs).map(Lfs::unmount);
            if let Ok(Err(e)) = unmounted {
                log(format_args!("unmounting after a failed mount: {e}"));
            }
            return Err(ServeError::Mount {
                path: mountpoint.display().to_string(),
                source,
            });
        }
    };
    Ok(Mounted {
        session,
        lfs,
        offload,
        gc_interval: config.gc_interval,
    })
}

impl Mounted {
    /// Something that unmounts the session from another thread (a signal handler thread).
    pub fn unmounter(&mut self) -> fuser::SessionUnmounter {
        self.session.unmount_callable()
    }

    /// Serves requests until the mount goes away (`fusermount3 -u`, or the unmounter), then
    /// ends every offload, stops the cleaner, logs the file system's counters of this mount
    /// (`file system counters: data_write_blocks=.. gc_zones=.. ...`) and unmounts the file
    /// system (a checkpoint).
    pub fn run(self) -> Result<(), ServeError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let gc_lfs = Arc::clone(&self.lfs);
        let gc_offload = Arc::clone(&self.offload);
        let interval = self.gc_interval;
        let cleaner = std::thread::Builder::new()
            .name("csd-cleaner".into())
            .spawn(move || cleaner(&gc_lfs, &gc_offload, interval, &stopped))
            .map_err(ServeError::Thread)?;
        let served = self.session.run();
        drop(stop);
        if cleaner.join().is_err() {
            log("the cleaner thread panicked");
        }
        self.offload.shutdown();
        drop(self.offload);
        let lfs = Arc::try_unwrap(self.lfs).map_err(|_| {
            ServeError::Unmount(LfsError::LogicBug(
                "the file system is still shared after the session ended".into(),
            ))
        })?;
        match lfs.stats() {
            Ok(s) => log(format_args!(
                "file system counters: data_write_blocks={} data_read_blocks={} meta_blocks={} \
                 gc_zones={} gc_moved_blocks={} zone_resets={} checkpoints={} \
                 snapshots_reclaimed={}",
                s.data_write_blocks,
                s.data_read_blocks,
                s.meta_blocks,
                s.gc_zones,
                s.gc_moved_blocks,
                s.zone_resets,
                s.checkpoints,
                s.snapshots_reclaimed
            )),
            Err(e) => log(format_args!("file system counters: {e}")),
        }
        let unmounted = lfs.unmount().map_err(ServeError::Unmount);
        served.map_err(ServeError::Session)?;
        unmounted
    }
}

/// The background thread: reclaims the offload state of exited processes and cleans zones
/// ahead of need while free zones run low, until `stop` is dropped.
fn cleaner(lfs: &Lfs, offload: &Offload, interval: Duration, stop: &mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(interval) {
        offload.sweep();
        loop {
            match lfs.wants_cleaning() {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    log(format_args!("cleaner: {e}"));
                    break;
                }
            }
            match lfs.gc_step() {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    log(format_args!("cleaner: {e}"));
                    break;
                }
            }
            if !matches!(stop.try_recv(), Err(mpsc::TryRecvError::Empty)) {
                return;
            }
        }
    }
}
