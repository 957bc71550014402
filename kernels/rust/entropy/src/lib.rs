//! entropy: byte histogram of `offset..offset+len` of the file snapshot, the same output as
//! `kernels/entropy.c`: 256 little-endian u64 counts (2048 bytes). Returns the bytes counted.
//! The counts live at the start of scratch memory (zeroed at the start of a run); the rest (up
//! to 4 KiB) is the read buffer.
#![no_std]

use csd::{Error, Run};

csd::kernel!(main);

const COUNTS_BYTES: usize = 256 * 8;
const CHUNK: usize = 4096;

fn main(run: Run<'_>) -> Result<u64, Error> {
    let ctx = run.ctx;
    if run.scratch.len() <= COUNTS_BYTES {
        return Err(Error::INVALID);
    }
    let (counts, rest) = run.scratch.split_at_mut(COUNTS_BYTES);
    // Scratch memory starts zeroed: so do the counts. (A fixed-size array: indexing it with
    // a byte cannot fail, so the kernel has no panic path for the verifier to refuse.)
    let Some(counts) = csd::words(counts).first_chunk_mut::<256>() else {
        return Err(Error::INVALID);
    };
    let chunk = rest.len().min(CHUNK);
    let buf = &mut rest[..chunk];
    let mut pos = ctx.offset;
    let end = pos.saturating_add(ctx.len);
    let mut total = 0u64;
    while pos < end {
        let want = buf.len().min((end - pos) as usize);
        let n = csd::read(pos, &mut buf[..want])?.min(want);
        if n == 0 {
            break;
        }
        for &b in &buf[..n] {
            counts[usize::from(b)] += 1;
        }
        pos += n as u64;
        total += n as u64;
    }
    csd::emit(csd::bytes_of(counts))?;
    Ok(total)
}
