//! Hostile kernels: every clang-built object (the real kernels and the hostile ones of
//! `kernels/tests`), truncated at many lengths and with a bit flipped in every byte, goes
//! through the host's loader and the device's verifier and interpreter. Each ends in a typed,
//! clearly worded error or a run that stops (exit, fault or out of fuel): never a panic.
//!
//! Needs `target/kernels/` (`cargo xtask kernels`).

use std::path::PathBuf;

use crate::tally::{clear, Tally};
use firmware::ebpf::{self, Context, Env, HelperError, Program};

/// Fuel for one run: enough for the real kernels over a small file, small for loops.
const FUEL: u64 = 20_000;
/// Fuel of a product kernel as built over the 1000-byte file: enough for any of them to finish
/// (csv_filter copies and scans each byte, about 20 instructions a byte).
const AS_BUILT_FUEL: u64 = 1 << 20;

/// A small file snapshot and an output sink.
#[derive(Debug, Default)]
struct SmallEnv {
    out: usize,
}

impl Env for SmallEnv {
    fn read(&mut self, file_off: u64, dst: &mut [u8]) -> Result<usize, HelperError> {
        let left = 1000u64.saturating_sub(file_off) as usize;
        let n = left.min(dst.len());
        dst[..n].fill(0x42);
        Ok(n)
    }
    fn emit(&mut self, src: &[u8]) -> Result<(), HelperError> {
        self.out += src.len();
        Ok(())
    }
    fn log(&mut self, _msg: &[u8]) {}
    fn input(&mut self, _dst: &mut [u8]) -> Result<usize, HelperError> {
        Err(HelperError::NotSupported)
    }
}

fn objects() -> Vec<PathBuf> {
    let dir = tests::workspace_root().join("target/kernels");
    let mut found = Vec::new();
    for d in [dir.clone(), dir.join("tests")] {
        let entries = std::fs::read_dir(&d)
            .unwrap_or_else(|e| panic!("{}: {e}: run `cargo xtask kernels` first", d.display()));
        for e in entries {
            let path = e.expect("a directory entry").path();
            if path.extension().is_some_and(|x| x == "o") {
                found.push(path);
            }
        }
    }
    found.sort();
    assert!(
        found.len() >= 10,
        "too few kernel objects in {}",
        dir.display()
    );
    found
}

/// Links, loads and runs `bytes` to its exit; any error is a failure.
fn runs_to_exit(bytes: &[u8]) -> Result<(), String> {
    let image = host_shell::loader::link(bytes).map_err(|e| format!("link: {e}"))?;
    let program = Program::load(&image.to_bytes()).map_err(|e| format!("load: {e}"))?;
    let mut env = SmallEnv::default();
    ebpf::run_to_end(&program, &file_job(), &mut env, AS_BUILT_FUEL)
        .map(|_| ())
        .map_err(|e| format!("run: {e}"))
}

fn file_job() -> Context {
    Context {
        op: common::abi::op::FILE_JOB,
        file_size: 1000,
        len: 1000,
        out_cap: 4096,
        ..Context::default()
    }
}

/// Links, loads and runs `bytes`; `Err` only when something is mishandled.
fn link_load_run(bytes: &[u8]) -> Result<(), String> {
    let image = match host_shell::loader::link(bytes) {
        Ok(image) => image,
        Err(e) => return clear(&e.to_string()),
    };
    let program = match Program::load(&image.to_bytes()) {
        Ok(p) => p,
        Err(e) => return clear(&e.to_string()),
    };
    let mut env = SmallEnv::default();
    match ebpf::run_to_end(&program, &file_job(), &mut env, FUEL) {
        Ok((_, stats)) if stats.fuel_used > FUEL + 2_000 => {
            Err(format!("fuel {} far over the budget", stats.fuel_used))
        }
        Ok(_) => Ok(()),
        Err(e) => clear(&e.to_string()),
    }
}

/// Every object as built, truncated, and with one bit flipped in each byte.
#[test]
fn malformed_kernel_objects() {
    let mut tally = Tally::new("kernels");
    for path in objects() {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let bytes = std::fs::read(&path).expect("read the object");
        if name.starts_with("hostile_") {
            tally.check(format!("{name} as built"), || link_load_run(&bytes));
        } else {
            // The product kernels as built must link, load and exit: not merely fail cleanly.
            tally.check(format!("{name} as built"), || runs_to_exit(&bytes));
        }
        let step = (bytes.len() / 128).max(1);
        for len in (0..bytes.len()).step_by(step).chain(0..64) {
            tally.check(format!("{name} cut at {len}"), || {
                link_load_run(&bytes[..len])
            });
        }
        let mut flipped = bytes.clone();
        for i in 0..flipped.len() {
            let bit = 1u8 << (i % 8);
            flipped[i] ^= bit;
            tally.check(format!("{name} bit {} of byte {i}", i % 8), || {
                link_load_run(&flipped)
            });
            flipped[i] ^= bit;
        }
    }
    tally.finish();
}

/// Program images (what Load Program carries) with a corrupt header or instructions: each is
/// refused with a typed error or runs to a stop.
#[test]
fn malformed_program_images() {
    let mut tally = Tally::new("program images");
    for path in objects() {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let Ok(image) = host_shell::loader::link(&std::fs::read(&path).expect("read")) else {
            continue;
        };
        let mut bytes = image.to_bytes();
        for len in 0..bytes.len().min(200) {
            tally.check(
                format!("{name} image cut at {len}"),
                || match Program::load(&bytes[..len]) {
                    Ok(_) if len < bytes.len() => Err("a truncated image loaded".into()),
                    Ok(_) => Ok(()),
                    Err(e) => clear(&e.to_string()),
                },
            );
        }
        for i in 0..bytes.len() {
            for bit in [0u8, 3, 7] {
                bytes[i] ^= 1 << bit;
                tally.check(format!("{name} image bit {bit} of byte {i}"), || {
                    let Ok(p) = Program::load(&bytes).map_err(|e| e.to_string()) else {
                        return Ok(());
                    };
                    let ctx = Context {
                        out_cap: 64,
                        ..Context::default()
                    };
                    match ebpf::run_to_end(&p, &ctx, &mut SmallEnv::default(), FUEL) {
                        Ok(_) => Ok(()),
                        Err(e) => clear(&e.to_string()),
                    }
                });
                bytes[i] ^= 1 << bit;
            }
        }
    }
    tally.finish();
}
