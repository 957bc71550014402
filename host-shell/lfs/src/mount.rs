//! Making a file system (mkfs), mounting it (finding the latest checkpoint, replaying the
//! log after it, freeing orphans) and unmounting it.

use std::sync::{Arc, Mutex};

use common::zns::ZoneAction;

use crate::checkpoint::{find_latest, CkptLog};
use crate::error::{LfsError, Result};
use crate::format::{CheckpointRecord, Record};
use crate::ids::{Lba, ZoneId};
use crate::inode::{Attr, FileKind, InodeNo, Time};
use crate::log::Stream;
use crate::meta::Meta;
use crate::replay;
use crate::space::{Space, CKPT_ZONES, MIN_ZONES};
use crate::{Lfs, State, Zoned};

fn zone_geometry(device: &dyn Zoned) -> Result<(u64, u64, u32)> {
    let info = device.info();
    if info.nr_zones < MIN_ZONES || info.zone_cap_lbas < 8 {
        return Err(LfsError::InvalidArgument(
            "the device has too few or too small zones",
        ));
    }
    Ok((info.zone_size_lbas, info.zone_cap_lbas, info.nr_zones))
}

fn max_chunk_blocks(device: &dyn Zoned, cap: u64) -> usize {
    let zasl = u64::from(device.info().zasl_lbas.max(1));
    zasl.min(cap - 1).min(32) as usize
}

fn fs_id() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mix = t ^ (u64::from(std::process::id()) << 32) ^ 0x9E37_79B9_7F4A_7C15;
    // splitmix64 finaliser: spreads the clock's bits.
    let mut z = mix.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Lfs {
    /// Makes a new, empty file system on the device (every zone is reset). Its root
    /// directory is owned by `uid`:`gid` with mode 0755.
    pub fn mkfs<D: Zoned + Clone + 'static>(device: &D, uid: u32, gid: u32) -> Result<()> {
        let device: Arc<dyn Zoned> = Arc::new(device.clone());
        let (zone_lbas, cap, nr) = zone_geometry(&*device)?;
        device.zone_action(0, ZoneAction::Reset, true)?;
        let space = Space::new(zone_lbas, cap, nr);
        let id = fs_id();
        let now = Time::now();
        let ckpt = CkptLog::new(CheckpointRecord {
            fs_id: id,
            seq: 0,
            zone_size_lbas: zone_lbas,
            zone_cap_lbas: cap,
            nr_zones: nr,
            image_lba: Lba(0),
            image_seq: 0,
            image_chunks: 0,
            created: now.sec,
        });
        let stream = Stream::new(id, max_chunk_blocks(&*device, cap));
        let mut meta = Meta::new(nr, zone_lbas, cap);
        meta.apply(&Record::Inode(Attr {
            ino: InodeNo::ROOT,
            kind: FileKind::Dir,
            perm: 0o755,
            uid,
            gid,
            nlink: 2,
            size: 0,
            atime: now,
            mtime: now,
            ctime: now,
            parent: InodeNo::ROOT,
            rdev: 0,
        }))?;
        let mut state = State::new(Arc::clone(&device), meta, space, stream, ckpt);
        state.checkpoint()?;
        state.durable.sync(&*device)
    }

    /// Mounts the file system on the device: finds the latest checkpoint, replays the log
    /// after it, frees files that were unlinked while open, and writes a new checkpoint.
    pub fn mount<D: Zoned + Clone + 'static>(device: &D) -> Result<Lfs> {
        let device: Arc<dyn Zoned> = Arc::new(device.clone());
        let (zone_lbas, cap, _) = zone_geometry(&*device)?;
        let report = device.all_zones()?;
        let mut space = Space::from_report(zone_lbas, cap, &report);
        let ckpt = find_latest(&*device, &space)?.ok_or(LfsError::NotFormatted)?;
        let rec = *ckpt.last();
        let replayed = replay::replay(
            &*device,
            &space,
            rec.fs_id,
            rec.image_lba,
            rec.image_seq,
            rec.image_chunks,
        )?;
        // Zones that are partly written and will not be appended to again give back their
        // active resource.
        let keep: Vec<ZoneId> = [
            replayed.meta.hot(),
            replayed.meta.cold(),
            replayed.clean_tail,
        ]
        .into_iter()
        .flatten()
        .chain(CKPT_ZONES)
        .collect();
        for z in space.zones() {
            let live = replayed.meta.live(z) > 0 || replayed.chain.contains(&z);
            if space.needs_finish(z) && live && !keep.contains(&z) {
                device.zone_action(space.zslba(z).get(), ZoneAction::Finish, false)?;
                space.was_finished(z);
            }
        }
        // A torn end drops the chain: the new checkpoint's image starts a fresh zone, and
        // the old chain is released once it is durable.
        let stream = Stream::resume(rec.fs_id, max_chunk_blocks(&*device, cap), &replayed);
        let mut state = State::new(Arc::clone(&device), replayed.meta, space, stream, ckpt);
        for ino in state.meta.orphans() {
            state.commit(vec![Record::Free { ino }])?;
        }
        state.checkpoint()?;
        state.durable.sync(&*device)?;
        Ok(Lfs {
            durable: Arc::clone(&state.durable),
            reads: Arc::clone(&state.reads),
            state: Mutex::new(state),
        })
    }

    /// Makes everything durable, writes a checkpoint and gives the device back.
    pub fn unmount(self) -> Result<()> {
        let mut s = self.lock_for_change()?;
        s.flush_all_files()?;
        s.checkpoint()?;
        self.durable.sync(&*s.device)
    }
}
