//! The metadata stream: chunks of records appended to metadata zones, linked from zone to
//! zone (its replay at mount is `replay.rs`).
//!
//! Every change is a transaction of records, applied to the in-memory state at once and
//! queued; a flush writes the queue as chunks (whole transactions only), so after a power cut
//! the stream holds a prefix of the transactions. A torn or invalid chunk ends the replay.

use super::error::{bug, LfsError, Result};
use super::format::{Chunk, ChunkHeader, ChunkKind, Encode, Record, BLOCK_BYTES};
use super::ids::{Lba, ZoneId};
use super::replay::Replayed;
use super::State;

/// The writer's side of the metadata stream: where chunks go, their sequence numbers, the
/// transactions queued for the next flush, and how much log has grown since the checkpoint.
///
/// Invariants:
/// - `tail`, when set, is the last zone of `chain`; `None` means the stream has no clean end
///   (after a torn chunk) and only a checkpoint can start it again ([`Stream::restart_in`]).
/// - `next_seq` is the sequence number of the next chunk; it moves only when a chunk was
///   written ([`Stream::chunk_written`]).
/// - Every queued transaction fits one chunk's payload on its own, so flushing never splits
///   one ([`Stream::queue`]).
#[derive(Debug, Clone)]
pub struct Stream {
    fs_id: u64,
    next_seq: u64,
    tail: Option<ZoneId>,
    /// Zones holding the latest checkpoint's image and the log after it, in order.
    chain: Vec<ZoneId>,
    /// Encoded transactions not yet written.
    pending: Vec<Vec<u8>>,
    /// Blocks of log chunks since the latest checkpoint.
    log_blocks: u64,
    /// Blocks of the latest checkpoint's image.
    image_blocks: u64,
    /// Largest chunk in blocks.
    max_chunk_blocks: usize,
}

impl Stream {
    /// The stream of a new file system: nothing written, no end yet (the first checkpoint
    /// starts it).
    pub fn new(fs_id: u64, max_chunk_blocks: usize) -> Stream {
        Stream {
            fs_id,
            next_seq: 1,
            tail: None,
            chain: Vec::new(),
            pending: Vec::new(),
            log_blocks: 0,
            image_blocks: 0,
            max_chunk_blocks,
        }
    }

    /// The stream where a replay left it. A torn end drops the chain: the next checkpoint's
    /// image starts in a fresh zone, and the old chain is released once that is durable.
    pub fn resume(fs_id: u64, max_chunk_blocks: usize, replayed: &Replayed) -> Stream {
        Stream {
            fs_id,
            next_seq: replayed.next_seq,
            tail: replayed.clean_tail,
            chain: if replayed.clean_tail.is_some() {
                replayed.chain.clone()
            } else {
                Vec::new()
            },
            pending: Vec::new(),
            log_blocks: replayed.log_blocks,
            image_blocks: replayed.image_blocks,
            max_chunk_blocks,
        }
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The zone chunks are appended to, if the stream has a clean end.
    pub fn tail(&self) -> Option<ZoneId> {
        self.tail
    }

    /// Whether `zone` holds part of the latest image or the log after it.
    pub fn holds(&self, zone: ZoneId) -> bool {
        self.chain.contains(&zone)
    }

    /// Zones in the chain.
    pub fn chain_len(&self) -> usize {
        self.chain.len()
    }

    pub fn image_blocks(&self) -> u64 {
        self.image_blocks
    }

    /// Whether the log since the last checkpoint has grown past the image or half a zone of
    /// `zone_cap` blocks (bounding replay and the zones the chain holds).
    pub fn checkpoint_due(&self, zone_cap: u64) -> bool {
        self.log_blocks >= (zone_cap / 2).max(self.image_blocks)
    }

    /// Payload bytes one chunk holds.
    pub fn capacity(&self) -> usize {
        ChunkHeader::capacity(self.max_chunk_blocks)
    }

    /// Queues one encoded transaction for the next flush.
    pub fn queue(&mut self, transaction: Vec<u8>) -> Result<()> {
        if transaction.len() > self.capacity() {
            return Err(bug(format!("a {}-byte transaction", transaction.len())));
        }
        self.pending.push(transaction);
        Ok(())
    }

    /// Puts payloads taken by [`Stream::take_payloads`] and not written back at the head of
    /// the queue, in order (each is whole transactions, at most a chunk's capacity).
    pub fn requeue(&mut self, payloads: Vec<Vec<u8>>) {
        let later = std::mem::take(&mut self.pending);
        self.pending = payloads;
        self.pending.extend(later);
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Drops the queue (a checkpoint's image restates it when the log has no clean end).
    pub fn discard_pending(&mut self) {
        self.pending.clear();
    }

    /// The queued transactions packed into chunk payloads, in order; the queue is empty after.
    pub fn take_payloads(&mut self) -> Vec<Vec<u8>> {
        let pending = std::mem::take(&mut self.pending);
        self.pack(pending)
    }

    /// `pieces` packed in order into payloads of at most [`Stream::capacity`] bytes, no piece
    /// split (a piece larger than that gets a payload of its own).
    pub fn pack(&self, pieces: impl IntoIterator<Item = Vec<u8>>) -> Vec<Vec<u8>> {
        let cap = self.capacity();
        let mut out = Vec::new();
        let mut payload: Vec<u8> = Vec::new();
        for p in pieces {
            if !payload.is_empty() && payload.len() + p.len() > cap {
                out.push(std::mem::take(&mut payload));
            }
            payload.extend_from_slice(&p);
        }
        if !payload.is_empty() {
            out.push(payload);
        }
        out
    }

    /// The next chunk's bytes (sequence number [`Stream::next_seq`]).
    pub fn chunk(&self, kind: ChunkKind, link_zone: ZoneId, payload: &[u8]) -> Vec<u8> {
        Chunk {
            kind,
            fs_id: self.fs_id,
            seq: self.next_seq,
            link_zone,
            payload,
        }
        .to_bytes()
    }

    /// The chunk [`Stream::chunk`] made is on the device.
    pub fn chunk_written(&mut self) {
        self.next_seq += 1;
    }

    /// `blocks` more blocks of log since the checkpoint.
    pub fn logged(&mut self, blocks: u64) {
        self.log_blocks += blocks;
    }

    /// The stream goes on in `zone` (after a link chunk in the old tail).
    pub fn continue_in(&mut self, zone: ZoneId) {
        self.chain.push(zone);
        self.tail = Some(zone);
    }

    /// Starts a stream with no clean end again, in empty zone `zone`.
    pub fn restart_in(&mut self, zone: ZoneId) -> Result<()> {
        if self.tail.is_some() {
            return Err(bug("the metadata stream restarted while it has an end"));
        }
        self.continue_in(zone);
        Ok(())
    }

    /// A checkpoint whose image starts in the chain's zone `image_zone` (an index) and takes
    /// `image_blocks` blocks is durable: the zones before it leave the chain (returned, for
    /// the caller to reset when nothing else holds them) and the log starts over.
    pub fn checkpointed(&mut self, image_zone: usize, image_blocks: u64) -> Vec<ZoneId> {
        let old = self.chain.drain(..image_zone).collect();
        self.log_blocks = 0;
        self.image_blocks = image_blocks;
        old
    }
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
        // The records may name data of any write so far: it must be durable before them.
        self.log_needs = self.durable.written();
        self.stream.queue(records.to_bytes())
    }

    /// Writes every queued transaction, then resets zones nothing durable refers to any more.
    pub(super) fn flush_log(&mut self) -> Result<()> {
        if self.stream.has_pending() && !self.durable.covers(self.log_needs) {
            // The data the records name must be durable before the records (an fsync syncs
            // it before taking the lock for this, so usually it already is).
            self.durable.sync(&*self.device)?;
        }
        let mut payloads = self.stream.take_payloads().into_iter();
        while let Some(payload) = payloads.next() {
            match self.append_chunk(ChunkKind::Log, &payload) {
                Ok(blocks) => self.stream.logged(blocks),
                Err(e) => {
                    // Not written (no zone for the log, or a device error, which halts): the
                    // records stay queued in order, so a later flush or checkpoint writes
                    // them and no fsync returns as if they were durable.
                    self.stream
                        .requeue(std::iter::once(payload).chain(payloads).collect());
                    return Err(e);
                }
            }
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
            let Some(tail) = self.stream.tail() else {
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
            self.stream.continue_in(next);
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
    ) -> Result<Lba> {
        let bytes = self.stream.chunk(kind, link, payload);
        let blocks = (bytes.len() / BLOCK_BYTES) as u64;
        let lba = self.append(zone, bytes)?;
        let expected = self.space.write_pointer(zone);
        if lba != expected {
            return Err(bug(format!("a chunk landed at LBA {lba}, not {expected}")));
        }
        self.space.appended(zone, lba, blocks)?;
        self.stream.chunk_written();
        self.stats.meta_blocks += blocks;
        Ok(lba)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Transactions pack into payloads in order without being split; one larger than a
    /// chunk is refused when queued.
    #[test]
    fn queue_and_pack() {
        let mut s = Stream::new(9, 1);
        let cap = s.capacity();
        assert_eq!(cap, BLOCK_BYTES - ChunkHeader::BYTES);
        assert!(s.queue(vec![0; cap + 1]).is_err());
        s.queue(vec![1; cap - 10]).unwrap();
        s.queue(vec![2; 10]).unwrap();
        s.queue(vec![3; 1]).unwrap();
        assert!(s.has_pending());
        let payloads = s.take_payloads();
        assert_eq!(payloads.len(), 2);
        assert_eq!(payloads[0].len(), cap);
        assert_eq!(payloads[1], [3]);
        assert!(!s.has_pending() && s.take_payloads().is_empty());
    }

    /// Payloads that could not be written go back ahead of what was queued since, and pack
    /// into the same payloads again.
    #[test]
    fn requeued_payloads_come_first() {
        let mut s = Stream::new(9, 1);
        let cap = s.capacity();
        s.queue(vec![1; cap - 10]).unwrap();
        s.queue(vec![2; 10]).unwrap();
        s.queue(vec![3; 1]).unwrap();
        let payloads = s.take_payloads();
        s.queue(vec![4; 2]).unwrap();
        s.requeue(payloads.clone());
        let again = s.take_payloads();
        assert_eq!(again[0], payloads[0]);
        assert_eq!(again[1], [3, 4, 4]);
        assert!(!s.has_pending());
    }

    /// Chunks carry the stream's id and sequence number, which moves only once a chunk is
    /// written; the tail is the chain's last zone, and a checkpoint drops the zones before
    /// its image and restarts the log count.
    #[test]
    fn chunks_chain_and_checkpoints() {
        let mut s = Stream::new(9, 4);
        assert_eq!(s.tail(), None);
        s.restart_in(ZoneId(3)).unwrap();
        assert!(s.restart_in(ZoneId(4)).is_err());
        let h = ChunkHeader::decode(&s.chunk(ChunkKind::Log, ZoneId(0), b"x")).unwrap();
        assert_eq!((h.fs_id, h.seq), (9, 1));
        s.chunk_written();
        assert_eq!(s.next_seq(), 2);
        s.continue_in(ZoneId(5));
        assert_eq!((s.tail(), s.chain_len()), (Some(ZoneId(5)), 2));
        s.logged(100);
        assert!(s.checkpoint_due(64));
        assert_eq!(s.checkpointed(1, 40), [ZoneId(3)]);
        assert!(!s.holds(ZoneId(3)) && s.holds(ZoneId(5)));
        assert!(!s.checkpoint_due(64));
        s.logged(40);
        assert!(s.checkpoint_due(64));
    }
}
