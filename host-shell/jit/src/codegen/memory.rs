//! Memory accesses: the checks that keep every load and store inside the run's regions, and
//! atomic read-modify-writes.

use cranelift_codegen::ir::{condcodes::IntCC, BlockArg, InstBuilder, Value};
use firmware::ebpf::{atomic, Insn, Op, FRAME_BYTES};

use super::{host_mem, kernel_mem, Classes, Gen, I32, I64};
use crate::native::{exit, field};

/// An access the current basic block has checked: `len` bytes at `r[base] + off`.
#[derive(Copy, Clone, Debug)]
pub(super) struct Checked {
    /// The register (writing it forgets the entry).
    pub(super) base: u8,
    off: i64,
    len: i64,
    /// Checked as writable.
    write: bool,
    /// The kernel address.
    addr: Value,
    /// Whether it fell in scratch (readable and writable).
    in_scratch: Value,
    /// The host address.
    ptr: Value,
}

/// The index of an access of `len` bytes in the per-width scratch bounds.
fn width(len: i64) -> i32 {
    match len {
        1 => 0,
        2 => 1,
        4 => 2,
        _ => 3,
    }
}

impl Gen<'_, '_> {
    /// The host address of a checked access of `len` bytes at `r[base] + off`; branches to a
    /// fault exit when the access is not wholly inside a region (writable, if `write`).
    ///
    /// Scratch, where kernels keep their buffers, is checked first with one compare against a
    /// bound that stays fixed for the run; anything else goes through the region tables. An
    /// access to an address the block has checked already (the same register, unchanged since,
    /// the same offset and width) needs no second check, except a write after a read: it is
    /// known to fit if the read fell in scratch, and takes the full write check otherwise.
    pub(super) fn access(
        &mut self,
        pc: usize,
        after: Classes,
        base: u8,
        off: i32,
        len: i64,
        write: bool,
    ) -> Value {
        let off = i64::from(off);
        if base == 10 && off >= -(FRAME_BYTES as i64) && off + len <= 0 {
            // Inside the live frame below r10, which the verifier keeps read-only: always
            // in bounds, nothing to check.
            let frame = self.b.ins().load(I64, host_mem(), self.state, field::FRAME);
            return self.b.ins().iadd_imm_s(frame, off);
        }
        if self.unchecked {
            // A loop's copy whose guard proved the access inside scratch.
            let addr = self.reg(base);
            let addr = self.b.ins().iadd_imm_s(addr, off);
            let bias = self.fixed_field(field::SCRATCH_BIAS);
            return self.b.ins().iadd(addr, bias);
        }
        let base = super::reg_index(base);
        let seen = self
            .checked
            .iter()
            .find(|c| (c.base, c.off, c.len) == (base, off, len))
            .copied();
        if let Some(seen) = seen {
            if !write || seen.write {
                return seen.ptr;
            }
            let ptr = self.checked_ptr(pc, after, seen.in_scratch, seen.ptr, seen.addr, len, true);
            self.remember(Checked {
                write: true,
                ptr,
                ..seen
            });
            return ptr;
        }
        let reg = self.reg(base);
        let addr = self.b.ins().iadd_imm_s(reg, off);
        let (host, in_scratch, limit) = self.scratch_offset(addr, len);
        let fits = self
            .b
            .ins()
            .icmp(IntCC::UnsignedLessThan, in_scratch, limit);
        let ptr = self.checked_ptr(pc, after, fits, host, addr, len, write);
        self.remember(Checked {
            base,
            off,
            len,
            write,
            addr,
            in_scratch: fits,
            ptr,
        });
        ptr
    }

    /// For an access of `len` bytes at kernel address `addr`: the host address if it is in
    /// scratch, its offset there, and the bound it fits below: in scratch exactly when the
    /// offset is below the bound (both modulo 2^64, as `addr - SCRATCH_BASE` would be).
    pub(super) fn scratch_offset(&mut self, addr: Value, len: i64) -> (Value, Value, Value) {
        let bias = self.fixed_field(field::SCRATCH_BIAS);
        let host = self.b.ins().iadd(addr, bias);
        let scratch = self.fixed_field(field::SCRATCH);
        let offset = self.b.ins().isub(host, scratch);
        let limit = self.fixed_field(field::SCRATCH_LIMIT + 8 * width(len));
        (host, offset, limit)
    }

    /// `host` where `in_scratch` holds, else the region tables' check of `addr` (cold).
    #[allow(clippy::too_many_arguments)]
    fn checked_ptr(
        &mut self,
        pc: usize,
        after: Classes,
        in_scratch: Value,
        host: Value,
        addr: Value,
        len: i64,
        write: bool,
    ) -> Value {
        let slow = self.b.create_block();
        let join = self.b.create_block();
        self.b.append_block_param(join, I64);
        self.b.set_cold_block(slow);
        self.b
            .ins()
            .brif(in_scratch, join, &[BlockArg::Value(host)], slow, &[]);
        self.b.switch_to_block(slow);
        let ptr = self.table_access(pc, after, addr, len, write);
        self.b.ins().jump(join, &[BlockArg::Value(ptr)]);
        self.b.switch_to_block(join);
        self.b.block_params(join)[0]
    }

    fn remember(&mut self, checked: Checked) {
        let key = (checked.base, checked.off, checked.len);
        self.checked.retain(|c| (c.base, c.off, c.len) != key);
        self.checked.push(checked);
    }

    /// The general check through the region tables, indexed by `addr >> 32`.
    fn table_access(
        &mut self,
        pc: usize,
        after: Classes,
        addr: Value,
        len: i64,
        write: bool,
    ) -> Value {
        let hi = self.b.ins().ushr_imm_u(addr, 32);
        let last = self.b.ins().iconst(I64, 5);
        let index = self.b.ins().umin(hi, last);
        let scaled = self.b.ins().imul_imm_s(index, field::REGION_BYTES);
        let entry = self.b.ins().iadd(self.state, scaled);
        let table = if write { field::WRITE } else { field::READ };
        let base_ptr = self
            .b
            .ins()
            .load(I64, host_mem(), entry, table + field::REGION_BASE);
        let lo = self
            .b
            .ins()
            .load(I64, host_mem(), entry, table + field::REGION_LO);
        let end = self
            .b
            .ins()
            .load(I64, host_mem(), entry, table + field::REGION_END);
        let low = self.b.ins().ireduce(I32, addr);
        let within = self.b.ins().uextend(I64, low);
        let above = self
            .b
            .ins()
            .icmp(IntCC::UnsignedGreaterThanOrEqual, within, lo);
        let stop = self.b.ins().iadd_imm_s(within, len);
        let below = self.b.ins().icmp(IntCC::UnsignedLessThanOrEqual, stop, end);
        let ok = self.b.ins().band(above, below);
        let cont = self.b.create_block();
        let fault = self.b.create_block();
        self.b.set_cold_block(cont);
        self.b.set_cold_block(fault);
        self.b.ins().brif(ok, cont, &[], fault, &[]);

        self.b.switch_to_block(fault);
        self.b
            .ins()
            .store(host_mem(), addr, self.state, field::FAULT_ADDR);
        let len_v = self.b.ins().iconst(I64, len);
        self.b
            .ins()
            .store(host_mem(), len_v, self.state, field::FAULT_LEN);
        let write_v = self.b.ins().iconst(I64, i64::from(write));
        self.b
            .ins()
            .store(host_mem(), write_v, self.state, field::FAULT_WRITE);
        self.refund(after);
        self.leave(exit::MEMORY, pc, 0);

        self.b.switch_to_block(cont);
        self.b.ins().iadd(base_ptr, within)
    }

    /// Gives back what the block charged for instructions that did not run.
    pub(super) fn refund(&mut self, after: Classes) {
        self.add_var(self.budget, after.insns);
        self.add_var(self.classes, -after.packed());
    }

    /// An atomic read-modify-write (a run is single-threaded, so a plain load and store).
    pub(super) fn atomic(&mut self, pc: usize, after: Classes, i: Insn) {
        let wide = i.op == Op::Atomic64;
        let len = if wide { 8 } else { 4 };
        // Writable implies readable; a fault is reported as a write, as the interpreter does.
        let ptr = self.access(pc, after, i.dst, i.off, len, true);
        let f = kernel_mem();
        let old = if wide {
            self.b.ins().load(I64, f, ptr, 0)
        } else {
            self.b.ins().uload32(f, ptr, 0)
        };
        let src = self.reg(i.src);
        let code = i.imm as i32;
        let store = |g: &mut Self, v: Value| {
            if wide {
                g.b.ins().store(f, v, ptr, 0);
            } else {
                g.b.ins().istore32(f, v, ptr, 0);
            }
        };
        let new = match code & !atomic::FETCH {
            atomic::ADD => self.b.ins().iadd(old, src),
            atomic::OR => self.b.ins().bor(old, src),
            atomic::AND => self.b.ins().band(old, src),
            atomic::XOR => self.b.ins().bxor(old, src),
            0xe0 => src,
            _ => {
                // cmpxchg: compare with r0, write src if equal; r0 gets the old value.
                let r0 = self.reg(0);
                let expected = if wide {
                    r0
                } else {
                    let low = self.b.ins().ireduce(I32, r0);
                    self.b.ins().uextend(I64, low)
                };
                let equal = self.b.ins().icmp(IntCC::Equal, old, expected);
                let new = self.b.ins().select(equal, src, old);
                store(self, new);
                self.set(0, old);
                return;
            }
        };
        store(self, new);
        if code & atomic::FETCH != 0 {
            self.set(i.src, old);
        }
    }
}
