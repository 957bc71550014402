//! Replay (roll-forward) of the metadata stream at mount: the checkpoint's image, then the
//! log chunks after it up to the first torn, out-of-sequence or missing one.

use super::error::{bug, corrupted, LfsError, Result};
use super::format::{decode_records, ChunkHeader, ChunkKind, Corrupt};
use super::ids::{Lba, ZoneId};
use super::meta::Meta;
use super::space::Space;
use crate::zoned::Zoned;

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
    image_lba: Lba,
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
        let off = zones.offset_in_zone(pos);
        let wp = zones.written(zone);
        let chunk = read_chunk(device, pos, wp - off.min(wp), fs_id, seq)?;
        let Some((header, bytes)) = chunk else {
            if in_image {
                let newer = device.read(pos.get(), 1).map(|b| ChunkHeader::decode(&b));
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
                    pos = pos.offset(blocks);
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
                pos = pos.offset(blocks);
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
    lba: Lba,
    room: u64,
    fs_id: u64,
    seq: u64,
) -> Result<Option<(ChunkHeader, Vec<u8>)>> {
    if room == 0 {
        return Ok(None);
    }
    let first = match device.read(lba.get(), 1) {
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
        match device.read(lba.offset(1).get(), u64::from(header.blocks) - 1) {
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
