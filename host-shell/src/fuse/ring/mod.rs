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
//! - Reads of a stream's readahead (at least 128 KiB) are served by helper threads on any
//!   CPU: on the caller's CPU they would wait for the caller's copying of the pages it has
//!   (one sequential reader of 1 MiB blocks: 0.7x over pinned threads alone). A thread hands
//!   such a request, with its entry, to a helper, and a helper hands any other request back
//!   to a thread of the entry's queue.
//!
//! An entry belongs to the thread whose ring has its command (the kernel sends the entry's
//! next request to the ring that committed it), or that serves its request, or that it was
//! handed to. A thread frees its entries only after closing its ring, so the kernel never
//! holds a buffer that is gone. Forgets and interrupts still arrive on `/dev/fuse`, where
//! fuser's workers serve them (the kernel sends them there). A setxattr answers later
//! (offload keys are set in threads of their own), through the thread's mailbox.

#![allow(unsafe_code)]

mod abi;

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::{Answer, CsdFs, MAX_IO_BYTES};
use crate::daemon::log;

/// Threads per CPU queue: a thread blocked in a long operation (an fsync waiting for the
/// device) leaves the other to serve its CPU's callers.
pub(super) const THREADS_PER_QUEUE: usize = 2;
/// Entries each pinned thread registers.
const ENTRIES: usize = 1;
/// A payload holds the largest request or reply: a write or read of `MAX_IO_BYTES`.
const PAYLOAD_BYTES: usize = MAX_IO_BYTES as usize;

/// `enum fuse_uring_cmd`.
const FUSE_IO_URING_CMD_REGISTER: u32 = 1;
const FUSE_IO_URING_CMD_COMMIT_AND_FETCH: u32 = 2;

/// The `user_data` of the read on the mailbox's eventfd (entries use their id).
const BELL: u64 = u64::MAX;

/// Whether this process can set up the kind of io_uring the queues use (a kernel may have
/// io_uring disabled, by `kernel.io_uring_disabled` or a seccomp filter).
pub(super) fn available() -> bool {
    new_ring().is_ok()
}

fn new_ring() -> io::Result<IoUring<squeue::Entry128, cqueue::Entry>> {
    // 128-byte entries (the FUSE command rides in the second half); the kernel's work for
    // this thread runs only when it waits for completions, not as interrupts of its work.
    IoUring::<squeue::Entry128, cqueue::Entry>::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(64)
}

/// The kernel's queues: one per possible CPU (`/sys/devices/system/cpu/possible`).
fn queues() -> io::Result<u16> {
    let possible = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let last = possible
        .trim()
        .split([',', '-'])
        .filter_map(|n| n.parse::<u16>().ok())
        .max()
        .ok_or_else(|| io::Error::other(format!("cannot read the CPUs from {possible:?}")))?;
    Ok(last + 1)
}

/// A ring entry's buffers, as the kernel was given them.
struct Entry {
    id: u64,
    /// The CPU queue it is registered on.
    qid: u16,
    header: Box<[u8; abi::HEADER_BYTES]>,
    payload: Box<[u8]>,
    /// The two buffers as `struct iovec`s (address, length), for the registration.
    iov: Box<[usize; 4]>,
}

impl Entry {
    fn new(id: u64, qid: u16) -> Entry {
        let header = Box::new([0u8; abi::HEADER_BYTES]);
        let payload = vec![0u8; PAYLOAD_BYTES].into_boxed_slice();
        let iov = Box::new([
            header.as_ptr() as usize,
            header.len(),
            payload.as_ptr() as usize,
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

    fn ring(&self) {
        if let Err(e) = self.bell.write(1) {
            log(format_args!("could not wake a FUSE ring thread: {e}"));
        }
    }

    fn post(&self, mail: Mail) {
        self.mail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(mail);
        self.ring();
    }

    fn take(&self) -> Vec<Mail> {
        std::mem::take(&mut *self.mail.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Every thread's mailbox, to hand entries to.
struct Threads {
    /// The pinned threads of each queue.
    pinned: Vec<Vec<Arc<Mailbox>>>,
    helpers: Vec<Arc<Mailbox>>,
    next: AtomicUsize,
}

impl Threads {
    fn pick<'a>(&self, of: &'a [Arc<Mailbox>]) -> Option<&'a Arc<Mailbox>> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        of.get(n % of.len().max(1))
    }
}

/// The threads serving the queues.
pub(super) struct Ring {
    threads: Vec<JoinHandle<()>>,
    mailboxes: Vec<Arc<Mailbox>>,
    queues: u16,
}

impl std::fmt::Display for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} queues of {THREADS_PER_QUEUE} threads, {} read helpers",
            self.queues, self.queues
        )
    }
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("threads", &self.threads.len())
            .finish()
    }
}

impl Ring {
    /// Starts [`THREADS_PER_QUEUE`] pinned threads for each CPU's queue of the connection
    /// behind `fuse` (its `/dev/fuse`) and a helper per CPU. The kernel holds every request
    /// until each queue has an entry: an error here leaves the mount unusable, and the caller
    /// unmounts it.
    pub(super) fn start(fuse: BorrowedFd<'_>, fs: &Arc<CsdFs>) -> io::Result<Ring> {
        let queues = queues()?;
        let mut pinned = Vec::new();
        for _ in 0..queues {
            pinned.push(
                (0..THREADS_PER_QUEUE)
                    .map(|_| Mailbox::new())
                    .collect::<io::Result<Vec<_>>>()?,
            );
        }
        let helpers = (0..queues)
            .map(|_| Mailbox::new())
            .collect::<io::Result<Vec<_>>>()?;
        let threads = Arc::new(Threads {
            pinned,
            helpers,
            next: AtomicUsize::new(0),
        });
        let mut ring = Ring {
            threads: Vec::new(),
            mailboxes: Vec::new(),
            queues,
        };
        let mut next_id = 0;
        let mut roles = Vec::new();
        for (qid, mailboxes) in threads.pinned.iter().enumerate() {
            for (t, mailbox) in mailboxes.iter().enumerate() {
                let qid = qid as u16;
                let entries = (0..ENTRIES)
                    .map(|_| {
                        next_id += 1;
                        Entry::new(next_id, qid)
                    })
                    .collect();
                roles.push((
                    format!("csd-ring-{qid}.{t}"),
                    Role::Pinned(qid),
                    entries,
                    mailbox,
                ));
            }
        }
        for (i, mailbox) in threads.helpers.iter().enumerate() {
            let helper = Role::Helper(i as u16);
            roles.push((format!("csd-ring-read-{i}"), helper, Vec::new(), mailbox));
        }
        for (name, role, entries, mailbox) in roles {
            let server = Server {
                fuse: fuse.try_clone_to_owned()?,
                role,
                fs: Arc::clone(fs),
                mailbox: Arc::clone(mailbox),
                threads: Arc::clone(&threads),
            };
            let spawned = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    if let Err(e) = server.serve(entries) {
                        log(format_args!("FUSE ring thread {name}: {e}"));
                    }
                });
            ring.mailboxes.push(Arc::clone(mailbox));
            match spawned {
                Ok(thread) => ring.threads.push(thread),
                Err(e) => {
                    ring.stop();
                    return Err(e);
                }
            }
        }
        Ok(ring)
    }

    /// Stops the threads once the connection has ended (each frees its entries after its
    /// ring is closed) and waits for them.
    pub(super) fn stop(self) {
        for m in &self.mailboxes {
            m.stop.store(true, Ordering::Release);
            m.ring();
        }
        for t in self.threads {
            if t.join().is_err() {
                log("a FUSE ring thread panicked");
            }
        }
    }
}

/// What a thread serves.
#[derive(Clone, Copy)]
enum Role {
    /// The requests of this CPU's queue, on this CPU.
    Pinned(u16),
    /// Large reads from the other CPUs' queues, on this CPU.
    Helper(u16),
}

/// One thread.
struct Server {
    fuse: OwnedFd,
    role: Role,
    fs: Arc<CsdFs>,
    mailbox: Arc<Mailbox>,
    threads: Arc<Threads>,
}

impl Server {
    /// A FUSE command on `entry` (`struct fuse_uring_cmd_req` in the entry's second half:
    /// flags, commit id, queue id).
    fn command(&self, op: u32, entry: &Entry, commit_id: u64) -> squeue::Entry128 {
        let mut cmd = [0u8; 80];
        cmd[8..16].copy_from_slice(&commit_id.to_le_bytes());
        cmd[16..18].copy_from_slice(&entry.qid.to_le_bytes());
        let sqe = opcode::UringCmd80::new(types::Fd(self.fuse.as_raw_fd()), op)
            .cmd(cmd)
            .addr(Some(entry.iov.as_ptr() as u64))
            .build()
            .user_data(entry.id);
        with_iovec_count(sqe, 2)
    }

    /// Where the request in `entry` is served: here, or by the thread it goes to.
    fn elsewhere(&self, entry: &Entry) -> Option<&Arc<Mailbox>> {
        let large = abi::is_large_read(&entry.header[..]);
        match self.role {
            // The helper of another CPU than the caller's.
            Role::Pinned(cpu) if large => {
                let helpers = &self.threads.helpers;
                helpers.get((usize::from(cpu) + 1) % helpers.len().max(1))
            }
            Role::Helper(_) if !large => self
                .threads
                .pinned
                .get(usize::from(entry.qid))
                .and_then(|of| self.threads.pick(of)),
            _ => None,
        }
    }

    fn serve(&self, entries: Vec<Entry>) -> io::Result<()> {
        match self.role {
            Role::Pinned(cpu) | Role::Helper(cpu) => pin_to_cpu(cpu),
        }
        // Dropped in reverse order: the ring (closing it ends the kernel's use of the
        // entries) before the entries' buffers.
        let mut held: HashMap<u64, Entry> = HashMap::new();
        let mut bell = [0u8; 8];
        let mut ring = new_ring()?;
        let mut queued = Vec::new();
        for e in entries {
            queued.push(self.command(FUSE_IO_URING_CMD_REGISTER, &e, 0));
            held.insert(e.id, e);
        }
        let read_bell = opcode::Read::new(
            types::Fd(self.mailbox.bell.as_fd().as_raw_fd()),
            bell.as_mut_ptr(),
            8,
        )
        .build()
        .user_data(BELL);
        queued.push(read_bell.clone().into());
        loop {
            for sqe in queued.drain(..) {
                // SAFETY: every command names a held entry's `iov` and buffers, or `bell`,
                // all of which outlive the ring (declared before it); the kernel uses them
                // until the command completes, and the thread hands an entry on or touches
                // it only after that.
                unsafe { ring.submission().push(&sqe) }
                    .map_err(|_| io::Error::other("the ring's submission queue is full"))?;
            }
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
            let done: Vec<(u64, i32)> = ring
                .completion()
                .map(|c| (c.user_data(), c.result()))
                .collect();
            for (id, result) in done {
                if id == BELL {
                    if self.mailbox.stop.load(Ordering::Acquire) {
                        return Ok(());
                    }
                    for mail in self.mailbox.take() {
                        match mail {
                            Mail::Answer(id, answer) => {
                                if let Some(e) = held.get_mut(&id) {
                                    abi::finish(&mut e.header[..], answer.map(|()| 0));
                                    let commit = abi::commit_id(&e.header[..]);
                                    queued.push(self.command(
                                        FUSE_IO_URING_CMD_COMMIT_AND_FETCH,
                                        e,
                                        commit,
                                    ));
                                }
                            }
                            Mail::Serve(e) => {
                                let id = e.id;
                                held.insert(id, e);
                                queued.extend(self.request(&mut held, id));
                            }
                        }
                    }
                    queued.push(read_bell.clone().into());
                } else if result < 0 {
                    // The connection ended (ENOTCONN), or the kernel refused the entry (a
                    // refused registration makes it fall back to /dev/fuse): the entry is
                    // the kernel's no more.
                    held.remove(&id);
                    if result != -libc::ENOTCONN {
                        let e = io::Error::from_raw_os_error(-result);
                        log(format_args!("FUSE ring entry {id}: {e}"));
                    }
                } else {
                    queued.extend(self.request(&mut held, id));
                }
            }
        }
    }

    /// Serves the request in held entry `id`, or hands the entry on; returns the commit to
    /// submit, if it was answered here.
    fn request(&self, held: &mut HashMap<u64, Entry>, id: u64) -> Option<squeue::Entry128> {
        let e = held.get(&id)?;
        if let Some(to) = self.elsewhere(e) {
            to.post(Mail::Serve(held.remove(&id)?));
            return None;
        }
        let e = held.get_mut(&id)?;
        let mailbox = Arc::clone(&self.mailbox);
        let later = move |answer| mailbox.post(Mail::Answer(id, answer));
        match abi::serve(&self.fs, &mut e.header[..], &mut e.payload[..], later) {
            abi::Outcome::Replied => {
                let commit = abi::commit_id(&e.header[..]);
                Some(self.command(FUSE_IO_URING_CMD_COMMIT_AND_FETCH, e, commit))
            }
            abi::Outcome::Later => None,
        }
    }
}

/// Sets the entry's `len` (the SQE's bytes 24..28), which FUSE reads as the number of
/// iovecs at `addr`: the io-uring crate's `UringCmd80` has no setter for it.
fn with_iovec_count(sqe: squeue::Entry128, count: u32) -> squeue::Entry128 {
    // SAFETY: `squeue::Entry128` is `#[repr(C)]`: a 64-byte `io_uring_sqe` then 64 bytes of
    // command, 128 bytes with no padding, and every bit pattern is a valid value of it.
    let mut bytes: [u8; 128] = unsafe { std::mem::transmute(sqe) };
    bytes[24..28].copy_from_slice(&count.to_le_bytes());
    // SAFETY: as above.
    unsafe { std::mem::transmute::<[u8; 128], squeue::Entry128>(bytes) }
}

/// Runs the calling thread on CPU `cpu` only, where the kernel queues its callers' requests.
/// A CPU that is not online cannot be chosen: the thread then runs anywhere, and that queue
/// gets no requests until the CPU comes online.
fn pin_to_cpu(cpu: u16) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu.into()).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}
