//! The board's NAND media: in board memory (lost at power-off) or in a host image file.

use firmware::nand::sim::{PageState, PageStore, RamStore};
use firmware::nand::{Geometry, NandErrorKind, PageAddr};

use crate::image::FileStore;

/// Where the board keeps its NAND pages. One type, so the firmware is built once for both.
#[derive(Debug)]
pub enum BoardStore {
    /// Board memory (DDR).
    Ram(RamStore),
    /// A host file through semihosting.
    File(FileStore),
}

impl PageStore for BoardStore {
    fn geometry(&self) -> Geometry {
        match self {
            BoardStore::Ram(s) => s.geometry(),
            BoardStore::File(s) => s.geometry(),
        }
    }

    fn load(
        &self,
        addr: PageAddr,
        data: &mut [u8],
        spare: &mut [u8],
    ) -> Result<PageState, NandErrorKind> {
        match self {
            BoardStore::Ram(s) => s.load(addr, data, spare),
            BoardStore::File(s) => s.load(addr, data, spare),
        }
    }

    fn state(&self, addr: PageAddr) -> PageState {
        match self {
            BoardStore::Ram(s) => s.state(addr),
            BoardStore::File(s) => s.state(addr),
        }
    }

    fn save(
        &mut self,
        addr: PageAddr,
        data: &[u8],
        spare: &[u8],
        state: PageState,
    ) -> Result<(), NandErrorKind> {
        match self {
            BoardStore::Ram(s) => s.save(addr, data, spare, state),
            BoardStore::File(s) => s.save(addr, data, spare, state),
        }
    }
}

/// The NAND of a board without an image file: 2 channels x 2 dies x 32 blocks x 32 pages of
/// 4 KiB (16 MiB), 64 spare bytes per page.
pub const BOARD_GEOMETRY: Geometry = Geometry {
    channels: 2,
    dies_per_channel: 2,
    blocks_per_die: 32,
    pages_per_block: 32,
    page_bytes: 4096,
    spare_bytes: 64,
};
