//! The program commands: the Computational Programs command set 1.0 (command set identifier
//! 04h) and the Subsystem Local Memory command set 1.0 (03h), with this project's own fields
//! where its commands carry more than theirs.
//!
//! The specifications' text could not be read where this was written. The admin opcodes
//! (85h, 88h, 89h) are those of libnvme's `types.h`. The I/O opcodes and every field layout
//! follow two computational-storage emulators that agree with each other (CEMU's
//! `hw/femu/nvme-def.h` and an SPDK computational-programs target's `nvme_cpcs_spec.h`) and
//! are **not verified** against the specifications. docs/ARCHITECTURE.md lists which fields
//! are whose.
//!
//! The device has three namespaces in the sense of these command sets: 1, the zoned namespace
//! (NVM and ZNS commands); 2, its compute namespace (Execute Program); 3, its memory
//! namespace, where range set `r`'s output buffer is the bytes from `r << 32`.

use super::{get_u32, Sqe, SqeError};
use crate::{
    command::Command,
    program::{
        ActivateProgram, ExecuteProgram, LoadProgram, MemoryRangeSet, ProgramOp, ProgramSlot,
        RangeSetId, ReadOutput,
    },
};

/// The compute namespace: Execute Program goes there.
pub const COMPUTE_NSID: u32 = 2;
/// The memory namespace: range sets' output buffers, read with Memory Read.
pub const MEMORY_NSID: u32 = 3;
/// Execute Program (I/O, compute namespace; unverified).
pub const EXECUTE_PROGRAM: u8 = 0x01;
/// Memory Read (I/O, memory namespace; unverified).
pub const READ_OUTPUT: u8 = 0x02;
/// Load Program's Program Type for an eBPF image (this project's value).
pub const PTYPE_EBPF: u8 = 0xC0;
/// Bytes of Execute Program's parameter data at the start of its host memory, what the
/// entry has no room for: the kernel's offset and length (u64 little-endian each), then
/// why it runs (u32: 0 a read stream, 1 a file job, 2 a write stream) and four reserved
/// bytes. A write stream's input follows.
pub const EXECUTE_PARAMETER_BYTES: usize = 24;

/// Load Program: CDW10 bits 15:0 the program index, bits 23:16 the program type, bit 24
/// Select (0: load); CDW11 the program's size; CDW14 the bytes in this command; CDW15
/// their offset in the program.
pub(super) fn load_program(sqe: &mut Sqe, load: &LoadProgram) {
    sqe.opcode = super::opcode::LOAD_PROGRAM;
    sqe.set_cdw(10, u32::from(load.slot.0) | u32::from(PTYPE_EBPF) << 16);
    sqe.set_cdw(11, load.total_len);
    sqe.set_cdw(14, load.chunk_len);
    sqe.set_cdw(15, load.offset);
}

pub(super) fn load_program_of(sqe: &Sqe) -> Result<Command, SqeError> {
    let cdw10 = sqe.cdw(10);
    // Only loads (Select 0) of eBPF programs; program indices fit a byte here.
    if cdw10 >> 16 & 0x1ff != u32::from(PTYPE_EBPF) || cdw10 & 0xff00 != 0 {
        return Err(SqeError::Field);
    }
    Ok(Command::LoadProgram(LoadProgram {
        slot: ProgramSlot(cdw10 as u8),
        offset: sqe.cdw(15),
        total_len: sqe.cdw(11),
        chunk_len: sqe.cdw(14),
    }))
}

/// Program Activation Management: CDW10 bits 15:0 the program index, bits 19:16 Select
/// (1: activate, 0: deactivate).
pub(super) fn activate(sqe: &mut Sqe, act: &ActivateProgram) {
    sqe.opcode = super::opcode::PROGRAM_ACTIVATION;
    sqe.set_cdw(10, u32::from(act.slot.0) | u32::from(act.activate) << 16);
}

pub(super) fn activate_of(sqe: &Sqe) -> Result<Command, SqeError> {
    let cdw10 = sqe.cdw(10);
    let activate = match cdw10 >> 16 & 0xf {
        0 => false,
        1 => true,
        _ => return Err(SqeError::Field),
    };
    if cdw10 & 0xff00 != 0 {
        return Err(SqeError::Field);
    }
    Ok(Command::ActivateProgram(ActivateProgram {
        slot: ProgramSlot(cdw10 as u8),
        activate,
    }))
}

/// Memory Range Set Management: CDW10 bits 3:0 Select (0: create), bits 31:16 the range
/// set's identifier. This project's own: CDW11 the number of extents (the file's extents
/// follow as data), CDW12 and CDW13 the file's size, CDW14 the output buffer's capacity.
pub(super) fn memory_range_set(sqe: &mut Sqe, set: &MemoryRangeSet) {
    sqe.opcode = super::opcode::MEMORY_RANGE_SET;
    sqe.set_cdw(10, u32::from(set.id.0) << 16);
    sqe.set_cdw(11, set.extent_count);
    sqe.set_cdw(12, set.file_size as u32);
    sqe.set_cdw(13, (set.file_size >> 32) as u32);
    sqe.set_cdw(14, set.out_cap);
}

pub(super) fn memory_range_set_of(sqe: &Sqe) -> Result<Command, SqeError> {
    if sqe.cdw(10) & 0xf != 0 {
        return Err(SqeError::Field);
    }
    Ok(Command::MemoryRangeSet(MemoryRangeSet {
        id: RangeSetId((sqe.cdw(10) >> 16) as u16),
        extent_count: sqe.cdw(11),
        file_size: u64::from(sqe.cdw(12)) | u64::from(sqe.cdw(13)) << 32,
        out_cap: sqe.cdw(14),
    }))
}

const fn op_value(op: ProgramOp) -> u32 {
    match op {
        ProgramOp::ReadStream => 0,
        ProgramOp::FileJob => 1,
        ProgramOp::WriteStream => 2,
    }
}

/// Execute Program on the compute namespace: CDW2 bits 15:0 the program index, bits
/// 31:16 the range set; CDW3 the number of inline ranges (0: the range set); CDW10 and
/// CDW11 the first program parameter, CDW12 and CDW13 the second. This project's own:
/// CDW14 and CDW15 the fuel (0: the device's default), and the parameter data
/// ([`EXECUTE_PARAMETER_BYTES`], see [`execute_parameters`]). (The emulators put the
/// data length in CDW4; it stays zero here, as the transport says how long the data is,
/// and a Linux host cannot set CDW4 and CDW5 in a passthrough command.)
pub(super) fn execute(sqe: &mut Sqe, exec: &ExecuteProgram) {
    sqe.opcode = EXECUTE_PROGRAM;
    sqe.nsid = COMPUTE_NSID;
    sqe.cdw2 = u32::from(exec.slot.0) | u32::from(exec.range_set.0) << 16;
    sqe.set_cdw(10, exec.param0 as u32);
    sqe.set_cdw(11, (exec.param0 >> 32) as u32);
    sqe.set_cdw(12, exec.param1 as u32);
    sqe.set_cdw(13, (exec.param1 >> 32) as u32);
    sqe.set_cdw(14, exec.fuel as u32);
    sqe.set_cdw(15, (exec.fuel >> 32) as u32);
}

/// The parameter data of `exec`: its offset, length and why it runs.
pub fn execute_parameters(exec: &ExecuteProgram) -> [u8; EXECUTE_PARAMETER_BYTES] {
    let mut b = [0u8; EXECUTE_PARAMETER_BYTES];
    b[..8].copy_from_slice(&exec.offset.to_le_bytes());
    b[8..16].copy_from_slice(&exec.len.to_le_bytes());
    b[16..20].copy_from_slice(&op_value(exec.op).to_le_bytes());
    b
}

/// Execute Program in `sqe`, with its offset and length from the parameter data
/// `parameters`.
pub fn execute_with(
    sqe: &Sqe,
    parameters: &[u8; EXECUTE_PARAMETER_BYTES],
) -> Result<ExecuteProgram, SqeError> {
    let op = get_u32(parameters, 16);
    let reserved = get_u32(parameters, 20);
    let op = match (op, reserved) {
        (0, 0) => ProgramOp::ReadStream,
        (1, 0) => ProgramOp::FileJob,
        (2, 0) => ProgramOp::WriteStream,
        _ => return Err(SqeError::Field),
    };
    // Inline ranges are not supported: the run names a range set.
    if sqe.cdw3 != 0 || sqe.cdw2 & 0xff00 != 0 {
        return Err(SqeError::Field);
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&parameters[at..at + 8]);
        u64::from_le_bytes(b)
    };
    Ok(ExecuteProgram {
        slot: ProgramSlot(sqe.cdw2 as u8),
        range_set: RangeSetId((sqe.cdw2 >> 16) as u16),
        op,
        offset: u64_at(0),
        len: u64_at(8),
        param0: u64::from(sqe.cdw(10)) | u64::from(sqe.cdw(11)) << 32,
        param1: u64::from(sqe.cdw(12)) | u64::from(sqe.cdw(13)) << 32,
        fuel: u64::from(sqe.cdw(14)) | u64::from(sqe.cdw(15)) << 32,
    })
}

/// Memory Read on the memory namespace: CDW10 and CDW11 the starting byte (range set `r`'s
/// output buffer starts at `r << 32`), CDW12 the length in bytes.
pub(super) fn read_output(sqe: &mut Sqe, read: &ReadOutput) {
    sqe.opcode = READ_OUTPUT;
    sqe.nsid = MEMORY_NSID;
    sqe.set_cdw(10, read.offset);
    sqe.set_cdw(11, u32::from(read.range_set.0));
    sqe.set_cdw(12, read.len);
}

pub(super) fn read_output_of(sqe: &Sqe) -> Result<Command, SqeError> {
    let set = u16::try_from(sqe.cdw(11)).map_err(|_| SqeError::Field)?;
    Ok(Command::ReadOutput(ReadOutput {
        range_set: RangeSetId(set),
        offset: sqe.cdw(10),
        len: sqe.cdw(12),
    }))
}
