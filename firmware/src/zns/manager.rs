//! The zone manager's data path: ZNS Read, Write and Zone Append over raw NAND.
//!
//! Each LBA is one NAND page (4096 bytes), programmed before the command completes: there is
//! no volatile write cache. A zone's slot gets its block when its first page is written: the
//! least-worn free good block on the slot's preferred die (any die if that one has none), erased
//! right then. That erase-on-bind is where wear levelling happens, and why a reset itself only
//! writes a checkpoint (the new generation makes the old pages stale).
//!
//! Device errors become statuses: a failed program retires the block and makes the zone Read
//! Only (`WriteFault`); a failed erase retires the block and another one is taken; a lost power
//! makes this and every later command `CommandAborted` until the manager is mounted again.
//! When the storage behind an emulated array refuses a program or an erase (its host disk is
//! full or failing), no block is to blame: the command fails with `CapacityExceeded` (full) or
//! `WriteFault`, and the manager takes no more writes until it is mounted again, as an NVMe
//! device that enters read-only mode does. Reads go on; a Flush still syncs what was written.

use alloc::vec;
use alloc::vec::Vec;

use common::zns::ZoneState;
use common::{Status, LBA_BYTES};

use crate::nand::{BlockId, Nand, NandError, NandErrorKind, PageAddr};

use super::checkpoint::{BlockMeta, MetaLog, ZoneCond, ZoneMeta};
use super::config::Layout;
use super::record::{self, Record};
use super::state::Zones;

/// The FTL-free ZNS zone manager, owning its NAND. Create it with
/// [`ZoneManager::format`] or [`ZoneManager::mount`]; take the NAND back with
/// [`ZoneManager::into_nand`].
#[derive(Debug)]
pub struct ZoneManager<N: Nand> {
    pub(super) nand: N,
    pub(super) layout: Layout,
    pub(super) zones: Zones,
    pub(super) blocks: Vec<BlockMeta>,
    /// Blocks not available for binding: bound to a zone, or a metadata block.
    pub(super) in_use: Vec<bool>,
    pub(super) log: MetaLog,
    pub(super) dead: bool,
    /// Set when the storage behind the NAND refused a write: every later write-side command
    /// fails with this status until the next mount.
    pub(super) halted: Option<Status>,
    pub(super) spare: Vec<u8>,
}

impl<N: Nand> ZoneManager<N> {
    /// Gives the NAND back (for a reboot: mount a new manager over it).
    pub fn into_nand(self) -> N {
        self.nand
    }

    /// The NAND.
    pub fn nand(&self) -> &N {
        &self.nand
    }

    /// The NAND, mutably (tests inject faults through it).
    pub fn nand_mut(&mut self) -> &mut N {
        &mut self.nand
    }

    /// The layout in force.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The erase count of `block`.
    pub fn erase_count(&self, block: BlockId) -> Option<u32> {
        self.blocks.get(block.0 as usize).map(|b| b.erase_count)
    }

    /// Whether `block` was retired.
    pub fn is_bad(&self, block: BlockId) -> bool {
        self.blocks.get(block.0 as usize).is_some_and(|b| b.bad)
    }

    /// The block bound to slot `slot` of zone `zone`.
    pub fn slot_block(&self, zone: u32, slot: usize) -> Option<BlockId> {
        self.zones
            .zones
            .get(zone as usize)?
            .slots
            .get(slot)
            .copied()
            .flatten()
    }

    pub(super) fn alive(&self) -> Result<(), Status> {
        if self.dead {
            Err(Status::CommandAborted)
        } else {
            Ok(())
        }
    }

    /// Ok while the manager takes writes (see the module docs).
    pub(super) fn writable(&self) -> Result<(), Status> {
        self.alive()?;
        self.halted.map_or(Ok(()), Err)
    }

    /// Maps a device error to a status; a power loss stops the manager, and a refusal of the
    /// storage behind the NAND stops its writes.
    pub(super) fn device(&mut self, e: &N::Error, otherwise: Status) -> Status {
        match e.kind() {
            NandErrorKind::PowerLost => {
                self.dead = true;
                Status::CommandAborted
            }
            NandErrorKind::StoreFull => *self.halted.get_or_insert(Status::CapacityExceeded),
            NandErrorKind::StoreFailed if otherwise == Status::UnrecoveredReadError => otherwise,
            NandErrorKind::StoreFailed => *self.halted.get_or_insert(Status::WriteFault),
            _ => otherwise,
        }
    }

    /// Flush: makes every completed write durable (syncs a volatile cache below the NAND).
    pub fn flush(&mut self) -> Result<(), Status> {
        self.alive()?;
        self.nand
            .flush()
            .map_err(|e| self.device(&e, Status::WriteFault))
    }

    /// Checks a transfer of `len` bytes at `slba` and returns its LBA count.
    fn check_transfer(&self, slba: u64, len: usize) -> Result<u64, Status> {
        if len == 0 || !len.is_multiple_of(LBA_BYTES as usize) {
            return Err(Status::InvalidField);
        }
        let nlb = (len / LBA_BYTES as usize) as u64;
        if nlb > u64::from(self.layout.config.mdts_lbas) {
            return Err(Status::InvalidField);
        }
        match slba.checked_add(nlb) {
            Some(end) if end <= self.layout.nsze() => Ok(nlb),
            _ => Err(Status::LbaOutOfRange),
        }
    }

    /// Reads `buf.len() / 4096` LBAs from `slba`. Unwritten LBAs read as zeros.
    pub fn read(&mut self, slba: u64, buf: &mut [u8]) -> Result<(), Status> {
        self.alive()?;
        let nlb = self.check_transfer(slba, buf.len())?;
        let (zi, off) = self.layout.split(slba);
        if self.zones.zones[zi as usize].state == ZoneState::Offline {
            return Err(Status::ZoneOffline);
        }
        if off + nlb > self.layout.zone_size {
            if !self.layout.config.cross_zone_read {
                return Err(Status::ZoneBoundaryError);
            }
            let last = self.layout.split(slba + nlb - 1).0;
            if (zi + 1..=last).any(|z| self.zones.zones[z as usize].state == ZoneState::Offline) {
                return Err(Status::ZoneOffline);
            }
        }
        for (k, chunk) in buf.chunks_mut(LBA_BYTES as usize).enumerate() {
            self.read_lba(slba + k as u64, chunk)?;
        }
        Ok(())
    }

    fn read_lba(&mut self, lba: u64, out: &mut [u8]) -> Result<(), Status> {
        let (zi, off) = self.layout.split(lba);
        let zone = &self.zones.zones[zi as usize];
        if off >= zone.written {
            out.fill(0);
            return Ok(());
        }
        let (slot, page) = self.layout.place(off);
        let gen = zone.meta.gen;
        // Below the write pointer with no block: a crash of the host under an emulated device
        // kept a later page of the zone and lost this one. The LBA cannot be read back.
        let block = zone.slots[slot].ok_or(Status::UnrecoveredReadError)?;
        let mut spare = core::mem::take(&mut self.spare);
        let result = record::read(&mut self.nand, PageAddr::new(block, page), out, &mut spare);
        self.spare = spare;
        let content = result.map_err(|e| self.device(&e, Status::UnrecoveredReadError))?;
        match content {
            record::PageContent::Valid(Record::Data {
                zone,
                gen: g,
                offset,
                ..
            }) if zone == zi && g == gen && u64::from(offset) == off => Ok(()),
            _ => Err(Status::UnrecoveredReadError),
        }
    }

    /// Writes `data` at `slba`, which must be the zone's write pointer.
    pub fn write(&mut self, slba: u64, data: &[u8]) -> Result<(), Status> {
        self.write_at(slba, data, false).map(|_| ())
    }

    /// Zone Append: writes `data` at the write pointer of the zone starting at `zslba` and
    /// returns the LBA it landed on.
    pub fn append(&mut self, zslba: u64, data: &[u8]) -> Result<u64, Status> {
        self.write_at(zslba, data, true)
    }

    fn write_at(&mut self, slba: u64, data: &[u8], append: bool) -> Result<u64, Status> {
        self.writable()?;
        let nlb = self.check_transfer(slba, data.len())?;
        let (zi, off) = self.layout.split(slba);
        let z = zi as usize;
        let zone = &self.zones.zones[z];
        match zone.state {
            ZoneState::Full => return Err(Status::ZoneFull),
            ZoneState::ReadOnly => return Err(Status::ZoneReadOnly),
            ZoneState::Offline => return Err(Status::ZoneOffline),
            _ => {}
        }
        let start = if append {
            if off != 0 || nlb > u64::from(self.layout.config.zasl_lbas) {
                return Err(Status::InvalidField);
            }
            zone.written
        } else if off != zone.written {
            return Err(Status::ZoneInvalidWrite);
        } else {
            off
        };
        if start + nlb > self.layout.zone_cap {
            return Err(Status::ZoneBoundaryError);
        }
        self.zones.open(z, false)?;
        for (k, chunk) in data.chunks(LBA_BYTES as usize).enumerate() {
            self.program_lba(zi, start + k as u64, chunk)?;
        }
        if self.zones.zones[z].written == self.layout.zone_cap {
            self.zones.zones[z].state = ZoneState::Full;
        }
        Ok(self.layout.zslba(zi) + start)
    }

    fn program_lba(&mut self, zi: u32, off: u64, chunk: &[u8]) -> Result<(), Status> {
        let (slot, page) = self.layout.place(off);
        let block = match self.zones.zones[zi as usize].slots[slot] {
            Some(b) => b,
            None => self.bind(zi, slot)?,
        };
        let rec = Record::Data {
            zone: zi,
            gen: self.zones.zones[zi as usize].meta.gen,
            offset: off as u32,
            erase_count: self.blocks[block.0 as usize].erase_count,
        };
        let mut spare = core::mem::take(&mut self.spare);
        record::encode(rec, chunk, &mut spare);
        let result = self
            .nand
            .program_page(PageAddr::new(block, page), chunk, &spare);
        self.spare = spare;
        if let Err(e) = result {
            let status = self.device(&e, Status::WriteFault);
            if !self.dead && !e.kind().is_store_fault() {
                self.blocks[block.0 as usize].bad = true;
                self.make_read_only(zi)?;
            }
            return Err(status);
        }
        self.zones.zones[zi as usize].written = off + 1;
        Ok(())
    }

    /// Binds a fresh block to `slot` of zone `zi`: the least-worn free good block on the
    /// slot's die (any die if none), erased now. Failed erases retire blocks.
    fn bind(&mut self, zi: u32, slot: usize) -> Result<BlockId, Status> {
        let die = self.layout.slot_die(zi, slot);
        loop {
            let Some(block) = self.pick_free(Some(die)).or_else(|| self.pick_free(None)) else {
                self.make_read_only(zi)?;
                return Err(Status::WriteFault);
            };
            let b = block.0 as usize;
            self.blocks[b].erase_count += 1;
            match self.nand.erase_block(block) {
                Ok(()) => {
                    self.in_use[b] = true;
                    self.zones.zones[zi as usize].slots[slot] = Some(block);
                    return Ok(block);
                }
                Err(e) => {
                    let status = self.device(&e, Status::WriteFault);
                    if self.dead || e.kind().is_store_fault() {
                        return Err(status);
                    }
                    self.blocks[b].bad = true;
                    self.persist(&[])?;
                }
            }
        }
    }

    fn pick_free(&self, die: Option<u32>) -> Option<BlockId> {
        let g = &self.layout.geometry;
        (0..g.blocks())
            .map(BlockId)
            .filter(|&b| !self.in_use[b.0 as usize] && !self.blocks[b.0 as usize].bad)
            .filter(|&b| die.is_none_or(|d| g.die_of(b) == d))
            .min_by_key(|&b| self.blocks[b.0 as usize].erase_count)
    }

    /// Moves zone `zi` to Read Only after a media failure and records it.
    fn make_read_only(&mut self, zi: u32) -> Result<(), Status> {
        let z = &mut self.zones.zones[zi as usize];
        z.state = ZoneState::ReadOnly;
        z.meta.cond = ZoneCond::ReadOnly;
        self.persist(&[])
    }

    /// Writes a checkpoint of the blocks and of the zones' metadata, with `changes` applied.
    pub(super) fn persist(&mut self, changes: &[(usize, ZoneMeta)]) -> Result<(), Status> {
        self.writable()?;
        let mut metas: Vec<ZoneMeta> = self.zones.zones.iter().map(|z| z.meta).collect();
        for &(i, m) in changes {
            metas[i] = m;
        }
        match self
            .log
            .write(&mut self.nand, &self.layout, &mut self.blocks, &metas)
        {
            Ok(()) => Ok(()),
            Err(e) => Err(self.device(&e, Status::WriteFault)),
        }
    }

    /// A scratch spare buffer of the right size.
    pub(super) fn spare_buffer(layout: &Layout) -> Vec<u8> {
        vec![0; layout.geometry.spare_bytes as usize]
    }
}
