//! Kernel runs the tests submit.

use common::program::{ExecuteProgram, ProgramOp, ProgramSlot, RangeSetId};

/// Execute Program of the kernel in slot 0 over range set `range_set`: a file job of no bytes
/// and no parameters (for kernels that loop or return on their own), with `fuel` (0: the
/// device's default).
pub fn slot_0_file_job(range_set: u16, fuel: u64) -> ExecuteProgram {
    ExecuteProgram {
        slot: ProgramSlot(0),
        range_set: RangeSetId(range_set),
        op: ProgramOp::FileJob,
        offset: 0,
        len: 0,
        param0: 0,
        param1: 0,
        fuel,
    }
}
