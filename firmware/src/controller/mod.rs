//! The controller: NVMe-shaped commands in, completions out.
//!
//! Sans-IO, as the whole firmware: the runner hands it an NVMe submission queue entry with the
//! type of queue it came from, and a [`Dma`] window on the command's host memory, and gets a
//! [`Completion`] back, or `None` when the command goes on in the background. Only Execute
//! Program does: kernels run in fuel-bounded slices, one slice per [`Controller::poll`], so a
//! runner that serves its queues between polls keeps regular I/O flowing while long kernels
//! run; several runs take their slices in turn.

mod dma;
mod programs;

pub use dma::{Dma, DmaError, SliceDma};
pub use programs::{ProgramConfig, LOG_MESSAGES};

use dma::ParameterDma;

use alloc::vec;
use alloc::vec::Vec;

use common::{
    command::{Command, CommandId, CommandResult, Completion, DeviceHealth, Submission},
    nvme::{self, cp, QueueType, Sqe},
    zns::IdentifyZns,
    Status, LBA_BYTES,
};

use crate::{
    ebpf::{Executor, Interpreter},
    nand::{BlockId, Nand},
    zns::ZoneManager,
};

use programs::Programs;

/// The device controller over a zone manager. See the module docs.
#[derive(Debug)]
pub struct Controller<N: Nand, X: Executor = Interpreter> {
    zones: ZoneManager<N>,
    programs: Programs<X>,
    /// Bounce buffer for block transfers when host memory is not directly addressable.
    bounce: Vec<u8>,
}

impl<N: Nand> Controller<N> {
    /// A controller serving `zones`, with `config` for its program slots, running kernels on
    /// the interpreter.
    pub fn new(zones: ZoneManager<N>, config: ProgramConfig) -> Self {
        Controller::with_executor(zones, config, Interpreter)
    }
}

impl<N: Nand, X: Executor> Controller<N, X> {
    /// A controller serving `zones`, with `config` for its program slots, running kernels on
    /// `executor`.
    pub fn with_executor(zones: ZoneManager<N>, config: ProgramConfig, executor: X) -> Self {
        Controller {
            zones,
            programs: Programs::new(config, executor),
            bounce: Vec::new(),
        }
    }

    /// What runs the kernels.
    pub fn executor(&self) -> &X {
        self.programs.executor()
    }

    /// The zone manager.
    pub fn zones(&self) -> &ZoneManager<N> {
        &self.zones
    }

    /// The zone manager, mutably (for the runner's inspection and fault injection).
    pub fn zones_mut(&mut self) -> &mut ZoneManager<N> {
        &mut self.zones
    }

    /// Powers the controller off and gives the zone manager back.
    pub fn into_zones(self) -> ZoneManager<N> {
        self.zones
    }

    /// Serves the command in `sqe` from submission queue `sqid`, a queue of type `queue` (see
    /// [`nvme::decode`]). Returns its completion, or `None` when it goes on in the background
    /// (Execute Program): [`Controller::poll`] reports it then.
    pub fn submit(
        &mut self,
        sqid: u16,
        queue: QueueType,
        sqe: &Sqe,
        dma: &mut dyn Dma,
    ) -> Option<Completion> {
        let cid = CommandId(sqe.cid);
        let parameters = || {
            let mut p = [0u8; cp::EXECUTE_PARAMETER_BYTES];
            dma.read_from_host(0, &mut p).ok().map(|()| p)
        };
        let command = match nvme::decode(queue, sqe, parameters) {
            Ok(command) => command,
            Err(e) => return Some(Completion::status(cid, e.status())),
        };
        let result = match command {
            Command::Identify => self.send_identify(dma),
            Command::IdentifyStructure { cns, csi, nsid } => {
                self.identify_structure(cns, csi, nsid, dma)
            }
            Command::Read { slba, nlb } => self.read(slba, nlb, dma),
            Command::Write { slba, nlb } => self.write(slba, nlb, dma, false),
            Command::ZoneAppend { zslba, nlb } => self.write(zslba, nlb, dma, true),
            Command::ZoneManagementSend {
                slba,
                action,
                select_all,
            } => self
                .zones
                .zone_action(slba, action, select_all)
                .map(|()| CommandResult::None),
            Command::ZoneManagementReceive {
                slba,
                filter,
                max_zones,
                partial,
            } => self.report(slba, filter, max_zones, partial, dma),
            Command::Flush => self.zones.flush().map(|()| CommandResult::None),
            Command::LoadProgram(load) => self.programs.load(load, dma),
            Command::ActivateProgram(act) => self.programs.activate(act),
            Command::MemoryRangeSet(set) => {
                let nsze = self.zones.layout().nsze();
                self.programs.set_ranges(set, nsze, dma)
            }
            Command::ExecuteProgram(exec) => match self.programs.enqueue(sqid, cid, exec, dma) {
                Ok(()) => return None,
                Err(status) => Err(status),
            },
            Command::ReadOutput(read) => self.programs.read_output(read, dma),
            Command::GetHealth => self.health(dma),
            Command::ReadLog(set) => self.programs.read_log(set, dma),
        };
        Some(match result {
            // A refused image: the status says so, the result why.
            Ok(CommandResult::Rejected(reason)) => Completion::rejected(cid, reason),
            Ok(result) => Completion::ok(cid, result),
            Err(status) => Completion::status(cid, status),
        })
    }

    /// Serves `submission` as a host's driver sends it: encoded as its NVMe entry
    /// ([`nvme::encode`]), with its parameter data before the host memory `dma`, then
    /// [`Controller::submit`]. For runners that hold typed commands (the in-process device,
    /// tests); a command NVMe cannot express completes with Invalid Field.
    pub fn submit_command(
        &mut self,
        sqid: u16,
        submission: &Submission,
        dma: &mut dyn Dma,
    ) -> Option<Completion> {
        let (queue, sqe) = match nvme::encode(submission.cid, &submission.command, dma.host_len()) {
            Ok(entry) => entry,
            Err(e) => return Some(Completion::status(submission.cid, e.status())),
        };
        match nvme::parameter_data(&submission.command) {
            Some(parameters) => {
                let mut dma = ParameterDma::new(&parameters, dma);
                self.submit(sqid, queue, &sqe, &mut dma)
            }
            None => self.submit(sqid, queue, &sqe, dma),
        }
    }

    /// Runs one slice of the next running kernel in turn. Returns the command that finished,
    /// with its submission queue, if one did.
    pub fn poll(&mut self) -> Option<(u16, Completion)> {
        self.programs.poll(&mut self.zones)
    }

    /// The submission queue and command id of the run the next [`Controller::poll`] slices.
    pub fn next_run(&self) -> Option<(u16, CommandId)> {
        self.programs.next_run()
    }

    /// The run of the latest slice, with its counters so far (cumulative over its slices).
    pub fn last_slice(&self) -> Option<(u16, CommandId, common::program::RunStats)> {
        self.programs.last_slice()
    }

    /// The last `csd_log` messages (at most [`programs::LOG_MESSAGES`]) of the latest run over
    /// range set `range_set`, oldest first.
    pub fn kernel_log(
        &self,
        range_set: common::program::RangeSetId,
    ) -> impl Iterator<Item = &[u8]> {
        self.programs.log(range_set.0)
    }

    /// Whether kernels are running or waiting to run.
    pub fn busy(&self) -> bool {
        self.programs.busy()
    }

    /// Identify data: the zone manager's, with the program resources of this controller.
    pub fn identify(&self) -> IdentifyZns {
        IdentifyZns {
            programs: self.programs.resources(),
            ..self.zones.identify()
        }
    }

    fn send_identify(&mut self, dma: &mut dyn Dma) -> Result<CommandResult, Status> {
        encode_to_host(&self.identify(), dma)
    }

    /// NVMe's Identify data structure `cns` of command set `csi` (of namespace `nsid`).
    fn identify_structure(
        &mut self,
        cns: u8,
        csi: u8,
        nsid: u32,
        dma: &mut dyn Dma,
    ) -> Result<CommandResult, Status> {
        // A namespace's structures are the zoned namespace's (the one Identify Controller
        // counts).
        let namespace = matches!(cns, nvme::cns::NAMESPACE | nvme::cns::CSI_NAMESPACE);
        if namespace && nsid != nvme::NSID {
            return Err(Status::InvalidNamespace);
        }
        let id = self.identify();
        // Short names: the board's image has little room for text.
        let names = nvme::ControllerNames {
            serial: "csd",
            model: "csd",
            firmware: env!("CARGO_PKG_VERSION"),
            subnqn: "",
        };
        let mut data = vec![0u8; nvme::IDENTIFY_BYTES];
        let b = <&mut [u8; nvme::IDENTIFY_BYTES]>::try_from(&mut data[..])
            .map_err(|_| Status::InternalError)?;
        match (cns, csi) {
            (nvme::cns::NAMESPACE, _) => nvme::identify_namespace(&id, b),
            (nvme::cns::CONTROLLER, _) => nvme::identify_controller(&id, &names, b),
            (nvme::cns::CSI_NAMESPACE, nvme::csi::ZONED) => nvme::identify_zns_namespace(&id, b),
            (nvme::cns::CSI_CONTROLLER, nvme::csi::ZONED) => nvme::identify_zns_controller(&id, b),
            _ => return Err(Status::InvalidField),
        }
        dma.write_to_host(0, &data)
            .map_err(|_| Status::DataTransferError)?;
        Ok(CommandResult::Transferred(data.len() as u32))
    }

    fn read(&mut self, slba: u64, nlb: u32, dma: &mut dyn Dma) -> Result<CommandResult, Status> {
        let len = transfer_len(nlb, dma)?;
        if let Some(memory) = dma.host_memory() {
            self.zones.read(slba, &mut memory[..len])?;
        } else {
            self.bounce.resize(len, 0);
            self.zones.read(slba, &mut self.bounce)?;
            dma.write_to_host(0, &self.bounce)
                .map_err(|_| Status::DataTransferError)?;
        }
        Ok(CommandResult::Transferred(len as u32))
    }

    fn write(
        &mut self,
        slba: u64,
        nlb: u32,
        dma: &mut dyn Dma,
        append: bool,
    ) -> Result<CommandResult, Status> {
        let len = transfer_len(nlb, dma)?;
        let data: &[u8] = match dma.host_memory() {
            Some(memory) => &memory[..len],
            None => {
                self.bounce.resize(len, 0);
                dma.read_from_host(0, &mut self.bounce)
                    .map_err(|_| Status::DataTransferError)?;
                &self.bounce
            }
        };
        if append {
            self.zones.append(slba, data).map(CommandResult::Lba)
        } else {
            self.zones.write(slba, data).map(|()| CommandResult::None)
        }
    }

    fn report(
        &mut self,
        slba: u64,
        filter: common::zns::ReportFilter,
        max_zones: u32,
        partial: bool,
        dma: &mut dyn Dma,
    ) -> Result<CommandResult, Status> {
        let report = self.zones.report(slba, filter, max_zones, partial)?;
        // The ZNS specification's layout: a 64-byte header, then 64-byte descriptors.
        let mut bytes = vec![0u8; nvme::report_bytes(report.descriptors.len() as u32)];
        nvme::write_zone_report(report.nr_zones, &report.descriptors, &mut bytes);
        dma.write_to_host(0, &bytes)
            .map_err(|_| Status::DataTransferError)?;
        Ok(CommandResult::Transferred(bytes.len() as u32))
    }

    fn health(&mut self, dma: &mut dyn Dma) -> Result<CommandResult, Status> {
        let layout = *self.zones.layout();
        let total = layout.geometry.blocks();
        let mut bound = vec![false; total as usize];
        for zone in 0..layout.nr_zones {
            for slot in 0..layout.config.zone_blocks as usize {
                if let Some(block) = self.zones.slot_block(zone, slot) {
                    if let Some(b) = bound.get_mut(block.0 as usize) {
                        *b = true;
                    }
                }
            }
        }
        let mut health = DeviceHealth {
            total_blocks: total,
            erase_min: u32::MAX,
            ..Default::default()
        };
        for b in 0..total {
            let block = BlockId(b);
            if self.zones.is_bad(block) {
                health.bad_blocks += 1;
                continue;
            }
            if !bound[b as usize] && !layout.is_meta(block) {
                health.free_blocks += 1;
            }
            let count = self.zones.erase_count(block).unwrap_or(0);
            health.erase_min = health.erase_min.min(count);
            health.erase_max = health.erase_max.max(count);
            health.erase_total += u64::from(count);
        }
        if health.erase_min == u32::MAX {
            health.erase_min = 0;
        }
        encode_to_host(&health, dma)
    }
}

/// Bytes of a transfer of `nlb` blocks, checked against the host memory provided.
fn transfer_len(nlb: u32, dma: &dyn Dma) -> Result<usize, Status> {
    let len = (nlb as usize)
        .checked_mul(LBA_BYTES as usize)
        .ok_or(Status::InvalidField)?;
    if nlb == 0 {
        return Err(Status::InvalidField);
    }
    if len > dma.host_len() {
        return Err(Status::DataTransferError);
    }
    Ok(len)
}

/// Sends `value` postcard-encoded to the host.
fn encode_to_host<T: serde::Serialize>(
    value: &T,
    dma: &mut dyn Dma,
) -> Result<CommandResult, Status> {
    let bytes = postcard::to_allocvec(value).map_err(|_| Status::InternalError)?;
    dma.write_to_host(0, &bytes)
        .map_err(|_| Status::DataTransferError)?;
    Ok(CommandResult::Transferred(bytes.len() as u32))
}
