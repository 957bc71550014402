//! The metadata log: checkpoints of what the data pages cannot tell.
//!
//! Data pages tell which blocks a zone holds and how far it was written. Everything else is
//! in a *checkpoint*, written whenever it changes (zone Reset, Finish, Offline, a zone turning
//! Read Only, a block retired): each block's erase count and bad flag, each zone's generation
//! and its condition (normal, finished, read only, offline).
//!
//! Checkpoints are appended to one of two reserved blocks; when the active block has no room
//! left, the other one is erased and takes over. A checkpoint spans `checkpoint_pages`
//! consecutive pages, each with a [`Record::Meta`] spare record; it counts only if all its
//! pages are valid, so a torn checkpoint leaves the previous one in force. At mount the log's
//! end is found by binary search (pages are programmed in order) and the newest complete
//! checkpoint of either block wins.
//!
//! Checkpoint bytes (little-endian): magic `u32` at 0, version `u16` at 4, sequence `u64` at 8,
//! block count `u32` at 16, zone count `u32` at 20, zeros to 32; then per block its erase count
//! `u32` and flags `u8` (bit 0: bad); per zone its generation `u32` and condition `u8`; then the
//! CRC-32C of everything before it. Unused page bytes are zero.

use alloc::vec;
use alloc::vec::Vec;

use crate::nand::{Nand, PageAddr};

use super::config::Layout;
use super::record::{self, crc32c, PageContent, Record};

const MAGIC: u32 = 0x5450_4B43;
const VERSION: u16 = 1;
const HEADER: usize = 32;
const ENTRY: usize = 5;

/// A block's persistent facts.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockMeta {
    /// Times the block was erased (best effort: an erase followed by a power cut before the
    /// block's next program or checkpoint is not counted).
    pub erase_count: u32,
    /// Retired after a failed program or erase.
    pub bad: bool,
}

/// A zone's condition beyond what its data pages show.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum ZoneCond {
    /// State follows from the data written.
    #[default]
    Normal,
    /// Finished by the host: Full whatever was written.
    Finished,
    /// A program failed: Read Only.
    ReadOnly,
    /// Taken offline.
    Offline,
}

/// A zone's persistent facts.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct ZoneMeta {
    /// Generation: bumped at each reset; data pages of older generations are stale.
    pub gen: u32,
    /// Condition.
    pub cond: ZoneCond,
}

/// Bytes of a checkpoint over `blocks` blocks and `zones` zones.
pub const fn encoded_len(blocks: u32, zones: u32) -> usize {
    HEADER + ENTRY * (blocks as usize + zones as usize) + 4
}

fn encode(seq: u64, blocks: &[BlockMeta], zones: &[ZoneMeta]) -> Vec<u8> {
    let mut b = Vec::with_capacity(encoded_len(blocks.len() as u32, zones.len() as u32));
    b.extend_from_slice(&MAGIC.to_le_bytes());
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&seq.to_le_bytes());
    b.extend_from_slice(&(blocks.len() as u32).to_le_bytes());
    b.extend_from_slice(&(zones.len() as u32).to_le_bytes());
    b.resize(HEADER, 0);
    for m in blocks {
        b.extend_from_slice(&m.erase_count.to_le_bytes());
        b.push(u8::from(m.bad));
    }
    for z in zones {
        b.extend_from_slice(&z.gen.to_le_bytes());
        b.push(match z.cond {
            ZoneCond::Normal => 0,
            ZoneCond::Finished => 1,
            ZoneCond::ReadOnly => 2,
            ZoneCond::Offline => 3,
        });
    }
    let crc = crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// A decoded checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Sequence number (the newest wins).
    pub seq: u64,
    /// Per block.
    pub blocks: Vec<BlockMeta>,
    /// Per zone.
    pub zones: Vec<ZoneMeta>,
}

/// Decodes untrusted checkpoint bytes; `None` if they are not a valid checkpoint.
fn decode(bytes: &[u8]) -> Option<Checkpoint> {
    let u32_at = |at: usize| Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    if u32_at(0)? != MAGIC || bytes.get(4..6)? != VERSION.to_le_bytes() {
        return None;
    }
    let seq = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
    let (nb, nz) = (u32_at(16)?, u32_at(20)?);
    let len = encoded_len(nb, nz);
    if u32_at(len - 4)? != crc32c(bytes.get(..len - 4)?) {
        return None;
    }
    let entry = |i: usize| {
        Some((
            u32_at(HEADER + ENTRY * i)?,
            *bytes.get(HEADER + ENTRY * i + 4)?,
        ))
    };
    let mut blocks = Vec::with_capacity(nb as usize);
    for i in 0..nb as usize {
        let (erase_count, flags) = entry(i)?;
        blocks.push(BlockMeta {
            erase_count,
            bad: flags & 1 != 0,
        });
    }
    let mut zones = Vec::with_capacity(nz as usize);
    for i in nb as usize..(nb + nz) as usize {
        let (gen, cond) = entry(i)?;
        let cond = match cond {
            0 => ZoneCond::Normal,
            1 => ZoneCond::Finished,
            2 => ZoneCond::ReadOnly,
            3 => ZoneCond::Offline,
            _ => return None,
        };
        zones.push(ZoneMeta { gen, cond });
    }
    Some(Checkpoint { seq, blocks, zones })
}

/// Where the next checkpoint goes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct MetaLog {
    active: usize,
    next_page: u32,
    seq: u64,
}

impl MetaLog {
    /// The log of a freshly formatted device whose meta blocks are erased.
    pub fn fresh() -> Self {
        MetaLog {
            active: 0,
            next_page: 0,
            seq: 0,
        }
    }

    /// Appends a checkpoint of `blocks` and `zones`, switching blocks when the active one is
    /// full or a program in it fails (once). The erase of the new block is counted in `blocks`.
    pub fn write<N: Nand>(
        &mut self,
        nand: &mut N,
        layout: &Layout,
        blocks: &mut [BlockMeta],
        zones: &[ZoneMeta],
    ) -> Result<(), N::Error> {
        let g = layout.geometry;
        let pages = layout.checkpoint_pages;
        let mut retried = false;
        loop {
            if self.next_page + pages > g.pages_per_block || retried {
                let other = 1 - self.active;
                let block = layout.meta_blocks[other];
                blocks[block.0 as usize].erase_count += 1;
                nand.erase_block(block)?;
                self.active = other;
                self.next_page = 0;
            }
            let block = layout.meta_blocks[self.active];
            let seq = self.seq + 1;
            let mut blob = encode(seq, blocks, zones);
            blob.resize(pages as usize * g.page_bytes as usize, 0);
            let mut spare = vec![0u8; g.spare_bytes as usize];
            let erase_count = blocks[block.0 as usize].erase_count;
            let mut failed = None;
            for (i, chunk) in blob.chunks(g.page_bytes as usize).enumerate() {
                let rec = Record::Meta {
                    seq,
                    index: i as u16,
                    count: pages as u16,
                    erase_count,
                };
                record::encode(rec, chunk, &mut spare);
                let addr = PageAddr::new(block, self.next_page + i as u32);
                if let Err(e) = nand.program_page(addr, chunk, &spare) {
                    failed = Some((i as u32, e));
                    break;
                }
            }
            match failed {
                None => {
                    self.next_page += pages;
                    self.seq = seq;
                    return Ok(());
                }
                Some((i, e)) => {
                    use crate::nand::{NandError, NandErrorKind};
                    if retried || e.kind() != NandErrorKind::ProgramFailed {
                        return Err(e);
                    }
                    self.next_page += i + 1;
                    retried = true;
                }
            }
        }
    }

    /// Finds the newest complete checkpoint and the log position after it. `Ok(None)` if
    /// neither block holds one.
    pub fn find<N: Nand>(
        nand: &mut N,
        layout: &Layout,
    ) -> Result<Option<(Checkpoint, MetaLog)>, N::Error> {
        let g = layout.geometry;
        let mut data = vec![0u8; g.page_bytes as usize];
        let mut spare = vec![0u8; g.spare_bytes as usize];
        let mut best: Option<(Checkpoint, MetaLog)> = None;
        for (k, &block) in layout.meta_blocks.iter().enumerate() {
            let (mut lo, mut hi) = (0, g.pages_per_block);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                let content = record::read(nand, PageAddr::new(block, mid), &mut data, &mut spare)?;
                if content == PageContent::Erased {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            let next_page = lo;
            let mut p = next_page;
            while p > 0 {
                p -= 1;
                let content = record::read(nand, PageAddr::new(block, p), &mut data, &mut spare)?;
                let PageContent::Valid(Record::Meta {
                    seq, index, count, ..
                }) = content
                else {
                    continue;
                };
                let count = u32::from(count);
                if u32::from(index) + 1 != count || p + 1 < count {
                    continue;
                }
                let last = data.clone();
                let mut blob = Vec::with_capacity(count as usize * data.len());
                let mut whole = true;
                for i in 0..count - 1 {
                    let addr = PageAddr::new(block, p + 1 - count + i);
                    let c = record::read(nand, addr, &mut data, &mut spare)?;
                    let expected = |r: Record| matches!(r, Record::Meta { seq: s, index: x, .. } if s == seq && u32::from(x) == i);
                    if !matches!(c, PageContent::Valid(r) if expected(r)) {
                        whole = false;
                        break;
                    }
                    blob.extend_from_slice(&data);
                }
                blob.extend_from_slice(&last);
                let Some(ckpt) = decode(&blob).filter(|c| whole && c.seq == seq) else {
                    continue;
                };
                if best.as_ref().is_none_or(|(b, _)| b.seq < seq) {
                    best = Some((
                        ckpt,
                        MetaLog {
                            active: k,
                            next_page,
                            seq,
                        },
                    ));
                }
                break;
            }
        }
        Ok(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint decodes to what was encoded; a flipped byte makes it invalid.
    #[test]
    fn round_trip() {
        let blocks = [
            BlockMeta {
                erase_count: 7,
                bad: true,
            },
            BlockMeta::default(),
        ];
        let zones = [ZoneMeta {
            gen: 3,
            cond: ZoneCond::Finished,
        }];
        let mut b = encode(9, &blocks, &zones);
        assert_eq!(b.len(), encoded_len(2, 1));
        let c = decode(&b).unwrap();
        assert_eq!(
            (c.seq, &c.blocks[..], &c.zones[..]),
            (9, &blocks[..], &zones[..])
        );
        b[HEADER] ^= 1;
        assert_eq!(decode(&b), None);
    }
}
