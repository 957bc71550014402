//! Namespace operations: lookup, create, mkdir, symlink, mknod, link, unlink, rmdir, readdir,
//! setattr, extended attributes, open and release. Each builds one transaction.

use super::dir::Entry;
use super::error::{LfsError, Result};
use super::format::{Record, NAME_MAX, SYMLINK_MAX, XATTR_VALUE_MAX};
use super::inode::{Attr, FileKind, InodeNo, SetAttr, Time, S_IFMT};
use super::meta::Inode;
use super::State;

/// Most links to one inode.
pub const LINK_MAX: u32 = 65_000;

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: InodeNo,
    /// Pass this back to continue the listing after this entry.
    pub offset: u64,
    pub kind: FileKind,
    pub name: Vec<u8>,
}

/// How setxattr treats an existing attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XattrMode {
    /// Create or replace.
    #[default]
    Any,
    /// Fail with [`LfsError::Exists`] if it exists (`XATTR_CREATE`).
    Create,
    /// Fail with [`LfsError::NoXattr`] if it does not (`XATTR_REPLACE`).
    Replace,
}

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

/// Checks a name for a directory entry.
pub(super) fn check_name(name: &[u8]) -> Result<()> {
    if name.len() > NAME_MAX {
        return Err(LfsError::NameTooLong);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(LfsError::InvalidArgument("not a valid file name"));
    }
    Ok(())
}

impl State {
    pub(super) fn inode(&self, ino: InodeNo) -> Result<&Inode> {
        self.meta.inode(ino).ok_or(LfsError::NotFound)
    }

    pub(super) fn lookup_entry(&self, parent: InodeNo, name: &[u8]) -> Result<Entry> {
        let dir = self.inode(parent)?.dir.as_ref().ok_or(LfsError::NotDir)?;
        if name.len() > NAME_MAX {
            return Err(LfsError::NameTooLong);
        }
        dir.get(name).ok_or(LfsError::NotFound)
    }

    /// The attributes of `ino` with its buffer flushed, for a change that must be logged
    /// together with directory entries (link counts).
    pub(super) fn settled(&mut self, ino: InodeNo) -> Result<Attr> {
        self.flush_file(ino)?;
        Ok(self.inode(ino)?.attr)
    }

    /// Changes attributes that need no ordering with other records (times, mode, owner):
    /// in the buffer if the file has one (logged when it is flushed), else as a record.
    pub(super) fn touch(&mut self, ino: InodeNo, f: impl FnOnce(&mut Attr)) -> Result<Vec<Record>> {
        if let Some(d) = self.buffers.get_mut(ino) {
            f(&mut d.attr);
            return Ok(Vec::new());
        }
        let mut attr = self.inode(ino)?.attr;
        f(&mut attr);
        Ok(vec![Record::Inode(attr)])
    }

    pub(super) fn lookup(&self, parent: InodeNo, name: &[u8]) -> Result<Attr> {
        let ino = match name {
            b"." => parent,
            b".." => self.inode(parent)?.attr.parent,
            _ => self.lookup_entry(parent, name)?.ino,
        };
        self.attr(ino)
    }

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

    pub(super) fn readlink(&self, ino: InodeNo) -> Result<Vec<u8>> {
        let inode = self.inode(ino)?;
        if inode.attr.kind != FileKind::Symlink {
            return Err(LfsError::InvalidArgument("not a symbolic link"));
        }
        Ok(inode.target.clone())
    }

    pub(super) fn link(&mut self, ino: InodeNo, parent: InodeNo, name: &[u8]) -> Result<Attr> {
        check_name(name)?;
        let attr = self.attr(ino)?;
        if attr.kind == FileKind::Dir {
            return Err(LfsError::NotPermitted);
        }
        let pattr = self.inode(parent)?.attr;
        let dir = self.inode(parent)?.dir.as_ref().ok_or(LfsError::NotDir)?;
        if dir.get(name).is_some() {
            return Err(LfsError::Exists);
        }
        if attr.nlink >= LINK_MAX {
            return Err(LfsError::TooManyLinks);
        }
        let cookie = dir.next_cookie();
        let mut attr = self.settled(ino)?;
        let now = Time::now();
        attr.nlink += 1;
        attr.ctime = now;
        let mut p = pattr;
        p.mtime = now;
        p.ctime = now;
        self.commit(vec![
            Record::DirAdd {
                dir: parent,
                cookie,
                child: ino,
                kind: attr.kind,
                name: name.to_vec(),
            },
            Record::Inode(attr),
            Record::Inode(p),
        ])?;
        Ok(attr)
    }

    /// Records that drop one link of non-directory `ino`: frees it when no link and no open
    /// handle is left.
    pub(super) fn drop_link(&mut self, ino: InodeNo, now: Time) -> Result<Vec<Record>> {
        let open = self.buffers.open_count(ino);
        let nlink = self.attr(ino)?.nlink;
        if nlink <= 1 && open == 0 {
            self.buffers.take(ino);
            return Ok(vec![Record::Free { ino }]);
        }
        let mut attr = self.settled(ino)?;
        attr.nlink = attr.nlink.saturating_sub(1);
        attr.ctime = now;
        Ok(vec![Record::Inode(attr)])
    }

    pub(super) fn unlink(&mut self, parent: InodeNo, name: &[u8]) -> Result<()> {
        let entry = self.lookup_entry(parent, name)?;
        if entry.kind == FileKind::Dir {
            return Err(LfsError::IsDir);
        }
        let now = Time::now();
        let mut records = vec![Record::DirRemove {
            dir: parent,
            name: name.to_vec(),
        }];
        records.extend(self.drop_link(entry.ino, now)?);
        let mut p = self.inode(parent)?.attr;
        p.mtime = now;
        p.ctime = now;
        records.push(Record::Inode(p));
        self.commit(records)
    }

    pub(super) fn rmdir(&mut self, parent: InodeNo, name: &[u8]) -> Result<()> {
        match name {
            b"." => return Err(LfsError::InvalidArgument("cannot remove \".\"")),
            b".." => return Err(LfsError::NotEmpty),
            _ => {}
        }
        let entry = self.lookup_entry(parent, name)?;
        if entry.kind != FileKind::Dir {
            return Err(LfsError::NotDir);
        }
        if self
            .inode(entry.ino)?
            .dir
            .as_ref()
            .is_some_and(|d| !d.is_empty())
        {
            return Err(LfsError::NotEmpty);
        }
        let now = Time::now();
        let mut p = self.inode(parent)?.attr;
        p.nlink -= 1;
        p.mtime = now;
        p.ctime = now;
        self.commit(vec![
            Record::DirRemove {
                dir: parent,
                name: name.to_vec(),
            },
            Record::Free { ino: entry.ino },
            Record::Inode(p),
        ])
    }

    pub(super) fn readdir(&self, ino: InodeNo, offset: u64) -> Result<Vec<DirEntry>> {
        let inode = self.inode(ino)?;
        let dir = inode.dir.as_ref().ok_or(LfsError::NotDir)?;
        let mut out = Vec::new();
        if offset < 1 {
            out.push(DirEntry {
                ino,
                offset: 1,
                kind: FileKind::Dir,
                name: b".".to_vec(),
            });
        }
        if offset < 2 {
            let parent = inode.attr.parent;
            out.push(DirEntry {
                ino: parent,
                offset: 2,
                kind: FileKind::Dir,
                name: b"..".to_vec(),
            });
        }
        for (name, e) in dir.after(offset.max(2)) {
            out.push(DirEntry {
                ino: e.ino,
                offset: e.cookie,
                kind: e.kind,
                name: name.to_vec(),
            });
        }
        Ok(out)
    }

    pub(super) fn setattr(&mut self, ino: InodeNo, set: SetAttr) -> Result<Attr> {
        let attr = self.attr(ino)?;
        if let Some(size) = set.size {
            match attr.kind {
                FileKind::File => self.truncate(ino, size)?,
                FileKind::Dir => return Err(LfsError::IsDir),
                _ => return Err(LfsError::InvalidArgument("not a regular file")),
            }
        }
        let now = Time::now();
        let records = self.touch(ino, |a| {
            if let Some(mode) = set.mode {
                a.perm = (mode & 0o7777) as u16;
            }
            if let Some(uid) = set.uid {
                a.uid = uid;
            }
            if let Some(gid) = set.gid {
                a.gid = gid;
            }
            if let Some(t) = set.atime {
                a.atime = t;
            }
            if let Some(t) = set.mtime {
                a.mtime = t;
            }
            a.ctime = now;
        })?;
        self.commit(records)?;
        self.attr(ino)
    }

    pub(super) fn setxattr(
        &mut self,
        ino: InodeNo,
        name: &[u8],
        value: &[u8],
        mode: XattrMode,
    ) -> Result<()> {
        if name.is_empty() {
            return Err(LfsError::InvalidArgument("an empty attribute name"));
        }
        if name.len() > NAME_MAX {
            return Err(LfsError::NameTooLong);
        }
        if value.len() > XATTR_VALUE_MAX {
            return Err(LfsError::InvalidArgument("an attribute value over 64 KiB"));
        }
        let exists = self.inode(ino)?.xattrs.contains_key(name);
        match mode {
            XattrMode::Create if exists => return Err(LfsError::Exists),
            XattrMode::Replace if !exists => return Err(LfsError::NoXattr),
            _ => {}
        }
        if self.used_blocks() + 1 > self.capacity_blocks() {
            return Err(LfsError::NoSpace);
        }
        let now = Time::now();
        let mut records = vec![Record::XattrSet {
            ino,
            name: name.to_vec(),
            value: value.to_vec(),
        }];
        records.extend(self.touch(ino, |a| a.ctime = now)?);
        self.commit(records)
    }

    pub(super) fn getxattr(&self, ino: InodeNo, name: &[u8]) -> Result<Vec<u8>> {
        self.inode(ino)?
            .xattrs
            .get(name)
            .cloned()
            .ok_or(LfsError::NoXattr)
    }

    pub(super) fn listxattr(&self, ino: InodeNo) -> Result<Vec<Vec<u8>>> {
        Ok(self.inode(ino)?.xattrs.keys().cloned().collect())
    }

    pub(super) fn removexattr(&mut self, ino: InodeNo, name: &[u8]) -> Result<()> {
        if !self.inode(ino)?.xattrs.contains_key(name) {
            return Err(LfsError::NoXattr);
        }
        let now = Time::now();
        let mut records = vec![Record::XattrRemove {
            ino,
            name: name.to_vec(),
        }];
        records.extend(self.touch(ino, |a| a.ctime = now)?);
        self.commit(records)
    }

    pub(super) fn open(&mut self, ino: InodeNo) -> Result<()> {
        self.inode(ino)?;
        self.buffers.open(ino);
        Ok(())
    }

    /// Closes one handle: the file's buffer is flushed, and an unlinked file with no handle
    /// left is freed.
    pub(super) fn release(&mut self, ino: InodeNo) -> Result<()> {
        let count = self.buffers.close(ino)?;
        let Ok(attr) = self.attr(ino) else {
            return Ok(());
        };
        if attr.nlink == 0 && count == 1 {
            self.buffers.take(ino);
            return self.commit(vec![Record::Free { ino }]);
        }
        if attr.kind == FileKind::File {
            self.flush_file(ino)?;
        }
        Ok(())
    }
}
