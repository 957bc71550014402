//! Commands and completions as both sides work with them: what a host submits to the device
//! and what comes back.
//!
//! Shaped after NVMe: a submission carries a command id chosen by the host, a completion echoes
//! it with a status and a small result. Bulk data (blocks, zone reports, program images, extent
//! lists, kernel output) never travels inline: the runner moves it through the DMA-like
//! interface, and the command says how many bytes. The device receives every command as an
//! NVMe submission queue entry ([`crate::nvme::encode`]), and a link carries completions as
//! completion queue entries ([`crate::link::CompletionEntry`]).

use serde::{Deserialize, Serialize};

use crate::{
    load_error::LoadError,
    program::{
        ActivateProgram, ExecResult, ExecuteProgram, LoadProgram, MemoryRangeSet, ReadOutput,
    },
    zns::{ReportFilter, ZoneAction},
    Status,
};

/// A host-chosen command identifier, unique among the commands in flight on one queue.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CommandId(pub u16);

/// A command with its identifier, as the host submits it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Submission {
    /// Echoed in the completion.
    pub cid: CommandId,
    /// What to do.
    pub command: Command,
}

impl Submission {
    /// `command` with identifier `cid`.
    pub const fn new(cid: CommandId, command: Command) -> Self {
        Submission { cid, command }
    }
}

/// The device's command set, decoded from (and encoded to) NVMe entries.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Command {
    /// Identify the zoned namespace; the postcard-encoded [`crate::zns::IdentifyZns`] goes to
    /// the host by DMA.
    Identify,
    /// Read `nlb` logical blocks from `slba` into the host buffer.
    Read { slba: u64, nlb: u32 },
    /// Write `nlb` logical blocks from the host buffer at `slba`, which must be the zone's
    /// write pointer.
    Write { slba: u64, nlb: u32 },
    /// Append `nlb` logical blocks from the host buffer to the zone starting at `zslba`; the
    /// completion's [`CommandResult::Lba`] says where they landed.
    ZoneAppend { zslba: u64, nlb: u32 },
    /// Zone Management Send: `action` on the zone starting at `slba`, or on every zone the
    /// action applies to when `select_all` is set.
    ZoneManagementSend {
        slba: u64,
        action: ZoneAction,
        select_all: bool,
    },
    /// Zone Management Receive: report up to `max_zones` zones from the zone holding `slba`
    /// that match `filter`. The report goes to the host by DMA in the ZNS specification's
    /// layout ([`crate::nvme::write_zone_report`]: a 64-byte header with the number of
    /// matching zones, then one 64-byte descriptor per zone reported), and the completion
    /// says how many bytes ([`CommandResult::Transferred`]).
    ZoneManagementReceive {
        slba: u64,
        filter: ReportFilter,
        max_zones: u32,
        partial: bool,
    },
    /// Make every completed write durable. (Writes are programmed before they complete, so this
    /// has nothing to wait for; it exists because hosts send it.)
    Flush,
    /// Download one chunk of a program image.
    LoadProgram(LoadProgram),
    /// Activate or deactivate a loaded program.
    ActivateProgram(ActivateProgram),
    /// Define a memory range set: a file snapshot's extents and an output buffer.
    MemoryRangeSet(MemoryRangeSet),
    /// Run a program; completes when it exits or faults, with [`CommandResult::Exec`].
    ExecuteProgram(ExecuteProgram),
    /// Copy a range set's output to the host.
    ReadOutput(ReadOutput),
    /// Report wear and bad blocks; the postcard-encoded [`DeviceHealth`]
    /// goes to the host by DMA.
    GetHealth,
    /// Copy the `csd_log` messages of the last run over a range set to the host, oldest first:
    /// each one as its length (u16, little-endian) and its bytes.
    ReadLog(crate::program::RangeSetId),
    /// NVMe's Identify (06h): the 4,096-byte data structure `cns` of command set `csi` (of
    /// namespace `nsid` where it is one of a namespace) goes to the host by DMA: Namespace
    /// (CNS 00h), Controller (01h), and the Zoned Namespace command set's (CSI 02h)
    /// Namespace (05h) and Controller (06h).
    IdentifyStructure { cns: u8, csi: u8, nsid: u32 },
}

impl Command {
    /// Whether the command changes a zone: its data, write pointer or state.
    pub const fn changes_zones(&self) -> bool {
        matches!(
            self,
            Command::Write { .. } | Command::ZoneAppend { .. } | Command::ZoneManagementSend { .. }
        )
    }
}

/// Wear and bad-block summary of the NAND behind the namespace.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DeviceHealth {
    /// Erase blocks in the device.
    pub total_blocks: u32,
    /// Blocks retired after a failed program or erase (or marked bad from the factory).
    pub bad_blocks: u32,
    /// Good blocks bound to no zone.
    pub free_blocks: u32,
    /// Lowest erase count of a good block.
    pub erase_min: u32,
    /// Highest erase count of a good block.
    pub erase_max: u32,
    /// Sum of all erase counts.
    pub erase_total: u64,
}

/// The small result a completion carries besides its status.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CommandResult {
    /// Nothing beyond the status.
    None,
    /// The LBA a Zone Append wrote its first block at.
    Lba(u64),
    /// How many bytes went to the host by DMA.
    Transferred(u32),
    /// How an Execute Program run ended.
    Exec(ExecResult),
    /// Why the last chunk of a Load Program was refused (with `Status::ProgramRejected`): the
    /// image's header or the verifier's verdict on its instructions.
    Rejected(LoadError),
}

/// A completion, decoded: the command's id, its status and what it returned.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Completion {
    /// The submission's command id.
    pub cid: CommandId,
    /// How it ended.
    pub status: Status,
    /// What it returned.
    pub result: CommandResult,
}

impl Completion {
    /// A completion with a status and no result.
    pub const fn status(cid: CommandId, status: Status) -> Self {
        Completion {
            cid,
            status,
            result: CommandResult::None,
        }
    }

    /// A successful completion.
    pub const fn ok(cid: CommandId, result: CommandResult) -> Self {
        Completion {
            cid,
            status: Status::Success,
            result,
        }
    }

    /// A Load Program refused with `reason` ([`Status::ProgramRejected`]).
    pub const fn rejected(cid: CommandId, reason: LoadError) -> Self {
        Completion {
            cid,
            status: Status::ProgramRejected,
            result: CommandResult::Rejected(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every result variant keeps its postcard tag (append-only); a rejected load carries its
    /// reason after the status.
    #[test]
    fn golden_result_tags() {
        let tag = |r: CommandResult| postcard::to_allocvec(&r).unwrap()[0];
        assert_eq!(tag(CommandResult::None), 0);
        assert_eq!(tag(CommandResult::Lba(1)), 1);
        assert_eq!(tag(CommandResult::Transferred(1)), 2);
        let exec = crate::program::ExecResult {
            outcome: crate::program::ExecOutcome::Exited { r0: 0 },
            stats: crate::program::RunStats::default(),
        };
        assert_eq!(tag(CommandResult::Exec(exec)), 3);
        let rejected = Completion::rejected(
            CommandId(2),
            LoadError::Verify(crate::load_error::VerifyError::UnknownHelper { pc: 1, id: 99 }),
        );
        let bytes = postcard::to_allocvec(&rejected.result).unwrap();
        assert_eq!(bytes, [4, 75, 1, 99]);
        assert_eq!(
            postcard::from_bytes::<CommandResult>(&bytes).unwrap(),
            rejected.result
        );
    }
}
