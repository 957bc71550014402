//! Extended attributes: `user.csd.*` names go to the offload keys, the other `user.` names to
//! the file system, and the other namespaces (the kernel's security modules') are not stored.
//! Each function translates one request and converts its error.

use std::sync::Arc;

use fuser::Errno;

use super::reply::{lfs_errno, offload_errno};
use super::{Answer, Xattr};
use crate::daemon::log;
use crate::lfs::{InodeNo, Lfs, XattrMode};
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

/// Sets an attribute and answers through `done`: for an offload key from a thread of its own.
pub(super) fn set(
    lfs: &Lfs,
    offload: &Arc<Offload>,
    caller: Caller,
    i: InodeNo,
    set: Set<'_>,
    done: impl FnOnce(Answer<()>) + Send + 'static,
) {
    let Set { name, value, flags } = set;
    if is_offload_key(name) {
        // Setting `user.csd.file_job` runs a kernel over the whole file, which may take
        // seconds: every offload key is set in a thread of its own, so no FUSE worker waits
        // for a kernel and regular operations never queue behind one. (The caller waits for
        // the answer, so its thread is still there to name the key's process.)
        let (offload, name, value) = (Arc::clone(offload), name.to_vec(), value.to_vec());
        let what = format!(
            "setxattr {} on inode {}",
            String::from_utf8_lossy(&name),
            i.0
        );
        let set_key = move || {
            let set = offload.setxattr(caller, i, &name, &value);
            done(set.map_err(|e| offload_errno(&what, &e)));
        };
        if let Err(e) = std::thread::Builder::new()
            .name("csd-offload".into())
            .spawn(set_key)
        {
            // The answer was dropped with the closure: the transport answers EIO.
            log(format_args!("no thread to set an offload key in: {e}"));
        }
        return;
    }
    if !is_user_xattr(name) {
        return done(Err(Errno::from_i32(libc::EOPNOTSUPP)));
    }
    let mode = if flags & libc::XATTR_CREATE != 0 {
        XattrMode::Create
    } else if flags & libc::XATTR_REPLACE != 0 {
        XattrMode::Replace
    } else {
        XattrMode::Any
    };
    done(
        lfs.setxattr(i, name, value, mode)
            .map_err(|e| lfs_errno(&e)),
    );
}

pub(super) fn get(
    lfs: &Lfs,
    offload: &Offload,
    caller: Caller,
    i: InodeNo,
    name: &[u8],
) -> Answer<Vec<u8>> {
    if is_offload_key(name) {
        return offload
            .getxattr(caller, i, name)
            .map_err(|e| offload_errno("getxattr", &e));
    }
    if !is_user_xattr(name) {
        return Err(Errno::from_i32(libc::ENODATA));
    }
    lfs.getxattr(i, name).map_err(|e| lfs_errno(&e))
}

/// The names, each ending in a NUL.
pub(super) fn list(lfs: &Lfs, i: InodeNo) -> Answer<Vec<u8>> {
    let names = lfs.listxattr(i).map_err(|e| lfs_errno(&e))?;
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
    i: InodeNo,
    name: &[u8],
) -> Answer<()> {
    if is_offload_key(name) {
        return offload
            .removexattr(caller, i, name)
            .map_err(|e| offload_errno("removexattr", &e));
    }
    if !is_user_xattr(name) {
        return Err(Errno::from_i32(libc::ENODATA));
    }
    lfs.removexattr(i, name).map_err(|e| lfs_errno(&e))
}

/// A value, or its size when the caller asks with `size` 0.
pub(super) fn sized(size: u32, result: Answer<Vec<u8>>) -> Answer<Xattr> {
    match result? {
        v if size == 0 => Ok(Xattr::Size(v.len() as u32)),
        v if v.len() > size as usize => Err(Errno::ERANGE),
        v => Ok(Xattr::Value(v)),
    }
}
