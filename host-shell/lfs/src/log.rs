//! The metadata stream: chunks of records appended to metadata zones, linked from zone to
//! zone, and its replay (roll-forward) at mount.
//!
//! Every change is a transaction of records, applied to the in-memory state at once and
//! queued; a flush writes the queue as chunks (whole transactions only), so after a power cut
//! the stream holds a prefix of the transactions. A torn or invalid chunk ends the replay.

use super::error::{bug, corrupted, LfsError, Result};
use super::format::{
    decode_records, Chunk, ChunkHeader, ChunkKind, Corrupt, Encode, Record, BLOCK_BYTES,
};
use super::ids::ZoneId;
use super::meta::Meta;
use super::space::Space;
use super::State;
use crate::zoned::Zoned;

/// The writer's side of the metadata stream.
#[derive(Debug, Clone)]
pub struct Stream {
    pub fs_id: u64,
    /// Sequence number of the next chunk.
    pub next_seq: u64,
    /// The zone chunks are appended to; `None` when the stream has no clean end (after a torn
    /// chunk) and only a checkpoint can start it again.
    pub tail: Option<ZoneId>,
    /// Zones holding the latest checkpoint's image and the log after it, in order.
    pub chain: Vec<ZoneId>,
    /// Encoded transactions not yet written.
    pub pending: Vec<Vec<u8>>,
    /// Blocks of log chunks since the latest checkpoint.
    pub log_blocks: u64,
    /// Blocks of the latest checkpoint's image.
    pub image_blocks: u64,
    /// Largest chunk in blocks.
    pub max_chunk_blocks: usize,
}

impl State {
    /// Applies `records` to the state and queues them as one transaction.
    pub(super) fn commit(&mut self, records: Vec<Record>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        for r in &records {
            self.meta.apply(r).map_err(|e| match e {
                LfsError::Corrupted(what) => bug(format!("an operation made a bad record: {what}")),
                other => other,
            })?;
        }
        let bytes = records.to_bytes();
        if bytes.len() > ChunkHeader::capacity(self.stream.max_chunk_blocks) {
            return Err(bug(format!("a {}-byte transaction", bytes.len())));
        }
        self.stream.pending.push(bytes);
        Ok(())
    }

    /// Writes every queued transaction, then resets zones nothing durable refers to any more.
    pub(super) fn flush_log(&mut self) -> Result<()> {
        if !self.stream.pending.is_empty() {
            // The data the records name must be durable before the records.
            self.durable.sync(&*self.device)?;
        }
        let pending = std::mem::take(&mut self.stream.pending);
        let cap = ChunkHeader::capacity(self.stream.max_chunk_blocks);
        let mut payload = Vec::new();
        for t in pending {
            if !payload.is_empty() && payload.len() + t.len() > cap {
                let blocks = self.append_chunk(ChunkKind::Log, &payload)?;
                self.stream.log_blocks += blocks;
                payload.clear();
            }
            payload.extend_from_slice(&t);
        }
        if !payload.is_empty() {
            let blocks = self.append_chunk(ChunkKind::Log, &payload)?;
            self.stream.log_blocks += blocks;
        }
        for z in self.reclaimable_zones() {
            self.reset_zone(z)?;
        }
        Ok(())
    }

    /// Appends one chunk to the stream, moving to a new zone (with a link chunk) when the
    /// tail zone lacks room. Returns the blocks written.
    pub(super) fn append_chunk(&mut self, kind: ChunkKind, payload: &[u8]) -> Result<u64> {
        let need = ChunkHeader::blocks_for(payload.len()) as u64;
        let mut written = 0;
        let tail = loop {
            let Some(tail) = self.stream.tail else {
                return Err(bug("the metadata stream has no end to append to"));
            };
            // Keep one block for a link.
            if need < self.space.room(tail) {
                break tail;
            }
            let next = self.take_reserved_zone()?;
            self.write_chunk(tail, ChunkKind::Link, next, &[])?;
            written += 1;
            self.finish_zone(tail)?;
            self.stream.chain.push(next);
            self.stream.tail = Some(next);
        };
        self.write_chunk(tail, kind, ZoneId(0), payload)?;
        Ok(written + need)
    }

    fn write_chunk(
        &mut self,
        zone: ZoneId,
        kind: ChunkKind,
        link: ZoneId,
        payload: &[u8],
    ) -> Result<u64> {
        let seq = self.stream.next_seq;
        let bytes = Chunk {
            kind,
            fs_id: self.stream.fs_id,
            seq,
            link_zone: link,
            payload,
        }
        .to_bytes();
        let blocks = (bytes.len() / BLOCK_BYTES) as u64;
        let lba = self.append(zone, bytes)?;
        let expected = self.space.zslba(zone) + self.space.written(zone);
        if lba != expected {
            return Err(bug(format!("a chunk landed at LBA {lba}, not {expected}")));
        }
        self.space.appended(zone, lba, blocks)?;
        self.stream.next_seq += 1;
        self.stats.meta_blocks += blocks;
        Ok(lba)
    }
}

/// Where a replay ended.
#[derive(Debug)]
pub struct Replayed {
    pub meta: Meta,
    pub chain: Vec<ZoneId>,
    pub next_seq: u64,
    /// The zone holding the stream's end if the end is clean (the zone's write pointer sits
    /// right after the last valid chunk and a block is left for a link).
    pub clean_tail: Option<ZoneId>,
    pub log_blocks: u64,
    pub image_blocks: u64,
}

/// Replays the stream from the checkpoint's image: the image's chunks must all be valid
/// (the checkpoint was written after them); log chunks are applied until the first chunk
/// that is torn, out of sequence or not there.
pub fn replay(
    device: &dyn Zoned,
    zones: &Space,
    fs_id: u64,
    image_lba: u64,
    image_seq: u64,
    image_chunks: u32,
) -> Result<Replayed> {
    let mut meta = Meta::new(zones.nr(), zones.zone_lbas(), zones.cap());
    let mut pos = image_lba;
    let mut seq = image_seq;
    let first_zone = zones.zone_of(image_lba);
    if !zones.contains(first_zone) {
        return Err(corrupted(format!(
            "the checkpoint's image is at LBA {image_lba}, past the device"
        )));
    }
    let mut chain = vec![first_zone];
    let (mut log_blocks, mut image_blocks) = (0, 0);
    let mut index = 0u32;
    loop {
        let in_image = index < image_chunks;
        let zone = zones.zone_of(pos);
        let off = pos % zones.zone_lbas();
        let wp = zones.written(zone);
        let chunk = read_chunk(device, pos, wp - off.min(wp), fs_id, seq)?;
        let Some((header, bytes)) = chunk else {
            if in_image {
                let newer = device.read(pos, 1).map(|b| ChunkHeader::decode(&b));
                if let Ok(Err(Corrupt::Version { version, .. })) = newer {
                    return Err(LfsError::UnsupportedVersion {
                        version,
                        max: ChunkHeader::VERSION,
                    });
                }
                return Err(corrupted(format!(
                    "chunk {index} of the checkpoint's image at LBA {pos} is missing or damaged"
                )));
            }
            let clean = off == wp && wp + 1 < zones.cap();
            return Ok(Replayed {
                meta,
                chain,
                next_seq: seq,
                clean_tail: clean.then_some(zone),
                log_blocks,
                image_blocks,
            });
        };
        let blocks = u64::from(header.blocks);
        match header.kind {
            ChunkKind::Link => {
                let next = header.link_zone;
                if !zones.contains(next) || chain.contains(&next) || next.0 < 2 {
                    return Err(corrupted(format!("a link at LBA {pos} to zone {next}")));
                }
                chain.push(next);
                pos = zones.zslba(next);
            }
            ChunkKind::Image | ChunkKind::Log => {
                if header.kind == ChunkKind::Log && in_image {
                    return Err(corrupted(format!(
                        "a log chunk inside the image at LBA {pos}"
                    )));
                }
                if header.kind == ChunkKind::Image && !in_image {
                    // A later checkpoint whose record never landed: its image restates the
                    // state replayed so far, and the log may go on after it.
                    pos += blocks;
                    log_blocks += blocks;
                    seq += 1;
                    index = index.saturating_add(1);
                    continue;
                }
                let payload = header
                    .payload(&bytes)
                    .map_err(|_| bug("a checked chunk lost its payload"))?;
                for r in decode_records(payload, header.version)? {
                    meta.apply(&r)?;
                }
                pos += blocks;
            }
        }
        if in_image {
            image_blocks += blocks;
        } else {
            log_blocks += blocks;
        }
        seq += 1;
        index = index.saturating_add(1);
    }
}

/// Reads the chunk at `lba` (with `room` written blocks from there) if it is valid, of this
/// file system and has sequence number `seq`.
fn read_chunk(
    device: &dyn Zoned,
    lba: u64,
    room: u64,
    fs_id: u64,
    seq: u64,
) -> Result<Option<(ChunkHeader, Vec<u8>)>> {
    if room == 0 {
        return Ok(None);
    }
    let first = match device.read(lba, 1) {
        Ok(b) => b,
        // A page the device cannot read back ends the log like a torn chunk does.
        Err(e) if e.status() == Some(common::Status::UnrecoveredReadError) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Ok(header) = ChunkHeader::decode(&first) else {
        return Ok(None);
    };
    if header.fs_id != fs_id || header.seq != seq || u64::from(header.blocks) > room {
        return Ok(None);
    }
    let mut bytes = first;
    if header.blocks > 1 {
        match device.read(lba + 1, u64::from(header.blocks) - 1) {
            Ok(rest) => bytes.extend(rest),
            Err(e) if e.status() == Some(common::Status::UnrecoveredReadError) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
    if header.kind != ChunkKind::Link && header.payload(&bytes).is_err() {
        return Ok(None);
    }
    Ok(Some((header, bytes)))
}
