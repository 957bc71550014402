//! File data: a write buffer of whole blocks per file, flushed out of place to the hot zone
//! on fsync, release, pressure or checkpoint, and the read path that merges it with the
//! blocks on the device.
//!
//! The bytes of a file's last block past its size are always zero on the device (new blocks
//! start zeroed; truncation zeroes the tail), so growing a file never shows stale bytes.

use super::buffers::{Dirty, FILE_DIRTY_LIMIT};
use super::error::{bug, LfsError, Result};
use super::extent::Run;
use super::format::{Record, ZoneUse, BLOCK_BYTES};
use super::ids::{Lba, ZoneId};
use super::inode::{Attr, FileKind, InodeNo, Time};
use super::meta::blocks_of;
use super::zoned::Zoned;
use super::State;

/// Largest file.
pub const MAX_FILE_BYTES: u64 = 1 << 40;

/// One part of a read, in file order.
#[derive(Debug)]
enum Piece {
    /// A buffered block, copied under the lock.
    Bytes(Vec<u8>),
    /// Blocks of a hole.
    Zeros(u64),
    /// Blocks on the device.
    Device(Run),
}

/// A read resolved under the lock, to finish outside it.
#[derive(Debug, Default)]
pub(crate) struct ReadPlan {
    pieces: Vec<Piece>,
    /// Bytes of the first block before the read's offset.
    skip: usize,
    /// Bytes the read returns.
    len: usize,
}

impl ReadPlan {
    /// Reads the device's runs and puts the pieces together.
    pub(crate) fn run(self, device: &dyn Zoned) -> Result<Vec<u8>> {
        let blocks = |n: u64| n as usize * BLOCK_BYTES;
        let mut out = Vec::with_capacity(self.skip + self.len + BLOCK_BYTES);
        for piece in self.pieces {
            match piece {
                Piece::Bytes(block) => out.extend_from_slice(&block),
                Piece::Zeros(n) => out.resize(out.len() + blocks(n), 0),
                Piece::Device(run) if out.is_empty() => {
                    out = device.read(run.lba.get(), run.count)?
                }
                Piece::Device(run) => out.extend(device.read(run.lba.get(), run.count)?),
            }
        }
        out.drain(..self.skip.min(out.len()));
        out.truncate(self.len);
        Ok(out)
    }
}

impl State {
    /// Whether a file with no name left still has handles open: its blocks are freed at its
    /// last close ([`State::drop_link`]).
    pub(super) fn unlinked_but_open(&self) -> bool {
        self.buffers
            .opened()
            .any(|ino| self.attr(ino).is_ok_and(|a| a.nlink == 0))
    }

    /// The current attributes of `ino`, buffered changes included.
    pub(super) fn attr(&self, ino: InodeNo) -> Result<Attr> {
        if let Some(attr) = self.buffers.attr(ino) {
            return Ok(attr);
        }
        self.meta
            .inode(ino)
            .map(|i| i.attr)
            .ok_or(LfsError::NotFound)
    }

    /// Whether the map of `ino` has no block `b` (what [`crate::buffers::Buffers::insert`]
    /// counts as fresh).
    fn unmapped(&self, ino: InodeNo, b: u64) -> Result<bool> {
        let inode = self.meta.inode(ino).ok_or(LfsError::NotFound)?;
        Ok(inode.extents.lookup(b).0.is_none())
    }

    fn dirty_entry(&mut self, ino: InodeNo) -> Result<&mut Dirty> {
        let attr = self.attr(ino)?;
        Ok(self.buffers.entry(ino, attr))
    }

    /// Where block `b` of `ino` is on the device, and how many blocks continue the run (or,
    /// for a hole, how many blocks the hole has). Blocks cut by a buffered truncation are
    /// holes even while the device's map still has them.
    pub(super) fn device_block(&self, ino: InodeNo, b: u64) -> Result<(Option<Lba>, u64)> {
        let inode = self.meta.inode(ino).ok_or(LfsError::NotFound)?;
        let trunc = self.buffers.get(ino).and_then(|d| d.trunc).map(blocks_of);
        match trunc {
            Some(t) if b >= t => Ok((None, u64::MAX)),
            Some(t) => {
                let (lba, run) = inode.extents.lookup(b);
                Ok((lba, run.min(t - b)))
            }
            None => Ok(inode.extents.lookup(b)),
        }
    }

    /// Block `b` of `ino` as it is now (buffered, on the device, or zeros).
    fn load_block(&mut self, ino: InodeNo, b: u64) -> Result<Vec<u8>> {
        if let Some(block) = self.buffers.block(ino, b) {
            return Ok(block.clone());
        }
        match self.device_block(ino, b)?.0 {
            Some(lba) => {
                self.stats.data_read_blocks += 1;
                Ok(self.device.read(lba.get(), 1)?)
            }
            None => Ok(vec![0; BLOCK_BYTES]),
        }
    }

    fn file_attr(&self, ino: InodeNo) -> Result<Attr> {
        let attr = self.attr(ino)?;
        match attr.kind {
            FileKind::File => Ok(attr),
            FileKind::Dir => Err(LfsError::IsDir),
            // A FIFO's or device's data never passes through the file system.
            _ => Err(LfsError::InvalidArgument("not a regular file")),
        }
    }

    /// Writes `data` at `offset` of file `ino` into its buffer; with `kill_suid_sgid` (a
    /// writer without `CAP_FSETID`) the file also loses its set-user-ID and set-group-ID
    /// bits ([`Attr::kill_suid_sgid`]), logged with the data's Inode record.
    pub(super) fn write_with(
        &mut self,
        ino: InodeNo,
        offset: u64,
        data: &[u8],
        kill_suid_sgid: bool,
    ) -> Result<u32> {
        let attr = self.file_attr(ino)?;
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&e| e <= MAX_FILE_BYTES)
            .ok_or(LfsError::FileTooBig)?;
        if data.is_empty() {
            // Nothing to store (a write stream's kernel may keep none of a write), but the
            // caller did write: its set-ID bits go as they would with bytes.
            let mut after = attr;
            if kill_suid_sgid && after.kill_suid_sgid() {
                let d = self.dirty_entry(ino)?;
                d.attr.perm = after.perm;
                d.attr.ctime = Time::now();
            }
            return Ok(0);
        }
        let (first, last) = (offset / BLOCK_BYTES as u64, (end - 1) / BLOCK_BYTES as u64);
        // Admission: blocks that will take new space must fit.
        let mapped = |s: &State, b: u64| {
            s.device_block(ino, b).is_ok_and(|(lba, _)| lba.is_some())
                || s.buffers.block(ino, b).is_some()
        };
        let new = (first..=last).filter(|&b| !mapped(self, b)).count() as u64;
        if self.used_blocks() + new > self.capacity_blocks() {
            return Err(LfsError::NoSpace);
        }
        let mut pos = 0usize;
        for b in first..=last {
            let block_start = b * BLOCK_BYTES as u64;
            let from = (offset.max(block_start) - block_start) as usize;
            let to = ((end - block_start) as usize).min(BLOCK_BYTES);
            let piece = &data[pos..pos + (to - from)];
            pos += to - from;
            // A block already buffered is edited where it is.
            if let Some(block) = self.buffers.block_mut(ino, b) {
                block[from..to].copy_from_slice(piece);
                continue;
            }
            let whole = from == 0 && to == BLOCK_BYTES;
            let mut block = if whole || block_start >= attr.size {
                vec![0; BLOCK_BYTES]
            } else {
                self.load_block(ino, b)?
            };
            block[from..to].copy_from_slice(piece);
            let fresh = self.unmapped(ino, b)?;
            self.buffers.insert(ino, attr, b, block, fresh);
        }
        let now = Time::now();
        let d = self.dirty_entry(ino)?;
        d.attr.size = d.attr.size.max(end);
        d.attr.mtime = now;
        d.attr.ctime = now;
        if kill_suid_sgid {
            d.attr.kill_suid_sgid();
        }
        let file_full = d.blocks.len() >= FILE_DIRTY_LIMIT;
        if self.buffers.over_total_limit() {
            // Memory pressure is every file's: flushing only this one would leave the others'
            // buffers in place and make every later small write a transaction of its own.
            self.flush_all_files()?;
        } else if file_full {
            self.flush_file(ino)?;
        }
        Ok(data.len() as u32)
    }

    /// Sets the size of file `ino`.
    pub(super) fn truncate(&mut self, ino: InodeNo, size: u64) -> Result<()> {
        let attr = self.file_attr(ino)?;
        if size > MAX_FILE_BYTES {
            return Err(LfsError::FileTooBig);
        }
        if size < attr.size {
            let keep = blocks_of(size);
            let tail = size % BLOCK_BYTES as u64;
            let partial = if tail != 0 {
                let mut block = self.load_block(ino, keep - 1)?;
                block[tail as usize..].fill(0);
                Some(block)
            } else {
                None
            };
            let inode = self.meta.inode(ino).ok_or(LfsError::NotFound)?;
            self.buffers
                .cut(ino, keep, |b| inode.extents.lookup(b).0.is_none());
            let d = self.dirty_entry(ino)?;
            d.trunc = Some(d.trunc.map_or(size, |t| t.min(size)));
            if let Some(block) = partial {
                let fresh = self.unmapped(ino, keep - 1)?;
                self.buffers.insert(ino, attr, keep - 1, block, fresh);
            }
        }
        let now = Time::now();
        let d = self.dirty_entry(ino)?;
        d.attr.size = size;
        d.attr.mtime = now;
        d.attr.ctime = now;
        Ok(())
    }

    /// What reading up to `len` bytes at `offset` of file `ino` takes: buffered blocks copied
    /// now, holes, and runs of blocks on the device to read after the lock is let go
    /// ([`ReadPlan::run`]; the caller holds off resets meanwhile, see [`crate::reads`]).
    pub(super) fn read_plan(&mut self, ino: InodeNo, offset: u64, len: u32) -> Result<ReadPlan> {
        let attr = self.file_attr(ino)?;
        let mut plan = ReadPlan::default();
        if offset >= attr.size || len == 0 {
            return Ok(plan);
        }
        let end = attr.size.min(offset + u64::from(len));
        let (first, last) = (offset / BLOCK_BYTES as u64, (end - 1) / BLOCK_BYTES as u64);
        let mut b = first;
        while b <= last {
            if let Some(block) = self.buffers.block(ino, b) {
                plan.pieces.push(Piece::Bytes(block.clone()));
                b += 1;
                continue;
            }
            let (lba, run) = self.device_block(ino, b)?;
            // Stop the run at the next buffered block.
            let next_dirty = self
                .buffers
                .get(ino)
                .and_then(|d| d.blocks.range(b..).next().map(|(&k, _)| k))
                .unwrap_or(u64::MAX);
            let n = run.min(last + 1 - b).min(next_dirty - b);
            plan.pieces.push(match lba {
                Some(lba) => {
                    self.stats.data_read_blocks += n;
                    Piece::Device(Run { lba, count: n })
                }
                None => Piece::Zeros(n),
            });
            b += n;
        }
        plan.skip = (offset - first * BLOCK_BYTES as u64) as usize;
        plan.len = (end - offset) as usize;
        Ok(plan)
    }

    /// Appends `data`, the blocks of `runs` of file `ino` (each its first file block and its
    /// block count) one after the other, to the hot or cold zone in as few appends as the
    /// device's append limit allows (a flush of scattered blocks is not one append per block),
    /// and commits one transaction: `first`, the map records of where the runs landed, then
    /// `last`. The zones the data lands in are kept from being reset or
    /// cleaned until the transaction is committed.
    ///
    /// Until then the live counts do not show the new blocks. Appending can move on to a new
    /// zone, which may have to clean first, and cleaning resets every zone whose live count
    /// is zero: without the guard, a zone that the first part of a flush filled would be reset
    /// under it, and the committed map would point into an empty zone.
    pub(super) fn write_mapped(
        &mut self,
        use_: ZoneUse,
        ino: InodeNo,
        runs: &[(u64, u64)],
        data: &[u8],
        first: Vec<Record>,
        last: Vec<Record>,
    ) -> Result<()> {
        let mark = self.space.unmapped_mark();
        let result = (|| {
            let mut records = first;
            let mut files = runs.iter().copied();
            let mut file_run = files.next();
            for placed in self.write_data(use_, data)? {
                let (mut lba, mut left) = (placed.lba, placed.count);
                while left > 0 {
                    let Some((file_block, count)) = file_run.as_mut() else {
                        return Err(bug("more blocks landed than the runs hold"));
                    };
                    let n = left.min(*count);
                    records.push(Record::Map {
                        ino,
                        file_block: *file_block,
                        lba,
                        count: n as u32,
                    });
                    (*file_block, *count) = (*file_block + n, *count - n);
                    (lba, left) = (lba.offset(n), left - n);
                    if *count == 0 {
                        file_run = files.next();
                    }
                }
            }
            records.extend(last);
            self.commit(records)
        })();
        self.space.release_unmapped(mark);
        result
    }

    /// Appends `data` (whole blocks) to the hot or cold zone; returns where it landed. Each
    /// zone it lands in joins `unmapped` ([`State::write_mapped`] takes them out again).
    fn write_data(&mut self, use_: ZoneUse, data: &[u8]) -> Result<Vec<Run>> {
        let mut runs = Vec::new();
        let mut rest = data;
        let max_piece = self.device.info().zasl_lbas.max(1) as u64;
        while !rest.is_empty() {
            let active = match use_ {
                ZoneUse::Cold => self.meta.cold(),
                _ => self.meta.hot(),
            };
            let zone = match active {
                Some(z) if self.space.room(z) > 0 => z,
                _ => self.open_data_zone(use_)?,
            };
            let blocks = (rest.len() / BLOCK_BYTES) as u64;
            let n = blocks.min(self.space.room(zone)).min(max_piece);
            let (piece, tail) = rest.split_at(n as usize * BLOCK_BYTES);
            self.space.hold_unmapped(zone);
            let lba = self.append(zone, piece.to_vec())?;
            self.space.appended(zone, lba, n)?;
            self.stats.data_write_blocks += n;
            runs.push(Run { lba, count: n });
            rest = tail;
        }
        Ok(runs)
    }

    /// Opens a new hot or cold zone (the old one, if any, is full).
    fn open_data_zone(&mut self, use_: ZoneUse) -> Result<ZoneId> {
        let old = match use_ {
            ZoneUse::Cold => self.meta.cold(),
            _ => self.meta.hot(),
        };
        let zone = match use_ {
            ZoneUse::Cold => self.take_reserved_zone()?,
            _ => self.take_user_zone()?,
        };
        let age = self.space.open_tick();
        let mut records = Vec::new();
        if let Some(old) = old {
            let born = self.meta.born().get(&old).copied().unwrap_or(0);
            records.push(Record::Zone {
                zone: old,
                use_: ZoneUse::Data,
                born,
            });
        }
        records.push(Record::Zone {
            zone,
            use_,
            born: age,
        });
        self.commit(records)?;
        if let Some(old) = old {
            self.finish_zone(old)?;
        }
        Ok(zone)
    }

    /// Writes the buffered blocks of `ino` and logs its new map and attributes in one
    /// transaction.
    pub(super) fn flush_file(&mut self, ino: InodeNo) -> Result<()> {
        let Some(d) = self.buffers.take(ino) else {
            return Ok(());
        };
        if !self.meta.contains(ino) {
            return Err(bug(format!(
                "inode {} has buffered data but no inode",
                ino.0
            )));
        }
        let result = self.write_dirty(ino, &d);
        if result.is_err() {
            // Keep the buffer: a later flush may find room (nothing of it was logged).
            self.buffers.put_back(ino, d);
        }
        result
    }

    fn write_dirty(&mut self, ino: InodeNo, d: &Dirty) -> Result<()> {
        let keep = blocks_of(d.attr.size);
        // Runs of consecutive file blocks, and all their bytes in file order.
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let mut data = Vec::with_capacity(d.blocks.len() * BLOCK_BYTES);
        for (&b, block) in d.blocks.range(..keep) {
            match runs.last_mut() {
                Some((start, count)) if *start + *count == b => *count += 1,
                _ => runs.push((b, 1)),
            }
            data.extend_from_slice(block);
        }
        let first = d
            .trunc
            .map(|size| Record::Truncate { ino, size })
            .into_iter()
            .collect();
        let last = vec![Record::Inode(d.attr)];
        self.write_mapped(ZoneUse::Hot, ino, &runs, &data, first, last)
    }

    /// Flushes every file's buffer.
    pub(super) fn flush_all_files(&mut self) -> Result<()> {
        for ino in self.buffers.inos() {
            self.flush_file(ino)?;
        }
        Ok(())
    }
}
