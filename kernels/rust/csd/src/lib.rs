//! The csd kernel SDK: write a kernel in Rust.
//!
//! ```ignore
//! #![no_std]
//! csd::kernel!(main);
//!
//! fn main(run: csd::Run<'_>) -> Result<u64, csd::Error> {
//!     let n = csd::read(run.ctx.offset, &mut run.scratch[..4096])?;
//!     csd::emit(&run.scratch[..n])?;
//!     Ok(n as u64)
//! }
//! ```
//!
//! [`kernel!`] defines the entry point `csd_main`: it hands the kernel its context and its
//! scratch memory once, as a [`Run`], and returns `Ok(v)` as `v` and `Err(e)` as the error's
//! negative code. A panic stops the kernel where it is: the device ends the run when its fuel
//! is gone. The helpers are the device's (`kernels/include/csd.h` has the same in C).
#![no_std]

mod abi;
mod sys;

pub use abi::{err, helper, op, Ctx, LOG_MAX_BYTES};
#[doc(hidden)]
pub use sys::scratch_of;
pub use sys::{bytes_of, words};

/// An error a helper returned, or one a kernel returns: a negative `CSD_E*` code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error(pub i64);

impl Error {
    pub const IO: Error = Error(err::IO);
    pub const INVALID: Error = Error(err::INVALID);
    pub const NO_SPACE: Error = Error(err::NO_SPACE);
    pub const NOT_SUPPORTED: Error = Error(err::NOT_SUPPORTED);
}

/// What a kernel is given: its context and its scratch memory (`ctx.scratch_len` bytes,
/// zeroed, 8-byte aligned).
pub struct Run<'a> {
    pub ctx: &'a Ctx,
    pub scratch: &'a mut [u8],
}

/// A helper's return value: a count, or an error code.
fn checked(r: i64) -> Result<usize, Error> {
    if r < 0 {
        Err(Error(r))
    } else {
        Ok(r as usize)
    }
}

/// Copies the file's bytes from `file_off` into `dst`; returns how many (0 at the end).
#[inline(always)]
pub fn read(file_off: u64, dst: &mut [u8]) -> Result<usize, Error> {
    checked(sys::read(file_off, dst))
}

/// Appends `src` to the run's output (`Error::NO_SPACE` past `ctx.out_cap`).
#[inline(always)]
pub fn emit(src: &[u8]) -> Result<(), Error> {
    checked(sys::emit(src)).map(drop)
}

/// Records a short message (at most [`LOG_MAX_BYTES`] are kept; `user.csd.log` returns them).
#[inline(always)]
pub fn log(msg: &str) -> usize {
    checked(sys::log(msg.as_bytes())).unwrap_or(0)
}

/// Write streams: copies the next incoming bytes into `dst`; 0 when they are exhausted.
#[inline(always)]
pub fn input(dst: &mut [u8]) -> Result<usize, Error> {
    checked(sys::input(dst))
}
