//! Helpers for tests of the file system through its API.

use lfs::{Attr, InodeNo, Lfs, LfsError};

use crate::device::{reboot, Cut, RamZoned};

/// Unmounts, powers the device off and on again and mounts; fsck must be clean.
pub fn remount(lfs: Lfs, device: RamZoned) -> (Lfs, RamZoned) {
    lfs.unmount().expect("unmount");
    let device = reboot(device, Cut::NONE);
    let lfs = Lfs::mount(&device).expect("mount");
    assert_clean(&lfs);
    (lfs, device)
}

/// fsck finds nothing.
pub fn assert_clean(lfs: &Lfs) {
    let problems = lfs.fsck().expect("fsck runs");
    assert!(problems.is_empty(), "fsck: {problems:#?}");
}

/// The inode at `path` ("/a/b"), walked as root.
pub fn walk(lfs: &Lfs, path: &str) -> Result<Attr, LfsError> {
    lfs.walk(path, None)
}

/// The whole content of file `ino`.
pub fn read_all(lfs: &Lfs, ino: InodeNo) -> Vec<u8> {
    let size = lfs.getattr(ino).expect("getattr").size;
    lfs.read(ino, 0, size as u32).expect("read")
}
