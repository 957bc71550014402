//! One thread of the queues: its io_uring, the entries it holds, and its loop.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};

use fuser::Errno;
use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::{abi, reply, Directory, Entry, Mail, Mailbox, Registered, Unanswered};
use crate::daemon::log;
use crate::fuse::CsdFs;

/// `enum fuse_uring_cmd`.
const FUSE_IO_URING_CMD_REGISTER: u32 = 1;
const FUSE_IO_URING_CMD_COMMIT_AND_FETCH: u32 = 2;

/// The `user_data` of the read on the mailbox's eventfd (entries use their id).
const BELL: u64 = u64::MAX;

pub(super) fn new_ring() -> io::Result<IoUring<squeue::Entry128, cqueue::Entry>> {
    // 128-byte entries (the FUSE command rides in the second half); the kernel's work for
    // this thread runs only when it waits for completions, not as interrupts of its work.
    IoUring::<squeue::Entry128, cqueue::Entry>::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(64)
}

/// What a thread serves.
pub(super) enum Role {
    /// The requests of this CPU's queue, on this CPU; it says how its registration went.
    Pinned(u16, mpsc::Sender<Registered>),
    /// Large reads from another CPU's queue, on this CPU.
    Helper(u16),
}

pub(super) struct Server {
    fuse: OwnedFd,
    cpu: u16,
    pinned: bool,
    report: Option<mpsc::Sender<Registered>>,
    fs: Arc<CsdFs>,
    mailbox: Arc<Mailbox>,
    directory: Arc<Directory>,
}

impl Server {
    pub(super) fn new(
        fuse: OwnedFd,
        role: Role,
        fs: &Arc<CsdFs>,
        mailbox: Arc<Mailbox>,
        directory: &Arc<Directory>,
    ) -> Server {
        let (cpu, pinned, report) = match role {
            Role::Pinned(cpu, report) => (cpu, true, Some(report)),
            Role::Helper(cpu) => (cpu, false, None),
        };
        Server {
            fuse,
            cpu,
            pinned,
            report,
            fs: Arc::clone(fs),
            mailbox,
            directory: Arc::clone(directory),
        }
    }

    pub(super) fn mailbox(&self) -> Arc<Mailbox> {
        Arc::clone(&self.mailbox)
    }

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

    /// Where the request in `entry` is served: here (`None`), or by the thread it goes to.
    fn elsewhere(&self, entry: &Entry) -> Option<&Arc<Mailbox>> {
        let large = abi::is_large_read(&entry.header[..]);
        match (self.pinned, large) {
            (true, true) => self.directory.helper(entry.qid),
            (false, false) => self.directory.pinned(entry.qid),
            _ => None,
        }
    }

    /// Serves until the connection ends (the mailbox's stop).
    pub(super) fn serve(mut self) -> io::Result<()> {
        pin_to_cpu(self.cpu);
        let mut report = self.report.take();
        let registered = self.run(&mut report);
        if let (Some(report), Err(e)) = (report, &registered) {
            // Before its registration: the caller undoes the mount.
            let _ = report.send(Registered::Failed(io::Error::new(e.kind(), e.to_string())));
        }
        registered
    }

    /// Registers a pinned thread's entry and says how that went (`report`, taken then), then
    /// serves.
    fn run(&self, report: &mut Option<mpsc::Sender<Registered>>) -> io::Result<()> {
        // Dropped in reverse order: the ring (closing it ends the kernel's use of the
        // entries) before the entries' buffers.
        let mut held: HashMap<u64, Entry> = HashMap::new();
        let mut bell = [0u8; 8];
        let mut ring = new_ring()?;
        let read_bell: squeue::Entry128 = opcode::Read::new(
            types::Fd(self.mailbox.bell.as_fd().as_raw_fd()),
            bell.as_mut_ptr(),
            8,
        )
        .build()
        .user_data(BELL)
        .into();
        let mut queued = vec![read_bell.clone()];
        // Entries whose command the kernel has: a pinned thread keeps one, at least.
        let mut in_kernel = 0;
        if self.pinned {
            in_kernel += 1;
            let e = self.directory.new_entry(self.cpu);
            queued.push(self.command(FUSE_IO_URING_CMD_REGISTER, &e, 0));
            held.insert(e.id, e);
        }
        loop {
            if !queued.is_empty() {
                for sqe in queued.drain(..) {
                    // SAFETY: every command names a held entry's `iov` and buffers, or
                    // `bell`, all of which outlive the ring (declared before it); the kernel
                    // uses them until the command completes, and the thread hands an entry
                    // on or touches it only after that.
                    unsafe { ring.submission().push(&sqe) }
                        .map_err(|_| io::Error::other("the ring's submission queue is full"))?;
                }
                // Each reply goes at once, not after the rest of the completions waiting.
                ring.submit()?;
            }
            if let Some(sender) = report.take() {
                // Without waiting, only the registration's own failure can complete: the
                // kernel's requests for this thread come in its waits.
                let refused = ring
                    .completion()
                    .find(|c| c.user_data() != BELL && c.result() < 0)
                    .map(|c| io::Error::from_raw_os_error(-c.result()));
                let stop = refused.is_some();
                let _ = sender.send(refused.map_or(Registered::Yes, Registered::Refused));
                if stop {
                    return Ok(());
                }
            }
            let next = ring.completion().next();
            let Some((id, result)) = next.map(|c| (c.user_data(), c.result())) else {
                match ring.submit_and_wait(1) {
                    Ok(_) => continue,
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                    Err(e) => return Err(e),
                }
            };
            if id == BELL {
                if self.mailbox.stop.load(Ordering::Acquire) {
                    return Ok(());
                }
                for mail in self.mailbox.take() {
                    let commands = self.mail(&mut held, mail, in_kernel);
                    in_kernel += commands.len();
                    queued.extend(commands);
                }
                queued.push(read_bell.clone());
                continue;
            }
            in_kernel = in_kernel.saturating_sub(1);
            if result < 0 {
                // The connection ended (ENOTCONN): the entry is the kernel's no more.
                held.remove(&id);
                if result != -libc::ENOTCONN {
                    let e = io::Error::from_raw_os_error(-result);
                    log(format_args!("FUSE ring entry {id}: {e}"));
                }
                continue;
            }
            let commands = self.request(&mut held, id, in_kernel);
            in_kernel += commands.len();
            queued.extend(commands);
        }
    }

    /// Takes in a mail: an entry to serve, or a later answer to commit.
    fn mail(
        &self,
        held: &mut HashMap<u64, Entry>,
        mail: Mail,
        in_kernel: usize,
    ) -> Vec<squeue::Entry128> {
        match mail {
            Mail::Serve(e) => {
                let id = e.id;
                held.insert(id, e);
                self.request(held, id, in_kernel)
            }
            Mail::Answer(id, answer) => match held.get_mut(&id) {
                Some(e) => {
                    reply::finish(&mut e.header[..], answer.map(|()| 0));
                    let commit = abi::commit_id(&e.header[..]);
                    vec![self.command(FUSE_IO_URING_CMD_COMMIT_AND_FETCH, e, commit)]
                }
                // Torn down meanwhile.
                None => Vec::new(),
            },
        }
    }

    /// Serves the request in held entry `id`, or hands the entry on; returns what to submit:
    /// the commit of its reply, or, when it answers later and the kernel has no other entry
    /// of this thread (`in_kernel`), a new entry's registration.
    fn request(
        &self,
        held: &mut HashMap<u64, Entry>,
        id: u64,
        in_kernel: usize,
    ) -> Vec<squeue::Entry128> {
        let Some(e) = held.get_mut(&id) else {
            return Vec::new();
        };
        if let Some(to) = self.elsewhere(e) {
            if let Some(e) = held.remove(&id) {
                to.post(Mail::Serve(e));
            }
            return Vec::new();
        }
        let later = || {
            let unanswered = Unanswered {
                mailbox: Some(Arc::clone(&self.mailbox)),
                id,
            };
            move |answer| unanswered.answer(answer)
        };
        let (header, payload) = (&mut e.header[..], &mut e.payload[..]);
        let served = catch_unwind(AssertUnwindSafe(|| {
            abi::serve(&self.fs, header, payload, later)
        }));
        match served {
            Ok(abi::Outcome::Replied) => {}
            Ok(abi::Outcome::Later) if in_kernel > 0 || !self.pinned => return Vec::new(),
            Ok(abi::Outcome::Later) => {
                let spare = self.directory.new_entry(e.qid);
                let register = self.command(FUSE_IO_URING_CMD_REGISTER, &spare, 0);
                held.insert(spare.id, spare);
                return vec![register];
            }
            // A bug; the request fails, and the mount goes on.
            Err(_) => {
                log(format_args!(
                    "a FUSE request panicked (entry {id}): it fails with EIO"
                ));
                reply::finish(&mut e.header[..], Err(Errno::EIO));
            }
        }
        let commit = abi::commit_id(&e.header[..]);
        vec![self.command(FUSE_IO_URING_CMD_COMMIT_AND_FETCH, e, commit)]
    }
}

/// Sets the submission's `len` (its bytes 24..28, `io_uring_sqe.len`), which FUSE reads as
/// the number of iovecs at `addr`: the io-uring crate's `UringCmd80` has no setter for it.
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
