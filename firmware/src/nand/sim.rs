//! The one strict, counting NAND emulator (feature `sim`).
//!
//! [`SimNand`] implements [`Nand`] over a pluggable [`PageStore`] (RAM here with
//! [`RamStore`]; the host shell backs it with a file). It
//! - **panics** when the caller breaks the [`Nand`] contract: wrong buffer sizes, programming a
//!   page that is not erased or below an already programmed page of its block;
//! - **returns errors** for device conditions: injected program/erase/read failures, grown bad
//!   blocks, lost power, out-of-bounds addresses;
//! - **counts** reads, programs, erases and bytes ([`Stats`]);
//! - **cuts power** after N operations, N bytes moved or N bytes programmed: the operation in
//!   flight at the cut is torn (a program leaves that page garbled, an erase leaves the block
//!   undefined) and every later operation fails with [`NandErrorKind::PowerLost`]. A cut by
//!   bytes tears a program where the bytes ran out: the page's bytes before that point (data,
//!   then spare) are as intended and the rest inverted.
//!
//! To "reboot", take the storage back with [`SimNand::into_store`] and wrap it in a new
//! emulator: the media survives, injected faults and counters do not.
//!
//! It uses `alloc` only, so the board can run it too.

use alloc::collections::BTreeSet;
use alloc::vec;
use alloc::vec::Vec;

use super::{
    check_block, check_buffers, check_page, BlockId, Geometry, Nand, NandErrorKind, PageAddr,
};

/// What the emulator knows about a page, beyond its bytes.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum PageState {
    /// Erased: may be programmed.
    Erased,
    /// Programmed completely.
    Programmed,
    /// A program was interrupted or failed: content is garbage; must be erased first.
    Torn,
    /// An erase was interrupted or failed: content is anything; must be erased first.
    Undefined,
}

/// Where the emulator keeps page bytes and page states.
///
/// A store may live on storage that can refuse an operation (an image file on a host disk):
/// its methods then return [`NandErrorKind::StoreFull`] or [`NandErrorKind::StoreFailed`] and
/// leave what they were asked to change as it was. RAM never refuses.
pub trait PageStore {
    /// The shape of the stored array.
    fn geometry(&self) -> Geometry;
    /// Copies page `addr` into `data` and `spare` and returns its state.
    fn load(
        &self,
        addr: PageAddr,
        data: &mut [u8],
        spare: &mut [u8],
    ) -> Result<PageState, NandErrorKind>;
    /// The state of page `addr`.
    fn state(&self, addr: PageAddr) -> PageState;
    /// Replaces page `addr` with `data`, `spare` and `state`. On an error the page's state is
    /// unchanged.
    fn save(
        &mut self,
        addr: PageAddr,
        data: &[u8],
        spare: &[u8],
        state: PageState,
    ) -> Result<(), NandErrorKind>;
    /// Marks every page of `block` erased (all `0xFF`). A store that can refuse does it all
    /// or leaves every page's state as it was.
    fn erase(&mut self, block: BlockId) -> Result<(), NandErrorKind> {
        let g = self.geometry();
        let (d, s) = (
            vec![0xFF; g.page_bytes as usize],
            vec![0xFF; g.spare_bytes as usize],
        );
        for page in 0..g.pages_per_block {
            self.save(PageAddr::new(block, page), &d, &s, PageState::Erased)?;
        }
        Ok(())
    }
    /// Whether saved pages may sit in a volatile cache until [`PageStore::sync`].
    fn volatile_cache(&self) -> bool {
        false
    }
    /// Makes every saved page durable.
    fn sync(&mut self) -> Result<(), NandErrorKind> {
        Ok(())
    }
}

/// A [`PageStore`] in RAM. A fresh store is erased.
#[derive(Clone, Debug)]
pub struct RamStore {
    geometry: Geometry,
    data: Vec<u8>,
    spare: Vec<u8>,
    states: Vec<PageState>,
}

impl RamStore {
    /// An erased array of the given shape.
    pub fn new(geometry: Geometry) -> Self {
        let pages = geometry.blocks() as usize * geometry.pages_per_block as usize;
        RamStore {
            geometry,
            data: vec![0xFF; pages * geometry.page_bytes as usize],
            spare: vec![0xFF; pages * geometry.spare_bytes as usize],
            states: vec![PageState::Erased; pages],
        }
    }

    fn index(&self, addr: PageAddr) -> usize {
        addr.block.0 as usize * self.geometry.pages_per_block as usize + addr.page as usize
    }
}

impl PageStore for RamStore {
    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn load(
        &self,
        addr: PageAddr,
        data: &mut [u8],
        spare: &mut [u8],
    ) -> Result<PageState, NandErrorKind> {
        let i = self.index(addr);
        let (pb, sb) = (data.len(), spare.len());
        data.copy_from_slice(&self.data[i * pb..(i + 1) * pb]);
        spare.copy_from_slice(&self.spare[i * sb..(i + 1) * sb]);
        Ok(self.states[i])
    }

    fn state(&self, addr: PageAddr) -> PageState {
        self.states[self.index(addr)]
    }

    fn save(
        &mut self,
        addr: PageAddr,
        data: &[u8],
        spare: &[u8],
        state: PageState,
    ) -> Result<(), NandErrorKind> {
        let i = self.index(addr);
        let (pb, sb) = (data.len(), spare.len());
        self.data[i * pb..(i + 1) * pb].copy_from_slice(data);
        self.spare[i * sb..(i + 1) * sb].copy_from_slice(spare);
        self.states[i] = state;
        Ok(())
    }
}

/// Operation counters of a [`SimNand`]. Only operations that reached a powered device count.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Stats {
    /// Page reads.
    pub reads: u64,
    /// Page programs (including failed and torn ones).
    pub programs: u64,
    /// Block erases (including failed and torn ones).
    pub erases: u64,
    /// Data and spare bytes read.
    pub read_bytes: u64,
    /// Data and spare bytes programmed.
    pub program_bytes: u64,
}

impl Stats {
    /// All operations.
    pub const fn ops(&self) -> u64 {
        self.reads + self.programs + self.erases
    }
}

/// The strict, counting NAND emulator. See the module docs.
#[derive(Debug)]
pub struct SimNand<S: PageStore = RamStore> {
    store: S,
    stats: Stats,
    powered: bool,
    cut_after_ops: Option<u64>,
    cut_after_bytes: Option<u64>,
    cut_after_program_bytes: Option<u64>,
    /// Bytes of the operation in flight that got through before a cut by bytes.
    torn_at: Option<u64>,
    bad_blocks: BTreeSet<BlockId>,
    fail_program: BTreeSet<PageAddr>,
    fail_erase: BTreeSet<BlockId>,
    fail_read: BTreeSet<PageAddr>,
}

impl SimNand<RamStore> {
    /// An emulator over a fresh, erased RAM array.
    pub fn new(geometry: Geometry) -> Self {
        SimNand::with_store(RamStore::new(geometry))
    }
}

impl<S: PageStore> SimNand<S> {
    /// An emulator over existing media (a "reboot" when `store` came from
    /// [`SimNand::into_store`]).
    pub fn with_store(store: S) -> Self {
        SimNand {
            store,
            stats: Stats::default(),
            powered: true,
            cut_after_ops: None,
            cut_after_bytes: None,
            cut_after_program_bytes: None,
            torn_at: None,
            bad_blocks: BTreeSet::new(),
            fail_program: BTreeSet::new(),
            fail_erase: BTreeSet::new(),
            fail_read: BTreeSet::new(),
        }
    }

    /// Takes the media back out (power off).
    pub fn into_store(self) -> S {
        self.store
    }

    /// The media.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Counters since creation or the last [`SimNand::reset_stats`].
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Zeroes the counters (a pending power cut keeps counting from where it was set).
    pub fn reset_stats(&mut self) {
        self.cut_after_ops = self
            .cut_after_ops
            .map(|n| n.saturating_sub(self.stats.ops()));
        self.cut_after_bytes = self.cut_after_bytes.map(|n| n.saturating_sub(self.bytes()));
        self.cut_after_program_bytes = self
            .cut_after_program_bytes
            .map(|n| n.saturating_sub(self.stats.program_bytes));
        self.stats = Stats::default();
    }

    /// Lets `n` more operations complete; the next one is interrupted by a power cut.
    pub fn cut_power_after_ops(&mut self, n: u64) {
        self.cut_after_ops = Some(self.stats.ops() + n);
    }

    /// Lets `n` more bytes move; the operation that would pass them is interrupted.
    pub fn cut_power_after_bytes(&mut self, n: u64) {
        self.cut_after_bytes = Some(self.bytes() + n);
    }

    /// Lets `n` more bytes be programmed (data and spare); the program that would pass them is
    /// torn there. Reads and erases do not count, so every such cut tears a program.
    pub fn cut_power_after_program_bytes(&mut self, n: u64) {
        self.cut_after_program_bytes = Some(self.stats.program_bytes + n);
    }

    /// Whether power has been cut.
    pub fn power_lost(&self) -> bool {
        !self.powered
    }

    /// Makes `block` a grown bad block: every later program and erase of it fails.
    pub fn fail_block(&mut self, block: BlockId) {
        self.bad_blocks.insert(block);
    }

    /// Makes the next program of `addr` fail (the page is left garbled).
    pub fn fail_next_program(&mut self, addr: PageAddr) {
        self.fail_program.insert(addr);
    }

    /// Makes the next erase of `block` fail (the block is left undefined).
    pub fn fail_next_erase(&mut self, block: BlockId) {
        self.fail_erase.insert(block);
    }

    /// Makes the next read of `addr` fail as uncorrectable.
    pub fn fail_next_read(&mut self, addr: PageAddr) {
        self.fail_read.insert(addr);
    }

    fn bytes(&self) -> u64 {
        self.stats.read_bytes + self.stats.program_bytes
    }

    /// Starts an operation moving `bytes` (programming them if `program`): `Err` if power is
    /// off, `Ok(true)` if this operation is the one interrupted by the cut.
    fn begin(&mut self, bytes: u64, program: bool) -> Result<bool, NandErrorKind> {
        if !self.powered {
            return Err(NandErrorKind::PowerLost);
        }
        let ops_cut = self.cut_after_ops.is_some_and(|n| self.stats.ops() >= n);
        // How many of this operation's bytes get through before a cut by bytes.
        let through = |limit: Option<u64>, done: u64| {
            limit.and_then(|n| (done + bytes > n).then(|| n.saturating_sub(done)))
        };
        let by_bytes = through(self.cut_after_bytes, self.bytes()).or_else(|| {
            if program {
                through(self.cut_after_program_bytes, self.stats.program_bytes)
            } else {
                None
            }
        });
        if ops_cut || by_bytes.is_some() {
            self.powered = false;
            self.torn_at = if ops_cut { None } else { by_bytes };
        }
        Ok(!self.powered)
    }

    fn page_len(&self) -> u64 {
        let g = self.store.geometry();
        u64::from(g.page_bytes) + u64::from(g.spare_bytes)
    }

    /// Leaves `addr` garbled: half of the data inverted, and on odd pages the spare too.
    fn tear_page(
        &mut self,
        addr: PageAddr,
        data: &[u8],
        spare: &[u8],
    ) -> Result<(), NandErrorKind> {
        let mut d = data.to_vec();
        let half = d.len() / 2;
        d[half..].iter_mut().for_each(|b| *b = !*b);
        let mut s = spare.to_vec();
        if addr.page % 2 == 1 {
            s.iter_mut().for_each(|b| *b = !*b);
        }
        self.store.save(addr, &d, &s, PageState::Torn)
    }

    /// Leaves `addr` torn `at` bytes into its program: those bytes (data, then spare) as
    /// intended, every later one inverted. It reads as erased only if the intended page was
    /// `0xFF` up to `at` and zero after it.
    fn tear_page_at(
        &mut self,
        addr: PageAddr,
        data: &[u8],
        spare: &[u8],
        at: u64,
    ) -> Result<(), NandErrorKind> {
        let mut d = data.to_vec();
        let mut s = spare.to_vec();
        let at = usize::try_from(at).unwrap_or(usize::MAX);
        for (i, b) in d.iter_mut().chain(s.iter_mut()).enumerate() {
            if i >= at {
                *b = !*b;
            }
        }
        self.store.save(addr, &d, &s, PageState::Torn)
    }

    /// Leaves `block` undefined: its lower half of pages reads erased, the rest keeps old bytes.
    fn tear_block(&mut self, block: BlockId) -> Result<(), NandErrorKind> {
        let g = self.store.geometry();
        let (mut d, mut s) = (
            vec![0; g.page_bytes as usize],
            vec![0; g.spare_bytes as usize],
        );
        for page in 0..g.pages_per_block {
            let addr = PageAddr::new(block, page);
            if page < g.pages_per_block / 2 {
                d.fill(0xFF);
                s.fill(0xFF);
            } else {
                self.store.load(addr, &mut d, &mut s)?;
            }
            self.store.save(addr, &d, &s, PageState::Undefined)?;
        }
        Ok(())
    }
}

impl<S: PageStore> Nand for SimNand<S> {
    type Error = NandErrorKind;

    fn geometry(&self) -> Geometry {
        self.store.geometry()
    }

    fn read_page(
        &mut self,
        addr: PageAddr,
        data: &mut [u8],
        spare: &mut [u8],
    ) -> Result<(), NandErrorKind> {
        let g = self.store.geometry();
        assert!(
            check_buffers(&g, data.len(), spare.len()),
            "read_page: buffers must be one page"
        );
        if self.begin(self.page_len(), false)? {
            return Err(NandErrorKind::PowerLost);
        }
        check_page(&g, addr)?;
        self.stats.reads += 1;
        self.stats.read_bytes += self.page_len();
        if self.fail_read.remove(&addr) {
            return Err(NandErrorKind::Uncorrectable);
        }
        self.store.load(addr, data, spare).map(|_| ())
    }

    fn program_page(
        &mut self,
        addr: PageAddr,
        data: &[u8],
        spare: &[u8],
    ) -> Result<(), NandErrorKind> {
        let g = self.store.geometry();
        assert!(
            check_buffers(&g, data.len(), spare.len()),
            "program_page: buffers must be one page"
        );
        let torn = self.begin(self.page_len(), true)?;
        check_page(&g, addr)?;
        let state = self.store.state(addr);
        assert!(
            state == PageState::Erased,
            "program_page: {addr:?} is {state:?}, not erased"
        );
        for page in addr.page + 1..g.pages_per_block {
            let above = self.store.state(PageAddr::new(addr.block, page));
            assert!(
                above == PageState::Erased,
                "program_page: {addr:?} is below programmed page {page}"
            );
        }
        self.stats.programs += 1;
        self.stats.program_bytes += self.page_len();
        if torn {
            match self.torn_at {
                Some(at) => self.tear_page_at(addr, data, spare, at)?,
                None => self.tear_page(addr, data, spare)?,
            }
            return Err(NandErrorKind::PowerLost);
        }
        if self.fail_program.remove(&addr) || self.bad_blocks.contains(&addr.block) {
            self.tear_page(addr, data, spare)?;
            return Err(NandErrorKind::ProgramFailed);
        }
        self.store.save(addr, data, spare, PageState::Programmed)
    }

    fn erase_block(&mut self, block: BlockId) -> Result<(), NandErrorKind> {
        let g = self.store.geometry();
        let torn = self.begin(0, false)?;
        check_block(&g, block)?;
        self.stats.erases += 1;
        if torn {
            self.tear_block(block)?;
            return Err(NandErrorKind::PowerLost);
        }
        if self.fail_erase.remove(&block) || self.bad_blocks.contains(&block) {
            self.tear_block(block)?;
            return Err(NandErrorKind::EraseFailed);
        }
        self.store.erase(block)
    }

    fn volatile_cache(&self) -> bool {
        self.store.volatile_cache()
    }

    /// Syncs the store. After a power cut it fails like every other operation: what was not
    /// synced before the cut is the store's to keep or lose.
    fn flush(&mut self) -> Result<(), NandErrorKind> {
        if !self.powered {
            return Err(NandErrorKind::PowerLost);
        }
        self.store.sync()
    }
}
