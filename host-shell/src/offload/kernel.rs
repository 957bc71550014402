//! Kernels: linked program images, read from the file system as a caller may, and cached.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::{lock, Engine};
use crate::lfs::{access, check_access, Credentials, FileKind, InodeNo, Lfs, LfsError, Time};
use crate::loader;

/// Largest kernel object read from the file system.
const MAX_KERNEL_BYTES: u64 = 16 << 20;

/// Most kernel images kept linked (the cache is emptied when it would grow past this).
const MAX_CACHED_IMAGES: usize = 64;

/// A program image ready to load, with the name errors give it.
#[derive(Debug, Clone)]
pub struct Kernel {
    name: String,
    image: Arc<[u8]>,
    /// Tells this image from another, so a slot that holds it is not loaded again.
    fingerprint: u64,
}

impl Kernel {
    /// A kernel from an image already linked (`csd kernel link`, `csd kernel asm`, or the
    /// loader).
    pub fn from_image(name: impl Into<String>, image: Vec<u8>) -> Kernel {
        Kernel::new(name.into(), image.into())
    }

    fn new(name: String, image: Arc<[u8]>) -> Kernel {
        let mut hasher = std::hash::DefaultHasher::new();
        image.hash(&mut hasher);
        Kernel {
            name,
            fingerprint: hasher.finish(),
            image,
        }
    }

    /// The name it was given: the path a mount's key named, or the file `csd kernel run` read.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The program image.
    pub fn image(&self) -> &[u8] {
        &self.image
    }

    pub(super) fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
}

/// A linked kernel image and the file state it was linked from.
#[derive(Debug)]
pub(super) struct CachedImage {
    size: u64,
    mtime: Time,
    ctime: Time,
    image: Arc<[u8]>,
}

/// Why a kernel could not be had from the file system.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("kernel {0}: no such file in this mount")]
    NotFound(String),
    #[error("kernel {0} is not a regular file")]
    NotAFile(String),
    #[error("kernel {path} is not a kernel object: {reason}")]
    NotAKernel { path: String, reason: String },
    /// The file system failed, or `who` may not search a directory on the path or read the
    /// kernel ([`LfsError::PermissionDenied`]).
    #[error(transparent)]
    Fs(#[from] LfsError),
}

impl Engine {
    /// The kernel object at `path` in `fs` (relative to its root, no symbolic links
    /// followed), linked. With `who`, the walk checks search permission on every directory and
    /// read permission on the kernel file, as the kernel checks a caller's own access. An
    /// object linked before is not read again while its size and times stay the same.
    pub fn kernel_in(
        &self,
        fs: &Lfs,
        path: &str,
        who: Option<&Credentials>,
    ) -> Result<Kernel, KernelError> {
        let attr = fs.walk(path, who).map_err(|e| match e {
            LfsError::NotFound | LfsError::NotDir => KernelError::NotFound(path.to_string()),
            other => KernelError::Fs(other),
        })?;
        if attr.kind != FileKind::File {
            return Err(KernelError::NotAFile(path.to_string()));
        }
        if attr.size > MAX_KERNEL_BYTES {
            return Err(KernelError::NotAKernel {
                path: path.to_string(),
                reason: format!("{} bytes is too large", attr.size),
            });
        }
        if let Some(who) = who {
            check_access(&attr, who, access::R_OK)?;
        }
        let ino = attr.ino;
        if let Some(cached) = lock(&self.kernels).get(&ino) {
            if (cached.size, cached.mtime, cached.ctime) == (attr.size, attr.mtime, attr.ctime) {
                return Ok(Kernel::new(path.to_string(), Arc::clone(&cached.image)));
            }
        }
        let bytes = read_all(fs, ino, attr.size)?;
        let image: Arc<[u8]> = loader::link(&bytes)
            .map_err(|e| KernelError::NotAKernel {
                path: path.to_string(),
                reason: e.to_string(),
            })?
            .to_bytes()
            .into();
        let mut kernels = lock(&self.kernels);
        if kernels.len() >= MAX_CACHED_IMAGES {
            kernels.clear();
        }
        kernels.insert(
            ino,
            CachedImage {
                size: attr.size,
                mtime: attr.mtime,
                ctime: attr.ctime,
                image: Arc::clone(&image),
            },
        );
        Ok(Kernel::new(path.to_string(), image))
    }
}

/// The first `size` bytes of file `ino` (fewer if it is shorter by now).
fn read_all(fs: &Lfs, ino: InodeNo, size: u64) -> Result<Vec<u8>, LfsError> {
    let mut bytes = Vec::with_capacity(size as usize);
    while (bytes.len() as u64) < size {
        let chunk = fs.read(ino, bytes.len() as u64, 1 << 20)?;
        if chunk.is_empty() {
            break;
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}
