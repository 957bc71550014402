//! Read-ahead for an image's sequential readers.
//!
//! A zone's sequential reader goes through each block of its stripe page by page, one page per
//! block in turn. For such a reader the store reads [`READ_AHEAD_PAGES`] pages of a block with
//! one read of the file (a system call per page would cost more than copying the page).
//!
//! When the file can be read from another thread (a real [`File`]), a helper thread reads the
//! chunk after that one while the reader uses the current one, so the reader only copies:
//! reading the image is most of a sequential read's work on the device, and this moves it off
//! the thread that holds the controller, onto a core that would otherwise idle. The helper runs
//! at the lowest priority (nice 19): with every core busy it mostly does not run, and readers
//! read their chunks themselves, taking back (when they can lock them) the asks the helper has
//! not started; at most 64 asks wait for it. Readers never
//! wait for the helper: they only *try* the locks they share with it, and skip asking it, or
//! taking its chunks, when one is held.
//!
//! Whatever was read ahead is only ever used for a page that is still as it was read:
//! programming a page forgets what was read of its block, and the helper's chunks carry the
//! generation of their block's stream, so one that raced with a program is dropped. (Erased
//! pages are never read from the file: their state says so first.)

use std::{
    cell::{Cell, RefCell},
    collections::{HashMap, VecDeque},
    fs::File,
    os::unix::fs::FileExt,
    sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError},
    thread::JoinHandle,
};

use firmware::nand::{image::ImageLayout, BlockId, PageAddr};

/// Pages of a block one read of the file brings in for a sequential reader.
pub const READ_AHEAD_PAGES: u32 = 8;

/// Blocks whose readers the store follows: a zone's stripe (32 blocks in the ZN540 preset) for
/// a few readers at once.
pub const READ_AHEAD_BLOCKS: usize = 256;

thread_local! {
    /// Set while this thread runs background work: see [`unhelped`].
    static UNHELPED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with no reads asked of the helper. The device thread runs kernels' slices this way:
/// the helper's core is left to regular I/O. (With the helper reading ahead for kernels, the
/// p99 of other processes' 4 KiB reads while two kernels ran rose from 0.8x to 2.9x of the
/// idle p99.)
pub fn unhelped<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            UNHELPED.set(self.0);
        }
    }
    let _reset = Reset(UNHELPED.replace(true));
    f()
}

/// Pages `first..first + pages` of a block, data then spare, a file stride each.
#[derive(Debug, Default)]
struct Chunk {
    first: u32,
    pages: u32,
    bytes: Vec<u8>,
}

impl Chunk {
    fn has(&self, page: u32) -> bool {
        (self.first..self.first + self.pages).contains(&page)
    }
}

/// One block a reader went through: where it would read next, and pages read ahead of it.
#[derive(Debug)]
struct Stream {
    block: BlockId,
    /// The page a sequential reader reads next.
    next: u32,
    /// The chunk the reader is in.
    chunk: Chunk,
    /// The chunk after it, read by the helper.
    ahead: Option<Chunk>,
    /// The first page of the chunk asked of the helper and not delivered yet.
    asked: Option<u32>,
    /// Changes whenever what was read of the block may be stale, or the stream moves to
    /// another block: the helper's chunks of an older generation are dropped. Generations
    /// come from one counter for all streams, so a block that comes back in another stream
    /// never meets a chunk asked before it left.
    generation: u64,
    /// Used since the replacement clock last passed it.
    used: bool,
}

impl Stream {
    fn forget(&mut self, generation: u64) {
        self.chunk.pages = 0;
        self.ahead = None;
        self.asked = None;
        self.generation = generation;
    }
}

/// The blocks being read sequentially, replaced by the clock algorithm (a stream used since
/// the hand last passed is kept one more round).
#[derive(Debug, Default)]
struct Streams {
    streams: Vec<Stream>,
    /// Where each block's stream is in `streams`.
    index: HashMap<BlockId, usize>,
    hand: usize,
    /// Buffers of chunks used up, for the next asks (they need no zeroing).
    free: Vec<Vec<u8>>,
    /// The last generation handed out.
    generations: u64,
}

/// Buffers kept for asks.
const FREE_BUFFERS: usize = 64;

/// Asks waiting for the helper at most: two zones' stripes.
const MAX_ASKS: usize = 64;

impl Streams {
    fn next_generation(&mut self) -> u64 {
        self.generations += 1;
        self.generations
    }

    /// Forgets what was read for stream `i`.
    fn forget(&mut self, i: usize) {
        let generation = self.next_generation();
        self.streams[i].forget(generation);
    }

    fn recycle(&mut self, bytes: Vec<u8>) {
        if self.free.len() < FREE_BUFFERS && !bytes.is_empty() {
            self.free.push(bytes);
        }
    }

    /// Where the stream of `block` is, a new one in place of one not used lately if need be.
    fn find(&mut self, block: BlockId) -> usize {
        let i = match self.index.get(&block) {
            Some(&i) => i,
            None if self.streams.len() < READ_AHEAD_BLOCKS => {
                let generation = self.next_generation();
                self.streams.push(Stream {
                    block,
                    next: u32::MAX,
                    chunk: Chunk::default(),
                    ahead: None,
                    asked: None,
                    generation,
                    used: false,
                });
                self.index.insert(block, self.streams.len() - 1);
                self.streams.len() - 1
            }
            None => {
                while std::mem::take(&mut self.streams[self.hand].used) {
                    self.hand = (self.hand + 1) % self.streams.len();
                }
                let i = self.hand;
                self.hand = (self.hand + 1) % self.streams.len();
                self.index.remove(&self.streams[i].block);
                self.forget(i);
                let s = &mut self.streams[i];
                (s.block, s.next) = (block, u32::MAX);
                self.index.insert(block, i);
                i
            }
        };
        self.streams[i].used = true;
        i
    }

    /// Gives the helper's chunks to their streams, or drops them if their streams moved on.
    fn take_delivered(&mut self, delivered: &mut Vec<Delivered>) {
        for d in delivered.drain(..) {
            let Delivered { ask, read } = d;
            let stream = match self.index.get(&ask.block) {
                Some(&i) if read => &mut self.streams[i],
                _ => {
                    self.recycle(ask.bytes);
                    continue;
                }
            };
            if stream.generation == ask.generation && stream.asked == Some(ask.first) {
                stream.asked = None;
                stream.ahead = Some(Chunk {
                    first: ask.first,
                    pages: ask.pages,
                    bytes: ask.bytes,
                });
            } else {
                self.recycle(ask.bytes);
            }
        }
    }
}

/// A chunk asked of the helper, with the buffer it is read into.
#[derive(Debug)]
struct Ask {
    block: BlockId,
    generation: u64,
    first: u32,
    pages: u32,
    at: u64,
    bytes: Vec<u8>,
}

/// An ask the helper is done with: `read` if its bytes are the file's.
#[derive(Debug)]
struct Delivered {
    ask: Ask,
    read: bool,
}

/// What readers and the helper share.
#[derive(Debug, Default)]
struct Mailbox {
    asks: Mutex<Asks>,
    bell: Condvar,
    delivered: Mutex<Vec<Delivered>>,
}

#[derive(Debug, Default)]
struct Asks {
    list: VecDeque<Ask>,
    /// The helper is asleep, waiting for asks (waking it is a system call, made only then).
    waiting: bool,
    stop: bool,
}

/// The helper thread and its mailbox.
#[derive(Debug)]
struct Helper {
    mailbox: Arc<Mailbox>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Helper {
    fn drop(&mut self) {
        lock(&self.mailbox.asks).stop = true;
        self.mailbox.bell.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data, consistent at every point a panic could leave it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The lock if it is free: readers never wait for the helper.
fn try_lock<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

/// The read-ahead of one image (see the module docs).
#[derive(Debug)]
pub struct ReadAhead {
    layout: ImageLayout,
    pages_per_block: u32,
    streams: RefCell<Streams>,
    helper: Option<Helper>,
}

/// What [`ReadAhead::load`] did with a page.
#[derive(Debug, PartialEq, Eq)]
pub enum Loaded {
    /// The page was copied out.
    Copied,
    /// Not a sequential reader: the caller reads the page itself.
    Yours,
}

impl ReadAhead {
    /// Read-ahead over an image of `layout` with blocks of `pages_per_block`; `helper_file`,
    /// another handle on the image, lets a helper thread read ahead of the readers (without
    /// it, or without a thread to be had, readers read each chunk themselves).
    pub fn new(layout: ImageLayout, pages_per_block: u32, helper_file: Option<File>) -> Self {
        let helper = helper_file.and_then(|file| {
            let mailbox = Arc::new(Mailbox::default());
            let theirs = Arc::clone(&mailbox);
            let thread = std::thread::Builder::new()
                .name("csd-read-ahead".into())
                .spawn(move || help(&file, &theirs))
                .ok()?;
            Some(Helper {
                mailbox,
                thread: Some(thread),
            })
        });
        ReadAhead {
            layout,
            pages_per_block,
            streams: RefCell::default(),
            helper,
        }
    }

    /// Where page `addr` is in the file.
    fn page_at(&self, addr: PageAddr) -> u64 {
        let index = u64::from(addr.block.0) * u64::from(self.pages_per_block);
        self.layout.page_offset(index + u64::from(addr.page))
    }

    /// Forgets what was read of `block` (one of its pages is being programmed).
    pub fn forget(&self, block: BlockId) {
        let mut streams = self.streams.borrow_mut();
        if let Some(&i) = streams.index.get(&block) {
            self.cancel(&mut streams.streams[i]);
            streams.forget(i);
        }
    }

    /// Copies page `addr` (programmed, so its bytes are in the file) into `data` and `spare`
    /// from what was read ahead, reading the next chunk of its block with `read` first when a
    /// sequential reader needs it; or leaves the page to the caller.
    pub fn load(
        &self,
        addr: PageAddr,
        data: &mut [u8],
        spare: &mut [u8],
        read: impl FnOnce(&mut [u8], u64) -> std::io::Result<()>,
    ) -> std::io::Result<Loaded> {
        let mut guard = self.streams.borrow_mut();
        let streams = &mut *guard;
        let i = streams.find(addr.block);
        let waits = &streams.streams[i];
        // Deliveries are taken (all of them) when a reader with an ask outstanding leaves its
        // chunk: a random reader, which never asks, never locks the mailbox.
        if waits.asked.is_some() && !waits.chunk.has(addr.page) {
            if let Some(mut delivered) = self
                .helper
                .as_ref()
                .and_then(|h| try_lock(&h.mailbox.delivered))
            {
                streams.take_delivered(&mut delivered);
            }
        }
        let stream = &mut streams.streams[i];
        let sequential = stream.next == addr.page;
        stream.next = addr.page + 1;
        if !stream.chunk.has(addr.page) {
            // A reader that went through a whole chunk and on into the next is asked ahead
            // for; one that jumps between runs of a few pages (readers of files written at
            // the same time share blocks) is not: the helper's chunks would go unused.
            let through =
                stream.chunk.pages > 0 && addr.page == stream.chunk.first + stream.chunk.pages;
            match stream.ahead.take() {
                Some(chunk) if chunk.has(addr.page) => {
                    let used = std::mem::replace(&mut stream.chunk, chunk);
                    streams.recycle(used.bytes);
                }
                other => {
                    stream.ahead = other;
                    let rest = self.pages_per_block - addr.page;
                    if !sequential || rest < 2 {
                        return Ok(Loaded::Yours);
                    }
                    // A reader going through the block: read ahead of it, in place of the
                    // helper if it has not started on this block's chunk.
                    self.cancel(stream);
                    let pages = rest.min(READ_AHEAD_PAGES);
                    let chunk = &mut stream.chunk;
                    chunk.pages = 0;
                    chunk
                        .bytes
                        .resize(pages as usize * self.layout.stride as usize, 0);
                    read(&mut chunk.bytes, self.page_at(addr))?;
                    (chunk.first, chunk.pages) = (addr.page, pages);
                }
            }
            if through {
                self.ask_next(streams, i);
            }
        }
        let chunk = &streams.streams[i].chunk;
        let at = (addr.page - chunk.first) as usize * self.layout.stride as usize;
        let page = &chunk.bytes[at..at + data.len() + spare.len()];
        let (d, s) = page.split_at(data.len());
        data.copy_from_slice(d);
        spare.copy_from_slice(s);
        Ok(Loaded::Copied)
    }

    /// Takes back what the helper was asked for `stream` and has not started reading.
    fn cancel(&self, stream: &mut Stream) {
        let Some(helper) = &self.helper else {
            return;
        };
        if stream.asked.take().is_some() {
            // Held by the helper: what it has not started stays asked, and is dropped when it
            // is delivered (`asked` no longer names it).
            if let Some(mut asks) = try_lock(&helper.mailbox.asks) {
                let (block, generation) = (stream.block, stream.generation);
                asks.list
                    .retain(|a| (a.block, a.generation) != (block, generation));
            }
        }
    }

    /// Asks the helper for the chunk after that of stream `i`.
    fn ask_next(&self, streams: &mut Streams, i: usize) {
        let Some(helper) = self.helper.as_ref().filter(|_| !UNHELPED.get()) else {
            return;
        };
        let stream = &streams.streams[i];
        let first = stream.chunk.first + stream.chunk.pages;
        let rest = self.pages_per_block.saturating_sub(first);
        if rest == 0 || stream.asked == Some(first) {
            return;
        }
        let Some(mut asks) = try_lock(&helper.mailbox.asks) else {
            return;
        };
        if asks.list.len() >= MAX_ASKS {
            // The helper is behind (it runs only on a core nobody else wants): readers read
            // for themselves until it catches up.
            return;
        }
        let pages = rest.min(READ_AHEAD_PAGES);
        let mut bytes = streams.free.pop().unwrap_or_default();
        bytes.resize(pages as usize * self.layout.stride as usize, 0);
        let stream = &mut streams.streams[i];
        stream.asked = Some(first);
        asks.list.push_back(Ask {
            block: stream.block,
            generation: stream.generation,
            first,
            pages,
            at: self.page_at(PageAddr::new(stream.block, first)),
            bytes,
        });
        if std::mem::take(&mut asks.waiting) {
            helper.mailbox.bell.notify_one();
        }
    }

    /// Whether the helper thread runs.
    #[cfg(test)]
    pub fn helped(&self) -> bool {
        self.helper.is_some()
    }

    /// How many pages are read ahead of `block`'s reader, in its chunk and the helper's (the
    /// helper's once taken from it: a reader takes them when it needs a new chunk).
    #[cfg(test)]
    pub fn pages_ahead(&self, block: BlockId) -> Option<(u32, u32)> {
        let mut streams = self.streams.borrow_mut();
        if let Some(helper) = &self.helper {
            streams.take_delivered(&mut lock(&helper.mailbox.delivered));
        }
        let s = &streams.streams[*streams.index.get(&block)?];
        Some((s.chunk.pages, s.ahead.as_ref().map_or(0, |c| c.pages)))
    }

    /// The first page of the chunk of `block` asked of the helper and not taken yet.
    #[cfg(test)]
    pub fn asked(&self, block: BlockId) -> Option<u32> {
        let streams = self.streams.borrow();
        streams.streams[*streams.index.get(&block)?].asked
    }

    /// The number of blocks followed.
    #[cfg(test)]
    pub fn followed(&self) -> usize {
        self.streams.borrow().streams.len()
    }
}

/// The helper thread, at the lowest priority: reads the chunks asked of it, in order, and
/// delivers them. A chunk it fails to read is delivered unread: the reader then reads it and
/// reports the failure.
fn help(file: &File, mailbox: &Mailbox) {
    // Nice 19 (on Linux a thread's own): a busy machine's cores go to readers first. Without
    // it the helper only competes harder.
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19);
    loop {
        let mut ask = {
            let mut asks = lock(&mailbox.asks);
            loop {
                if asks.stop {
                    return;
                }
                if let Some(ask) = asks.list.pop_front() {
                    break ask;
                }
                asks.waiting = true;
                asks = mailbox.bell.wait(asks).unwrap_or_else(|p| p.into_inner());
            }
        };
        let read = file.read_exact_at(&mut ask.bytes, ask.at).is_ok();
        lock(&mailbox.delivered).push(Delivered { ask, read });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every stream a block is given, and every forget, has a generation never handed out
    /// before: a chunk asked for a block that then left the table (or was programmed) can
    /// never pass for one asked later, in whatever stream the block comes back to.
    #[test]
    fn generations_are_never_reused() {
        let mut streams = Streams::default();
        let mut seen = std::collections::HashSet::new();
        for round in 0..3u32 {
            for block in 0..READ_AHEAD_BLOCKS as u32 + 40 {
                let i = streams.find(BlockId(block * 3 + round));
                if block % 7 == 0 {
                    streams.forget(i);
                }
                let generation = streams.streams[i].generation;
                assert!(
                    seen.insert(generation),
                    "generation {generation} handed out twice"
                );
            }
        }
    }

    /// A chunk delivered for a generation its stream no longer has is dropped, its buffer
    /// kept for later asks; one for the current generation becomes the stream's next chunk.
    #[test]
    fn deliveries_of_an_old_generation_are_dropped() {
        let mut streams = Streams::default();
        let block = BlockId(5);
        let i = streams.find(block);
        let ask = |streams: &Streams| Ask {
            block,
            generation: streams.streams[i].generation,
            first: 9,
            pages: 1,
            at: 0,
            bytes: vec![7; 16],
        };
        streams.streams[i].asked = Some(9);
        let stale = ask(&streams);
        streams.forget(i);
        streams.streams[i].asked = Some(9);
        let fresh = ask(&streams);
        let mut delivered = vec![Delivered {
            ask: stale,
            read: true,
        }];
        streams.take_delivered(&mut delivered);
        assert!(streams.streams[i].ahead.is_none());
        assert_eq!(streams.free.len(), 1);
        delivered.push(Delivered {
            ask: fresh,
            read: true,
        });
        streams.take_delivered(&mut delivered);
        let ahead = streams.streams[i].ahead.as_ref().expect("the fresh chunk");
        assert_eq!((ahead.first, ahead.pages), (9, 1));
        assert_eq!(streams.streams[i].asked, None);
    }
}
