//! The `user.csd.*` keys: setting, reading and removing them, and the file job they start.

use std::sync::Arc;

use common::program::ProgramOp;

use super::error::{check_run, OffloadError, Result};
use super::{Caller, FileJob, Key, Offload};
use crate::lfs::InodeNo;
use crate::offload::{lock, Job};

/// Every offload key starts so.
pub const PREFIX: &[u8] = b"user.csd.";
const ARGS: &[u8] = b"user.csd.args";
const READ_STREAM: &[u8] = b"user.csd.read_stream";
const WRITE_STREAM: &[u8] = b"user.csd.write_stream";
const FILE_JOB: &[u8] = b"user.csd.file_job";
const RESULT: &[u8] = b"user.csd.result";
const STATS: &[u8] = b"user.csd.stats";
const LINK: &[u8] = b"user.csd.link";
const COUNTERS: &[u8] = b"user.csd.counters";
const LOG: &[u8] = b"user.csd.log";

/// Largest extended attribute value Linux passes (`XATTR_SIZE_MAX`).
const XATTR_MAX: usize = 64 << 10;

fn key_name(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// `param0 param1`, each decimal or `0x` hex; a missing param1 is 0.
pub fn parse_args(value: &[u8]) -> Result<(u64, u64)> {
    let text = std::str::from_utf8(value)
        .map_err(|_| OffloadError::Invalid("user.csd.args is not text".into()))?;
    let words: Vec<&str> = text
        .trim_matches(|c: char| c.is_whitespace() || c == '\0')
        .split_whitespace()
        .collect();
    let parse = |w: &str| -> Result<u64> {
        let parsed = match w.strip_prefix("0x").or_else(|| w.strip_prefix("0X")) {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => w.parse(),
        };
        parsed.map_err(|_| {
            OffloadError::Invalid(format!(
                "user.csd.args: {w:?} is not a number (decimal or 0x hex)"
            ))
        })
    };
    match words.as_slice() {
        [a] => Ok((parse(a)?, 0)),
        [a, b] => Ok((parse(a)?, parse(b)?)),
        _ => Err(OffloadError::Invalid(
            "user.csd.args holds `param0 param1`".into(),
        )),
    }
}

impl Offload {
    /// setxattr of a `user.csd.*` key.
    pub fn setxattr(&self, caller: Caller, ino: InodeNo, name: &[u8], value: &[u8]) -> Result<()> {
        self.sweep();
        let process = Self::process(caller)?;
        let key = (ino, process);
        match name {
            ARGS => {
                let args = parse_args(value)?;
                lock(&self.procs).entry(key).or_default().args = Some(args);
                Ok(())
            }
            READ_STREAM | WRITE_STREAM => {
                let write = name == WRITE_STREAM;
                let stream = Arc::new(self.start_stream(caller, key, value)?);
                let old = {
                    let mut procs = lock(&self.procs);
                    let state = procs.entry(key).or_default();
                    let slot = if write {
                        &mut state.write
                    } else {
                        &mut state.read
                    };
                    slot.replace(stream)
                };
                if let Some(old) = old {
                    self.retire(&old);
                }
                Ok(())
            }
            FILE_JOB => self.file_job(caller, key, value),
            RESULT | STATS | LOG | LINK | COUNTERS => {
                Err(OffloadError::ReadOnlyKey(key_name(name)))
            }
            _ => Err(OffloadError::Invalid(format!(
                "{} is not an offload key (user.csd.args, read_stream, write_stream, file_job)",
                key_name(name)
            ))),
        }
    }

    /// getxattr of a `user.csd.*` key.
    pub fn getxattr(&self, caller: Caller, ino: InodeNo, name: &[u8]) -> Result<Vec<u8>> {
        if name == LINK {
            let (to_device, to_host) =
                (self.device)().map_or((0, 0), |s| (s.link_to_device_bytes, s.link_to_host_bytes));
            return Ok(format!("to_device={to_device} to_host={to_host}").into_bytes());
        }
        if name == COUNTERS && ino == InodeNo::ROOT {
            let mut line = self.fs.stats().map_err(OffloadError::Lfs)?.to_string();
            if let Some(device) = (self.device)() {
                line.push(' ');
                line.push_str(&device.to_string());
            }
            return Ok(line.into_bytes());
        }
        let not_set = || OffloadError::NotSet(key_name(name));
        if !self.has_state(ino) {
            return Err(not_set());
        }
        let process = Self::process(caller)?;
        let procs = lock(&self.procs);
        let state = procs.get(&(ino, process)).ok_or_else(not_set)?;
        let value = match name {
            ARGS => state.args.map(|(a, b)| format!("{a} {b}").into_bytes()),
            READ_STREAM => state.read.as_ref().map(|s| s.kernel.name().into()),
            WRITE_STREAM => state.write.as_ref().map(|s| s.kernel.name().into()),
            FILE_JOB => state.job.as_ref().map(|j| j.kernel.clone().into_bytes()),
            RESULT => state.job.as_ref().map(|j| j.output.clone()),
            LOG => lock(&state.last).as_ref().map(|last| {
                let mut text = Vec::new();
                for line in &last.log {
                    text.extend_from_slice(line);
                    text.push(b'\n');
                }
                text
            }),
            STATS => lock(&state.last).as_ref().map(|last| {
                let s = last.stats;
                format!(
                    "instructions={} fuel_used={} device_bytes_read={} bytes_returned={} \
                     device_ns={} device_compute_ns={} device_nand_ns={} jit={}",
                    s.instructions,
                    s.fuel_used,
                    s.device_bytes_read,
                    s.bytes_returned,
                    s.device_ns,
                    s.device_compute_ns,
                    s.device_nand_ns,
                    u8::from(s.jit)
                )
                .into_bytes()
            }),
            _ => None,
        };
        value.ok_or_else(not_set)
    }

    /// removexattr of a `user.csd.*` key: ends that offload.
    pub fn removexattr(&self, caller: Caller, ino: InodeNo, name: &[u8]) -> Result<()> {
        let not_set = || OffloadError::NotSet(key_name(name));
        let process = Self::process(caller)?;
        let key = (ino, process);
        let mut retire = None;
        {
            let mut procs = lock(&self.procs);
            let state = procs.get_mut(&key).ok_or_else(not_set)?;
            let found = match name {
                ARGS => state.args.take().is_some(),
                READ_STREAM => {
                    retire = state.read.take();
                    retire.is_some()
                }
                WRITE_STREAM => {
                    retire = state.write.take();
                    retire.is_some()
                }
                FILE_JOB | RESULT => state.job.take().is_some(),
                _ => false,
            };
            if state.is_empty() {
                procs.remove(&key);
            }
            if !found {
                return Err(not_set());
            }
        }
        if let Some(stream) = retire {
            self.retire(&stream);
        }
        Ok(())
    }

    /// Runs the kernel `value` names once over a snapshot of the whole file, and keeps its
    /// output for `user.csd.result` (or forgets the last one if this run fails).
    fn file_job(&self, caller: Caller, key: Key, value: &[u8]) -> Result<()> {
        let cap = self.engine.resources().max_output_bytes;
        let (kernel, mut held) = self.prepare(caller, key.0, value, cap)?;
        let job = Job {
            op: ProgramOp::FileJob,
            offset: 0,
            len: held.ranges.file_size(),
            params: self.args_of(key),
            fuel: self.fuel,
            input: Vec::new(),
            max_output: cap,
        };
        let last = self.last_of(key);
        let ran = self
            .engine
            .run(
                &mut held.lease,
                &kernel,
                &held.ranges,
                job,
                |result, log| {
                    *lock(&last) = Some(super::LastRun::of(result, log));
                    check_run(kernel.name(), result)?;
                    // Refused before it crosses the link.
                    let size = result.stats.bytes_returned.min(u64::from(cap)) as usize;
                    if size > XATTR_MAX {
                        return Err(OffloadError::TooBig(size));
                    }
                    Ok(true)
                },
            )
            .inspect_err(|e| self.log_reclaimed(e, &held));
        self.free(held.lease, Some(held.ranges));
        let mut procs = lock(&self.procs);
        let state = procs.entry(key).or_default();
        match ran {
            Ok(ran) => {
                state.job = Some(FileJob {
                    kernel: kernel.name().to_string(),
                    output: ran.output,
                });
                Ok(())
            }
            Err(e) => {
                state.job = None;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Arguments: decimal, hex, a missing second value; anything else is EINVAL.
    #[test]
    fn args_parse() {
        assert_eq!(parse_args(b"7 0x10").ok(), Some((7, 16)));
        assert_eq!(parse_args(b"0xff\n").ok(), Some((255, 0)));
        assert_eq!(parse_args(b" 1  2 \0").ok(), Some((1, 2)));
        for bad in [&b""[..], b"x", b"1 2 3", b"-1", b"0xzz", b"\xff"] {
            let err = parse_args(bad).expect_err("bad args");
            assert_eq!(err.errno(), libc::EINVAL, "{bad:?}");
        }
    }
}
