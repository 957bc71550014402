//! The firmware's controller as the device thread's backend, in this process.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use common::command::{Command, CommandResult, Completion};
use firmware::{
    controller::{Controller, SliceDma},
    nand::sim::{PageStore, SimNand},
};

use jit::HostExecutor;

use super::{clock::Clock, queue::Entry, runner::Backend};
use crate::nand::timing::Timed;

/// The NAND stack under an in-process device: the strict emulator over `S`, timed.
pub type DeviceNand<S> = Timed<SimNand<S>>;

/// Bytes of an NVMe submission queue entry, counted per command on the link.
pub const SQE_BYTES: u64 = 64;
/// Bytes of an NVMe completion queue entry.
pub const CQE_BYTES: u64 = 16;

/// Counters of a running device, readable from any thread.
#[derive(Debug, Default)]
pub struct Counters {
    /// Commands completed.
    pub commands: AtomicU64,
    /// Bytes that crossed the host link towards the device (commands and data).
    pub link_to_device: AtomicU64,
    /// Bytes that crossed the host link towards the host (completions and data).
    pub link_to_host: AtomicU64,
    /// NAND page reads, programs, erases, and bytes read and programmed.
    pub nand_reads: AtomicU64,
    pub nand_programs: AtomicU64,
    pub nand_erases: AtomicU64,
    pub nand_read_bytes: AtomicU64,
    pub nand_program_bytes: AtomicU64,
    /// Modeled device time in nanoseconds (0 when timing is off).
    pub modeled_ns: AtomicU64,
    /// The longest modeled wait of a regular command for the firmware's core (a kernel slice
    /// in progress there), in nanoseconds.
    pub modeled_wait_max_ns: AtomicU64,
    /// The longest kernel slice the firmware's core ran, in modeled nanoseconds.
    pub modeled_slice_max_ns: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub commands: u64,
    pub link_to_device_bytes: u64,
    pub link_to_host_bytes: u64,
    pub nand_reads: u64,
    pub nand_programs: u64,
    pub nand_erases: u64,
    pub nand_read_bytes: u64,
    pub nand_program_bytes: u64,
    pub modeled_ns: u64,
    pub modeled_wait_max_ns: u64,
    pub modeled_slice_max_ns: u64,
}

impl std::fmt::Display for Stats {
    /// `key=value` pairs, space-separated (`user.csd.counters`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "commands={} link_to_device_bytes={} link_to_host_bytes={} nand_reads={} \
             nand_programs={} nand_erases={} nand_read_bytes={} nand_program_bytes={} \
             modeled_ns={} modeled_wait_max_ns={} modeled_slice_max_ns={}",
            self.commands,
            self.link_to_device_bytes,
            self.link_to_host_bytes,
            self.nand_reads,
            self.nand_programs,
            self.nand_erases,
            self.nand_read_bytes,
            self.nand_program_bytes,
            self.modeled_ns,
            self.modeled_wait_max_ns,
            self.modeled_slice_max_ns
        )
    }
}

impl Stats {
    /// Bytes that crossed the host link in both directions.
    pub fn link_bytes(&self) -> u64 {
        self.link_to_device_bytes + self.link_to_host_bytes
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Stats) -> Stats {
        Stats {
            commands: self.commands - earlier.commands,
            link_to_device_bytes: self.link_to_device_bytes - earlier.link_to_device_bytes,
            link_to_host_bytes: self.link_to_host_bytes - earlier.link_to_host_bytes,
            nand_reads: self.nand_reads - earlier.nand_reads,
            nand_programs: self.nand_programs - earlier.nand_programs,
            nand_erases: self.nand_erases - earlier.nand_erases,
            nand_read_bytes: self.nand_read_bytes - earlier.nand_read_bytes,
            nand_program_bytes: self.nand_program_bytes - earlier.nand_program_bytes,
            modeled_ns: self.modeled_ns - earlier.modeled_ns,
            // Maxima over the device's life, not differences.
            modeled_wait_max_ns: self.modeled_wait_max_ns,
            modeled_slice_max_ns: self.modeled_slice_max_ns,
        }
    }
}

impl Counters {
    /// The current values.
    pub fn snapshot(&self) -> Stats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            commands: get(&self.commands),
            link_to_device_bytes: get(&self.link_to_device),
            link_to_host_bytes: get(&self.link_to_host),
            nand_reads: get(&self.nand_reads),
            nand_programs: get(&self.nand_programs),
            nand_erases: get(&self.nand_erases),
            nand_read_bytes: get(&self.nand_read_bytes),
            nand_program_bytes: get(&self.nand_program_bytes),
            modeled_ns: get(&self.modeled_ns),
            modeled_wait_max_ns: get(&self.modeled_wait_max_ns),
            modeled_slice_max_ns: get(&self.modeled_slice_max_ns),
        }
    }
}

/// Bytes a command moves towards the device and towards the host besides its queue entries:
/// what a real NVMe device would DMA over PCIe for it.
fn data_bytes(command: &Command, completion: &Completion) -> (u64, u64) {
    let lbas = |nlb: u32| u64::from(nlb) * u64::from(common::LBA_BYTES);
    let moved = match completion.result {
        CommandResult::Transferred(n) => u64::from(n),
        _ => 0,
    };
    if !completion.status.is_success() && !matches!(completion.result, CommandResult::Exec(_)) {
        // A failed command moves no data (the device checks before it transfers).
        return (0, 0);
    }
    match *command {
        Command::Write { nlb, .. } | Command::ZoneAppend { nlb, .. } => (lbas(nlb), 0),
        Command::LoadProgram(load) => (u64::from(load.chunk_len), 0),
        Command::MemoryRangeSet(set) => (
            u64::from(set.extent_count) * common::program::Extent::ENCODED_BYTES as u64,
            0,
        ),
        // The parameter data (offset, length, why it runs), then a write stream's input.
        Command::ExecuteProgram(exec) => {
            let input = match exec.op {
                common::program::ProgramOp::WriteStream => exec.len,
                _ => 0,
            };
            (common::nvme::cp::EXECUTE_PARAMETER_BYTES as u64 + input, 0)
        }
        _ => (0, moved),
    }
}

/// The controller over a NAND store `S`, as a [`Backend`].
#[derive(Debug)]
pub struct InProcess<S: PageStore> {
    controller: Controller<DeviceNand<S>, HostExecutor>,
    clock: Clock,
    counters: Arc<Counters>,
    /// Commands in the background, to account their link bytes when they finish.
    running: Vec<(u16, Command, common::command::CommandId)>,
    /// Whether kernels run on the JIT (reported with every run).
    jit: bool,
}

impl<S: PageStore> InProcess<S> {
    /// Wraps `controller`, keeping modeled time on `clock` and reporting into `counters`.
    pub fn new(
        controller: Controller<DeviceNand<S>, HostExecutor>,
        clock: Clock,
        counters: Arc<Counters>,
    ) -> Self {
        let jit = controller.executor().kind() == jit::ExecutorKind::Jit;
        let backend = InProcess {
            controller,
            clock,
            counters,
            running: Vec::new(),
            jit,
        };
        backend.publish_nand();
        backend
    }

    /// Gives the controller back (power off).
    pub fn into_controller(self) -> Controller<DeviceNand<S>, HostExecutor> {
        self.controller
    }

    fn publish_nand(&self) {
        let nand = self.controller.zones().nand();
        let stats = nand.inner().stats();
        let c = &self.counters;
        c.nand_reads.store(stats.reads, Ordering::Relaxed);
        c.nand_programs.store(stats.programs, Ordering::Relaxed);
        c.nand_erases.store(stats.erases, Ordering::Relaxed);
        c.nand_read_bytes.store(stats.read_bytes, Ordering::Relaxed);
        c.nand_program_bytes
            .store(stats.program_bytes, Ordering::Relaxed);
        c.modeled_ns.store(self.clock.now_ns(), Ordering::Relaxed);
        c.modeled_wait_max_ns
            .store(self.clock.max_wait_ns(), Ordering::Relaxed);
        c.modeled_slice_max_ns
            .store(self.clock.max_firmware_slice_ns(), Ordering::Relaxed);
    }

    /// Counts a completed command's bytes on the link; returns them.
    fn account(&mut self, command: &Command, completion: &Completion) -> u64 {
        let (to_device, to_host) = data_bytes(command, completion);
        let c = &self.counters;
        c.commands.fetch_add(1, Ordering::Relaxed);
        c.link_to_device
            .fetch_add(SQE_BYTES + to_device, Ordering::Relaxed);
        c.link_to_host
            .fetch_add(CQE_BYTES + to_host, Ordering::Relaxed);
        SQE_BYTES + CQE_BYTES + to_device + to_host
    }

    fn nand(&mut self) -> &mut DeviceNand<S> {
        self.controller.zones_mut().nand_mut()
    }
}

impl<S: PageStore + Send + 'static> Backend for InProcess<S> {
    fn submit(&mut self, sqid: u16, entry: &mut Entry) -> Option<Completion> {
        let start = self.clock.command_start();
        self.nand().start_at(start);
        let mut dma = SliceDma::new(&mut entry.buffer);
        let command = entry.submission.command;
        let cid = entry.submission.cid;
        let done = self
            .controller
            .submit_command(sqid, &entry.submission, &mut dma);
        let link = match &done {
            Some(completion) => self.account(&command, completion),
            // The rest of a run's link bytes are counted when it completes.
            None => SQE_BYTES,
        };
        let nand_end = self.nand().finished_ns();
        let end = self.clock.command_end(start, nand_end, link);
        if done.is_none() {
            self.running.push((sqid, command, cid));
            self.clock.submitted(sqid, cid, end);
        }
        self.publish_nand();
        done
    }

    fn poll(&mut self) -> Option<(u16, Completion)> {
        let (sqid, cid) = self.controller.next_run()?;
        let slice = self.clock.slice_start(sqid, cid);
        self.nand().start_at(slice.start_ns);
        let done = self.controller.poll();
        if let Some((q, c, stats)) = self.controller.last_slice() {
            let nand_end = self.nand().finished_ns();
            self.clock.slice_end(q, c, slice, nand_end, &stats);
        }
        let Some((sqid, mut completion)) = done else {
            self.publish_nand();
            return None;
        };
        let time = self.clock.finished(sqid, completion.cid);
        if let CommandResult::Exec(run) = &mut completion.result {
            run.stats.device_ns = time.device_ns;
            run.stats.device_compute_ns = time.compute_ns;
            run.stats.device_nand_ns = time.nand_ns;
            run.stats.jit = self.jit;
        }
        let at = self
            .running
            .iter()
            .position(|(q, _, cid)| *q == sqid && *cid == completion.cid);
        if let Some(at) = at {
            let (_, command, _) = self.running.swap_remove(at);
            self.account(&command, &completion);
        }
        self.publish_nand();
        Some((sqid, completion))
    }

    fn busy(&self) -> bool {
        self.controller.busy()
    }
}
