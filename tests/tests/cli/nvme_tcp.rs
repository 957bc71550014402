//! `csd device start --nvme-tcp`: a host written from the NVMe/TCP and NVMe over Fabrics
//! specifications (not from the target's code) connects, enables the controller, reads the
//! Identify structures, and writes, reads and reports zones on an I/O queue.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
};

use tests::{csd_json, running::RunningDevice};

const NQN: &str = "nqn.2026-12.dev.csd:test";

/// SGL identifiers (byte 15 of the descriptor): data in the capsule (a data block at an
/// offset), or data moved by the transport (C2HData, or H2CData after R2T).
const SGL_IN_CAPSULE: u8 = 0x01;
const SGL_TRANSPORT: u8 = 0x5A;

/// One queue's connection.
struct Host {
    stream: TcpStream,
    cid: u16,
}

/// A PDU as read: type, flags, header (after the common header) and data.
struct Pdu {
    kind: u8,
    header: Vec<u8>,
    data: Vec<u8>,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A completion: dwords 0 and 1, and the status field (type and code) of dword 3.
#[derive(Debug)]
struct Cqe {
    dw0: u32,
    dw1: u32,
    cid: u16,
    status: u16,
}

impl Host {
    /// Connects and exchanges ICReq and ICResp.
    fn connect(port: u16) -> Host {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let mut icreq = vec![0u8; 128];
        icreq[0] = 0x00; // ICReq
        icreq[2] = 128; // HLEN
        icreq[4..8].copy_from_slice(&128u32.to_le_bytes()); // PLEN
        stream.write_all(&icreq).expect("send ICReq");
        let mut host = Host { stream, cid: 0 };
        let resp = host.read_pdu();
        assert_eq!(resp.kind, 0x01, "ICResp");
        assert_eq!(le16(&resp.header, 0), 0, "PFV 0");
        assert_eq!(resp.header[3] & 3, 0, "no digests");
        assert!(le32(&resp.header, 4) >= 4096, "MAXH2CDATA");
        host
    }

    fn read_pdu(&mut self) -> Pdu {
        let mut ch = [0u8; 8];
        self.stream.read_exact(&mut ch).expect("a PDU header");
        let plen = le32(&ch, 4) as usize;
        let mut rest = vec![0u8; plen - 8];
        self.stream.read_exact(&mut rest).expect("the PDU");
        let hlen = usize::from(ch[2]);
        let pdo = if ch[3] == 0 { plen } else { usize::from(ch[3]) };
        Pdu {
            kind: ch[0],
            header: rest[..hlen - 8].to_vec(),
            data: rest[pdo - 8..].to_vec(),
        }
    }

    /// A command SQE with the next command id; `sgl` describes `len` bytes.
    fn sqe(&mut self, opcode: u8, nsid: u32, sgl: u8, len: u32) -> [u8; 64] {
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
    fn send(&mut self, sqe: &[u8; 64], data: &[u8]) {
        let hlen = 72u8;
        let plen = 72 + data.len() as u32;
        let mut pdu = vec![0x04, 0, hlen, if data.is_empty() { 0 } else { hlen }];
        pdu.extend_from_slice(&plen.to_le_bytes());
        pdu.extend_from_slice(sqe);
        pdu.extend_from_slice(data);
        self.stream.write_all(&pdu).expect("send a capsule");
    }

    fn response(pdu: &Pdu) -> Cqe {
        assert_eq!(pdu.kind, 0x05, "CapsuleResp");
        let c = &pdu.header;
        let dw3 = le32(c, 12);
        Cqe {
            dw0: le32(c, 0),
            dw1: le32(c, 4),
            cid: dw3 as u16,
            status: (dw3 >> 17 & 0x7ff) as u16,
        }
    }

    /// Sends a command and reads what comes back: the data of C2HData PDUs, then the
    /// completion.
    fn call(&mut self, sqe: &[u8; 64], data: &[u8]) -> (Cqe, Vec<u8>) {
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

    /// Fabrics Connect to queue `qid` of controller `cntlid` (FFFFh: a new one).
    fn fabrics_connect(&mut self, qid: u16, cntlid: u16) -> Cqe {
        let mut sqe = self.sqe(0x7f, 0, SGL_IN_CAPSULE, 1024);
        sqe[4] = 0x01; // FCTYPE: Connect (byte 4 of a Fabrics command)
        sqe[42..44].copy_from_slice(&qid.to_le_bytes());
        sqe[44..46].copy_from_slice(&31u16.to_le_bytes()); // SQSIZE
        let mut data = vec![0u8; 1024];
        data[..16].copy_from_slice(&[7; 16]); // HOSTID
        data[16..18].copy_from_slice(&cntlid.to_le_bytes());
        data[256..256 + NQN.len()].copy_from_slice(NQN.as_bytes());
        let host = b"nqn.2014-08.org.nvmexpress:uuid:07070707-0707-0707-0707-070707070707";
        data[512..512 + host.len()].copy_from_slice(host);
        self.call(&sqe, &data).0
    }

    fn property(&mut self, set: Option<u64>, offset: u32) -> Cqe {
        let mut sqe = self.sqe(0x7f, 0, SGL_IN_CAPSULE, 0);
        sqe[4] = if set.is_some() { 0x00 } else { 0x04 };
        sqe[40] = 1; // 8 bytes
        sqe[44..48].copy_from_slice(&offset.to_le_bytes());
        if let Some(value) = set {
            sqe[48..56].copy_from_slice(&value.to_le_bytes());
        }
        self.call(&sqe, &[]).0
    }

    fn identify(&mut self, nsid: u32, cns: u8, csi: u8) -> Vec<u8> {
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
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

fn io_sqe(host: &mut Host, opcode: u8, slba: u64, blocks: u16, sgl: u8, len: u32) -> [u8; 64] {
    let mut sqe = host.sqe(opcode, 1, sgl, len);
    sqe[40..48].copy_from_slice(&slba.to_le_bytes());
    sqe[48..50].copy_from_slice(&(blocks - 1).to_le_bytes());
    sqe
}

#[test]
fn a_host_from_the_specifications_connects_and_does_io() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let image = dir.path().join("dev.img");
    let img = image.to_str().expect("a UTF-8 path");
    tests::csd_ok(["device", "create", img, "--capacity", "64M"]);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let device = RunningDevice::start_with(&image, &["--nvme-tcp", &listen, "--nqn", NQN]);

    // A connection that sends garbage is closed; the target goes on serving others.
    let mut garbage = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    garbage.write_all(&[0xff; 8]).expect("send");
    let mut rest = Vec::new();
    let _ = garbage.read_to_end(&mut rest);

    // The admin queue: Connect, CAP, CC.EN, CSTS.RDY.
    let mut admin = Host::connect(port);
    let connected = admin.fabrics_connect(0, 0xffff);
    assert_eq!(connected.status, 0, "{connected:?}");
    let cntlid = connected.dw0 as u16;
    let cap = admin.property(None, 0x00);
    let cap = u64::from(cap.dw0) | u64::from(cap.dw1) << 32;
    assert!(cap & 0xffff >= 31, "MQES");
    assert_eq!(cap >> 37 & 1, 1, "CAP.CSS: the NVM command set");
    assert_eq!(
        admin.property(None, 0x1c).dw0 & 1,
        0,
        "not ready before CC.EN"
    );
    let cc = 1 | 6 << 16 | 4 << 20; // EN, IOSQES 64 bytes, IOCQES 16 bytes
    assert_eq!(admin.property(Some(cc), 0x14).status, 0);
    assert_eq!(admin.property(None, 0x1c).dw0 & 1, 1, "CSTS.RDY");
    assert_eq!(admin.property(None, 0x08).dw0, 0x0002_0100, "VS 2.1");

    // Identify Controller: the subsystem's NQN at byte 768; Identify Namespace; the zoned
    // command set's Identify Namespace.
    let ctrl = admin.identify(0, 0x01, 0x00);
    assert_eq!(&ctrl[768..768 + NQN.len()], NQN.as_bytes());
    assert_eq!(ctrl[768 + NQN.len()], 0);
    assert_eq!((ctrl[512], ctrl[513]), (0x66, 0x44), "SQES and CQES");
    assert_eq!(le32(&ctrl, 516), 1, "one namespace");
    let report = csd_json(["zone", "report", img, "--json"]);
    let zones = report.as_array().expect("zones");
    let zone_lbas = zones[1]["zslba"].as_u64().expect("zslba");
    let ns = admin.identify(1, 0x00, 0x00);
    assert_eq!(le64(&ns, 0), zone_lbas * zones.len() as u64, "NSZE");
    assert_eq!(ns[128 + 2], 12, "4 KiB LBAs");
    let zns = admin.identify(1, 0x05, 0x02);
    assert_eq!(le64(&zns, 2816), zone_lbas, "zone size");
    let list = admin.identify(0, 0x02, 0x00);
    assert_eq!(le32(&list, 0), 1, "active namespace 1");
    // An opcode the target does not know: Invalid Command Opcode, and the queue goes on.
    let unknown = admin.sqe(0xc1, 0, SGL_IN_CAPSULE, 0);
    let (cqe, _) = admin.call(&unknown, &[]);
    assert_eq!(cqe.status, 0x001, "{cqe:?}");
    let keep_alive = admin.sqe(0x18, 0, SGL_IN_CAPSULE, 0);
    assert_eq!(admin.call(&keep_alive, &[]).0.status, 0);

    // An I/O queue of the same controller: Zone Append with in-capsule data, a Write whose
    // data the target asks for (R2T, H2CData), a Read, and a zone report.
    let mut io = Host::connect(port);
    assert_eq!(io.fabrics_connect(1, cntlid).status, 0);
    let first = vec![0xa5u8; 4096];
    let append = io_sqe(&mut io, 0x7d, 0, 1, SGL_IN_CAPSULE, 4096);
    let (cqe, _) = io.call(&append, &first);
    assert_eq!(cqe.status, 0, "{cqe:?}");
    assert_eq!(
        u64::from(cqe.dw0) | u64::from(cqe.dw1) << 32,
        0,
        "assigned LBA"
    );

    let second: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
    let write = io_sqe(&mut io, 0x01, 1, 1, SGL_TRANSPORT, 4096);
    io.send(&write, &[]);
    let r2t = io.read_pdu();
    assert_eq!(r2t.kind, 0x09, "R2T");
    assert_eq!(le16(&r2t.header, 0), io.cid);
    assert_eq!((le32(&r2t.header, 4), le32(&r2t.header, 8)), (0, 4096));
    let mut h2c = vec![0x06, 0x04, 24, 24]; // H2CData, LAST_PDU
    h2c.extend_from_slice(&(24u32 + 4096).to_le_bytes());
    h2c.extend_from_slice(&r2t.header[0..4]); // CCCID, TTAG
    h2c.extend_from_slice(&0u32.to_le_bytes()); // DATAO
    h2c.extend_from_slice(&4096u32.to_le_bytes()); // DATAL
    h2c.extend_from_slice(&[0; 4]);
    h2c.extend_from_slice(&second);
    io.stream.write_all(&h2c).expect("H2CData");
    let done = Host::response(&io.read_pdu());
    assert_eq!(done.status, 0, "{done:?}");

    let read = io_sqe(&mut io, 0x02, 0, 2, SGL_TRANSPORT, 8192);
    let (cqe, data) = io.call(&read, &[]);
    assert_eq!(cqe.status, 0);
    assert_eq!(data[..4096], first[..]);
    assert_eq!(data[4096..], second[..]);

    let mut recv = io_sqe(&mut io, 0x7a, 0, 1, SGL_TRANSPORT, 128);
    recv[48..52].copy_from_slice(&(128u32 / 4 - 1).to_le_bytes()); // NUMD
    recv[54] = 1; // Partial Report
    let (cqe, data) = io.call(&recv, &[]);
    assert_eq!(cqe.status, 0);
    assert_eq!(le64(&data, 0), 1, "one zone reported");
    assert_eq!(data[64] & 0xf, 0x2, "sequential write required");
    assert_eq!(data[65] >> 4, 0x2, "implicitly opened");
    assert_eq!(le64(&data, 64 + 24), 2, "write pointer");

    // The zone report of `csd`, attached to the same running device, agrees.
    let report = csd_json(["zone", "report", img, "--json"]);
    assert_eq!(report[0]["state"], "implicit_open");
    assert_eq!(report[0]["wp"], 2);

    // A write out of place: the device's status goes back in the completion.
    let bad = io_sqe(&mut io, 0x01, 7, 1, SGL_IN_CAPSULE, 4096);
    let (cqe, _) = io.call(&bad, &first);
    assert_eq!(cqe.status, 0x1bc, "Zone Invalid Write: {cqe:?}");
    drop((admin, io));
    drop(device);
}
