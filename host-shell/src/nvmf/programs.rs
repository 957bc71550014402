//! The program commands: the Computational Programs command set's (see `common::nvme::cp`),
//! and this project's own vendor-specific pair (see [`super::csd_opcode`]).

use std::io;

use common::{
    command::{Command, CommandResult},
    nvme::{self, QueueType, Sqe},
    program::{ExecFault, ExecOutcome, Extent, ProgramOp},
    Status, LBA_BYTES,
};

use super::{
    queue::{Answer, Queue},
    MAX_H2C_DATA, PROGRAMS,
};
use crate::offload::{Job, Kernel};

impl Queue<'_> {
    /// A Computational Programs command: Load Program, Program Activation Management and
    /// Memory Range Set Management on the admin queue, Execute Program (compute namespace)
    /// and Memory Read (memory namespace) on an I/O queue. Each goes as it is to the device,
    /// on the target's programs session; Execute Program's completion carries the kernel's
    /// return value, a run's fault its status.
    pub(super) fn program_command(
        &mut self,
        queue: QueueType,
        sqe: &Sqe,
        in_capsule: Vec<u8>,
    ) -> io::Result<Option<Answer>> {
        // What the host sends (a program's chunk, the extents, Execute Program's parameter
        // data and input), refused past what one H2C transfer of this target takes.
        let len = sqe.dptr[1] as u32;
        let mut data = if nvme::sends_data(sqe.opcode) {
            if in_capsule.is_empty() && len > MAX_H2C_DATA {
                return Ok(self.done(sqe, Status::InvalidField));
            }
            match self.data_in(sqe.cid, len as usize, in_capsule)? {
                Some(data) => data,
                None => return Ok(self.transport_error(sqe)),
            }
        } else {
            Vec::new()
        };
        let (command, parameter_bytes) = match nvme::decode_with_data(queue, sqe, &data) {
            Ok((command, rest)) => (command, data.len() - rest.len()),
            Err(e) => return Ok(self.done(sqe, e.status())),
        };
        // The command's host memory, behind Execute Program's parameter data.
        data.drain(..parameter_bytes);
        let buffer = match command {
            // No more than the host's buffer (the SGL's length) or one transfer takes.
            Command::ReadOutput(read) if read.len > MAX_H2C_DATA.min(sqe.dptr[1] as u32) => {
                return Ok(self.done(sqe, Status::InvalidField))
            }
            Command::ReadOutput(read) => vec![0u8; read.len as usize],
            Command::ExecuteProgram(_)
            | Command::LoadProgram(_)
            | Command::MemoryRangeSet(_)
            | Command::ActivateProgram(_) => data,
            // Everything else goes its own way (`decode` gives program commands only for
            // these opcodes, but the admin queue's other commands are not for this path).
            _ => return Ok(self.done(sqe, Status::InvalidOpcode)),
        };
        let Some(driver) = self.target.programs() else {
            return Ok(self.done(sqe, Status::InternalError));
        };
        // A kernel's ELF object, whole in one Load Program, is linked here (hosts without
        // `csd` have no way to link one).
        if let Command::LoadProgram(load) = command {
            if is_object(&buffer) && load.offset == 0 && load.chunk_len == load.total_len {
                let refused = |why: String, status: Option<Status>| {
                    crate::daemon::log(format_args!("NVMe/TCP: Load Program: {why}"));
                    status.unwrap_or(Status::ProgramRejected)
                };
                let status = match program_image(buffer) {
                    Err(e) => refused(e.to_string(), None),
                    Ok(image) => match driver.load_program(load.slot, &image) {
                        Ok(()) => Status::Success,
                        Err(e) => refused(e.to_string(), e.status()),
                    },
                };
                return Ok(self.done(sqe, status));
            }
        }
        let done = match driver.exchange(command, buffer) {
            Ok(done) => done,
            Err(e) => {
                crate::daemon::log(format_args!("NVMe/TCP: a program command failed: {e}"));
                return Ok(self.done(sqe, Status::InternalError));
            }
        };
        if let CommandResult::Rejected(reason) = done.completion.result {
            crate::daemon::log(format_args!("NVMe/TCP: Load Program refused: {reason}"));
        }
        let (entry, _) = nvme::completion_entry(&done.completion);
        let cqe = self.cqe(sqe.cid, entry.status, entry.dw0, entry.dw1);
        let data = match (command, done.completion.result) {
            (Command::ReadOutput(_), CommandResult::Transferred(n)) => {
                let mut out = done.buffer;
                out.truncate(n as usize);
                out
            }
            _ => Vec::new(),
        };
        Ok(Some(Answer { cqe, data }))
    }

    /// Load Program (this project's C1h): keeps the kernel under its program index.
    pub(super) fn load_program(
        &mut self,
        sqe: &Sqe,
        cntlid: u16,
        in_capsule: Vec<u8>,
    ) -> io::Result<Option<Answer>> {
        // A program larger than the target takes is refused before its data is asked for.
        if in_capsule.is_empty() && sqe.dptr[1] as u32 > MAX_H2C_DATA {
            return Ok(self.done(sqe, Status::InvalidField));
        }
        let len = sqe.dptr[1] as u32 as usize;
        let Some(bytes) = self.data_in(sqe.cid, len, in_capsule)? else {
            return Ok(self.transport_error(sqe));
        };
        let index = sqe.cdw(10) as u8;
        if usize::from(index) >= PROGRAMS || bytes.is_empty() || bytes.len() > MAX_H2C_DATA as usize
        {
            return Ok(self.done(sqe, Status::InvalidField));
        }
        let Ok(image) = program_image(bytes) else {
            return Ok(self.done(sqe, Status::ProgramRejected));
        };
        let kernel = Kernel::from_image(format!("NVMe/TCP program {index}"), image);
        self.target.with_controller(cntlid, |c| {
            c.programs.insert(index, kernel);
        });
        Ok(self.done(sqe, Status::Success))
    }

    /// Execute Program (this project's C2h): runs a loaded kernel over an LBA range.
    pub(super) fn execute_program(&mut self, sqe: &Sqe) -> Option<Answer> {
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
}

/// Whether `bytes` are an ELF object (a kernel as clang builds it) rather than a linked image.
fn is_object(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x7fELF")
}

/// `bytes` as a program image: an ELF object linked as `csd kernel run` links it, a linked
/// image as it is.
fn program_image(bytes: Vec<u8>) -> Result<Vec<u8>, crate::loader::LoadError> {
    if is_object(&bytes) {
        Ok(crate::loader::link(&bytes)?.to_bytes())
    } else {
        Ok(bytes)
    }
}
