//! The host under the device image: fsync reaches the host's disk (a Flush syncs the image),
//! a crash of the host keeps everything fsync'ed, and a full or failing host disk becomes a
//! device error that the file system answers with ENOSPC or EIO while it keeps serving reads,
//! losing nothing fsync'ed.
//!
//! The image file is the emulated host page cache of `host_shell::nand::hostcache` over a
//! file in RAM, behind the real `FileStore`, device thread, driver and file system.

use std::path::Path;

use firmware::{nand::Geometry, zns::ZoneConfig};
use host_shell::{
    device::{format_store, Device, DeviceOptions},
    lfs::{InodeNo, Lfs, LfsError},
    nand::{
        file::FileStore,
        hostcache::{CachedFile, HostFaults, RamFile},
        image::{Header, ImageLayout},
    },
};
use testkit::{
    fs::{assert_clean, read_all, walk},
    geometry::{small as small_geometry, zones_for},
    rng::pattern,
};

const ROOT: InodeNo = InodeNo::ROOT;
const ENOSPC: i32 = 28;
const EIO: i32 = 5;

type Store = FileStore<CachedFile<RamFile>>;
type HostDevice = Device<Store>;

fn geometry() -> (Geometry, ZoneConfig) {
    let g = small_geometry();
    (g, zones_for(&g))
}

/// A formatted image with a fresh file system, its host pages all synced.
fn fresh_disk() -> RamFile {
    let (g, zones) = geometry();
    let header = Header {
        geometry: g,
        zones,
        timing_preset: 0,
    };
    let file = CachedFile::over_ram(RamFile::new(ImageLayout::of(&g).len));
    let store = FileStore::create_in(file, Path::new("host.img"), header).expect("image");
    let store = format_store(store, zones).expect("format");
    let device = power_on(store);
    Lfs::mkfs(&device.driver(), 0, 0).expect("mkfs");
    let cache = device.close().expect("the device stops").into_file();
    assert!(
        cache.unsynced_pages().is_empty(),
        "mkfs left unsynced pages: {:?}",
        cache.unsynced_pages()
    );
    cache.crash(|_| false).expect("crash")
}

fn power_on(store: Store) -> HostDevice {
    Device::mount(store, geometry().1, DeviceOptions::default(), "host.img")
        .expect("the device powers on")
}

/// Opens the image on `disk` behind a fresh host cache and starts the device.
fn boot(disk: RamFile) -> (HostDevice, HostFaults) {
    let cache = CachedFile::over_ram(disk);
    let faults = cache.faults();
    let store = FileStore::open_file(cache, Path::new("host.img")).expect("the image opens");
    (power_on(store), faults)
}

/// Stops the device (no unmount: the process or the host goes down) and crashes the host,
/// keeping the unsynced pages `keep` picks.
fn crash(device: HostDevice, keep: impl FnMut(u64) -> bool) -> RamFile {
    let cache = device.close().expect("the device stops").into_file();
    cache.crash(keep).expect("crash")
}

/// Mounts what the disk holds; fsck must be clean.
fn mount_clean(disk: RamFile) -> (Lfs, HostDevice) {
    let (device, _) = boot(disk);
    let lfs = Lfs::mount(&device.driver()).expect("mount after the crash");
    assert_clean(&lfs);
    (lfs, device)
}

fn write_file(lfs: &Lfs, name: &str, data: &[u8]) -> InodeNo {
    let f = lfs
        .create(ROOT, name.as_bytes(), 0o644, 0, 0)
        .expect("create");
    lfs.write(f.ino, 0, data).expect("write");
    f.ino
}

/// fsync sends a device Flush that syncs the image; an fsync with nothing new sends none.
#[test]
fn fsync_syncs_the_image_once() {
    let (device, faults) = boot(fresh_disk());
    let lfs = Lfs::mount(&device.driver()).expect("mount");
    let ino = write_file(&lfs, "f", &pattern(1, 50_000));
    let before = faults.syncs();
    lfs.fsync(ino, false).expect("fsync");
    let after = faults.syncs();
    assert!(after > before, "fsync synced nothing");
    lfs.fsync(ino, false).expect("fsync again");
    assert_eq!(faults.syncs(), after, "an fsync with nothing new synced");
    assert!(device.identify().volatile_write_cache);
}

/// A host crash right after fsync keeps the fsync'ed file whatever the unsynced pages do; a
/// file written later and never synced may go.
#[test]
fn a_host_crash_keeps_fsynced_data() {
    for (what, keep) in [("none", 0u8), ("all", 1), ("every other", 2)] {
        let (device, _) = boot(fresh_disk());
        let lfs = Lfs::mount(&device.driver()).expect("mount");
        let kept = pattern(2, 300_000);
        let ino = write_file(&lfs, "kept", &kept);
        lfs.fsync(ino, false).expect("fsync");
        let later = write_file(&lfs, "later", &pattern(3, 200_000));
        lfs.write(ino, 10, b"not synced").expect("write");
        lfs.flush(later).expect("flush the buffer to the device");
        drop(lfs);
        let disk = crash(device, |p| match keep {
            0 => false,
            1 => true,
            _ => p % 2 == 0,
        });
        let (lfs, _device) = mount_clean(disk);
        let f = walk(&lfs, "/kept").expect("the fsync'ed file is there");
        let got = read_all(&lfs, f.ino);
        let mut changed = kept.clone();
        changed[10..20].copy_from_slice(b"not synced");
        assert!(
            got == kept || got == changed,
            "keeping {what}: the fsync'ed file came back with other content"
        );
    }
}

/// A host disk that fills under the image: the write that needs room gets ENOSPC, writes stop
/// (ENOSPC too), reads go on, and after the disk has room again a mount is clean with every
/// fsync'ed file there.
#[test]
fn a_full_host_disk_answers_enospc_and_loses_nothing() {
    let (device, faults) = boot(fresh_disk());
    let lfs = Lfs::mount(&device.driver()).expect("mount");
    let safe = pattern(4, 100_000);
    let ino = write_file(&lfs, "safe", &safe);
    lfs.fsync(ino, false).expect("fsync");
    // Nothing more fits on the disk.
    faults.set_room_pages(Some(0));
    let big = lfs.create(ROOT, b"big", 0o644, 0, 0).expect("create");
    // The buffer is flushed when it fills or at the fsync: whichever meets the full disk.
    let err = lfs
        .write(big.ino, 0, &pattern(5, 3 << 20))
        .and_then(|_| lfs.fsync(big.ino, false))
        .expect_err("writing 3 MiB to a full disk");
    assert_eq!(err.errno(), ENOSPC, "{err}");
    assert!(lfs.halted());
    let err = lfs
        .create(ROOT, b"more", 0o644, 0, 0)
        .expect_err("a change after the halt");
    assert!(
        matches!(err, LfsError::Halted { no_space: true, .. }),
        "{err}"
    );
    assert_eq!(err.errno(), ENOSPC);
    assert_eq!(read_all(&lfs, ino), safe, "reads go on");
    assert!(
        lfs.unmount().is_err(),
        "unmount cannot write its checkpoint"
    );
    // The host gets room back; the daemon is gone, what it wrote is on the disk.
    faults.set_room_pages(None);
    let disk = crash(device, |_| true);
    let (lfs, _device) = mount_clean(disk);
    let f = walk(&lfs, "/safe").expect("the fsync'ed file is there");
    assert_eq!(read_all(&lfs, f.ino), safe);
}

/// A host disk that fails writes (EIO): the file system answers EIO, keeps serving reads and
/// loses nothing fsync'ed; a failed image sync fails the fsync with EIO.
#[test]
fn host_io_errors_answer_eio() {
    let (device, faults) = boot(fresh_disk());
    let lfs = Lfs::mount(&device.driver()).expect("mount");
    let safe = pattern(6, 70_000);
    let ino = write_file(&lfs, "safe", &safe);
    lfs.fsync(ino, false).expect("fsync");
    faults.fail_writes(true);
    let other = write_file(&lfs, "other", &pattern(7, 10_000));
    let err = lfs
        .fsync(other, false)
        .expect_err("fsync with failing writes");
    assert_eq!(err.errno(), EIO, "{err}");
    assert_eq!(read_all(&lfs, ino), safe, "reads go on");
    faults.fail_writes(false);
    let err = lfs.flush(other).expect_err("writes stay stopped");
    assert_eq!(err.errno(), EIO, "{err}");
    drop(lfs);
    let (lfs, _device) = mount_clean(crash(device, |_| false));
    assert_eq!(read_all(&lfs, walk(&lfs, "/safe").expect("safe").ino), safe);

    // A sync that fails: the fsync reports EIO.
    let (device, faults) = boot(fresh_disk());
    let lfs = Lfs::mount(&device.driver()).expect("mount");
    let ino = write_file(&lfs, "f", &pattern(8, 5000));
    faults.fail_syncs(true);
    let err = lfs
        .fsync(ino, false)
        .expect_err("fsync with a failing sync");
    assert_eq!(err.errno(), EIO, "{err}");
}
