//! One run of a kernel on the device: load and activate it, define its range set, execute,
//! read the output back.

use common::load_error::LoadError;
use common::program::{ExecResult, ExecuteProgram, ProgramOp};

use super::{Engine, Kernel, Lease, Ranges};
use crate::driver::DriverError;
use crate::lfs::LfsError;

/// One Execute Program, and how much of its output to bring back.
#[derive(Debug, Clone)]
pub struct Job {
    pub op: ProgramOp,
    /// `ctx->offset` and `ctx->len`: the requested range of the file, or of `input`.
    pub offset: u64,
    pub len: u64,
    /// `ctx->param0` and `ctx->param1`.
    pub params: (u64, u64),
    /// The run's fuel budget (0: the device's default).
    pub fuel: u64,
    /// A write stream's incoming bytes (`csd_input`); empty otherwise.
    pub input: Vec<u8>,
    /// Most output bytes to read back.
    pub max_output: u32,
}

/// A run that reached its end: how the kernel stopped, what it did, and the output read back.
#[derive(Debug)]
pub struct Ran {
    pub result: ExecResult,
    pub output: Vec<u8>,
    /// The kernel's `csd_log` messages (the device's last 16), oldest first.
    pub log: Vec<Vec<u8>>,
}

/// The device command of a run that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Load,
    Activate,
    DefineRanges,
    Execute,
    ReadLog,
    ReadOutput,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Load => "load program",
            Step::Activate => "program activation",
            Step::DefineRanges => "memory range set",
            Step::Execute => "execute program",
            Step::ReadLog => "read log",
            Step::ReadOutput => "read output",
        })
    }
}

/// Why a run, or a step towards one, failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The device's verifier refused the kernel, for `reason`.
    #[error("the device refused kernel {kernel}: {reason}")]
    Rejected { kernel: String, reason: LoadError },
    /// The device refused a command, or stopped.
    #[error("{step} failed: {source}")]
    Device { step: Step, source: DriverError },
    /// The file's snapshot is no longer good ([`LfsError::SnapshotReclaimed`]: writes took
    /// its blocks back, so whatever the device read may be other data; the run's result is
    /// dropped), or the file system failed checking it.
    #[error("the file's snapshot: {0}")]
    Snapshot(LfsError),
}

fn failed(step: Step) -> impl FnOnce(DriverError) -> RunError {
    move |source| RunError::Device { step, source }
}

impl Engine {
    /// Loads `kernel` into the lease's slot and activates it, unless the slot holds it already.
    pub fn load(&self, lease: &mut Lease, kernel: &Kernel) -> Result<(), RunError> {
        if lease.loaded == Some(kernel.fingerprint()) {
            return Ok(());
        }
        lease.loaded = None;
        self.driver
            .load_program(lease.slot, kernel.image())
            .map_err(|e| match e {
                DriverError::Rejected(reason) => RunError::Rejected {
                    kernel: kernel.name().to_string(),
                    reason,
                },
                source => failed(Step::Load)(source),
            })?;
        self.driver
            .activate(lease.slot, true)
            .map_err(failed(Step::Activate))?;
        lease.loaded = Some(kernel.fingerprint());
        Ok(())
    }

    /// Defines the lease's range set as `ranges`, unless it is defined so already.
    pub fn define(&self, lease: &mut Lease, ranges: &Ranges) -> Result<(), RunError> {
        if lease.defined == Some(ranges.id()) {
            return Ok(());
        }
        lease.defined = None;
        self.driver
            .set_ranges(
                lease.set,
                ranges.extents(),
                ranges.file_size(),
                ranges.out_cap(),
            )
            .map_err(failed(Step::DefineRanges))?;
        lease.defined = Some(ranges.id());
        Ok(())
    }

    /// Runs `kernel` over `ranges` on the lease: loads and activates it and defines the range
    /// set where the lease does not hold them yet ([`Engine::load`], [`Engine::define`]),
    /// executes `job`, reads the kernel's log if it logged, then reads back at most
    /// `job.max_output` bytes of output if `accept` says so. `accept` sees how the kernel
    /// stopped, and its log, before any output crosses the link; its error ends the run.
    ///
    /// A file's snapshot is checked before the run and after it: a run over blocks that writes
    /// took back ends with [`RunError::Snapshot`], whatever the device answered.
    pub fn run<E: From<RunError>>(
        &self,
        lease: &mut Lease,
        kernel: &Kernel,
        ranges: &Ranges,
        job: Job,
        accept: impl FnOnce(&ExecResult, &[Vec<u8>]) -> Result<bool, E>,
    ) -> Result<Ran, E> {
        self.load(lease, kernel)?;
        self.define(lease, ranges)?;
        ranges.check().map_err(RunError::Snapshot)?;
        let exec = ExecuteProgram {
            slot: lease.slot,
            range_set: lease.set,
            op: job.op,
            offset: job.offset,
            len: job.len,
            param0: job.params.0,
            param1: job.params.1,
            fuel: job.fuel,
        };
        let result = self.driver.execute(exec, job.input);
        ranges.check().map_err(RunError::Snapshot)?;
        let result = result.map_err(failed(Step::Execute))?;
        let log = if result.stats.log_messages > 0 {
            self.driver
                .read_log(lease.set)
                .map_err(failed(Step::ReadLog))?
        } else {
            Vec::new()
        };
        let output = if accept(&result, &log)? {
            self.driver
                .read_output_all(lease.set, result.stats.bytes_returned, job.max_output)
                .map_err(failed(Step::ReadOutput))?
        } else {
            Vec::new()
        };
        Ok(Ran {
            result,
            output,
            log,
        })
    }
}
