//! The offload at its edges, on a real mount with the real clang-built kernels: offloads of
//! sparse files.

use std::{
    fs::{self, File},
    os::unix::fs::{FileExt, MetadataExt},
    path::Path,
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
