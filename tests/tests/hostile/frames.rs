//! Malformed frames on the serial link: truncated, bit-flipped, oversized, of another version,
//! with a valid checksum over garbage, with trailing bytes, or plain noise. The frame reader
//! rejects each with a typed error (or skips it), never panics, and the next good frame after
//! it decodes; the host's `Link` answers a hostile stream by retransmitting and completes its
//! exchange when the good answer arrives.

use std::{
    collections::VecDeque,
    io::{self, Read, Write},
    time::Duration,
};

use crate::tally::Tally;
use common::{
    command::{CommandId, Completion},
    link::{self, CompletionEntry, DecodeError, DeviceInfo, DeviceMessage, FrameReader, ToHost},
    Status,
};
use host_shell::link::{Link, Port};
use testkit::rng::pattern;

fn frame<M: serde::Serialize>(seq: u32, msg: &M) -> Vec<u8> {
    let mut body = vec![0u8; 4096];
    let mut out = vec![0u8; 8192];
    let n = link::encode(seq, msg, &mut body, &mut out).expect("encode");
    out.truncate(n);
    out
}

fn hello_info() -> DeviceInfo {
    DeviceInfo {
        wire_version: common::WIRE_VERSION,
        max_data_bytes: link::MAX_DATA_BYTES,
    }
}

/// CRC-32 (ISO-HDLC), to build frames with a valid checksum over hostile contents.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// COBS-encodes `body` between delimiters, as a sender frames it.
fn cobs_frame(body: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    let mut block = Vec::new();
    for &b in body {
        if b == 0 {
            out.push(block.len() as u8 + 1);
            out.append(&mut block);
        } else {
            block.push(b);
            if block.len() == 254 {
                out.push(255);
                out.append(&mut block);
            }
        }
    }
    out.push(block.len() as u8 + 1);
    out.append(&mut block);
    out.push(0);
    out
}

/// A body with a valid checksum: version, sequence number, `message`.
fn checked_body(version: u16, seq: u32, message: &[u8]) -> Vec<u8> {
    let mut body = version.to_le_bytes().to_vec();
    body.extend_from_slice(&seq.to_le_bytes());
    body.extend_from_slice(message);
    let crc = crc32(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    body
}

/// Every hostile byte stream, named.
fn hostile_streams() -> Vec<(String, Vec<u8>)> {
    let completion = CompletionEntry::of(&Completion::status(CommandId(9), Status::Success));
    let response: DeviceMessage<'_> = ToHost::Response {
        completion,
        data: &[1, 2, 3, 0, 0, 5, 255],
    };
    let good = frame(5, &response);
    let mut streams = Vec::new();
    for len in 0..good.len() {
        streams.push((format!("response cut at {len}"), good[..len].to_vec()));
    }
    for i in 0..good.len() {
        for bit in 0..8 {
            let mut f = good.clone();
            f[i] ^= 1 << bit;
            streams.push((format!("response bit {bit} of byte {i}"), f));
        }
    }
    let msg = postcard::to_allocvec(&response).expect("encode");
    for version in [0u16, link::LINK_VERSION - 1, link::LINK_VERSION + 1, 0xFFFF] {
        streams.push((
            format!("version {version}"),
            cobs_frame(&checked_body(version, 5, &msg)),
        ));
    }
    let mut trailing = msg.clone();
    trailing.extend_from_slice(&[7, 7, 7]);
    streams.push((
        "trailing bytes".into(),
        cobs_frame(&checked_body(link::LINK_VERSION, 5, &trailing)),
    ));
    for cut in 0..msg.len() {
        streams.push((
            format!("checked message cut at {cut}"),
            cobs_frame(&checked_body(link::LINK_VERSION, 5, &msg[..cut])),
        ));
    }
    for seed in 0..64u64 {
        let garbage = pattern(seed, 1 + (seed as usize * 37) % 700);
        streams.push((
            format!("checked garbage {seed}"),
            cobs_frame(&checked_body(link::LINK_VERSION, 5, &garbage)),
        ));
        streams.push((
            format!("noise {seed}"),
            pattern(seed + 1000, 1 + seed as usize * 13),
        ));
    }
    streams.push(("empty frames".into(), vec![0; 64]));
    streams.push(("short bodies".into(), vec![0, 1, 0, 2, 1, 0, 3, 1, 1, 0]));
    streams.push((
        "oversized frame".into(),
        vec![0x55; link::MAX_FRAME_BYTES + 10],
    ));
    streams.push(("bad cobs".into(), vec![0, 200, 1, 2, 3, 0]));
    streams
}

/// The reader rejects or skips each hostile stream and then decodes a good frame.
#[test]
fn frame_reader_rejects_and_resynchronises() {
    let mut tally = Tally::new("link frames");
    let after: DeviceMessage<'_> = ToHost::Hello(hello_info());
    let good = frame(77, &after);
    let mut reader = FrameReader::new(vec![0u8; link::MAX_FRAME_BYTES]);
    for (name, stream) in hostile_streams() {
        // A truncated or bit-flipped frame can never pass the CRC-32. A frame of another
        // version is refused by the reader; a trailing byte or a cut message passes the
        // checksum (it is valid on purpose) and must be refused when decoded.
        let corrupted = name.starts_with("response ");
        let version = name
            .strip_prefix("version ")
            .map(|v| v.parse::<u16>().expect("a version number"));
        let undecodable = name == "trailing bytes" || name.starts_with("checked message cut");
        tally.check(&name, || {
            let mut refused_version = false;
            for &b in &stream {
                match reader.push(b) {
                    Some(Err(DecodeError::UnsupportedVersion(v))) if Some(v) == version => {
                        refused_version = true
                    }
                    Some(Ok(f)) => {
                        if corrupted || version.is_some() {
                            return Err("a corrupted frame passed the checks".into());
                        }
                        let device = f.decode::<DeviceMessage<'_>>();
                        if undecodable && device.is_ok() {
                            return Err(format!("a malformed message decoded: {device:?}"));
                        }
                    }
                    _ => {}
                }
            }
            if version.is_some() && !refused_version {
                return Err("a frame of another version was not refused as such".into());
            }
            let mut got = None;
            for &b in &good {
                if let Some(Ok(f)) = reader.push(b) {
                    got = Some((f.seq, f.decode::<DeviceMessage<'_>>() == Ok(after.clone())));
                }
            }
            match got {
                Some((77, true)) => Ok(()),
                other => Err(format!("the good frame after it came out as {other:?}")),
            }
        });
    }
    tally.finish();
}

/// A port that serves a script of byte chunks and swallows what the host sends.
#[derive(Debug)]
struct ScriptPort {
    chunks: VecDeque<Vec<u8>>,
}

impl Read for ScriptPort {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(mut chunk) = self.chunks.pop_front() else {
            return Err(io::ErrorKind::TimedOut.into());
        };
        let n = chunk.len().min(buf.len());
        buf[..n].copy_from_slice(&chunk[..n]);
        if n < chunk.len() {
            self.chunks.push_front(chunk.split_off(n));
        }
        Ok(n)
    }
}

impl Write for ScriptPort {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Port for ScriptPort {
    fn set_timeout(&mut self, _timeout: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
}

/// The host's link gets each hostile stream before the board's good answer: it retransmits
/// and its `hello` still completes with the good answer.
#[test]
fn host_link_survives_hostile_answers() {
    let mut tally = Tally::new("host link");
    let answer = frame(1, &ToHost::<CompletionEntry>::Hello(hello_info()));
    // (An empty read is the end of the link, not a hostile answer.)
    let streams = hostile_streams().into_iter().filter(|(_, s)| !s.is_empty());
    for (name, stream) in streams.step_by(5) {
        tally.check(&name, || {
            let port = ScriptPort {
                chunks: VecDeque::from([stream, answer.clone()]),
            };
            let mut link = Link::new(port);
            link.set_timeouts(Duration::from_millis(20), Duration::from_secs(5));
            match link.hello() {
                Ok(info) if info == hello_info() => Ok(()),
                other => Err(format!("hello ended with {other:?}")),
            }
        });
    }
    tally.finish();
}
