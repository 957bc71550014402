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

pub use abi::{err, helper, op, Ctx, LOG_MAX_BYTES};

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

/// The helper `id` as a function. The device resolves `call id` itself: what the compiler emits
/// for a call through this constant address.
macro_rules! helper_fn {
    ($id:expr, fn($($arg:ty),*) -> $ret:ty) => {{
        // SAFETY: an eBPF call to a constant address is `call <address>`, which the device's
        // verifier admits for the helper ids and nothing else; the signature is the helper's
        // (csd.h, KERNEL_ABI.md).
        unsafe { core::mem::transmute::<usize, extern "C" fn($($arg),*) -> $ret>($id as usize) }
    }};
}

/// Copies the file's bytes from `file_off` into `dst`; returns how many (0 at the end).
#[inline(always)]
pub fn read(file_off: u64, dst: &mut [u8]) -> Result<usize, Error> {
    let f = helper_fn!(helper::READ, fn(u64, *mut u8, u64) -> i64);
    checked(f(file_off, dst.as_mut_ptr(), dst.len() as u64))
}

/// Appends `src` to the run's output (`Error::NO_SPACE` past `ctx.out_cap`).
#[inline(always)]
pub fn emit(src: &[u8]) -> Result<(), Error> {
    let f = helper_fn!(helper::EMIT, fn(*const u8, u64) -> i64);
    checked(f(src.as_ptr(), src.len() as u64)).map(drop)
}

/// Records a short message (at most [`LOG_MAX_BYTES`] are kept; `user.csd.log` returns them).
#[inline(always)]
pub fn log(msg: &str) -> usize {
    let f = helper_fn!(helper::LOG, fn(*const u8, u64) -> i64);
    checked(f(msg.as_ptr(), msg.len() as u64)).unwrap_or(0)
}

/// Write streams: copies the next incoming bytes into `dst`; 0 when they are exhausted.
#[inline(always)]
pub fn input(dst: &mut [u8]) -> Result<usize, Error> {
    let f = helper_fn!(helper::INPUT, fn(*mut u8, u64) -> i64);
    checked(f(dst.as_mut_ptr(), dst.len() as u64))
}

/// The run's scratch memory. Called once, by [`kernel!`].
#[doc(hidden)]
#[inline(always)]
pub fn scratch_of(ctx: &Ctx) -> &mut [u8] {
    let f = helper_fn!(helper::SCRATCH, fn() -> *mut u8);
    let base = f();
    // SAFETY: the device maps `ctx.scratch_len` bytes of writable, zeroed scratch memory at
    // the address `csd_scratch` returns, for the whole run; `kernel!` takes it once, so this
    // is the only reference to it.
    unsafe { core::slice::from_raw_parts_mut(base, ctx.scratch_len as usize) }
}

/// Views 8-byte-aligned bytes as `u64` words (scratch memory is aligned); any bytes past the
/// last whole word are left out.
#[inline(always)]
pub fn words(bytes: &mut [u8]) -> &mut [u64] {
    // SAFETY: every bit pattern is a valid u64, and `align_to_mut` only puts whole, aligned
    // words in the middle part.
    let (_, words, _) = unsafe { bytes.align_to_mut::<u64>() };
    words
}

/// Defines `csd_main` (and the panic handler) around `fn $main(Run) -> Result<u64, Error>`.
#[macro_export]
macro_rules! kernel {
    ($main:ident) => {
        #[no_mangle]
        pub extern "C" fn csd_main(ctx: &$crate::Ctx) -> u64 {
            let run = $crate::Run {
                ctx,
                scratch: $crate::scratch_of(ctx),
            };
            match $main(run) {
                Ok(v) => v,
                Err($crate::Error(code)) => code as u64,
            }
        }

        #[panic_handler]
        fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
            // The device stops a kernel that runs out of fuel.
            loop {}
        }
    };
}
