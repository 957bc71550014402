//! Replies and the one error conversion each method makes.

use fuser::{Errno, Generation, ReplyEmpty, ReplyEntry};

use super::attr::file_attr;
use super::TTL;
use crate::daemon::log;
use crate::lfs::{Attr, LfsError};
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

pub(super) fn reply_entry(reply: ReplyEntry, result: Result<Attr, LfsError>) {
    match result {
        Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
        Err(e) => reply.error(lfs_errno(&e)),
    }
}

pub(super) fn reply_empty<E>(
    reply: ReplyEmpty,
    result: Result<(), E>,
    conv: impl FnOnce(&E) -> Errno,
) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(conv(&e)),
    }
}
