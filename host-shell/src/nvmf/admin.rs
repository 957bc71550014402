//! Admin commands: Identify, log pages, features; the discovery controller's; what
//! Identify Controller says of a fabric controller, and the controller's properties.

use std::io;

use common::{
    nvme::{self, Sqe},
    Status,
};

use super::{
    csd_opcode, property,
    queue::{Answer, Queue},
    IN_CAPSULE_BYTES, IO_QUEUES, QUEUE_ENTRIES,
};

/// The namespaces: the zoned one, and the program namespaces of the Computational Programs
/// commands (`common::nvme::cp`).
const NAMESPACES: [u32; 3] = [nvme::NSID, nvme::cp::COMPUTE_NSID, nvme::cp::MEMORY_NSID];

/// Admin opcodes this target serves.
pub(super) const GET_LOG_PAGE: u8 = 0x02;
pub(super) const IDENTIFY: u8 = nvme::opcode::IDENTIFY;
pub(super) const SET_FEATURES: u8 = 0x09;
pub(super) const GET_FEATURES: u8 = 0x0A;
pub(super) const ASYNC_EVENT_REQUEST: u8 = 0x0C;
pub(super) const KEEP_ALIVE: u8 = 0x18;
pub(super) const FABRICS: u8 = 0x7F;

impl Queue<'_> {
    pub(super) fn admin(
        &mut self,
        sqe: &Sqe,
        cntlid: u16,
        in_capsule: Vec<u8>,
    ) -> io::Result<Option<Answer>> {
        let id = self.target.identify();
        let discovery = self
            .target
            .with_controller(cntlid, |c| c.discovery)
            .unwrap_or(false);
        if discovery {
            return Ok(self.discovery_admin(sqe, cntlid));
        }
        Ok(match sqe.opcode {
            IDENTIFY => {
                let (cns, csi) = nvme::identify_of(sqe);
                let nsid_ok = sqe.nsid == nvme::NSID;
                // The program namespaces' command sets: Computational Programs and Subsystem
                // Local Memory.
                let program_csi = match sqe.nsid {
                    nvme::cp::COMPUTE_NSID => Some(nvme::csi::COMPUTATIONAL_PROGRAMS),
                    nvme::cp::MEMORY_NSID => Some(nvme::csi::SUBSYSTEM_LOCAL_MEMORY),
                    _ => None,
                };
                let mut data = match (cns, csi) {
                    (nvme::cns::NAMESPACE, _) if nsid_ok => {
                        nvme::identify_data(|b| nvme::identify_namespace(&id, b)).to_vec()
                    }
                    // No logical blocks on the program namespaces.
                    (nvme::cns::NAMESPACE, _) if program_csi.is_some() => {
                        vec![0u8; nvme::IDENTIFY_BYTES]
                    }
                    (nvme::cns::CONTROLLER, _) => {
                        self.controller_identity(&self.target.nqn, cntlid).to_vec()
                    }
                    // Active namespace list: the namespaces above the NSID given.
                    (0x02, _) => {
                        let mut list = vec![0u8; nvme::IDENTIFY_BYTES];
                        let above = NAMESPACES.iter().filter(|&&n| n > sqe.nsid);
                        for (i, nsid) in above.enumerate() {
                            list[i * 4..i * 4 + 4].copy_from_slice(&nsid.to_le_bytes());
                        }
                        list
                    }
                    // Namespace identification descriptors: the command set (type 04h, one
                    // byte).
                    (0x03, _) if nsid_ok || program_csi.is_some() => {
                        let mut list = vec![0u8; nvme::IDENTIFY_BYTES];
                        let set = program_csi.unwrap_or(nvme::csi::ZONED);
                        list[..5].copy_from_slice(&[0x04, 0x01, 0, 0, set]);
                        list
                    }
                    // I/O Command Set Independent Identify Namespace: NSTAT bit 0, the
                    // namespace is ready (what a host reads for a command set it does not
                    // know, before it offers the namespace to its users).
                    (0x08, _) if nsid_ok || program_csi.is_some() => {
                        let mut data = vec![0u8; nvme::IDENTIFY_BYTES];
                        data[14] = 1;
                        data
                    }
                    (nvme::cns::CSI_NAMESPACE, nvme::csi::ZONED) if nsid_ok => {
                        nvme::identify_data(|b| nvme::identify_zns_namespace(&id, b)).to_vec()
                    }
                    (nvme::cns::CSI_NAMESPACE, nvme::csi::NVM) if nsid_ok => {
                        vec![0u8; nvme::IDENTIFY_BYTES]
                    }
                    (nvme::cns::CSI_CONTROLLER, nvme::csi::ZONED) => {
                        nvme::identify_data(|b| nvme::identify_zns_controller(&id, b)).to_vec()
                    }
                    (nvme::cns::CSI_CONTROLLER, nvme::csi::NVM) => vec![0u8; nvme::IDENTIFY_BYTES],
                    // I/O command set combinations: NVM, zoned, Subsystem Local Memory and
                    // Computational Programs (bits 0, 2, 3 and 4).
                    (0x1C, _) => {
                        let mut list = vec![0u8; nvme::IDENTIFY_BYTES];
                        list[0] = 0x1d;
                        list
                    }
                    _ => return Ok(self.done(sqe, Status::InvalidField)),
                };
                data.resize(nvme::IDENTIFY_BYTES, 0);
                self.with_data(sqe, data)
            }
            GET_LOG_PAGE => {
                let page = match sqe.cdw(10) as u8 {
                    LOG_COMMANDS_SUPPORTED => commands_supported(),
                    // Error information, SMART / health, changed zones, the rest: nothing to
                    // report.
                    _ => Vec::new(),
                };
                self.log_page(sqe, page)
            }
            SET_FEATURES | GET_FEATURES => {
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
            KEEP_ALIVE => self.done(sqe, Status::Success),
            csd_opcode::LOAD_PROGRAM => return self.load_program(sqe, cntlid, in_capsule),
            nvme::opcode::LOAD_PROGRAM
            | nvme::opcode::PROGRAM_ACTIVATION
            | nvme::opcode::MEMORY_RANGE_SET => {
                return self.program_command(nvme::QueueType::Admin, sqe, in_capsule)
            }
            ASYNC_EVENT_REQUEST => None,
            _ => self.done(sqe, Status::InvalidOpcode),
        })
    }

    /// Identify Controller of this target's controller `cntlid` in subsystem `subnqn`.
    fn controller_identity(&self, subnqn: &str, cntlid: u16) -> [u8; nvme::IDENTIFY_BYTES] {
        let names = nvme::ControllerNames {
            serial: &self.target.serial,
            model: "csd computational storage device",
            firmware: env!("CARGO_PKG_VERSION"),
            subnqn,
        };
        nvme::identify_data(|b| {
            nvme::identify_controller(&self.target.identify(), &names, b);
            fabrics_identity(b, cntlid);
        })
    }

    /// The part of `page` a Get Log Page asks for: the number of dwords, 0's based, in CDW10
    /// bits 31:16 (lower) and CDW11 bits 15:0 (upper), the offset in CDW12 and CDW13; zeros
    /// past the page's end.
    fn log_page(&self, sqe: &Sqe, page: Vec<u8>) -> Option<Answer> {
        let numd = (sqe.cdw(10) >> 16) | (sqe.cdw(11) & 0xffff) << 16;
        let len = ((numd as usize + 1) * 4).min(64 * 1024);
        let offset = (u64::from(sqe.cdw(12)) | u64::from(sqe.cdw(13)) << 32) as usize;
        let mut data: Vec<u8> = page.into_iter().skip(offset).take(len).collect();
        data.resize(len, 0);
        self.with_data(sqe, data)
    }

    /// The admin commands of a discovery controller: Identify Controller, the Discovery log
    /// page (70h: this subsystem on this port), Keep Alive, Features, the held Asynchronous
    /// Event Request; nothing else.
    fn discovery_admin(&mut self, sqe: &Sqe, cntlid: u16) -> Option<Answer> {
        match sqe.opcode {
            IDENTIFY if nvme::identify_of(sqe).0 == nvme::cns::CONTROLLER => {
                let mut data = self.controller_identity(DISCOVERY_NQN, cntlid);
                data[111] = 2; // CNTRLTYPE: discovery controller
                data[516..520].fill(0); // NN: no namespaces
                self.with_data(sqe, data.to_vec())
            }
            GET_LOG_PAGE if sqe.cdw(10) as u8 == LOG_DISCOVERY => {
                let page = discovery_log(&self.target.nqn, self.wire.stream.local_addr().ok());
                self.log_page(sqe, page)
            }
            KEEP_ALIVE => self.done(sqe, Status::Success),
            SET_FEATURES | GET_FEATURES => self.done(sqe, Status::Success),
            ASYNC_EVENT_REQUEST => None,
            // Known commands with structures or pages it does not have.
            IDENTIFY | GET_LOG_PAGE => self.done(sqe, Status::InvalidField),
            _ => self.done(sqe, Status::InvalidOpcode),
        }
    }
}

/// The well-known NQN of discovery controllers.
pub(super) const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

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
        GET_LOG_PAGE,
        IDENTIFY,
        SET_FEATURES,
        GET_FEATURES,
        ASYNC_EVENT_REQUEST,
        KEEP_ALIVE,
        csd_opcode::LOAD_PROGRAM,
        nvme::opcode::LOAD_PROGRAM,
        nvme::opcode::PROGRAM_ACTIVATION,
        nvme::opcode::MEMORY_RANGE_SET,
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
    data[516..520].copy_from_slice(&(NAMESPACES.len() as u32).to_le_bytes()); // NN
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
pub(super) fn property_value(offset: u32, cc: u32) -> Option<u64> {
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
