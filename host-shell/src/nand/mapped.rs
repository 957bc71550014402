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
//! [`MappedFile`] is the [`ImageFile`] of an image the store opens itself: a `File` for writes
//! and syncs, its mapping for page reads.
//!
//! Copying out of a mapping, and installing a signal handler, have no safe interface: this is
//! one of the few modules that hold `unsafe` code (docs/ARCHITECTURE.md lists them).
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
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};

use super::file::ImageFile;

/// An image file whose pages are read through a read-only mapping of it (or with `preadv`
/// where it cannot be mapped, as the log says).
#[derive(Debug)]
pub struct MappedFile {
    file: File,
    map: Option<Mapped>,
}

impl MappedFile {
    /// `file`, mapped as long as it is now.
    pub fn new(file: File) -> MappedFile {
        let map = match Mapped::new(&file) {
            Ok(map) => Some(map),
            // An empty file is no image: opening it fails on its length, not here.
            Err(_) if file.metadata().is_ok_and(|m| m.len() == 0) => None,
            Err(e) => {
                eprintln!(
                    "csd device: the image cannot be mapped ({e}): pages are read with preadv"
                );
                None
            }
        };
        MappedFile { file, map }
    }

    /// Whether pages are read through the mapping.
    #[cfg(test)]
    pub(crate) fn is_mapped(&self) -> bool {
        self.map.is_some()
    }
}

impl ImageFile for MappedFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn read_pair_at(&self, first: &mut [u8], second: &mut [u8], offset: u64) -> io::Result<()> {
        match &self.map {
            Some(map) => map.read_pair(offset, first, second).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the page is past the end of the mapped image",
                )
            }),
            None => self.file.read_pair_at(first, second, offset),
        }
    }

    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)?;
        if let Some(map) = &self.map {
            map.written(offset, buf.len());
        }
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn len_bytes(&self) -> io::Result<u64> {
        self.file.len_bytes()
    }
}

/// A file mapped read-only.
#[derive(Debug)]
struct Mapped {
    map: MmapRaw,
    /// Its place in [`RANGES`], cleared when the mapping goes.
    slot: Option<usize>,
}

impl Mapped {
    fn new(file: &File) -> io::Result<Mapped> {
        install_handler();
        let map = MmapOptions::new().map_raw_read_only(file)?;
        let slot = remember(map.as_ptr() as usize, map.len());
        Ok(Mapped { map, slot })
    }

    /// Copies `data.len()` bytes at `offset` into `data` and the bytes right after them into
    /// `spare` (a page's data and its spare area); `None` past the end of the mapping.
    fn read_pair(&self, offset: u64, data: &mut [u8], spare: &mut [u8]) -> Option<()> {
        let at = usize::try_from(offset).ok()?;
        at.checked_add(data.len() + spare.len())
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
    /// 64 KiB window of the mapping, maps that window into the process now, as a read of it
    /// would (one fault, around which the host maps the window's pages that are in its cache).
    /// The windows are the host's, aligned in the address space, not in the file: the mapping
    /// need not start on a 64 KiB boundary. The pages of a NAND block are written in order, so
    /// every page of the block in the window is there by then. Without it, a 1 MiB sequential
    /// read of fresh data spent about 14% of the daemon's time faulting pages in; faulting each
    /// page as it was written cost 4 KiB random writes 8%.
    fn written(&self, offset: u64, len: usize) {
        const WINDOW: usize = 64 << 10;
        let base = self.map.as_ptr() as usize;
        let Some(start) = usize::try_from(offset)
            .ok()
            .and_then(|o| base.checked_add(o))
        else {
            return;
        };
        let end = start.saturating_add(len);
        if end / WINDOW == start / WINDOW {
            return;
        }
        let last = end / WINDOW * WINDOW - 1;
        if (base..base + self.map.len()).contains(&last) {
            // SAFETY: `last` is an address inside the mapping, which lives as long as `self`;
            // the byte is read through a raw pointer (volatile, so the read is made) and
            // dropped.
            unsafe { std::ptr::read_volatile(self.map.as_ptr().add(last - base)) };
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
/// the handler passes the signal on to.
static PREVIOUS: OnceLock<SigAction> = OnceLock::new();

fn install_handler() {
    PREVIOUS.get_or_init(|| {
        // On the alternate signal stack where a thread has one, as Rust's own handler is.
        let action = SigAction::new(
            SigHandler::SigAction(on_sigbus),
            SaFlags::SA_SIGINFO | SaFlags::SA_ONSTACK,
            SigSet::empty(),
        );
        // SAFETY: `on_sigbus` only makes async-signal-safe calls (`write`, `sigaction`,
        // `raise`) and reads atomics. A SIGBUS before `PREVIOUS` is set gives the signal its
        // default action.
        unsafe { signal::sigaction(Signal::SIGBUS, &action) }.unwrap_or_else(|_| default())
    });
}

fn default() -> SigAction {
    SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty())
}

/// For a fault in an image's mapping, says in the log that the image could not be read; then
/// gives `SIGBUS` back to what handled it before (by default, the end of the process). For a
/// fault that re-runs the faulting access, which meets that handler; for a `SIGBUS` another
/// process sent, by raising it again.
extern "C" fn on_sigbus(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let errno = nix::errno::Errno::last_raw();
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
        // Standard error is the device's log (`as_fd` takes no lock).
        let _ = nix::unistd::write(std::io::stderr(), &line.bytes[..line.len]);
    }
    let previous = PREVIOUS.get().copied().unwrap_or_else(default);
    // SAFETY: `previous` is the action the kernel gave back when the handler was installed,
    // or the default.
    let _ = unsafe { signal::sigaction(Signal::SIGBUS, &previous) };
    if !fault {
        // Blocked until this returns, then it goes to `previous`.
        let _ = signal::raise(Signal::SIGBUS);
    }
    nix::errno::Errno::set_raw(errno);
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

    /// A write that finishes a 64 KiB window maps it into the process: reading the windows
    /// back through the same file takes fewer page faults than through a new mapping of it,
    /// which faults each window in.
    #[test]
    fn written_windows_are_mapped_before_they_are_read() {
        use nix::sys::resource::{getrusage, UsageWho};
        let faults = || {
            getrusage(UsageWho::RUSAGE_THREAD)
                .expect("this thread's usage")
                .minor_page_faults()
        };
        let file = tempfile::tempfile().expect("a file");
        file.set_len(1 << 20).expect("a length");
        let mut written = MappedFile::new(file.try_clone().expect("a handle"));
        let page = [7u8; 4160];
        for i in 0..200u64 {
            written.write_all_at(&page, i * 4160).expect("a write");
        }
        // Windows 0..12 are whole (200 pages end at 832,000 bytes).
        let read_windows = |f: &MappedFile| {
            let (mut data, mut spare) = ([0u8; 4096], [0u8; 64]);
            let before = faults();
            for i in 0..(12 * 65536 / 4160) {
                f.read_pair_at(&mut data, &mut spare, i * 4160)
                    .expect("a page");
                assert_eq!((data[0], spare[63]), (7, 7));
            }
            faults() - before
        };
        let after_writes = read_windows(&written);
        let fresh = read_windows(&MappedFile::new(file));
        assert!(fresh > 0, "a new mapping faults its pages in");
        assert!(
            after_writes < fresh,
            "{after_writes} faults, against {fresh} fresh"
        );
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
