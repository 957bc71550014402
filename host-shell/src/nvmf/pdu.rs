//! NVMe/TCP PDUs: their types, and reading and writing them.

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
/// C2HData flags: the last PDU of the transfer.
pub(super) const LAST_PDU: u8 = 1 << 2;

/// One PDU: its common header fields and the bytes after the common header.
pub(super) struct Pdu {
    pub(super) kind: u8,
    pub(super) flags: u8,
    pub(super) hlen: u8,
    pub(super) pdo: u8,
    pub(super) body: Vec<u8>,
}

impl Pdu {
    /// The bytes of the PDU-specific header (after the common header).
    pub(super) fn header(&self) -> &[u8] {
        &self.body[..usize::from(self.hlen)
            .saturating_sub(8)
            .min(self.body.len())]
    }

    /// The PDU's data (from the data offset on).
    pub(super) fn data(&self) -> &[u8] {
        let at = usize::from(self.pdo.max(self.hlen)).saturating_sub(8);
        self.body.get(at..).unwrap_or(&[])
    }
}

pub(super) fn read_pdu(stream: &mut TcpStream) -> io::Result<Pdu> {
    let mut ch = [0u8; 8];
    stream.read_exact(&mut ch)?;
    let plen = u32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]]);
    if !(8..=MAX_PDU).contains(&plen) || u32::from(ch[2]) > plen {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a PDU of {plen} bytes with a {}-byte header", ch[2]),
        ));
    }
    let mut body = vec![0u8; plen as usize - 8];
    stream.read_exact(&mut body)?;
    Ok(Pdu {
        kind: ch[0],
        flags: ch[1],
        hlen: ch[2],
        pdo: ch[3],
        body,
    })
}

/// Writes a PDU of `kind` whose header (common header included) is `hlen` bytes: `header`
/// after the common header, then `data` right after the header.
pub(super) fn write_pdu(
    stream: &mut TcpStream,
    kind: u8,
    flags: u8,
    hlen: u8,
    header: &[u8],
    data: &[u8],
) -> io::Result<()> {
    let plen = usize::from(hlen) + data.len();
    let mut out = Vec::with_capacity(plen);
    let pdo = if data.is_empty() { 0 } else { hlen };
    out.extend_from_slice(&[kind, flags, hlen, pdo]);
    out.extend_from_slice(&(plen as u32).to_le_bytes());
    out.extend_from_slice(header);
    out.resize(usize::from(hlen), 0);
    out.extend_from_slice(data);
    stream.write_all(&out)
}
