//! On-target self-test: runs the real firmware on the Cortex-R52 and prints what it saw, for
//! `cargo xtask board test` to diff against `tests/selftest.expected`.
#![no_std]
#![no_main]

use semihosting::println;

#[aarch32_rt::entry]
fn main() -> ! {
    mps3_an536::init_heap();
    println!("csd firmware self-test on Cortex-R52");
    println!("wire version {}", common::WIRE_VERSION);
    println!("status {}", common::Status::TooManyOpenZones);
    let heap: alloc::vec::Vec<u32> = (0..1024).collect();
    println!("heap sum {}", heap.iter().sum::<u32>());
    println!("self-test passed");
    mps3_an536::exit(0)
}

extern crate alloc;
