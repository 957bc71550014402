//! POSIX behaviour of the file system's operations, errors included, and persistence across
//! unmount and mount.

use lfs::{
    access, check_access, Credentials, FileKind, InodeNo, Lfs, LfsError, RenameFlags, SetAttr,
    Time, XattrMode,
};
use testkit::{device::*, fs::*, geometry, rng::pattern};

const ROOT: InodeNo = InodeNo::ROOT;

fn mounted() -> (Lfs, RamZoned) {
    let device = fresh(geometry::small());
    let lfs = Lfs::mount(&device).expect("mount");
    (lfs, device)
}

/// A written file reads back before and after a remount, with its size and mode.
#[test]
fn write_read_persist() {
    let (lfs, device) = mounted();
    let f = lfs
        .create(ROOT, b"hello", 0o644, 1000, 1000)
        .expect("create");
    let data = pattern(1, 10_000);
    assert_eq!(lfs.write(f.ino, 0, &data).expect("write"), 10_000);
    assert_eq!(lfs.read(f.ino, 0, 20_000).expect("read"), data);
    assert_eq!(lfs.read(f.ino, 4000, 100).expect("read"), &data[4000..4100]);
    assert!(lfs.read(f.ino, 10_000, 10).expect("read at EOF").is_empty());
    let (lfs, _device) = remount(lfs, device);
    let f = walk(&lfs, "/hello").expect("lookup");
    assert_eq!(
        (f.size, f.perm, f.uid, f.kind),
        (10_000, 0o644, 1000, FileKind::File)
    );
    assert_eq!(read_all(&lfs, f.ino), data);
}

/// create and mkdir refuse existing names; lookup of a missing name is NotFound; names
/// longer than 255 bytes are NameTooLong; a file is not a directory.
#[test]
fn create_errors() {
    let (lfs, _device) = mounted();
    let f = lfs.create(ROOT, b"a", 0o644, 0, 0).expect("create");
    assert!(matches!(
        lfs.create(ROOT, b"a", 0o644, 0, 0),
        Err(LfsError::Exists)
    ));
    assert!(matches!(
        lfs.mkdir(ROOT, b"a", 0o755, 0, 0),
        Err(LfsError::Exists)
    ));
    assert!(matches!(lfs.lookup(ROOT, b"nope"), Err(LfsError::NotFound)));
    assert!(matches!(
        lfs.create(ROOT, &[b'x'; 256], 0o644, 0, 0),
        Err(LfsError::NameTooLong)
    ));
    assert!(matches!(
        lfs.create(f.ino, b"b", 0o644, 0, 0),
        Err(LfsError::NotDir)
    ));
    assert!(matches!(lfs.lookup(f.ino, b"b"), Err(LfsError::NotDir)));
    assert!(matches!(
        lfs.create(ROOT, b"a/b", 0o644, 0, 0),
        Err(LfsError::InvalidArgument(_))
    ));
    assert!(matches!(lfs.getattr(InodeNo(999)), Err(LfsError::NotFound)));
    assert_eq!(LfsError::Exists.errno(), 17);
    assert_eq!(LfsError::NotFound.errno(), 2);
}

/// mkdir, rmdir and link counts; rmdir refuses non-empty directories and files; unlink
/// refuses directories.
#[test]
fn directories() {
    let (lfs, device) = mounted();
    let d = lfs.mkdir(ROOT, b"d", 0o755, 0, 0).expect("mkdir");
    assert_eq!(d.nlink, 2);
    assert_eq!(lfs.getattr(ROOT).expect("root").nlink, 3);
    let e = lfs.mkdir(d.ino, b"e", 0o700, 0, 0).expect("mkdir");
    assert_eq!(lfs.lookup(e.ino, b"..").expect("..").ino, d.ino);
    lfs.create(d.ino, b"f", 0o644, 0, 0).expect("create");
    assert!(matches!(lfs.rmdir(ROOT, b"d"), Err(LfsError::NotEmpty)));
    assert!(matches!(lfs.rmdir(d.ino, b"f"), Err(LfsError::NotDir)));
    assert!(matches!(lfs.unlink(ROOT, b"d"), Err(LfsError::IsDir)));
    assert!(matches!(lfs.rmdir(ROOT, b"zz"), Err(LfsError::NotFound)));
    let (lfs, device) = remount(lfs, device);
    assert_eq!(lfs.getattr(d.ino).expect("d").nlink, 3);
    lfs.unlink(d.ino, b"f").expect("unlink");
    lfs.rmdir(d.ino, b"e").expect("rmdir");
    lfs.rmdir(ROOT, b"d").expect("rmdir");
    assert_eq!(lfs.getattr(ROOT).expect("root").nlink, 2);
    let (lfs, _device) = remount(lfs, device);
    assert!(matches!(lfs.lookup(ROOT, b"d"), Err(LfsError::NotFound)));
}

/// readdir lists ".", ".." and every entry once, and resumes from any returned offset, also
/// after entries before it were removed.
#[test]
fn readdir_offsets() {
    let (lfs, _device) = mounted();
    for i in 0..20 {
        lfs.create(ROOT, format!("n{i:02}").as_bytes(), 0o644, 0, 0)
            .expect("create");
    }
    let all = lfs.readdir(ROOT, 0).expect("readdir");
    assert_eq!(all.len(), 22);
    assert_eq!(
        (all[0].name.as_slice(), all[1].name.as_slice()),
        (&b"."[..], &b".."[..])
    );
    let resume = lfs.readdir(ROOT, all[10].offset).expect("readdir");
    assert_eq!(resume, all[11..]);
    lfs.unlink(ROOT, &all[5].name).expect("unlink");
    let resume = lfs.readdir(ROOT, all[10].offset).expect("readdir");
    assert_eq!(
        resume,
        all[11..],
        "removing an earlier entry does not shift offsets"
    );
}

/// Truncation shrinks and grows with zeros, also in the middle of a block, and persists.
#[test]
fn truncate_and_sparse() {
    let (lfs, device) = mounted();
    let f = lfs.create(ROOT, b"t", 0o644, 0, 0).expect("create");
    let data = pattern(2, 20_000);
    lfs.write(f.ino, 0, &data).expect("write");
    lfs.fsync(f.ino, false).expect("fsync");
    lfs.setattr(
        f.ino,
        SetAttr {
            size: Some(5000),
            ..SetAttr::default()
        },
    )
    .expect("shrink");
    lfs.setattr(
        f.ino,
        SetAttr {
            size: Some(12_000),
            ..SetAttr::default()
        },
    )
    .expect("grow");
    let mut expect = data[..5000].to_vec();
    expect.resize(12_000, 0);
    assert_eq!(read_all(&lfs, f.ino), expect);
    lfs.write(f.ino, 1 << 20, b"far").expect("sparse write");
    expect.resize(1 << 20, 0);
    expect.extend_from_slice(b"far");
    assert_eq!(read_all(&lfs, f.ino), expect);
    let (lfs, _device) = remount(lfs, device);
    assert_eq!(read_all(&lfs, f.ino), expect);
    let d = lfs.mkdir(ROOT, b"dd", 0o755, 0, 0).expect("mkdir");
    assert!(matches!(
        lfs.setattr(
            d.ino,
            SetAttr {
                size: Some(0),
                ..SetAttr::default()
            }
        ),
        Err(LfsError::IsDir)
    ));
    assert!(matches!(lfs.write(d.ino, 0, b"x"), Err(LfsError::IsDir)));
}

/// Set-ID bits, as Linux clears them: an owner change clears set-user-ID (and set-group-ID
/// with group execute) whoever asks, but not on a directory; a size change clears them unless
/// the caller may keep them; a mode given in the same change is kept as given.
#[test]
fn setattr_clears_set_id_bits() {
    let (lfs, _device) = mounted();
    let cases = [
        (
            "chown",
            SetAttr {
                uid: Some(7),
                ..SetAttr::default()
            },
            0o6777,
            0o777,
        ),
        (
            "chgrp no gexec",
            SetAttr {
                gid: Some(7),
                ..SetAttr::default()
            },
            0o6767,
            0o2767,
        ),
        (
            "truncate",
            SetAttr {
                size: Some(1),
                ..SetAttr::default()
            },
            0o6777,
            0o777,
        ),
        (
            "truncate, CAP_FSETID",
            SetAttr {
                size: Some(1),
                fsetid: true,
                ..SetAttr::default()
            },
            0o6777,
            0o6777,
        ),
        (
            "chown and chmod",
            SetAttr {
                uid: Some(7),
                mode: Some(0o4755),
                ..SetAttr::default()
            },
            0o6777,
            0o4755,
        ),
        (
            "utimes",
            SetAttr {
                mtime: Some(Time { sec: 1, nsec: 0 }),
                ..SetAttr::default()
            },
            0o6777,
            0o6777,
        ),
    ];
    for (i, (what, set, before, after)) in cases.into_iter().enumerate() {
        let name = format!("f{i}");
        let f = lfs
            .create(ROOT, name.as_bytes(), 0o644, 0, 0)
            .expect("create");
        let chmod = SetAttr {
            mode: Some(before),
            ..SetAttr::default()
        };
        lfs.setattr(f.ino, chmod).expect("chmod");
        assert_eq!(lfs.setattr(f.ino, set).expect(what).perm, after, "{what}");
    }
    let d = lfs.mkdir(ROOT, b"d", 0o6777, 0, 0).expect("mkdir");
    let chown = SetAttr {
        uid: Some(7),
        ..SetAttr::default()
    };
    assert_eq!(
        lfs.setattr(d.ino, chown).expect("chown a directory").perm,
        0o6777
    );
}

/// setattr changes mode, owner and times; they persist.
#[test]
fn setattr_persists() {
    let (lfs, device) = mounted();
    let f = lfs.create(ROOT, b"s", 0o644, 0, 0).expect("create");
    let t = Time {
        sec: 1_000_000,
        nsec: 5,
    };
    let set = SetAttr {
        mode: Some(0o4711),
        uid: Some(7),
        gid: Some(8),
        atime: Some(t),
        mtime: Some(t),
        size: None,
        fsetid: false,
    };
    let a = lfs.setattr(f.ino, set).expect("setattr");
    assert_eq!(
        (a.perm, a.uid, a.gid, a.mtime, a.atime),
        (0o4711, 7, 8, t, t)
    );
    assert_eq!(a.mode(), 0o104711);
    let (lfs, _device) = remount(lfs, device);
    let a = lfs.getattr(f.ino).expect("getattr");
    assert_eq!(
        (a.perm, a.uid, a.gid, a.mtime, a.atime),
        (0o4711, 7, 8, t, t)
    );
}

/// rename moves, replaces files, refuses to replace non-empty directories or put a
/// directory below itself, and honours NOREPLACE and EXCHANGE.
#[test]
fn rename_rules() {
    let (lfs, device) = mounted();
    let plain = RenameFlags::default();
    let a = lfs.create(ROOT, b"a", 0o644, 0, 0).expect("create");
    lfs.write(a.ino, 0, b"AAA").expect("write");
    let b = lfs.create(ROOT, b"b", 0o644, 0, 0).expect("create");
    lfs.write(b.ino, 0, b"BBB").expect("write");
    let d = lfs.mkdir(ROOT, b"d", 0o755, 0, 0).expect("mkdir");
    let e = lfs.mkdir(d.ino, b"e", 0o755, 0, 0).expect("mkdir");
    lfs.create(e.ino, b"x", 0o644, 0, 0).expect("create");

    let noreplace = RenameFlags {
        noreplace: true,
        exchange: false,
    };
    assert!(matches!(
        lfs.rename(ROOT, b"a", ROOT, b"b", noreplace),
        Err(LfsError::Exists)
    ));
    let exchange = RenameFlags {
        noreplace: false,
        exchange: true,
    };
    lfs.rename(ROOT, b"a", ROOT, b"b", exchange)
        .expect("exchange");
    assert_eq!(lfs.lookup(ROOT, b"a").expect("a").ino, b.ino);
    assert_eq!(lfs.lookup(ROOT, b"b").expect("b").ino, a.ino);
    // Replace: "a" (holding BBB) replaces "b" (AAA); the old inode is freed.
    lfs.rename(ROOT, b"a", ROOT, b"b", plain).expect("replace");
    assert!(matches!(lfs.getattr(a.ino), Err(LfsError::NotFound)));
    assert_eq!(
        read_all(&lfs, lfs.lookup(ROOT, b"b").expect("b").ino),
        b"BBB"
    );
    assert!(matches!(
        lfs.rename(ROOT, b"d", e.ino, b"d2", plain),
        Err(LfsError::InvalidArgument(_))
    ));
    let empty = lfs.mkdir(ROOT, b"empty", 0o755, 0, 0).expect("mkdir");
    assert!(matches!(
        lfs.rename(ROOT, b"empty", d.ino, b"e", plain),
        Err(LfsError::NotEmpty)
    ));
    assert!(matches!(
        lfs.rename(ROOT, b"b", ROOT, b"d", plain),
        Err(LfsError::IsDir)
    ));
    assert!(matches!(
        lfs.rename(ROOT, b"d", ROOT, b"b", plain),
        Err(LfsError::NotDir)
    ));
    assert!(matches!(
        lfs.rename(ROOT, b"zz", ROOT, b"q", plain),
        Err(LfsError::NotFound)
    ));
    // A directory moves to another parent: link counts follow.
    lfs.rename(d.ino, b"e", empty.ino, b"e", plain)
        .expect("move dir");
    assert_eq!(lfs.getattr(d.ino).expect("d").nlink, 2);
    assert_eq!(lfs.getattr(empty.ino).expect("empty").nlink, 3);
    assert_eq!(lfs.lookup(e.ino, b"..").expect("..").ino, empty.ino);
    let (lfs, _device) = remount(lfs, device);
    assert!(walk(&lfs, "/empty/e/x").is_ok());
}

/// Hard links share an inode and its data; the inode lives until its last name goes.
#[test]
fn hard_links() {
    let (lfs, device) = mounted();
    let f = lfs.create(ROOT, b"one", 0o644, 0, 0).expect("create");
    lfs.write(f.ino, 0, b"shared").expect("write");
    let d = lfs.mkdir(ROOT, b"d", 0o755, 0, 0).expect("mkdir");
    assert_eq!(lfs.link(f.ino, d.ino, b"two").expect("link").nlink, 2);
    assert!(matches!(
        lfs.link(d.ino, ROOT, b"dl"),
        Err(LfsError::NotPermitted)
    ));
    assert!(matches!(
        lfs.link(f.ino, ROOT, b"one"),
        Err(LfsError::Exists)
    ));
    let (lfs, device) = remount(lfs, device);
    lfs.unlink(ROOT, b"one").expect("unlink");
    let two = walk(&lfs, "/d/two").expect("two");
    assert_eq!((two.ino, two.nlink), (f.ino, 1));
    assert_eq!(read_all(&lfs, two.ino), b"shared");
    let (lfs, _device) = remount(lfs, device);
    assert_eq!(read_all(&lfs, f.ino), b"shared");
}

/// An unlinked file stays readable and writable while open and is freed at its last
/// release (or at the next mount if the handle was never released).
#[test]
fn open_unlinked() {
    let (lfs, device) = mounted();
    let f = lfs.create(ROOT, b"tmp", 0o644, 0, 0).expect("create");
    lfs.open(f.ino).expect("open");
    lfs.write(f.ino, 0, b"still here").expect("write");
    lfs.unlink(ROOT, b"tmp").expect("unlink");
    assert!(matches!(lfs.lookup(ROOT, b"tmp"), Err(LfsError::NotFound)));
    assert_eq!(read_all(&lfs, f.ino), b"still here");
    assert_eq!(lfs.getattr(f.ino).expect("getattr").nlink, 0);
    assert_clean(&lfs);
    lfs.release(f.ino).expect("release");
    assert!(matches!(lfs.getattr(f.ino), Err(LfsError::NotFound)));

    let g = lfs.create(ROOT, b"tmp2", 0o644, 0, 0).expect("create");
    lfs.open(g.ino).expect("open");
    lfs.unlink(ROOT, b"tmp2").expect("unlink");
    lfs.sync().expect("sync");
    // Power off with the handle open: the orphan is freed at mount.
    drop(lfs);
    let device = reboot(device, Cut::NONE);
    let lfs = Lfs::mount(&device).expect("mount");
    assert!(matches!(lfs.getattr(g.ino), Err(LfsError::NotFound)));
    assert_clean(&lfs);
}

/// Symbolic links keep their target across a remount; readlink of a file is invalid.
#[test]
fn symlinks() {
    let (lfs, device) = mounted();
    let s = lfs
        .symlink(ROOT, b"ln", b"/some/where", 5, 6)
        .expect("symlink");
    assert_eq!((s.kind, s.size, s.uid), (FileKind::Symlink, 11, 5));
    let f = lfs.create(ROOT, b"f", 0o644, 0, 0).expect("create");
    assert!(matches!(
        lfs.readlink(f.ino),
        Err(LfsError::InvalidArgument(_))
    ));
    let (lfs, _device) = remount(lfs, device);
    assert_eq!(lfs.readlink(s.ino).expect("readlink"), b"/some/where");
}

/// Extended attributes are stored, listed, replaced and removed, with CREATE/REPLACE
/// semantics, and persist.
#[test]
fn xattrs() {
    let (lfs, device) = mounted();
    let f = lfs.create(ROOT, b"x", 0o644, 0, 0).expect("create");
    lfs.setxattr(f.ino, b"user.a", b"1", XattrMode::Any)
        .expect("set");
    lfs.setxattr(f.ino, b"user.b", &[7; 5000], XattrMode::Create)
        .expect("set");
    assert!(matches!(
        lfs.setxattr(f.ino, b"user.a", b"2", XattrMode::Create),
        Err(LfsError::Exists)
    ));
    assert!(matches!(
        lfs.setxattr(f.ino, b"user.c", b"2", XattrMode::Replace),
        Err(LfsError::NoXattr)
    ));
    lfs.setxattr(f.ino, b"user.a", b"2", XattrMode::Replace)
        .expect("replace");
    let (lfs, device) = remount(lfs, device);
    assert_eq!(lfs.getxattr(f.ino, b"user.a").expect("get"), b"2");
    assert_eq!(lfs.getxattr(f.ino, b"user.b").expect("get"), vec![7; 5000]);
    assert_eq!(
        lfs.listxattr(f.ino).expect("list"),
        vec![b"user.a".to_vec(), b"user.b".to_vec()]
    );
    lfs.removexattr(f.ino, b"user.a").expect("remove");
    assert!(matches!(
        lfs.getxattr(f.ino, b"user.a"),
        Err(LfsError::NoXattr)
    ));
    assert!(matches!(
        lfs.removexattr(f.ino, b"user.a"),
        Err(LfsError::NoXattr)
    ));
    let (lfs, _device) = remount(lfs, device);
    assert_eq!(
        lfs.listxattr(f.ino).expect("list"),
        vec![b"user.b".to_vec()]
    );
}

/// check_access applies owner, group and other bits, and root's bypass to a file's
/// attributes.
#[test]
fn permissions() {
    let (lfs, _device) = mounted();
    let f = lfs.create(ROOT, b"p", 0o640, 1000, 100).expect("create");
    let check = |uid, gid, mask| {
        let who = Credentials {
            uid,
            gid,
            groups: Vec::new(),
        };
        check_access(&lfs.getattr(f.ino).expect("getattr"), &who, mask)
    };
    assert!(check(1000, 1, access::R_OK | access::W_OK).is_ok());
    assert!(check(2000, 100, access::R_OK).is_ok());
    assert!(matches!(
        check(2000, 100, access::W_OK),
        Err(LfsError::PermissionDenied)
    ));
    assert!(matches!(
        check(2000, 200, access::R_OK),
        Err(LfsError::PermissionDenied)
    ));
    assert!(check(0, 0, access::R_OK | access::W_OK).is_ok());
    assert!(matches!(
        check(0, 0, access::X_OK),
        Err(LfsError::PermissionDenied)
    ));
    assert_eq!(LfsError::PermissionDenied.errno(), 13);
}

/// statfs counts written data, and gets it back when files are deleted.
#[test]
fn statfs_tracks_space() {
    let (lfs, _device) = mounted();
    let before = lfs.statfs().expect("statfs");
    assert!(before.blocks > 0 && before.bfree <= before.blocks);
    let f = lfs.create(ROOT, b"big", 0o644, 0, 0).expect("create");
    lfs.write(f.ino, 0, &pattern(3, 400 * 4096)).expect("write");
    let mid = lfs.statfs().expect("statfs");
    assert_eq!(
        before.bfree - mid.bfree,
        400,
        "buffered blocks count as used"
    );
    lfs.fsync(f.ino, false).expect("fsync");
    assert_eq!(lfs.statfs().expect("statfs").bfree, mid.bfree);
    lfs.unlink(ROOT, b"big").expect("unlink");
    assert_eq!(lfs.statfs().expect("statfs").bfree, before.bfree);
}

/// A device without a file system refuses to mount with NotFormatted.
#[test]
fn unformatted_device() {
    let geometry = geometry::small();
    let device = format(geometry, geometry::zones_for(&geometry));
    assert!(matches!(Lfs::mount(&device), Err(LfsError::NotFormatted)));
}

/// Several threads work on their own files at once.
#[test]
fn threads_share_the_fs() {
    let (lfs, _device) = mounted();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let lfs = &lfs;
            s.spawn(move || {
                let name = format!("t{t}");
                let f = lfs
                    .create(ROOT, name.as_bytes(), 0o644, 0, 0)
                    .expect("create");
                for i in 0..50u64 {
                    lfs.write(f.ino, i * 1000, &pattern(t * 100 + i, 1000))
                        .expect("write");
                }
                lfs.fsync(f.ino, false).expect("fsync");
            });
        }
    });
    for t in 0..4u64 {
        let f = walk(&lfs, &format!("/t{t}")).expect("file");
        let want: Vec<u8> = (0..50).flat_map(|i| pattern(t * 100 + i, 1000)).collect();
        assert_eq!(read_all(&lfs, f.ino), want);
    }
    assert_clean(&lfs);
}

/// A rename sets the renamed inode's ctime whatever its kind (directory, symlink, FIFO), and
/// the new ctime survives a remount.
#[test]
fn rename_changes_ctime_of_every_kind() {
    let (lfs, device) = mounted();
    let old = Time { sec: 1, nsec: 0 };
    let dir = lfs.mkdir(ROOT, b"d", 0o755, 0, 0).expect("mkdir").ino;
    let link = lfs
        .symlink(ROOT, b"l", b"target", 0, 0)
        .expect("symlink")
        .ino;
    let fifo = lfs
        .mknod(ROOT, b"p", S_IFIFO | 0o644, 0, 0, 0)
        .expect("mknod")
        .ino;
    for (ino, from, to) in [(dir, "d", "d2"), (link, "l", "l2"), (fifo, "p", "p2")] {
        lfs.setattr(
            ino,
            SetAttr {
                atime: Some(old),
                mtime: Some(old),
                ..SetAttr::default()
            },
        )
        .expect("setattr");
        let before = lfs.getattr(ino).expect("getattr").ctime;
        std::thread::sleep(std::time::Duration::from_millis(20));
        lfs.rename(
            ROOT,
            from.as_bytes(),
            ROOT,
            to.as_bytes(),
            RenameFlags::default(),
        )
        .expect("rename");
        let after = lfs.getattr(ino).expect("getattr").ctime;
        assert!(after > before, "{from}: ctime {before:?} stayed {after:?}");
    }
    let (lfs, _device) = remount(lfs, device);
    assert_eq!(walk(&lfs, "/d2").expect("d2").ino, dir);
}

/// The file type bits of a FIFO in a mode.
const S_IFIFO: u32 = 0o010_000;
