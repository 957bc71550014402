//! The host driver: a typed API over the queue pairs of a device.
//!
//! Used by the CLI, the file system and the tests. Every device error comes back as
//! [`IoError::Device`] (the file system's error of a device command, inside
//! [`DriverError::Io`]), naming the command and the status (`Zone Append failed: Zone Is
//! Full (1B9h)`). Transfers larger than the device's limits are split here, as an NVMe driver
//! splits by MDTS.

use common::{
    abi,
    command::{Command, CommandResult, DeviceHealth, Submission},
    load_error::{LoadError, VerifyError},
    nvme,
    program::{
        ActivateProgram, ExecResult, ExecuteProgram, Extent, LoadProgram, MemoryRangeSet,
        ProgramSlot, RangeSetId, ReadOutput,
    },
    zns::{IdentifyZns, ReportFilter, ZoneAction, ZoneDescriptor},
    Status, LBA_BYTES,
};

use lfs::{zoned::check, IoError, Zoned};

use crate::device::{
    queue::{Closed, Done},
    runner::Queue,
};

/// Bytes of one Load Program chunk.
pub const LOAD_CHUNK_BYTES: usize = 64 * 1024;

/// Most zones one Zone Management Receive asks for: 256 KiB of descriptors, well inside one
/// link frame.
const REPORT_CHUNK: u32 = 4096;
/// Host buffer for small structured replies (identify, health).
const SMALL_REPLY_BYTES: usize = 4096;

/// Why a driver call failed: as any device command may fail ([`IoError`], what the file system
/// sees of its commands), or a program the device refused.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Io(#[from] IoError),
    /// The device's verifier refused a program image, for the reason its completion carried.
    #[error("the kernel was rejected: {0}")]
    Rejected(LoadError),
}

impl From<Closed> for DriverError {
    fn from(_: Closed) -> Self {
        IoError::Stopped.into()
    }
}

/// Why an image the device would refuse before holding it to verify (empty, or larger than the
/// ABI allows, [`abi::image::MAX_BYTES`]) is rejected, in the words the device's loader would
/// use: the image's header is parsed here as the loader parses it (the verifier is not run;
/// an image whose header passes can only have too many instructions).
fn refused_unheld(image: &[u8]) -> Option<LoadError> {
    if !image.is_empty() && image.len() <= abi::image::MAX_BYTES as usize {
        return None;
    }
    Some(match firmware::ebpf::split_image(image) {
        Err(reason) => reason,
        Ok((text, _)) => LoadError::Verify(VerifyError::TooLarge {
            insns: u32::try_from(text.len() / 8).unwrap_or(u32::MAX),
        }),
    })
}

/// The file system sees the zoned commands' errors; a program's rejection never comes from one.
impl From<DriverError> for IoError {
    fn from(e: DriverError) -> Self {
        match e {
            DriverError::Io(e) => e,
            DriverError::Rejected(reason) => IoError::Invalid(reason.to_string()),
        }
    }
}

impl DriverError {
    /// The device status, if the device refused the command.
    pub fn status(&self) -> Option<Status> {
        match self {
            DriverError::Io(e) => e.status(),
            DriverError::Rejected(_) => None,
        }
    }
}

/// The name of a command as errors report it.
fn name(command: &Command) -> &'static str {
    match command {
        Command::Identify => "Identify",
        Command::IdentifyStructure { .. } => "Identify (NVMe)",
        Command::Read { .. } => "Read",
        Command::Write { .. } => "Write",
        Command::ZoneAppend { .. } => "Zone Append",
        Command::ZoneManagementSend { .. } => "Zone Management Send",
        Command::ZoneManagementReceive { .. } => "Zone Management Receive",
        Command::Flush => "Flush",
        Command::LoadProgram(_) => "Load Program",
        Command::ActivateProgram(_) => "Program Activation",
        Command::MemoryRangeSet(_) => "Memory Range Set",
        Command::ExecuteProgram(_) => "Execute Program",
        Command::ReadOutput(_) => "Read Output",
        Command::GetHealth => "Get Health",
        Command::ReadLog(_) => "Read Log",
    }
}

/// A typed handle on queue pairs of a device. Cheap to clone; clones share the queues.
///
/// Each thread submits on one of them, the same every time: threads take the queues in turn
/// at their first command (as an NVMe driver gives each CPU its own queue pair), so callers in
/// different threads do not share a queue while there are enough of them.
#[derive(Debug, Clone)]
pub struct Driver {
    queues: std::sync::Arc<[Queue]>,
    identify: IdentifyZns,
}

/// The calling thread's turn among the threads that ever submitted (see [`Driver`]).
fn thread_slot() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed));
    SLOT.with(|s| *s)
}

impl Driver {
    /// A driver over `queues` (at least one) of a device that identified itself as
    /// `identify`.
    pub fn new(queues: Vec<Queue>, identify: IdentifyZns) -> Self {
        assert!(!queues.is_empty(), "a driver needs a queue pair");
        Driver {
            queues: queues.into(),
            identify,
        }
    }

    /// The calling thread's queue pair.
    fn queue(&self) -> &Queue {
        &self.queues[thread_slot() % self.queues.len()]
    }

    /// What the device said at start-up.
    pub fn info(&self) -> &IdentifyZns {
        &self.identify
    }

    /// Submits `command` with `buffer` and waits; a status other than success is an error.
    pub fn call(&self, command: Command, buffer: Vec<u8>) -> Result<Done, DriverError> {
        let done = self.exchange(command, buffer)?;
        if done.completion.status != Status::Success {
            return Err(IoError::Device {
                command: name(&command),
                status: done.completion.status,
            }
            .into());
        }
        Ok(done)
    }

    /// Submits `command` with `buffer` and waits for its completion, whatever its status (only
    /// a failure of the queues is an error).
    pub fn exchange(&self, command: Command, buffer: Vec<u8>) -> Result<Done, DriverError> {
        Ok(self
            .queue()
            .call(|cid| Submission::new(cid, command), buffer)?)
    }

    /// Identify, asked again of the device.
    pub fn identify(&self) -> Result<IdentifyZns, DriverError> {
        let done = self.call(Command::Identify, vec![0; SMALL_REPLY_BYTES])?;
        postcard::from_bytes(&done.buffer).map_err(|_| IoError::Malformed("identify reply").into())
    }

    /// Wear and bad blocks.
    pub fn health(&self) -> Result<DeviceHealth, DriverError> {
        let done = self.call(Command::GetHealth, vec![0; SMALL_REPLY_BYTES])?;
        postcard::from_bytes(&done.buffer).map_err(|_| IoError::Malformed("health reply").into())
    }

    fn max_lbas(&self) -> u64 {
        u64::from(self.identify.mdts_lbas.max(1))
    }

    /// Reads `nlb` blocks from `slba`.
    pub fn read(&self, slba: u64, nlb: u64) -> Result<Vec<u8>, DriverError> {
        let end = check::range_end(slba, nlb)?;
        let mut out = Vec::new();
        let mut lba = slba;
        while lba < end {
            let n = (end - lba).min(self.max_lbas());
            let buffer = vec![0; (n * u64::from(LBA_BYTES)) as usize];
            let done = self.call(
                Command::Read {
                    slba: lba,
                    nlb: n as u32,
                },
                buffer,
            )?;
            // The first command's buffer is the result's start, not copied (all of it for a
            // read within the transfer limit).
            if out.is_empty() {
                out = done.buffer;
                out.reserve(((end - lba - n) * u64::from(LBA_BYTES)) as usize);
            } else {
                out.extend_from_slice(&done.buffer);
            }
            lba += n;
        }
        Ok(out)
    }

    /// Writes `data` (whole blocks) at `slba`, the zone's write pointer.
    pub fn write(&self, slba: u64, data: &[u8]) -> Result<(), DriverError> {
        check::whole_blocks(data)?;
        let step = (self.max_lbas() * u64::from(LBA_BYTES)) as usize;
        for (i, chunk) in data.chunks(step).enumerate() {
            let lba = slba + (i * step / LBA_BYTES as usize) as u64;
            let nlb = (chunk.len() / LBA_BYTES as usize) as u32;
            self.call(Command::Write { slba: lba, nlb }, chunk.to_vec())?;
        }
        Ok(())
    }

    /// Flush: everything written before it becomes durable (the device syncs its volatile
    /// write cache, if it has one: [`IdentifyZns::volatile_write_cache`]).
    pub fn flush(&self) -> Result<(), DriverError> {
        self.call(Command::Flush, Vec::new()).map(|_| ())
    }

    /// Zone Append of `data` (whole blocks, at most the device's append limit); returns the LBA
    /// of its first block.
    pub fn append(&self, zslba: u64, data: Vec<u8>) -> Result<u64, DriverError> {
        let nlb = check::append(&self.identify, &data)?;
        let done = self.call(
            Command::ZoneAppend {
                zslba,
                nlb: nlb as u32,
            },
            data,
        )?;
        match done.completion.result {
            CommandResult::Lba(lba) => Ok(lba),
            _ => Err(IoError::Malformed("append completion").into()),
        }
    }

    /// Zone Management Send.
    pub fn zone_action(
        &self,
        slba: u64,
        action: ZoneAction,
        select_all: bool,
    ) -> Result<(), DriverError> {
        self.call(
            Command::ZoneManagementSend {
                slba,
                action,
                select_all,
            },
            Vec::new(),
        )
        .map(|_| ())
    }

    /// Zone Management Receive: the matching zones from the zone holding `slba`, at most
    /// `max_zones`, and how many matched in all.
    pub fn report(
        &self,
        slba: u64,
        filter: ReportFilter,
        max_zones: u32,
    ) -> Result<(u64, Vec<ZoneDescriptor>), DriverError> {
        // In pieces of at most REPORT_CHUNK zones (64 bytes each), so no transfer outgrows
        // what a link frame carries; each piece starts at the zone after the last reported.
        let mut zones: Vec<ZoneDescriptor> = Vec::new();
        let mut matching = None;
        let mut from = slba;
        while (zones.len() as u64) < u64::from(max_zones) {
            let want = (max_zones - zones.len() as u32).min(REPORT_CHUNK);
            let (nr, got) = self.report_once(from, filter, want)?;
            let more = got.len() as u32 == want;
            let nr_matching = *matching.get_or_insert(nr);
            let Some(last) = got.last() else {
                break;
            };
            from = last.zslba + self.identify.zone_size_lbas;
            zones.extend(got);
            if !more || zones.len() as u64 >= nr_matching || from >= self.identify.nsze_lbas {
                break;
            }
        }
        Ok((matching.unwrap_or(0), zones))
    }

    /// One Zone Management Receive of at most `max_zones` descriptors.
    fn report_once(
        &self,
        slba: u64,
        filter: ReportFilter,
        max_zones: u32,
    ) -> Result<(u64, Vec<ZoneDescriptor>), DriverError> {
        let command = Command::ZoneManagementReceive {
            slba,
            filter,
            max_zones,
            partial: false,
        };
        let done = self.call(command, vec![0; nvme::report_bytes(max_zones)])?;
        // The ZNS layout: the header counts the matching zones; the descriptors that came are
        // the ones the transfer holds.
        let malformed = || IoError::Malformed("zone report");
        let CommandResult::Transferred(len) = done.completion.result else {
            return Err(malformed().into());
        };
        let report = done.buffer.get(..len as usize).ok_or_else(malformed)?;
        let (nr_zones, zones) = nvme::read_zone_report(report).ok_or_else(malformed)?;
        let zones = zones.collect::<Option<Vec<_>>>().ok_or_else(malformed)?;
        Ok((nr_zones, zones))
    }

    /// Every zone's descriptor.
    pub fn all_zones(&self) -> Result<Vec<ZoneDescriptor>, DriverError> {
        self.report(0, ReportFilter::All, self.identify.nr_zones)
            .map(|(_, zones)| zones)
    }

    /// Downloads a program image into `slot` in chunks. The device verifies it when the last
    /// chunk arrives; a refused image is [`DriverError::Rejected`] with the reason the device
    /// gave (the host never verifies images itself).
    pub fn load_program(&self, slot: ProgramSlot, image: &[u8]) -> Result<(), DriverError> {
        if let Some(reason) = refused_unheld(image) {
            return Err(DriverError::Rejected(reason));
        }
        let total_len = u32::try_from(image.len())
            .map_err(|_| IoError::Invalid("the program image is over 4 GiB".into()))?;
        for (i, chunk) in image.chunks(LOAD_CHUNK_BYTES).enumerate() {
            let command = Command::LoadProgram(LoadProgram {
                slot,
                offset: (i * LOAD_CHUNK_BYTES) as u32,
                total_len,
                chunk_len: chunk.len() as u32,
            });
            let done = self
                .queue()
                .call(|cid| Submission::new(cid, command), chunk.to_vec())?;
            match (done.completion.status, done.completion.result) {
                (Status::Success, _) => {}
                (Status::ProgramRejected, CommandResult::Rejected(reason)) => {
                    return Err(DriverError::Rejected(reason))
                }
                (status, _) => {
                    return Err(IoError::Device {
                        command: name(&command),
                        status,
                    }
                    .into())
                }
            }
        }
        Ok(())
    }

    /// Activates (or deactivates) the program in `slot`.
    pub fn activate(&self, slot: ProgramSlot, activate: bool) -> Result<(), DriverError> {
        self.call(
            Command::ActivateProgram(ActivateProgram { slot, activate }),
            Vec::new(),
        )
        .map(|_| ())
    }

    /// Defines range set `id`: a file snapshot of `file_size` bytes in `extents`, and an output
    /// buffer of `out_cap` bytes.
    pub fn set_ranges(
        &self,
        id: RangeSetId,
        extents: &[Extent],
        file_size: u64,
        out_cap: u32,
    ) -> Result<(), DriverError> {
        let bytes: Vec<u8> = extents.iter().flat_map(|e| e.to_le_bytes()).collect();
        let set = MemoryRangeSet {
            id,
            extent_count: extents.len() as u32,
            file_size,
            out_cap,
        };
        self.call(Command::MemoryRangeSet(set), bytes).map(|_| ())
    }

    /// Runs a program. A kernel that ran and then faulted or ran out of fuel is still an
    /// `Ok(ExecResult)` (its outcome says how it ended, its stats what it did); a command the
    /// device refused is an error.
    pub fn execute(&self, exec: ExecuteProgram, input: Vec<u8>) -> Result<ExecResult, DriverError> {
        let command = Command::ExecuteProgram(exec);
        let done = self
            .queue()
            .call(|cid| Submission::new(cid, command), input)?;
        match done.completion.result {
            CommandResult::Exec(result) => Ok(result),
            _ => Err(IoError::Device {
                command: name(&command),
                status: done.completion.status,
            }
            .into()),
        }
    }

    /// The first `returned` bytes of a range set's output (at most `cap`), in Read Output
    /// commands of at most 1 MiB; fewer if the device has fewer.
    pub fn read_output_all(
        &self,
        id: RangeSetId,
        returned: u64,
        cap: u32,
    ) -> Result<Vec<u8>, DriverError> {
        const CHUNK: u32 = 1 << 20;
        let total = u32::try_from(returned.min(u64::from(cap))).unwrap_or(cap);
        let mut out = Vec::with_capacity(total as usize);
        while (out.len() as u32) < total {
            let at = out.len() as u32;
            let chunk = self.read_output(id, at, (total - at).min(CHUNK))?;
            if chunk.is_empty() {
                break;
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// The `csd_log` messages of the last run over range set `id`, oldest first.
    pub fn read_log(&self, id: RangeSetId) -> Result<Vec<Vec<u8>>, DriverError> {
        let most = firmware::controller::LOG_MESSAGES * (2 + common::abi::LOG_MAX_BYTES as usize);
        let done = self.call(Command::ReadLog(id), vec![0; most])?;
        let n = match done.completion.result {
            CommandResult::Transferred(n) => n as usize,
            _ => return Err(IoError::Malformed("read-log completion").into()),
        };
        let mut bytes = done.buffer.get(..n).unwrap_or_default();
        let mut messages = Vec::new();
        while let [lo, hi, rest @ ..] = bytes {
            let len = usize::from(u16::from_le_bytes([*lo, *hi]));
            let msg = rest
                .get(..len)
                .ok_or(IoError::Malformed("read-log message"))?;
            messages.push(msg.to_vec());
            bytes = &rest[len..];
        }
        if !bytes.is_empty() {
            return Err(IoError::Malformed("read-log message").into());
        }
        Ok(messages)
    }

    /// Reads up to `len` bytes of range set `id`'s output from `offset`.
    pub fn read_output(
        &self,
        id: RangeSetId,
        offset: u32,
        len: u32,
    ) -> Result<Vec<u8>, DriverError> {
        let done = self.call(
            Command::ReadOutput(ReadOutput {
                range_set: id,
                offset,
                len,
            }),
            vec![0; len as usize],
        )?;
        let n = match done.completion.result {
            CommandResult::Transferred(n) => n as usize,
            _ => return Err(IoError::Malformed("read-output completion").into()),
        };
        let mut buffer = done.buffer;
        buffer.truncate(n);
        Ok(buffer)
    }
}

/// The file system's device: the driver's zoned commands.
impl Zoned for Driver {
    fn info(&self) -> &IdentifyZns {
        Driver::info(self)
    }

    fn read(&self, slba: u64, nlb: u64) -> Result<Vec<u8>, IoError> {
        Ok(Driver::read(self, slba, nlb)?)
    }

    fn write(&self, slba: u64, data: &[u8]) -> Result<(), IoError> {
        Ok(Driver::write(self, slba, data)?)
    }

    fn append(&self, zslba: u64, data: Vec<u8>) -> Result<u64, IoError> {
        Ok(Driver::append(self, zslba, data)?)
    }

    fn zone_action(&self, slba: u64, action: ZoneAction, select_all: bool) -> Result<(), IoError> {
        Ok(Driver::zone_action(self, slba, action, select_all)?)
    }

    fn report(
        &self,
        slba: u64,
        filter: ReportFilter,
        max_zones: u32,
    ) -> Result<(u64, Vec<ZoneDescriptor>), IoError> {
        Ok(Driver::report(self, slba, filter, max_zones)?)
    }

    fn flush(&self) -> Result<(), IoError> {
        Ok(Driver::flush(self)?)
    }
}
