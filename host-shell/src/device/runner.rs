//! The controller CPU of the emulated device, and the queue pairs that feed it.
//!
//! Hosts put submissions on their queue pairs. The controller serves the submission queues
//! round-robin, one command per queue per round, so no queue starves another. It has no thread
//! of its own for regular commands: the host thread that submits takes the controller if it is
//! idle and serves every queued command (its own and others'), so an uncontended command
//! crosses no thread at all, and a host that finds the controller busy leaves its command to
//! whoever holds it (flat combining). The device thread advances background work (a running
//! kernel) by one bounded step at a time, releasing the controller between steps, so a long
//! kernel never stalls regular I/O by more than one step. When there is nothing to do it
//! sleeps until a host starts background work or stops the device.
//!
//! Holding the controller is a mutex; who must serve next is one flag, `pending`: every
//! submitter sets it after queueing and then tries the mutex; every holder clears it before
//! serving and looks at it again after letting go. A command queued while the controller is
//! held is therefore always served, by the holder or by its submitter.

use std::{
    collections::HashMap,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Condvar, Mutex, MutexGuard, TryLockError,
    },
    thread::JoinHandle,
};

use common::command::{CommandId, Completion, Submission};

use super::queue::{Closed, Done, Entry, QueuePair};

/// What the controller drives: the firmware's controller in-process, or a board over a link.
pub trait Backend: Send + 'static {
    /// Serves one submission from submission queue `sqid`, moving data through the entry's
    /// buffer. Returns its completion, or `None` when the command goes on in the background
    /// and [`Backend::poll`] will report it.
    fn submit(&mut self, sqid: u16, entry: &mut Entry) -> Option<Completion>;

    /// Advances background work by one bounded step; returns a command that finished, with
    /// the queue it came from.
    fn poll(&mut self) -> Option<(u16, Completion)>;

    /// Whether background work is pending.
    fn busy(&self) -> bool;
}

/// The controller's state: the backend, and the buffers of commands in the background.
struct Core<B> {
    backend: B,
    /// Buffers of commands that go on in the background, returned with their completion.
    parked: HashMap<(u16, CommandId), Vec<u8>>,
    /// The queue the next round starts at.
    next: usize,
}

struct Shared<B> {
    queues: Vec<QueuePair>,
    /// `None` once the device stopped or its controller panicked.
    core: Mutex<Option<Core<B>>>,
    /// Set by a submitter after queueing: some queued command may not have been seen yet.
    pending: AtomicBool,
    /// Wakes the device thread (background work started, or stop).
    doorbell: Mutex<u64>,
    bell: Condvar,
    stop: AtomicBool,
}

/// What a host's [`Queue`] needs of the device, whatever its backend.
trait Port: Send + Sync {
    fn pair(&self, qid: u16) -> &QueuePair;
    /// Sees that every queued command is served (see the module's comment).
    fn kick(&self);
}

impl<B: Backend> Shared<B> {
    fn ring(&self) {
        let mut rings = self.doorbell.lock().unwrap_or_else(|p| p.into_inner());
        *rings = rings.wrapping_add(1);
        self.bell.notify_all();
    }

    fn close_all(&self) {
        for q in &self.queues {
            q.close();
        }
    }

    /// Serves queued commands with the controller held, round by round until the queues are
    /// empty. A panic of the controller stops the device: every waiting host fails.
    fn drain(&self, core: &mut Option<Core<B>>) {
        let Some(c) = core.as_mut() else {
            return;
        };
        let served = catch_unwind(AssertUnwindSafe(|| loop {
            let n = self.queues.len();
            let mut any = false;
            for i in 0..n {
                let qid = (c.next + i) % n;
                let Some(mut entry) = self.queues[qid].take() else {
                    continue;
                };
                any = true;
                let sqid = qid as u16;
                match c.backend.submit(sqid, &mut entry) {
                    Some(completion) => self.queues[qid].post(Done {
                        completion,
                        buffer: entry.buffer,
                    }),
                    None => {
                        c.parked.insert((sqid, entry.submission.cid), entry.buffer);
                    }
                }
            }
            c.next = (c.next + 1) % n;
            if !any {
                break;
            }
        }));
        if served.is_err() {
            *core = None;
            self.close_all();
        }
    }

    /// One bounded step of background work, its completion posted if it finished.
    fn step(&self, core: &mut Option<Core<B>>) {
        let Some(c) = core.as_mut() else {
            return;
        };
        match catch_unwind(AssertUnwindSafe(|| c.backend.poll())) {
            Ok(Some((sqid, completion))) => {
                let buffer = c.parked.remove(&(sqid, completion.cid)).unwrap_or_default();
                if let Some(q) = self.queues.get(usize::from(sqid)) {
                    q.post(Done { completion, buffer });
                }
            }
            Ok(None) => {}
            Err(_) => {
                *core = None;
                self.close_all();
            }
        }
    }

    fn lock_core(&self) -> MutexGuard<'_, Option<Core<B>>> {
        // A panic of the controller is caught inside the lock and leaves `None` behind.
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn busy(core: &Option<Core<B>>) -> bool {
        core.as_ref().is_some_and(|c| c.backend.busy())
    }
}

impl<B: Backend> Port for Shared<B> {
    fn pair(&self, qid: u16) -> &QueuePair {
        &self.queues[usize::from(qid)]
    }

    fn kick(&self) {
        self.pending.store(true, Ordering::SeqCst);
        while self.pending.load(Ordering::SeqCst) {
            let mut core = match self.core.try_lock() {
                Ok(core) => core,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                // The holder looks at `pending` after letting go.
                Err(TryLockError::WouldBlock) => return,
            };
            self.pending.store(false, Ordering::SeqCst);
            self.drain(&mut core);
            let busy = Self::busy(&core);
            drop(core);
            if busy {
                self.ring();
            }
        }
    }
}

/// A running device thread and its queue pairs.
pub struct Runner<B: Backend> {
    shared: Arc<Shared<B>>,
    thread: Option<JoinHandle<()>>,
}

impl<B: Backend> std::fmt::Debug for Runner<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("queues", &self.shared.queues.len())
            .finish_non_exhaustive()
    }
}

/// A host's handle on one queue pair.
#[derive(Clone)]
pub struct Queue {
    port: Arc<dyn Port>,
    qid: u16,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("qid", &self.qid).finish()
    }
}

impl<B: Backend> Runner<B> {
    /// Starts the device over `backend` with `queues` queue pairs of `depth` entries.
    pub fn start(backend: B, queues: u16, depth: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            queues: (0..queues.max(1)).map(|_| QueuePair::new(depth)).collect(),
            core: Mutex::new(Some(Core {
                backend,
                parked: HashMap::new(),
                next: 0,
            })),
            pending: AtomicBool::new(false),
            doorbell: Mutex::new(0),
            bell: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let device = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("csd-device".into())
            .spawn(move || background(&device))?;
        Ok(Runner {
            shared,
            thread: Some(thread),
        })
    }

    /// The number of queue pairs.
    pub fn queues(&self) -> u16 {
        self.shared.queues.len() as u16
    }

    /// The handle on queue pair `qid` (taken modulo the number of queues).
    pub fn queue(&self, qid: u16) -> Queue {
        let qid = qid % self.shared.queues.len() as u16;
        Queue {
            port: Arc::clone(&self.shared) as Arc<dyn Port>,
            qid,
        }
    }

    /// Stops the device after the commands it is serving, fails waiting hosts, and gives the
    /// backend back (`None` if the controller panicked).
    pub fn stop(mut self) -> Option<B> {
        self.halt()
    }

    fn halt(&mut self) -> Option<B> {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.ring();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let core = self.shared.lock_core().take();
        self.shared.close_all();
        core.map(|c| c.backend)
    }
}

impl<B: Backend> Drop for Runner<B> {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.halt();
        }
    }
}

impl Queue {
    /// Submits a command built around its id and waits for its completion.
    pub fn call(
        &self,
        build: impl FnOnce(CommandId) -> Submission,
        buffer: Vec<u8>,
    ) -> Result<Done, Closed> {
        let cid = self.submit(build, buffer)?;
        self.wait(cid)
    }

    /// Submits without waiting (the command may be served before this returns); collect the
    /// completion with [`Queue::wait`].
    pub fn submit(
        &self,
        build: impl FnOnce(CommandId) -> Submission,
        buffer: Vec<u8>,
    ) -> Result<CommandId, Closed> {
        let cid = self.port.pair(self.qid).submit(build, buffer)?;
        self.port.kick();
        Ok(cid)
    }

    /// Waits for the completion of `cid`.
    pub fn wait(&self, cid: CommandId) -> Result<Done, Closed> {
        self.port.pair(self.qid).wait(cid)
    }
}

/// The device thread: background work one step at a time, and the commands queued meanwhile;
/// asleep while there is none, until rung.
fn background<B: Backend>(shared: &Shared<B>) {
    loop {
        let seen = *shared.doorbell.lock().unwrap_or_else(|p| p.into_inner());
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let mut core = shared.lock_core();
        shared.pending.store(false, Ordering::SeqCst);
        shared.drain(&mut core);
        if Shared::busy(&core) {
            shared.step(&mut core);
        }
        let busy = Shared::busy(&core);
        drop(core);
        if busy || shared.pending.load(Ordering::SeqCst) {
            continue;
        }
        let mut rings = shared.doorbell.lock().unwrap_or_else(|p| p.into_inner());
        while *rings == seen && !shared.stop.load(Ordering::Acquire) {
            rings = shared.bell.wait(rings).unwrap_or_else(|p| p.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::command::Command;

    /// A backend whose controller breaks: it panics on the first command.
    struct Panics;

    impl Backend for Panics {
        fn submit(&mut self, _: u16, _: &mut Entry) -> Option<Completion> {
            panic!("the controller broke");
        }
        fn poll(&mut self) -> Option<(u16, Completion)> {
            None
        }
        fn busy(&self) -> bool {
            false
        }
    }

    /// A panic on the device thread fails the host waiting for a completion (and later
    /// submissions) instead of leaving it waiting forever.
    /// (Found by the power-loss campaign: a firmware that programmed a torn page panicked the
    /// emulated NAND, and the file system above waited for its write forever.)
    #[test]
    fn a_device_thread_panic_fails_waiting_hosts() {
        let runner = Runner::start(Panics, 1, 4).expect("the thread starts");
        let q = runner.queue(0);
        // On another thread, so a host left waiting fails the test instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let first = q.call(|cid| Submission::new(cid, Command::Identify), Vec::new());
            let second = q.call(|cid| Submission::new(cid, Command::Identify), Vec::new());
            let _ = tx.send((first.err(), second.err()));
        });
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("the host is still waiting for the panicked device");
        assert_eq!(got, (Some(Closed), Some(Closed)));
        assert!(
            runner.stop().is_none(),
            "a panicked backend is not given back"
        );
    }
}
