//! Extended attributes: `user.csd.*` names go to the offload keys, the other `user.` names to
//! the file system, and the other namespaces (the kernel's security modules') are not stored.
//! Each function translates one request and converts its error.

use std::sync::Arc;

use fuser::{Errno, INodeNo, ReplyEmpty, ReplyXattr};

use super::attr::ino;
use super::reply::{lfs_errno, offload_errno, reply_empty};
use crate::daemon::log;
use crate::lfs::{Lfs, XattrMode};
use crate::offload::keys::{Caller, Offload, PREFIX};

fn is_offload_key(name: &[u8]) -> bool {
    name.starts_with(PREFIX)
}

/// Only the `user.` namespace is stored; the others belong to the kernel's security modules.
fn is_user_xattr(name: &[u8]) -> bool {
    name.starts_with(b"user.")
}

/// A setxattr request.
pub(super) struct Set<'a> {
    pub(super) name: &'a [u8],
    pub(super) value: &'a [u8],
    /// `XATTR_CREATE`, `XATTR_REPLACE` or neither.
    pub(super) flags: i32,
}

pub(super) fn set(
    lfs: &Lfs,
    offload: &Arc<Offload>,
    caller: Caller,
    i: INodeNo,
    set: Set<'_>,
    reply: ReplyEmpty,
) {
    let Set { name, value, flags } = set;
    if is_offload_key(name) {
        // Setting `user.csd.file_job` runs a kernel over the whole file, which may take
        // seconds: every offload key is set in a thread of its own, so no FUSE worker waits
        // for a kernel and regular operations never queue behind one. (The caller waits for
        // the reply, so its thread is still there to name the key's process.)
        let (offload, name, value) = (Arc::clone(offload), name.to_vec(), value.to_vec());
        let what = format!(
            "setxattr {} on inode {}",
            String::from_utf8_lossy(&name),
            i.0
        );
        let set_key = move || {
            let done = offload.setxattr(caller, ino(i), &name, &value);
            reply_empty(reply, done, |e| offload_errno(&what, e));
        };
        if let Err(e) = std::thread::Builder::new()
            .name("csd-offload".into())
            .spawn(set_key)
        {
            // The request was dropped with the closure: FUSE answers it with EIO.
            log(format_args!("no thread to set an offload key in: {e}"));
        }
        return;
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
    reply_empty(reply, lfs.setxattr(ino(i), name, value, mode), lfs_errno);
}

pub(super) fn get(
    lfs: &Lfs,
    offload: &Offload,
    caller: Caller,
    i: INodeNo,
    name: &[u8],
) -> Result<Vec<u8>, Errno> {
    if is_offload_key(name) {
        return offload
            .getxattr(caller, ino(i), name)
            .map_err(|e| offload_errno("getxattr", &e));
    }
    if !is_user_xattr(name) {
        return Err(Errno::from_i32(libc::ENODATA));
    }
    lfs.getxattr(ino(i), name).map_err(|e| lfs_errno(&e))
}

/// The names, each ending in a NUL.
pub(super) fn list(lfs: &Lfs, i: INodeNo) -> Result<Vec<u8>, Errno> {
    let names = lfs.listxattr(ino(i)).map_err(|e| lfs_errno(&e))?;
    Ok(names
        .into_iter()
        .flat_map(|mut n| {
            n.push(0);
            n
        })
        .collect())
}

pub(super) fn remove(
    lfs: &Lfs,
    offload: &Offload,
    caller: Caller,
    i: INodeNo,
    name: &[u8],
) -> Result<(), Errno> {
    if is_offload_key(name) {
        return offload
            .removexattr(caller, ino(i), name)
            .map_err(|e| offload_errno("removexattr", &e));
    }
    if !is_user_xattr(name) {
        return Err(Errno::from_i32(libc::ENODATA));
    }
    lfs.removexattr(ino(i), name).map_err(|e| lfs_errno(&e))
}

/// A value, or its size when the caller asks with `size` 0.
pub(super) fn reply(reply: ReplyXattr, size: u32, result: Result<Vec<u8>, Errno>) {
    match result {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(e),
    }
}
