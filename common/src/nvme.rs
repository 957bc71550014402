//! NVMe's own encodings of the device's commands and data: the 64-byte submission queue entry
//! (SQE) and 16-byte completion queue entry (CQE), the I/O commands of the NVM and Zoned
//! Namespace command sets, Identify, the zone report, and the Identify data structures, in the
//! specifications' byte layouts:
//!
//! - NVM Express Base Specification 2.1: the common command format (SQE: opcode in byte 0,
//!   command identifier in bytes 3:2, namespace in bytes 7:4, the data pointer in bytes 39:24,
//!   command dwords 10 to 15 in bytes 63:40), the completion queue entry (dword 3: command
//!   identifier in bits 15:0, phase tag in bit 16, status in bits 31:17 with the status code in
//!   bits 24:17, its type in bits 27:25, More in bit 30 and Do Not Retry in bit 31), Identify
//!   (06h; CNS in CDW10 bits 7:0, the command set identifier in CDW11 bits 31:24) and the
//!   Identify Controller data structure.
//! - NVM Command Set 1.1: Flush (00h), Write (01h) and Read (02h), with the starting LBA in
//!   CDW10 and CDW11 and the 0's based number of logical blocks in CDW12 bits 15:0; Identify
//!   Namespace (CNS 00h).
//! - Zoned Namespace Command Set 1.2 (command set identifier 02h): Zone Management Send (79h;
//!   the Zone Send Action in CDW13 bits 7:0, Select All in bit 8), Zone Management Receive
//!   (7Ah; the 0's based number of dwords in CDW12, the Zone Receive Action in CDW13 bits 7:0,
//!   its specific field, the reporting options, in bits 15:8, Partial Report in bit 16), Zone
//!   Append (7Dh; the assigned LBA in CQE dwords 0 and 1), the report (a 64-byte header whose
//!   bytes 7:0 count the zones, then 64-byte zone descriptors), and the I/O command set
//!   specific Identify Namespace (CNS 05h) and Identify Controller (CNS 06h).
//!
//! The program commands ([`cp`]) follow the Computational Programs (identifier 04h) and
//! Subsystem Local Memory (03h) command sets where their layouts could be found, and are this
//! project's own beyond that; [`encode`] and [`decode`] take every command of the device to
//! and from its entry, with the device's own structures as vendor-specific log pages
//! ([`log_page`]).

use serde::{Deserialize, Serialize};

use crate::{
    command::{Command, CommandId, CommandResult, Completion},
    program::{ExecOutcome, RangeSetId},
    zns::{IdentifyZns, ReportFilter, ZoneAction, ZoneDescriptor, ZoneState, ZoneType},
    Status,
};

pub mod cp;
#[cfg(test)]
mod tests;

/// Bytes of a submission queue entry.
pub const SQE_BYTES: usize = 64;
/// Bytes of a completion queue entry.
pub const CQE_BYTES: usize = 16;
/// Bytes of every Identify data structure.
pub const IDENTIFY_BYTES: usize = 4096;
/// Bytes of the zone report's header and of each zone descriptor.
pub const ZONE_REPORT_HEADER_BYTES: usize = 64;
pub const ZONE_DESCRIPTOR_BYTES: usize = 64;

/// Opcodes.
pub mod opcode {
    /// NVM Command Set, I/O.
    pub const FLUSH: u8 = 0x00;
    pub const WRITE: u8 = 0x01;
    pub const READ: u8 = 0x02;
    /// Zoned Namespace Command Set, I/O.
    pub const ZONE_MANAGEMENT_SEND: u8 = 0x79;
    pub const ZONE_MANAGEMENT_RECEIVE: u8 = 0x7A;
    pub const ZONE_APPEND: u8 = 0x7D;
    /// Admin.
    pub const GET_LOG_PAGE: u8 = 0x02;
    pub const IDENTIFY: u8 = 0x06;
    /// Computational Programs, admin (see [`super::cp`]; its I/O opcodes are there).
    pub const LOAD_PROGRAM: u8 = 0x85;
    pub const PROGRAM_ACTIVATION: u8 = 0x88;
    pub const MEMORY_RANGE_SET: u8 = 0x89;
}

/// Whether a command of `opcode` moves data from the host to the controller: bits 1:0 of
/// every opcode give its data transfer direction (NVMe Base 2.1, Opcodes for Admin
/// Commands: 01b host to controller, 10b controller to host, 00b none).
pub const fn sends_data(opcode: u8) -> bool {
    opcode & 0b11 == 0b01
}

/// The zoned namespace, where the NVM and zoned commands go (the program commands have
/// namespaces of their own, [`cp::COMPUTE_NSID`] and [`cp::MEMORY_NSID`]).
pub const NSID: u32 = 1;

/// Log pages. C0h to FFh are vendor specific (NVMe Base Specification 2.1, Log Page
/// Identifiers); this device keeps its own structures there.
pub mod log_page {
    /// The device's summary ([`crate::zns::IdentifyZns`], postcard-encoded): geometry,
    /// limits and program resources.
    pub const DEVICE: u8 = 0xC0;
    /// Wear and bad blocks ([`crate::command::DeviceHealth`], postcard-encoded).
    pub const HEALTH: u8 = 0xC1;
    /// The `csd_log` messages of the last run over the range set in the log specific
    /// identifier.
    pub const KERNEL_LOG: u8 = 0xC2;
}

/// Identify's Controller or Namespace Structure (CNS) values.
pub mod cns {
    pub const NAMESPACE: u8 = 0x00;
    pub const CONTROLLER: u8 = 0x01;
    /// I/O command set specific, for the command set in CDW11's CSI.
    pub const CSI_NAMESPACE: u8 = 0x05;
    pub const CSI_CONTROLLER: u8 = 0x06;
}

/// Command set identifiers (CSI).
pub mod csi {
    pub const NVM: u8 = 0x00;
    pub const ZONED: u8 = 0x02;
    pub const SUBSYSTEM_LOCAL_MEMORY: u8 = 0x03;
    pub const COMPUTATIONAL_PROGRAMS: u8 = 0x04;
}

/// A submission queue entry.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Sqe {
    pub opcode: u8,
    /// Byte 1: fused operation (bits 1:0) and PRP or SGL (bits 7:6).
    pub flags: u8,
    pub cid: u16,
    pub nsid: u32,
    pub cdw2: u32,
    pub cdw3: u32,
    /// Metadata pointer.
    pub mptr: u64,
    /// Data pointer: PRP entries 1 and 2 (or an SGL descriptor).
    pub dptr: [u64; 2],
    /// Command dwords 10 to 15.
    pub cdw: [u32; 6],
}

fn put_u16(out: &mut [u8], at: usize, v: u16) {
    out[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(out: &mut [u8], at: usize, v: u32) {
    out[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut [u8], at: usize, v: u64) {
    out[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from(get_u32(b, at)) | u64::from(get_u32(b, at + 4)) << 32
}

impl Sqe {
    /// An entry for `opcode` with command identifier `cid` on namespace `nsid`.
    pub fn new(opcode: u8, cid: u16, nsid: u32) -> Self {
        Sqe {
            opcode,
            cid,
            nsid,
            ..Sqe::default()
        }
    }

    /// The entry's bytes.
    pub fn to_bytes(&self) -> [u8; SQE_BYTES] {
        let mut b = [0u8; SQE_BYTES];
        b[0] = self.opcode;
        b[1] = self.flags;
        put_u16(&mut b, 2, self.cid);
        put_u32(&mut b, 4, self.nsid);
        put_u32(&mut b, 8, self.cdw2);
        put_u32(&mut b, 12, self.cdw3);
        put_u64(&mut b, 16, self.mptr);
        put_u64(&mut b, 24, self.dptr[0]);
        put_u64(&mut b, 32, self.dptr[1]);
        for (i, dw) in self.cdw.iter().enumerate() {
            put_u32(&mut b, 40 + 4 * i, *dw);
        }
        b
    }

    /// The entry in `b`.
    pub fn from_bytes(b: &[u8; SQE_BYTES]) -> Self {
        let mut cdw = [0u32; 6];
        for (i, dw) in cdw.iter_mut().enumerate() {
            *dw = get_u32(b, 40 + 4 * i);
        }
        Sqe {
            opcode: b[0],
            flags: b[1],
            cid: get_u16(b, 2),
            nsid: get_u32(b, 4),
            cdw2: get_u32(b, 8),
            cdw3: get_u32(b, 12),
            mptr: get_u64(b, 16),
            dptr: [get_u64(b, 24), get_u64(b, 32)],
            cdw,
        }
    }

    /// Command dword `n` (10 to 15).
    pub fn cdw(&self, n: usize) -> u32 {
        self.cdw[n - 10]
    }

    fn set_cdw(&mut self, n: usize, v: u32) {
        self.cdw[n - 10] = v;
    }

    /// The 64-bit LBA in CDW10 (low) and CDW11 (high).
    pub fn slba(&self) -> u64 {
        u64::from(self.cdw(10)) | u64::from(self.cdw(11)) << 32
    }

    fn set_slba(&mut self, lba: u64) {
        self.set_cdw(10, lba as u32);
        self.set_cdw(11, (lba >> 32) as u32);
    }
}

/// An entry crosses a link as its bytes (a tuple of fixed length: no length prefix).
fn serialize_bytes<S: serde::Serializer, const N: usize>(
    bytes: &[u8; N],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeTuple;
    let mut t = s.serialize_tuple(N)?;
    for b in bytes {
        t.serialize_element(b)?;
    }
    t.end()
}

fn deserialize_bytes<'de, D: serde::Deserializer<'de>, const N: usize>(
    d: D,
) -> Result<[u8; N], D::Error> {
    struct Bytes<const N: usize>;
    impl<'de, const N: usize> serde::de::Visitor<'de> for Bytes<N> {
        type Value = [u8; N];
        fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            write!(f, "{N} bytes")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; N], A::Error> {
            let mut out = [0u8; N];
            for (i, b) in out.iter_mut().enumerate() {
                *b = seq
                    .next_element()?
                    .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
            }
            Ok(out)
        }
    }
    d.deserialize_tuple(N, Bytes::<N>)
}

impl Serialize for Sqe {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_bytes(&self.to_bytes(), s)
    }
}

impl<'de> Deserialize<'de> for Sqe {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_bytes::<D, SQE_BYTES>(d).map(|b| Sqe::from_bytes(&b))
    }
}

impl Serialize for Cqe {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_bytes(&self.to_bytes(), s)
    }
}

impl<'de> Deserialize<'de> for Cqe {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_bytes::<D, CQE_BYTES>(d).map(|b| Cqe::from_bytes(&b))
    }
}

/// A completion queue entry.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Cqe {
    /// Command specific dwords 0 and 1.
    pub dw0: u32,
    pub dw1: u32,
    /// Submission queue head pointer and identifier.
    pub sqhd: u16,
    pub sqid: u16,
    pub cid: u16,
    pub phase: bool,
    /// Status code type (bits 10:8) and status code (bits 7:0): [`Status::code`].
    pub status: u16,
    pub more: bool,
    pub do_not_retry: bool,
}

impl Cqe {
    /// The entry's bytes.
    pub fn to_bytes(&self) -> [u8; CQE_BYTES] {
        let mut b = [0u8; CQE_BYTES];
        put_u32(&mut b, 0, self.dw0);
        put_u32(&mut b, 4, self.dw1);
        put_u16(&mut b, 8, self.sqhd);
        put_u16(&mut b, 10, self.sqid);
        let dw3 = u32::from(self.cid)
            | u32::from(self.phase) << 16
            | u32::from(self.status & 0x7ff) << 17
            | u32::from(self.more) << 30
            | u32::from(self.do_not_retry) << 31;
        put_u32(&mut b, 12, dw3);
        b
    }

    /// The entry in `b`.
    pub fn from_bytes(b: &[u8; CQE_BYTES]) -> Self {
        let dw3 = get_u32(b, 12);
        Cqe {
            dw0: get_u32(b, 0),
            dw1: get_u32(b, 4),
            sqhd: get_u16(b, 8),
            sqid: get_u16(b, 10),
            cid: dw3 as u16,
            phase: dw3 >> 16 & 1 == 1,
            status: (dw3 >> 17 & 0x7ff) as u16,
            more: dw3 >> 30 & 1 == 1,
            do_not_retry: dw3 >> 31 == 1,
        }
    }

    /// The completion of `completion` on queue `sqid`: its status, and in dwords 0 and 1 the
    /// assigned LBA of a Zone Append or the bytes a command transferred. (A kernel run's
    /// result and a program's rejection do not fit a completion entry.)
    pub fn of(completion: &Completion, sqid: u16, sqhd: u16, phase: bool) -> Self {
        let (dw0, dw1) = match completion.result {
            CommandResult::Lba(lba) => (lba as u32, (lba >> 32) as u32),
            CommandResult::Transferred(n) => (n, 0),
            _ => (0, 0),
        };
        Cqe {
            dw0,
            dw1,
            sqhd,
            sqid,
            cid: completion.cid.0,
            phase,
            status: completion.status.code(),
            more: false,
            do_not_retry: completion.status != Status::Success,
        }
    }
}

/// Why an entry does not decode to one of this device's commands.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SqeError {
    /// An opcode this device does not implement (Invalid Command Opcode).
    Opcode(u8),
    /// A field this device does not accept (Invalid Field in Command).
    Field,
    /// A namespace this device does not have, or not for this command (Invalid Namespace or
    /// Format).
    Namespace,
    /// The command's parameter data is missing from its host memory (Data Transfer Error).
    Data,
    /// A log page this device does not have (Invalid Log Page).
    LogPage,
}

impl SqeError {
    /// The status a controller completes the entry with.
    pub const fn status(self) -> Status {
        match self {
            SqeError::Opcode(_) => Status::InvalidOpcode,
            SqeError::Field => Status::InvalidField,
            SqeError::Namespace => Status::InvalidNamespace,
            SqeError::Data => Status::DataTransferError,
            SqeError::LogPage => Status::InvalidLogPage,
        }
    }
}

/// The specification's Zone Receive Action Specific value of a report filter.
pub const fn filter_value(filter: ReportFilter) -> u8 {
    match filter {
        ReportFilter::All => 0,
        ReportFilter::Empty => 1,
        ReportFilter::ImplicitlyOpened => 2,
        ReportFilter::ExplicitlyOpened => 3,
        ReportFilter::Closed => 4,
        ReportFilter::Full => 5,
        ReportFilter::ReadOnly => 6,
        ReportFilter::Offline => 7,
    }
}

fn filter_of(value: u8) -> Option<ReportFilter> {
    Some(match value {
        0 => ReportFilter::All,
        1 => ReportFilter::Empty,
        2 => ReportFilter::ImplicitlyOpened,
        3 => ReportFilter::ExplicitlyOpened,
        4 => ReportFilter::Closed,
        5 => ReportFilter::Full,
        6 => ReportFilter::ReadOnly,
        7 => ReportFilter::Offline,
        _ => return None,
    })
}

fn action_of(value: u8) -> Option<ZoneAction> {
    [
        ZoneAction::Close,
        ZoneAction::Finish,
        ZoneAction::Open,
        ZoneAction::Reset,
        ZoneAction::Offline,
    ]
    .into_iter()
    .find(|a| a.spec_value() == value)
}

/// Bytes of a zone report of `zones` descriptors.
pub const fn report_bytes(zones: u32) -> usize {
    ZONE_REPORT_HEADER_BYTES + zones as usize * ZONE_DESCRIPTOR_BYTES
}

/// Which queue an entry is submitted to: admin and I/O commands share opcode values (02h is
/// Get Log Page on the admin queue and Read on an I/O queue), so an entry means something only
/// with its queue's type.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum QueueType {
    Admin,
    Io,
}

/// The 0's based number of logical blocks of a transfer of `nlb` blocks; NVMe cannot express
/// none or more than 65,536.
fn nlb_field(nlb: u32) -> Result<u32, SqeError> {
    (1..=0x1_0000)
        .contains(&nlb)
        .then(|| nlb - 1)
        .ok_or(SqeError::Field)
}

/// The 0's based number of dwords of a transfer of `bytes` (at least one dword).
fn numd(bytes: usize) -> u32 {
    (bytes.div_ceil(4).max(1) - 1) as u32
}

/// A Get Log Page (admin 02h) for log `lid` with log specific identifier `lsi`, of `bytes`:
/// the log page identifier in CDW10 bits 7:0, the 0's based number of dwords in CDW10 bits
/// 31:16 (lower) and CDW11 bits 15:0 (upper), the log specific identifier in CDW11 bits 31:16.
fn get_log_page(sqe: &mut Sqe, lid: u8, lsi: u16, bytes: usize) {
    let n = numd(bytes);
    sqe.opcode = opcode::GET_LOG_PAGE;
    sqe.set_cdw(10, u32::from(lid) | (n & 0xffff) << 16);
    sqe.set_cdw(11, n >> 16 | u32::from(lsi) << 16);
}

/// `command` with command identifier `cid` for a host memory of `host_len` bytes, as the queue
/// type and entry that carry it (namespace 1). Errors for a command NVMe cannot express (a
/// transfer of no blocks or more than 65,536).
///
/// The NVM and Zoned Namespace commands are the specifications'; the device's own structures
/// travel as vendor-specific log pages ([`log_page`]); the program commands are laid out in
/// [`cp`] (see its docs for what is the Computational Programs specification's and what is
/// this project's).
pub fn encode(
    cid: CommandId,
    command: &Command,
    host_len: usize,
) -> Result<(QueueType, Sqe), SqeError> {
    let mut sqe = Sqe::new(0, cid.0, NSID);
    let queue = match *command {
        Command::Flush => {
            sqe.opcode = opcode::FLUSH;
            QueueType::Io
        }
        Command::Read { slba, nlb } | Command::Write { slba, nlb } => {
            sqe.opcode = if matches!(command, Command::Read { .. }) {
                opcode::READ
            } else {
                opcode::WRITE
            };
            sqe.set_slba(slba);
            sqe.set_cdw(12, nlb_field(nlb)?);
            QueueType::Io
        }
        Command::ZoneAppend { zslba, nlb } => {
            sqe.opcode = opcode::ZONE_APPEND;
            sqe.set_slba(zslba);
            sqe.set_cdw(12, nlb_field(nlb)?);
            QueueType::Io
        }
        Command::ZoneManagementSend {
            slba,
            action,
            select_all,
        } => {
            sqe.opcode = opcode::ZONE_MANAGEMENT_SEND;
            sqe.set_slba(slba);
            sqe.set_cdw(
                13,
                u32::from(action.spec_value()) | u32::from(select_all) << 8,
            );
            QueueType::Io
        }
        Command::ZoneManagementReceive {
            slba,
            filter,
            max_zones,
            partial,
        } => {
            sqe.opcode = opcode::ZONE_MANAGEMENT_RECEIVE;
            sqe.set_slba(slba);
            let bytes = u64::from(max_zones) * ZONE_DESCRIPTOR_BYTES as u64
                + ZONE_REPORT_HEADER_BYTES as u64;
            // NUMD, 0's based.
            let numd = u32::try_from(bytes / 4 - 1).map_err(|_| SqeError::Field)?;
            sqe.set_cdw(12, numd);
            // Zone Receive Action 00h: Report Zones.
            sqe.set_cdw(
                13,
                u32::from(filter_value(filter)) << 8 | u32::from(partial) << 16,
            );
            QueueType::Io
        }
        Command::Identify => {
            get_log_page(&mut sqe, log_page::DEVICE, 0, host_len);
            QueueType::Admin
        }
        Command::IdentifyStructure { cns, csi, nsid } => {
            sqe = identify_sqe(cid, nsid, cns, csi);
            QueueType::Admin
        }
        Command::GetHealth => {
            get_log_page(&mut sqe, log_page::HEALTH, 0, host_len);
            QueueType::Admin
        }
        Command::ReadLog(set) => {
            get_log_page(&mut sqe, log_page::KERNEL_LOG, set.0, host_len);
            QueueType::Admin
        }
        Command::LoadProgram(ref load) => {
            cp::load_program(&mut sqe, load);
            QueueType::Admin
        }
        Command::ActivateProgram(ref act) => {
            cp::activate(&mut sqe, act);
            QueueType::Admin
        }
        Command::MemoryRangeSet(ref set) => {
            cp::memory_range_set(&mut sqe, set);
            QueueType::Admin
        }
        Command::ExecuteProgram(ref exec) => {
            cp::execute(&mut sqe, exec);
            QueueType::Io
        }
        Command::ReadOutput(ref read) => {
            cp::read_output(&mut sqe, read);
            QueueType::Io
        }
    };
    Ok((queue, sqe))
}

/// The parameter data that goes before the host memory of `command` (Execute Program's, see
/// [`cp::EXECUTE_PARAMETER_BYTES`]): a transport sends it as the first bytes of the command's
/// host memory.
pub fn parameter_data(command: &Command) -> Option<[u8; cp::EXECUTE_PARAMETER_BYTES]> {
    match command {
        Command::ExecuteProgram(exec) => Some(cp::execute_parameters(exec)),
        _ => None,
    }
}

/// The command in `sqe` submitted to a queue of type `queue`, whose host memory the device
/// was sent whole in `data` (over a link or a fabric), and the host memory behind the
/// command's parameter data.
pub fn decode_with_data<'a>(
    queue: QueueType,
    sqe: &Sqe,
    data: &'a [u8],
) -> Result<(Command, &'a [u8]), SqeError> {
    let parameters = || data.get(..cp::EXECUTE_PARAMETER_BYTES)?.try_into().ok();
    let command = decode(queue, sqe, parameters)?;
    // A command with parameter data decodes only when `data` holds them.
    let skip = parameter_data(&command).map_or(0, |p| p.len());
    Ok((command, &data[skip..]))
}

/// The command in `sqe` submitted to a queue of type `queue` (see [`encode`]).
/// `parameters` reads Execute Program's parameter data from the start of its host memory
/// (`None` when the host memory is shorter).
pub fn decode(
    queue: QueueType,
    sqe: &Sqe,
    parameters: impl FnOnce() -> Option<[u8; cp::EXECUTE_PARAMETER_BYTES]>,
) -> Result<Command, SqeError> {
    let nlb = sqe.cdw(12) & 0xffff;
    let io = |nsid| queue == QueueType::Io && sqe.nsid == nsid;
    if io(cp::COMPUTE_NSID) && sqe.opcode == cp::EXECUTE_PROGRAM {
        let parameters = parameters().ok_or(SqeError::Data)?;
        return cp::execute_with(sqe, &parameters).map(Command::ExecuteProgram);
    }
    if io(cp::MEMORY_NSID) && sqe.opcode == cp::READ_OUTPUT {
        return cp::read_output_of(sqe);
    }
    // A Flush may name every namespace (FFFFFFFFh).
    let broadcast = sqe.opcode == opcode::FLUSH && sqe.nsid == u32::MAX;
    if queue == QueueType::Io && sqe.nsid != NSID && !broadcast {
        return Err(SqeError::Namespace);
    }
    Ok(match (queue, sqe.opcode) {
        (QueueType::Io, opcode::FLUSH) => Command::Flush,
        (QueueType::Io, opcode::READ) => Command::Read {
            slba: sqe.slba(),
            nlb: nlb + 1,
        },
        (QueueType::Io, opcode::WRITE) => Command::Write {
            slba: sqe.slba(),
            nlb: nlb + 1,
        },
        (QueueType::Io, opcode::ZONE_APPEND) => Command::ZoneAppend {
            zslba: sqe.slba(),
            nlb: nlb + 1,
        },
        (QueueType::Io, opcode::ZONE_MANAGEMENT_SEND) => Command::ZoneManagementSend {
            slba: sqe.slba(),
            action: action_of(sqe.cdw(13) as u8).ok_or(SqeError::Field)?,
            select_all: sqe.cdw(13) >> 8 & 1 == 1,
        },
        (QueueType::Io, opcode::ZONE_MANAGEMENT_RECEIVE) => {
            let cdw13 = sqe.cdw(13);
            // Only Report Zones (00h), not the extended report.
            if cdw13 & 0xff != 0 {
                return Err(SqeError::Field);
            }
            let bytes = (u64::from(sqe.cdw(12)) + 1) * 4;
            let descriptors = bytes.saturating_sub(ZONE_REPORT_HEADER_BYTES as u64)
                / ZONE_DESCRIPTOR_BYTES as u64;
            Command::ZoneManagementReceive {
                slba: sqe.slba(),
                filter: filter_of((cdw13 >> 8) as u8).ok_or(SqeError::Field)?,
                max_zones: u32::try_from(descriptors).map_err(|_| SqeError::Field)?,
                partial: cdw13 >> 16 & 1 == 1,
            }
        }
        (QueueType::Admin, opcode::GET_LOG_PAGE) => match sqe.cdw(10) as u8 {
            log_page::DEVICE => Command::Identify,
            log_page::HEALTH => Command::GetHealth,
            log_page::KERNEL_LOG => Command::ReadLog(RangeSetId((sqe.cdw(11) >> 16) as u16)),
            _ => return Err(SqeError::LogPage),
        },
        (QueueType::Admin, opcode::IDENTIFY) => {
            let (cns, csi) = identify_of(sqe);
            Command::IdentifyStructure {
                cns,
                csi,
                nsid: sqe.nsid,
            }
        }
        (QueueType::Admin, opcode::LOAD_PROGRAM) => cp::load_program_of(sqe)?,
        (QueueType::Admin, opcode::PROGRAM_ACTIVATION) => cp::activate_of(sqe)?,
        (QueueType::Admin, opcode::MEMORY_RANGE_SET) => cp::memory_range_set_of(sqe)?,
        (_, other) => return Err(SqeError::Opcode(other)),
    })
}

/// The NVM or Zoned Namespace I/O command in `sqe` (what an I/O queue of a host that knows
/// nothing of this project's commands may send).
pub fn io_command(sqe: &Sqe) -> Result<Command, SqeError> {
    if [cp::COMPUTE_NSID, cp::MEMORY_NSID].contains(&sqe.nsid) {
        return Err(SqeError::Namespace);
    }
    decode(QueueType::Io, sqe, || None)
}

/// The completion queue entry of `completion` (queue fields zero), and the result that does
/// not fit in one: a kernel run's outcome and counters, or why a program was refused. Dwords 0
/// and 1 hold the assigned LBA of a Zone Append, the bytes a command moved to the host, or the
/// return value of a kernel that exited.
pub fn completion_entry(completion: &Completion) -> (Cqe, Option<CommandResult>) {
    let mut cqe = Cqe::of(completion, 0, 0, false);
    let rest = match completion.result {
        CommandResult::Exec(run) => {
            if let ExecOutcome::Exited { r0 } = run.outcome {
                (cqe.dw0, cqe.dw1) = (r0 as u32, (r0 >> 32) as u32);
            }
            Some(completion.result)
        }
        CommandResult::Rejected(_) => Some(completion.result),
        _ => None,
    };
    (cqe, rest)
}

/// Whether `command` completes with the number of bytes it moved to the host.
fn transfers_to_host(command: &Command) -> bool {
    matches!(
        command,
        Command::Identify
            | Command::IdentifyStructure { .. }
            | Command::Read { .. }
            | Command::ZoneManagementReceive { .. }
            | Command::GetHealth
            | Command::ReadOutput(_)
            | Command::ReadLog(_)
    )
}

/// The completion in `cqe` and `rest` (see [`completion_entry`]) of `command` (when the host
/// knows which command it answers); `None` if its status is not one this device sends.
pub fn completion_of(
    command: Option<&Command>,
    cqe: &Cqe,
    rest: Option<CommandResult>,
) -> Option<Completion> {
    let status = Status::from_code(cqe.status)?;
    let result = match (rest, command) {
        (Some(result), _) => result,
        (None, _) if status != Status::Success => CommandResult::None,
        (None, Some(Command::ZoneAppend { .. })) => {
            CommandResult::Lba(u64::from(cqe.dw0) | u64::from(cqe.dw1) << 32)
        }
        (None, Some(c)) if transfers_to_host(c) => CommandResult::Transferred(cqe.dw0),
        (None, _) => CommandResult::None,
    };
    Some(Completion {
        cid: CommandId(cqe.cid),
        status,
        result,
    })
}

/// An Identify command for structure `cns` of command set `csi`.
pub fn identify_sqe(cid: CommandId, nsid: u32, cns: u8, csi: u8) -> Sqe {
    let mut sqe = Sqe::new(opcode::IDENTIFY, cid.0, nsid);
    sqe.set_cdw(10, u32::from(cns));
    sqe.set_cdw(11, u32::from(csi) << 24);
    sqe
}

/// The structure (CNS) and command set (CSI) an Identify command asks for.
pub fn identify_of(sqe: &Sqe) -> (u8, u8) {
    (sqe.cdw(10) as u8, (sqe.cdw(11) >> 24) as u8)
}

/// An Identify data structure, as `write` writes it into a zeroed buffer.
pub fn identify_data(write: impl FnOnce(&mut [u8; IDENTIFY_BYTES])) -> [u8; IDENTIFY_BYTES] {
    let mut b = [0u8; IDENTIFY_BYTES];
    write(&mut b);
    b
}

/// Floor of log2 of `n` (at least 1).
fn log2(n: u64) -> u32 {
    63 - n.max(1).leading_zeros()
}

/// The Identify Namespace data structure (CNS 00h) of the zoned namespace: its size, capacity
/// and use in LBAs, and one LBA format of `lba_bytes`, written into `b` (which is zero).
pub fn identify_namespace(id: &IdentifyZns, b: &mut [u8; IDENTIFY_BYTES]) {
    put_u64(b, 0, id.nsze_lbas); // NSZE
    put_u64(b, 8, id.nsze_lbas); // NCAP
    put_u64(b, 16, id.nsze_lbas); // NUSE
    b[25] = 0; // NLBAF (0's based): one format
    b[26] = 0; // FLBAS: format 0
               // LBA Format 0: no metadata, LBA Data Size as a power of two.
    put_u32(b, 128, log2(u64::from(id.lba_bytes)) << 16);
}

/// The Zoned Namespace Command Set specific Identify Namespace data structure (CNS 05h, CSI
/// 02h): the open and active limits (0's based; all ones for no limit) and the zone size of
/// LBA format 0, written into `b` (which is zero).
pub fn identify_zns_namespace(id: &IdentifyZns, b: &mut [u8; IDENTIFY_BYTES]) {
    let limit = |n: u32| n.checked_sub(1).unwrap_or(u32::MAX);
    put_u32(b, 4, limit(id.max_active)); // MAR
    put_u32(b, 8, limit(id.max_open)); // MOR
                                       // LBA Format Extension 0: Zone Size; no zone descriptor extension.
    put_u64(b, 2816, id.zone_size_lbas);
}

/// The Zoned Namespace Command Set specific Identify Controller data structure (CNS 06h, CSI
/// 02h): the Zone Append Size Limit, as a power of two of 4 KiB units (the minimum memory page
/// size), written into `b` (which is zero).
pub fn identify_zns_controller(id: &IdentifyZns, b: &mut [u8; IDENTIFY_BYTES]) {
    let bytes = u64::from(id.zasl_lbas) * u64::from(id.lba_bytes);
    b[0] = log2(bytes / 4096) as u8;
}

/// What names a controller in Identify Controller.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ControllerNames<'a> {
    /// Serial number (up to 20 ASCII characters).
    pub serial: &'a str,
    /// Model number (up to 40).
    pub model: &'a str,
    /// Firmware revision (up to 8).
    pub firmware: &'a str,
    /// NVM subsystem NVMe qualified name (up to 256 bytes).
    pub subnqn: &'a str,
}

fn put_text(out: &mut [u8], at: usize, len: usize, text: &str, pad: u8) {
    let field = &mut out[at..at + len];
    field.fill(pad);
    let n = text.len().min(len);
    field[..n].copy_from_slice(&text.as_bytes()[..n]);
}

/// The Identify Controller data structure (CNS 01h) of a controller whose one namespace is
/// the zoned one (a fabric controller says how many it has: `host-shell/src/nvmf`), written
/// into `b` (which is zero).
pub fn identify_controller(
    id: &IdentifyZns,
    names: &ControllerNames<'_>,
    b: &mut [u8; IDENTIFY_BYTES],
) {
    put_text(b, 4, 20, names.serial, b' '); // SN
    put_text(b, 24, 40, names.model, b' '); // MN
    put_text(b, 64, 8, names.firmware, b' '); // FR
                                              // MDTS: a power of two of 4 KiB units.
    let bytes = u64::from(id.mdts_lbas) * u64::from(id.lba_bytes);
    b[77] = log2(bytes / 4096) as u8;
    put_u32(b, 80, 0x0002_0100); // VER: 2.1.0
    b[512] = 0x66; // SQES: 64-byte entries
    b[513] = 0x44; // CQES: 16-byte entries
    put_u32(b, 516, 1); // NN
    b[525] = u8::from(id.volatile_write_cache); // VWC
    put_text(b, 768, 256, names.subnqn, 0); // SUBNQN
}

/// Writes a zone report into `out` (at least [`report_bytes`] of `descriptors`): the number
/// of matching zones, then each descriptor. Returns the bytes written.
pub fn write_zone_report(nr_zones: u64, descriptors: &[ZoneDescriptor], out: &mut [u8]) -> usize {
    let len = report_bytes(descriptors.len() as u32).min(out.len());
    out[..len].fill(0);
    put_u64(out, 0, nr_zones);
    for (i, d) in descriptors.iter().enumerate() {
        let at = ZONE_REPORT_HEADER_BYTES + i * ZONE_DESCRIPTOR_BYTES;
        if at + ZONE_DESCRIPTOR_BYTES > out.len() {
            break;
        }
        // Zone Type 2h: sequential write required.
        out[at] = match d.zone_type {
            ZoneType::SequentialWriteRequired => 0x2,
        };
        out[at + 1] = d.state.spec_value() << 4;
        out[at + 2] = d.attrs;
        put_u64(out, at + 8, d.zcap);
        put_u64(out, at + 16, d.zslba);
        put_u64(out, at + 24, d.wp);
    }
    len
}

fn state_of(value: u8) -> Option<ZoneState> {
    ZoneState::ALL.into_iter().find(|s| s.spec_value() == value)
}

/// The descriptor at index `i` of the zone report in `b`, if it is there and valid.
fn zone_descriptor(b: &[u8], i: usize) -> Option<ZoneDescriptor> {
    let at = ZONE_REPORT_HEADER_BYTES + i * ZONE_DESCRIPTOR_BYTES;
    let d = b.get(at..at + ZONE_DESCRIPTOR_BYTES)?;
    if d[0] & 0xf != 0x2 {
        return None;
    }
    Some(ZoneDescriptor {
        zone_type: ZoneType::SequentialWriteRequired,
        state: state_of(d[1] >> 4)?,
        attrs: d[2],
        zcap: get_u64(d, 8),
        zslba: get_u64(d, 16),
        wp: get_u64(d, 24),
    })
}

/// The number of matching zones in the zone report in `b`.
fn zone_report_count(b: &[u8]) -> Option<u64> {
    (b.len() >= 8).then(|| get_u64(b, 0))
}

/// The zone report in `b` (a transfer of a header and whole descriptors): the number of
/// matching zones, and the descriptors it holds (each `None` if it does not decode).
pub fn read_zone_report(
    b: &[u8],
) -> Option<(u64, impl Iterator<Item = Option<ZoneDescriptor>> + '_)> {
    let descriptors = b.len().checked_sub(ZONE_REPORT_HEADER_BYTES)? / ZONE_DESCRIPTOR_BYTES;
    Some((
        zone_report_count(b)?,
        (0..descriptors).map(|i| zone_descriptor(b, i)),
    ))
}
