//! Namespace operations: lookup, readlink, link, unlink, rmdir, readdir, setattr, open and
//! release, and the helpers the other operations share (inode and entry lookups, name checks,
//! attribute changes). Each change builds one transaction; making inodes is
//! [`crate::create`], rename [`crate::rename`], extended attributes [`crate::xattr`].

use super::dir::Entry;
use super::error::{LfsError, Result};
use super::format::{Record, NAME_MAX};
use super::inode::{Attr, FileKind, InodeNo, SetAttr, Time};
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
        if let Some(attr) = self.buffers.attr_mut(ino) {
            f(attr);
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
        let chown = set.uid.is_some() || set.gid.is_some();
        let kill = set.mode.is_none()
            && ((chown && attr.kind != FileKind::Dir) || (set.size.is_some() && !set.fsetid));
        let records = self.touch(ino, |a| {
            if let Some(mode) = set.mode {
                a.perm = (mode & 0o7777) as u16;
            }
            if kill {
                a.kill_suid_sgid();
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
