//! Extended attributes as the offload's callers use them (`user.csd.*` keys on files in a
//! mount), with the errno a failure carries.

use std::{collections::BTreeMap, path::Path};

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

/// A key whose value is `key=number` pairs (`user.csd.stats`, `user.csd.counters`), by key;
/// `EBADMSG` if a pair is not one.
pub fn numbers(path: &Path, name: &str) -> Result<BTreeMap<String, u64>, Errno> {
    parse_numbers(&get(path, name)?).ok_or(Errno::BADMSG)
}

/// `key=number` pairs, space-separated, by key; `None` if a pair is not one.
pub fn parse_numbers(text: &[u8]) -> Option<BTreeMap<String, u64>> {
    std::str::from_utf8(text)
        .ok()?
        .split_whitespace()
        .map(|pair| {
            let (key, value) = pair.split_once('=')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Removes `name` (ends that offload).
pub fn remove(path: &Path, name: &str) -> Result<(), Errno> {
    rustix::fs::removexattr(path, name)
}
