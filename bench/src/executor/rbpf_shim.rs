//! rbpf's interpreter and JIT as the reference the executor is measured against.
//!
//! rbpf calls helpers as context-free `fn(u64, u64, u64, u64, u64) -> u64` with raw host
//! pointers into the kernel's memory, so the helpers here keep the file, the scratch memory and
//! the output in a thread-local and move bytes through those pointers. That is `unsafe` by
//! nature; it is confined to this module of the benchmark harness, which never ships.
#![allow(
    unsafe_code,
    reason = "rbpf's helper ABI hands over raw kernel pointers"
)]

use std::cell::RefCell;

use common::abi;

struct State {
    file: Vec<u8>,
    scratch: Vec<u8>,
    out: Vec<u8>,
}

thread_local! {
    static STATE: RefCell<State> =
        const { RefCell::new(State { file: Vec::new(), scratch: Vec::new(), out: Vec::new() }) };
}

/// How rbpf should run the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Interpreter,
    Jit,
}

fn read(file_off: u64, dst: u64, len: u64, _: u64, _: u64) -> u64 {
    STATE.with(|state| {
        let state = state.borrow();
        let start = (file_off as usize).min(state.file.len());
        let n = (len as usize).min(state.file.len() - start);
        // SAFETY: the kernel passed `dst`..`dst+len` inside memory rbpf handed it (its scratch,
        // registered as allowed memory, or its stack); `n <= len`, and the source is the file.
        unsafe { std::ptr::copy_nonoverlapping(state.file.as_ptr().add(start), dst as *mut u8, n) };
        n as u64
    })
}

fn emit(src: u64, len: u64, _: u64, _: u64, _: u64) -> u64 {
    STATE.with(|state| {
        let mut state = state.borrow_mut();
        // SAFETY: the kernel passed `src`..`src+len` inside its own memory (scratch or stack).
        let bytes = unsafe { std::slice::from_raw_parts(src as *const u8, len as usize) };
        state.out.extend_from_slice(bytes);
        len
    })
}

fn scratch(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    STATE.with(|state| state.borrow_mut().scratch.as_mut_ptr() as u64)
}

fn log(_: u64, len: u64, _: u64, _: u64, _: u64) -> u64 {
    len.min(u64::from(abi::LOG_MAX_BYTES))
}

/// Runs the linked kernel `text` over `file` with `ctx` as its context; returns r0 and the
/// output.
pub fn run(
    text: &[u8],
    file: &[u8],
    ctx: &[u8; 64],
    scratch_len: usize,
    mode: Mode,
) -> anyhow::Result<(u64, Vec<u8>)> {
    let scratch_range = STATE.with(|state| {
        let mut state = state.borrow_mut();
        state.file.clear();
        state.file.extend_from_slice(file);
        state.scratch = vec![0; scratch_len];
        state.out.clear();
        let start = state.scratch.as_ptr() as u64;
        start..start + scratch_len as u64
    });
    let mut vm = rbpf::EbpfVmRaw::new(Some(text))?;
    vm.register_helper(abi::helper::READ, read)?;
    vm.register_helper(abi::helper::EMIT, emit)?;
    vm.register_helper(abi::helper::SCRATCH, scratch)?;
    vm.register_helper(abi::helper::LOG, log)?;
    vm.register_allowed_memory(scratch_range);
    let mut mem = *ctx;
    let r0 = match mode {
        Mode::Interpreter => vm.execute_program(&mut mem)?,
        Mode::Jit => {
            vm.jit_compile()?;
            // SAFETY: rbpf's JIT runs the same verified-by-rbpf program over `mem`; the helpers
            // above are the only way it reaches other memory.
            unsafe { vm.execute_program_jit(&mut mem)? }
        }
    };
    let out = STATE.with(|state| std::mem::take(&mut state.borrow_mut().out));
    Ok((r0, out))
}
