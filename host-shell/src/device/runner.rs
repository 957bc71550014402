//! The device thread: the controller CPU of the emulated device.
//!
//! It serves the submission queues round-robin, one command per queue per round, so no queue
//! starves another; between rounds it advances background work (a running kernel) by one
//! bounded step, so a long kernel never stalls regular I/O. When there is nothing to do it
//! sleeps until a host rings the doorbell.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Condvar, Mutex,
    },
    thread::JoinHandle,
};

use common::command::{CommandId, Completion, Submission};

use super::queue::{Closed, Done, Entry, QueuePair};

/// What the device thread drives: the firmware's controller in-process, or a board over a link.
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

#[derive(Debug)]
struct Shared {
    queues: Vec<QueuePair>,
    doorbell: Mutex<u64>,
    bell: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn ring(&self) {
        let mut rings = self.doorbell.lock().unwrap_or_else(|p| p.into_inner());
        *rings = rings.wrapping_add(1);
        self.bell.notify_all();
    }
}

/// A running device thread and its queue pairs.
#[derive(Debug)]
pub struct Runner<B: Backend> {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<B>>,
}

/// A host's handle on one queue pair.
#[derive(Debug, Clone)]
pub struct Queue {
    shared: Arc<Shared>,
    qid: u16,
}

impl<B: Backend> Runner<B> {
    /// Starts the device thread over `backend` with `queues` queue pairs of `depth` entries.
    pub fn start(backend: B, queues: u16, depth: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            queues: (0..queues.max(1)).map(|_| QueuePair::new(depth)).collect(),
            doorbell: Mutex::new(0),
            bell: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let device = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("csd-device".into())
            .spawn(move || serve(backend, &device))?;
        Ok(Runner {
            shared,
            thread: Some(thread),
        })
    }

    /// The handle on queue pair `qid` (taken modulo the number of queues).
    pub fn queue(&self, qid: u16) -> Queue {
        let qid = qid % self.shared.queues.len() as u16;
        Queue {
            shared: Arc::clone(&self.shared),
            qid,
        }
    }

    /// Stops the device thread after the commands already taken, fails waiting hosts, and
    /// gives the backend back.
    pub fn stop(mut self) -> Option<B> {
        self.halt()
    }

    fn halt(&mut self) -> Option<B> {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.ring();
        let backend = self.thread.take().and_then(|t| t.join().ok());
        for q in &self.shared.queues {
            q.close();
        }
        backend
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

    /// Submits without waiting; collect the completion with [`Queue::wait`].
    pub fn submit(
        &self,
        build: impl FnOnce(CommandId) -> Submission,
        buffer: Vec<u8>,
    ) -> Result<CommandId, Closed> {
        let cid = self.shared.queues[usize::from(self.qid)].submit(build, buffer)?;
        self.shared.ring();
        Ok(cid)
    }

    /// Waits for the completion of `cid`.
    pub fn wait(&self, cid: CommandId) -> Result<Done, Closed> {
        self.shared.queues[usize::from(self.qid)].wait(cid)
    }
}

/// Closes every queue pair when the device thread ends, by a stop or by a panic, so no host
/// waits for a completion that cannot come.
struct CloseOnExit<'a>(&'a Shared);

impl Drop for CloseOnExit<'_> {
    fn drop(&mut self) {
        for q in &self.0.queues {
            q.close();
        }
    }
}

fn serve<B: Backend>(mut backend: B, shared: &Shared) -> B {
    let _close = CloseOnExit(shared);
    let queues = &shared.queues;
    // Buffers of commands that go on in the background, returned with their completion.
    let mut parked: HashMap<(u16, CommandId), Vec<u8>> = HashMap::new();
    let mut next = 0usize;
    loop {
        let seen = *shared.doorbell.lock().unwrap_or_else(|p| p.into_inner());
        if shared.stop.load(Ordering::Acquire) {
            return backend;
        }
        let mut served = false;
        for i in 0..queues.len() {
            let qid = (next + i) % queues.len();
            let Some(mut entry) = queues[qid].take() else {
                continue;
            };
            served = true;
            let sqid = qid as u16;
            match backend.submit(sqid, &mut entry) {
                Some(completion) => queues[qid].post(Done {
                    completion,
                    buffer: entry.buffer,
                }),
                None => {
                    parked.insert((sqid, entry.submission.cid), entry.buffer);
                }
            }
        }
        next = (next + 1) % queues.len();
        if backend.busy() {
            if let Some((sqid, completion)) = backend.poll() {
                let buffer = parked.remove(&(sqid, completion.cid)).unwrap_or_default();
                if let Some(q) = queues.get(usize::from(sqid)) {
                    q.post(Done { completion, buffer });
                }
            }
            continue;
        }
        if served {
            continue;
        }
        // Idle: sleep until a host rings (or rang since we looked).
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
