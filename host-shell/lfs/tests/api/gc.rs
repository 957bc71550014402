//! The cleaner: a small device overwritten many times its capacity, honest statfs, ENOSPC
//! when truly full, and snapshots that keep their blocks.

use lfs::{InodeNo, Lfs, LfsError, Zoned};
use testkit::{device::*, fs::*, geometry, rng::pattern};

const ROOT: InodeNo = InodeNo::ROOT;

/// Overwriting files on a tiny device for ten times its capacity works; fsck is clean after
/// every remount; the write amplification stays bounded.
#[test]
fn overwrite_many_times_capacity() {
    let mut device = fresh(geometry::tiny());
    let mut lfs = Lfs::mount(&device).expect("mount");
    let capacity = lfs.statfs().expect("statfs").blocks * 4096;
    let files = 6u64;
    let file_bytes = capacity / 2 / files;
    let mut contents = vec![Vec::new(); files as usize];
    let mut written = 0u64;
    // NAND bytes programmed, over every power cycle (the device's counters restart).
    let mut nand = 0;
    let mut round = 0;
    let mut gc_zones = 0;
    while written < 10 * capacity {
        for (i, content) in contents.iter_mut().enumerate() {
            let name = format!("f{i}");
            let ino = match lfs.lookup(ROOT, name.as_bytes()) {
                Ok(a) => a.ino,
                Err(_) => {
                    lfs.create(ROOT, name.as_bytes(), 0o644, 0, 0)
                        .expect("create")
                        .ino
                }
            };
            // The first round writes the whole file; later ones scattered blocks, so zones
            // end up partly live and the cleaner has to move blocks.
            // Even files are written once and stay (cold data sharing zones with hot data).
            let (off, len) = if round == 0 {
                (0, file_bytes)
            } else if i % 2 == 0 {
                continue;
            } else {
                let blocks = file_bytes / 4096;
                let r = pattern(round * 31 + i as u64, 8);
                let r = u64::from_le_bytes(r.try_into().expect("8 bytes"));
                (r % blocks * 4096, 4096)
            };
            let data = pattern(round * 100 + i as u64, len as usize);
            if content.len() < (off as usize + data.len()) {
                content.resize(off as usize + data.len(), 0);
            }
            content[off as usize..off as usize + data.len()].copy_from_slice(&data);
            lfs.write(ino, off, &data).expect("write");
            lfs.fsync(ino, false).expect("fsync");
            written += data.len() as u64;
        }
        round += 1;
        if round % 8 == 0 {
            gc_zones += lfs.stats().expect("stats").gc_zones;
            nand += nand_stats(&device).program_bytes;
            (lfs, device) = remount(lfs, device);
            let st = lfs.statfs().expect("statfs");
            assert!(st.bfree <= st.blocks);
        }
    }
    for (i, content) in contents.iter().enumerate() {
        let a = walk(&lfs, &format!("/f{i}")).expect("file");
        assert!(read_all(&lfs, a.ino) == *content, "f{i}");
    }
    let stats = lfs.stats().expect("stats");
    gc_zones += stats.gc_zones;
    assert!(gc_zones > 0, "the cleaner ran");
    nand += nand_stats(&device).program_bytes;
    let wa = nand as f64 / written as f64;
    println!("written {written} B, NAND programmed {nand} B: write amplification {wa:.2}; {gc_zones} zones cleaned");
    assert!(wa < 6.0, "write amplification {wa:.2}");
    let (_lfs, _device) = remount(lfs, device);
}

/// Filling the device ends in NoSpace, never corruption; the file system still mounts and
/// reads everything back, and deleting makes room again.
#[test]
fn full_device_gives_nospace() {
    let device = fresh(geometry::tiny());
    let lfs = Lfs::mount(&device).expect("mount");
    let mut files = Vec::new();
    let chunk = pattern(9, 64 * 1024);
    'fill: for i in 0.. {
        let name = format!("f{i}");
        let a = lfs
            .create(ROOT, name.as_bytes(), 0o644, 0, 0)
            .expect("create");
        let mut size = 0u64;
        loop {
            match lfs.write(a.ino, size, &chunk) {
                Ok(_) => size += chunk.len() as u64,
                Err(LfsError::NoSpace) => {
                    files.push((name, size));
                    break 'fill;
                }
                Err(e) => panic!("write: {e}"),
            }
            if size >= 256 * 1024 {
                lfs.fsync(a.ino, false).expect("fsync");
                files.push((name, size));
                break;
            }
        }
    }
    let st = lfs.statfs().expect("statfs");
    assert!(
        st.bfree < 16,
        "statfs says {} blocks free on a full device",
        st.bfree
    );
    lfs.sync().expect("sync");
    let (lfs, device) = remount(lfs, device);
    for (name, size) in &files {
        let a = walk(&lfs, &format!("/{name}")).expect("file");
        assert_eq!(a.size, *size, "{name}");
        let data = read_all(&lfs, a.ino);
        for piece in data.chunks(chunk.len()) {
            assert!(piece == &chunk[..piece.len()], "{name}");
        }
    }
    // Deleting a file makes room for a new one.
    lfs.unlink(ROOT, files[0].0.as_bytes()).expect("unlink");
    let a = lfs.create(ROOT, b"again", 0o644, 0, 0).expect("create");
    lfs.write(a.ino, 0, &chunk).expect("write after delete");
    let (_lfs, _device) = remount(lfs, device);
}

/// A snapshot's blocks stay readable while the file is overwritten and the cleaner runs,
/// until the snapshot is released; a hole is named in its extents, never written.
#[test]
fn snapshot_pins_blocks() {
    let device = fresh(geometry::tiny());
    let lfs = Lfs::mount(&device).expect("mount");
    let a = lfs.create(ROOT, b"s", 0o644, 0, 0).expect("create");
    let old = pattern(1, 40_000);
    lfs.write(a.ino, 0, &old).expect("write");
    lfs.write(a.ino, 100_000, b"tail")
        .expect("write past a hole");
    lfs.fsync(a.ino, false).expect("fsync");
    let written = lfs.stats().expect("stats").data_write_blocks;
    let snap = lfs.snapshot(a.ino).expect("snapshot");
    assert_eq!(snap.file_size, 100_004);
    let blocks: u64 = snap.extents.iter().map(|e| u64::from(e.lba_count)).sum();
    assert_eq!(blocks, 25, "the extents, holes included, cover the file");
    let holes: u64 = snap
        .extents
        .iter()
        .filter(|e| e.is_hole())
        .map(|e| u64::from(e.lba_count))
        .sum();
    assert_eq!(holes, 14, "blocks 10..24 are a hole");
    assert_eq!(
        lfs.stats().expect("stats").data_write_blocks,
        written,
        "the snapshot wrote nothing"
    );
    // Overwrite the file many times; the cleaner has to work around the pinned zone.
    for round in 0..40 {
        lfs.write(a.ino, 0, &pattern(round + 2, 100_000))
            .expect("overwrite");
        lfs.fsync(a.ino, false).expect("fsync");
        lfs.gc_step().expect("gc");
    }
    let mut bytes = Vec::new();
    for e in &snap.extents {
        if e.is_hole() {
            bytes.resize(bytes.len() + e.lba_count as usize * 4096, 0);
        } else {
            bytes.extend(
                device
                    .read(e.start_lba, u64::from(e.lba_count))
                    .expect("read snapshot"),
            );
        }
    }
    assert!(
        bytes[..40_000] == old[..],
        "the snapshot still reads the old data"
    );
    assert!(
        bytes[40_000..100_000].iter().all(|&b| b == 0),
        "the hole reads as zeros"
    );
    assert_eq!(&bytes[100_000..100_004], b"tail");
    lfs.release_snapshot(snap.id).expect("release");
    assert!(matches!(
        lfs.release_snapshot(snap.id),
        Err(LfsError::InvalidArgument(_))
    ));
    let (_lfs, _device) = remount(lfs, device);
}

/// A flush that spans several zones of a nearly full device, so the cleaner runs between its
/// zones, keeps every block. The zones it filled first hold no live block until its map is
/// committed, and cleaning must not reset them: it did, and the file then pointed into
/// zones written again with other data. Contents match and fsck is clean after every round
/// and after a remount.
#[test]
fn flush_across_zones_while_cleaning() {
    let device = fresh(geometry::tiny());
    let lfs = Lfs::mount(&device).expect("mount");
    let capacity = lfs.statfs().expect("statfs").blocks;
    // 60% live: flushes of about 30% of the capacity (several zones) need the cleaner.
    let blocks = capacity * 6 / 10;
    let a = lfs.create(ROOT, b"a", 0o644, 0, 0).expect("create").ino;
    let mut content = pattern(1, (blocks * 4096) as usize);
    lfs.write(a, 0, &content).expect("write");
    lfs.fsync(a, false).expect("fsync");
    let mut cleaned = 0;
    for round in 0..40u64 {
        // About half the blocks, a different half each round, flushed at once: the flush spans
        // zones, and the zones earlier rounds wrote stay partly live, so room comes only from
        // cleaning.
        let new = pattern(10 + round, content.len());
        let pick = pattern(100 + round, blocks as usize);
        for i in (0..blocks as usize).filter(|&i| pick[i].is_multiple_of(2)) {
            let at = i * 4096;
            content[at..at + 4096].copy_from_slice(&new[at..at + 4096]);
            lfs.write(a, at as u64, &new[at..at + 4096])
                .expect("rewrite a block");
        }
        lfs.fsync(a, false).expect("fsync the rewrite");
        cleaned = lfs.stats().expect("stats").gc_zones;
        assert_clean(&lfs);
        assert!(read_all(&lfs, a) == content, "round {round}");
    }
    assert!(cleaned > 0, "the cleaner ran during the flushes");
    let (lfs, _device) = remount(lfs, device);
    assert!(read_all(&lfs, a) == content, "after a remount");
}

/// Space an offload's snapshot holds never makes an admitted write fail: a file of 80% of
/// the capacity is pinned by a snapshot and then overwritten whole (64 KiB writes, each
/// fsync'ed), which needs the pinned zones back. The flush reclaims the snapshot (it then
/// answers `SnapshotReclaimed`, and its release still succeeds); before, the overwrite, which
/// asks for no new blocks, failed with NoSpace when its buffer was flushed.
#[test]
fn writes_reclaim_space_a_snapshot_holds() {
    let device = fresh(geometry::tiny());
    let lfs = Lfs::mount(&device).expect("mount");
    let capacity = lfs.statfs().expect("statfs").blocks;
    let bytes = (capacity * 8 / 10 * 4096) as usize;
    let a = lfs.create(ROOT, b"a", 0o644, 0, 0).expect("create").ino;
    lfs.write(a, 0, &pattern(1, bytes)).expect("write");
    lfs.fsync(a, false).expect("fsync");
    let snap = lfs.snapshot(a).expect("snapshot");
    lfs.check_snapshot(snap.id).expect("the snapshot is whole");
    let new = pattern(2, bytes);
    for (i, piece) in new.chunks(64 << 10).enumerate() {
        let at = (i * (64 << 10)) as u64;
        lfs.write(a, at, piece).expect("overwrite: no new blocks");
        lfs.fsync(a, false)
            .expect("the overwrite's flush takes the pinned space back");
    }
    assert!(matches!(
        lfs.check_snapshot(snap.id),
        Err(LfsError::SnapshotReclaimed)
    ));
    assert_eq!(lfs.stats().expect("stats").snapshots_reclaimed, 1);
    lfs.release_snapshot(snap.id)
        .expect("release a reclaimed snapshot");
    assert!(matches!(
        lfs.check_snapshot(snap.id),
        Err(LfsError::InvalidArgument(_))
    ));
    assert_clean(&lfs);
    let (lfs, _device) = remount(lfs, device);
    assert!(read_all(&lfs, a) == new, "after a remount");
}

/// Reads run outside the file system's lock while the cleaner moves their blocks and resets
/// zones: every read returns the file's bytes (the old copy or the new one), and the cleaner
/// did move blocks of the file being read.
#[test]
fn reads_in_flight_while_the_cleaner_moves_their_blocks() {
    let device = Watched::new(
        fresh(geometry::tiny()),
        std::time::Duration::from_micros(300),
    );
    let lfs = Lfs::mount(&device).expect("mount");
    let capacity = lfs.statfs().expect("statfs").blocks * 4096;
    // The file read throughout shares its zones with data that is overwritten, so cleaning
    // those zones moves its blocks.
    let cold = lfs.create(ROOT, b"cold", 0o644, 0, 0).expect("create").ino;
    let hot = lfs.create(ROOT, b"hot", 0o644, 0, 0).expect("create").ino;
    let piece = 64 * 1024u64;
    let cold_bytes = capacity / 4 / piece * piece;
    for i in 0..cold_bytes / piece {
        lfs.write(cold, i * piece, &pattern(i, piece as usize))
            .expect("write cold");
        lfs.write(hot, i * piece, &pattern(1000 + i, piece as usize))
            .expect("write hot");
        lfs.fsync(cold, false).expect("fsync");
        lfs.fsync(hot, false).expect("fsync");
    }
    let want: Vec<u8> = (0..cold_bytes / piece)
        .flat_map(|i| pattern(i, piece as usize))
        .collect();
    let done = std::sync::atomic::AtomicBool::new(false);
    let reads = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let (lfs, want, done, reads) = (&lfs, &want, &done, &reads);
            s.spawn(move || {
                let mut at = t * 8192;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    at = (at + 12 * 4096 + 512) % (cold_bytes - 32 * 1024);
                    let got = lfs.read(cold, at, 32 * 1024).expect("read");
                    let at = at as usize;
                    assert!(got == want[at..at + 32 * 1024], "bytes at {at}");
                    reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
        // Overwrite the hot file until the cleaner has cleaned a good many zones (and zones
        // the overwrites left dead have been reset) under many reads.
        let mut round = 0;
        while lfs.stats().expect("stats").gc_zones < 20
            || reads.load(std::sync::atomic::Ordering::Relaxed) < 100
        {
            for i in 0..cold_bytes / piece {
                let data = pattern(round * 7 + i, piece as usize);
                lfs.write(hot, i * piece, &data).expect("overwrite");
                lfs.fsync(hot, false).expect("fsync");
            }
            // Clean whether or not free zones run low, so zones holding the cold file move.
            lfs.gc_step().expect("gc");
            round += 1;
            assert!(
                round < 5000,
                "cleaned or read too little: {:?}",
                lfs.stats()
            );
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let stats = lfs.stats().expect("stats");
    assert!(
        stats.gc_moved_blocks > 0 && stats.zone_resets > 0,
        "{stats:?}"
    );
    assert_eq!(read_all(&lfs, cold), want);
    assert_clean(&lfs);
}

/// Something to run once, in the cleaner's thread, while its read is in flight.
type Hook = std::sync::Arc<std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>>;

/// A RAM device for races with reads in flight: each read waits `delay` before it reaches the
/// media, and the first read made by a thread named `cleaner` runs `hook` first (the moment
/// the background cleaner has resolved a batch and let the lock go).
#[derive(Clone)]
struct Watched {
    inner: RamZoned,
    delay: std::time::Duration,
    hook: Hook,
}

impl Watched {
    fn new(inner: RamZoned, delay: std::time::Duration) -> Watched {
        Watched {
            inner,
            delay,
            hook: Hook::default(),
        }
    }
}

impl std::fmt::Debug for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched").finish_non_exhaustive()
    }
}

impl Zoned for Watched {
    fn info(&self) -> &common::zns::IdentifyZns {
        self.inner.info()
    }
    fn read(&self, slba: u64, nlb: u64) -> Result<Vec<u8>, lfs::IoError> {
        if std::thread::current().name() == Some("cleaner") {
            let hook = self.hook.lock().expect("hook").take();
            if let Some(hook) = hook {
                hook();
            }
        }
        std::thread::sleep(self.delay);
        self.inner.read(slba, nlb)
    }
    fn write(&self, slba: u64, data: &[u8]) -> Result<(), lfs::IoError> {
        self.inner.write(slba, data)
    }
    fn append(&self, zslba: u64, data: Vec<u8>) -> Result<u64, lfs::IoError> {
        self.inner.append(zslba, data)
    }
    fn zone_action(
        &self,
        slba: u64,
        action: common::zns::ZoneAction,
        select_all: bool,
    ) -> Result<(), lfs::IoError> {
        self.inner.zone_action(slba, action, select_all)
    }
    fn report(
        &self,
        slba: u64,
        filter: common::zns::ReportFilter,
        max_zones: u32,
    ) -> Result<(u64, Vec<common::zns::ZoneDescriptor>), lfs::IoError> {
        self.inner.report(slba, filter, max_zones)
    }
    fn flush(&self) -> Result<(), lfs::IoError> {
        self.inner.flush()
    }
}

/// The background cleaner reads the blocks it moves with the lock let go. A file rewritten
/// (and its buffer written to the device) while that read is in flight keeps its new bytes:
/// the cleaner moves only blocks still where it read them, never the old copy over the new.
#[test]
fn the_cleaner_never_moves_a_block_rewritten_under_it() {
    let device = Watched::new(fresh(geometry::tiny()), std::time::Duration::ZERO);
    let hook = std::sync::Arc::clone(&device.hook);
    let lfs = std::sync::Arc::new(Lfs::mount(&device).expect("mount"));
    // A file whose blocks share zones with blocks overwritten next, so those zones hold
    // reclaimable space and live blocks of the file.
    let keep = lfs.create(ROOT, b"keep", 0o644, 0, 0).expect("create").ino;
    let churn = lfs.create(ROOT, b"churn", 0o644, 0, 0).expect("create").ino;
    let piece = 16 * 4096u64;
    for i in 0..8 {
        lfs.write(keep, i * piece, &pattern(i, piece as usize))
            .expect("write");
        lfs.fsync(keep, false).expect("fsync");
        lfs.write(churn, i * piece, &pattern(100 + i, piece as usize))
            .expect("write");
        lfs.fsync(churn, false).expect("fsync");
    }
    lfs.write(churn, 0, &pattern(200, 8 * piece as usize))
        .expect("overwrite");
    lfs.fsync(churn, false).expect("fsync");
    let new = pattern(300, 8 * piece as usize);
    let writer = std::sync::Arc::clone(&lfs);
    let rewrite = new.clone();
    *hook.lock().expect("hook") = Some(Box::new(move || {
        writer
            .write(keep, 0, &rewrite)
            .expect("rewrite under the cleaner");
        writer.flush(keep).expect("flush under the cleaner");
    }));
    let cleaner_lfs = std::sync::Arc::clone(&lfs);
    let cleaned = std::thread::Builder::new()
        .name("cleaner".into())
        .spawn(move || cleaner_lfs.gc_step().expect("gc"))
        .expect("spawn")
        .join()
        .expect("the cleaner");
    assert!(cleaned, "there was a zone to clean");
    assert!(
        hook.lock().expect("hook").is_none(),
        "the cleaner read nothing"
    );
    assert!(
        read_all(&lfs, keep) == new,
        "the cleaner put old bytes back"
    );
    assert_clean(&lfs);
}

/// A full device whose space is held by an unlinked file with a handle still open: a write
/// waits for that handle's close (FUSE sends it asynchronously, so it may come after the
/// unlink and the next write of the process that closed it) and then gets the space.
#[test]
fn a_full_device_write_waits_for_the_last_close_of_an_unlinked_file() {
    let device = fresh(geometry::tiny());
    let lfs = std::sync::Arc::new(Lfs::mount(&device).expect("mount"));
    let chunk = pattern(11, 64 * 1024);
    let big = lfs.create_open(ROOT, b"big", 0o644, 0, 0).expect("create");
    let mut size = 0u64;
    loop {
        match lfs.write(big.ino, size, &chunk) {
            Ok(_) => size += chunk.len() as u64,
            Err(LfsError::NoSpace) => break,
            Err(e) => panic!("write: {e}"),
        }
    }
    assert!(size >= 4 * chunk.len() as u64, "only {size} bytes fit");
    lfs.unlink(ROOT, b"big").expect("unlink");
    // The close comes late, from another thread, while the write below waits for room.
    let closer = {
        let lfs = std::sync::Arc::clone(&lfs);
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            lfs.release(big.ino).expect("release");
        })
    };
    let after = lfs.create(ROOT, b"after", 0o644, 0, 0).expect("create");
    lfs.write(after.ino, 0, &chunk)
        .expect("room after the unlinked file's last close");
    lfs.fsync(after.ino, false).expect("fsync");
    closer.join().expect("the closing thread");
}
