//! Requests read from `/dev/fuse` by fuser's workers: each method takes fuser's arguments,
//! runs the operation of [`CsdFs`] and replies. Init is here too, whichever way the other
//! requests then arrive.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    FileHandle, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::attr::{caller, file_attr, file_type, time};
use super::{Answer, CsdFs, Opened, Xattr, MAX_IO_BYTES, TTL};
use crate::lfs::{Attr, SetAttr};

fn entry(reply: ReplyEntry, answer: Answer<Attr>) {
    match answer {
        Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn attr(reply: ReplyAttr, answer: Answer<Attr>) {
    match answer {
        Ok(a) => reply.attr(&TTL, &file_attr(&a)),
        Err(e) => reply.error(e),
    }
}

fn empty(reply: ReplyEmpty, answer: Answer<()>) {
    match answer {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn data(reply: ReplyData, answer: Answer<Vec<u8>>) {
    match answer {
        Ok(d) => reply.data(&d),
        Err(e) => reply.error(e),
    }
}

fn opened(reply: ReplyOpen, answer: Answer<Opened>) {
    match answer {
        Ok(o) => reply.opened(FileHandle(o.fh), o.flags),
        Err(e) => reply.error(e),
    }
}

fn xattr(reply: ReplyXattr, answer: Answer<Xattr>) {
    match answer {
        Ok(Xattr::Size(n)) => reply.size(n),
        Ok(Xattr::Value(v)) => reply.data(&v),
        Err(e) => reply.error(e),
    }
}

/// The file system as fuser serves it.
#[derive(Debug)]
pub(super) struct Dev {
    pub(super) fs: Arc<CsdFs>,
    /// Ask for FUSE over io_uring at init, if the kernel offers it.
    pub(super) want_io_uring: bool,
    /// Set at init when the kernel agreed: its requests then wait for the io_uring queues.
    pub(super) io_uring_agreed: Arc<AtomicBool>,
}

impl fuser::Filesystem for Dev {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if self.want_io_uring
            && config
                .capabilities()
                .contains(InitFlags::FUSE_OVER_IO_URING)
            && super::ring::available()
            && config
                .add_capabilities(InitFlags::FUSE_OVER_IO_URING)
                .is_ok()
        {
            self.io_uring_agreed.store(true, Ordering::Release);
        }
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
        entry(reply, self.fs.lookup(parent.0, name.as_bytes()));
    }

    fn getattr(&self, _req: &Request, i: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        attr(reply, self.fs.getattr(i.0));
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
        let change = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time),
            mtime: mtime.map(time),
            fsetid: false,
        };
        attr(reply, self.fs.setattr(caller(req), i.0, change));
    }

    fn readlink(&self, _req: &Request, i: INodeNo, reply: ReplyData) {
        data(reply, self.fs.readlink(i.0));
    }

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
        let made = self
            .fs
            .mknod(caller(req), parent.0, name.as_bytes(), mode & !umask, rdev);
        entry(reply, made);
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
        let made = self
            .fs
            .mkdir(caller(req), parent.0, name.as_bytes(), mode & !umask);
        entry(reply, made);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.fs.unlink(parent.0, name.as_bytes()));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.fs.rmdir(parent.0, name.as_bytes()));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let made = self.fs.symlink(
            caller(req),
            parent.0,
            link_name.as_bytes(),
            target.as_os_str().as_bytes(),
        );
        entry(reply, made);
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
        let renamed = self.fs.rename(
            parent.0,
            name.as_bytes(),
            newparent.0,
            newname.as_bytes(),
            flags.bits(),
        );
        empty(reply, renamed);
    }

    fn link(
        &self,
        _req: &Request,
        i: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        entry(reply, self.fs.link(i.0, newparent.0, newname.as_bytes()));
    }

    fn open(&self, req: &Request, i: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        opened(reply, self.fs.open(caller(req), i.0));
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
        match self
            .fs
            .create(caller(req), parent.0, name.as_bytes(), mode & !umask)
        {
            Ok((a, o)) => reply.created(
                &TTL,
                &file_attr(&a),
                Generation(0),
                FileHandle(o.fh),
                o.flags,
            ),
            Err(e) => reply.error(e),
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
        let direct = lock_owner.is_some();
        data(
            reply,
            self.fs.read(caller(req), i.0, fh.0, offset, size, direct),
        );
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
        let kill = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        match self.fs.write(caller(req), i.0, fh.0, offset, data, kill) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
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
        empty(reply, self.fs.flush(i.0));
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
        empty(reply, self.fs.release(i.0));
    }

    fn fsync(
        &self,
        _req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.fs.fsync(i.0, datasync));
    }

    fn opendir(&self, _req: &Request, i: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        opened(reply, self.fs.opendir(i.0));
    }

    fn readdir(
        &self,
        _req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.fs.readdir(i.0, offset) {
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
            Err(e) => reply.error(e),
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
        empty(reply, self.fs.fsyncdir());
    }

    fn statfs(&self, _req: &Request, _i: INodeNo, reply: ReplyStatfs) {
        match self.fs.statfs() {
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
            Err(e) => reply.error(e),
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
        let set = super::xattr::Set {
            name: name.as_bytes(),
            value,
            flags,
        };
        // A reply dropped unsent (no thread for an offload key) is answered EIO by fuser.
        self.fs
            .setxattr(caller(req), i.0, set, move |answer| empty(reply, answer));
    }

    fn getxattr(&self, req: &Request, i: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        xattr(
            reply,
            self.fs.getxattr(caller(req), i.0, name.as_bytes(), size),
        );
    }

    fn listxattr(&self, _req: &Request, i: INodeNo, size: u32, reply: ReplyXattr) {
        xattr(reply, self.fs.listxattr(i.0, size));
    }

    fn removexattr(&self, req: &Request, i: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(
            reply,
            self.fs.removexattr(caller(req), i.0, name.as_bytes()),
        );
    }

    fn access(&self, _req: &Request, i: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        empty(reply, self.fs.access(i.0));
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
        empty(reply, self.fs.fallocate());
    }
}
