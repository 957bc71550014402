//! An NVMe over Fabrics target on the TCP transport: a running device served to any NVMe/TCP
//! host (`csd device start IMAGE --nvme-tcp ADDR:PORT`), as one NVM subsystem with one
//! controller per admin connection and one zoned namespace (NSID 1).
//!
//! From the NVMe/TCP Transport Specification 1.1: every PDU starts with an 8-byte common header
//! (type, flags, header length, data offset, total length, little-endian); a connection opens
//! with ICReq (00h) and ICResp (01h), 128 bytes each; commands arrive in CapsuleCmd PDUs (04h:
//! the header, the 64-byte SQE, then any in-capsule data) and complete in CapsuleResp PDUs
//! (05h: the 16-byte CQE); the controller sends read data in C2HData PDUs (07h) and asks for
//! write data that did not come in the capsule with R2T (09h), which the host answers with
//! H2CData (06h). Header and data digests are not offered (ICResp says so).
//!
//! From NVMe over Fabrics (NVMe Base 2.1): Fabrics commands have opcode 7Fh and their type in
//! byte 4 (Property Set 00h, Connect 01h, Property Get 04h); Connect carries the queue id and
//! queue size in command dword 10 and 1,024 bytes of data (host id, controller id at byte 16,
//! SUBNQN at 256, HOSTNQN at 512) and completes with the controller id in dword 0; the
//! properties are CAP (00h), VS (08h), CC (14h) and CSTS (1Ch).
//!
//! Each connection (one queue) runs on its own thread; the commands go to the device through a
//! [`Driver`], on the thread's own queue pair. Admin: Identify (controller, namespace, active
//! namespace list, namespace identification descriptors, the zoned command set's structures,
//! the I/O command set combinations), Get Log Page (pages of zeros), Set and Get Features
//! (the number of queues; the rest accepted), Keep Alive, Asynchronous Event Request (held, as
//! no event is ever reported). I/O: Read, Write, Flush, Zone Append, Zone Management Send and
//! Receive. Anything else completes with Invalid Command Opcode.

use std::{
    collections::HashMap,
    io::{self, Read, Write},
    net::{TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicU16, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use common::{
    command::{Command, CommandId, CommandResult, Completion},
    nvme::{self, Cqe, Sqe},
    program::{ExecFault, ExecOutcome, Extent, ProgramOp},
    zns::IdentifyZns,
    Status, LBA_BYTES,
};

use crate::{
    driver::{Driver, DriverError},
    offload::{Engine, Job, Kernel},
};

/// PDU types.
mod pdu {
    pub const IC_REQ: u8 = 0x00;
    pub const IC_RESP: u8 = 0x01;
    pub const H2C_TERM_REQ: u8 = 0x02;
    pub const C2H_TERM_REQ: u8 = 0x03;
    pub const CAPSULE_CMD: u8 = 0x04;
    pub const CAPSULE_RESP: u8 = 0x05;
    pub const H2C_DATA: u8 = 0x06;
    pub const C2H_DATA: u8 = 0x07;
    pub const R2T: u8 = 0x09;
    /// C2HData flags: the last PDU of the transfer.
    pub const LAST_PDU: u8 = 1 << 2;
}

/// This project's own commands, in NVMe's vendor-specific opcode ranges (admin C0h-FFh, I/O
/// 80h-FFh), until the Computational Programs command set's layouts can be checked against the
/// specification: Load Program (admin C1h: program index in CDW10 bits 7:0, the kernel's ELF
/// object or linked image as data) and Execute Program (I/O C2h: program index in CDW10 bits
/// 7:0, the first LBA in CDW12 and CDW13, the number of LBAs, 0's based, in CDW14, `param0` in
/// CDW2 and CDW3, `param1` in CDW15; the kernel's output as data, its return value in
/// completion dwords 0 and 1).
pub mod csd_opcode {
    pub const LOAD_PROGRAM: u8 = 0xC1;
    pub const EXECUTE_PROGRAM: u8 = 0xC2;
}

/// What an engine needs kept alive (the session its driver runs over).
pub type Keep = Box<dyn std::any::Any + Send + Sync>;

/// The engine a target made, and what it keeps alive.
type MadeEngine = Option<(Arc<Engine>, Keep)>;

/// Program indexes a controller holds.
const PROGRAMS: usize = 16;

/// Admin opcodes this target serves.
mod admin {
    pub const GET_LOG_PAGE: u8 = 0x02;
    pub const IDENTIFY: u8 = 0x06;
    pub const SET_FEATURES: u8 = 0x09;
    pub const GET_FEATURES: u8 = 0x0A;
    pub const ASYNC_EVENT_REQUEST: u8 = 0x0C;
    pub const KEEP_ALIVE: u8 = 0x18;
    pub const FABRICS: u8 = 0x7F;
}

/// Fabrics command types.
mod fctype {
    pub const PROPERTY_SET: u8 = 0x00;
    pub const CONNECT: u8 = 0x01;
    pub const PROPERTY_GET: u8 = 0x04;
}

/// Properties.
mod property {
    pub const CAP: u32 = 0x00;
    pub const VS: u32 = 0x08;
    pub const CC: u32 = 0x14;
    pub const CSTS: u32 = 0x1C;
}

/// Entries of each I/O queue (CAP.MQES + 1).
const QUEUE_ENTRIES: u64 = 128;
/// I/O queues a controller grants.
const IO_QUEUES: u32 = 4;
/// Largest H2CData this target asks for.
const MAX_H2C_DATA: u32 = 128 * 1024;
/// In-capsule data hosts may send with an I/O command (Identify Controller's IOCCSZ); this
/// target takes up to [`MAX_H2C_DATA`].
const IN_CAPSULE_BYTES: u32 = 8192;
/// Largest PDU this target reads (a header, in-capsule data, slack).
const MAX_PDU: u32 = MAX_H2C_DATA + 4096;
/// Fabrics status: Connect Invalid Parameters (command specific, 82h).
const CONNECT_INVALID_PARAMETERS: u16 = 0x182;

/// What a controller remembers between its queues.
#[derive(Debug, Default, Clone)]
struct Controller {
    cc: u32,
    /// A discovery controller (connected to the well-known discovery NQN): it answers
    /// Identify Controller and the Discovery log page, and has no namespace.
    discovery: bool,
    /// Kernels loaded with Load Program, by program index.
    programs: HashMap<u8, Kernel>,
}

/// The target: one subsystem over one device.
pub struct Target {
    driver: Driver,
    /// Runs kernels: an engine on program slots the running device gives this target, made
    /// at the first run.
    engine: Box<dyn Fn() -> Option<(Engine, Keep)> + Send + Sync>,
    /// `None` until the first run; then the engine, if it could be made.
    engine_made: Mutex<Option<MadeEngine>>,
    /// Whether zone-changing commands are refused now (a file system holds the zones).
    zones_held: Box<dyn Fn() -> bool + Send + Sync>,
    nqn: String,
    serial: String,
    controllers: Mutex<HashMap<u16, Controller>>,
    next_cntlid: AtomicU16,
    stop: AtomicBool,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("nqn", &self.nqn)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// A target serving the device behind `driver` as subsystem `nqn`; while `zones_held`
    /// says so, commands that change zones complete with Access Denied (a file system on the
    /// running device owns them).
    ///
    /// `engine` makes the engine kernels run on, with what must live as long as it (called
    /// once, at the first run: the running device's sessions hand out program slots, so it is
    /// an engine on a session's driver, and the session is kept).
    pub fn new(
        driver: Driver,
        nqn: &str,
        zones_held: impl Fn() -> bool + Send + Sync + 'static,
        engine: impl Fn() -> Option<(Engine, Keep)> + Send + Sync + 'static,
    ) -> Arc<Self> {
        let serial = format!("CSD{:08X}", crc32(nqn.as_bytes()));
        Arc::new(Target {
            driver,
            engine: Box::new(engine),
            engine_made: Mutex::new(None),
            zones_held: Box::new(zones_held),
            nqn: nqn.to_string(),
            serial,
            controllers: Mutex::new(HashMap::new()),
            next_cntlid: AtomicU16::new(1),
            stop: AtomicBool::new(false),
        })
    }

    /// Ends [`Target::serve`] and lets go of the engine's session (connections in progress
    /// end with their hosts).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let made = self
            .engine_made
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(made);
    }

    /// Accepts connections on `listener` until stopped, each on its own thread.
    pub fn serve(self: &Arc<Self>, listener: TcpListener) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        while !self.stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((stream, peer)) => {
                    stream.set_nonblocking(false)?;
                    let _ = stream.set_nodelay(true);
                    let target = Arc::clone(self);
                    std::thread::Builder::new()
                        .name("csd-nvme-tcp".into())
                        .spawn(move || {
                            if let Err(e) = Queue::new(&target, stream).run() {
                                if e.kind() != io::ErrorKind::UnexpectedEof {
                                    crate::daemon::log(format_args!(
                                        "NVMe/TCP connection from {peer} ended: {e}"
                                    ));
                                }
                            }
                        })?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn identify(&self) -> IdentifyZns {
        *self.driver.info()
    }

    /// The engine kernels run on (made at the first call), or `None` if it cannot be made
    /// or the target stopped.
    fn engine(&self) -> Option<Arc<Engine>> {
        if self.stop.load(Ordering::SeqCst) {
            return None;
        }
        let mut made = self.engine_made.lock().unwrap_or_else(|p| p.into_inner());
        made.get_or_insert_with(|| (self.engine)().map(|(e, keep)| (Arc::new(e), keep)))
            .as_ref()
            .map(|(engine, _)| Arc::clone(engine))
    }

    fn with_controller<T>(&self, cntlid: u16, f: impl FnOnce(&mut Controller) -> T) -> Option<T> {
        let mut controllers = self.controllers.lock().unwrap_or_else(|p| p.into_inner());
        controllers.get_mut(&cntlid).map(f)
    }
}

/// CRC-32 (for a serial number derived from the NQN).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                crc >> 1 ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// One PDU: its common header fields and the bytes after the common header.
struct Pdu {
    kind: u8,
    flags: u8,
    hlen: u8,
    pdo: u8,
    body: Vec<u8>,
}

impl Pdu {
    /// The bytes of the PDU-specific header (after the common header).
    fn header(&self) -> &[u8] {
        &self.body[..usize::from(self.hlen)
            .saturating_sub(8)
            .min(self.body.len())]
    }

    /// The PDU's data (from the data offset on).
    fn data(&self) -> &[u8] {
        let at = usize::from(self.pdo.max(self.hlen)).saturating_sub(8);
        self.body.get(at..).unwrap_or(&[])
    }
}

fn read_pdu(stream: &mut TcpStream) -> io::Result<Pdu> {
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
fn write_pdu(
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

/// How a command ended: its completion, and data for the host.
struct Answer {
    cqe: Cqe,
    data: Vec<u8>,
}

/// One connection: one queue of one controller.
struct Queue<'t> {
    target: &'t Target,
    stream: TcpStream,
    /// The queue id and controller, once connected.
    qid: u16,
    cntlid: Option<u16>,
    sqhd: u16,
    /// The next R2T's transfer tag.
    ttag: u16,
    /// Command capsules that arrived while a write's data was awaited.
    pending: std::collections::VecDeque<Pdu>,
}

impl<'t> Queue<'t> {
    fn new(target: &'t Target, stream: TcpStream) -> Self {
        Queue {
            target,
            stream,
            qid: 0,
            cntlid: None,
            sqhd: 0,
            ttag: 0,
            pending: std::collections::VecDeque::new(),
        }
    }

    fn run(mut self) -> io::Result<()> {
        let req = read_pdu(&mut self.stream)?;
        if req.kind != pdu::IC_REQ || req.hlen != 128 {
            return self.terminate("the first PDU is not an ICReq");
        }
        // ICResp: PFV 0, CPDA 0, no digests, MAXH2CDATA.
        let mut resp = [0u8; 120];
        resp[4..8].copy_from_slice(&MAX_H2C_DATA.to_le_bytes());
        write_pdu(&mut self.stream, pdu::IC_RESP, 0, 128, &resp, &[])?;
        loop {
            let capsule = match self.pending.pop_front() {
                Some(capsule) => capsule,
                None => read_pdu(&mut self.stream)?,
            };
            match capsule.kind {
                pdu::CAPSULE_CMD => {}
                pdu::H2C_TERM_REQ => return Ok(()),
                _ => return self.terminate("a PDU out of sequence"),
            }
            let header = capsule.header();
            let Ok(bytes) = <&[u8; nvme::SQE_BYTES]>::try_from(header.get(..64).unwrap_or(&[]))
            else {
                return self.terminate("a command capsule without its SQE");
            };
            let sqe = Sqe::from_bytes(bytes);
            self.sqhd = self.sqhd.wrapping_add(1) % QUEUE_ENTRIES as u16;
            let in_capsule = capsule.data().to_vec();
            let Some(answer) = self.command(&sqe, in_capsule)? else {
                continue;
            };
            if !answer.data.is_empty() {
                // C2HData: CCCID, DATAO 0, DATAL; one PDU, the last.
                let mut h = [0u8; 16];
                h[0..2].copy_from_slice(&sqe.cid.to_le_bytes());
                h[8..12].copy_from_slice(&(answer.data.len() as u32).to_le_bytes());
                write_pdu(
                    &mut self.stream,
                    pdu::C2H_DATA,
                    pdu::LAST_PDU,
                    24,
                    &h,
                    &answer.data,
                )?;
            }
            write_pdu(
                &mut self.stream,
                pdu::CAPSULE_RESP,
                0,
                24,
                &answer.cqe.to_bytes(),
                &[],
            )?;
        }
    }

    /// Ends the connection with a C2HTermReq (Invalid PDU Header Field).
    fn terminate(&mut self, why: &str) -> io::Result<()> {
        let mut h = [0u8; 16];
        h[0] = 0x01;
        write_pdu(&mut self.stream, pdu::C2H_TERM_REQ, 0, 24, &h, &[])?;
        Err(io::Error::new(io::ErrorKind::InvalidData, why.to_string()))
    }

    fn cqe(&self, cid: u16, status: u16, dw0: u32, dw1: u32) -> Cqe {
        Cqe {
            dw0,
            dw1,
            sqhd: self.sqhd,
            sqid: self.qid,
            cid,
            phase: false,
            status,
            more: false,
            do_not_retry: status != 0,
        }
    }

    fn done(&self, sqe: &Sqe, status: Status) -> Option<Answer> {
        Some(Answer {
            cqe: self.cqe(sqe.cid, status.code(), 0, 0),
            data: Vec::new(),
        })
    }

    fn with_data(&self, sqe: &Sqe, data: Vec<u8>) -> Option<Answer> {
        // The host's buffer: the data block descriptor's length in bytes 35:32.
        let want = sqe.dptr[1] as u32 as usize;
        let mut data = data;
        data.truncate(want);
        Some(Answer {
            cqe: self.cqe(sqe.cid, 0, 0, 0),
            data,
        })
    }

    /// Serves one command; `None` for one that completes later (an Asynchronous Event Request
    /// is held: no event is ever reported).
    fn command(&mut self, sqe: &Sqe, in_capsule: Vec<u8>) -> io::Result<Option<Answer>> {
        if sqe.opcode == admin::FABRICS {
            return Ok(self.fabrics(sqe, &in_capsule));
        }
        let Some(cntlid) = self.cntlid else {
            return Ok(self.done(sqe, Status::CommandSequenceError));
        };
        let enabled = self
            .target
            .with_controller(cntlid, |c| c.cc & 1 == 1)
            .unwrap_or(false);
        if !enabled {
            return Ok(self.done(sqe, Status::CommandSequenceError));
        }
        if self.qid == 0 {
            return self.admin(sqe, cntlid, in_capsule);
        }
        if sqe.opcode == csd_opcode::EXECUTE_PROGRAM {
            return Ok(self.execute_program(sqe));
        }
        self.io(sqe, in_capsule)
    }

    fn fabrics(&mut self, sqe: &Sqe, data: &[u8]) -> Option<Answer> {
        let b = sqe.to_bytes();
        match b[4] {
            fctype::CONNECT => {
                let qid = u16::from_le_bytes([b[42], b[43]]);
                let invalid = |q: &Self| {
                    Some(Answer {
                        cqe: q.cqe(sqe.cid, CONNECT_INVALID_PARAMETERS, 0, 0),
                        data: Vec::new(),
                    })
                };
                if data.len() < 1024 || self.cntlid.is_some() {
                    return invalid(self);
                }
                let subnqn = nul_terminated(&data[256..512]);
                let discovery = subnqn == DISCOVERY_NQN.as_bytes();
                if subnqn != self.target.nqn.as_bytes() && !(discovery && qid == 0) {
                    return invalid(self);
                }
                let cntlid = if qid == 0 {
                    let id = self.target.next_cntlid.fetch_add(1, Ordering::SeqCst);
                    let mut controllers = self
                        .target
                        .controllers
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    controllers.insert(
                        id,
                        Controller {
                            discovery,
                            ..Controller::default()
                        },
                    );
                    id
                } else {
                    let id = u16::from_le_bytes([data[16], data[17]]);
                    if self.target.with_controller(id, |_| ()).is_none()
                        || u32::from(qid) > IO_QUEUES
                    {
                        return invalid(self);
                    }
                    id
                };
                self.qid = qid;
                self.cntlid = Some(cntlid);
                Some(Answer {
                    cqe: self.cqe(sqe.cid, 0, u32::from(cntlid), 0),
                    data: Vec::new(),
                })
            }
            fctype::PROPERTY_GET | fctype::PROPERTY_SET => {
                let Some(cntlid) = self.cntlid.filter(|_| self.qid == 0) else {
                    return self.done(sqe, Status::CommandSequenceError);
                };
                let offset = u32::from_le_bytes([b[44], b[45], b[46], b[47]]);
                let value = u64::from_le_bytes(b[48..56].try_into().unwrap_or([0; 8]));
                let target = self.target;
                let result = target.with_controller(cntlid, |c| {
                    if b[4] == fctype::PROPERTY_SET {
                        (offset == property::CC).then(|| {
                            c.cc = value as u32;
                            0
                        })
                    } else {
                        property_value(offset, c.cc)
                    }
                });
                match result.flatten() {
                    Some(v) => Some(Answer {
                        cqe: self.cqe(sqe.cid, 0, v as u32, (v >> 32) as u32),
                        data: Vec::new(),
                    }),
                    None => self.done(sqe, Status::InvalidField),
                }
            }
            _ => self.done(sqe, Status::InvalidOpcode),
        }
    }

    fn admin(&mut self, sqe: &Sqe, cntlid: u16, in_capsule: Vec<u8>) -> io::Result<Option<Answer>> {
        let id = self.target.identify();
        let discovery = self
            .target
            .with_controller(cntlid, |c| c.discovery)
            .unwrap_or(false);
        if discovery {
            return Ok(self.discovery_admin(sqe, cntlid));
        }
        Ok(match sqe.opcode {
            admin::IDENTIFY => {
                let (cns, csi) = nvme::identify_of(sqe);
                let nsid_ok = sqe.nsid == 1;
                let mut data = match (cns, csi) {
                    (nvme::cns::NAMESPACE, _) if nsid_ok => nvme::identify_namespace(&id).to_vec(),
                    (nvme::cns::CONTROLLER, _) => {
                        let mut data = nvme::identify_controller(
                            &id,
                            &nvme::ControllerNames {
                                serial: &self.target.serial,
                                model: "csd computational storage device",
                                firmware: env!("CARGO_PKG_VERSION"),
                                subnqn: &self.target.nqn,
                            },
                        );
                        fabrics_identity(&mut data, cntlid);
                        data.to_vec()
                    }
                    // Active namespace list: namespace 1, for any NSID below it.
                    (0x02, _) => {
                        let mut list = vec![0u8; nvme::IDENTIFY_BYTES];
                        if sqe.nsid == 0 {
                            list[0] = 1;
                        }
                        list
                    }
                    // Namespace identification descriptors: the command set (CSI 02h).
                    (0x03, _) if nsid_ok => {
                        let mut list = vec![0u8; nvme::IDENTIFY_BYTES];
                        list[..5].copy_from_slice(&[0x04, 0x01, 0, 0, nvme::csi::ZONED]);
                        list
                    }
                    (nvme::cns::CSI_NAMESPACE, nvme::csi::ZONED) if nsid_ok => {
                        nvme::identify_zns_namespace(&id).to_vec()
                    }
                    (nvme::cns::CSI_NAMESPACE, nvme::csi::NVM) if nsid_ok => {
                        vec![0u8; nvme::IDENTIFY_BYTES]
                    }
                    (nvme::cns::CSI_CONTROLLER, nvme::csi::ZONED) => {
                        nvme::identify_zns_controller(&id).to_vec()
                    }
                    (nvme::cns::CSI_CONTROLLER, nvme::csi::NVM) => vec![0u8; nvme::IDENTIFY_BYTES],
                    // I/O command set combinations: NVM and zoned (bits 0 and 2).
                    (0x1C, _) => {
                        let mut list = vec![0u8; nvme::IDENTIFY_BYTES];
                        list[0] = 0x05;
                        list
                    }
                    _ => return Ok(self.done(sqe, Status::InvalidField)),
                };
                data.resize(nvme::IDENTIFY_BYTES, 0);
                self.with_data(sqe, data)
            }
            admin::GET_LOG_PAGE => {
                // Number of dwords, 0's based: lower half in CDW10 31:16, upper in CDW11 15:0;
                // the log page offset in CDW12 and CDW13.
                let numd = (sqe.cdw(10) >> 16) | (sqe.cdw(11) & 0xffff) << 16;
                let len = (((numd as usize) + 1) * 4).min(64 * 1024);
                let offset = (u64::from(sqe.cdw(12)) | u64::from(sqe.cdw(13)) << 32) as usize;
                let page = match sqe.cdw(10) as u8 {
                    LOG_COMMANDS_SUPPORTED => commands_supported(),
                    // Error information, SMART / health, changed zones, the rest: nothing to
                    // report.
                    _ => Vec::new(),
                };
                let mut data: Vec<u8> = page.into_iter().skip(offset).take(len).collect();
                data.resize(len, 0);
                self.with_data(sqe, data)
            }
            admin::SET_FEATURES | admin::GET_FEATURES => {
                // Number of Queues (07h): the I/O queues granted, 0's based, in dword 0.
                let dw0 = if sqe.cdw(10) & 0xff == 0x07 {
                    (IO_QUEUES - 1) | (IO_QUEUES - 1) << 16
                } else {
                    0
                };
                Some(Answer {
                    cqe: self.cqe(sqe.cid, 0, dw0, 0),
                    data: Vec::new(),
                })
            }
            admin::KEEP_ALIVE => self.done(sqe, Status::Success),
            csd_opcode::LOAD_PROGRAM => return self.load_program(sqe, cntlid, in_capsule),
            admin::ASYNC_EVENT_REQUEST => None,
            _ => self.done(sqe, Status::InvalidOpcode),
        })
    }

    /// The admin commands of a discovery controller: Identify Controller, the Discovery log
    /// page (70h: this subsystem on this port), Keep Alive, Features, the held Asynchronous
    /// Event Request; nothing else.
    fn discovery_admin(&mut self, sqe: &Sqe, cntlid: u16) -> Option<Answer> {
        match sqe.opcode {
            admin::IDENTIFY if nvme::identify_of(sqe).0 == nvme::cns::CONTROLLER => {
                let mut data = nvme::identify_controller(
                    &self.target.identify(),
                    &nvme::ControllerNames {
                        serial: &self.target.serial,
                        model: "csd computational storage device",
                        firmware: env!("CARGO_PKG_VERSION"),
                        subnqn: DISCOVERY_NQN,
                    },
                );
                fabrics_identity(&mut data, cntlid);
                data[111] = 2; // CNTRLTYPE: discovery controller
                data[516..520].fill(0); // NN: no namespaces
                self.with_data(sqe, data.to_vec())
            }
            admin::GET_LOG_PAGE if sqe.cdw(10) as u8 == LOG_DISCOVERY => {
                let numd = (sqe.cdw(10) >> 16) | (sqe.cdw(11) & 0xffff) << 16;
                let len = (((numd as usize) + 1) * 4).min(64 * 1024);
                let offset = (u64::from(sqe.cdw(12)) | u64::from(sqe.cdw(13)) << 32) as usize;
                let page = discovery_log(&self.target.nqn, self.stream.local_addr().ok());
                let mut data: Vec<u8> = page.into_iter().skip(offset).take(len).collect();
                data.resize(len, 0);
                self.with_data(sqe, data)
            }
            admin::KEEP_ALIVE => self.done(sqe, Status::Success),
            admin::SET_FEATURES | admin::GET_FEATURES => self.done(sqe, Status::Success),
            admin::ASYNC_EVENT_REQUEST => None,
            _ => self.done(sqe, Status::InvalidOpcode),
        }
    }

    /// The data of a command that sends some: in the capsule, or asked for with R2T.
    fn data_in(&mut self, sqe: &Sqe, in_capsule: Vec<u8>) -> io::Result<Vec<u8>> {
        if !in_capsule.is_empty() {
            return Ok(in_capsule);
        }
        let len = sqe.dptr[1] as u32 as usize;
        if len == 0 {
            return Ok(Vec::new());
        }
        self.receive(sqe.cid, len)
    }

    /// Load Program (this project's C1h): keeps the kernel under its program index.
    fn load_program(
        &mut self,
        sqe: &Sqe,
        cntlid: u16,
        in_capsule: Vec<u8>,
    ) -> io::Result<Option<Answer>> {
        let bytes = self.data_in(sqe, in_capsule)?;
        let index = sqe.cdw(10) as u8;
        if usize::from(index) >= PROGRAMS || bytes.is_empty() || bytes.len() > MAX_H2C_DATA as usize
        {
            return Ok(self.done(sqe, Status::InvalidField));
        }
        // An ELF object is linked here, as `csd kernel run` does; a linked image goes as is.
        let image = if bytes.starts_with(b"\x7fELF") {
            match crate::loader::link(&bytes) {
                Ok(image) => image.to_bytes(),
                Err(_) => return Ok(self.done(sqe, Status::ProgramRejected)),
            }
        } else {
            bytes
        };
        let kernel = Kernel::from_image(format!("NVMe/TCP program {index}"), image);
        self.target.with_controller(cntlid, |c| {
            c.programs.insert(index, kernel);
        });
        Ok(self.done(sqe, Status::Success))
    }

    /// Execute Program (this project's C2h): runs a loaded kernel over an LBA range.
    fn execute_program(&mut self, sqe: &Sqe) -> Option<Answer> {
        let cntlid = self.cntlid?;
        let index = sqe.cdw(10) as u8;
        let Some(kernel) = self
            .target
            .with_controller(cntlid, |c| c.programs.get(&index).cloned())
            .flatten()
        else {
            return self.done(sqe, Status::ProgramNotActive);
        };
        let Some(engine) = self.target.engine() else {
            return self.done(sqe, Status::InternalError);
        };
        let start_lba = u64::from(sqe.cdw(12)) | u64::from(sqe.cdw(13)) << 32;
        let lba_count = sqe.cdw(14).wrapping_add(1);
        let out_cap = (sqe.dptr[1] as u32).min(MAX_H2C_DATA);
        let file_size = u64::from(lba_count) * u64::from(LBA_BYTES);
        let ranges = crate::offload::Ranges::raw(
            vec![Extent {
                start_lba,
                lba_count,
            }],
            file_size,
            out_cap,
        );
        let job = Job {
            op: ProgramOp::FileJob,
            offset: 0,
            len: file_size,
            params: (
                u64::from(sqe.cdw2) | u64::from(sqe.cdw3) << 32,
                u64::from(sqe.cdw(15)),
            ),
            fuel: 0,
            input: Vec::new(),
            max_output: out_cap,
        };
        let Ok(mut lease) = engine.lease() else {
            return self.done(sqe, Status::InternalError);
        };
        let ran = engine.run(&mut lease, &kernel, &ranges, job, |result, _| {
            Ok::<_, crate::offload::RunError>(matches!(result.outcome, ExecOutcome::Exited { .. }))
        });
        let _ = engine.release(lease);
        let Ok(ran) = ran else {
            return self.done(sqe, Status::InternalError);
        };
        let status = match ran.result.outcome {
            ExecOutcome::Exited { r0 } => {
                let mut answer = self.with_data(sqe, ran.output)?;
                answer.cqe.dw0 = r0 as u32;
                answer.cqe.dw1 = (r0 >> 32) as u32;
                return Some(answer);
            }
            ExecOutcome::Faulted(ExecFault::OutOfFuel) => Status::ProgramOutOfFuel,
            ExecOutcome::Faulted(_) => Status::ProgramFault,
        };
        self.done(sqe, status)
    }

    fn io(&mut self, sqe: &Sqe, in_capsule: Vec<u8>) -> io::Result<Option<Answer>> {
        if sqe.nsid != 1 && sqe.opcode != nvme::opcode::FLUSH {
            return Ok(self.done(sqe, Status::InvalidField));
        }
        let command = match nvme::io_command(sqe) {
            Ok(c) => c,
            Err(e) => return Ok(self.done(sqe, e.status())),
        };
        let changes_zones = matches!(
            command,
            Command::Write { .. } | Command::ZoneAppend { .. } | Command::ZoneManagementSend { .. }
        );
        if changes_zones && (self.target.zones_held)() {
            // The host's write data must still be taken off the connection.
            if let Command::Write { nlb, .. } | Command::ZoneAppend { nlb, .. } = command {
                if in_capsule.is_empty() {
                    self.receive(sqe.cid, nlb as usize * LBA_BYTES as usize)?;
                }
            }
            return Ok(self.done(sqe, Status::AccessDenied));
        }
        let driver = &self.target.driver;
        let outcome = match command {
            Command::ZoneManagementReceive {
                slba,
                filter,
                max_zones,
                partial,
            } => driver.report(slba, filter, max_zones).map(|(nr, zones)| {
                let nr = if partial { zones.len() as u64 } else { nr };
                let mut out = vec![0u8; nvme::report_bytes(max_zones)];
                nvme::write_zone_report(nr, &zones, &mut out);
                (Completion::status(CommandId(sqe.cid), Status::Success), out)
            }),
            Command::Read { nlb, .. } => driver
                .exchange(command, vec![0u8; nlb as usize * LBA_BYTES as usize])
                .map(|done| (done.completion, done.buffer)),
            Command::Write { nlb, .. } | Command::ZoneAppend { nlb, .. } => {
                let len = nlb as usize * LBA_BYTES as usize;
                let data = if in_capsule.is_empty() {
                    self.receive(sqe.cid, len)?
                } else {
                    in_capsule
                };
                if data.len() != len {
                    return Ok(self.done(sqe, Status::DataTransferError));
                }
                driver
                    .exchange(command, data)
                    .map(|done| (done.completion, Vec::new()))
            }
            other => driver
                .exchange(other, Vec::new())
                .map(|done| (done.completion, Vec::new())),
        };
        Ok(match outcome {
            Ok((completion, data)) => {
                let (dw0, dw1) = match completion.result {
                    CommandResult::Lba(lba) => (lba as u32, (lba >> 32) as u32),
                    _ => (0, 0),
                };
                let status = completion.status;
                Some(Answer {
                    cqe: self.cqe(sqe.cid, status.code(), dw0, dw1),
                    data: if status == Status::Success {
                        data
                    } else {
                        Vec::new()
                    },
                })
            }
            Err(e) => self.done(sqe, driver_status(&e)),
        })
    }

    /// Asks the host for a write's `len` bytes with R2T PDUs and collects its H2CData.
    fn receive(&mut self, cid: u16, len: usize) -> io::Result<Vec<u8>> {
        let mut data = Vec::with_capacity(len);
        while data.len() < len {
            let chunk = (len - data.len()).min(MAX_H2C_DATA as usize);
            self.ttag = self.ttag.wrapping_add(1);
            let mut h = [0u8; 16];
            h[0..2].copy_from_slice(&cid.to_le_bytes());
            h[2..4].copy_from_slice(&self.ttag.to_le_bytes());
            h[4..8].copy_from_slice(&(data.len() as u32).to_le_bytes());
            h[8..12].copy_from_slice(&(chunk as u32).to_le_bytes());
            write_pdu(&mut self.stream, pdu::R2T, 0, 24, &h, &[])?;
            let mut got = 0;
            while got < chunk {
                let p = read_pdu(&mut self.stream)?;
                if p.kind == pdu::CAPSULE_CMD {
                    // The host sends commands without waiting: served after this one.
                    self.pending.push_back(p);
                    continue;
                }
                let h = p.header();
                let ours = p.kind == pdu::H2C_DATA
                    && h.len() >= 16
                    && h[0..2] == cid.to_le_bytes()
                    && h[2..4] == self.ttag.to_le_bytes()
                    && h[4..8] == (data.len() as u32).to_le_bytes();
                if !ours {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a PDU other than the H2CData an R2T asked for",
                    ));
                }
                let payload = p.data();
                got += payload.len();
                data.extend_from_slice(payload);
                if p.flags & pdu::LAST_PDU != 0 {
                    break;
                }
            }
        }
        data.truncate(len);
        Ok(data)
    }
}

/// The well-known NQN of discovery controllers.
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

/// Log page 70h: Discovery.
const LOG_DISCOVERY: u8 = 0x70;

/// The Discovery log page: a 1,024-byte header (generation counter, number of records, record
/// format) and one 1,024-byte entry: NVMe/TCP (transport type 3), the address family of
/// `addr`, an NVM subsystem (subsystem type 2), no secure channel required, port 1, a dynamic
/// controller id (FFFFh), the admin queue size, the service id (the port, as text) at byte 32,
/// the subsystem's NQN at byte 256 and the address at byte 512.
fn discovery_log(nqn: &str, addr: Option<std::net::SocketAddr>) -> Vec<u8> {
    let mut page = vec![0u8; 2048];
    page[0..8].copy_from_slice(&1u64.to_le_bytes()); // GENCTR
    page[8..16].copy_from_slice(&1u64.to_le_bytes()); // NUMREC
    let e = &mut page[1024..];
    e[0] = 3; // TRTYPE: TCP
    e[1] = match addr {
        Some(std::net::SocketAddr::V6(_)) => 2,
        _ => 1,
    }; // ADRFAM: IPv4 or IPv6
    e[2] = 2; // SUBTYPE: an NVM subsystem
    e[3] = 2; // TREQ: secure channel not required
    e[4..6].copy_from_slice(&1u16.to_le_bytes()); // PORTID
    e[6..8].copy_from_slice(&0xffffu16.to_le_bytes()); // CNTLID: dynamic
    e[8..10].copy_from_slice(&(QUEUE_ENTRIES as u16).to_le_bytes()); // ASQSZ
    let mut put = |at: usize, len: usize, text: &str| {
        let n = text.len().min(len);
        e[at..at + n].copy_from_slice(&text.as_bytes()[..n]);
    };
    if let Some(addr) = addr {
        put(32, 32, &addr.port().to_string()); // TRSVCID
        put(512, 256, &addr.ip().to_string()); // TRADDR
    }
    put(256, 256, nqn); // SUBNQN
    page
}

/// Log page 05h: Commands Supported and Effects.
const LOG_COMMANDS_SUPPORTED: u8 = 0x05;

/// The Commands Supported and Effects log: one dword per admin opcode (bytes 1023:0), then per
/// I/O opcode (from byte 1024); bit 0 says the command is supported, bit 1 that it may change
/// logical blocks' content (the same page for every command set).
fn commands_supported() -> Vec<u8> {
    const SUPPORTED: u32 = 1;
    const CHANGES_CONTENT: u32 = 1 << 1;
    let mut page = vec![0u8; 4096];
    let mut set = |at: usize, effects: u32| {
        page[at * 4..at * 4 + 4].copy_from_slice(&effects.to_le_bytes());
    };
    for op in [
        admin::GET_LOG_PAGE,
        admin::IDENTIFY,
        admin::SET_FEATURES,
        admin::GET_FEATURES,
        admin::ASYNC_EVENT_REQUEST,
        admin::KEEP_ALIVE,
        csd_opcode::LOAD_PROGRAM,
    ] {
        set(usize::from(op), SUPPORTED);
    }
    for (op, effects) in [
        (nvme::opcode::FLUSH, SUPPORTED),
        (nvme::opcode::WRITE, SUPPORTED | CHANGES_CONTENT),
        (nvme::opcode::READ, SUPPORTED),
        (
            nvme::opcode::ZONE_MANAGEMENT_SEND,
            SUPPORTED | CHANGES_CONTENT,
        ),
        (nvme::opcode::ZONE_MANAGEMENT_RECEIVE, SUPPORTED),
        (nvme::opcode::ZONE_APPEND, SUPPORTED | CHANGES_CONTENT),
        (csd_opcode::EXECUTE_PROGRAM, SUPPORTED),
    ] {
        set(256 + usize::from(op), effects);
    }
    page
}

/// Fills in what Identify Controller says of a controller over a fabric.
fn fabrics_identity(data: &mut [u8; nvme::IDENTIFY_BYTES], cntlid: u16) {
    data[78..80].copy_from_slice(&cntlid.to_le_bytes()); // CNTLID
    data[111] = 1; // CNTRLTYPE: I/O controller
    data[320..322].copy_from_slice(&10u16.to_le_bytes()); // KAS: 100 ms units
    data[514..516].copy_from_slice(&(QUEUE_ENTRIES as u16).to_le_bytes()); // MAXCMD
    data[536..540].copy_from_slice(&1u32.to_le_bytes()); // SGLS: SGLs supported
                                                         // IOCCSZ and IORCSZ in 16-byte units: an SQE and up to 8 KiB of in-capsule data; a CQE.
    data[1792..1796].copy_from_slice(&((64 + IN_CAPSULE_BYTES) / 16).to_le_bytes());
    data[1796..1800].copy_from_slice(&1u32.to_le_bytes());
    data[1800] = 0; // ICDOFF
}

/// The value of property `offset` of a controller whose CC is `cc`.
fn property_value(offset: u32, cc: u32) -> Option<u64> {
    Some(match offset {
        // MQES (0's based), CQR, TO (500 ms units), CSS: NVM (bit 37) and I/O command sets
        // (bit 43); MPSMIN 4 KiB.
        property::CAP => (QUEUE_ENTRIES - 1) | 1 << 16 | 20 << 24 | 1 << 37 | 1 << 43,
        property::VS => 0x0002_0100,
        property::CC => u64::from(cc),
        // RDY follows EN; a shutdown (SHN) completes at once (SHST 10b).
        property::CSTS => {
            let shutdown = if cc >> 14 & 3 != 0 { 0b1000 } else { 0 };
            u64::from(cc & 1) | shutdown
        }
        _ => return None,
    })
}

/// The status of a failed driver call.
fn driver_status(e: &DriverError) -> Status {
    e.status().unwrap_or(Status::InternalError)
}

fn nul_terminated(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..end]
}
