//! Kernel objects: resolved in the mount as the caller may, read, linked and cached.

use super::error::{OffloadError, Result};
use super::{lock, Caller, Offload};
use crate::fuse::process;
use crate::lfs::{access, check_access, Credentials, FileKind, InodeNo, LfsError, Time};
use crate::loader;

/// Largest kernel object read from the mount.
const MAX_KERNEL_BYTES: u64 = 16 << 20;

/// A linked kernel image and the file state it was linked from.
#[derive(Debug)]
pub(super) struct CachedImage {
    size: u64,
    mtime: Time,
    ctime: Time,
    image: Vec<u8>,
}

/// Most kernel images kept linked (the cache is emptied when it would grow past this).
const MAX_CACHED_IMAGES: usize = 64;

impl Offload {
    /// Resolves the kernel path in the mount, reads and links it.
    pub(super) fn kernel_image(&self, caller: Caller, value: &[u8]) -> Result<(String, Vec<u8>)> {
        let path = std::str::from_utf8(value)
            .map_err(|_| OffloadError::Invalid("the kernel path is not UTF-8".into()))?
            .trim_matches(|c: char| c.is_whitespace() || c == '\0')
            .to_string();
        if path.is_empty() {
            return Err(OffloadError::Invalid(
                "the value names no kernel: give a path inside the mount, like /kernels/entropy.o"
                    .into(),
            ));
        }
        let not_found = |e: LfsError| match e {
            LfsError::NotFound | LfsError::NotDir => OffloadError::NoKernel(path.clone()),
            other => OffloadError::Lfs(other),
        };
        // Checked as the kernel checks the caller's own path lookups: with its supplementary
        // groups too.
        let who = self.check_permissions.then(|| Credentials {
            uid: caller.uid,
            gid: caller.gid,
            groups: process::supplementary_groups(caller.tid),
        });
        let check = |ino: InodeNo, mask: u32| -> Result<()> {
            if let Some(who) = &who {
                check_access(&self.lfs.getattr(ino)?, who, mask)?;
            }
            Ok(())
        };
        let mut ino = InodeNo::ROOT;
        for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
            check(ino, access::X_OK)?;
            ino = self
                .lfs
                .lookup(ino, part.as_bytes())
                .map_err(not_found)?
                .ino;
        }
        let attr = self.lfs.getattr(ino).map_err(not_found)?;
        if attr.kind != FileKind::File {
            return Err(OffloadError::Invalid(format!(
                "kernel {path} is not a regular file"
            )));
        }
        if attr.size > MAX_KERNEL_BYTES {
            return Err(OffloadError::NotAKernel {
                path,
                reason: format!("{} bytes is too large", attr.size),
            });
        }
        check(ino, access::R_OK)?;
        if let Some(cached) = lock(&self.images).get(&ino) {
            if (cached.size, cached.mtime, cached.ctime) == (attr.size, attr.mtime, attr.ctime) {
                return Ok((path, cached.image.clone()));
            }
        }
        let mut bytes = Vec::with_capacity(attr.size as usize);
        while (bytes.len() as u64) < attr.size {
            let chunk = self.lfs.read(ino, bytes.len() as u64, 1 << 20)?;
            if chunk.is_empty() {
                break;
            }
            bytes.extend_from_slice(&chunk);
        }
        let image = loader::link(&bytes)
            .map_err(|e| OffloadError::NotAKernel {
                path: path.clone(),
                reason: e.to_string(),
            })?
            .to_bytes();
        let mut images = lock(&self.images);
        if images.len() >= MAX_CACHED_IMAGES {
            images.clear();
        }
        images.insert(
            ino,
            CachedImage {
                size: attr.size,
                mtime: attr.mtime,
                ctime: attr.ctime,
                image: image.clone(),
            },
        );
        Ok((path, image))
    }
}
