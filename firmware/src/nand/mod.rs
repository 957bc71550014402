//! The NAND seam: the raw-flash interface the zone manager is handed, and nothing more.
//!
//! A [`Nand`] has a [`Geometry`] and three operations: read a page, program a page, erase a
//! block. Pages carry a data area (4096 bytes: one LBA, see [`PAGE_DATA_BYTES`]) and a spare
//! (out-of-band) area. An erased page reads as all `0xFF` bytes in both areas.
//!
//! # Power-loss contract (every implementation)
//! - A program interrupted by a power loss leaves *that page* undefined (any content, possibly
//!   reading back without error) and nothing else.
//! - An erase interrupted by a power loss leaves *that block* undefined: any page may read as
//!   erased, as old data or as garbage, and the block must be erased again before a program.
//! - A read has no effect on the media.
//!
//! # Caller duties
//! - Program the pages of a block in increasing page order (gaps are allowed), each at most
//!   once per erase, and only after an erase that completed.
//! - Pass buffers of exactly `page_bytes` and `spare_bytes`.
//!
//! The strict emulator in [`sim`] (feature `sim`) panics when a caller breaks these duties.

pub mod image;
#[cfg(feature = "sim")]
pub mod sim;

use core::fmt;

/// Data bytes of every page: one LBA ([`common::LBA_BYTES`]). The zone manager programs each
/// acknowledged LBA before completing the write; the only volatile write cache a device can
/// have is below the NAND seam ([`Nand::volatile_cache`]).
pub const PAGE_DATA_BYTES: u32 = common::LBA_BYTES;

/// The shape of a NAND array.
///
/// Dies are numbered `0..dies()`; die `d` sits on channel `d % channels`, so consecutive dies
/// alternate channels. Global block ids number the blocks die after die: block `b` is block
/// `b % blocks_per_die` of die `b / blocks_per_die`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Geometry {
    /// Independent channels.
    pub channels: u32,
    /// Dies on each channel.
    pub dies_per_channel: u32,
    /// Erase blocks in each die.
    pub blocks_per_die: u32,
    /// Pages in each erase block.
    pub pages_per_block: u32,
    /// Data bytes of a page.
    pub page_bytes: u32,
    /// Spare (out-of-band) bytes of a page.
    pub spare_bytes: u32,
}

impl Geometry {
    /// Total dies.
    pub const fn dies(&self) -> u32 {
        self.channels.saturating_mul(self.dies_per_channel)
    }

    /// Total erase blocks.
    pub const fn blocks(&self) -> u32 {
        self.dies().saturating_mul(self.blocks_per_die)
    }

    /// The die holding `block`.
    pub const fn die_of(&self, block: BlockId) -> u32 {
        block.0 / self.blocks_per_die
    }

    /// The channel of die `die`.
    pub const fn channel_of_die(&self, die: u32) -> u32 {
        die % self.channels
    }

    /// The global id of block `index` of die `die`.
    pub const fn block(&self, die: u32, index: u32) -> BlockId {
        BlockId(die * self.blocks_per_die + index)
    }

    /// The geometry as Identify reports it.
    pub const fn info(&self) -> common::zns::NandInfo {
        common::zns::NandInfo {
            channels: self.channels,
            dies_per_channel: self.dies_per_channel,
            blocks_per_die: self.blocks_per_die,
            pages_per_block: self.pages_per_block,
            page_bytes: self.page_bytes,
            spare_bytes: self.spare_bytes,
        }
    }
}

/// A global erase-block id (see [`Geometry`] for its mapping to dies and channels).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockId(pub u32);

/// A page: its block and its index inside the block.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PageAddr {
    /// The erase block.
    pub block: BlockId,
    /// The page index inside the block, `0..pages_per_block`.
    pub page: u32,
}

impl PageAddr {
    /// The page `page` of `block`.
    pub const fn new(block: BlockId, page: u32) -> Self {
        PageAddr { block, page }
    }
}

/// What kind of failure a NAND operation hit.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NandErrorKind {
    /// The program did not verify: the page is undefined; retire the block.
    ProgramFailed,
    /// The erase did not verify: the block is undefined; retire it.
    EraseFailed,
    /// The page could not be read back (ECC could not correct it).
    Uncorrectable,
    /// Power was lost: this and every later operation fails until the device restarts.
    PowerLost,
    /// The address or block is outside the geometry.
    OutOfBounds,
    /// Anything else the device reports.
    Other,
    /// The storage behind an emulated array has no room (its image file sits on a full host
    /// disk). The operation was not carried out: the media is as it was, and the same
    /// operation may succeed once there is room. Never returned by raw NAND.
    StoreFull,
    /// The storage behind an emulated array failed (an I/O error of the host disk under its
    /// image file). The operation was not carried out; for a flush, what was written since the
    /// last good flush may not be durable. Never returned by raw NAND.
    StoreFailed,
}

impl NandErrorKind {
    /// Whether the storage behind an emulated array refused the operation (no room, or an I/O
    /// error of the host): the media did not change, so no block is to blame.
    pub const fn is_store_fault(self) -> bool {
        matches!(self, NandErrorKind::StoreFull | NandErrorKind::StoreFailed)
    }
}

/// An error of a [`Nand`] operation.
pub trait NandError: fmt::Debug {
    /// The kind of failure.
    fn kind(&self) -> NandErrorKind;
}

impl NandError for NandErrorKind {
    fn kind(&self) -> NandErrorKind {
        *self
    }
}

impl fmt::Display for NandErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NandErrorKind::ProgramFailed => "NAND program failed",
            NandErrorKind::EraseFailed => "NAND erase failed",
            NandErrorKind::Uncorrectable => "NAND page is uncorrectable",
            NandErrorKind::PowerLost => "NAND lost power",
            NandErrorKind::OutOfBounds => "NAND address out of bounds",
            NandErrorKind::Other => "NAND device error",
            NandErrorKind::StoreFull => "the storage behind the NAND is full",
            NandErrorKind::StoreFailed => "the storage behind the NAND failed",
        })
    }
}

impl core::error::Error for NandErrorKind {}

/// Raw NAND flash. See the module docs for the power-loss contract and the caller's duties.
pub trait Nand {
    /// The device's error.
    type Error: NandError;

    /// The array's shape. Constant for the device's lifetime.
    fn geometry(&self) -> Geometry;

    /// Reads page `addr` into `data` (`page_bytes`) and `spare` (`spare_bytes`).
    ///
    /// Power loss: no effect on the media. An erased page reads as all `0xFF`; a torn or
    /// undefined page may read as anything, with or without an error.
    fn read_page(
        &mut self,
        addr: PageAddr,
        data: &mut [u8],
        spare: &mut [u8],
    ) -> Result<(), Self::Error>;

    /// Programs page `addr` with `data` and `spare`.
    ///
    /// Caller: the block was erased since the page was last programmed, and no higher page of
    /// the block has been programmed since. Power loss: that page is undefined, nothing else
    /// changes. On [`NandErrorKind::ProgramFailed`] the page is undefined.
    fn program_page(
        &mut self,
        addr: PageAddr,
        data: &[u8],
        spare: &[u8],
    ) -> Result<(), Self::Error>;

    /// Erases `block`: every page then reads as `0xFF`.
    ///
    /// Power loss or [`NandErrorKind::EraseFailed`]: the block is undefined and must be
    /// erased again (or retired) before any program.
    fn erase_block(&mut self, block: BlockId) -> Result<(), Self::Error>;

    /// Whether completed programs and erases may sit in a volatile cache until
    /// [`Nand::flush`]. Raw NAND has none; an emulated array whose image file goes through the
    /// host's page cache has one.
    fn volatile_cache(&self) -> bool {
        false
    }

    /// Makes every completed program and erase durable against a loss of power (of the host,
    /// for an emulated array). Raw NAND is durable when an operation completes, so the default
    /// does nothing. On an error, what completed since the last good flush may be lost.
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

impl<T: Nand + ?Sized> Nand for &mut T {
    type Error = T::Error;

    fn geometry(&self) -> Geometry {
        (**self).geometry()
    }

    fn read_page(
        &mut self,
        addr: PageAddr,
        data: &mut [u8],
        spare: &mut [u8],
    ) -> Result<(), Self::Error> {
        (**self).read_page(addr, data, spare)
    }

    fn program_page(
        &mut self,
        addr: PageAddr,
        data: &[u8],
        spare: &[u8],
    ) -> Result<(), Self::Error> {
        (**self).program_page(addr, data, spare)
    }

    fn erase_block(&mut self, block: BlockId) -> Result<(), Self::Error> {
        (**self).erase_block(block)
    }

    fn volatile_cache(&self) -> bool {
        (**self).volatile_cache()
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        (**self).flush()
    }
}

/// Checks that `block` exists in `geometry`.
pub fn check_block(geometry: &Geometry, block: BlockId) -> Result<(), NandErrorKind> {
    if block.0 < geometry.blocks() {
        Ok(())
    } else {
        Err(NandErrorKind::OutOfBounds)
    }
}

/// Checks that `addr` exists in `geometry`.
pub fn check_page(geometry: &Geometry, addr: PageAddr) -> Result<(), NandErrorKind> {
    check_block(geometry, addr.block)?;
    if addr.page < geometry.pages_per_block {
        Ok(())
    } else {
        Err(NandErrorKind::OutOfBounds)
    }
}

/// Checks that the buffers are exactly one page's data and spare areas.
pub fn check_buffers(geometry: &Geometry, data_len: usize, spare_len: usize) -> bool {
    data_len == geometry.page_bytes as usize && spare_len == geometry.spare_bytes as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: Geometry = Geometry {
        channels: 2,
        dies_per_channel: 2,
        blocks_per_die: 8,
        pages_per_block: 4,
        page_bytes: 4096,
        spare_bytes: 64,
    };

    /// Block ids map die after die, and dies alternate channels.
    #[test]
    fn block_mapping() {
        assert_eq!(G.dies(), 4);
        assert_eq!(G.blocks(), 32);
        assert_eq!(G.die_of(BlockId(17)), 2);
        assert_eq!(G.block(2, 1), BlockId(17));
        assert_eq!(G.channel_of_die(3), 1);
    }

    /// The validators reject addresses and buffers outside the geometry.
    #[test]
    fn validators() {
        assert_eq!(
            check_block(&G, BlockId(32)),
            Err(NandErrorKind::OutOfBounds)
        );
        assert_eq!(
            check_page(&G, PageAddr::new(BlockId(0), 4)),
            Err(NandErrorKind::OutOfBounds)
        );
        assert_eq!(check_page(&G, PageAddr::new(BlockId(31), 3)), Ok(()));
        assert!(check_buffers(&G, 4096, 64));
        assert!(!check_buffers(&G, 4096, 32));
    }
}
