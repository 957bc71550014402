//! Checkpoints: the whole metadata state written as an image into the metadata stream, and a
//! one-block record in the checkpoint log (zones 0 and 1) pointing at it. The record also
//! carries the superblock's fields, so the checkpoint log is the superblock log too: mount
//! takes the valid record with the highest sequence number in either zone.

use super::error::{bug, Result};
use super::format::{CheckpointRecord, ChunkHeader, ChunkKind, Encode, BLOCK_BYTES};
use super::ids::{Lba, ZoneId};
use super::space::{Space, CKPT_ZONES};
use super::State;
use crate::zoned::Zoned;

/// The checkpoint log's writer state: the latest record and the zone it is in.
///
/// Invariants:
/// - `zone` is one of [`CKPT_ZONES`].
/// - Each record written has the sequence number after `last`'s and repeats its file system
///   id, geometry and creation time ([`CkptLog::next`]).
#[derive(Debug, Clone, Copy)]
pub struct CkptLog {
    /// The zone the latest record is in.
    zone: ZoneId,
    /// The latest record (its sequence, and the fields every record repeats).
    last: CheckpointRecord,
}

impl CkptLog {
    /// The log of a new file system: `first` (sequence 0, no image) stands for the record
    /// before the first one, which goes into the first checkpoint zone.
    pub fn new(first: CheckpointRecord) -> CkptLog {
        CkptLog {
            zone: CKPT_ZONES[0],
            last: first,
        }
    }

    /// The latest record.
    pub fn last(&self) -> &CheckpointRecord {
        &self.last
    }

    /// The record after the latest one, naming an image of `image_chunks` chunks from
    /// chunk `image_seq` at `image_lba`.
    pub fn next(&self, image_lba: Lba, image_seq: u64, image_chunks: u32) -> CheckpointRecord {
        CheckpointRecord {
            seq: self.last.seq + 1,
            image_lba,
            image_seq,
            image_chunks,
            ..self.last
        }
    }

    /// The zone the latest record is in: the next goes there too while it has room.
    fn zone(&self) -> ZoneId {
        self.zone
    }

    /// The checkpoint zone that is not the current one.
    fn other_zone(&self) -> ZoneId {
        CKPT_ZONES[usize::from(self.zone == CKPT_ZONES[0])]
    }

    /// `rec` is written in `zone`.
    fn written(&mut self, zone: ZoneId, rec: CheckpointRecord) {
        self.zone = zone;
        self.last = rec;
    }
}

/// The newest valid checkpoint record in the checkpoint zones, and its zone.
pub fn find_latest(device: &dyn Zoned, zones: &Space) -> Result<Option<CkptLog>> {
    let mut best: Option<CkptLog> = None;
    for zone in CKPT_ZONES {
        let written = zones.written(zone);
        if written == 0 {
            continue;
        }
        let bytes = match device.read(zones.zslba(zone).get(), written) {
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
        let mut start: Option<(Lba, u64, usize)> = None;
        let mut blocks = 0;
        for payload in &chunks {
            let before_seq = self.stream.next_seq();
            let chain_len = self.stream.chain_len();
            blocks += self.append_chunk(ChunkKind::Image, payload)?;
            if start.is_none() {
                // The first image chunk is the last chunk written (a link may precede it).
                let tail = self.stream.tail().ok_or_else(|| bug("no stream tail"))?;
                let blocks_of_chunk = ChunkHeader::blocks_for(payload.len()) as u64;
                let lba = self
                    .space
                    .zslba(tail)
                    .offset(self.space.written(tail) - blocks_of_chunk);
                let linked = self.stream.chain_len() - chain_len;
                start = Some((lba, before_seq + linked as u64, self.stream.chain_len() - 1));
            }
        }
        let (image_lba, image_seq, chain_at) = start.ok_or_else(|| bug("an empty image"))?;
        // The image must be durable before the record that names it.
        self.durable.sync(&*self.device)?;
        let image_chunks = (self.stream.next_seq() - image_seq) as u32;
        let rec = self.ckpt.next(image_lba, image_seq, image_chunks);
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
        let mut zone = self.ckpt.zone();
        if self.space.room(zone) == 0 {
            let other = self.ckpt.other_zone();
            self.reset_zone(other)?;
            zone = other;
        }
        let lba = self.append(zone, rec.to_bytes())?;
        self.space.appended(zone, lba, 1)?;
        self.ckpt.written(zone, rec);
        self.stats.meta_blocks += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each next record counts the sequence on and repeats the id, geometry and creation
    /// time; the log moves between the two checkpoint zones.
    #[test]
    fn records_follow_the_latest() {
        let first = CheckpointRecord {
            fs_id: 7,
            seq: 0,
            zone_size_lbas: 64,
            zone_cap_lbas: 60,
            nr_zones: 8,
            image_lba: Lba(0),
            image_seq: 0,
            image_chunks: 0,
            created: 99,
        };
        let mut log = CkptLog::new(first);
        assert_eq!(
            (log.zone(), log.other_zone()),
            (CKPT_ZONES[0], CKPT_ZONES[1])
        );
        let rec = log.next(Lba(130), 5, 2);
        assert_eq!(
            rec,
            CheckpointRecord {
                seq: 1,
                image_lba: Lba(130),
                image_seq: 5,
                image_chunks: 2,
                ..first
            }
        );
        log.written(CKPT_ZONES[1], rec);
        assert_eq!(log.last(), &rec);
        assert_eq!(log.other_zone(), CKPT_ZONES[0]);
        assert_eq!(log.next(Lba(200), 9, 1).seq, 2);
    }
}
