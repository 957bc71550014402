//! A minimal NVMe/TCP host, written from the NVMe/TCP and NVMe over Fabrics specifications
//! (not from the target's code), for the tests of `csd device start --nvme-tcp`.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
};

/// SGL identifiers (byte 15 of the descriptor): data in the capsule (a data block at an
/// offset), or data moved by the transport (C2HData, or H2CData after R2T).
pub const SGL_IN_CAPSULE: u8 = 0x01;
pub const SGL_TRANSPORT: u8 = 0x5A;

/// One queue's connection.
#[derive(Debug)]
pub struct Host {
    pub stream: TcpStream,
    /// The last command id used.
    pub cid: u16,
    /// The header digest and the data digest, as ICResp agreed them.
    pub header_digest: bool,
    pub data_digest: bool,
}

/// CRC-32C, the NVMe/TCP digest (stored little-endian).
pub fn digest(bytes: &[u8]) -> [u8; 4] {
    crc::Crc::<u32>::new(&crc::CRC_32_ISCSI)
        .checksum(bytes)
        .to_le_bytes()
}

/// PDU types that never carry digests: ICReq, ICResp, H2CTermReq, C2HTermReq.
fn undigested(kind: u8) -> bool {
    kind <= 0x03
}

/// A PDU as read: type, flags, header (after the common header) and data.
#[derive(Debug)]
pub struct Pdu {
    pub kind: u8,
    pub header: Vec<u8>,
    pub data: Vec<u8>,
}

pub fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A completion: dwords 0 and 1, and the status field (type and code) of dword 3.
#[derive(Debug)]
pub struct Cqe {
    pub dw0: u32,
    pub dw1: u32,
    pub cid: u16,
    pub status: u16,
    /// Do Not Retry (dword 3 bit 31).
    pub dnr: bool,
}

impl Host {
    /// Connects and exchanges ICReq and ICResp, without digests.
    pub fn connect(port: u16) -> Host {
        Host::connect_with_digests(port, false, false)
    }

    /// Connects asking for the header and data digests given (ICReq DGST bits 0 and 1);
    /// ICResp must grant them.
    pub fn connect_with_digests(port: u16, header: bool, data: bool) -> Host {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let dgst = u8::from(header) | u8::from(data) << 1;
        let mut icreq = vec![0u8; 128];
        icreq[0] = 0x00; // ICReq
        icreq[2] = 128; // HLEN
        icreq[4..8].copy_from_slice(&128u32.to_le_bytes()); // PLEN
        icreq[11] = dgst;
        stream.write_all(&icreq).expect("send ICReq");
        let mut host = Host {
            stream,
            cid: 0,
            header_digest: false,
            data_digest: false,
        };
        let resp = host.read_pdu();
        assert_eq!(resp.kind, 0x01, "ICResp");
        assert_eq!(le16(&resp.header, 0), 0, "PFV 0");
        assert_eq!(resp.header[3] & 3, dgst, "the digests asked for");
        assert!(le32(&resp.header, 4) >= 4096, "MAXH2CDATA");
        (host.header_digest, host.data_digest) = (header, data);
        host
    }

    /// Reads a PDU, checking its digests (and that it has the ones agreed).
    pub fn read_pdu(&mut self) -> Pdu {
        let mut ch = [0u8; 8];
        self.stream.read_exact(&mut ch).expect("a PDU header");
        let plen = le32(&ch, 4) as usize;
        let mut rest = vec![0u8; plen - 8];
        self.stream.read_exact(&mut rest).expect("the PDU");
        let (kind, flags, hlen) = (ch[0], ch[1], usize::from(ch[2]));
        let digests = !undigested(kind);
        let hdgst = digests && self.header_digest;
        assert_eq!(flags & 1 != 0, hdgst, "HDGSTF of a PDU of type {kind:#x}");
        if hdgst {
            let mut header = ch.to_vec();
            header.extend_from_slice(&rest[..hlen - 8]);
            assert_eq!(rest[hlen - 8..hlen - 4], digest(&header), "header digest");
        }
        let has_data = ch[3] != 0;
        let ddgst = digests && has_data && self.data_digest;
        assert_eq!(flags & 2 != 0, ddgst, "DDGSTF of a PDU of type {kind:#x}");
        let data = if has_data {
            let at = usize::from(ch[3]) - 8;
            let end = rest.len() - if ddgst { 4 } else { 0 };
            if ddgst {
                assert_eq!(rest[end..], digest(&rest[at..end]), "data digest");
            }
            rest[at..end].to_vec()
        } else {
            Vec::new()
        };
        Pdu {
            kind,
            header: rest[..hlen - 8].to_vec(),
            data,
        }
    }

    /// The bytes of a PDU of `kind` with `header` after the common header and then `data`,
    /// with the digests agreed; `spoil` flips a bit of the data digest.
    pub fn pdu_bytes(
        &self,
        kind: u8,
        flags: u8,
        header: &[u8],
        data: &[u8],
        spoil: bool,
    ) -> Vec<u8> {
        let hlen = 8 + header.len();
        let hdgst = self.header_digest && !undigested(kind);
        let ddgst = self.data_digest && !undigested(kind) && !data.is_empty();
        let pdo = hlen + if hdgst { 4 } else { 0 };
        let plen = pdo + data.len() + if ddgst { 4 } else { 0 };
        let flags = flags | u8::from(hdgst) | u8::from(ddgst) << 1;
        let mut pdu = vec![
            kind,
            flags,
            hlen as u8,
            if data.is_empty() { 0 } else { pdo as u8 },
        ];
        pdu.extend_from_slice(&(plen as u32).to_le_bytes());
        pdu.extend_from_slice(header);
        if hdgst {
            let d = digest(&pdu);
            pdu.extend_from_slice(&d);
        }
        pdu.extend_from_slice(data);
        if ddgst {
            let mut d = digest(data);
            d[0] ^= u8::from(spoil);
            pdu.extend_from_slice(&d);
        }
        pdu
    }

    /// A command SQE with the next command id; `sgl` describes `len` bytes.
    pub fn sqe(&mut self, opcode: u8, nsid: u32, sgl: u8, len: u32) -> [u8; 64] {
        self.cid += 1;
        let mut sqe = [0u8; 64];
        sqe[0] = opcode;
        sqe[1] = 0x40; // PSDT: SGL
        sqe[2..4].copy_from_slice(&self.cid.to_le_bytes());
        sqe[4..8].copy_from_slice(&nsid.to_le_bytes());
        sqe[32..36].copy_from_slice(&len.to_le_bytes());
        sqe[39] = sgl;
        sqe
    }

    /// Sends a CapsuleCmd with `data` in the capsule.
    pub fn send(&mut self, sqe: &[u8; 64], data: &[u8]) {
        let pdu = self.pdu_bytes(0x04, 0, sqe, data, false);
        self.stream.write_all(&pdu).expect("send a capsule");
    }

    /// Answers an R2T (its PDU-specific header) with one H2CData PDU carrying `data`, the
    /// last of the transfer; `spoil` spoils its data digest.
    pub fn send_h2c(&mut self, r2t: &[u8], data: &[u8], spoil: bool) {
        let mut header = r2t[0..4].to_vec(); // CCCID, TTAG
        header.extend_from_slice(&r2t[4..8]); // DATAO: where the R2T asked
        header.extend_from_slice(&(data.len() as u32).to_le_bytes()); // DATAL
        header.extend_from_slice(&[0; 4]);
        let pdu = self.pdu_bytes(0x06, 0x04, &header, data, spoil); // LAST_PDU
        self.stream.write_all(&pdu).expect("send H2CData");
    }

    pub fn response(pdu: &Pdu) -> Cqe {
        assert_eq!(pdu.kind, 0x05, "CapsuleResp");
        let c = &pdu.header;
        let dw3 = le32(c, 12);
        Cqe {
            dw0: le32(c, 0),
            dw1: le32(c, 4),
            cid: dw3 as u16,
            status: (dw3 >> 17 & 0x7ff) as u16,
            dnr: dw3 >> 31 == 1,
        }
    }

    /// Sends a command and reads what comes back: the data of C2HData PDUs, then the
    /// completion.
    pub fn call(&mut self, sqe: &[u8; 64], data: &[u8]) -> (Cqe, Vec<u8>) {
        self.send(sqe, data);
        let mut got = Vec::new();
        loop {
            let pdu = self.read_pdu();
            match pdu.kind {
                0x07 => {
                    assert_eq!(le16(&pdu.header, 0), self.cid, "C2HData's command id");
                    assert_eq!(le32(&pdu.header, 4) as usize, got.len(), "DATAO");
                    got.extend_from_slice(&pdu.data);
                }
                _ => {
                    let cqe = Host::response(&pdu);
                    assert_eq!(cqe.cid, self.cid);
                    return (cqe, got);
                }
            }
        }
    }

    /// Fabrics Connect to subsystem `nqn`, queue `qid` of controller `cntlid` (FFFFh: a new one).
    pub fn fabrics_connect(&mut self, nqn: &str, qid: u16, cntlid: u16) -> Cqe {
        let mut sqe = self.sqe(0x7f, 0, SGL_IN_CAPSULE, 1024);
        sqe[4] = 0x01; // FCTYPE: Connect (byte 4 of a Fabrics command)
        sqe[42..44].copy_from_slice(&qid.to_le_bytes());
        sqe[44..46].copy_from_slice(&31u16.to_le_bytes()); // SQSIZE
        let mut data = vec![0u8; 1024];
        data[..16].copy_from_slice(&[7; 16]); // HOSTID
        data[16..18].copy_from_slice(&cntlid.to_le_bytes());
        data[256..256 + nqn.len()].copy_from_slice(nqn.as_bytes());
        let host = b"nqn.2014-08.org.nvmexpress:uuid:07070707-0707-0707-0707-070707070707";
        data[512..512 + host.len()].copy_from_slice(host);
        self.call(&sqe, &data).0
    }

    pub fn property(&mut self, set: Option<u64>, offset: u32) -> Cqe {
        let mut sqe = self.sqe(0x7f, 0, SGL_IN_CAPSULE, 0);
        sqe[4] = if set.is_some() { 0x00 } else { 0x04 };
        sqe[40] = 1; // 8 bytes
        sqe[44..48].copy_from_slice(&offset.to_le_bytes());
        if let Some(value) = set {
            sqe[48..56].copy_from_slice(&value.to_le_bytes());
        }
        self.call(&sqe, &[]).0
    }

    pub fn identify(&mut self, nsid: u32, cns: u8, csi: u8) -> Vec<u8> {
        let mut sqe = self.sqe(0x06, nsid, SGL_TRANSPORT, 4096);
        sqe[40] = cns;
        sqe[47] = csi;
        let (cqe, data) = self.call(&sqe, &[]);
        assert_eq!(cqe.status, 0, "Identify CNS {cns:#x} CSI {csi:#x}: {cqe:?}");
        assert_eq!(data.len(), 4096);
        data
    }
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

pub fn io_sqe(host: &mut Host, opcode: u8, slba: u64, blocks: u16, sgl: u8, len: u32) -> [u8; 64] {
    let mut sqe = host.sqe(opcode, 1, sgl, len);
    sqe[40..48].copy_from_slice(&slba.to_le_bytes());
    sqe[48..50].copy_from_slice(&(blocks - 1).to_le_bytes());
    sqe
}
