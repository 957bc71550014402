//! Helper dispatch: turns a kernel's `call n` into a call on the caller's [`Env`], translating
//! kernel pointers into slices of the VM's own regions first.
//!
//! A pointer or length that does not fit one region faults the kernel
//! ([`ExecError::HelperFault`]) before the `Env` is called; `Env` errors become the negative
//! [`abi::err`] codes the kernel sees in `r0`.

use core::fmt;

use common::abi::{self, helper};
use common::program::RunStats;

use super::mem::Mem;
use super::vm::ExecError;

/// Fuel charged for every helper call on top of the call instruction itself.
pub const HELPER_CALL_FUEL: u64 = 16;
/// Bytes a helper may move per unit of fuel (rounded up per call).
pub const BYTES_PER_FUEL: u64 = 64;

/// What a helper could not do; the kernel sees [`HelperError::code`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HelperError {
    /// An argument is invalid ([`abi::err::INVALID`]).
    Invalid,
    /// The output is full ([`abi::err::NO_SPACE`]).
    NoSpace,
    /// Not available for this operation, e.g. `csd_input` outside a write stream
    /// ([`abi::err::NOT_SUPPORTED`]).
    NotSupported,
    /// The device could not read the snapshot ([`abi::err::IO`]).
    Io,
}

impl HelperError {
    /// The negative error code the kernel receives.
    pub const fn code(self) -> i64 {
        match self {
            HelperError::Invalid => abi::err::INVALID,
            HelperError::NoSpace => abi::err::NO_SPACE,
            HelperError::NotSupported => abi::err::NOT_SUPPORTED,
            HelperError::Io => abi::err::IO,
        }
    }
}

impl fmt::Display for HelperError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HelperError::Invalid => "invalid helper argument",
            HelperError::NoSpace => "kernel output is full",
            HelperError::NotSupported => "helper not available for this operation",
            HelperError::Io => "device read failed",
        })
    }
}

impl core::error::Error for HelperError {}

/// The world a kernel's helpers reach, implemented by the controller (and by tests).
///
/// Every slice handed in lies inside the kernel's memory and has already been checked.
pub trait Env {
    /// `csd_read`: copies snapshot bytes from `file_off` into `dst`; returns the bytes
    /// copied (0 at the end of the snapshot). Must stay inside the command's extents.
    fn read(&mut self, file_off: u64, dst: &mut [u8]) -> Result<usize, HelperError>;
    /// `csd_emit`: appends `src` to the output. The VM has already checked `out_cap`.
    fn emit(&mut self, src: &[u8]) -> Result<(), HelperError>;
    /// `csd_log`: records a message of at most [`abi::LOG_MAX_BYTES`] bytes.
    fn log(&mut self, msg: &[u8]);
    /// `csd_input`: copies the next bytes of a write stream into `dst`; returns the bytes
    /// copied, 0 when exhausted, [`HelperError::NotSupported`] outside a write stream.
    fn input(&mut self, dst: &mut [u8]) -> Result<usize, HelperError>;
}

impl<E: Env + ?Sized> Env for &mut E {
    fn read(&mut self, file_off: u64, dst: &mut [u8]) -> Result<usize, HelperError> {
        (**self).read(file_off, dst)
    }
    fn emit(&mut self, src: &[u8]) -> Result<(), HelperError> {
        (**self).emit(src)
    }
    fn log(&mut self, msg: &[u8]) {
        (**self).log(msg)
    }
    fn input(&mut self, dst: &mut [u8]) -> Result<usize, HelperError> {
        (**self).input(dst)
    }
}

/// Fuel for a helper call that moved `bytes`.
fn cost(bytes: usize) -> u64 {
    HELPER_CALL_FUEL + (bytes as u64).div_ceil(BYTES_PER_FUEL)
}

/// The kernel's bytes `ptr..ptr + len` for a helper to read, if every one of them lies in one
/// of the kernel's regions.
fn kernel_bytes<'m>(mem: &'m Mem<'_>, ptr: u64, len: u64) -> Option<&'m [u8]> {
    usize::try_from(len).ok().and_then(|l| mem.slice(ptr, l))
}

/// The kernel's bytes `ptr..ptr + len` for a helper to write, if every one of them lies in a
/// writable region of the kernel's.
fn kernel_bytes_mut<'m>(mem: &'m mut Mem<'_>, ptr: u64, len: u64) -> Option<&'m mut [u8]> {
    usize::try_from(len)
        .ok()
        .and_then(|l| mem.slice_mut(ptr, l))
}

fn ret(r: Result<usize, HelperError>) -> (u64, usize) {
    match r {
        Ok(n) => (n as u64, n),
        Err(e) => (e.code() as u64, 0),
    }
}

/// Runs helper `id` (verified to be known) with arguments `r[1..=5]`; sets `r[0]` and returns
/// the fuel to charge. Native code calls helpers through this too, so both executors share
/// every check and every counter.
#[inline(never)]
pub fn call<E: Env + ?Sized>(
    id: u32,
    pc: u32,
    r: &mut [u64; 16],
    mem: &mut Mem<'_>,
    env: &mut E,
    out_cap: u64,
    stats: &mut RunStats,
) -> Result<u64, ExecError> {
    let fault = |addr: u64, len: u64| ExecError::HelperFault {
        pc,
        helper: id,
        addr,
        len,
    };
    let (r0, moved) = match id {
        helper::READ => {
            let (off, ptr, len) = (r[1], r[2], r[3]);
            if len == 0 {
                (0, 0)
            } else {
                let dst = kernel_bytes_mut(mem, ptr, len).ok_or(fault(ptr, len))?;
                let cap = dst.len();
                let (r0, n) = ret(env.read(off, dst).map(|n| n.min(cap)));
                stats.device_bytes_read += n as u64;
                (r0, n)
            }
        }
        helper::EMIT => {
            let (ptr, len) = (r[1], r[2]);
            if len == 0 {
                (0, 0)
            } else {
                let src = kernel_bytes(mem, ptr, len).ok_or(fault(ptr, len))?;
                if stats.bytes_returned.saturating_add(len) > out_cap {
                    (abi::err::NO_SPACE as u64, 0)
                } else {
                    match env.emit(src) {
                        Ok(()) => {
                            stats.bytes_returned += len;
                            (len, src.len())
                        }
                        Err(e) => (e.code() as u64, 0),
                    }
                }
            }
        }
        helper::SCRATCH => (abi::region::SCRATCH_BASE, 0),
        helper::LOG => {
            let (ptr, len) = (r[1], r[2].min(u64::from(abi::LOG_MAX_BYTES)));
            if len == 0 {
                (0, 0)
            } else {
                // `len` is at most LOG_MAX_BYTES here.
                let msg = mem.slice(ptr, len as usize).ok_or(fault(ptr, r[2]))?;
                env.log(msg);
                stats.log_messages += 1;
                (len, msg.len())
            }
        }
        helper::INPUT => {
            let (ptr, len) = (r[1], r[2]);
            if len == 0 {
                (0, 0)
            } else {
                let dst = kernel_bytes_mut(mem, ptr, len).ok_or(fault(ptr, len))?;
                let cap = dst.len();
                ret(env.input(dst).map(|n| n.min(cap)))
            }
        }
        // The verifier only admits known ids; refuse rather than panic if that ever breaks.
        _ => return Err(fault(0, 0)),
    };
    r[0] = r0;
    stats.helper_calls += 1;
    stats.helper_bytes += moved as u64;
    Ok(cost(moved))
}
