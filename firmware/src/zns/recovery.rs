//! Power-on: formatting a device, and rebuilding the zone table from the NAND at mount.
//!
//! Mount reads, without scanning the whole device:
//! 1. the metadata log's newest complete checkpoint (binary search for each log block's end,
//!    then a short walk back): erase counts, bad blocks, zone generations and conditions;
//! 2. page 0 of every block: a valid data record of a zone's current generation binds the
//!    block to the slot named by its LBA offset; stale, erased or torn blocks are free. Erase
//!    counts take the larger of the checkpoint's and the record's;
//! 3. for each zone, the write pointer by binary search over LBA offsets (pages are written in
//!    order, so "holds a valid record for this offset" is true for a prefix);
//! 4. the page at the write pointer, and the next page of every other bound slot: if one is
//!    not erased, a write was torn there (or the media is damaged). That page cannot be
//!    programmed again before an erase, so the zone is made Full ("finished by
//!    controller", reported in the descriptor's attributes). Everything acknowledged stays
//!    readable; the host resets the zone to reuse it.
//!
//! Zones that were open come back Closed (or Empty if nothing was written), as after any power
//! cycle.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use common::zns::ZoneState;

use crate::nand::{BlockId, Nand, NandError, NandErrorKind, PageAddr};

use super::checkpoint::{BlockMeta, MetaLog, ZoneCond, ZoneMeta};
use super::config::{ConfigError, Layout, ZoneConfig};
use super::manager::ZoneManager;
use super::record::{self, PageContent, Record};
use super::state::{Zone, Zones};

/// Why [`ZoneManager::format`] failed.
#[derive(Debug)]
pub enum FormatError<E> {
    /// The configuration does not fit the NAND.
    Config(ConfigError),
    /// A metadata-log block could not be erased: the device cannot be used.
    MetaBlockBad(BlockId),
    /// The NAND failed (for example lost power).
    Device(E),
}

/// Why [`ZoneManager::mount`] failed.
#[derive(Debug)]
pub enum MountError<E> {
    /// The configuration does not fit the NAND.
    Config(ConfigError),
    /// The metadata log is erased: format the device first.
    Unformatted,
    /// The metadata log holds no valid checkpoint, or the data pages contradict it.
    Corrupted,
    /// The checkpoint was written for another geometry or zone count.
    GeometryMismatch,
    /// The NAND failed (for example lost power).
    Device(E),
}

impl<E: fmt::Debug> fmt::Display for FormatError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::Config(c) => write!(f, "cannot format: {c}"),
            FormatError::MetaBlockBad(b) => {
                write!(f, "cannot format: metadata block {} is bad", b.0)
            }
            FormatError::Device(e) => write!(f, "cannot format: NAND error {e:?}"),
        }
    }
}

impl<E: fmt::Debug> fmt::Display for MountError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MountError::Config(c) => write!(f, "cannot mount: {c}"),
            MountError::Unformatted => {
                f.write_str("cannot mount: the device is not formatted; format it first")
            }
            MountError::Corrupted => {
                f.write_str("cannot mount: the zone metadata on the NAND is corrupted")
            }
            MountError::GeometryMismatch => f.write_str(
                "cannot mount: the device was formatted with another geometry or zone count",
            ),
            MountError::Device(e) => write!(f, "cannot mount: NAND error {e:?}"),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for FormatError<E> {}
impl<E: fmt::Debug> core::error::Error for MountError<E> {}

impl<E> From<ConfigError> for FormatError<E> {
    fn from(e: ConfigError) -> Self {
        FormatError::Config(e)
    }
}

impl<E> From<ConfigError> for MountError<E> {
    fn from(e: ConfigError) -> Self {
        MountError::Config(e)
    }
}

impl<N: Nand> ZoneManager<N> {
    fn assemble(
        nand: N,
        layout: Layout,
        blocks: Vec<BlockMeta>,
        zones: Vec<Zone>,
        log: MetaLog,
    ) -> Self {
        let mut in_use = vec![false; blocks.len()];
        for b in layout.meta_blocks {
            in_use[b.0 as usize] = true;
        }
        for block in zones.iter().flat_map(|z| z.slots.iter().flatten()) {
            in_use[block.0 as usize] = true;
        }
        ZoneManager {
            nand,
            zones: Zones::new(&layout, zones),
            layout,
            blocks,
            in_use,
            log,
            dead: false,
            halted: None,
            spare: Self::spare_buffer(&layout),
        }
    }

    /// Erases every block (retiring those that fail), writes the first checkpoint and returns
    /// a manager with every zone Empty.
    pub fn format(mut nand: N, config: ZoneConfig) -> Result<Self, FormatError<N::Error>> {
        let layout = Layout::new(nand.geometry(), config)?;
        let mut blocks = vec![BlockMeta::default(); layout.geometry.blocks() as usize];
        for (i, meta) in blocks.iter_mut().enumerate() {
            meta.erase_count = 1;
            match nand.erase_block(BlockId(i as u32)) {
                Ok(()) => {}
                Err(e) if e.kind() == NandErrorKind::EraseFailed => {
                    if layout.is_meta(BlockId(i as u32)) {
                        return Err(FormatError::MetaBlockBad(BlockId(i as u32)));
                    }
                    meta.bad = true;
                }
                Err(e) => return Err(FormatError::Device(e)),
            }
        }
        let metas = vec![ZoneMeta::default(); layout.nr_zones as usize];
        let mut log = MetaLog::fresh();
        log.write(&mut nand, &layout, &mut blocks, &metas)
            .map_err(FormatError::Device)?;
        let zones = metas
            .iter()
            .map(|&m| Zone::empty(m, layout.config.zone_blocks as usize))
            .collect();
        Ok(Self::assemble(nand, layout, blocks, zones, log))
    }

    /// Rebuilds the zone manager from what is on the NAND (see the module docs).
    pub fn mount(mut nand: N, config: ZoneConfig) -> Result<Self, MountError<N::Error>> {
        let layout = Layout::new(nand.geometry(), config)?;
        let g = layout.geometry;
        let mut data = vec![0u8; g.page_bytes as usize];
        let mut spare = vec![0u8; g.spare_bytes as usize];
        let Some((ckpt, log)) = MetaLog::find(&mut nand, &layout).map_err(MountError::Device)?
        else {
            for b in layout.meta_blocks {
                let page0 = record::read(&mut nand, PageAddr::new(b, 0), &mut data, &mut spare);
                if page0.map_err(MountError::Device)? != PageContent::Erased {
                    return Err(MountError::Corrupted);
                }
            }
            return Err(MountError::Unformatted);
        };
        if ckpt.blocks.len() != g.blocks() as usize || ckpt.zones.len() != layout.nr_zones as usize
        {
            return Err(MountError::GeometryMismatch);
        }
        let mut blocks = ckpt.blocks;
        let width = layout.config.zone_blocks;
        let mut zones: Vec<Zone> = ckpt
            .zones
            .iter()
            .map(|&m| Zone::empty(m, width as usize))
            .collect();
        for b in (0..g.blocks()).map(BlockId) {
            if layout.is_meta(b) {
                continue;
            }
            let content = record::read(&mut nand, PageAddr::new(b, 0), &mut data, &mut spare);
            let PageContent::Valid(Record::Data {
                zone,
                gen,
                offset,
                erase_count,
            }) = content.map_err(MountError::Device)?
            else {
                continue;
            };
            let count = &mut blocks[b.0 as usize].erase_count;
            *count = (*count).max(erase_count);
            let Some(z) = zones.get_mut(zone as usize) else {
                continue;
            };
            if gen != z.meta.gen || z.meta.cond == ZoneCond::Offline || offset >= width {
                continue;
            }
            let slot = &mut z.slots[offset as usize];
            if slot.is_some() {
                return Err(MountError::Corrupted);
            }
            *slot = Some(b);
        }
        for (zi, z) in zones.iter_mut().enumerate() {
            recover_zone(&mut nand, &layout, zi as u32, z, &mut data, &mut spare)
                .map_err(MountError::Device)?;
        }
        Ok(Self::assemble(nand, layout, blocks, zones, log))
    }
}

/// Finds zone `z`'s write pointer and state (steps 3 and 4 of the module docs).
fn recover_zone<N: Nand>(
    nand: &mut N,
    layout: &Layout,
    zi: u32,
    z: &mut Zone,
    data: &mut [u8],
    spare: &mut [u8],
) -> Result<(), N::Error> {
    if z.meta.cond == ZoneCond::Offline {
        z.state = ZoneState::Offline;
        return Ok(());
    }
    let mut probe = |off: u64| -> Result<Option<PageContent>, N::Error> {
        let (slot, page) = layout.place(off);
        let Some(block) = z.slots[slot] else {
            return Ok(None);
        };
        record::read(nand, PageAddr::new(block, page), data, spare).map(Some)
    };
    let is_data = |c: &Option<PageContent>, off: u64| {
        matches!(c, Some(PageContent::Valid(Record::Data { zone, gen, offset, .. }))
            if *zone == zi && *gen == z.meta.gen && u64::from(*offset) == off)
    };
    let (mut lo, mut hi) = (0u64, layout.zone_cap);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if is_data(&probe(mid)?, mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let written = lo;
    // Every page above the write pointer in the bound blocks must be erased for the zone to
    // take writes. After a power cut only the page at the write pointer can be programmed
    // (torn), but media damage can hide more: a block whose page 0 no longer reads is not
    // bound, so the search stops at its offset while the other slots hold programmed pages
    // further on; and a page whose charge leaked away reads as erased below programmed pages.
    // So the whole rest of the zone is checked (unbound slots cost no read). Only zones that
    // are partly written pay for it, and at most `max_active` of them can be.
    let mut torn = false;
    if z.meta.cond == ZoneCond::Normal && written > 0 {
        for off in written..layout.zone_cap {
            if !matches!(probe(off)?, None | Some(PageContent::Erased)) {
                torn = true;
                break;
            }
        }
    }
    z.written = written;
    z.finished_by_controller = torn;
    z.state = match z.meta.cond {
        ZoneCond::ReadOnly => ZoneState::ReadOnly,
        ZoneCond::Finished => ZoneState::Full,
        _ if torn || written == layout.zone_cap => ZoneState::Full,
        _ if written == 0 => ZoneState::Empty,
        _ => ZoneState::Closed,
    };
    Ok(())
}
