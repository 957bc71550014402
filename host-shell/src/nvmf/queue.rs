//! One connection: one queue of one controller, and the Fabrics and I/O commands on it.

use std::{io, net::TcpStream, sync::atomic::Ordering};

use common::{
    command::{Command, CommandId, CommandResult, Completion},
    nvme::{self, cp, Cqe, Sqe},
    Status, LBA_BYTES,
};

use super::{
    admin::{self, property_value, DISCOVERY_NQN},
    csd_opcode, driver_status, fctype, nul_terminated,
    pdu::{self, fes, Pdu, ReadError, Wire},
    property, Controller, Target, CONNECT_INVALID_PARAMETERS, IO_QUEUES, MAX_H2C_DATA,
    QUEUE_ENTRIES, TRANSIENT_TRANSPORT_ERROR,
};

/// How a command ended: its completion, and data for the host.
pub(super) struct Answer {
    pub(super) cqe: Cqe,
    pub(super) data: Vec<u8>,
}

/// One connection: one queue of one controller.
pub(super) struct Queue<'t> {
    pub(super) target: &'t Target,
    pub(super) wire: Wire,
    /// The queue id and controller, once connected.
    pub(super) qid: u16,
    pub(super) cntlid: Option<u16>,
    pub(super) sqhd: u16,
    /// The next R2T's transfer tag.
    pub(super) ttag: u16,
    /// Command capsules that arrived while a write's data was awaited.
    pub(super) pending: std::collections::VecDeque<Pdu>,
}

impl<'t> Queue<'t> {
    pub(super) fn new(target: &'t Target, stream: TcpStream) -> Self {
        Queue {
            target,
            wire: Wire::new(stream),
            qid: 0,
            cntlid: None,
            sqhd: 0,
            ttag: 0,
            pending: std::collections::VecDeque::new(),
        }
    }

    pub(super) fn run(mut self) -> io::Result<()> {
        let req = self.read()?;
        if req.kind != pdu::IC_REQ || req.header().len() != 120 {
            return self.terminate(fes::INVALID_HEADER_FIELD, "the first PDU is not an ICReq");
        }
        // ICResp: PFV 0, CPDA 0, the digests the host asked for (both are offered),
        // MAXH2CDATA.
        let dgst = req.header()[3] & (pdu::HDGST_ENABLE | pdu::DDGST_ENABLE);
        let mut resp = [0u8; 120];
        resp[3] = dgst;
        resp[4..8].copy_from_slice(&MAX_H2C_DATA.to_le_bytes());
        self.wire.write(pdu::IC_RESP, 0, 128, &resp, &[])?;
        self.wire.use_digests(dgst);
        let peer = self.wire.stream.peer_addr();
        let digests = [
            "no digests",
            "header digest",
            "data digest",
            "header and data digests",
        ];
        crate::daemon::log(format_args!(
            "NVMe/TCP connection from {}: {}",
            peer.map_or_else(|e| e.to_string(), |p| p.to_string()),
            digests[usize::from(dgst)]
        ));
        loop {
            let mut capsule = match self.pending.pop_front() {
                Some(capsule) => capsule,
                None => self.read()?,
            };
            match capsule.kind {
                pdu::CAPSULE_CMD => {}
                pdu::H2C_TERM_REQ => return Ok(()),
                _ => return self.terminate(fes::PDU_SEQUENCE, "a PDU out of sequence"),
            }
            let header = capsule.header();
            let Ok(bytes) = <&[u8; nvme::SQE_BYTES]>::try_from(header.get(..64).unwrap_or(&[]))
            else {
                return self.terminate(
                    fes::INVALID_HEADER_FIELD,
                    "a command capsule without its SQE",
                );
            };
            let sqe = Sqe::from_bytes(bytes);
            self.sqhd = self.sqhd.wrapping_add(1) % QUEUE_ENTRIES as u16;
            let answer = if capsule.data_intact {
                let in_capsule = capsule.take_data();
                self.command(&sqe, in_capsule)?
            } else {
                self.transport_error(&sqe)
            };
            let Some(answer) = answer else {
                continue;
            };
            if !answer.data.is_empty() {
                // C2HData: CCCID, DATAO 0, DATAL; one PDU, the last.
                let mut h = [0u8; 16];
                h[0..2].copy_from_slice(&sqe.cid.to_le_bytes());
                h[8..12].copy_from_slice(&(answer.data.len() as u32).to_le_bytes());
                self.wire
                    .write(pdu::C2H_DATA, pdu::LAST_PDU, 24, &h, &answer.data)?;
            }
            self.wire
                .write(pdu::CAPSULE_RESP, 0, 24, &answer.cqe.to_bytes(), &[])?;
        }
    }

    /// The next PDU; a fatal error in it ends the connection with a C2HTermReq.
    fn read(&mut self) -> io::Result<Pdu> {
        match self.wire.read() {
            Ok(pdu) => Ok(pdu),
            Err(ReadError::Io(e)) => Err(e),
            Err(ReadError::Fatal { fes, why }) => self.terminate(fes, &why),
        }
    }

    /// Ends the connection with a C2HTermReq of `fes`; returns the error that ends it.
    pub(super) fn terminate<T>(&mut self, fes: u8, why: &str) -> io::Result<T> {
        self.wire.terminate(fes)?;
        Err(io::Error::new(io::ErrorKind::InvalidData, why.to_string()))
    }

    /// A command whose data arrived with a wrong data digest: Transient Transport Error,
    /// which the host may retry.
    pub(super) fn transport_error(&self, sqe: &Sqe) -> Option<Answer> {
        Some(Answer {
            cqe: self.cqe(sqe.cid, TRANSIENT_TRANSPORT_ERROR, 0, 0),
            data: Vec::new(),
        })
    }

    pub(super) fn cqe(&self, cid: u16, status: u16, dw0: u32, dw1: u32) -> Cqe {
        Cqe {
            dw0,
            dw1,
            sqhd: self.sqhd,
            sqid: self.qid,
            cid,
            phase: false,
            status,
            more: false,
            // A transport error is the one failure a host should retry.
            do_not_retry: status != 0 && status != TRANSIENT_TRANSPORT_ERROR,
        }
    }

    pub(super) fn done(&self, sqe: &Sqe, status: Status) -> Option<Answer> {
        Some(Answer {
            cqe: self.cqe(sqe.cid, status.code(), 0, 0),
            data: Vec::new(),
        })
    }

    pub(super) fn with_data(&self, sqe: &Sqe, data: Vec<u8>) -> Option<Answer> {
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
    pub(super) fn command(&mut self, sqe: &Sqe, in_capsule: Vec<u8>) -> io::Result<Option<Answer>> {
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
        if [cp::COMPUTE_NSID, cp::MEMORY_NSID].contains(&sqe.nsid) {
            return self.program_command(nvme::QueueType::Io, sqe, in_capsule);
        }
        self.io(sqe, in_capsule)
    }

    pub(super) fn fabrics(&mut self, sqe: &Sqe, data: &[u8]) -> Option<Answer> {
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

    fn io(&mut self, sqe: &Sqe, in_capsule: Vec<u8>) -> io::Result<Option<Answer>> {
        let command = match nvme::io_command(sqe) {
            Ok(c) => c,
            Err(e) => return Ok(self.done(sqe, e.status())),
        };
        // No transfer beyond what Identify advertises (MDTS, and ZASL for Zone Append): Invalid
        // Field in Command, before any buffer is made or data asked for.
        let id = self.target.identify();
        let lbas = |n: u32| u64::from(n) * u64::from(LBA_BYTES);
        let (bytes, limit) = match command {
            Command::Read { nlb, .. } | Command::Write { nlb, .. } => (lbas(nlb), id.mdts_lbas),
            Command::ZoneAppend { nlb, .. } => (lbas(nlb), id.zasl_lbas.min(id.mdts_lbas)),
            Command::ZoneManagementReceive { max_zones, .. } => {
                (nvme::report_bytes(max_zones) as u64, id.mdts_lbas)
            }
            _ => (0, u32::MAX),
        };
        if bytes > lbas(limit.max(1)) {
            return Ok(self.done(sqe, Status::InvalidField));
        }
        if command.changes_zones() && (self.target.zones_held)() {
            // The host's write data must still be taken off the connection.
            if let Command::Write { nlb, .. } | Command::ZoneAppend { nlb, .. } = command {
                let _ = self.data_in(sqe.cid, nlb as usize * LBA_BYTES as usize, in_capsule)?;
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
                let Some(data) = self.data_in(sqe.cid, len, in_capsule)? else {
                    return Ok(self.transport_error(sqe));
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

    /// A command's `len` bytes of data: those in its capsule, or asked for with R2T (`None` if
    /// a data digest was wrong).
    pub(super) fn data_in(
        &mut self,
        cid: u16,
        len: usize,
        in_capsule: Vec<u8>,
    ) -> io::Result<Option<Vec<u8>>> {
        if !in_capsule.is_empty() || len == 0 {
            return Ok(Some(in_capsule));
        }
        self.receive(cid, len)
    }

    /// Asks the host for a write's `len` bytes with R2T PDUs and collects its H2CData;
    /// `None` if a data digest was wrong (the transfer is still taken off the connection).
    fn receive(&mut self, cid: u16, len: usize) -> io::Result<Option<Vec<u8>>> {
        let mut data = Vec::new();
        let mut intact = true;
        while data.len() < len {
            let chunk = (len - data.len()).min(MAX_H2C_DATA as usize);
            self.ttag = self.ttag.wrapping_add(1);
            let mut h = [0u8; 16];
            h[0..2].copy_from_slice(&cid.to_le_bytes());
            h[2..4].copy_from_slice(&self.ttag.to_le_bytes());
            h[4..8].copy_from_slice(&(data.len() as u32).to_le_bytes());
            h[8..12].copy_from_slice(&(chunk as u32).to_le_bytes());
            self.wire.write(pdu::R2T, 0, 24, &h, &[])?;
            let mut got = 0;
            while got < chunk {
                let mut p = self.read()?;
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
                intact &= p.data_intact;
                got += p.data().len();
                if data.is_empty() {
                    // The usual case, the whole transfer in one PDU: its bytes, not a copy.
                    data = p.take_data();
                } else {
                    data.extend_from_slice(p.data());
                }
                if p.flags & pdu::LAST_PDU != 0 {
                    break;
                }
            }
        }
        data.truncate(len);
        Ok(intact.then_some(data))
    }
}
