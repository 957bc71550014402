//! Dropping ranges of files from the kernel's page cache, from a thread of its own: a notice
//! sent from the request that changed the file could wait on pages the kernel holds for that
//! same request (libfuse warns against it too).

use std::sync::{mpsc, Mutex};

use fuser::{INodeNo, Notifier};

use crate::daemon::log;

/// Sends `FUSE_NOTIFY_INVAL_INODE` notices in order, once [`Invalidator::start`] gave it the
/// session's notifier; before that (and after the session ends) it does nothing.
#[derive(Debug, Default)]
pub struct Invalidator {
    to: Mutex<Option<mpsc::Sender<(u64, u64)>>>,
}

impl Invalidator {
    /// Starts the thread that sends the notices through `notifier`; it ends with the last
    /// sender (when the file system is dropped).
    pub fn start(&self, notifier: Notifier) -> std::io::Result<()> {
        let (tx, rx) = mpsc::channel::<(u64, u64)>();
        std::thread::Builder::new()
            .name("csd-invalidate".into())
            .spawn(move || {
                for (ino, offset) in rx {
                    // Length 0: to the end of the file. A file the kernel no longer knows
                    // has nothing cached (ENOENT).
                    let offset = i64::try_from(offset).unwrap_or(i64::MAX);
                    if let Err(e) = notifier.inval_inode(INodeNo(ino), offset, 0) {
                        if e.raw_os_error() != Some(libc::ENOENT) {
                            log(format_args!(
                                "could not drop cached pages of inode {ino}: {e}"
                            ));
                        }
                    }
                }
            })?;
        *self.to.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        Ok(())
    }

    /// Drops what the kernel caches of file `ino` from `offset` to its end.
    pub fn from(&self, ino: u64, offset: u64) {
        if let Some(tx) = self.to.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = tx.send((ino, offset));
        }
    }
}
