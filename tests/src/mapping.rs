//! A read-only shared memory mapping of a file, for tests of what a mount's page cache holds.
//!
//! Pages are faulted in with `MADV_POPULATE_READ`, which reports a page the file system refused
//! as an error (`EFAULT`) where touching it would raise SIGBUS and end the test process; the
//! bytes are copied out only after that succeeded.
#![allow(
    unsafe_code,
    reason = "mapping a file and reading the mapped memory is unsafe by nature"
)]

use std::{ffi::c_void, fs::File, ptr::NonNull};

use rustix::{
    io::Errno,
    mm::{self, Advice, MapFlags, ProtFlags},
};

/// `len` bytes of a file mapped `PROT_READ`, `MAP_SHARED`, from offset 0; unmapped on drop.
#[derive(Debug)]
pub struct SharedMap {
    addr: NonNull<c_void>,
    len: usize,
}

impl SharedMap {
    /// Maps the first `len` bytes (more than zero) of `file`. Nothing is read yet.
    pub fn new(file: &File, len: usize) -> Result<SharedMap, Errno> {
        assert!(len > 0, "an empty mapping");
        // SAFETY: a fresh mapping at an address the kernel picks aliases no Rust object; it is
        // read only through `read`, and unmapped exactly once, in `drop`.
        let addr = unsafe {
            mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ,
                MapFlags::SHARED,
                file,
                0,
            )?
        };
        let addr = NonNull::new(addr).ok_or(Errno::INVAL)?;
        Ok(SharedMap { addr, len })
    }

    /// Faults every page in (the file system is asked for those not in the page cache); the
    /// error of a page it refused.
    pub fn populate(&self) -> Result<(), Errno> {
        // SAFETY: the range is exactly this live mapping; the advice only faults pages in.
        unsafe { mm::madvise(self.addr.as_ptr(), self.len, Advice::LinuxPopulateRead) }
    }

    /// The mapped bytes, after [`SharedMap::populate`] succeeded.
    pub fn read(&self) -> Result<Vec<u8>, Errno> {
        self.populate()?;
        let base = self.addr.as_ptr().cast::<u8>();
        // Volatile reads, byte by byte: another process may write the file while we copy,
        // and then the copy may hold old and new bytes but is never undefined behaviour.
        let out = (0..self.len)
            // SAFETY: `i < len` and the mapping is `len` readable bytes, all faulted in.
            .map(|i| unsafe { base.add(i).read_volatile() })
            .collect();
        Ok(out)
    }
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        // SAFETY: this mapping was made by `new` and is unmapped only here.
        let _ = unsafe { mm::munmap(self.addr.as_ptr(), self.len) };
    }
}
