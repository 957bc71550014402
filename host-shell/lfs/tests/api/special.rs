//! FIFOs, sockets and device nodes in the file system's typed API (made by mknod, kept with
//! their kind, mode and device number across unmount, mount and power loss, checked by fsck),
//! and the set-id bits a write by an unprivileged writer clears.

use lfs::{Attr, FileKind, InodeNo, Lfs, LfsError, SetAttr};
use testkit::{device::*, fs::*, geometry};

const ROOT: InodeNo = InodeNo::ROOT;

const S_IFIFO: u32 = 0o010000;
const S_IFCHR: u32 = 0o020000;
const S_IFDIR: u32 = 0o040000;
const S_IFBLK: u32 = 0o060000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFSOCK: u32 = 0o140000;

/// The kernel's 32-bit encoding of a device number, as FUSE carries it.
const fn dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

fn mounted() -> (Lfs, RamZoned) {
    let device = fresh(geometry::small());
    let lfs = Lfs::mount(&device).expect("mount");
    (lfs, device)
}

/// What each special file is made as: name, mode, rdev passed, and (kind, perm, rdev) kept.
/// A FIFO's rdev is dropped; the block device has a 20-bit minor.
const NODES: [(&str, u32, u32, FileKind, u16, u32); 6] = [
    ("fifo", S_IFIFO | 0o640, dev(4, 5), FileKind::Fifo, 0o640, 0),
    ("sock", S_IFSOCK | 0o755, 0, FileKind::Socket, 0o755, 0),
    (
        "null",
        S_IFCHR | 0o666,
        0x103,
        FileKind::CharDevice,
        0o666,
        0x103,
    ),
    (
        "disk",
        S_IFBLK | 0o660,
        dev(259, 70_000),
        FileKind::BlockDevice,
        0o660,
        dev(259, 70_000),
    ),
    ("plain", 0o600, 0, FileKind::File, 0o600, 0),
    ("reg", S_IFREG | 0o644, 0, FileKind::File, 0o644, 0),
];

fn make_nodes(lfs: &Lfs) {
    for (name, mode, rdev, ..) in NODES {
        lfs.mknod(ROOT, name.as_bytes(), mode, rdev, 1000, 100)
            .unwrap_or_else(|e| panic!("mknod {name}: {e}"));
    }
}

#[track_caller]
fn assert_nodes(lfs: &Lfs) {
    for (name, _, _, kind, perm, rdev) in NODES {
        let a: Attr = lfs.lookup(ROOT, name.as_bytes()).expect(name);
        assert_eq!(
            (a.kind, a.perm, a.rdev, a.size, a.nlink, a.uid, a.gid),
            (kind, perm, rdev, 0, 1, 1000, 100),
            "{name}"
        );
        assert_eq!(
            a.mode() & 0o170000,
            match kind {
                FileKind::Fifo => S_IFIFO,
                FileKind::Socket => S_IFSOCK,
                FileKind::CharDevice => S_IFCHR,
                FileKind::BlockDevice => S_IFBLK,
                _ => S_IFREG,
            }
        );
    }
    let mut listed: Vec<(String, FileKind)> = lfs
        .readdir(ROOT, 0)
        .expect("readdir")
        .into_iter()
        .skip(2)
        .map(|e| (String::from_utf8_lossy(&e.name).into_owned(), e.kind))
        .collect();
    listed.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want: Vec<(String, FileKind)> = NODES.iter().map(|n| (n.0.to_string(), n.3)).collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(listed, want);
}

/// mknod makes each kind (FIFO, socket, character and block device, regular file with and
/// without S_IFREG) with its mode and device number; readdir names the kinds; all of it
/// comes back after unmount and mount, and fsck is clean.
#[test]
fn mknod_each_kind_persists() {
    let (lfs, device) = mounted();
    make_nodes(&lfs);
    assert_nodes(&lfs);
    assert_clean(&lfs);
    let (lfs, _device) = remount(lfs, device);
    assert_nodes(&lfs);
}

/// Special files made after the last checkpoint come back from the log alone when power
/// goes after a sync (the log's version 2 Inode records carry rdev).
#[test]
fn special_files_survive_power_loss_replay() {
    let (lfs, device) = mounted();
    lfs.checkpoint().expect("checkpoint");
    make_nodes(&lfs);
    lfs.sync().expect("sync");
    drop(lfs);
    let device = reboot(device, Cut::NONE);
    let lfs = Lfs::mount(&device).expect("mount after power loss");
    assert_nodes(&lfs);
    assert_clean(&lfs);
}

/// mknod refuses directories, symlinks and unknown types, and create refuses any type but a
/// regular file, instead of making a regular file; nothing is made.
#[test]
fn mknod_and_create_refuse_other_types() {
    let (lfs, _device) = mounted();
    for mode in [S_IFDIR | 0o755, S_IFLNK | 0o777, 0o170000 | 0o644] {
        assert!(
            matches!(
                lfs.mknod(ROOT, b"x", mode, 0, 0, 0),
                Err(LfsError::InvalidArgument(_))
            ),
            "mknod {mode:o}"
        );
    }
    for mode in [S_IFIFO | 0o644, S_IFDIR | 0o755, S_IFCHR | 0o644] {
        assert!(
            matches!(
                lfs.create(ROOT, b"x", mode, 0, 0),
                Err(LfsError::InvalidArgument(_))
            ),
            "create {mode:o}"
        );
        assert!(
            matches!(
                lfs.create_open(ROOT, b"x", mode, 0, 0),
                Err(LfsError::InvalidArgument(_))
            ),
            "create_open {mode:o}"
        );
    }
    assert!(matches!(lfs.lookup(ROOT, b"x"), Err(LfsError::NotFound)));
    assert!(matches!(
        lfs.mknod(ROOT, b"x", S_IFREG | 0o644, 0, 0, 0)
            .map(|a| a.kind),
        Ok(FileKind::File)
    ));
    assert!(matches!(
        lfs.mknod(ROOT, b"x", S_IFIFO | 0o644, 0, 0, 0),
        Err(LfsError::Exists)
    ));
    assert_clean(&lfs);
}

/// A special file holds no data: read, write and truncate are refused and take no block;
/// links, renames, chmod and unlink work as for any inode, and fsck stays clean.
#[test]
fn special_files_hold_no_data() {
    let (lfs, device) = mounted();
    let fifo = lfs
        .mknod(ROOT, b"fifo", S_IFIFO | 0o644, 0, 0, 0)
        .expect("mkfifo");
    let chr = lfs
        .mknod(ROOT, b"chr", S_IFCHR | 0o600, dev(1, 3), 0, 0)
        .expect("mknod c");
    let before = lfs.statfs().expect("statfs");
    for ino in [fifo.ino, chr.ino] {
        assert!(matches!(
            lfs.write(ino, 0, b"data"),
            Err(LfsError::InvalidArgument(_))
        ));
        assert!(matches!(
            lfs.read(ino, 0, 10),
            Err(LfsError::InvalidArgument(_))
        ));
        let truncate = SetAttr {
            size: Some(10),
            ..SetAttr::default()
        };
        assert!(matches!(
            lfs.setattr(ino, truncate),
            Err(LfsError::InvalidArgument(_))
        ));
        assert_eq!(lfs.getattr(ino).expect("getattr").size, 0);
    }
    assert_eq!(lfs.statfs().expect("statfs").bfree, before.bfree);
    lfs.link(chr.ino, ROOT, b"chr2").expect("link");
    lfs.rename(ROOT, b"fifo", ROOT, b"pipe", Default::default())
        .expect("rename");
    let chmod = SetAttr {
        mode: Some(0o640),
        ..SetAttr::default()
    };
    lfs.setattr(fifo.ino, chmod).expect("chmod");
    lfs.unlink(ROOT, b"chr").expect("unlink");
    let (lfs, _device) = remount(lfs, device);
    let pipe = lfs.lookup(ROOT, b"pipe").expect("renamed fifo");
    assert_eq!((pipe.kind, pipe.perm), (FileKind::Fifo, 0o640));
    let chr2 = lfs.lookup(ROOT, b"chr2").expect("linked device");
    assert_eq!(
        (chr2.kind, chr2.rdev, chr2.nlink),
        (FileKind::CharDevice, dev(1, 3), 1)
    );
    assert!(matches!(lfs.lookup(ROOT, b"chr"), Err(LfsError::NotFound)));
}

/// A write by a writer without CAP_FSETID clears set-user-ID, and set-group-ID when group
/// execute is set, in the same change as the data (it persists); so does one that stores no
/// bytes (a write stream's kernel may keep none of a write). A privileged write keeps them,
/// and set-group-ID without group execute stays.
#[test]
fn unprivileged_write_clears_set_id_bits() {
    let (lfs, device) = mounted();
    let suid = lfs.create(ROOT, b"suid", 0o4777, 0, 0).expect("create");
    let both = lfs.create(ROOT, b"both", 0o6755, 0, 0).expect("create");
    let lock = lfs.create(ROOT, b"lock", 0o2745, 0, 0).expect("create");
    let kept = lfs.create(ROOT, b"kept", 0o4755, 0, 0).expect("create");
    let none = lfs.create(ROOT, b"none", 0o6777, 0, 0).expect("create");
    for f in [&suid, &both, &lock] {
        assert_eq!(lfs.write_as(f.ino, 0, b"x", true).expect("write"), 1);
    }
    lfs.write(kept.ino, 0, b"x").expect("privileged write");
    let perm = |lfs: &Lfs, name: &[u8]| lfs.lookup(ROOT, name).expect("lookup").perm;
    assert_eq!(lfs.write_as(none.ino, 0, b"", true).expect("write"), 0);
    assert_eq!(perm(&lfs, b"none"), 0o777, "a write that stored nothing");
    let want = [
        (&b"suid"[..], 0o777),
        (b"both", 0o755),
        (b"lock", 0o2745),
        (b"kept", 0o4755),
    ];
    for (name, p) in want {
        assert_eq!(perm(&lfs, name), p, "{}", String::from_utf8_lossy(name));
    }
    // The mode is logged with the data: after a sync and a power cut both are there.
    lfs.sync().expect("sync");
    drop(lfs);
    let device = reboot(device, Cut::NONE);
    let lfs = Lfs::mount(&device).expect("mount after power loss");
    assert_clean(&lfs);
    for (name, p) in want {
        assert_eq!(perm(&lfs, name), p, "{}", String::from_utf8_lossy(name));
        let ino = lfs.lookup(ROOT, name).expect("lookup").ino;
        assert_eq!(read_all(&lfs, ino), b"x");
    }
    assert_eq!(perm(&lfs, b"none"), 0o777, "a write that stored nothing");
}
