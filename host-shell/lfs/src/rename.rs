//! rename(2) with RENAME_NOREPLACE and RENAME_EXCHANGE, as one transaction.

use std::collections::BTreeMap;

use super::error::{LfsError, Result};
use super::format::Record;
use super::inode::{Attr, FileKind, InodeNo, Time};
use super::ops::check_name;
use super::State;

/// rename flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RenameFlags {
    /// Fail with [`LfsError::Exists`] if the new name exists.
    pub noreplace: bool,
    /// Swap the two names (both must exist).
    pub exchange: bool,
}

impl State {
    /// Whether `ino` is `dir` or below it.
    fn is_within(&self, mut ino: InodeNo, dir: InodeNo) -> Result<bool> {
        for _ in 0..=self.meta.inode_count() {
            if ino == dir {
                return Ok(true);
            }
            if ino == InodeNo::ROOT {
                return Ok(false);
            }
            ino = self.meta.parent(ino).ok_or(LfsError::NotFound)?;
        }
        Err(super::error::bug("the directory tree has a cycle"))
    }

    pub(super) fn rename(
        &mut self,
        parent: InodeNo,
        name: &[u8],
        new_parent: InodeNo,
        new_name: &[u8],
        flags: RenameFlags,
    ) -> Result<()> {
        if flags.noreplace && flags.exchange {
            return Err(LfsError::InvalidArgument("NOREPLACE with EXCHANGE"));
        }
        check_name(name)?;
        check_name(new_name)?;
        let src = self.lookup_entry(parent, name)?;
        if self.inode(new_parent)?.dir.is_none() {
            return Err(LfsError::NotDir);
        }
        let dst = match self.lookup_entry(new_parent, new_name) {
            Ok(e) => Some(e),
            Err(LfsError::NotFound) => None,
            Err(e) => return Err(e),
        };
        if parent == new_parent && name == new_name {
            return if flags.exchange && dst.is_none() {
                Err(LfsError::NotFound)
            } else {
                Ok(())
            };
        }
        if src.kind == FileKind::Dir && self.is_within(new_parent, src.ino)? {
            return Err(LfsError::InvalidArgument(
                "a directory cannot move below itself",
            ));
        }
        let now = Time::now();
        let mut attrs: BTreeMap<InodeNo, Attr> = BTreeMap::new();
        let mut records = Vec::new();
        let mut freed = Vec::new();
        // The cookies new entries get (two in one directory when exchanging within it).
        let mut cookie_of = {
            let mut next: BTreeMap<InodeNo, u64> = BTreeMap::new();
            for d in [parent, new_parent] {
                let c = self.inode(d)?.dir.as_ref().map_or(0, |d| d.next_cookie());
                next.insert(d, c);
            }
            move |d: InodeNo| -> u64 {
                let c = next.entry(d).or_insert(0);
                *c += 1;
                *c - 1
            }
        };
        for d in [parent, new_parent] {
            let mut a = self.inode(d)?.attr;
            a.mtime = now;
            a.ctime = now;
            attrs.insert(d, a);
        }
        let nlink_delta = |attrs: &mut BTreeMap<InodeNo, Attr>, d: InodeNo, by: i64| {
            if let Some(a) = attrs.get_mut(&d) {
                a.nlink = (i64::from(a.nlink) + by) as u32;
            }
        };
        if flags.exchange {
            let dst = dst.ok_or(LfsError::NotFound)?;
            if dst.kind == FileKind::Dir && self.is_within(parent, dst.ino)? {
                return Err(LfsError::InvalidArgument(
                    "a directory cannot move below itself",
                ));
            }
            records.push(Record::DirRemove {
                dir: parent,
                name: name.to_vec(),
            });
            records.push(Record::DirRemove {
                dir: new_parent,
                name: new_name.to_vec(),
            });
            records.push(Record::DirAdd {
                dir: parent,
                cookie: cookie_of(parent),
                child: dst.ino,
                kind: dst.kind,
                name: name.to_vec(),
            });
            records.push(Record::DirAdd {
                dir: new_parent,
                cookie: cookie_of(new_parent),
                child: src.ino,
                kind: src.kind,
                name: new_name.to_vec(),
            });
            if parent != new_parent {
                for (e, to, from) in [(src, new_parent, parent), (dst, parent, new_parent)] {
                    if e.kind == FileKind::Dir {
                        let mut a = self.inode(e.ino)?.attr;
                        a.parent = to;
                        a.ctime = now;
                        attrs.insert(e.ino, a);
                        nlink_delta(&mut attrs, to, 1);
                        nlink_delta(&mut attrs, from, -1);
                    }
                }
            }
        } else {
            if let Some(dst) = dst {
                if flags.noreplace {
                    return Err(LfsError::Exists);
                }
                if dst.ino == src.ino {
                    // Two links to one inode: POSIX says do nothing.
                    return Ok(());
                }
                match (src.kind == FileKind::Dir, dst.kind == FileKind::Dir) {
                    (true, false) => return Err(LfsError::NotDir),
                    (false, true) => return Err(LfsError::IsDir),
                    (true, true) => {
                        if self
                            .inode(dst.ino)?
                            .dir
                            .as_ref()
                            .is_some_and(|d| !d.is_empty())
                        {
                            return Err(LfsError::NotEmpty);
                        }
                        freed.push(Record::Free { ino: dst.ino });
                        nlink_delta(&mut attrs, new_parent, -1);
                    }
                    (false, false) => {
                        let drop = self.drop_link(dst.ino, now)?;
                        for r in drop {
                            match r {
                                Record::Inode(a) => {
                                    attrs.insert(a.ino, a);
                                }
                                other => freed.push(other),
                            }
                        }
                    }
                }
                records.push(Record::DirRemove {
                    dir: new_parent,
                    name: new_name.to_vec(),
                });
            }
            records.push(Record::DirRemove {
                dir: parent,
                name: name.to_vec(),
            });
            records.push(Record::DirAdd {
                dir: new_parent,
                cookie: cookie_of(new_parent),
                child: src.ino,
                kind: src.kind,
                name: new_name.to_vec(),
            });
            if src.kind == FileKind::Dir && parent != new_parent {
                let mut a = self.inode(src.ino)?.attr;
                a.parent = new_parent;
                a.ctime = now;
                attrs.insert(src.ino, a);
                nlink_delta(&mut attrs, parent, -1);
                nlink_delta(&mut attrs, new_parent, 1);
            }
        }
        // A rename changes the renamed inode's ctime, whatever its kind (as Linux file systems
        // do; pjdfstest's rename::changed_ctime_success checks every kind).
        if !attrs.contains_key(&src.ino) {
            records.extend(self.touch(src.ino, |a| a.ctime = now)?);
        }
        records.extend(freed);
        records.extend(attrs.into_values().map(Record::Inode));
        self.commit(records)
    }
}
