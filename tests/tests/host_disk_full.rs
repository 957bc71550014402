//! A real host disk that fills under the device image: the image lives on a small tmpfs,
//! smaller than the device it holds. Writers through the real mount get ENOSPC or EIO, the
//! mount stays up and serves reads, and after the tmpfs grows the image is fsck-clean and
//! everything fsync'ed is there.

use std::{
    fs::{self, File},
    io::Write,
    path::{Path, PathBuf},
    process::Command,
};

use tests::mount::Mount;

const ENOSPC: i32 = 28;
const EIO: i32 = 5;

/// A tmpfs mounted on a temporary directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn new(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "csd-test"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a tmpfs failed (tests run as root)"
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .status()
            .expect("mount runs");
        assert!(status.success(), "resizing the tmpfs failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn write_synced(path: &PathBuf, data: &[u8]) -> std::io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// The host disk under the image fills: ENOSPC or EIO to the writer, reads go on, and once
/// the disk has room a remount finds every fsync'ed file and fsck is clean.
#[test]
fn a_full_host_disk_loses_nothing_fsynced() {
    let tmpfs = Tmpfs::new("12M");
    let image = tmpfs.path().join("device.img");
    // A 64 MiB device in a sparse image on a 12 MiB tmpfs.
    let mut m = Mount::with_image(Some(image.clone()), &["--capacity", "64M"], &[]);
    let safe = pattern(1, 2 << 20);
    write_synced(&m.path("safe"), &safe).expect("the first file fits");
    // A write buffered in the file system, its file left open while the disk fills.
    let mut pending = File::create(m.path("pending")).expect("create");
    pending
        .write_all(&pattern(7, 64 << 10))
        .expect("a buffered write");
    let mut failed = None;
    let mut synced = Vec::new();
    for i in 0..40u8 {
        let name = format!("fill{i}");
        match write_synced(&m.path(&name), &pattern(i, 1 << 20)) {
            Ok(()) => synced.push((name, i)),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let err = failed.expect("40 MiB fitted on a 12 MiB host disk");
    assert!(
        matches!(err.raw_os_error(), Some(ENOSPC | EIO)),
        "the writer got {err}, not ENOSPC or EIO"
    );
    println!(
        "the host disk filled after {} fsync'ed MiB: {err}",
        synced.len() + 2
    );
    // The buffered write cannot reach the device now: close(2) reports it.
    let closed = nix::unistd::close(pending);
    assert!(
        matches!(closed, Err(e) if e as i32 == ENOSPC || e as i32 == EIO),
        "close of a file whose buffered write failed returned {closed:?}"
    );
    // The mount is up and serves reads.
    assert_eq!(
        fs::read(m.path("safe")).expect("read after the fault"),
        safe
    );
    assert!(fs::read_dir(&m.root).expect("list").count() >= 2);
    let log = m.log();
    assert!(
        log.contains("stopped writing after a device error"),
        "the daemon did not say why writes stopped: {log}"
    );
    // The host gets room; the daemon cannot write its last checkpoint, and says so.
    tmpfs.resize("200M");
    m.unmount_as_is();
    m.fsck().expect("fsck after the host has room");
    m.mount();
    assert_eq!(fs::read(m.path("safe")).expect("read after remount"), safe);
    for (name, i) in &synced {
        let got = fs::read(m.path(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            got == pattern(*i, 1 << 20),
            "{name} lost its fsync'ed content"
        );
    }
    let more = pattern(9, 1 << 20);
    write_synced(&m.path("after"), &more).expect("writes work again");
    m.unmount_and_fsck();
    drop(m);
}
