//! Why an offload operation failed, and the errno the caller gets for it.

use common::load_error::LoadError;
use common::program::{ExecFault, ExecOutcome, ExecResult};

use crate::driver::DriverError;
use crate::lfs::LfsError;
use crate::offload::{KernelError, RunError};

/// Why an offload operation failed; [`OffloadError::errno`] is what the caller sees.
#[derive(Debug, thiserror::Error)]
pub enum OffloadError {
    #[error("{0}")]
    Invalid(String),
    #[error("kernel {0}: no such file in this mount")]
    NoKernel(String),
    #[error("{0} is read only")]
    ReadOnlyKey(String),
    #[error("no {0} is set by this process on this file")]
    NotSet(String),
    #[error("kernel {path} is not a kernel object: {reason}")]
    NotAKernel { path: String, reason: String },
    #[error("kernel {path} was rejected by the device's verifier: {reason}")]
    Rejected { path: String, reason: LoadError },
    #[error("kernel {path} ran out of fuel after {instructions} instructions ({fuel_used} fuel); mount with a larger --fuel")]
    OutOfFuel {
        path: String,
        instructions: u64,
        fuel_used: u64,
    },
    #[error("kernel {path} faulted: {what}")]
    Fault { path: String, what: String },
    #[error("kernel {path} returned error {code}")]
    KernelError { path: String, code: i64 },
    #[error("all device program slots or range sets are in use; remove an offload first")]
    Busy,
    #[error(
        "the user.csd.{0} this request was to run was replaced or removed while it waited; \
         try again"
    )]
    StreamEnded(&'static str),
    #[error(
        "a process with a read stream on inode {ino} read it through a memory mapping; refused, \
         as the page cache is shared with every process: read the stream with read(2)"
    )]
    MappedRead { ino: u64 },
    #[error("the result is {0} bytes, more than an extended attribute holds (64 KiB)")]
    TooBig(usize),
    #[error("the calling process is gone")]
    NoProcess,
    #[error(transparent)]
    Lfs(#[from] LfsError),
    #[error("device: {0}")]
    Device(#[from] DriverError),
}

impl OffloadError {
    /// The errno the caller gets (documented in docs/ARCHITECTURE.md, "Offload errors").
    pub fn errno(&self) -> i32 {
        match self {
            OffloadError::Invalid(_) => libc::EINVAL,
            OffloadError::NoKernel(_) => libc::ENOENT,
            OffloadError::ReadOnlyKey(_) => libc::EPERM,
            OffloadError::NotSet(_) => libc::ENODATA,
            OffloadError::NotAKernel { .. } | OffloadError::Rejected { .. } => libc::ENOEXEC,
            OffloadError::OutOfFuel { .. } => libc::ETIME,
            OffloadError::Fault { .. } => libc::EIO,
            OffloadError::KernelError { code, .. } => kernel_errno(*code),
            OffloadError::Busy => libc::EBUSY,
            OffloadError::StreamEnded(_) => libc::EAGAIN,
            OffloadError::MappedRead { .. } => libc::EIO,
            OffloadError::TooBig(_) => libc::E2BIG,
            OffloadError::NoProcess => libc::ESRCH,
            OffloadError::Lfs(e) => e.errno(),
            OffloadError::Device(_) => libc::EIO,
        }
    }

    /// Whether the daemon log should carry this error (caller mistakes of the ordinary kind,
    /// such as asking for a key that is not set, stay quiet).
    pub fn worth_logging(&self) -> bool {
        !matches!(self, OffloadError::NotSet(_) | OffloadError::Lfs(_))
    }
}

impl From<KernelError> for OffloadError {
    fn from(e: KernelError) -> Self {
        match e {
            KernelError::NotFound(path) => OffloadError::NoKernel(path),
            KernelError::NotAFile(path) => {
                OffloadError::Invalid(format!("kernel {path} is not a regular file"))
            }
            KernelError::NotAKernel { path, reason } => OffloadError::NotAKernel { path, reason },
            KernelError::Fs(e) => OffloadError::Lfs(e),
        }
    }
}

impl From<RunError> for OffloadError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::Rejected { kernel, reason } => OffloadError::Rejected {
                path: kernel,
                reason,
            },
            RunError::Device { source, .. } => OffloadError::Device(source),
            RunError::Snapshot(e) => OffloadError::Lfs(e),
        }
    }
}

pub(super) type Result<T, E = OffloadError> = std::result::Result<T, E>;

/// The errno of a kernel's negative return value: the value negated if it is an errno Linux
/// defines (1 to `EHWPOISON`, the highest) other than `ENOSYS`, else `EIO`. The kernel's FUSE
/// refuses a reply whose error is outside -511..=0 and leaves its caller waiting for an
/// answer, an undefined errno reaches the caller as "Unknown error", and `ENOSYS` from
/// setxattr makes the kernel take extended attributes as unsupported and fail every later
/// setxattr of the mount with `EOPNOTSUPP`.
fn kernel_errno(code: i64) -> i32 {
    match code.checked_neg().map(i32::try_from) {
        Some(Ok(errno)) if (1..=libc::EHWPOISON).contains(&errno) && errno != libc::ENOSYS => errno,
        _ => libc::EIO,
    }
}

/// The caller-visible error of a run that did not exit cleanly. A return value with the top
/// bit set (negative as an `int64_t`) is an error, whether or not it is an errno
/// ([`kernel_errno`]).
pub(super) fn check_run(kernel: &str, result: &ExecResult) -> Result<()> {
    let path = kernel.to_string();
    match result.outcome {
        ExecOutcome::Exited { r0 } => {
            let code = r0 as i64;
            if code < 0 {
                Err(OffloadError::KernelError { path, code })
            } else {
                Ok(())
            }
        }
        ExecOutcome::Faulted(ExecFault::OutOfFuel) => Err(OffloadError::OutOfFuel {
            path,
            instructions: result.stats.instructions,
            fuel_used: result.stats.fuel_used,
        }),
        ExecOutcome::Faulted(fault) => Err(OffloadError::Fault {
            path,
            what: format!("{fault:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::program::RunStats;

    /// Kernel outcomes map to the documented errnos.
    #[test]
    fn outcomes_map_to_errnos() {
        let stats = RunStats::default();
        let run = |outcome| ExecResult { outcome, stats };
        assert!(check_run("k", &run(ExecOutcome::Exited { r0: 5 })).is_ok());
        let e = check_run("k", &run(ExecOutcome::Exited { r0: -22i64 as u64 }))
            .expect_err("negative return");
        assert_eq!(e.errno(), libc::EINVAL);
        // Negative values that are no errno the caller may get are EIO.
        for code in [-38, -134, -600, -4095, -100_000, i64::MIN] {
            let e = check_run("k", &run(ExecOutcome::Exited { r0: code as u64 }))
                .expect_err("negative return");
            assert_eq!(e.errno(), libc::EIO, "{code}");
        }
        let largest_count = i64::MAX as u64;
        assert!(check_run("k", &run(ExecOutcome::Exited { r0: largest_count })).is_ok());
        let e = check_run("k", &run(ExecOutcome::Faulted(ExecFault::OutOfFuel))).expect_err("fuel");
        assert_eq!(e.errno(), libc::ETIME);
        let e = check_run(
            "k",
            &run(ExecOutcome::Faulted(ExecFault::CallDepthExceeded { pc: 3 })),
        )
        .expect_err("fault");
        assert_eq!(e.errno(), libc::EIO);
    }
}
