//! The kernel's address space: four regions at distinct 4 GiB-aligned bases
//! ([`abi::region`]), found by `addr >> 32` and checked on both ends of every access.

use common::abi::{self, region};

/// Bytes of the whole stack: one [`abi::STACK_BYTES`] frame per call level.
pub const STACK_TOTAL: usize = (abi::STACK_BYTES * abi::MAX_CALL_DEPTH) as usize;

const CTX: u64 = region::CTX_BASE >> 32;
const STACK: u64 = region::STACK_BASE >> 32;
const SCRATCH: u64 = region::SCRATCH_BASE >> 32;
const RODATA: u64 = region::RODATA_BASE >> 32;

// The lookup by `addr >> 32` needs every base on a 4 GiB boundary.
const _: () = assert!(
    region::CTX_BASE & 0xffff_ffff == 0
        && region::STACK_BASE & 0xffff_ffff == 0
        && region::SCRATCH_BASE & 0xffff_ffff == 0
        && region::RODATA_BASE & 0xffff_ffff == 0
);

/// Borrowed view of the regions for one slice of execution.
#[derive(Debug)]
pub struct Mem<'a> {
    pub ctx: &'a [u8],
    pub stack: &'a mut [u8],
    /// Lowest live stack offset: the bottom of the innermost call frame. Frames below it are
    /// not yet in use and not addressable.
    pub stack_lo: usize,
    pub scratch: &'a mut [u8],
    pub rodata: &'a [u8],
}

/// Offset within the region and the end of the access, or `None` if `len` overflows.
#[inline(always)]
fn span(addr: u64, len: usize) -> Option<(usize, usize)> {
    // The low half of the address is below 2^32, so it fits a 32-bit `usize`.
    let start = (addr & 0xffff_ffff) as usize;
    Some((start, start.checked_add(len)?))
}

impl Mem<'_> {
    /// The readable bytes at `addr..addr + len`, if all of them lie in one region.
    #[inline(always)]
    pub fn slice(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let (start, end) = span(addr, len)?;
        let buf: &[u8] = match addr >> 32 {
            CTX => self.ctx,
            STACK if start >= self.stack_lo => self.stack,
            SCRATCH => self.scratch,
            RODATA => self.rodata,
            _ => return None,
        };
        buf.get(start..end)
    }

    /// The writable bytes at `addr..addr + len` (stack or scratch only).
    #[inline(always)]
    pub fn slice_mut(&mut self, addr: u64, len: usize) -> Option<&mut [u8]> {
        let (start, end) = span(addr, len)?;
        let buf: &mut [u8] = match addr >> 32 {
            STACK if start >= self.stack_lo => self.stack,
            SCRATCH => self.scratch,
            _ => return None,
        };
        buf.get_mut(start..end)
    }

    #[inline(always)]
    pub fn load<const N: usize>(&self, addr: u64) -> Option<[u8; N]> {
        self.slice(addr, N)?.try_into().ok()
    }

    #[inline(always)]
    pub fn store<const N: usize>(&mut self, addr: u64, bytes: [u8; N]) -> Option<()> {
        self.slice_mut(addr, N)?.copy_from_slice(&bytes);
        Some(())
    }
}
