//! Program slots, memory range sets, and the kernels' run queue.
//!
//! Shaped after NVMe Computational Programs (TP4091): a program image is downloaded in chunks
//! into a slot and verified when complete, activated, and executed over a memory range set (a
//! file snapshot's extents plus an output buffer in device memory), from which the host reads
//! the output back. Up to [`ProgramConfig::running`] runs are started at once, each on a VM of
//! its own; every poll runs one fuel slice of the next of them in turn (round-robin), so a long
//! kernel delays a short one by at most one slice per run ahead of it, never to its end.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use common::{
    abi,
    command::{CommandId, CommandResult, Completion},
    nvme::cp,
    program::{
        ActivateProgram, ExecOutcome, ExecResult, ExecuteProgram, Extent, LoadProgram,
        MemoryRangeSet, ProgramOp, ProgramResources, RangeSetId, ReadOutput, RunStats,
    },
    Status, LBA_BYTES,
};

use crate::{
    ebpf::{Context, Env, Executor, HelperError, Program, Step, Vm},
    nand::Nand,
    zns::ZoneManager,
};

use super::dma::Dma;

/// Limits of the computational side of the device.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ProgramConfig {
    /// Number of program slots.
    pub slots: u8,
    /// Number of memory range sets.
    pub range_sets: u16,
    /// Most extents in one range set.
    pub max_extents: u32,
    /// Largest output buffer of one range set, in bytes.
    pub max_output_bytes: u32,
    /// Scratch memory of every run, in bytes.
    pub scratch_bytes: u32,
    /// Fuel of a run whose command asks for 0.
    pub default_fuel: u64,
    /// Fuel of one slice: the most kernel work between two turns of regular I/O.
    pub slice_fuel: u64,
    /// Most Execute Program commands waiting to run.
    pub max_queued: usize,
    /// Most runs started at once (each holds a VM: its stack and scratch memory); the queued
    /// runs behind them start as those finish.
    pub running: usize,
}

impl Default for ProgramConfig {
    fn default() -> Self {
        ProgramConfig {
            slots: 8,
            range_sets: 64,
            max_extents: 65_536,
            max_output_bytes: 16 << 20,
            scratch_bytes: abi::DEFAULT_SCRATCH_BYTES,
            default_fuel: 1 << 36,
            // About 70 us of the interpreter on the host between two turns of regular I/O:
            // 2^16 doubled the p99 of 4 KiB reads under two kernels in `cargo xtask bench`.
            slice_fuel: 1 << 15,
            max_queued: 64,
            running: 8,
        }
    }
}

#[derive(Debug, Default)]
struct Slot {
    /// Bytes of an image being downloaded.
    partial: Vec<u8>,
    /// Declared length of the image being downloaded.
    total_len: u32,
    /// The verified program, once the whole image arrived and passed.
    program: Option<Program>,
    active: bool,
}

#[derive(Debug, Default)]
struct RangeSet {
    extents: Vec<Extent>,
    /// The file block each extent starts at (running totals of the lengths before it), so a
    /// kernel's read finds its extent by binary search.
    first_blocks: Vec<u64>,
    file_size: u64,
    out_cap: u32,
    output: Vec<u8>,
    /// Incoming bytes of a write-stream execution.
    input: Vec<u8>,
    /// How many of `input` the running kernel has taken. Kept here, not in the per-slice
    /// [`Snapshot`], so that a run resumed in a later slice goes on where it stopped.
    input_at: usize,
    /// The last messages of `csd_log`, oldest first.
    log: VecDeque<Vec<u8>>,
}

/// Messages of `csd_log` kept per range set.
pub const LOG_MESSAGES: usize = 16;

#[derive(Debug)]
struct Job {
    sqid: u16,
    cid: CommandId,
    exec: ExecuteProgram,
    /// The VM of a started run.
    vm: Option<Vm>,
}

/// The computational half of the controller.
#[derive(Debug)]
pub(super) struct Programs<X> {
    config: ProgramConfig,
    /// What runs the kernels.
    executor: X,
    slots: Vec<Slot>,
    sets: BTreeMap<u16, RangeSet>,
    /// Queued and running jobs, oldest first; the first `config.running` of them run.
    queue: VecDeque<Job>,
    /// The position in `queue` whose turn is next.
    turn: usize,
    /// VMs of finished runs, kept for the next.
    spare: Vec<Vm>,
    /// The job of the latest slice and its counters so far.
    last: Option<(u16, CommandId, RunStats)>,
}

impl<X: Executor> Programs<X> {
    pub(super) fn new(config: ProgramConfig, executor: X) -> Self {
        Programs {
            config,
            executor,
            slots: (0..config.slots).map(|_| Slot::default()).collect(),
            sets: BTreeMap::new(),
            queue: VecDeque::new(),
            turn: 0,
            spare: Vec::new(),
            last: None,
        }
    }

    pub(super) fn executor(&self) -> &X {
        &self.executor
    }

    pub(super) fn busy(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Whether `slot` is in use by a queued or running job (its program cannot change then).
    fn slot_in_use(&self, slot: u8) -> bool {
        self.queue.iter().any(|job| job.exec.slot.0 == slot)
    }

    fn range_in_use(&self, id: u16) -> bool {
        self.queue.iter().any(|job| job.exec.range_set.0 == id)
    }

    /// Takes one chunk of an image, and verifies the image when it is complete. A refused
    /// image is `Ok(CommandResult::Rejected(reason))`, which the controller completes with
    /// `Status::ProgramRejected`. (Returned as a result, not by an early return from `submit`,
    /// which cost the board's image about 600 bytes.)
    pub(super) fn load(
        &mut self,
        load: LoadProgram,
        dma: &mut dyn Dma,
    ) -> Result<CommandResult, Status> {
        let index = usize::from(load.slot.0);
        if index >= self.slots.len() {
            return Err(Status::InvalidProgramSlot);
        }
        if self.slot_in_use(load.slot.0) {
            return Err(Status::InvalidField);
        }
        let end = load
            .offset
            .checked_add(load.chunk_len)
            .ok_or(Status::InvalidField)?;
        if load.total_len == 0 || load.total_len > abi::image::MAX_BYTES || end > load.total_len {
            return Err(Status::InvalidField);
        }
        let slot = &mut self.slots[index];
        if load.offset == 0 {
            *slot = Slot {
                total_len: load.total_len,
                ..Slot::default()
            };
        } else if load.offset as usize != slot.partial.len() || load.total_len != slot.total_len {
            // Chunks arrive in order; anything else restarts from offset 0.
            return Err(Status::InvalidField);
        }
        let at = slot.partial.len();
        slot.partial.resize(end as usize, 0);
        if dma.read_from_host(0, &mut slot.partial[at..]).is_err() {
            slot.partial.truncate(at);
            return Err(Status::DataTransferError);
        }
        if end < load.total_len {
            return Ok(CommandResult::None);
        }
        let image = core::mem::take(&mut slot.partial);
        Ok(match Program::load(&image) {
            Ok(program) => {
                self.executor.prepare(&program);
                slot.program = Some(program);
                CommandResult::None
            }
            Err(reason) => CommandResult::Rejected(reason),
        })
    }

    /// What Identify reports of the computational side.
    pub(super) fn resources(&self) -> ProgramResources {
        ProgramResources {
            slots: self.config.slots,
            range_sets: self.config.range_sets,
            max_extents: self.config.max_extents,
            max_output_bytes: self.config.max_output_bytes,
        }
    }

    pub(super) fn activate(&mut self, act: ActivateProgram) -> Result<CommandResult, Status> {
        let in_use = self.slot_in_use(act.slot.0);
        let slot = self
            .slots
            .get_mut(usize::from(act.slot.0))
            .ok_or(Status::InvalidProgramSlot)?;
        if act.activate && slot.program.is_none() {
            return Err(Status::ProgramNotActive);
        }
        if !act.activate && in_use {
            return Err(Status::InvalidField);
        }
        slot.active = act.activate;
        Ok(CommandResult::None)
    }

    pub(super) fn set_ranges(
        &mut self,
        set: MemoryRangeSet,
        nsze: u64,
        dma: &mut dyn Dma,
    ) -> Result<CommandResult, Status> {
        if set.id.0 >= self.config.range_sets
            || set.extent_count > self.config.max_extents
            || set.out_cap > self.config.max_output_bytes
        {
            return Err(Status::InvalidMemoryRange);
        }
        if self.range_in_use(set.id.0) {
            return Err(Status::InvalidField);
        }
        let mut extents = Vec::with_capacity(set.extent_count as usize);
        let mut first_blocks = Vec::with_capacity(set.extent_count as usize);
        let mut blocks: u64 = 0;
        let mut covered: u64 = 0;
        let mut raw = [0u8; Extent::ENCODED_BYTES];
        for i in 0..set.extent_count as usize {
            dma.read_from_host(i * Extent::ENCODED_BYTES, &mut raw)
                .map_err(|_| Status::DataTransferError)?;
            let extent = Extent::from_le_bytes(raw);
            let end = extent.start_lba.checked_add(u64::from(extent.lba_count));
            if extent.lba_count == 0 || (!extent.is_hole() && end.is_none_or(|end| end > nsze)) {
                return Err(Status::InvalidMemoryRange);
            }
            covered = covered.saturating_add(u64::from(extent.lba_count) * u64::from(LBA_BYTES));
            first_blocks.push(blocks);
            blocks += u64::from(extent.lba_count);
            extents.push(extent);
        }
        if covered < set.file_size {
            return Err(Status::InvalidMemoryRange);
        }
        self.sets.insert(
            set.id.0,
            RangeSet {
                extents,
                first_blocks,
                file_size: set.file_size,
                out_cap: set.out_cap,
                ..RangeSet::default()
            },
        );
        Ok(CommandResult::None)
    }

    pub(super) fn enqueue(
        &mut self,
        sqid: u16,
        cid: CommandId,
        exec: ExecuteProgram,
        dma: &mut dyn Dma,
    ) -> Result<(), Status> {
        let slot = self
            .slots
            .get(usize::from(exec.slot.0))
            .ok_or(Status::InvalidProgramSlot)?;
        if !slot.active || slot.program.is_none() {
            return Err(Status::ProgramNotActive);
        }
        if self.queue.len() >= self.config.max_queued {
            return Err(Status::CommandAborted);
        }
        if self.range_in_use(exec.range_set.0) {
            // One run at a time per range set: its output buffer belongs to that run.
            return Err(Status::InvalidField);
        }
        let set = self
            .sets
            .get_mut(&exec.range_set.0)
            .ok_or(Status::InvalidMemoryRange)?;
        set.input.clear();
        set.input_at = 0;
        if exec.op == ProgramOp::WriteStream {
            let len = usize::try_from(exec.len).map_err(|_| Status::InvalidField)?;
            if len > self.config.max_output_bytes as usize {
                return Err(Status::InvalidField);
            }
            set.input.resize(len, 0);
            // The input follows the command's parameter data.
            dma.read_from_host(cp::EXECUTE_PARAMETER_BYTES, &mut set.input)
                .map_err(|_| Status::DataTransferError)?;
        }
        set.output.clear();
        set.log.clear();
        self.queue.push_back(Job {
            sqid,
            cid,
            exec,
            vm: None,
        });
        Ok(())
    }

    pub(super) fn read_output(
        &mut self,
        read: ReadOutput,
        dma: &mut dyn Dma,
    ) -> Result<CommandResult, Status> {
        if self.range_in_use(read.range_set.0) {
            return Err(Status::InvalidField);
        }
        let set = self
            .sets
            .get(&read.range_set.0)
            .ok_or(Status::InvalidMemoryRange)?;
        let start = (read.offset as usize).min(set.output.len());
        let end = start
            .saturating_add(read.len as usize)
            .min(set.output.len());
        dma.write_to_host(0, &set.output[start..end])
            .map_err(|_| Status::DataTransferError)?;
        Ok(CommandResult::Transferred((end - start) as u32))
    }

    /// Sends the last `csd_log` messages of the run over range set `id` to the host, each as a
    /// u16 length and its bytes.
    pub(super) fn read_log(
        &self,
        id: RangeSetId,
        dma: &mut dyn Dma,
    ) -> Result<CommandResult, Status> {
        if self.range_in_use(id.0) {
            return Err(Status::InvalidField);
        }
        let set = self.sets.get(&id.0).ok_or(Status::InvalidMemoryRange)?;
        let mut at = 0usize;
        for msg in &set.log {
            dma.write_to_host(at, &(msg.len() as u16).to_le_bytes())
                .and_then(|()| dma.write_to_host(at + 2, msg))
                .map_err(|_| Status::DataTransferError)?;
            at += 2 + msg.len();
        }
        Ok(CommandResult::Transferred(at as u32))
    }

    /// The last `csd_log` messages of the run over range set `id`, oldest first.
    pub(super) fn log(&self, id: u16) -> impl Iterator<Item = &[u8]> {
        self.sets
            .get(&id)
            .into_iter()
            .flat_map(|set| set.log.iter().map(Vec::as_slice))
    }

    /// The submission queue and command of the run the next [`Programs::poll`] slices.
    pub(super) fn next_run(&self) -> Option<(u16, CommandId)> {
        let job = self.queue.get(self.next_position()?)?;
        Some((job.sqid, job.cid))
    }

    /// The job of the latest slice, with its run's counters so far.
    pub(super) fn last_slice(&self) -> Option<(u16, CommandId, RunStats)> {
        self.last
    }

    fn next_position(&self) -> Option<usize> {
        let running = self.queue.len().min(self.config.running.max(1));
        (running > 0).then(|| self.turn % running)
    }

    /// Runs one slice of the next running job in turn.
    pub(super) fn poll<N: Nand>(
        &mut self,
        zones: &mut ZoneManager<N>,
    ) -> Option<(u16, Completion)> {
        let at = self.next_position()?;
        self.turn = at + 1;
        let job = &mut self.queue[at];
        let (sqid, cid, exec) = (job.sqid, job.cid, job.exec);
        let (
            Some(Slot {
                program: Some(program),
                ..
            }),
            Some(set),
        ) = (
            self.slots.get(usize::from(exec.slot.0)),
            self.sets.get_mut(&exec.range_set.0),
        )
        else {
            self.finish(at);
            return Some((sqid, Completion::status(cid, Status::InternalError)));
        };
        let vm = match &mut job.vm {
            Some(vm) => vm,
            vm @ None => {
                let ctx = Context {
                    op: exec.op.abi(),
                    file_size: set.file_size,
                    offset: exec.offset,
                    len: exec.len,
                    param0: exec.param0,
                    param1: exec.param1,
                    out_cap: u64::from(set.out_cap),
                };
                let fuel = if exec.fuel == 0 {
                    self.config.default_fuel
                } else {
                    exec.fuel
                };
                let scratch = self.config.scratch_bytes;
                let fresh = vm.insert(self.spare.pop().unwrap_or_else(|| Vm::new(scratch)));
                fresh.start(program, &ctx, fuel);
                fresh
            }
        };
        let mut env = Snapshot {
            zones,
            set,
            write_stream: exec.op == ProgramOp::WriteStream,
            page: None,
            page_buf: [0; LBA_BYTES as usize],
        };
        let step = self
            .executor
            .resume(vm, program, &mut env, self.config.slice_fuel);
        let stats = vm.stats();
        self.last = Some((sqid, cid, stats));
        let outcome = match step {
            Ok(Step::Yielded) => return None,
            Ok(Step::Exited { r0 }) => ExecOutcome::Exited { r0 },
            Err(err) => match err.fault() {
                Some(fault) => ExecOutcome::Faulted(fault),
                None => {
                    self.finish(at);
                    return Some((sqid, Completion::status(cid, Status::InternalError)));
                }
            },
        };
        self.finish(at);
        let status = match outcome {
            ExecOutcome::Exited { .. } => Status::Success,
            ExecOutcome::Faulted(common::program::ExecFault::OutOfFuel) => Status::ProgramOutOfFuel,
            ExecOutcome::Faulted(_) => Status::ProgramFault,
        };
        let result = CommandResult::Exec(ExecResult { outcome, stats });
        Some((
            sqid,
            Completion {
                cid,
                status,
                result,
            },
        ))
    }

    /// Takes the job at `at` off the queue, keeping its VM for a later run.
    fn finish(&mut self, at: usize) {
        if let Some(Job { vm: Some(vm), .. }) = self.queue.remove(at) {
            self.spare.push(vm);
        }
        // The job after it moved into its place and has the turn.
        self.turn = at;
    }
}

/// What a running kernel sees of the device: its file snapshot, its output, its input.
struct Snapshot<'a, N: Nand> {
    zones: &'a mut ZoneManager<N>,
    set: &'a mut RangeSet,
    /// Whether the run is a write stream (the only op with input).
    write_stream: bool,
    /// The LBA held in `page_buf`.
    page: Option<u64>,
    page_buf: [u8; LBA_BYTES as usize],
}

impl<N: Nand> Snapshot<'_, N> {
    /// The device LBA holding file block `file_block` ([`Extent::HOLE`] in a hole), if the
    /// snapshot has it.
    fn lba_of(&self, file_block: u64) -> Option<u64> {
        // The last extent starting at or before `file_block`.
        let i = self
            .set
            .first_blocks
            .partition_point(|&first| first <= file_block);
        let at = i.checked_sub(1)?;
        let extent = self.set.extents[at];
        let into = file_block - self.set.first_blocks[at];
        // Saturating: a hole's blocks are all `Extent::HOLE`; a real extent ends inside the
        // namespace (checked when the set was defined).
        (into < u64::from(extent.lba_count)).then(|| extent.start_lba.saturating_add(into))
    }
}

impl<N: Nand> Env for Snapshot<'_, N> {
    fn read(&mut self, file_off: u64, dst: &mut [u8]) -> Result<usize, HelperError> {
        let size = self.set.file_size;
        if file_off >= size || dst.is_empty() {
            return Ok(0);
        }
        let want = (dst.len() as u64).min(size - file_off) as usize;
        let lba_bytes = u64::from(LBA_BYTES);
        let mut done = 0usize;
        while done < want {
            let pos = file_off + done as u64;
            let lba = self.lba_of(pos / lba_bytes).ok_or(HelperError::Io)?;
            let in_page = (pos % lba_bytes) as usize;
            let n = (LBA_BYTES as usize - in_page).min(want - done);
            if lba == Extent::HOLE {
                dst[done..done + n].fill(0);
            } else if in_page == 0 && n == LBA_BYTES as usize {
                // A whole block: straight into the kernel's memory.
                self.zones
                    .read(lba, &mut dst[done..done + n])
                    .map_err(|_| HelperError::Io)?;
            } else {
                if self.page != Some(lba) {
                    self.page = None;
                    self.zones
                        .read(lba, &mut self.page_buf)
                        .map_err(|_| HelperError::Io)?;
                    self.page = Some(lba);
                }
                dst[done..done + n].copy_from_slice(&self.page_buf[in_page..in_page + n]);
            }
            done += n;
        }
        Ok(done)
    }

    fn emit(&mut self, src: &[u8]) -> Result<(), HelperError> {
        // The VM has checked out_cap (the context's), and the output was emptied when the run
        // was queued.
        self.set.output.extend_from_slice(src);
        Ok(())
    }

    fn log(&mut self, msg: &[u8]) {
        if self.set.log.len() == LOG_MESSAGES {
            self.set.log.pop_front();
        }
        self.set.log.push_back(msg.to_vec());
    }

    fn input(&mut self, dst: &mut [u8]) -> Result<usize, HelperError> {
        if !self.write_stream {
            return Err(HelperError::NotSupported);
        }
        let rest = &self.set.input[self.set.input_at.min(self.set.input.len())..];
        let n = rest.len().min(dst.len());
        dst[..n].copy_from_slice(&rest[..n]);
        self.set.input_at += n;
        Ok(n)
    }
}
