//! The two ways requests reach the daemon: FUSE over io_uring, when the kernel offers it (the
//! `fuse` module's `enable_uring`, which `cargo xtask deps` turns on), and `/dev/fuse`
//! (`--no-io-uring`, or a kernel without it). The rest of this binary runs over whichever the
//! machine offers; this module checks which one a mount took, and runs the same work both ways.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

use tests::mount::Mount;
use tests::xattr;

const FUSE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

/// Whether the kernel offers FUSE over io_uring to new mounts.
fn kernel_offers_io_uring() -> bool {
    fs::read_to_string(FUSE_URING).is_ok_and(|on| on.trim() == "Y")
}

/// The daemon's line on how requests come (it logs it once the queues run, which may be
/// just after `csd mount` returns).
fn transport(m: &Mount) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let log = m.log();
        if let Some(line) = log.lines().find(|l| l.contains("requests through")) {
            return line.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no transport in the log:\n{log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The names of the daemon's threads.
fn threads(m: &Mount) -> Vec<String> {
    let pid = m.daemon().expect("mounted");
    let mut names = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task")).expect("the daemon's threads") {
        let comm = task.expect("a thread").path().join("comm");
        names.extend(fs::read_to_string(comm).map(|n| n.trim().to_string()));
    }
    names
}

/// Completions the daemon's io_uring instances have taken so far (`CqHead` in each one's
/// `/proc/PID/fdinfo`): each request served through them is one.
fn ring_completions(m: &Mount) -> u64 {
    let pid = m.daemon().expect("mounted");
    let mut completions = 0;
    for fd in fs::read_dir(format!("/proc/{pid}/fd")).expect("the daemon's files") {
        let fd = fd.expect("a file").path();
        if fs::read_link(&fd).is_ok_and(|l| l.to_string_lossy() == "anon_inode:[io_uring]") {
            let name = fd
                .file_name()
                .expect("a number")
                .to_string_lossy()
                .into_owned();
            let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{name}")).unwrap_or_default();
            completions += info
                .lines()
                .find_map(|l| l.strip_prefix("CqHead:"))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    completions
}

/// CPU time, in ns, of the daemon's threads whose names start with `prefix` (`schedstat`).
fn thread_cpu_ns(m: &Mount, prefix: &str) -> u64 {
    let pid = m.daemon().expect("mounted");
    let mut ns = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task")).expect("the daemon's threads") {
        let task = task.expect("a thread").path();
        let named = fs::read_to_string(task.join("comm")).is_ok_and(|n| n.starts_with(prefix));
        if named {
            let stat = fs::read_to_string(task.join("schedstat")).unwrap_or_default();
            ns += stat
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    ns
}

/// Work that takes every kind of request the two ways differ on: small and large reads (the
/// ring hands the large ones to helpers), writes, a setxattr (answered later through the
/// ring thread's mailbox), names, a listing, a fsync and a truncation.
fn work(m: &Mount) {
    let data: Vec<u8> = (0..3 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let path = m.path("data");
    fs::write(&path, &data).expect("write 3 MiB");
    // The write left its pages in the page cache: drop them, so the reads below reach the
    // daemon, in readahead-sized requests.
    let mut file = fs::File::open(&path).expect("open");
    rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).expect("fadvise");
    let mut read = Vec::new();
    file.read_to_end(&mut read).expect("read it back");
    assert!(read == data, "the 3 MiB read back differ");
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open");
    let mut block = [0u8; 4096];
    for offset in [0u64, 4096 * 77, (3 << 20) - 4096] {
        f.read_exact_at(&mut block, offset).expect("a 4 KiB read");
        let at = offset as usize;
        assert_eq!(&block[..], &data[at..at + 4096], "4 KiB at {offset}");
    }
    f.write_all_at(b"over", 10).expect("a small write");
    f.sync_all().expect("fsync");
    f.set_len(1 << 20).expect("truncate");
    let mut head = [0u8; 14];
    let mut g = fs::File::open(&path).expect("reopen");
    g.seek(SeekFrom::Start(0)).expect("seek");
    g.read_exact(&mut head).expect("read the head");
    assert_eq!(&head[10..], b"over");
    assert_eq!(fs::metadata(&path).expect("stat").len(), 1 << 20);

    xattr::set(&path, "user.note", "kept").expect("setxattr");
    assert_eq!(xattr::get(&path, "user.note").expect("getxattr"), b"kept");

    fs::create_dir(m.path("dir")).expect("mkdir");
    fs::rename(&path, m.path("dir/moved")).expect("rename");
    std::os::unix::fs::symlink("moved", m.path("dir/link")).expect("symlink");
    let mut names: Vec<String> = fs::read_dir(m.path("dir"))
        .expect("readdir")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["link", "moved"]);
    assert_eq!(
        fs::read_link(m.path("dir/link")).expect("readlink"),
        std::path::Path::new("moved")
    );
    fs::remove_file(m.path("dir/link")).expect("unlink");
    fs::remove_file(m.path("dir/moved")).expect("unlink");
    fs::remove_dir(m.path("dir")).expect("rmdir");
}

/// A mount takes FUSE over io_uring when the kernel offers it, with its threads pinned per
/// CPU and its read helpers, and says so in its log; otherwise `/dev/fuse`.
#[test]
fn requests_come_the_way_the_kernel_offers() {
    let mut m = Mount::new(&["--capacity", "64M"], &[]);
    let line = transport(&m);
    let ring_threads = threads(&m)
        .iter()
        .filter(|n| n.starts_with("csd-ring-"))
        .count();
    if kernel_offers_io_uring() {
        assert!(
            line.contains("requests through FUSE over io_uring"),
            "the kernel offers FUSE over io_uring, and the log says: {line}"
        );
        assert!(
            ring_threads >= 3,
            "{ring_threads} ring threads: {:?}",
            threads(&m)
        );
        let (before, helpers) = (ring_completions(&m), thread_cpu_ns(&m, "csd-ring-read-"));
        work(&m);
        // The requests came through the rings, and the large reads through the helpers.
        let served = ring_completions(&m) - before;
        assert!(served >= 20, "{served} requests through the rings");
        assert!(
            thread_cpu_ns(&m, "csd-ring-read-") > helpers,
            "the read helpers never ran"
        );
    } else {
        assert!(line.contains("requests through /dev/fuse"), "{line}");
        assert_eq!(ring_threads, 0, "{:?}", threads(&m));
        work(&m);
    }
    m.unmount_and_fsck();
}

/// `--no-io-uring` keeps every request on `/dev/fuse`, whatever the kernel offers, and the
/// same work gives the same results.
#[test]
fn no_io_uring_keeps_dev_fuse() {
    let mut m = Mount::new(&["--capacity", "64M"], &["--no-io-uring"]);
    let line = transport(&m);
    assert!(line.contains("requests through /dev/fuse"), "{line}");
    let ring_threads = threads(&m)
        .iter()
        .filter(|n| n.starts_with("csd-ring-"))
        .count();
    assert_eq!(ring_threads, 0, "{:?}", threads(&m));
    work(&m);
    assert_eq!(ring_completions(&m), 0, "requests through an io_uring");
    m.unmount_and_fsck();
}
