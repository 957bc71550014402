//! On-target self-test: runs the real firmware on the Cortex-R52 (and, built for
//! armv7r-none-eabihf, on a Cortex-R5F) and prints what it saw, for `cargo xtask board test`
//! to diff against `tests/selftest.expected`, the same file for both cores.
//!
//! Three parts, each printing one line per observation: the zone manager over board-memory
//! NAND ([`zones`]: states, limits, writes, appends, finish, reset, power-on recovery), the
//! controller end to end ([`device`]: submissions in, completions out, through a `SliceDma`),
//! and the eBPF executor running clang-built kernels linked into program images before the
//! build ([`programs`], including hostile ones).
//!
//! Standard output is the golden text: only deterministic lines go there. Timings (the
//! interpreter's instructions per second) go to standard error as `perf:` lines, which xtask
//! reports but never diffs.
#![no_std]
#![no_main]

extern crate alloc;

mod device;
mod programs;
mod zones;

use alloc::vec::Vec;
use core::fmt;

use common::Status;
use semihosting::println;

/// Bytes of one LBA.
pub const LBA: usize = common::LBA_BYTES as usize;

#[aarch32_rt::entry]
fn main() -> ! {
    mps3_an536::init_heap();
    // The same golden text on every core: the core's name goes to standard error.
    println!("csd firmware self-test");
    semihosting::eprintln!("board: {}", env!("CSD_BOARD_CORE"));
    println!("wire version {}", common::WIRE_VERSION);
    let mut checks = Checks::default();
    let zones = zones::run(&mut checks);
    let mut host = device::run(zones, &mut checks);
    programs::run(&mut host, &mut checks);
    if checks.failed == 0 {
        println!("self-test passed ({} checks)", checks.passed);
        mps3_an536::exit(0)
    }
    println!(
        "self-test FAILED: {} of {} checks",
        checks.failed,
        checks.total()
    );
    mps3_an536::exit(1)
}

/// Checks that hold or not; a failed one prints a `FAIL` line (which also breaks the diff).
#[derive(Debug, Default)]
pub struct Checks {
    passed: u32,
    failed: u32,
}

impl Checks {
    /// Records `ok`, printing `what` when it does not hold.
    pub fn check(&mut self, ok: bool, what: &str) {
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
            println!("FAIL: {what}");
        }
    }

    fn total(&self) -> u32 {
        self.passed + self.failed
    }
}

/// A command's outcome as one word: `ok`, or the status it failed with.
pub struct Said(pub Result<(), Status>);

impl fmt::Display for Said {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Ok(()) => f.write_str("ok"),
            Err(status) => write!(f, "{status}"),
        }
    }
}

/// `len` bytes of a pattern that differs for every `seed` and every offset.
pub fn pattern(seed: u32, len: usize) -> Vec<u8> {
    // xorshift32: cheap, deterministic, and never constant.
    let mut x = seed.wrapping_mul(0x9E37_79B9) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}
