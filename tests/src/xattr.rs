//! Extended attributes as the offload's callers use them (`user.csd.*` keys on files in a
//! mount), with the errno a failure carries.

use std::path::Path;

use rustix::{fs::XattrFlags, io::Errno};

/// Sets `name` to `value`.
pub fn set(path: &Path, name: &str, value: &str) -> Result<(), Errno> {
    rustix::fs::setxattr(path, name, value.as_bytes(), XattrFlags::empty())
}

/// getxattr as callers do it: ask the size, then the value.
pub fn get(path: &Path, name: &str) -> Result<Vec<u8>, Errno> {
    let n = rustix::fs::getxattr_query(path, name)?;
    let mut buf = vec![0u8; n];
    let got = rustix::fs::getxattr(path, name, &mut buf[..])?;
    buf.truncate(got);
    Ok(buf)
}

/// Removes `name` (ends that offload).
pub fn remove(path: &Path, name: &str) -> Result<(), Errno> {
    rustix::fs::removexattr(path, name)
}
