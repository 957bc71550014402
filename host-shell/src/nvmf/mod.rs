//! An NVMe over Fabrics target on the TCP transport: a running device served to any NVMe/TCP
//! host (`csd device start IMAGE --nvme-tcp ADDR:PORT`), as one NVM subsystem with one
//! controller per admin connection, the zoned namespace (NSID 1) and the program commands'
//! compute and memory namespaces (NSID 2 and 3).
//!
//! From the NVMe/TCP Transport Specification 1.1: every PDU starts with an 8-byte common header
//! (type, flags, header length, data offset, total length, little-endian); a connection opens
//! with ICReq (00h) and ICResp (01h), 128 bytes each; commands arrive in CapsuleCmd PDUs (04h:
//! the header, the 64-byte SQE, then any in-capsule data) and complete in CapsuleResp PDUs
//! (05h: the 16-byte CQE); the controller sends read data in C2HData PDUs (07h) and asks for
//! write data that did not come in the capsule with R2T (09h), which the host answers with
//! H2CData (06h). Header and data digests are used when the host's ICReq asks for them
//! ([`pdu`]): a wrong header digest ends the connection (C2HTermReq, Header Digest Error), a
//! wrong data digest completes its command with Transient Transport Error.
//!
//! From NVMe over Fabrics (NVMe Base 2.1): Fabrics commands have opcode 7Fh and their type in
//! byte 4 (Property Set 00h, Connect 01h, Property Get 04h); Connect carries the queue id and
//! queue size in command dword 10 and 1,024 bytes of data (host id, controller id at byte 16,
//! SUBNQN at 256, HOSTNQN at 512) and completes with the controller id in dword 0; the
//! properties are CAP (00h), VS (08h), CC (14h) and CSTS (1Ch).
//!
//! Each connection (one queue) runs on its own thread; the commands go to the device through a
//! [`Driver`], on the thread's own queue pair. Admin: Identify (controller, namespace, active
//! namespace list, namespace identification descriptors, the command set independent
//! namespace structure, the zoned command set's structures, the I/O command set
//! combinations), Get Log Page (pages of zeros), Set and Get Features
//! (the number of queues; the rest accepted), Keep Alive, Asynchronous Event Request (held, as
//! no event is ever reported). I/O: Read, Write, Flush, Zone Append, Zone Management Send and
//! Receive. The Computational Programs commands (`common::nvme::cp`: Load Program, Program
//! Activation Management, Memory Range Set Management on the admin queue; Execute Program on
//! namespace 2 and Memory Read on namespace 3) go to the device on a session of their own
//! (`programs.rs`). Another namespace completes with Invalid Namespace or Format, anything
//! else with Invalid Command Opcode.

use std::{
    collections::HashMap,
    io,
    net::TcpListener,
    sync::{
        atomic::{AtomicBool, AtomicU16, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use common::{zns::IdentifyZns, Status};

use crate::{
    driver::{Driver, DriverError},
    offload::{Engine, Kernel},
};

mod admin;
mod pdu;
mod programs;
mod queue;

use queue::Queue;

/// This project's own commands, in NVMe's vendor-specific opcode ranges (admin C0h-FFh, I/O
/// 80h-FFh), which need no program namespaces (hosts that give a namespace of an unknown
/// command set no device, Linux before 6.0): Load Program (admin C1h: program index in CDW10
/// bits 7:0, the kernel's ELF object or linked image as data) and Execute Program (I/O C2h:
/// program index in CDW10 bits 7:0, the first LBA in CDW12 and CDW13, the number of LBAs, 0's
/// based, in CDW14, `param0` in CDW2 and CDW3, `param1` in CDW15; the kernel's output as data,
/// its return value in completion dwords 0 and 1).
pub mod csd_opcode {
    pub const LOAD_PROGRAM: u8 = 0xC1;
    pub const EXECUTE_PROGRAM: u8 = 0xC2;
}

/// What a session's driver needs kept alive (the attachment it runs over).
pub type Keep = Box<dyn std::any::Any + Send + Sync>;

/// A session of the running device the target made (`None` if it could not), with what
/// keeps it alive.
type Made<T> = Option<(T, Keep)>;

/// Program indexes a controller holds.
const PROGRAMS: usize = 16;

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
/// Generic status Transient Transport Error (22h): a command whose data digest was wrong.
const TRANSIENT_TRANSPORT_ERROR: u16 = 0x22;

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
    /// Attaches a session to the running device: its program slots and range sets are its
    /// own, apart from a mount's and other sessions'.
    session: Box<dyn Fn() -> Option<(Driver, Keep)> + Send + Sync>,
    /// Runs the vendor-specific Execute Program: an engine on a session of its own, made at
    /// the first run (`None` until then).
    engine_made: Mutex<Option<Made<Arc<Engine>>>>,
    /// Serves the Computational Programs commands: a session of its own, whose program
    /// indices and range sets the subsystem's controllers share, made at the first of them.
    programs_made: Mutex<Option<Made<Driver>>>,
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
    /// `session` attaches a session to the running device (a driver, with what must live as
    /// long as it): the running device's sessions hand out program slots, so kernels run on
    /// sessions of their own, one for the vendor-specific commands' engine and one for the
    /// Computational Programs commands, each attached at its first use.
    pub fn new(
        driver: Driver,
        nqn: &str,
        zones_held: impl Fn() -> bool + Send + Sync + 'static,
        session: impl Fn() -> Option<(Driver, Keep)> + Send + Sync + 'static,
    ) -> Arc<Self> {
        let serial = format!(
            "CSD{:08X}",
            crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(nqn.as_bytes())
        );
        Arc::new(Target {
            driver,
            session: Box::new(session),
            engine_made: Mutex::new(None),
            programs_made: Mutex::new(None),
            zones_held: Box::new(zones_held),
            nqn: nqn.to_string(),
            serial,
            controllers: Mutex::new(HashMap::new()),
            next_cntlid: AtomicU16::new(1),
            stop: AtomicBool::new(false),
        })
    }

    /// Ends [`Target::serve`] and lets go of its sessions (connections in progress end with
    /// their hosts).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let engine = self
            .engine_made
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let programs = self
            .programs_made
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop((engine, programs));
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
        made.get_or_insert_with(|| {
            (self.session)().map(|(driver, keep)| (Arc::new(Engine::new(driver)), keep))
        })
        .as_ref()
        .map(|(engine, _)| Arc::clone(engine))
    }

    /// The driver of the Computational Programs commands' session (attached at the first
    /// call), or `None` if it cannot be attached or the target stopped.
    fn programs(&self) -> Option<Driver> {
        if self.stop.load(Ordering::SeqCst) {
            return None;
        }
        let mut made = self.programs_made.lock().unwrap_or_else(|p| p.into_inner());
        made.get_or_insert_with(|| (self.session)())
            .as_ref()
            .map(|(driver, _)| driver.clone())
    }

    fn with_controller<T>(&self, cntlid: u16, f: impl FnOnce(&mut Controller) -> T) -> Option<T> {
        let mut controllers = self.controllers.lock().unwrap_or_else(|p| p.into_inner());
        controllers.get_mut(&cntlid).map(f)
    }
}

/// The status of a failed driver call.
fn driver_status(e: &DriverError) -> Status {
    e.status().unwrap_or(Status::InternalError)
}

fn nul_terminated(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..end]
}
