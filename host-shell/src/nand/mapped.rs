//! A device image mapped into memory, for reading its pages.
//!
//! Through the mapping, reading a page is one copy, from the host's page cache into the
//! device's buffer. With `pread` it was two (into a read buffer, then into the device's) and a
//! system call for each page or chunk of pages. Measured on 1 MiB sequential reads through the
//! mount (fio, 256 MiB, one job), the daemon spent 467 µs of CPU per MiB reading with `pread`
//! and a read-ahead thread, and 308 µs with the mapping.
//!
//! Writes still go through `pwrite` and the store's durability rules are unchanged: Linux has
//! one page cache per file, so the mapping sees every write made before a read.
//!
//! The mapping brings one failure `pread` did not have. A page the host cannot read (its disk
//! fails, or another process truncates the image: the device's `flock` is only advisory) is a
//! `SIGBUS` at the reading instruction, not an error code. The handler installed here writes
//! what happened to the device's log and lets the signal kill the process: the device stops as
//! on a power loss, and everything it synced is on the image.
//!
//! This module and the JIT's are the only places in the host that hold `unsafe` code: mapping a
//! file, and installing a signal handler, have no safe interface.
#![allow(unsafe_code)]

use std::{
    fs::File,
    io,
    sync::{
        atomic::{AtomicUsize, Ordering},
        OnceLock,
    },
};

use memmap2::{MmapOptions, MmapRaw};

/// An image file mapped read-only.
#[derive(Debug)]
pub struct Mapped {
    map: MmapRaw,
    /// Its place in [`RANGES`], cleared when the mapping goes.
    slot: Option<usize>,
}

impl Mapped {
    /// Maps all of `file` for reading.
    pub fn new(file: &File) -> io::Result<Mapped> {
        install_handler();
        let map = MmapOptions::new().map_raw_read_only(file)?;
        let slot = remember(map.as_ptr() as usize, map.len());
        Ok(Mapped { map, slot })
    }

    /// Copies `data.len()` bytes at `offset` into `data` and the bytes right after them into
    /// `spare` (a page's data and its spare area); `None` past the end of the mapping.
    pub fn read_pair(&self, offset: u64, data: &mut [u8], spare: &mut [u8]) -> Option<()> {
        let at = usize::try_from(offset).ok()?;
        let mid = at.checked_add(data.len())?;
        mid.checked_add(spare.len())
            .filter(|&end| end <= self.map.len())?;
        // SAFETY: `at..end` is inside the mapping, which lives as long as `self`, and the
        // destinations are the caller's own buffers, so the ranges do not overlap. The bytes
        // are copied through raw pointers, never referenced: the file under them changes (the
        // store `pwrite`s pages, other processes may write the file), and a copy racing such a
        // write gets some mix of old and new bytes, which the firmware's page checksum
        // catches, not undefined behaviour. (The store takes `&mut self` to write, so its own
        // writes never race its reads.) A page the host cannot supply is the SIGBUS the module
        // docs describe.
        unsafe {
            let from = self.map.as_ptr().add(at);
            std::ptr::copy_nonoverlapping(from, data.as_mut_ptr(), data.len());
            std::ptr::copy_nonoverlapping(from.add(data.len()), spare.as_mut_ptr(), spare.len());
        }
        Some(())
    }

    /// Called after each write of `len` bytes at `offset`: when the write reaches the end of a
    /// 64 KiB window of the file, maps that window into the process now, as a read of it would
    /// (one fault, around which the host maps the window's pages that are in its cache). The
    /// pages of a NAND block are written in order, so every page of the block in the window
    /// is there by then. Without it, a 1 MiB sequential read of fresh data spent about 14% of
    /// the daemon's time faulting pages in; faulting each page as it was written cost 4 KiB
    /// random writes 8%.
    pub fn written(&self, offset: u64, len: usize) {
        const WINDOW: u64 = 64 << 10;
        let end = offset.saturating_add(len as u64);
        if end / WINDOW == offset / WINDOW {
            return;
        }
        let Ok(last) = usize::try_from(end / WINDOW * WINDOW - 1) else {
            return;
        };
        if last < self.map.len() {
            // SAFETY: `last` is inside the mapping, which lives as long as `self`; the byte is
            // read through a raw pointer (volatile, so the read is made) and dropped.
            unsafe { std::ptr::read_volatile(self.map.as_ptr().add(last)) };
        }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            RANGES[slot].1.store(0, Ordering::Release);
            RANGES[slot].0.store(0, Ordering::Release);
        }
    }
}

/// The address ranges of the mappings (start, end; 0 when unused) that the `SIGBUS` handler
/// reports as an image's. A signal handler may read atomics, not a lock's data.
static RANGES: [(AtomicUsize, AtomicUsize); 64] =
    [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; 64];

/// Notes a mapping in a free slot of [`RANGES`] (with every slot taken, a `SIGBUS` in it is
/// passed on without a line in the log).
fn remember(start: usize, len: usize) -> Option<usize> {
    let slot = RANGES.iter().position(|(s, _)| {
        s.compare_exchange(0, start, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    })?;
    RANGES[slot].1.store(start + len, Ordering::Release);
    Some(slot)
}

fn in_an_image(addr: usize) -> bool {
    RANGES.iter().any(|(s, e)| {
        let (start, end) = (s.load(Ordering::Acquire), e.load(Ordering::Acquire));
        start != 0 && (start..end).contains(&addr)
    })
}

/// What `SIGBUS` did before [`install_handler`] (Rust's own handler, in a Rust program): what
/// the handler passes the signal on to. Set before the handler is installed.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

fn install_handler() {
    PREVIOUS.get_or_init(|| {
        // SAFETY: a zeroed `sigaction` is a valid value of the C struct (no handler, no
        // flags, an empty mask); the kernel fills `previous` in, and `action` is filled in
        // below before use.
        let (mut previous, mut action): (libc::sigaction, libc::sigaction) =
            unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
        // SAFETY: reads the current action into a live struct, changing nothing.
        unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut previous) };
        action.sa_sigaction = on_sigbus as *const () as usize;
        // On the alternate signal stack where a thread has one, as Rust's own handler is.
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: `action` is a live, filled-in struct; `on_sigbus` only makes
        // async-signal-safe calls (`write`, `sigaction`, `raise`) and reads atomics. It runs
        // only once `PREVIOUS` is set: this closure returns before `get_or_init` stores it,
        // but a SIGBUS in between finds `PREVIOUS` empty and gives the signal its default.
        unsafe { libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) };
        previous
    });
}

/// For a fault in an image's mapping, says in the log that the image could not be read; then
/// gives `SIGBUS` back to what handled it before (by default, the end of the process). For a
/// fault that re-runs the faulting access, which meets that handler; for a `SIGBUS` another
/// process sent, by raising it again.
extern "C" fn on_sigbus(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: `errno` is this thread's; it is put back before returning, so the interrupted
    // code never sees what `write` left in it.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: with `SA_SIGINFO` the kernel passes a valid `siginfo_t`; its address field is
    // the fault's for a fault (`si_code` > 0) and meaningless otherwise.
    let (fault, addr) = unsafe { ((*info).si_code > 0, (*info).si_addr() as usize) };
    if fault && in_an_image(addr) {
        let mut line = Line::default();
        line.push(b"csd device: SIGBUS reading the image at address ");
        line.push_hex(addr);
        line.push(
            b": the host could not read the image file (its disk failed, or another process \
              truncated it); the device stops, and what it synced is on the image\n",
        );
        // SAFETY: writes bytes of a live buffer to standard error (the device's log).
        unsafe { libc::write(2, line.bytes.as_ptr().cast(), line.len) };
    }
    let default = {
        // SAFETY: as in `install_handler`: a zeroed `sigaction` is `SIG_DFL`, no flags.
        let mut d: libc::sigaction = unsafe { std::mem::zeroed() };
        d.sa_sigaction = libc::SIG_DFL;
        d
    };
    let previous = PREVIOUS.get().unwrap_or(&default);
    // SAFETY: `previous` is the action the kernel gave back before the handler was installed
    // (or the default), a live struct.
    unsafe { libc::sigaction(libc::SIGBUS, previous, std::ptr::null_mut()) };
    if !fault {
        // SAFETY: raising a signal is async-signal-safe; it is blocked until this returns,
        // then goes to `previous`.
        unsafe { libc::raise(libc::SIGBUS) };
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// A line built without allocating (a signal handler may not).
struct Line {
    bytes: [u8; 256],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Line {
            bytes: [0; 256],
            len: 0,
        }
    }
}

impl Line {
    fn push(&mut self, text: &[u8]) {
        let n = text.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&text[..n]);
        self.len += n;
    }

    fn push_hex(&mut self, value: usize) {
        const NIBBLES: usize = usize::BITS as usize / 4;
        let mut digits = [0u8; 2 + NIBBLES];
        digits[..2].copy_from_slice(b"0x");
        for (i, d) in digits[2..].iter_mut().enumerate() {
            let nibble = (value >> (4 * (NIBBLES - 1 - i))) & 0xF;
            *d = b"0123456789abcdef"[nibble];
        }
        self.push(&digits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{io::Write, os::unix::process::ExitStatusExt, process::Command};

    /// Reads see the file as written since it was mapped, and stop at its end.
    #[test]
    fn reads_see_writes_made_after_mapping() {
        use std::os::unix::fs::FileExt;
        let mut file = tempfile::tempfile().expect("a file");
        file.write_all(&[1u8; 8192]).expect("write");
        let mapped = Mapped::new(&file).expect("a mapping");
        file.write_all_at(&[9u8; 100], 4000).expect("write");
        let (mut data, mut spare) = ([0u8; 96], [0u8; 8]);
        mapped
            .read_pair(4000, &mut data, &mut spare)
            .expect("in range");
        assert_eq!((data, spare), ([9u8; 96], [9, 9, 9, 9, 1, 1, 1, 1]));
        assert!(mapped.read_pair(8100, &mut data, &mut spare).is_none());
        assert!(mapped.read_pair(u64::MAX, &mut data, &mut spare).is_none());
    }

    /// An image truncated behind its mapping kills the process with `SIGBUS`, and the log says
    /// why. (Run in a child process: the child is this test binary, running the test again.)
    #[test]
    #[cfg_attr(miri, ignore)]
    fn a_truncated_image_is_reported_then_kills() {
        const CHILD: &str = "CSD_MAPPED_TEST_CHILD";
        if let Some(path) = std::env::var_os(CHILD) {
            // No core dump of the child.
            rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
                .expect("not dumpable");
            let file = File::open(&path).expect("open");
            let mapped = Mapped::new(&file).expect("a mapping");
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(0))
                .expect("truncate");
            let (mut data, mut spare) = ([0u8; 16], [0u8; 16]);
            let read = mapped.read_pair(8192, &mut data, &mut spare);
            unreachable!("a read of a truncated page returned: {read:?} {data:?}");
        }
        let dir = tempfile::tempdir().expect("a directory");
        let path = dir.path().join("image");
        std::fs::write(&path, vec![5u8; 3 * 4096]).expect("write");
        let out = Command::new(std::env::current_exe().expect("this test binary"))
            .args([
                "--exact",
                "nand::mapped::tests::a_truncated_image_is_reported_then_kills",
            ])
            .args(["--nocapture", "--test-threads=1"])
            .env(CHILD, &path)
            .output()
            .expect("the child ran");
        let log = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.signal(), Some(libc::SIGBUS), "{log}");
        assert!(
            log.contains("csd device: SIGBUS reading the image at address 0x")
                && log.contains("another process truncated it"),
            "{log}"
        );
    }

    #[test]
    fn lines_render_addresses() {
        let mut line = Line::default();
        line.push(b"at ");
        line.push_hex(0x7f00_dead_beef);
        assert_eq!(&line.bytes[..line.len], b"at 0x00007f00deadbeef");
    }
}
