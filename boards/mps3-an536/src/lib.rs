//! Board support for csd on the MPS3 AN536 (Cortex-R52) as QEMU models it.
//!
//! All `unsafe`, linker and semihosting detail of the project lives here: the heap, the panic
//! and exception handlers that report and exit, the UART driver ([`uart`]), the NAND image in
//! a host file ([`image`]), the defmt logger, and the device end of the serial link
//! ([`serve`]). The firmware crate itself never sees the board.
#![no_std]

extern crate alloc;

pub mod image;
mod log;
pub mod serve;
pub mod store;
pub mod uart;

use core::sync::atomic::{AtomicBool, Ordering};

use linked_list_allocator::LockedHeap;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

static HEAP_READY: AtomicBool = AtomicBool::new(false);

extern "C" {
    static __heap_start: u8;
    static __heap_size: u8;
}

/// Hands the heap region of the memory map (`memory-r52.x`: DDR, `memory-r5f.x`: RAM) to the
/// allocator. Call once, first thing in `main`; further calls do nothing.
pub fn init_heap() {
    if HEAP_READY.swap(true, Ordering::AcqRel) {
        return;
    }
    // `__heap_start`/`__heap_size` are linker symbols from the memory map: only their addresses
    // carry meaning, their contents are never read.
    let start = core::ptr::addr_of!(__heap_start) as usize;
    let size = core::ptr::addr_of!(__heap_size) as usize;
    // SAFETY: the region is RAM that nothing else in the image uses (the memory map places data,
    // bss and stacks in another region), and the swap above makes this run exactly once.
    unsafe { HEAP.lock().init(start as *mut u8, size) };
}

/// Ends the QEMU run with `code` as the process exit status.
pub fn exit(code: i32) -> ! {
    semihosting::process::exit(code)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    semihosting::eprintln!("PANIC: {info}");
    exit(101)
}

/// Reports an exception the firmware never expects and ends the run with status 102.
fn unexpected(kind: &str, addr: usize) -> ! {
    semihosting::eprintln!("EXCEPTION: {kind} at {addr:#010x}");
    exit(102)
}

#[aarch32_rt::exception(Undefined)]
fn undefined_handler(addr: usize) -> ! {
    unexpected("undefined instruction", addr)
}

#[aarch32_rt::exception(PrefetchAbort)]
fn prefetch_abort_handler(addr: usize) -> ! {
    unexpected("prefetch abort", addr)
}

#[aarch32_rt::exception(DataAbort)]
fn data_abort_handler(addr: usize) -> ! {
    unexpected("data abort", addr)
}
