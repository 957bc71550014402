//! NVMe-style queue pairs between host threads and the device thread.
//!
//! A host thread puts a [`Submission`] and its data buffer on a submission queue (blocking while
//! the queue is full), rings the doorbell, and later collects the [`Completion`] with the same
//! command id from the paired completion queue, with its buffer back. Buffers are moved, not
//! copied: the device's DMA writes straight into the host's `Vec`.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Condvar, Mutex, MutexGuard,
    },
};

use common::command::{CommandId, Completion, Submission};

/// A submission with the host buffer its data moves through.
#[derive(Debug)]
pub struct Entry {
    pub submission: Submission,
    pub buffer: Vec<u8>,
}

/// A completion with the host buffer handed back.
#[derive(Debug)]
pub struct Done {
    pub completion: Completion,
    pub buffer: Vec<u8>,
}

/// One submission/completion queue pair.
#[derive(Debug)]
pub struct QueuePair {
    depth: usize,
    state: Mutex<PairState>,
    /// Entries in the submission queue, for the controller to pass an empty queue without
    /// taking its lock (it looks at every queue on every round).
    queued: AtomicUsize,
    /// Signalled when the device takes an entry (room in the submission queue).
    sq_room: Condvar,
    /// Signalled when a completion is posted.
    cq_posted: Condvar,
}

#[derive(Debug, Default)]
struct PairState {
    sq: VecDeque<Entry>,
    /// Completions not yet collected, by command id.
    cq: HashMap<CommandId, Done>,
    /// Command ids submitted and not yet collected.
    in_flight: Vec<CommandId>,
    next_cid: u16,
    closed: bool,
    /// Hosts asleep waiting for room, and for a completion: a condition variable is only
    /// signalled when someone waits on it (a signal is a system call).
    room_waiters: usize,
    cq_waiters: usize,
}

/// The queue pair was shut down (the device stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the device has stopped")]
pub struct Closed;

impl QueuePair {
    /// A queue pair holding at most `depth` commands in flight (at least 1).
    pub fn new(depth: usize) -> Self {
        QueuePair {
            depth: depth.max(1),
            state: Mutex::new(PairState::default()),
            queued: AtomicUsize::new(0),
            sq_room: Condvar::new(),
            cq_posted: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PairState> {
        // A panic while holding the lock leaves plain queues behind, still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Host side: queues `build(cid)` with `buffer`, waiting while `depth` commands are in
    /// flight. Returns the command id to collect the completion with.
    pub fn submit(
        &self,
        build: impl FnOnce(CommandId) -> Submission,
        buffer: Vec<u8>,
    ) -> Result<CommandId, Closed> {
        let mut state = self.lock();
        while state.in_flight.len() >= self.depth && !state.closed {
            state.room_waiters += 1;
            state = self.sq_room.wait(state).unwrap_or_else(|p| p.into_inner());
            state.room_waiters -= 1;
        }
        if state.closed {
            return Err(Closed);
        }
        let cid = loop {
            let cid = CommandId(state.next_cid);
            state.next_cid = state.next_cid.wrapping_add(1);
            if !state.in_flight.contains(&cid) {
                break cid;
            }
        };
        state.in_flight.push(cid);
        state.sq.push_back(Entry {
            submission: build(cid),
            buffer,
        });
        self.queued.fetch_add(1, Ordering::SeqCst);
        Ok(cid)
    }

    /// Host side: waits for the completion of `cid`.
    pub fn wait(&self, cid: CommandId) -> Result<Done, Closed> {
        let mut state = self.lock();
        loop {
            if let Some(done) = state.cq.remove(&cid) {
                state.in_flight.retain(|c| *c != cid);
                if state.room_waiters > 0 {
                    self.sq_room.notify_all();
                }
                return Ok(done);
            }
            if state.closed {
                return Err(Closed);
            }
            state.cq_waiters += 1;
            state = self
                .cq_posted
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
            state.cq_waiters -= 1;
        }
    }

    /// Device side: takes the oldest submission, if any. An entry being queued as this looks
    /// may be missed: its submitter kicks the controller after queueing it (see
    /// `runner::Port::kick`).
    pub fn take(&self) -> Option<Entry> {
        if self.queued.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let entry = self.lock().sq.pop_front();
        if entry.is_some() {
            self.queued.fetch_sub(1, Ordering::SeqCst);
        }
        entry
    }

    /// Device side: posts a completion.
    pub fn post(&self, done: Done) {
        let mut state = self.lock();
        state.cq.insert(done.completion.cid, done);
        if state.cq_waiters > 0 {
            self.cq_posted.notify_all();
        }
    }

    /// Fails every waiter: the device is gone.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        self.sq_room.notify_all();
        self.cq_posted.notify_all();
    }
}
