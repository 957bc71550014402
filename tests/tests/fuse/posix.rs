//! POSIX behaviour through a real FUSE mount (`csd mount`, in the background): every
//! operation, its errors, permissions checked against another user, a full device, and
//! persistence across unmount and mount (with `csd fsck` clean at the end).

use std::{
    fs,
    io::{Read, Seek, SeekFrom, Write},
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::Path,
    process::Command,
    time::{Duration, SystemTime},
};

use rustix::{fs::RenameFlags, io::Errno};
use tests::mount::Mount;

fn errno_of(e: &std::io::Error) -> Option<i32> {
    e.raw_os_error()
}

/// The errno a std::io result failed with.
#[track_caller]
fn fails_with<T: std::fmt::Debug>(result: std::io::Result<T>, want: Errno) {
    let err = result.expect_err("the operation must fail");
    assert_eq!(
        errno_of(&err),
        Some(want.raw_os_error()),
        "{err} (want {want:?})"
    );
}

fn setfattr(args: &[&str], path: &Path) -> std::process::Output {
    Command::new("setfattr")
        .args(args)
        .arg(path)
        .output()
        .expect("setfattr runs")
}

fn getfattr_value(name: &str, path: &Path) -> Option<String> {
    let out = Command::new("getfattr")
        .args(["--only-values", "-n", name])
        .arg(path)
        .output()
        .expect("getfattr runs");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn as_nobody(script: &str) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .output()
        .expect("setpriv runs")
}

/// Files, directories, symlinks, hard links, renames, truncation, mode, owner, times and
/// user xattrs all come back after unmount and mount, and fsck is clean.
#[test]
fn every_operation_persists_across_remount() {
    let mut m = Mount::new(&[], &[]);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::create_dir_all(m.path("a/b/c")).expect("mkdir -p");
    fs::write(m.path("a/b/file"), &data).expect("write");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(m.path("a/b/file"))
        .expect("open for write");
    f.seek(SeekFrom::Start(100_000)).expect("seek");
    f.write_all(b"overwritten").expect("overwrite");
    f.sync_all().expect("fsync");
    drop(f);
    let mut want = data.clone();
    want[100_000..100_011].copy_from_slice(b"overwritten");

    std::os::unix::fs::symlink("b/file", m.path("a/link")).expect("symlink");
    fs::hard_link(m.path("a/b/file"), m.path("a/hard")).expect("link");
    assert_eq!(fs::metadata(m.path("a/hard")).expect("stat").nlink(), 2);
    fs::write(m.path("a/moved"), b"to be moved").expect("write");
    fs::rename(m.path("a/moved"), m.path("a/b/c/moved")).expect("rename");
    fs::write(m.path("a/victim"), b"old").expect("write");
    fs::write(m.path("a/winner"), b"new").expect("write");
    fs::rename(m.path("a/winner"), m.path("a/victim")).expect("rename over");
    fs::write(m.path("short"), b"0123456789").expect("write");
    fs::OpenOptions::new()
        .write(true)
        .open(m.path("short"))
        .and_then(|f| f.set_len(4))
        .expect("truncate");
    fs::write(m.path("long"), b"xy").expect("write");
    fs::OpenOptions::new()
        .write(true)
        .open(m.path("long"))
        .and_then(|f| f.set_len(10_000))
        .expect("extend");
    fs::set_permissions(m.path("short"), fs::Permissions::from_mode(0o640)).expect("chmod");
    std::os::unix::fs::chown(m.path("short"), Some(1234), Some(5678)).expect("chown");
    let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    fs::File::options()
        .write(true)
        .open(m.path("long"))
        .and_then(|f| f.set_modified(mtime))
        .expect("utimes");
    let out = setfattr(&["-n", "user.colour", "-v", "blue"], &m.path("a/b/file"));
    assert!(out.status.success(), "{out:?}");

    m.remount();

    assert_eq!(fs::read(m.path("a/b/file")).expect("read"), want);
    assert_eq!(fs::read(m.path("a/link")).expect("through symlink"), want);
    assert_eq!(
        fs::read_link(m.path("a/link")).expect("readlink"),
        Path::new("b/file")
    );
    assert_eq!(fs::read(m.path("a/hard")).expect("hard link"), want);
    assert_eq!(fs::metadata(m.path("a/hard")).expect("stat").nlink(), 2);
    assert_eq!(
        fs::read(m.path("a/b/c/moved")).expect("moved"),
        b"to be moved"
    );
    assert!(!m.path("a/moved").exists());
    assert_eq!(fs::read(m.path("a/victim")).expect("replaced"), b"new");
    assert!(!m.path("a/winner").exists());
    assert_eq!(fs::read(m.path("short")).expect("short"), b"0123");
    let long = fs::read(m.path("long")).expect("long");
    assert_eq!(long.len(), 10_000);
    assert_eq!(&long[..2], b"xy");
    assert!(long[2..].iter().all(|&b| b == 0));
    let meta = fs::metadata(m.path("short")).expect("stat");
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!((meta.uid(), meta.gid()), (1234, 5678));
    assert_eq!(
        fs::metadata(m.path("long"))
            .expect("stat")
            .modified()
            .expect("mtime"),
        mtime
    );
    assert_eq!(
        getfattr_value("user.colour", &m.path("a/b/file")).as_deref(),
        Some("blue")
    );
    let mut names: Vec<String> = fs::read_dir(m.path("a"))
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["b", "hard", "link", "victim"]);
    assert_eq!(fs::metadata(m.path("a")).expect("stat").nlink(), 3);

    // Removing everything works and persists too.
    fs::remove_file(m.path("a/hard")).expect("unlink");
    fs::remove_dir_all(m.path("a")).expect("rm -r");
    let out = setfattr(&["-x", "user.colour"], &m.path("short"));
    assert!(!out.status.success(), "removing a missing xattr must fail");
    m.remount();
    assert!(!m.path("a").exists());
    assert_eq!(fs::read_dir(&m.root).expect("readdir").count(), 2);
    m.unmount_and_fsck();
}

/// Each operation fails with the errno POSIX gives it.
#[test]
fn errors_have_posix_errnos() {
    let mut m = Mount::new(&[], &[]);
    fs::create_dir(m.path("dir")).expect("mkdir");
    fs::write(m.path("dir/inside"), b"x").expect("write");
    fs::write(m.path("file"), b"x").expect("write");
    fs::create_dir(m.path("empty")).expect("mkdir");

    fails_with(fs::read(m.path("missing")), Errno::NOENT);
    fails_with(fs::remove_file(m.path("missing")), Errno::NOENT);
    fails_with(fs::metadata(m.path("missing/deeper")), Errno::NOENT);
    fails_with(
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(m.path("file")),
        Errno::EXIST,
    );
    fails_with(fs::create_dir(m.path("dir")), Errno::EXIST);
    fails_with(
        fs::hard_link(m.path("file"), m.path("dir/inside")),
        Errno::EXIST,
    );
    fails_with(
        std::os::unix::fs::symlink("x", m.path("file")),
        Errno::EXIST,
    );
    fails_with(fs::remove_dir(m.path("dir")), Errno::NOTEMPTY);
    fails_with(fs::rename(m.path("empty"), m.path("dir")), Errno::NOTEMPTY);
    fails_with(fs::remove_file(m.path("dir")), Errno::ISDIR);
    fails_with(
        fs::OpenOptions::new().write(true).open(m.path("dir")),
        Errno::ISDIR,
    );
    fails_with(fs::rename(m.path("file"), m.path("empty")), Errno::ISDIR);
    fails_with(fs::remove_dir(m.path("file")), Errno::NOTDIR);
    fails_with(fs::metadata(m.path("file/x")), Errno::NOTDIR);
    fails_with(
        fs::rename(m.path("dir"), m.path("dir/inside/x")),
        Errno::NOTDIR,
    );
    fails_with(fs::rename(m.path("dir"), m.path("dir/sub")), Errno::INVAL);
    fails_with(fs::hard_link(m.path("dir"), m.path("dirlink")), Errno::PERM);
    let long = "n".repeat(256);
    fails_with(fs::write(m.path(&long), b"x"), Errno::NAMETOOLONG);
    fails_with(
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            m.path("file"),
            rustix::fs::CWD,
            m.path("dir/inside"),
            RenameFlags::NOREPLACE,
        )
        .map_err(std::io::Error::from),
        Errno::EXIST,
    );
    fails_with(
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            m.path("file"),
            rustix::fs::CWD,
            m.path("nothing"),
            RenameFlags::EXCHANGE,
        )
        .map_err(std::io::Error::from),
        Errno::NOENT,
    );
    assert_eq!(getfattr_value("user.missing", &m.path("file")), None);
    let out = Command::new("getfattr")
        .args(["-n", "user.missing"])
        .arg(m.path("file"))
        .output()
        .expect("getfattr runs");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No such attribute"),
        "{out:?}"
    );
    let file = fs::OpenOptions::new()
        .write(true)
        .open(m.path("file"))
        .expect("open");
    fails_with(
        rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::KEEP_SIZE, 0, 4096)
            .map_err(std::io::Error::from),
        Errno::OPNOTSUPP,
    );
    drop(file);
    // Nothing above changed anything.
    assert_eq!(fs::read(m.path("dir/inside")).expect("read"), b"x");
    m.unmount_and_fsck();
}

/// RENAME_EXCHANGE swaps two names atomically (a file and a directory too) and persists.
#[test]
fn rename_exchange_and_noreplace() {
    let mut m = Mount::new(&[], &[]);
    fs::write(m.path("one"), b"first").expect("write");
    fs::create_dir(m.path("two")).expect("mkdir");
    fs::write(m.path("two/inner"), b"second").expect("write");
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        m.path("one"),
        rustix::fs::CWD,
        m.path("two"),
        RenameFlags::EXCHANGE,
    )
    .expect("exchange");
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        m.path("two"),
        rustix::fs::CWD,
        m.path("three"),
        RenameFlags::NOREPLACE,
    )
    .expect("noreplace to a free name");
    m.remount();
    assert_eq!(fs::read(m.path("one/inner")).expect("dir moved"), b"second");
    assert_eq!(fs::read(m.path("three")).expect("file moved"), b"first");
    assert!(!m.path("two").exists());
    m.unmount_and_fsck();
}

/// An unlinked file stays readable and writable through an open handle, and is freed at
/// its last close (fsck finds no orphan).
#[test]
fn unlinked_open_file_lives_until_closed() {
    let mut m = Mount::new(&[], &[]);
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.path("temp"))
        .expect("create");
    f.write_all(&vec![7u8; 200_000]).expect("write");
    fs::remove_file(m.path("temp")).expect("unlink");
    assert!(!m.path("temp").exists());
    f.write_all(b"tail").expect("write after unlink");
    f.seek(SeekFrom::Start(0)).expect("seek");
    let mut back = Vec::new();
    f.read_to_end(&mut back).expect("read after unlink");
    assert_eq!(back.len(), 200_004);
    assert_eq!(&back[200_000..], b"tail");
    let before = rustix::fs::statvfs(&m.root).expect("statvfs");
    drop(f);
    // FUSE sends the release after close(2) returns: poll for it.
    let started = std::time::Instant::now();
    while rustix::fs::statvfs(&m.root).expect("statvfs").f_bfree <= before.f_bfree {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the last close did not free the blocks"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(fs::read_dir(&m.root).expect("readdir").count(), 0);
    m.unmount_and_fsck();
}

/// statfs reports the device's blocks; fsync makes data durable (it is there after a remount
/// and the space it takes shows).
#[test]
fn statfs_and_fsync() {
    let mut m = Mount::new(&[], &[]);
    let empty = rustix::fs::statvfs(&m.root).expect("statvfs");
    assert_eq!(empty.f_bsize, 4096);
    assert!(empty.f_blocks > 1000, "{} blocks", empty.f_blocks);
    assert!(empty.f_bfree > 0 && empty.f_bfree <= empty.f_blocks);
    assert_eq!(empty.f_namemax, 255);
    let mut f = fs::File::create(m.path("synced")).expect("create");
    f.write_all(&vec![1u8; 1 << 20]).expect("write");
    f.sync_data().expect("fdatasync");
    let full = rustix::fs::statvfs(&m.root).expect("statvfs");
    assert!(
        empty.f_bfree - full.f_bfree >= 256,
        "{} then {} free",
        empty.f_bfree,
        full.f_bfree
    );
    drop(f);
    m.remount();
    assert_eq!(fs::read(m.path("synced")).expect("read").len(), 1 << 20);
    m.unmount_and_fsck();
}

/// A tiny device fills up with ENOSPC, keeps what was written, and has room again after a
/// delete.
#[test]
fn full_device_gives_enospc() {
    let mut m = Mount::new(&["--capacity", "12M"], &[]);
    let chunk = vec![0x5au8; 256 << 10];
    let mut written = 0usize;
    let mut f = fs::File::create(m.path("big")).expect("create");
    let err = loop {
        match f.write_all(&chunk) {
            Ok(()) => written += chunk.len(),
            Err(e) => break e,
        }
        assert!(written < 64 << 20, "a 12 MiB device took 64 MiB");
    };
    assert_eq!(errno_of(&err), Some(Errno::NOSPC.raw_os_error()), "{err}");
    drop(f);
    fails_with(fs::write(m.path("more"), &chunk), Errno::NOSPC);
    let _ = fs::remove_file(m.path("more"));
    assert!(written >= 1 << 20, "only {written} bytes fit");
    let big = fs::metadata(m.path("big")).expect("stat").len() as usize;
    assert!(big >= written);
    fs::remove_file(m.path("big")).expect("delete");
    fs::write(m.path("after"), &chunk).expect("room again after the delete");
    m.remount();
    assert_eq!(fs::read(m.path("after")).expect("read"), chunk);
    m.unmount_and_fsck();
}

/// Permissions are checked against the caller: another user cannot read a private file,
/// write into a directory it may not write, or chmod what it does not own; with
/// --no-permissions it can.
#[test]
fn permissions_are_checked_against_the_caller() {
    let mut m = Mount::new(&[], &["--allow-other"]);
    fs::set_permissions(&m.root, fs::Permissions::from_mode(0o755)).expect("chmod root");
    fs::write(m.path("secret"), b"private").expect("write");
    fs::set_permissions(m.path("secret"), fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::write(m.path("public"), b"shared").expect("write");
    fs::create_dir(m.path("open")).expect("mkdir");
    fs::set_permissions(m.path("open"), fs::Permissions::from_mode(0o777)).expect("chmod");
    let secret = m.path("secret").display().to_string();
    let public = m.path("public").display().to_string();
    let open = m.path("open").display().to_string();
    let root = m.root.display().to_string();

    let out = as_nobody(&format!("cat {secret}"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{out:?}"
    );
    let out = as_nobody(&format!("cat {public}"));
    assert_eq!(out.stdout, b"shared", "{out:?}");
    let out = as_nobody(&format!("echo x > {root}/new"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{out:?}"
    );
    let out = as_nobody(&format!("echo x >> {public}"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{out:?}"
    );
    let out = as_nobody(&format!("chmod 777 {public}"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "{out:?}"
    );
    let out = as_nobody(&format!("rm -f {public}"));
    assert!(!out.status.success(), "{out:?}");
    let out = as_nobody(&format!("echo mine > {open}/mine && chmod 600 {open}/mine"));
    assert!(out.status.success(), "{out:?}");
    let meta = fs::metadata(m.path("open/mine")).expect("stat");
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert!(m.path("public").exists() && !m.path("new").exists());

    m.unmount();
    m.set_options(&["--allow-other", "--no-permissions"]);
    m.mount();
    let out = as_nobody(&format!("cat {secret}"));
    assert_eq!(out.stdout, b"private", "{out:?}");
    m.unmount_and_fsck();
}

/// mkfifo, mknod of character and block devices (as root) and a bound Unix socket make
/// inodes of their type with their device numbers (stat and readdir say so); the kernel
/// carries a FIFO's data and a socket's connections without the file system; all of it
/// comes back after a remount, and fsck is clean.
#[test]
fn fifos_sockets_and_device_nodes() {
    use std::os::unix::fs::FileTypeExt;
    use std::os::unix::net::{UnixListener, UnixStream};

    use rustix::fs::{makedev, mknodat, FileType, Mode, CWD};

    let mut m = Mount::new(&[], &[]);
    let null = makedev(1, 3);
    // A major past 255 and a minor past 255 use all of the kernel's 32-bit encoding.
    let disk = makedev(259, 70_000);
    // The modes are ones umask 022 leaves as they are.
    mknodat(
        CWD,
        m.path("fifo"),
        FileType::Fifo,
        Mode::from_raw_mode(0o640),
        0,
    )
    .expect("mkfifo");
    mknodat(
        CWD,
        m.path("null"),
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o644),
        null,
    )
    .expect("mknod c 1 3");
    mknodat(
        CWD,
        m.path("disk"),
        FileType::BlockDevice,
        Mode::from_raw_mode(0o600),
        disk,
    )
    .expect("mknod b 259 70000");
    let listener = UnixListener::bind(m.path("sock")).expect("bind a socket");

    // The FIFO's data goes from writer to reader through the kernel's pipe.
    let fifo = m.path("fifo");
    let writer = std::thread::spawn(move || fs::write(fifo, b"through the pipe"));
    assert_eq!(
        fs::read(m.path("fifo")).expect("read the fifo"),
        b"through the pipe"
    );
    writer.join().expect("the writer").expect("write the fifo");
    // The socket's connections go through the kernel too.
    let mut client = UnixStream::connect(m.path("sock")).expect("connect");
    client.write_all(b"hello").expect("send");
    drop(client);
    let (mut server, _) = listener.accept().expect("accept");
    let mut got = Vec::new();
    server.read_to_end(&mut got).expect("receive");
    assert_eq!(got, b"hello");
    // The listener and the connection it accepted hold the socket's path, and so the mount.
    drop((server, listener));

    let check = |m: &Mount| {
        let stat = |name: &str| fs::symlink_metadata(m.path(name)).expect(name);
        let fifo = stat("fifo");
        assert!(fifo.file_type().is_fifo());
        assert_eq!(
            (fifo.mode() & 0o7777, fifo.rdev(), fifo.len()),
            (0o640, 0, 0)
        );
        let chr = stat("null");
        assert!(chr.file_type().is_char_device());
        assert_eq!((chr.mode() & 0o7777, chr.rdev()), (0o644, null));
        let blk = stat("disk");
        assert!(blk.file_type().is_block_device());
        assert_eq!((blk.mode() & 0o7777, blk.rdev()), (0o600, disk));
        let sock = stat("sock");
        assert!(sock.file_type().is_socket());
        assert_eq!((sock.rdev(), sock.len()), (0, 0));
        let mut listed: Vec<(String, &str)> = fs::read_dir(&m.root)
            .expect("readdir")
            .map(|e| {
                let e = e.expect("entry");
                let t = e.file_type().expect("d_type");
                let kind = if t.is_fifo() {
                    "fifo"
                } else if t.is_char_device() {
                    "char"
                } else if t.is_block_device() {
                    "block"
                } else if t.is_socket() {
                    "socket"
                } else {
                    "other"
                };
                (e.file_name().to_string_lossy().into_owned(), kind)
            })
            .collect();
        listed.sort();
        assert_eq!(
            listed,
            [
                ("disk".to_string(), "block"),
                ("fifo".to_string(), "fifo"),
                ("null".to_string(), "char"),
                ("sock".to_string(), "socket"),
            ]
        );
    };
    check(&m);
    m.remount();
    check(&m);
    fs::remove_file(m.path("sock")).expect("unlink the socket");
    m.unmount_and_fsck();
}

/// A write by another user (no CAP_FSETID) to a root-owned 04777 file leaves it 0777, and
/// 02777 becomes 0777; a write by root keeps set-user-ID; truncation (and `O_TRUNC`) by
/// another user and chown by root clear the bits too, truncation by root does not, as on
/// Linux's own file systems; the modes persist. (The mount clears the bits itself: the kernel
/// leaves it to the file system, `FUSE_HANDLE_KILLPRIV_V2`.)
#[test]
fn writes_by_other_users_clear_set_id_bits() {
    let mut m = Mount::new(&[], &["--allow-other"]);
    fs::set_permissions(&m.root, fs::Permissions::from_mode(0o755)).expect("chmod root");
    for (name, mode) in [("suid", 0o4777), ("sgid", 0o2777), ("root", 0o4777)] {
        fs::write(m.path(name), b"data").expect("write");
        fs::set_permissions(m.path(name), fs::Permissions::from_mode(mode)).expect("chmod");
    }
    for name in ["trunc", "otrunc", "rtrunc", "chown"] {
        fs::write(m.path(name), b"data").expect("write");
        fs::set_permissions(m.path(name), fs::Permissions::from_mode(0o6777)).expect("chmod");
    }
    let path = |name: &str| m.path(name).display().to_string();
    for name in ["suid", "sgid"] {
        let out = as_nobody(&format!("printf more >> {}", path(name)));
        assert!(out.status.success(), "{out:?}");
    }
    let out = as_nobody(&format!("truncate -s 2 {}", path("trunc")));
    assert!(out.status.success(), "{out:?}");
    let out = as_nobody(&format!(": > {}", path("otrunc")));
    assert!(out.status.success(), "{out:?}");
    fs::OpenOptions::new()
        .write(true)
        .open(m.path("rtrunc"))
        .and_then(|f| f.set_len(3))
        .expect("root truncates");
    fs::OpenOptions::new()
        .append(true)
        .open(m.path("root"))
        .and_then(|mut f| f.write_all(b"more"))
        .expect("root writes");
    std::os::unix::fs::chown(m.path("chown"), Some(1234), Some(1234)).expect("chown");

    let want = [
        ("suid", 0o777, 8),
        ("sgid", 0o777, 8),
        ("root", 0o4777, 8),
        ("trunc", 0o777, 2),
        ("otrunc", 0o777, 0),
        ("rtrunc", 0o6777, 3),
        ("chown", 0o777, 4),
    ];
    let check = |m: &Mount| {
        for (name, mode, len) in want {
            let meta = fs::metadata(m.path(name)).expect(name);
            assert_eq!(
                (meta.mode() & 0o7777, meta.len()),
                (mode, len),
                "{name}: mode {:o}",
                meta.mode() & 0o7777
            );
        }
    };
    check(&m);
    m.remount();
    check(&m);
    m.unmount_and_fsck();
}
