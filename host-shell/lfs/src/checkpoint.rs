//! Checkpoints: the whole metadata state written as an image into the metadata stream, and a
//! one-block record in the checkpoint log (zones 0 and 1) pointing at it. The record also
//! carries the superblock's fields, so the checkpoint log is the superblock log too: mount
//! takes the valid record with the highest sequence number in either zone.

use super::error::{bug, Result};
use super::format::{CheckpointRecord, ChunkHeader, ChunkKind, Encode, BLOCK_BYTES};
use super::ids::ZoneId;
use super::space::{Space, CKPT_ZONES};
use super::State;
use crate::zoned::Zoned;

/// The checkpoint log's writer state.
#[derive(Debug, Clone, Copy)]
pub struct CkptLog {
    /// The zone the latest record is in.
    pub zone: ZoneId,
    /// The latest record (its sequence, and the fields every record repeats).
    pub last: CheckpointRecord,
}

/// The newest valid checkpoint record in the checkpoint zones, and its zone.
pub fn find_latest(device: &dyn Zoned, zones: &Space) -> Result<Option<CkptLog>> {
    let mut best: Option<CkptLog> = None;
    for zone in CKPT_ZONES {
        let written = zones.written(zone);
        if written == 0 {
            continue;
        }
        let bytes = match device.read(zones.zslba(zone), written) {
            Ok(b) => b,
            // A damaged zone: the other one holds the latest record.
            Err(e) if e.status() == Some(common::Status::UnrecoveredReadError) => continue,
            Err(e) => return Err(e.into()),
        };
        for block in bytes.chunks(BLOCK_BYTES) {
            let Ok(rec) = CheckpointRecord::decode(block) else {
                continue;
            };
            if rec.zone_size_lbas != zones.zone_lbas()
                || rec.zone_cap_lbas != zones.cap()
                || rec.nr_zones != zones.nr()
            {
                continue;
            }
            if best.is_none_or(|b| rec.seq > b.last.seq) {
                best = Some(CkptLog { zone, last: rec });
            }
        }
    }
    Ok(best)
}

impl State {
    /// Writes a checkpoint: flushes every dirty file and the log, writes the image of the
    /// whole state into the stream (into a fresh zone if the stream has no clean end), then
    /// the record; zones the new chain no longer holds are reset.
    pub(super) fn checkpoint(&mut self) -> Result<()> {
        self.flush_all_files()?;
        if self.stream.tail().is_some() {
            self.flush_log()?;
        } else {
            // The pending records go into the image instead of the (broken) log.
            self.stream.discard_pending();
        }
        let records = self.meta.image();
        if self.stream.tail().is_none() {
            let zone = self.take_reserved_zone()?;
            self.stream.restart_in(zone)?;
        }
        // The image starts where the stream ends now.
        let chunks = self.stream.pack(records.iter().map(Encode::to_bytes));
        let mut start: Option<(u64, u64, usize)> = None;
        let mut blocks = 0;
        for payload in &chunks {
            let before_seq = self.stream.next_seq();
            let chain_len = self.stream.chain_len();
            blocks += self.append_chunk(ChunkKind::Image, payload)?;
            if start.is_none() {
                // The first image chunk is the last chunk written (a link may precede it).
                let tail = self.stream.tail().ok_or_else(|| bug("no stream tail"))?;
                let blocks_of_chunk = ChunkHeader::blocks_for(payload.len()) as u64;
                let lba = self.space.zslba(tail) + self.space.written(tail) - blocks_of_chunk;
                let linked = self.stream.chain_len() - chain_len;
                start = Some((lba, before_seq + linked as u64, self.stream.chain_len() - 1));
            }
        }
        let (image_lba, image_seq, chain_at) = start.ok_or_else(|| bug("an empty image"))?;
        // The image must be durable before the record that names it.
        self.durable.sync(&*self.device)?;
        let image_chunks = (self.stream.next_seq() - image_seq) as u32;
        let rec = CheckpointRecord {
            seq: self.ckpt.last.seq + 1,
            image_lba,
            image_seq,
            image_chunks,
            ..self.ckpt.last
        };
        self.write_ckpt_record(rec)?;
        // The old chain's zones are reset below once nothing else holds them.
        self.stream.checkpointed(chain_at, blocks);
        self.stats.checkpoints += 1;
        for z in self.reclaimable_zones() {
            self.reset_zone(z)?;
        }
        Ok(())
    }

    fn write_ckpt_record(&mut self, rec: CheckpointRecord) -> Result<()> {
        let mut zone = self.ckpt.zone;
        if self.space.room(zone) == 0 {
            let other = CKPT_ZONES[usize::from(zone == CKPT_ZONES[0])];
            self.reset_zone(other)?;
            zone = other;
        }
        let lba = self.append(zone, rec.to_bytes())?;
        self.space.appended(zone, lba, 1)?;
        self.ckpt = CkptLog { zone, last: rec };
        self.stats.meta_blocks += 1;
        Ok(())
    }
}
