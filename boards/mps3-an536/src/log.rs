//! defmt's global logger: encoded frames to semihosting standard output, decoded on the host
//! with this ELF's table (`host-shell/src/link/board_log.rs`, or `defmt-print -e ELF`).
//! Binaries that use defmt print nothing else on standard output; panics and exceptions go to
//! standard error as text.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use semihosting::io::Write;

#[defmt::global_logger]
struct Logger;

static TAKEN: AtomicBool = AtomicBool::new(false);

struct EncoderCell(UnsafeCell<defmt::Encoder>);

// SAFETY: the encoder is only touched between `acquire` and `release`, which `TAKEN` makes
// exclusive (one core, no interrupt handler logs).
unsafe impl Sync for EncoderCell {}

static ENCODER: EncoderCell = EncoderCell(UnsafeCell::new(defmt::Encoder::new()));

fn emit(bytes: &[u8]) {
    // A log line that cannot be written is dropped: logging must never stop the device.
    let _ = semihosting::io::stdout().and_then(|mut out| out.write_all(bytes));
}

// SAFETY: `acquire` refuses a second holder, so `write`/`flush`/`release` run only for the
// holder, as `defmt::Logger` requires.
unsafe impl defmt::Logger for Logger {
    fn acquire() {
        if TAKEN.swap(true, Ordering::Acquire) {
            panic!("defmt logger taken twice (logging from a panic or exception handler?)");
        }
        // SAFETY: `TAKEN` was false, so nothing else holds the encoder.
        unsafe { (*ENCODER.0.get()).start_frame(emit) }
    }

    unsafe fn flush() {}

    unsafe fn release() {
        // SAFETY: the caller holds the logger (defmt's contract), so the encoder is ours.
        unsafe { (*ENCODER.0.get()).end_frame(emit) }
        TAKEN.store(false, Ordering::Release);
    }

    unsafe fn write(bytes: &[u8]) {
        // SAFETY: as in `release`.
        unsafe { (*ENCODER.0.get()).write(bytes, emit) }
    }
}
