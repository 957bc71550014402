//! The wire decoders on hostile bytes: the link's NVMe entries (and the commands decoded from
//! them), the ZNS zone report and the COBS link frames.
//!
//! First byte: which decoder; the rest is its input. Decoding never panics; whatever decodes
//! re-encodes to bytes that decode to the same value (postcard) and frames the reader accepts
//! carry a CRC that matches.
#![no_main]

use common::{
    command::{Command, CommandId, Submission},
    link::{self, CompletionEntry, DeviceMessage, FrameReader, HostMessage, SubmissionEntry},
    nvme,
    zns::{IdentifyZns, ZoneDescriptor},
};
use libfuzzer_sys::fuzz_target;
use serde::{de::DeserializeOwned, Serialize};

fn roundtrip<T: Serialize + DeserializeOwned + PartialEq + core::fmt::Debug>(bytes: &[u8]) {
    if let Ok((value, _rest)) = postcard::take_from_bytes::<T>(bytes) {
        let again = postcard::to_allocvec(&value).expect("a decoded value encodes");
        let back: T = postcard::from_bytes(&again).expect("an encoded value decodes");
        assert_eq!(value, back);
    }
}

/// A submission entry: whatever command it decodes to (with the entry's bytes as Execute
/// Program's parameter data) encodes to an entry that decodes to the same command.
fn submission(bytes: &[u8]) {
    roundtrip::<SubmissionEntry>(bytes);
    let Ok((entry, _)) = postcard::take_from_bytes::<SubmissionEntry>(bytes) else {
        return;
    };
    if let Ok((command, _)) = nvme::decode_with_data(entry.queue, &entry.sqe, bytes) {
        let (queue, sqe) =
            nvme::encode(CommandId(entry.sqe.cid), &command, 0).expect("a decoded command encodes");
        let again = nvme::parameter_data(&command);
        assert_eq!(nvme::decode(queue, &sqe, || again), Ok(command));
    }
}

/// A completion entry: one that carries a known status decodes, whatever command it answers.
fn completion(bytes: &[u8]) {
    roundtrip::<CompletionEntry>(bytes);
    if let Ok((entry, _)) = postcard::take_from_bytes::<CompletionEntry>(bytes) {
        let append = Command::ZoneAppend { zslba: 0, nlb: 1 };
        for command in [None, Some(&append), Some(&Command::Identify)] {
            let done = entry.completion(command);
            assert_eq!(
                done.is_some(),
                common::Status::from_code(entry.cqe.status).is_some()
            );
        }
    }
}

/// A zone report in the ZNS layout: one that decodes encodes again to the same count and
/// descriptors.
fn zone_report(bytes: &[u8]) {
    let decoded = |b: &[u8]| {
        nvme::read_zone_report(b)
            .and_then(|(count, zones)| Some((count, zones.collect::<Option<Vec<_>>>()?)))
    };
    if let Some((count, zones)) = decoded(bytes) {
        let mut again = vec![0u8; nvme::report_bytes(zones.len() as u32)];
        nvme::write_zone_report(count, &zones, &mut again);
        assert_eq!(decoded(&again), Some((count, zones)));
    }
}

/// Feeds `stream` to a reader with a small buffer (so overflow is reached) and decodes every
/// accepted frame as both message directions.
fn frames(stream: &[u8], buf_len: usize) {
    let mut reader = FrameReader::new(vec![0u8; buf_len]);
    for &b in stream {
        if let Some(Ok(frame)) = reader.push(b) {
            assert!(frame.message.len() + link::HEADER_BYTES + link::CRC_BYTES <= buf_len);
            let _ = frame.decode::<HostMessage<'_>>();
            let _ = frame.decode::<DeviceMessage<'_>>();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 8 {
        0 => submission(rest),
        1 => completion(rest),
        2 => zone_report(rest),
        3 => roundtrip::<IdentifyZns>(rest),
        4 => roundtrip::<ZoneDescriptor>(rest),
        5 => frames(rest, 64),
        6 => frames(rest, 4096),
        _ => {
            // A request carrying `rest` as its data, framed as a sender would, comes back
            // unchanged through the reader.
            let msg: HostMessage<'_> = link::ToDevice::Request {
                submission: SubmissionEntry::of(&Submission::new(CommandId(1), Command::Flush), 0)
                    .expect("a flush encodes"),
                host_len: rest.len() as u32,
                data: rest,
            };
            // Room for the header, the message (its tag, the queue type, the 64-byte entry,
            // two lengths) and the CRC; COBS adds a byte in 254 and the delimiters.
            let mut body = vec![0u8; rest.len() + 128];
            let mut out = vec![0u8; 2 * rest.len() + 192];
            let n = link::encode(7, &msg, &mut body, &mut out).expect("the frame fits");
            let mut reader = FrameReader::new(vec![0u8; out.len()]);
            let mut got = None;
            for &b in &out[..n] {
                if let Some(r) = reader.push(b) {
                    let frame = r.expect("an encoded frame is accepted");
                    assert_eq!(frame.seq, 7);
                    got = Some(frame.decode::<HostMessage<'_>>().expect("it decodes") == msg);
                }
            }
            assert_eq!(got, Some(true));
            frames(rest, 256);
        }
    }
});
