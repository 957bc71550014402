//! Instructions per second of the csd executor against rbpf 0.4's interpreter (and native
//! Rust) on a byte-histogram loop, the core of the entropy kernel, over the same buffer.
//!
//! Run: `cargo run --release -p firmware --example ebpf_speed [MiB]` (default 64).
//! Ours pulls the data with `csd_read` in 64 KiB chunks into scratch; rbpf gets the whole
//! buffer as its memory. The inner loop is the same 8 instructions per byte in both.

use std::time::Instant;

use firmware::ebpf::{Context, Env, HelperError, Program, Vm};

/// Our kernel: histogram in scratch[0..2048], read buffer at scratch[2048..].
const OURS: &str = "
    call 3
    mov64 r6, r0
    mov64 r8, 0
    mov64 r1, r8
    mov64 r2, r6
    add64 r2, 2048
    mov64 r3, 65536
    call 1
    jsle r0, 0, +14
    mov64 r2, r6
    add64 r2, 2048
    mov64 r7, r2
    add64 r7, r0
    add64 r8, r0
    ldxb r3, [r2+0]
    lsh64 r3, 3
    add64 r3, r6
    ldxdw r4, [r3+0]
    add64 r4, 1
    stxdw [r3+0], r4
    add64 r2, 1
    jlt r2, r7, -8
    ja -20
    ldxdw r0, [r6+776]
    exit";

/// rbpf's kernel: r1 = data, the histogram follows the data in the same memory.
fn rbpf_kernel(len: usize) -> String {
    format!(
        "
    mov64 r7, {len}
    add64 r7, r1
    mov64 r6, r7
    mov64 r2, r1
    ldxb r3, [r2+0]
    lsh64 r3, 3
    add64 r3, r6
    ldxdw r4, [r3+0]
    add64 r4, 1
    stxdw [r3+0], r4
    add64 r2, 1
    jlt r2, r7, -8
    ldxdw r0, [r6+776]
    exit"
    )
}

struct File<'a>(&'a [u8]);

impl Env for File<'_> {
    fn read(&mut self, file_off: u64, dst: &mut [u8]) -> Result<usize, HelperError> {
        let off = usize::try_from(file_off).map_err(|_| HelperError::Invalid)?;
        let rest = self.0.get(off..).unwrap_or(&[]);
        let n = rest.len().min(dst.len());
        dst[..n].copy_from_slice(&rest[..n]);
        Ok(n)
    }
    fn emit(&mut self, _: &[u8]) -> Result<(), HelperError> {
        Ok(())
    }
    fn log(&mut self, _: &[u8]) {}
    fn input(&mut self, _: &mut [u8]) -> Result<usize, HelperError> {
        Err(HelperError::NotSupported)
    }
}

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("size in MiB"))
        .unwrap_or(64);
    let len = mib << 20;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();

    // Native Rust.
    let t = Instant::now();
    let mut hist = [0u64; 256];
    for &b in &data {
        hist[usize::from(b)] += 1;
    }
    let native = t.elapsed();
    let want = hist[usize::from(b'a')];

    // csd executor.
    let text = rbpf::assembler::assemble(OURS).expect("assemble ours");
    let program = Program::load(&firmware::ebpf::encode_image(&text, &[])).expect("load ours");
    let mut vm = Vm::new(2048 + 65536);
    let t = Instant::now();
    let (r0, stats) = vm
        .run_to_end(&program, &Context::default(), &mut File(&data), u64::MAX)
        .expect("run ours");
    let ours = t.elapsed();
    assert_eq!(r0, want, "csd histogram");

    // rbpf interpreter.
    let text = rbpf::assembler::assemble(&rbpf_kernel(len)).expect("assemble rbpf");
    let vm = rbpf::EbpfVmRaw::new(Some(&text)).expect("rbpf load");
    let mut mem = data.clone();
    mem.resize(len + 2048, 0);
    let t = Instant::now();
    let r = vm.execute_program(&mut mem).expect("rbpf run");
    let theirs = t.elapsed();
    assert_eq!(r, want, "rbpf histogram");
    let rbpf_insns = 8 * len as u64 + 6;

    let mips = |n: u64, d: std::time::Duration| n as f64 / d.as_secs_f64() / 1e6;
    println!("byte histogram over {mib} MiB");
    println!(
        "native : {:>8.1} ms  {:>8.1} MiB/s",
        native.as_secs_f64() * 1e3,
        mib as f64 / native.as_secs_f64()
    );
    println!(
        "csd    : {:>8.1} ms  {:>8.1} MiB/s  {} insns  {:>7.1} M insns/s  fuel {}",
        ours.as_secs_f64() * 1e3,
        mib as f64 / ours.as_secs_f64(),
        stats.instructions,
        mips(stats.instructions, ours),
        stats.fuel_used
    );
    println!(
        "rbpf   : {:>8.1} ms  {:>8.1} MiB/s  {} insns  {:>7.1} M insns/s",
        theirs.as_secs_f64() * 1e3,
        mib as f64 / theirs.as_secs_f64(),
        rbpf_insns,
        mips(rbpf_insns, theirs)
    );
    println!(
        "csd / rbpf: {:.2}x instructions per second",
        mips(stats.instructions, ours) / mips(rbpf_insns, theirs)
    );
}
