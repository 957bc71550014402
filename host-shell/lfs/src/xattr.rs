//! Extended attributes: set, get, list and remove, each change one transaction with the
//! inode's new ctime.

use crate::error::{LfsError, Result};
use crate::format::{Record, NAME_MAX, XATTR_VALUE_MAX};
use crate::inode::{InodeNo, Time};
use crate::State;

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

impl State {
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
}
