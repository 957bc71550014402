//! The one error conversion each operation makes.

use fuser::Errno;

use crate::daemon::log;
use crate::lfs::LfsError;
use crate::offload::keys::OffloadError;

fn errno(code: i32) -> Errno {
    Errno::from_i32(code)
}

pub(super) fn lfs_errno(e: &LfsError) -> Errno {
    if matches!(
        e,
        LfsError::Io(_) | LfsError::Corrupted(_) | LfsError::LogicBug(_)
    ) {
        log(format_args!("file system error: {e}"));
    }
    errno(e.errno())
}

pub(super) fn offload_errno(what: &str, e: &OffloadError) -> Errno {
    if e.worth_logging() {
        log(format_args!("{what}: {e} (errno {})", e.errno()));
    }
    errno(e.errno())
}
