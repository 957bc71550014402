//! Conversions between the file system's types and FUSE's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo, Request, TimeOrNow};

use crate::lfs::{Attr, FileKind, Time};
use crate::offload::keys::Caller;

pub(super) fn system_time(t: Time) -> SystemTime {
    if t.sec >= 0 {
        UNIX_EPOCH + Duration::new(t.sec as u64, t.nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs()) + Duration::from_nanos(t.nsec.into())
    }
}

pub(super) fn file_type(kind: FileKind) -> FileType {
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

/// The file type bits of a mode (`S_IFREG`, ...).
pub(super) fn kind_bits(kind: FileKind) -> u32 {
    match kind {
        FileKind::File => libc::S_IFREG,
        FileKind::Dir => libc::S_IFDIR,
        FileKind::Symlink => libc::S_IFLNK,
        FileKind::Fifo => libc::S_IFIFO,
        FileKind::CharDevice => libc::S_IFCHR,
        FileKind::BlockDevice => libc::S_IFBLK,
        FileKind::Socket => libc::S_IFSOCK,
    }
}

pub(super) fn file_attr(a: &Attr) -> FileAttr {
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

pub(super) fn time(t: TimeOrNow) -> Time {
    match t {
        TimeOrNow::Now => Time::now(),
        TimeOrNow::SpecificTime(t) => Time::from(t),
    }
}

pub(super) fn caller(req: &Request) -> Caller {
    Caller {
        tid: req.pid(),
        uid: req.uid(),
        gid: req.gid(),
    }
}

/// Whether thread `tid` (a FUSE request's caller) has `CAP_FSETID` (it may keep set-ID bits
/// when it truncates), from its effective capabilities in `/proc`. The kernel asks about the
/// initial user namespace: a caller in another namespace than this process's (root in a
/// rootless container) has not, nor has a thread that cannot be looked at any more.
pub(super) fn has_fsetid(tid: u32) -> bool {
    const CAP_FSETID: u32 = 4;
    let proc = format!("/proc/{tid}");
    let namespace = |dir: &str| std::fs::read_link(format!("{dir}/ns/user")).ok();
    let same_namespace = namespace(&proc).is_some_and(|ns| Some(ns) == namespace("/proc/self"));
    same_namespace
        && std::fs::read_to_string(format!("{proc}/status"))
            .ok()
            .and_then(|status| {
                let caps = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
                u64::from_str_radix(caps.trim(), 16).ok()
            })
            .is_some_and(|caps| caps & (1 << CAP_FSETID) != 0)
}
