//! NVMe/TCP PDUs: their types, and reading and writing them on a connection, with the header
//! and data digests the connection's ICReq asked for.
//!
//! From the NVMe/TCP Transport Specification 1.1: with the header digest on, every PDU but
//! ICReq, ICResp and the two termination requests carries a CRC-32C of its header (common
//! header and PDU-specific header) right after it, and sets HDGSTF (flags bit 0); with the
//! data digest on, every PDU that carries data (CapsuleCmd with in-capsule data, H2CData,
//! C2HData) ends with a CRC-32C of the data and sets DDGSTF (bit 1). Digests are stored
//! little-endian. The data offset (PDO) counts the header digest; this target asks for no
//! padding (CPDA 0).

use std::{
    io::{self, Read, Write},
    net::TcpStream,
};

use super::MAX_PDU;

/// PDU types.
pub(super) const IC_REQ: u8 = 0x00;
pub(super) const IC_RESP: u8 = 0x01;
pub(super) const H2C_TERM_REQ: u8 = 0x02;
pub(super) const C2H_TERM_REQ: u8 = 0x03;
pub(super) const CAPSULE_CMD: u8 = 0x04;
pub(super) const CAPSULE_RESP: u8 = 0x05;
pub(super) const H2C_DATA: u8 = 0x06;
pub(super) const C2H_DATA: u8 = 0x07;
pub(super) const R2T: u8 = 0x09;
/// Flags: a header digest follows the header.
const HDGSTF: u8 = 1 << 0;
/// Flags: a data digest follows the data.
const DDGSTF: u8 = 1 << 1;
/// C2HData and H2CData flags: the last PDU of the transfer.
pub(super) const LAST_PDU: u8 = 1 << 2;
/// ICReq and ICResp DGST bits.
pub(super) const HDGST_ENABLE: u8 = 1 << 0;
pub(super) const DDGST_ENABLE: u8 = 1 << 1;

/// Fatal error status of a C2HTermReq.
pub(super) mod fes {
    pub const INVALID_HEADER_FIELD: u8 = 0x01;
    pub const PDU_SEQUENCE: u8 = 0x02;
    pub const HEADER_DIGEST: u8 = 0x03;
}

/// One PDU as received: the bytes after its common header, where its PDU-specific header and
/// its data are.
pub(super) struct Pdu {
    pub(super) kind: u8,
    pub(super) flags: u8,
    rest: Vec<u8>,
    header_len: usize,
    data: std::ops::Range<usize>,
    /// Whether the data's digest, if it had one, was right.
    pub(super) data_intact: bool,
}

impl Pdu {
    /// The bytes of the PDU-specific header (after the common header).
    pub(super) fn header(&self) -> &[u8] {
        &self.rest[..self.header_len]
    }

    /// The PDU's data.
    pub(super) fn data(&self) -> &[u8] {
        &self.rest[self.data.clone()]
    }

    /// Takes the PDU's data.
    pub(super) fn take_data(&mut self) -> Vec<u8> {
        let mut bytes = std::mem::take(&mut self.rest);
        bytes.truncate(self.data.end);
        bytes.drain(..self.data.start);
        self.header_len = 0;
        self.data = 0..0;
        bytes
    }
}

/// Why a PDU could not be read, beyond the connection's own errors.
#[derive(Debug)]
pub(super) enum ReadError {
    Io(io::Error),
    /// A header that does not hold together, or a missing header digest (C2HTermReq FES).
    Fatal {
        fes: u8,
        why: String,
    },
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// A connection's PDU stream and the digests it uses.
pub(super) struct Wire {
    pub(super) stream: TcpStream,
    header_digest: bool,
    data_digest: bool,
}

fn digest(bytes: &[u8]) -> [u8; 4] {
    (crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32).to_le_bytes()
}

/// Whether PDUs of `kind` carry digests at all.
fn digested(kind: u8) -> bool {
    !matches!(kind, IC_REQ | IC_RESP | H2C_TERM_REQ | C2H_TERM_REQ)
}

impl Wire {
    pub(super) fn new(stream: TcpStream) -> Self {
        Wire {
            stream,
            header_digest: false,
            data_digest: false,
        }
    }

    /// Turns on the digests of `dgst` (the ICReq's DGST bits) for every PDU after the ICResp.
    pub(super) fn use_digests(&mut self, dgst: u8) {
        self.header_digest = dgst & HDGST_ENABLE != 0;
        self.data_digest = dgst & DDGST_ENABLE != 0;
    }

    pub(super) fn read(&mut self) -> Result<Pdu, ReadError> {
        let mut ch = [0u8; 8];
        self.stream.read_exact(&mut ch)?;
        let [kind, flags, hlen, pdo] = [ch[0], ch[1], ch[2], ch[3]];
        let plen = u32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]]);
        let fatal = |why: String| ReadError::Fatal {
            fes: fes::INVALID_HEADER_FIELD,
            why,
        };
        if !(8..=MAX_PDU).contains(&plen) || hlen < 8 || u32::from(hlen) > plen {
            return Err(fatal(format!(
                "a PDU of {plen} bytes with a {hlen}-byte header"
            )));
        }
        let mut rest = vec![0u8; plen as usize - 8];
        self.stream.read_exact(&mut rest)?;
        let digested = digested(kind);
        let hdgst = digested && self.header_digest;
        if digested && (flags & HDGSTF != 0) != hdgst {
            return Err(fatal(format!(
                "a PDU whose header digest flag ({}) is not what the connection agreed",
                flags & HDGSTF
            )));
        }
        let hlen = usize::from(hlen);
        let header_end = hlen + if hdgst { 4 } else { 0 };
        if header_end > plen as usize {
            return Err(fatal("a PDU too short for its header digest".into()));
        }
        if hdgst {
            let mut crc = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
            crc.update(&ch);
            crc.update(&rest[..hlen - 8]);
            if (crc.finalize() as u32).to_le_bytes() != rest[hlen - 8..hlen - 4] {
                return Err(ReadError::Fatal {
                    fes: fes::HEADER_DIGEST,
                    why: "a PDU header's digest is wrong".into(),
                });
            }
        }
        // Data from the data offset to the end, less the data digest if it has one.
        let has_data = pdo != 0 && usize::from(pdo) < plen as usize;
        let ddgst = digested && has_data && flags & DDGSTF != 0;
        if has_data && digested && ddgst != self.data_digest {
            return Err(fatal(
                "a PDU whose data digest flag is not what the connection agreed".into(),
            ));
        }
        let (data, data_intact) = if has_data {
            let start = usize::from(pdo).max(header_end) - 8;
            let end = rest.len() - if ddgst { 4 } else { 0 };
            if start > end {
                return Err(fatal(format!(
                    "a PDU whose data offset {pdo} is past its end"
                )));
            }
            let intact = !ddgst || digest(&rest[start..end]) == rest[end..];
            (start..end, intact)
        } else {
            (0..0, true)
        };
        Ok(Pdu {
            kind,
            flags,
            rest,
            header_len: hlen - 8,
            data,
            data_intact,
        })
    }

    /// Writes a PDU of `kind` whose header (common header included) is `hlen` bytes: `header`
    /// after the common header, then `data`, with the digests the connection uses.
    pub(super) fn write(
        &mut self,
        kind: u8,
        flags: u8,
        hlen: u8,
        header: &[u8],
        data: &[u8],
    ) -> io::Result<()> {
        let digested = digested(kind);
        let hdgst = digested && self.header_digest;
        let ddgst = digested && self.data_digest && !data.is_empty();
        let header_end = usize::from(hlen) + if hdgst { 4 } else { 0 };
        let plen = header_end + data.len() + if ddgst { 4 } else { 0 };
        let pdo = if data.is_empty() { 0 } else { header_end as u8 };
        let flags = flags | if hdgst { HDGSTF } else { 0 } | if ddgst { DDGSTF } else { 0 };
        let mut out = Vec::with_capacity(plen);
        out.extend_from_slice(&[kind, flags, hlen, pdo]);
        out.extend_from_slice(&(plen as u32).to_le_bytes());
        out.extend_from_slice(header);
        out.resize(usize::from(hlen), 0);
        if hdgst {
            let d = digest(&out);
            out.extend_from_slice(&d);
        }
        out.extend_from_slice(data);
        if ddgst {
            out.extend_from_slice(&digest(data));
        }
        self.stream.write_all(&out)
    }

    /// Ends the connection with a C2HTermReq of `fes` (no digests, as the specification
    /// has it for termination requests).
    pub(super) fn terminate(&mut self, fes: u8) -> io::Result<()> {
        let mut h = [0u8; 16];
        h[0] = fes;
        self.write(C2H_TERM_REQ, 0, 24, &h, &[])
    }
}
