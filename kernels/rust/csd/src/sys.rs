//! Everything of the SDK that needs `unsafe`, in one place: calls to the device's helpers
//! through their ids, the scratch memory the device maps, and views of words as bytes.

use crate::{helper, Ctx};

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

/// `csd_read` into `dst`: bytes read, or a negative error code.
#[inline(always)]
pub(crate) fn read(file_off: u64, dst: &mut [u8]) -> i64 {
    helper_fn!(helper::READ, fn(u64, *mut u8, u64) -> i64)(
        file_off,
        dst.as_mut_ptr(),
        dst.len() as u64,
    )
}

/// `csd_emit` of `src`: its length, or a negative error code.
#[inline(always)]
pub(crate) fn emit(src: &[u8]) -> i64 {
    helper_fn!(helper::EMIT, fn(*const u8, u64) -> i64)(src.as_ptr(), src.len() as u64)
}

/// `csd_log` of `msg`: the bytes kept.
#[inline(always)]
pub(crate) fn log(msg: &[u8]) -> i64 {
    helper_fn!(helper::LOG, fn(*const u8, u64) -> i64)(msg.as_ptr(), msg.len() as u64)
}

/// `csd_input` into `dst`: bytes copied, or a negative error code.
#[inline(always)]
pub(crate) fn input(dst: &mut [u8]) -> i64 {
    helper_fn!(helper::INPUT, fn(*mut u8, u64) -> i64)(dst.as_mut_ptr(), dst.len() as u64)
}

/// The run's scratch memory, for [`kernel!`](crate::kernel).
///
/// # Safety
/// Call it once per run: every call returns the same memory.
#[inline(always)]
pub unsafe fn scratch_of(ctx: &Ctx) -> &mut [u8] {
    let base = helper_fn!(helper::SCRATCH, fn() -> *mut u8)();
    // SAFETY: the device maps `ctx.scratch_len` bytes of writable, zeroed scratch memory at
    // the address `csd_scratch` returns, for the whole run; the caller takes it once, so this
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

/// Words as the little-endian bytes they are in memory (eBPF is little-endian here).
#[inline(always)]
pub fn bytes_of(words: &[u64]) -> &[u8] {
    // SAFETY: any u64 is 8 initialised bytes, and the byte view covers exactly the words.
    unsafe { core::slice::from_raw_parts(words.as_ptr().cast::<u8>(), words.len() * 8) }
}

/// Defines `csd_main` (and the panic handler) around `fn $main(Run) -> Result<u64, Error>`.
#[macro_export]
macro_rules! kernel {
    ($main:ident) => {
        #[no_mangle]
        pub extern "C" fn csd_main(ctx: &$crate::Ctx) -> u64 {
            let run = $crate::Run {
                ctx,
                // SAFETY: the one call of this run.
                scratch: unsafe { $crate::scratch_of(ctx) },
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
