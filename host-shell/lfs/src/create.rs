//! Making inodes: regular files, directories, symbolic links and special files (FIFOs,
//! sockets, device nodes), each a new inode and its entry in one transaction.

use crate::error::{LfsError, Result};
use crate::format::{Record, SYMLINK_MAX};
use crate::inode::{Attr, FileKind, InodeNo, Time, S_IFMT};
use crate::ops::{check_name, LINK_MAX};
use crate::State;

/// What a new inode holds besides its attributes.
#[derive(Debug, Clone, Copy)]
enum Body<'a> {
    /// Nothing: a file, directory, FIFO or socket.
    Empty,
    /// A symbolic link's target.
    Target(&'a [u8]),
    /// A device node's device number.
    Device(u32),
}

impl State {
    /// Creates `name` in `parent` as a new inode of `kind`.
    fn make(
        &mut self,
        parent: InodeNo,
        name: &[u8],
        kind: FileKind,
        perm: u32,
        owner: (u32, u32),
        body: Body<'_>,
    ) -> Result<Attr> {
        if name == b"." || name == b".." {
            return Err(LfsError::Exists);
        }
        check_name(name)?;
        let pattr = self.inode(parent)?.attr;
        let dir = self.inode(parent)?.dir.as_ref().ok_or(LfsError::NotDir)?;
        if dir.get(name).is_some() {
            return Err(LfsError::Exists);
        }
        if self.used_blocks() + 1 > self.capacity_blocks() {
            return Err(LfsError::NoSpace);
        }
        let cookie = dir.next_cookie();
        if kind == FileKind::Dir && pattr.nlink >= LINK_MAX {
            return Err(LfsError::TooManyLinks);
        }
        let now = Time::now();
        let ino = self.meta.next_ino();
        let (target, rdev) = match body {
            Body::Empty => (None, 0),
            Body::Target(t) => (Some(t), 0),
            Body::Device(rdev) => (None, rdev),
        };
        let attr = Attr {
            ino,
            kind,
            perm: (perm & 0o7777) as u16,
            uid: owner.0,
            gid: owner.1,
            nlink: if kind == FileKind::Dir { 2 } else { 1 },
            size: target.map_or(0, |t| t.len() as u64),
            atime: now,
            mtime: now,
            ctime: now,
            parent: if kind == FileKind::Dir {
                parent
            } else {
                InodeNo(0)
            },
            rdev,
        };
        let mut records = vec![Record::Inode(attr)];
        if let Some(target) = target {
            records.push(Record::Symlink {
                ino,
                target: target.to_vec(),
            });
        }
        records.push(Record::DirAdd {
            dir: parent,
            cookie,
            child: ino,
            kind,
            name: name.to_vec(),
        });
        let mut p = pattr;
        p.mtime = now;
        p.ctime = now;
        if kind == FileKind::Dir {
            p.nlink += 1;
        }
        records.push(Record::Inode(p));
        self.commit(records)?;
        Ok(attr)
    }

    /// Creates a regular file; `mode`'s type bits must be `S_IFREG` or none.
    pub(super) fn create(
        &mut self,
        parent: InodeNo,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Attr> {
        if mode & S_IFMT != 0 && FileKind::from_mode(mode) != Some(FileKind::File) {
            return Err(LfsError::InvalidArgument("create makes regular files only"));
        }
        self.make(parent, name, FileKind::File, mode, (uid, gid), Body::Empty)
    }

    /// Creates a regular file, FIFO, socket or device node, the kind named by `mode`'s type
    /// bits (none means a regular file, as mknod(2) has it). `rdev` is kept for device nodes
    /// and ignored for the other kinds.
    pub(super) fn mknod(
        &mut self,
        parent: InodeNo,
        name: &[u8],
        mode: u32,
        rdev: u32,
        owner: (u32, u32),
    ) -> Result<Attr> {
        let kind = match mode & S_IFMT {
            0 => FileKind::File,
            _ => FileKind::from_mode(mode)
                .filter(|k| *k == FileKind::File || k.is_special())
                .ok_or(LfsError::InvalidArgument(
                    "mknod makes regular files, FIFOs, sockets and device nodes only",
                ))?,
        };
        let body = if kind.is_device() {
            Body::Device(rdev)
        } else {
            Body::Empty
        };
        self.make(parent, name, kind, mode, owner, body)
    }

    pub(super) fn mkdir(
        &mut self,
        parent: InodeNo,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Attr> {
        self.make(parent, name, FileKind::Dir, mode, (uid, gid), Body::Empty)
    }

    pub(super) fn symlink(
        &mut self,
        parent: InodeNo,
        name: &[u8],
        target: &[u8],
        uid: u32,
        gid: u32,
    ) -> Result<Attr> {
        if target.is_empty() {
            return Err(LfsError::NotFound);
        }
        if target.len() > SYMLINK_MAX {
            return Err(LfsError::NameTooLong);
        }
        self.make(
            parent,
            name,
            FileKind::Symlink,
            0o777,
            (uid, gid),
            Body::Target(target),
        )
    }
}
