//! POSIX behaviour of the file system's operations, errors included, and persistence across
//! unmount and mount.

mod lfs_common;

use host_shell::lfs::{InodeNo, LfsError, RenameFlags, SetAttr};
use lfs_common::*;

const ROOT: InodeNo = InodeNo::ROOT;

/// A written file reads back before and after a remount, with its size and mode.
#[test]
fn write_read_persist() {
    let device = fresh(small_geometry());
    let lfs = host_shell::lfs::Lfs::mount(&device.driver()).expect("mount");
    let f = lfs
        .create(ROOT, b"hello", 0o644, 1000, 1000)
        .expect("create");
    let data = pattern(1, 10_000);
    assert_eq!(lfs.write(f.ino, 0, &data).expect("write"), 10_000);
    assert_eq!(lfs.read(f.ino, 0, 20_000).expect("read"), data);
    assert_eq!(lfs.read(f.ino, 4000, 100).expect("read"), &data[4000..4100]);
    let (lfs, _device) = remount(lfs, device);
    let f = walk(&lfs, "/hello").expect("lookup");
    assert_eq!((f.size, f.perm, f.uid), (10_000, 0o644, 1000));
    assert_eq!(read_all(&lfs, f.ino), data);
    let _ = LfsError::NotFound;
    let _ = (RenameFlags::default(), SetAttr::default());
}
