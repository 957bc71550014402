//! FUSE over io_uring: the kernel hands requests to the daemon through ring entries, one queue
//! per CPU, instead of through `read` and `writev` on `/dev/fuse`.
//!
//! Linux (6.14 and later, with the `fuse` module's `enable_uring` parameter set) offers it at
//! init; the mount asks for it when this process can set up an io_uring. The kernel puts a
//! request on the queue of the CPU its caller runs on, into an entry: a header and a payload
//! buffer registered with the kernel (see [`abi`]), which comes back to the daemon as the
//! completion of the command that registered it or committed its last reply. Committing a
//! reply also fetches the entry's next request: one system call per request, where
//! `/dev/fuse` takes a `read` and a `writev`.
//!
//! Who serves a request, measured on two cores against `/dev/fuse` (fio, 256 MiB per job):
//! - Threads pinned to the queue's CPU ([`THREADS_PER_QUEUE`] each) serve what arrives
//!   there. The caller and the thread that answers it wake each other on one CPU, where
//!   `/dev/fuse` wakes whichever worker sleeps first, on any CPU: four readers of 4 KiB
//!   blocks made 1.4x the reads per second.
//! - Reads of a stream's readahead (at least 128 KiB) are served by a helper thread pinned to
//!   another CPU: on the caller's CPU they would wait for the caller's copying of the pages it
//!   has (one sequential reader of 1 MiB blocks: 0.65x without helpers). A thread hands such a
//!   request, with its entry, to a helper, and a helper hands any other request back to a
//!   thread of the entry's queue. This works because the kernel sends an entry's next request
//!   to the ring that committed its reply.
//!
//! An entry belongs to the thread whose ring has its command, or that serves its request, or
//! that it was handed to. A thread frees its entries only after closing its ring (the kernel
//! writes an entry only in its ring's thread, within that thread's own calls), so the kernel
//! never holds a buffer that is gone. Forgets and interrupts still arrive on `/dev/fuse`,
//! where fuser's workers serve them (the kernel sends them there).
//!
//! A setxattr answers later (offload keys are set in threads of their own), through the
//! thread's mailbox; meanwhile the thread registers a new entry in place of the one that waits,
//! so a queue never runs out of entries behind kernels that run for seconds.
//!
//! The kernel holds every request until each queue has an entry: [`Queues::start`] waits for
//! every pinned thread's registration, and the mount is undone if one fails.

// The entries' buffers are handed to the kernel by address, and one field of a submission has
// no setter in the io-uring crate (see `server::with_iovec_count`).
#![allow(unsafe_code)]

mod abi;
mod reply;
mod server;

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use fuser::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::{Answer, CsdFs, MAX_IO_BYTES};
use crate::daemon::log;
use server::{Role, Server};

/// Threads per CPU queue: a thread blocked in a long operation (an fsync waiting for the
/// device) leaves the other to serve its CPU's callers.
pub(super) const THREADS_PER_QUEUE: usize = 2;
/// A payload holds the largest request or reply: a write or read of `MAX_IO_BYTES`.
const PAYLOAD_BYTES: usize = MAX_IO_BYTES as usize;

/// Whether this process can set up the kind of io_uring the queues use (a kernel may have
/// io_uring disabled, by `kernel.io_uring_disabled` or a seccomp filter).
pub(super) fn available() -> bool {
    server::new_ring().is_ok()
}

/// The kernel's queues: one per possible CPU, numbered as the CPUs
/// (`/sys/devices/system/cpu/possible`, which the kernel counts as `num_possible_cpus`).
fn possible_cpus() -> io::Result<u16> {
    let possible = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let mut count = 0;
    for range in possible.trim().split(',') {
        let (first, last) = range.split_once('-').unwrap_or((range, range));
        match (first.parse::<u16>(), last.parse::<u16>()) {
            (Ok(first), Ok(last)) if first <= last => count += last - first + 1,
            _ => {
                return Err(io::Error::other(format!(
                    "cannot read the CPUs from {possible:?}"
                )))
            }
        }
    }
    Ok(count)
}

/// A ring entry's buffers, as the kernel was given them.
struct Entry {
    id: u64,
    /// The CPU queue it is registered on.
    qid: u16,
    header: Box<[u8; abi::HEADER_BYTES]>,
    payload: Box<[u8]>,
    /// The two buffers as two `struct iovec`s (address, length; both as wide as a pointer),
    /// for the registration.
    iov: Box<[usize; 4]>,
}

impl Entry {
    fn new(id: u64, qid: u16) -> Entry {
        let mut header = Box::new([0u8; abi::HEADER_BYTES]);
        let mut payload = vec![0u8; PAYLOAD_BYTES].into_boxed_slice();
        let iov = Box::new([
            header.as_mut_ptr() as usize,
            header.len(),
            payload.as_mut_ptr() as usize,
            payload.len(),
        ]);
        Entry {
            id,
            qid,
            header,
            payload,
            iov,
        }
    }
}

/// What comes to a thread other than its ring's completions.
enum Mail {
    /// The later answer to the request of an entry the thread holds.
    Answer(u64, Answer<()>),
    /// An entry with a request for this thread to serve.
    Serve(Entry),
}

/// A thread's mailbox, and the eventfd its ring waits on.
struct Mailbox {
    mail: Mutex<Vec<Mail>>,
    bell: EventFd,
    /// The connection has ended: the thread stops, whatever its entries.
    stop: AtomicBool,
}

impl Mailbox {
    fn new() -> io::Result<Arc<Mailbox>> {
        Ok(Arc::new(Mailbox {
            mail: Mutex::default(),
            bell: EventFd::from_flags(EfdFlags::EFD_CLOEXEC).map_err(io::Error::from)?,
            stop: AtomicBool::new(false),
        }))
    }

    fn wake(&self) {
        if let Err(e) = self.bell.write(1) {
            log(format_args!("could not wake a FUSE ring thread: {e}"));
        }
    }

    fn post(&self, mail: Mail) {
        self.mail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(mail);
        self.wake();
    }

    fn take(&self) -> Vec<Mail> {
        std::mem::take(&mut *self.mail.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A later answer not given yet: dropped unanswered (its operation's thread panicked, or none
/// could be started), it answers `EIO`, as fuser does for a reply dropped unsent.
struct Unanswered {
    mailbox: Option<Arc<Mailbox>>,
    id: u64,
}

impl Unanswered {
    fn answer(mut self, answer: Answer<()>) {
        if let Some(mailbox) = self.mailbox.take() {
            mailbox.post(Mail::Answer(self.id, answer));
        }
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(mailbox) = self.mailbox.take() {
            mailbox.post(Mail::Answer(self.id, Err(Errno::EIO)));
        }
    }
}

/// Every thread's mailbox, to hand entries to, and the ids of new entries.
struct Directory {
    /// The pinned threads of each queue.
    pinned: Vec<Vec<Arc<Mailbox>>>,
    /// A helper per CPU.
    helpers: Vec<Arc<Mailbox>>,
    turn: AtomicUsize,
    next_entry: AtomicU64,
}

impl Directory {
    /// A pinned thread of queue `qid`, in turn.
    fn pinned(&self, qid: u16) -> Option<&Arc<Mailbox>> {
        let of = self.pinned.get(usize::from(qid))?;
        of.get(self.turn.fetch_add(1, Ordering::Relaxed) % of.len().max(1))
    }

    /// The helper for large reads from queue `qid`: the next CPU's.
    fn helper(&self, qid: u16) -> Option<&Arc<Mailbox>> {
        let n = self.helpers.len().max(1);
        self.helpers.get((usize::from(qid) + 1) % n)
    }

    fn new_entry(&self, qid: u16) -> Entry {
        Entry::new(self.next_entry.fetch_add(1, Ordering::Relaxed), qid)
    }
}

/// How a pinned thread's registration went.
enum Registered {
    Yes,
    /// The kernel refused the entry; it then takes requests through `/dev/fuse`.
    Refused(io::Error),
    /// The thread could not register at all.
    Failed(io::Error),
}

/// The threads serving the queues; dropping them stops them (after the connection ended,
/// or to undo the mount).
pub(super) struct Queues {
    threads: Vec<JoinHandle<()>>,
    mailboxes: Vec<Arc<Mailbox>>,
    cpus: u16,
}

impl std::fmt::Display for Queues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} queues of {THREADS_PER_QUEUE} threads, {} read helpers",
            self.cpus, self.cpus
        )
    }
}

impl std::fmt::Debug for Queues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queues")
            .field("threads", &self.threads.len())
            .finish()
    }
}

impl Queues {
    /// Starts [`THREADS_PER_QUEUE`] pinned threads for each CPU's queue of the connection
    /// behind `fuse` (its `/dev/fuse`) and a helper per CPU, and waits until each pinned
    /// thread has registered its entry. `Ok(None)`: the kernel refused an entry, and takes
    /// requests through `/dev/fuse` instead. The kernel holds every request until each queue
    /// has an entry, so any other error leaves the mount unusable: the caller undoes it.
    pub(super) fn start(fuse: BorrowedFd<'_>, fs: &Arc<CsdFs>) -> io::Result<Option<Queues>> {
        let cpus = possible_cpus()?;
        let mut pinned = Vec::new();
        for _ in 0..cpus {
            pinned.push(
                (0..THREADS_PER_QUEUE)
                    .map(|_| Mailbox::new())
                    .collect::<io::Result<Vec<_>>>()?,
            );
        }
        let directory = Arc::new(Directory {
            pinned,
            helpers: (0..cpus)
                .map(|_| Mailbox::new())
                .collect::<io::Result<Vec<_>>>()?,
            turn: AtomicUsize::new(0),
            next_entry: AtomicU64::new(0),
        });
        // Everything that can fail before any thread starts.
        let (registered, registrations) = mpsc::channel();
        let mut servers = Vec::new();
        for (cpu, mailboxes) in directory.pinned.iter().enumerate() {
            for (t, mailbox) in mailboxes.iter().enumerate() {
                let role = Role::Pinned(cpu as u16, registered.clone());
                servers.push((format!("csd-ring-{cpu}.{t}"), role, Arc::clone(mailbox)));
            }
        }
        for (cpu, mailbox) in directory.helpers.iter().enumerate() {
            let role = Role::Helper(cpu as u16);
            servers.push((format!("csd-ring-read-{cpu}"), role, Arc::clone(mailbox)));
        }
        drop(registered);
        let mut ready = Vec::new();
        for (name, role, mailbox) in servers {
            let server = Server::new(fuse.try_clone_to_owned()?, role, fs, mailbox, &directory);
            ready.push((name, server));
        }
        let mut queues = Queues {
            threads: Vec::new(),
            mailboxes: Vec::new(),
            cpus,
        };
        for (name, server) in ready {
            queues.mailboxes.push(server.mailbox());
            let thread = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    if let Err(e) = server.serve() {
                        log(format_args!("FUSE ring thread {name}: {e}"));
                    }
                })?;
            queues.threads.push(thread);
        }
        let mut reports = 0;
        for registration in registrations {
            reports += 1;
            match registration {
                Registered::Yes => {}
                Registered::Refused(e) => {
                    log(format_args!(
                        "the kernel refused a FUSE ring entry ({e}): requests through /dev/fuse"
                    ));
                    return Ok(None);
                }
                Registered::Failed(e) => return Err(e),
            }
        }
        if reports < usize::from(cpus) * THREADS_PER_QUEUE {
            return Err(io::Error::other(
                "a FUSE ring thread stopped before registering",
            ));
        }
        Ok(Some(queues))
    }
}

impl Drop for Queues {
    fn drop(&mut self) {
        for m in &self.mailboxes {
            m.stop.store(true, Ordering::Release);
            m.wake();
        }
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                log("a FUSE ring thread panicked");
            }
        }
    }
}
