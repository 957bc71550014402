//! How the controller runs kernels: an [`Executor`] takes a run one slice at a time.
//!
//! The firmware has one, the [`Interpreter`]. A device running on a host with a code generator
//! brings another that runs kernels as native code ([`super::Native`]) with the interpreter's
//! exact results, faults and fuel.

use core::fmt;

use super::{Env, ExecError, Program, Step, Vm};

/// Runs verified programs, a slice at a time.
pub trait Executor: fmt::Debug {
    /// A program slot's image was verified: prepare it for running (compile it) now, so its
    /// runs do not wait for that.
    fn prepare(&mut self, program: &Program) {
        let _ = program;
    }

    /// Runs at most `slice` fuel of `vm`'s run of `program`, like [`Vm::resume`].
    fn resume<E: Env>(
        &mut self,
        vm: &mut Vm,
        program: &Program,
        env: &mut E,
        slice: u64,
    ) -> Result<Step, ExecError>;
}

/// The metered interpreter ([`Vm::resume`]).
#[derive(Copy, Clone, Debug, Default)]
pub struct Interpreter;

impl Executor for Interpreter {
    fn resume<E: Env>(
        &mut self,
        vm: &mut Vm,
        program: &Program,
        env: &mut E,
        slice: u64,
    ) -> Result<Step, ExecError> {
        vm.resume(program, env, slice)
    }
}
