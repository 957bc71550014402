//! Computational-program commands and results, shaped after NVMe TP4091 (Computational
//! Programs): Load Program, Program Activation, Memory Range Set, Execute Program, and a read
//! of device memory for the kernel's output.
//!
//! Data only. Bulk data (image chunks, extent lists, output bytes) never travels inline: it
//! moves through the runner's DMA-like interface, and the command says how many bytes.
//! Enum variants are append-only; the serialized forms are pinned by golden-bytes tests.

use serde::{Deserialize, Serialize};

/// A device program slot. The device has a fixed number of slots; an unknown slot is
/// `Status::InvalidProgramSlot`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ProgramSlot(pub u8);

/// A memory range set, as named by [`MemoryRangeSet::id`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RangeSetId(pub u16);

/// The computational side of a device, as Identify reports it
/// ([`crate::zns::IdentifyZns::programs`]): what a host may use at once, so it sizes its pool
/// of slots and range sets from the device rather than from a guess. All zero: no programs.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ProgramResources {
    /// Program slots: [`ProgramSlot`] 0 to `slots - 1`.
    pub slots: u8,
    /// Memory range sets: [`RangeSetId`] 0 to `range_sets - 1`.
    pub range_sets: u16,
    /// Most extents in one range set.
    pub max_extents: u32,
    /// Largest output buffer of one range set, in bytes.
    pub max_output_bytes: u32,
}

/// Load Program: one chunk of a program image (`abi::image`) for `slot`.
///
/// The host sends the image in order, `offset` 0 first; the chunk's `chunk_len` bytes come
/// through the DMA interface. The slot's image is complete (and is then verified) when
/// `offset + chunk_len == total_len`. A chunk with `offset` 0 discards any partial image.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LoadProgram {
    pub slot: ProgramSlot,
    /// Byte offset of this chunk in the image.
    pub offset: u32,
    /// Length of the whole image in bytes.
    pub total_len: u32,
    /// Bytes in this chunk (transferred by DMA).
    pub chunk_len: u32,
}

/// Program Activation: makes a verified program runnable (or not). Activating a slot whose
/// image is incomplete or was rejected fails.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ActivateProgram {
    pub slot: ProgramSlot,
    pub activate: bool,
}

/// One contiguous run of logical blocks of a file snapshot, or a hole: `lba_count` blocks of
/// the file that hold no data and read as zeros (`start_lba` is [`Extent::HOLE`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Extent {
    pub start_lba: u64,
    pub lba_count: u32,
}

impl Extent {
    /// `start_lba` of a hole. No LBA is this large, so a device that does not know holes
    /// refuses the range set (`Status::InvalidMemoryRange`) rather than read wrong blocks.
    pub const HOLE: u64 = u64::MAX;

    /// Whether this extent is a hole, read as zeros.
    pub const fn is_hole(&self) -> bool {
        self.start_lba == Self::HOLE
    }

    /// Size of one extent in the DMA'd extent list: `start_lba` (u64 LE), `lba_count` (u32 LE).
    pub const ENCODED_BYTES: usize = 12;

    /// The little-endian form used in the DMA'd extent list.
    pub fn to_le_bytes(self) -> [u8; Self::ENCODED_BYTES] {
        let mut b = [0u8; Self::ENCODED_BYTES];
        b[..8].copy_from_slice(&self.start_lba.to_le_bytes());
        b[8..].copy_from_slice(&self.lba_count.to_le_bytes());
        b
    }

    /// Reads one extent of the DMA'd extent list.
    pub fn from_le_bytes(b: [u8; Self::ENCODED_BYTES]) -> Self {
        let mut lba = [0u8; 8];
        lba.copy_from_slice(&b[..8]);
        let mut count = [0u8; 4];
        count.copy_from_slice(&b[8..]);
        Extent {
            start_lba: u64::from_le_bytes(lba),
            lba_count: u32::from_le_bytes(count),
        }
    }
}

/// Memory Range Set: defines set `id` as a file snapshot (the extents, in file order, whose
/// concatenation holds the file's first `file_size` bytes; holes read as zeros) plus an output buffer of
/// `out_cap` bytes in device memory. The `extent_count` extents follow by DMA, each
/// [`Extent::ENCODED_BYTES`] long. Redefining an id replaces the set.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MemoryRangeSet {
    pub id: RangeSetId,
    pub extent_count: u32,
    pub file_size: u64,
    pub out_cap: u32,
}

/// Why a kernel is run (`csd_ctx.op`, see `abi::op`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ProgramOp {
    ReadStream,
    FileJob,
    WriteStream,
}

impl ProgramOp {
    /// The `csd_ctx.op` value.
    pub const fn abi(self) -> u64 {
        match self {
            ProgramOp::ReadStream => crate::abi::op::READ_STREAM,
            ProgramOp::FileJob => crate::abi::op::FILE_JOB,
            ProgramOp::WriteStream => crate::abi::op::WRITE_STREAM,
        }
    }
}

/// Execute Program: runs the program in `slot` over range set `range_set`. `offset`, `len`,
/// `param0` and `param1` go to the kernel's context unchanged. For a write stream the
/// incoming `len` bytes follow by DMA. `fuel` is the run's total budget (0: device default).
/// The completion carries an [`ExecResult`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ExecuteProgram {
    pub slot: ProgramSlot,
    pub range_set: RangeSetId,
    pub op: ProgramOp,
    pub offset: u64,
    pub len: u64,
    pub param0: u64,
    pub param1: u64,
    pub fuel: u64,
}

/// Read Output: copies `len` bytes of range set `range_set`'s output buffer, from `offset`,
/// to the host by DMA.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ReadOutput {
    pub range_set: RangeSetId,
    pub offset: u32,
    pub len: u32,
}

/// Counters of one kernel run.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RunStats {
    /// eBPF instructions executed.
    pub instructions: u64,
    /// Fuel consumed: instructions plus helper costs.
    pub fuel_used: u64,
    /// Snapshot bytes delivered to the kernel by `csd_read`.
    pub device_bytes_read: u64,
    /// Bytes the kernel emitted with `csd_emit`.
    pub bytes_returned: u64,
    /// Of `instructions`: loads, stores and atomics.
    pub memory_insns: u64,
    /// Of `instructions`: jumps, taken or not.
    pub branch_insns: u64,
    /// Of `instructions`: helper calls, bpf-to-bpf calls and exits. The rest are ALU
    /// instructions (arithmetic, moves, byte swaps, 64-bit immediates).
    pub call_insns: u64,
    /// Helper calls made.
    pub helper_calls: u64,
    /// Bytes the helpers moved between the kernel's memory and the device.
    pub helper_bytes: u64,
    /// Messages the kernel logged with `csd_log` (the device keeps the last 16 of them).
    pub log_messages: u64,
    /// Modeled device time of the run, from its submission to its completion, in
    /// nanoseconds. The firmware leaves the three modeled times zero and they do not cross
    /// the link; the in-process device fills them from its timing model (see the host shell's
    /// `device::clock`).
    #[serde(skip)]
    pub device_ns: u64,
    /// Of `device_ns`: modeled time on the device's core running the kernel.
    #[serde(skip)]
    pub device_compute_ns: u64,
    /// Modeled time of the run's NAND reads (overlapping its compute).
    #[serde(skip)]
    pub device_nand_ns: u64,
    /// Whether the device ran the kernel as native code (the in-process device's JIT) rather
    /// than interpreting it. Host-side, like the modeled times: the firmware leaves it false.
    #[serde(skip)]
    pub jit: bool,
}

impl RunStats {
    /// Instructions of the ALU class: those neither memory, branch nor call.
    pub fn alu_insns(&self) -> u64 {
        self.instructions
            .saturating_sub(self.memory_insns + self.branch_insns + self.call_insns)
    }
}

/// How a kernel run failed. `pc` is the index of the faulting instruction slot. (Division by
/// zero is no fault: eBPF defines its result; an immediate zero divisor is refused at load.)
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ExecFault {
    /// The run's fuel budget was used up.
    OutOfFuel,
    /// A load or store fell (partly) outside the kernel's regions, or wrote a read-only one.
    MemoryFault {
        pc: u32,
        addr: u64,
        len: u32,
        write: bool,
    },
    /// A helper was given memory outside the kernel's regions.
    HelperFault {
        pc: u32,
        helper: u32,
        addr: u64,
        len: u64,
    },
    /// bpf-to-bpf calls nested deeper than `abi::MAX_CALL_DEPTH`.
    CallDepthExceeded { pc: u32 },
}

/// The result an Execute Program completion carries.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ExecOutcome {
    /// The kernel returned `r0` from its entry function.
    Exited { r0: u64 },
    /// The kernel was stopped.
    Faulted(ExecFault),
}

/// Completion payload of Execute Program.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ExecResult {
    pub outcome: ExecOutcome,
    pub stats: RunStats,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip<T>(v: T, golden: &[u8])
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + core::fmt::Debug,
    {
        let mut buf = [0u8; 64];
        let used = postcard::to_slice(&v, &mut buf).expect("serialize").len();
        assert_eq!(&buf[..used], golden, "{v:?}");
        let back: T = postcard::from_bytes(golden).expect("deserialize");
        assert_eq!(back, v);
    }
    /// Load Program's serialized form is pinned.
    #[test]
    fn golden_load_program() {
        roundtrip(
            LoadProgram {
                slot: ProgramSlot(3),
                offset: 4096,
                total_len: 5000,
                chunk_len: 904,
            },
            &[3, 0x80, 0x20, 0x88, 0x27, 0x88, 0x07],
        );
    }

    /// Program Activation's serialized form is pinned.
    #[test]
    fn golden_activate_program() {
        roundtrip(
            ActivateProgram {
                slot: ProgramSlot(1),
                activate: true,
            },
            &[1, 1],
        );
    }

    /// Memory Range Set's serialized form and the extent list's LE form are pinned.
    #[test]
    fn golden_memory_range_set() {
        roundtrip(
            MemoryRangeSet {
                id: RangeSetId(7),
                extent_count: 2,
                file_size: 300,
                out_cap: 65536,
            },
            &[7, 2, 0xac, 0x02, 0x80, 0x80, 0x04],
        );
        let e = Extent {
            start_lba: 0x0102_0304_0506_0708,
            lba_count: 9,
        };
        assert_eq!(
            e.to_le_bytes(),
            [8, 7, 6, 5, 4, 3, 2, 1, 9, 0, 0, 0],
            "extent LE form"
        );
        assert_eq!(Extent::from_le_bytes(e.to_le_bytes()), e);
        let hole = Extent {
            start_lba: Extent::HOLE,
            lba_count: 2,
        };
        assert!(hole.is_hole() && !e.is_hole());
        assert_eq!(
            hole.to_le_bytes(),
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0]
        );
    }

    /// Execute Program's serialized form (including the op enum index) is pinned.
    #[test]
    fn golden_execute_program() {
        roundtrip(
            ExecuteProgram {
                slot: ProgramSlot(2),
                range_set: RangeSetId(300),
                op: ProgramOp::WriteStream,
                offset: 1,
                len: 2,
                param0: 3,
                param1: 4,
                fuel: 1000,
            },
            &[2, 0xac, 0x02, 2, 1, 2, 3, 4, 0xe8, 0x07],
        );
        assert_eq!(ProgramOp::ReadStream.abi(), crate::abi::op::READ_STREAM);
        assert_eq!(ProgramOp::FileJob.abi(), crate::abi::op::FILE_JOB);
        assert_eq!(ProgramOp::WriteStream.abi(), crate::abi::op::WRITE_STREAM);
    }

    /// The program resources' serialized form is pinned.
    #[test]
    fn golden_program_resources() {
        roundtrip(
            ProgramResources {
                slots: 8,
                range_sets: 64,
                max_extents: 65_536,
                max_output_bytes: 16 << 20,
            },
            &[8, 64, 0x80, 0x80, 0x04, 0x80, 0x80, 0x80, 0x08],
        );
    }

    /// Read Output's serialized form is pinned.
    #[test]
    fn golden_read_output() {
        roundtrip(
            ReadOutput {
                range_set: RangeSetId(1),
                offset: 0,
                len: 128,
            },
            &[1, 0, 0x80, 0x01],
        );
    }

    /// Execute results (exit and each fault kind) and run stats have pinned forms.
    #[test]
    fn golden_exec_result() {
        let stats = RunStats {
            instructions: 10,
            fuel_used: 27,
            device_bytes_read: 128,
            bytes_returned: 1,
            memory_insns: 3,
            branch_insns: 2,
            call_insns: 1,
            helper_calls: 1,
            helper_bytes: 128,
            log_messages: 0,
            device_ns: 0,
            device_compute_ns: 0,
            device_nand_ns: 0,
            jit: false,
        };
        roundtrip(
            ExecResult {
                outcome: ExecOutcome::Exited { r0: 5 },
                stats,
            },
            &[0, 5, 10, 27, 0x80, 0x01, 1, 3, 2, 1, 1, 0x80, 0x01, 0],
        );
        roundtrip(ExecOutcome::Faulted(ExecFault::OutOfFuel), &[1, 0]);
        roundtrip(
            ExecOutcome::Faulted(ExecFault::MemoryFault {
                pc: 4,
                addr: 0x1_0000_0040,
                len: 8,
                write: true,
            }),
            &[1, 1, 4, 0xc0, 0x80, 0x80, 0x80, 0x10, 8, 1],
        );
        roundtrip(
            ExecOutcome::Faulted(ExecFault::HelperFault {
                pc: 2,
                helper: 2,
                addr: 0,
                len: 16,
            }),
            &[1, 2, 2, 2, 0, 16],
        );
        roundtrip(
            ExecOutcome::Faulted(ExecFault::CallDepthExceeded { pc: 9 }),
            &[1, 3, 9],
        );
    }
}
