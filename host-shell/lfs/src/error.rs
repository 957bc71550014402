//! The file system's one error type, with the errno each variant stands for.

use crate::format::Corrupt;
use crate::zoned::IoError;

/// Why a file-system operation failed.
///
/// Media damage ([`LfsError::Corrupted`]) is kept apart from broken invariants of this code
/// ([`LfsError::LogicBug`]) and from device failures ([`LfsError::Io`]).
#[derive(Debug, thiserror::Error)]
pub enum LfsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("the name already exists")]
    Exists,
    #[error("the directory is not empty")]
    NotEmpty,
    #[error("it is a directory")]
    IsDir,
    #[error("it is not a directory")]
    NotDir,
    #[error("the device is full; delete files to make room")]
    NoSpace,
    /// An offload's snapshot whose zones were taken back to make room for writes: the blocks
    /// it named may hold other data now.
    #[error("the file's snapshot was reclaimed to make room for writes; run the offload again")]
    SnapshotReclaimed,
    #[error("permission denied")]
    PermissionDenied,
    #[error("operation not permitted")]
    NotPermitted,
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    #[error("the name is longer than 255 bytes")]
    NameTooLong,
    #[error("no such extended attribute")]
    NoXattr,
    #[error("too many links")]
    TooManyLinks,
    #[error("the file would pass the largest file size")]
    FileTooBig,
    #[error("the file system is mounted read only")]
    ReadOnly,
    #[error("the device holds no file system; create one with mkfs")]
    NotFormatted,
    /// The metadata was written in a newer format than this code reads.
    #[error(
        "the file system's metadata is in format version {version}, newer than this csd reads \
         (up to {max}); use a newer csd"
    )]
    UnsupportedVersion { version: u16, max: u16 },
    #[error("device I/O failed: {0}")]
    Io(#[from] IoError),
    /// Writes stopped after a device write failed (see `lfs::durable`): reads go on.
    #[error(
        "the file system stopped writing after a device error ({cause}); it still serves reads: \
         unmount, fix the host (free space on the disk under the image) and mount again"
    )]
    Halted { no_space: bool, cause: String },
    #[error("the file system on the device is corrupt: {0}")]
    Corrupted(String),
    #[error("internal error (a bug in the file system): {0}")]
    LogicBug(String),
}

/// Linux errno values (FUSE replies with these; the host is Linux).
mod errno {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const EIO: i32 = 5;
    pub const EBUSY: i32 = 16;
    pub const EACCES: i32 = 13;
    pub const EEXIST: i32 = 17;
    pub const ENOTDIR: i32 = 20;
    pub const EISDIR: i32 = 21;
    pub const EINVAL: i32 = 22;
    pub const EFBIG: i32 = 27;
    pub const ENOSPC: i32 = 28;
    pub const EROFS: i32 = 30;
    pub const EMLINK: i32 = 31;
    pub const ENAMETOOLONG: i32 = 36;
    pub const ENOTEMPTY: i32 = 39;
    pub const ENODATA: i32 = 61;
    pub const ENODEV: i32 = 19;
    pub const EUCLEAN: i32 = 117;
}

impl LfsError {
    /// The errno a FUSE reply carries for this error.
    pub fn errno(&self) -> i32 {
        use errno::*;
        match self {
            LfsError::NotFound => ENOENT,
            LfsError::Exists => EEXIST,
            LfsError::NotEmpty => ENOTEMPTY,
            LfsError::IsDir => EISDIR,
            LfsError::NotDir => ENOTDIR,
            LfsError::NoSpace => ENOSPC,
            LfsError::SnapshotReclaimed => EBUSY,
            LfsError::PermissionDenied => EACCES,
            LfsError::NotPermitted => EPERM,
            LfsError::InvalidArgument(_) => EINVAL,
            LfsError::NameTooLong => ENAMETOOLONG,
            LfsError::NoXattr => ENODATA,
            LfsError::TooManyLinks => EMLINK,
            LfsError::FileTooBig => EFBIG,
            LfsError::ReadOnly => EROFS,
            LfsError::NotFormatted | LfsError::UnsupportedVersion { .. } => ENODEV,
            LfsError::Io(d) if d.status() == Some(common::Status::CapacityExceeded) => ENOSPC,
            LfsError::Halted { no_space: true, .. } => ENOSPC,
            LfsError::Io(_) | LfsError::Halted { .. } | LfsError::LogicBug(_) => EIO,
            LfsError::Corrupted(_) => EUCLEAN,
        }
    }
}

/// Results of the file system.
pub type Result<T, E = LfsError> = std::result::Result<T, E>;

/// A media check failed: `what` names the structure and the reason. Like every decode
/// failure, it goes through [`Corrupt`], the one error for damaged media.
pub(crate) fn corrupted(what: impl Into<String>) -> LfsError {
    Corrupt::Inconsistent(what.into()).into()
}

/// A broken invariant of this code.
pub(crate) fn bug(what: impl Into<String>) -> LfsError {
    LfsError::LogicBug(what.into())
}
