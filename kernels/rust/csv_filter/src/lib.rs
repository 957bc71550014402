//! csv_filter: the records (lines) of a CSV file whose field `param0` (0-based, comma
//! separated) is the unsigned decimal number `param1`, emitted as they are (newline
//! included). Returns the number of records emitted. A record longer than 1 KiB is skipped; a
//! last record without a newline counts as one; line ends (CR, LF) are not part of a field;
//! numbers above 1,844,674,407,370,955,160 never match.
//!
//! Written without a panic path (`get` rather than indexing): the device refuses a program
//! that could run off its end, which is what a call to a panic is to its verifier.
#![no_std]

use csd::{Error, Run};

csd::kernel!(main);

const LINE: usize = 1024;
const CHUNK: usize = 4096;

/// Whether field `field` of `line` is the decimal `value`, in one pass.
#[inline(always)]
fn matches(line: &[u8], field: u64, value: u64) -> bool {
    let (mut current, mut n, mut digits) = (0u64, 0u64, 0u32);
    for &b in line {
        if b == b',' {
            if current == field {
                break;
            }
            current += 1;
        } else if current == field && b != b'\r' && b != b'\n' {
            if !b.is_ascii_digit() || n > (u64::MAX - 9) / 10 {
                return false;
            }
            n = n * 10 + u64::from(b - b'0');
            digits += 1;
        }
    }
    current == field && digits > 0 && n == value
}

fn main(run: Run<'_>) -> Result<u64, Error> {
    let ctx = run.ctx;
    let (line, rest) = run.scratch.split_at_mut(run.scratch.len().min(LINE));
    let Some(buf) = rest.get_mut(..CHUNK) else {
        return Err(Error::INVALID);
    };
    let (mut len, mut too_long, mut emitted) = (0usize, false, 0u64);
    let mut pos = 0u64;
    loop {
        let n = csd::read(pos, buf)?;
        let Some(read) = buf.get(..n).filter(|r| !r.is_empty()) else {
            break;
        };
        pos += n as u64;
        for &b in read {
            match line.get_mut(len) {
                Some(slot) => {
                    *slot = b;
                    len += 1;
                }
                None => too_long = true,
            }
            if b == b'\n' {
                let record = line.get(..len).unwrap_or_default();
                if !too_long && matches(record, ctx.param0, ctx.param1) {
                    csd::emit(record)?;
                    emitted += 1;
                }
                len = 0;
                too_long = false;
            }
        }
    }
    let record = line.get(..len).unwrap_or_default();
    if !record.is_empty() && !too_long && matches(record, ctx.param0, ctx.param1) {
        csd::emit(record)?;
        emitted += 1;
    }
    Ok(emitted)
}
