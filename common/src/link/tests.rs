use super::*;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

extern crate std;
use std::vec;
use std::vec::Vec;

/// A stand-in command envelope: the link does not care what it carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Sub {
    opcode: u8,
    lba: u64,
}

type Req<'a> = ToDevice<'a, Sub>;
type Resp<'a> = ToHost<'a, u16>;

fn frame<M: Serialize>(seq: u32, msg: &M) -> Vec<u8> {
    let mut body = vec![0u8; MAX_BODY_BYTES];
    let mut out = vec![0u8; MAX_FRAME_BYTES];
    let n = encode(seq, msg, &mut body, &mut out).expect("fits");
    out.truncate(n);
    out
}

/// Feeds `bytes` to a fresh reader and returns every frame result, messages decoded as `M`.
fn receive<M>(bytes: &[u8]) -> Vec<Result<(u32, M), DecodeError>>
where
    M: for<'de> Deserialize<'de>,
{
    let mut reader = FrameReader::new(vec![0u8; MAX_FRAME_BYTES]);
    let mut got = Vec::new();
    for &b in bytes {
        if let Some(r) = reader.push(b) {
            got.push(r.and_then(|f| Ok((f.seq, f.decode::<M>()?))));
        }
    }
    got
}

/// Owned forms of the borrowed messages, for comparing in tests.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
enum OwnedReq {
    Hello,
    Request {
        submission: Sub,
        host_len: u32,
        data: Vec<u8>,
    },
    Poll,
}

/// A Hello frame's bytes are pinned: header, postcard variant 0, CRC, COBS, delimiters
/// (checked against zlib's CRC-32 and a by-hand COBS encoding).
#[test]
fn golden_hello() {
    assert_eq!(
        frame(1, &Req::Hello),
        [0x00, 0x02, 0x02, 0x02, 0x01, 0x01, 0x01, 0x01, 0x05, 0xe7, 0xe7, 0x93, 0x37, 0x00]
    );
}

/// A Poll is the message variant after Request, and survives the trip.
#[test]
fn golden_poll() {
    let bytes = frame(3, &Req::Poll);
    // Version 2, sequence 3, variant 2; then the CRC.
    let body = [2u8, 0, 3, 0, 0, 0, 2];
    let mut want = vec![0x00];
    let mut full = body.to_vec();
    full.extend(CRC32.checksum(&body).to_le_bytes());
    want.extend(cobs::encode_vec(&full));
    want.push(0x00);
    assert_eq!(bytes, want);
    assert_eq!(receive::<OwnedReq>(&bytes), [Ok((3, OwnedReq::Poll))]);
}

/// A Request frame's bytes are pinned, data included.
#[test]
fn golden_request() {
    let msg = Req::Request {
        submission: Sub {
            opcode: 2,
            lba: 300,
        },
        host_len: 3,
        data: &[0xAA, 0x00, 0xBB],
    };
    assert_eq!(
        frame(0x0102_0304, &msg),
        [
            0x00, 0x02, 0x02, 0x0c, 0x04, 0x03, 0x02, 0x01, 0x01, 0x02, 0xac, 0x02, 0x03, 0x03,
            0xaa, 0x06, 0xbb, 0x4c, 0xb4, 0x08, 0x3a, 0x00
        ]
    );
}

/// The real entries travel in frames both ways: a request is its queue type and the 64 bytes
/// of its submission queue entry, a response the 16 bytes of its completion queue entry.
#[test]
fn roundtrip_real_envelope() {
    use crate::command::{Command, CommandId, CommandResult, Completion, Submission};
    let sub = Submission::new(CommandId(5), Command::Read { slba: 8, nlb: 2 });
    let entry = SubmissionEntry::of(&sub, 8192).expect("a read encodes");
    let msg = HostMessage::Request {
        submission: entry,
        host_len: 8192,
        data: &[],
    };
    let mut want = vec![1, 1]; // Request; an I/O queue
    want.extend(entry.sqe.to_bytes());
    want.extend([0x80, 0x40, 0]); // host_len 8192, no data
    assert_eq!(postcard::to_allocvec(&msg).unwrap(), want);
    let bytes = frame(77, &msg);
    let mut reader = FrameReader::new(vec![0u8; MAX_FRAME_BYTES]);
    let got: Vec<_> = bytes
        .iter()
        .filter_map(|&b| {
            reader
                .push(b)
                .map(|r| r.map(|f| (f.seq, f.decode::<HostMessage<'_>>().map(|m| m == msg))))
        })
        .collect();
    assert_eq!(got, [Ok((77, Ok(true)))]);

    let completion = Completion::ok(CommandId(5), CommandResult::Transferred(8192));
    let entry = CompletionEntry::of(&completion);
    assert_eq!(entry.completion(Some(&sub.command)), Some(completion));
    let done = DeviceMessage::Response {
        completion: entry,
        data: &[7; 8192],
    };
    let bytes = frame(77, &done);
    let mut reader = FrameReader::new(vec![0u8; MAX_FRAME_BYTES]);
    let got: Vec<_> = bytes
        .iter()
        .filter_map(|&b| {
            reader
                .push(b)
                .map(|r| r.map(|f| f.decode::<DeviceMessage<'_>>().map(|m| m == done)))
        })
        .collect();
    assert_eq!(got, [Ok(Ok(true))]);
}

/// Every device message survives the trip, the sequence number with it.
#[test]
fn roundtrip_to_host() {
    let msgs = [
        Resp::Hello(DeviceInfo {
            wire_version: 1,
            max_data_bytes: MAX_DATA_BYTES,
        }),
        Resp::Response {
            completion: 0x1B9,
            data: &[1, 2, 3, 0, 0, 0],
        },
        Resp::Nak(NakReason::BadChecksum),
        Resp::Pending { busy: true },
        Resp::Pending { busy: false },
    ];
    for (seq, msg) in msgs.iter().enumerate() {
        let bytes = frame(seq as u32, msg);
        let mut reader = FrameReader::new([0u8; 64]);
        let mut seen = 0;
        for &b in &bytes {
            if let Some(r) = reader.push(b) {
                let f = r.expect("clean frame");
                assert_eq!(f.seq, seq as u32);
                assert_eq!(&f.decode::<Resp<'_>>().expect("decodes"), msg);
                seen += 1;
            }
        }
        assert_eq!(seen, 1);
    }
}

/// The largest data fits in the bounded buffers; one byte more is refused on encode.
#[test]
fn largest_data_fits_and_more_is_refused() {
    let big = vec![0u8; MAX_DATA_BYTES as usize];
    let msg = Req::Request {
        submission: Sub {
            opcode: 0xFF,
            lba: u64::MAX,
        },
        host_len: MAX_DATA_BYTES,
        data: &big,
    };
    let bytes = frame(u32::MAX, &msg);
    assert!(bytes.len() <= MAX_FRAME_BYTES);
    let got = receive::<OwnedReq>(&bytes);
    assert!(
        matches!(&got[..], [Ok((u32::MAX, OwnedReq::Request { data, .. }))] if data.len() == big.len())
    );

    let too_big = vec![0u8; MAX_MESSAGE_BYTES];
    let msg = Req::Request {
        submission: Sub { opcode: 0, lba: 0 },
        host_len: 0,
        data: &too_big,
    };
    let mut body = vec![0u8; MAX_BODY_BYTES];
    let mut out = vec![0u8; MAX_FRAME_BYTES];
    assert_eq!(
        encode(0, &msg, &mut body, &mut out),
        Err(EncodeError::TooLarge)
    );
    let mut small = [0u8; 8];
    assert_eq!(
        encode(0, &Req::Hello, &mut body, &mut small),
        Err(EncodeError::TooLarge)
    );
}

/// A frame longer than the reader's buffer is dropped as TooLarge and the next one is read.
#[test]
fn overlong_frame_is_dropped() {
    let mut bytes = vec![0x00];
    bytes.extend(core::iter::repeat_n(0x55, 100));
    bytes.extend(frame(9, &Req::Hello));
    let mut reader = FrameReader::new([0u8; 32]);
    let mut got = Vec::new();
    for &b in &bytes {
        if let Some(r) = reader.push(b) {
            got.push(r.map(|f| f.seq));
        }
    }
    assert_eq!(got, [Err(DecodeError::TooLarge), Ok(9)]);
}

/// A frame of another link version is refused by version, not misread.
#[test]
fn other_version_is_refused() {
    // Version 3, seq 0, Hello (variant 0), then the CRC.
    let mut body = vec![3, 0, 0, 0, 0, 0, 0];
    body.extend(CRC32.checksum(&body).to_le_bytes());
    let mut bytes = vec![0x00];
    bytes.extend(cobs::encode_vec(&body));
    bytes.push(0x00);
    assert_eq!(
        receive::<OwnedReq>(&bytes),
        [Err(DecodeError::UnsupportedVersion(3))]
    );
}

/// Bytes after the message inside a checksummed frame make it corrupt.
#[test]
fn trailing_bytes_are_corrupt() {
    let body = [2, 0, 5, 0, 0, 0, 0, 0xEE];
    let mut full = body.to_vec();
    full.extend(CRC32.checksum(&body).to_le_bytes());
    let f = Frame::from_body(&full).expect("checks pass");
    assert_eq!(f.seq, 5);
    assert_eq!(f.decode::<OwnedReq>(), Err(DecodeError::CorruptFrame));
    assert_eq!(Frame::from_body(&full[..11]), Err(DecodeError::BadChecksum));
    assert_eq!(Frame::from_body(&full[..5]), Err(DecodeError::CorruptFrame));
}

fn request(seq: u32, lba: u64, data: &[u8]) -> (u32, OwnedReq, Vec<u8>) {
    let msg = Req::Request {
        submission: Sub { opcode: 1, lba },
        host_len: data.len() as u32,
        data,
    };
    let owned = OwnedReq::Request {
        submission: Sub { opcode: 1, lba },
        host_len: data.len() as u32,
        data: data.to_vec(),
    };
    (seq, owned, frame(seq, &msg))
}

fn oks(got: Vec<Result<(u32, OwnedReq), DecodeError>>) -> Vec<(u32, OwnedReq)> {
    got.into_iter().filter_map(Result::ok).collect()
}

proptest! {
    /// Garbage before, between and after frames never hides a frame nor forges one.
    #[test]
    fn resynchronises_after_garbage(
        g1 in proptest::collection::vec(any::<u8>(), 0..300),
        g2 in proptest::collection::vec(any::<u8>(), 0..300),
        g3 in proptest::collection::vec(any::<u8>(), 0..300),
        data in proptest::collection::vec(any::<u8>(), 0..600),
        lba in any::<u64>(),
    ) {
        let (s1, m1, f1) = request(7, lba, &data);
        let (s2, m2, f2) = request(8, !lba, &data);
        let stream: Vec<u8> = [g1, f1, g2, f2, g3].concat();
        prop_assert_eq!(oks(receive(&stream)), vec![(s1, m1), (s2, m2)]);
    }

    /// Any single bit flip in a frame makes it rejected, and the next frame still arrives.
    #[test]
    fn bit_flip_is_rejected(
        data in proptest::collection::vec(any::<u8>(), 0..600),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let (_, _, mut f1) = request(1, 42, &data);
        let (s2, m2, f2) = request(2, 43, &data);
        let i = at.index(f1.len());
        f1[i] ^= 1 << bit;
        let stream: Vec<u8> = [f1, f2].concat();
        prop_assert_eq!(oks(receive(&stream)), vec![(s2, m2)]);
    }

    /// A frame cut short anywhere is rejected, and the next frame still arrives.
    #[test]
    fn truncated_frame_is_rejected(
        data in proptest::collection::vec(any::<u8>(), 0..600),
        cut in any::<prop::sample::Index>(),
    ) {
        let (_, _, f1) = request(1, 42, &data);
        let (s2, m2, f2) = request(2, 43, &data);
        let keep = cut.index(f1.len() - 1);
        let stream: Vec<u8> = [&f1[..keep], &f2[..]].concat();
        prop_assert_eq!(oks(receive(&stream)), vec![(s2, m2)]);
    }

    /// Arbitrary bytes never panic the reader, whatever message type is asked for.
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = receive::<OwnedReq>(&bytes);
        let mut reader = FrameReader::new([0u8; 128]);
        for &b in &bytes {
            if let Some(Ok(f)) = reader.push(b) {
                let _ = f.decode::<Resp<'_>>();
            }
        }
    }
}
