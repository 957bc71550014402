//! The offload at its edges, on a real mount with the real clang-built kernels: what a kernel's
//! return value becomes for the caller, and offloads of sparse files.

use std::{
    fs::{self, File},
    os::unix::fs::{FileExt, MetadataExt},
    path::Path,
    sync::mpsc,
    time::{Duration, SystemTime},
};

use rustix::io::Errno;
use tests::{
    kernel_object,
    mount::Mount,
    reference,
    xattr::{get, remove, set},
};

/// Sample data (xorshift bytes).
fn sample(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A mount (with `mount_args`) with `kernels` (names under target/kernels, like
/// `tests/xor_read`) copied to /kernels by their file names, and `data` in /data.
fn setup(data: &[u8], mount_args: &[&str], kernels: &[&str]) -> Mount {
    let m = Mount::new(&[], mount_args);
    fs::create_dir(m.path("kernels")).expect("mkdir /kernels");
    for k in kernels {
        let name = Path::new(k).file_name().expect("a kernel name");
        let to = m.path("kernels").join(name).with_extension("o");
        fs::copy(kernel_object(k), to).expect("copy kernel");
    }
    fs::write(m.path("data"), data).expect("write data");
    m
}

fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_io_error(e).unwrap_or(Errno::IO)
}

/// Reads `len` bytes at `offset` in one pread into a page-aligned buffer, so that a read of
/// up to 1 MiB is one FUSE request (one kernel run).
fn pread(path: &Path, offset: u64, len: usize) -> Result<Vec<u8>, Errno> {
    let f = File::open(path).map_err(|e| errno_of(&e))?;
    let mut buf = vec![0u8; len + 4096];
    let start = buf.as_ptr().align_offset(4096);
    let n = f
        .read_at(&mut buf[start..start + len], offset)
        .map_err(|e| errno_of(&e))?;
    Ok(buf[start..start + n].to_vec())
}

/// stat of `path` (size, blocks, mtime, ctime) as the daemon has it: asked after the kernel's
/// attribute cache (a second) expired.
fn fresh_stat(path: &Path) -> (u64, u64, (i64, i64), (i64, i64)) {
    std::thread::sleep(Duration::from_millis(1100));
    let st = fs::metadata(path).expect("stat");
    (
        st.len(),
        st.blocks(),
        (st.mtime(), st.mtime_nsec()),
        (st.ctime(), st.ctime_nsec()),
    )
}

/// Free blocks of the mount (statvfs).
fn free_blocks(m: &Mount) -> u64 {
    rustix::fs::statvfs(&m.root).expect("statvfs").f_bfree
}

/// Runs `op` on a thread of its own and returns what it returned. If no answer comes within a
/// minute, the daemon answered with a reply the kernel refused (the caller would wait forever):
/// the daemon is killed, which frees the thread with ENOTCONN, and the test fails.
fn answered<T: Send + 'static>(
    m: &mut Mount,
    what: &str,
    op: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(op());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(value) => value,
        Err(_) => {
            m.kill();
            panic!("{what} got no answer in a minute: the kernel refused the daemon's reply");
        }
    }
}

/// A kernel's return value reaches the caller only as an errno the kernel's FUSE passes on: a
/// count is success, -EINVAL and -EIO are those errnos, and -ENOSYS, -600, -4095, -100000 and
/// INT64_MIN are EIO, for a file job and for a read stream, each answered (never a hang).
#[test]
fn kernel_return_values_reach_the_caller_as_valid_errnos() {
    let mut m = setup(&sample(20_000, 1), &[], &["tests/return_param"]);
    let file = m.path("data");
    let cases: [(i64, Option<Errno>); 8] = [
        (8, None),
        (-22, Some(Errno::INVAL)),
        (-5, Some(Errno::IO)),
        (-100_000, Some(Errno::IO)),
        (i64::MIN, Some(Errno::IO)),
        (-600, Some(Errno::IO)),
        (-4095, Some(Errno::IO)),
        // FUSE takes ENOSYS from setxattr as "not implemented" and refuses every later one.
        (-38, Some(Errno::IO)),
    ];
    for (ret, want) in cases {
        set(&file, "user.csd.args", &format!("{} 0", ret as u64)).expect("args");
        let job = {
            let file = file.clone();
            answered(&mut m, &format!("a file job returning {ret}"), move || {
                set(&file, "user.csd.file_job", "/kernels/return_param.o")
            })
        };
        let output = (ret as u64).to_le_bytes().to_vec();
        match want {
            None => {
                assert_eq!(job, Ok(()), "a file job returning {ret}");
                assert_eq!(get(&file, "user.csd.result"), Ok(output.clone()));
            }
            Some(errno) => assert_eq!(job, Err(errno), "a file job returning {ret}"),
        }
        set(&file, "user.csd.read_stream", "/kernels/return_param.o").expect("read stream");
        let read = {
            let file = file.clone();
            answered(
                &mut m,
                &format!("a stream read returning {ret}"),
                move || pread(&file, 0, 4096),
            )
        };
        match want {
            None => assert_eq!(read, Ok(output), "a stream read returning {ret}"),
            Some(errno) => assert_eq!(read, Err(errno), "a stream read returning {ret}"),
        }
        remove(&file, "user.csd.read_stream").expect("remove the stream");
    }
    set(&file, "user.note", "xattrs still work").expect("a later setxattr");
    m.unmount_and_fsck();
}

/// Setting offload keys on a sparse file writes nothing into it: its size, blocks, times and
/// content and the device's free space stay as they were, and the kernels read zeros in its
/// holes (a read stream over data and holes, a file job over the whole file).
#[test]
fn offloading_a_sparse_file_leaves_it_as_it_was() {
    let mut m = setup(b"", &[], &["passthrough", "entropy"]);
    let file = m.path("sparse");
    let size: usize = 4 << 20;
    let (a, b) = (sample(100_000, 2), sample(50_000, 3));
    let b_at = 3_000_123;
    let mut want = vec![0u8; size];
    want[..a.len()].copy_from_slice(&a);
    want[b_at..b_at + b.len()].copy_from_slice(&b);
    {
        let f = File::create(&file).expect("create");
        f.write_all_at(&a, 0).expect("write");
        f.write_all_at(&b, b_at as u64).expect("write");
        f.set_len(size as u64).expect("a hole up to the end");
        f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000))
            .expect("mtime");
        f.sync_all().expect("fsync");
    }
    let before = fresh_stat(&file);
    let free = free_blocks(&m);

    set(&file, "user.csd.read_stream", "/kernels/passthrough.o").expect("read stream");
    for (offset, len) in [
        (0u64, 65_536usize),
        (90_000, 300_000),
        (1 << 20, 1 << 20),
        (2_999_000, 100_000),
        (size as u64 - 10_000, 65_536),
    ] {
        assert_eq!(
            pread(&file, offset, len).expect("stream read"),
            reference::file_range(&want, offset, len as u64),
            "{offset}+{len}"
        );
    }
    set(&file, "user.csd.file_job", "/kernels/entropy.o").expect("file job");
    assert_eq!(
        get(&file, "user.csd.result").expect("result"),
        reference::histogram_bytes(&reference::entropy_histogram(&want))
    );
    assert_eq!(
        fresh_stat(&file),
        before,
        "(size, blocks, mtime, ctime) changed"
    );
    assert_eq!(free_blocks(&m), free, "blocks were written");
    remove(&file, "user.csd.read_stream").expect("remove");
    assert!(
        fs::read(&file).expect("read") == want,
        "the content changed"
    );
    m.remount();
    assert_eq!(fresh_stat(&file), before, "after a remount");
    assert!(
        fs::read(&file).expect("read") == want,
        "the content changed"
    );
    m.unmount_and_fsck();
}
