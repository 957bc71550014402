//! The serial link between the host shell and a board running the firmware (for example the
//! Cortex-R52 in QEMU behind an emulated UART).
//!
//! # Frame format
//!
//! One frame carries one message. Before framing, its body is:
//!
//! ```text
//! offset 0  u16 LE  link version (LINK_VERSION); stays at offset 0 in every future version
//! offset 2  u32 LE  sequence number
//! offset 6  ...     the message, postcard-encoded (ToDevice or ToHost)
//! end - 4   u32 LE  CRC-32 (ISO-HDLC, as zlib) of every byte before it
//! ```
//!
//! The body is COBS-encoded (no 0x00 byte inside) and followed by one 0x00 delimiter. A sender
//! also starts every frame with a 0x00, so bytes of a broken earlier frame end as a frame of
//! their own (rejected) instead of spoiling the next one: the receiver resynchronises on the
//! next delimiter whatever came before. Empty frames (two delimiters in a row) are ignored.
//!
//! # Exchange
//!
//! Stop and wait: the host sends one [`ToDevice`] frame and waits for the [`ToHost`] frame with
//! the same sequence number. The device remembers its last response and sends it again, without
//! executing anything, when a request with the same sequence number arrives again (the host
//! retransmits after a timeout or a [`ToHost::Nak`]), so a lost response never runs a command
//! twice (a Zone Append must not append twice). A device answers a frame it cannot use with a
//! `Nak`; the host answers a bad frame by retransmitting its request.
//!
//! Execute Program goes on in the background: the device answers its request with
//! [`ToHost::Pending`] at once, and serves other requests while the run is in progress. The host
//! sends [`ToDevice::Poll`] to let the device run its kernels for a few slices; the answer is the
//! [`ToHost::Response`] of a run that finished (its completion names it), or `Pending` again.
//!
//! Data only, no allocation: the caller provides the buffers ([`MAX_BODY_BYTES`] and
//! [`MAX_FRAME_BYTES`] are enough for any frame).

use crc::{Crc, CRC_32_ISO_HDLC};
use serde::{Deserialize, Serialize};

use crate::{
    command::{Command, CommandResult, Completion, Submission},
    nvme::{self, Cqe, QueueType, Sqe, SqeError},
};

/// Version of the link framing. A receiver rejects a frame of another version.
pub const LINK_VERSION: u16 = 2;

/// Most DMA bytes one request or response carries: 1 MiB, four times the controller's largest
/// Read or Write (64 LBAs), room for a large extent list or kernel output.
pub const MAX_DATA_BYTES: u32 = 1024 * 1024;

/// Room for a message's fields besides its data (the entry, a completion's result).
const MAX_FIELDS_BYTES: usize = 256;

/// Bytes of the header before the message: version (u16) and sequence number (u32).
pub const HEADER_BYTES: usize = 6;

/// Bytes of the CRC-32 after the message.
pub const CRC_BYTES: usize = 4;

/// Largest postcard-encoded message.
pub const MAX_MESSAGE_BYTES: usize = MAX_DATA_BYTES as usize + MAX_FIELDS_BYTES;

/// Largest frame body before COBS: header, message and CRC.
pub const MAX_BODY_BYTES: usize = HEADER_BYTES + MAX_MESSAGE_BYTES + CRC_BYTES;

/// Largest frame on the wire: the COBS-encoded body between two delimiters.
pub const MAX_FRAME_BYTES: usize = 1 + cobs::max_encoding_length(MAX_BODY_BYTES) + 1;

/// The frame delimiter.
pub const DELIMITER: u8 = 0x00;

const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

/// What the host sends over the link.
pub type HostMessage<'a> = ToDevice<'a, SubmissionEntry>;

/// What the device sends over the link.
pub type DeviceMessage<'a> = ToHost<'a, CompletionEntry>;

/// A command on the link: the type of queue it is submitted to and its NVMe submission queue
/// entry (64 bytes, [`crate::nvme::encode`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmissionEntry {
    pub queue: QueueType,
    pub sqe: Sqe,
}

impl SubmissionEntry {
    /// The entry of `submission` for a host memory of `host_len` bytes (Execute Program's
    /// parameter data not included: [`crate::nvme::parameter_data`]).
    pub fn of(submission: &Submission, host_len: usize) -> Result<Self, SqeError> {
        let (queue, sqe) = nvme::encode(submission.cid, &submission.command, host_len)?;
        Ok(SubmissionEntry { queue, sqe })
    }
}

/// A completion on the link: its NVMe completion queue entry (16 bytes), and the result that
/// does not fit in one (a kernel run's outcome and counters, or why a program was refused;
/// [`crate::nvme::completion_entry`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionEntry {
    pub cqe: Cqe,
    pub rest: Option<CommandResult>,
}

impl CompletionEntry {
    /// The entry of `completion`.
    pub fn of(completion: &Completion) -> Self {
        let (cqe, rest) = nvme::completion_entry(completion);
        CompletionEntry { cqe, rest }
    }

    /// The completion it carries, of `command` when the host knows which command it answers;
    /// `None` for a status this device does not send.
    pub fn completion(&self, command: Option<&Command>) -> Option<Completion> {
        nvme::completion_of(command, &self.cqe, self.rest)
    }
}

/// A message from the host to the device. `S` is the command ([`SubmissionEntry`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToDevice<'a, S> {
    /// Opens a session: the device forgets its remembered response and answers with
    /// [`ToHost::Hello`].
    Hello,
    /// One command. `host_len` is the size of the command's host memory (its data buffer);
    /// `data` is what the device may read of it (Write data, a program chunk, an extent list),
    /// empty when the command only moves data to the host.
    Request {
        submission: S,
        host_len: u32,
        data: &'a [u8],
    },
    /// Runs the device's kernels for a few slices; answered with the completion of a run that
    /// finished, or [`ToHost::Pending`].
    Poll,
}

/// A message from the device to the host. `C` is the completion ([`CompletionEntry`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToHost<'a, C> {
    /// The answer to [`ToDevice::Hello`].
    Hello(DeviceInfo),
    /// The completion of the request with the same sequence number, with the bytes the device
    /// wrote to host memory (Read data, a zone report, a kernel's output): host memory from
    /// offset 0 up to the end of the furthest write.
    Response { completion: C, data: &'a [u8] },
    /// The device received a frame it could not use; the host should send its request again.
    Nak(NakReason),
    /// The request goes on in the background (an Execute Program accepted), or a
    /// [`ToDevice::Poll`] found no run finished yet. `busy`: whether runs are in progress.
    Pending { busy: bool },
}

/// What a device tells the host when a session opens.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DeviceInfo {
    /// The wire version (`crate::WIRE_VERSION`) the device speaks.
    pub wire_version: u16,
    /// Most DMA bytes the device accepts or returns in one frame.
    pub max_data_bytes: u32,
}

/// Why a device refused a frame.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum NakReason {
    CorruptFrame,
    BadChecksum,
    TooLarge,
    UnsupportedVersion,
}

/// Why a frame could not be encoded.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum EncodeError {
    /// The message does not fit in a frame (or in the buffers given).
    TooLarge,
}

/// Why a received frame was rejected.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DecodeError {
    /// The COBS framing, the header or the message is malformed (including truncated frames).
    CorruptFrame,
    /// The CRC-32 does not match the frame's contents.
    BadChecksum,
    /// The frame is longer than [`MAX_FRAME_BYTES`]; its bytes were dropped.
    TooLarge,
    /// The frame is of another link version.
    UnsupportedVersion(u16),
}

impl From<DecodeError> for NakReason {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::CorruptFrame => NakReason::CorruptFrame,
            DecodeError::BadChecksum => NakReason::BadChecksum,
            DecodeError::TooLarge => NakReason::TooLarge,
            DecodeError::UnsupportedVersion(_) => NakReason::UnsupportedVersion,
        }
    }
}

impl core::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            EncodeError::TooLarge => write!(f, "the message does not fit in one link frame"),
        }
    }
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecodeError::CorruptFrame => write!(f, "a link frame is malformed"),
            DecodeError::BadChecksum => write!(f, "a link frame's checksum does not match"),
            DecodeError::TooLarge => write!(f, "a link frame is longer than the link allows"),
            DecodeError::UnsupportedVersion(v) => {
                write!(f, "a link frame is of version {v}, not {LINK_VERSION}")
            }
        }
    }
}

impl core::error::Error for EncodeError {}
impl core::error::Error for DecodeError {}

/// Encodes `msg` with sequence number `seq` as one frame (leading delimiter, COBS body,
/// trailing delimiter) into `out`, using `body` as scratch. Returns the frame's length.
///
/// `body` needs [`MAX_BODY_BYTES`] and `out` [`MAX_FRAME_BYTES`] for the largest message.
pub fn encode<M: Serialize>(
    seq: u32,
    msg: &M,
    body: &mut [u8],
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let room = body.len().min(MAX_BODY_BYTES);
    let body = &mut body[..room];
    if body.len() < HEADER_BYTES + CRC_BYTES {
        return Err(EncodeError::TooLarge);
    }
    body[..2].copy_from_slice(&LINK_VERSION.to_le_bytes());
    body[2..HEADER_BYTES].copy_from_slice(&seq.to_le_bytes());
    let room = body.len() - CRC_BYTES;
    let msg_len = postcard::to_slice(msg, &mut body[HEADER_BYTES..room])
        .map_err(|_| EncodeError::TooLarge)?
        .len();
    let crc_at = HEADER_BYTES + msg_len;
    let crc = CRC32.checksum(&body[..crc_at]);
    body[crc_at..crc_at + CRC_BYTES].copy_from_slice(&crc.to_le_bytes());
    let body = &body[..crc_at + CRC_BYTES];

    let (first, rest) = out.split_first_mut().ok_or(EncodeError::TooLarge)?;
    *first = DELIMITER;
    let used = cobs::try_encode(body, rest).map_err(|_| EncodeError::TooLarge)?;
    let last = rest.get_mut(used).ok_or(EncodeError::TooLarge)?;
    *last = DELIMITER;
    Ok(used + 2)
}

/// A received frame that passed the framing, checksum and version checks.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub seq: u32,
    /// The postcard-encoded message.
    pub message: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Checks one decoded frame body (header, message, CRC).
    pub fn from_body(body: &'a [u8]) -> Result<Self, DecodeError> {
        if body.len() < HEADER_BYTES + CRC_BYTES {
            return Err(DecodeError::CorruptFrame);
        }
        let (covered, crc) = body.split_at(body.len() - CRC_BYTES);
        let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if CRC32.checksum(covered) != crc {
            return Err(DecodeError::BadChecksum);
        }
        let version = u16::from_le_bytes([covered[0], covered[1]]);
        if version != LINK_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let seq = u32::from_le_bytes([covered[2], covered[3], covered[4], covered[5]]);
        Ok(Frame {
            seq,
            message: &covered[HEADER_BYTES..],
        })
    }

    /// The message, decoded. Trailing bytes after it make the frame corrupt.
    pub fn decode<M: Deserialize<'a>>(&self) -> Result<M, DecodeError> {
        match postcard::take_from_bytes(self.message) {
            Ok((msg, [])) => Ok(msg),
            _ => Err(DecodeError::CorruptFrame),
        }
    }
}

/// Collects bytes from the link into frames, in a buffer the caller provides (at least
/// [`MAX_FRAME_BYTES`] long for the largest frame; a longer frame is dropped as `TooLarge`).
#[derive(Debug)]
pub struct FrameReader<B> {
    buf: B,
    len: usize,
    overflow: bool,
}

impl<B: AsMut<[u8]>> FrameReader<B> {
    /// A reader that has seen nothing yet.
    pub fn new(buf: B) -> Self {
        FrameReader {
            buf,
            len: 0,
            overflow: false,
        }
    }

    /// Forgets a partly received frame.
    pub fn clear(&mut self) {
        self.len = 0;
        self.overflow = false;
    }

    /// Takes one byte from the link. Returns `None` while a frame is incomplete (and for empty
    /// frames), and at each delimiter the frame that ended, checked, or why it was rejected.
    /// After a rejected frame the reader is ready for the next one.
    pub fn push(&mut self, byte: u8) -> Option<Result<Frame<'_>, DecodeError>> {
        if byte != DELIMITER {
            let buf = self.buf.as_mut();
            match buf.get_mut(self.len) {
                Some(slot) => {
                    *slot = byte;
                    self.len += 1;
                }
                None => self.overflow = true,
            }
            return None;
        }
        let (len, overflow) = (self.len, self.overflow);
        self.clear();
        if overflow {
            return Some(Err(DecodeError::TooLarge));
        }
        if len == 0 {
            return None;
        }
        let encoded = &mut self.buf.as_mut()[..len];
        let result = match cobs::decode_in_place(encoded) {
            Ok(used) => Frame::from_body(&encoded[..used]),
            Err(_) => Err(DecodeError::CorruptFrame),
        };
        Some(result)
    }
}

#[cfg(test)]
mod tests;
