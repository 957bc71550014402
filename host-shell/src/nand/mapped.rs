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
        Once, OnceLock,
    },
};

use memmap2::Mmap;

/// An image file mapped read-only.
#[derive(Debug)]
pub struct Mapped {
    map: Mmap,
    /// Its place in [`RANGES`], cleared when the mapping goes.
    slot: Option<usize>,
}

impl Mapped {
    /// Maps all of `file` for reading.
    pub fn new(file: &File) -> io::Result<Mapped> {
        install_handler();
        // SAFETY: `Mmap` hands out the file's bytes as a `&[u8]`, which is sound only while
        // nothing changes them. Here they do change: the store writes pages with `pwrite`.
        // Every read of the mapping is a copy into the caller's buffer (`read`), made by the
        // thread that holds the store, which is also the only writer, so no write overlaps a
        // read of this process. A change by another process (which the device's lock keeps
        // away, unless that process ignores it) can only change the copied bytes, which the
        // firmware checks; a truncation is the SIGBUS the module docs describe.
        let map = unsafe { Mmap::map(file)? };
        let slot = remember(map.as_ptr() as usize, map.len());
        Ok(Mapped { map, slot })
    }

    /// Copies `data.len()` bytes at `offset` into `data` and the bytes right after them into
    /// `spare` (a page's data and its spare area); `None` past the end of the mapping.
    pub fn read_pair(&self, offset: u64, data: &mut [u8], spare: &mut [u8]) -> Option<()> {
        let at = usize::try_from(offset).ok()?;
        let mid = at.checked_add(data.len())?;
        let end = mid.checked_add(spare.len())?;
        data.copy_from_slice(self.map.get(at..mid)?);
        spare.copy_from_slice(self.map.get(mid..end)?);
        Some(())
    }
}

impl Mapped {
    /// Called after each write of `len` bytes at `offset`: when the write finishes a 64 KiB
    /// window of the file, maps that window into the process now, as a read of it would (one
    /// fault, around which the host maps the window's pages). A NAND block's pages are written
    /// in order, so the window is whole. Without it, a 1 MiB sequential read of fresh data
    /// spent about 14% of the daemon's time faulting pages in; faulting each page as it was
    /// written cost 4 KiB random writes 8%.
    pub fn written(&self, offset: u64, len: usize) {
        const WINDOW: u64 = 64 << 10;
        let end = offset.saturating_add(len as u64);
        if end / WINDOW != offset / WINDOW {
            let last = usize::try_from(end / WINDOW * WINDOW - 1).unwrap_or(usize::MAX);
            std::hint::black_box(self.map.get(last).copied());
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
/// reported as an unknown one).
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

/// What `SIGBUS` did before [`install_handler`]: what the handler gives the signal back to.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

fn install_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: a zeroed `sigaction` is a valid value of the C struct (no handler, no
        // flags, an empty mask), filled in below before use.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_sigbus as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        // SAFETY: as above, for the old action the kernel writes into.
        let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: both pointers are to live structs; `on_sigbus` only makes async-signal-safe
        // calls (`write`, `sigaction`) and reads atomics.
        let installed = unsafe { libc::sigaction(libc::SIGBUS, &action, &mut previous) } == 0;
        if installed {
            let _ = PREVIOUS.set(previous);
        }
    });
}

/// Says in the log that an image could not be read, then gives `SIGBUS` back to what handled
/// it before (by default, the end of the process): on return the faulting read runs again
/// and meets that.
extern "C" fn on_sigbus(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: with `SA_SIGINFO` the kernel passes a valid `siginfo_t`, whose address field
    // `SIGBUS` fills.
    let addr = unsafe { (*info).si_addr() } as usize;
    if in_an_image(addr) {
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
    if let Some(previous) = PREVIOUS.get() {
        // SAFETY: `previous` is the action the kernel gave back when the handler was
        // installed.
        unsafe { libc::sigaction(libc::SIGBUS, previous, std::ptr::null_mut()) };
    }
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
        let mut digits = [0u8; 18];
        digits[..2].copy_from_slice(b"0x");
        for (i, d) in digits[2..].iter_mut().enumerate() {
            let nibble = (value >> (4 * (15 - i))) & 0xF;
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
    fn a_truncated_image_is_reported_then_kills() {
        const CHILD: &str = "CSD_MAPPED_TEST_CHILD";
        if let Some(path) = std::env::var_os(CHILD) {
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
