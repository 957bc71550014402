//! The offload at its edges, on a real mount with the real clang-built kernels: what a kernel's
//! return value becomes for the caller, offloads of sparse files, what shared mappings see,
//! supplementary groups on kernel paths, and a stream replaced while its reads are in flight.
//!
//! Offload state belongs to the process that sets it, so what another process (or another
//! user) does runs in a child: this test binary run again as [`child_steps`], with the steps in
//! its environment.

use std::{
    fs::{self, File},
    os::unix::fs::{FileExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, SystemTime},
};

use rustix::io::Errno;
use testkit::rng::pattern;
use tests::{
    kernel_object,
    mapping::{self, SharedMap},
    mount::Mount,
    reference,
    xattr::{get, remove, set},
};

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

/// Runs [`child_steps`] in a new process over `file` and returns each step's outcome, up to
/// and including the first that failed.
fn child(file: &Path, steps: &str) -> Vec<Result<(), Errno>> {
    let child_test = tests::test_name(module_path!(), "child_steps");
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            &child_test,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CSD_CHILD_FILE", file)
        .env("CSD_CHILD_STEPS", steps)
        .output()
        .expect("start the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the child failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outcomes: Vec<Result<(), Errno>> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("@child-step "))
        .map(|rest| match rest.trim().parse::<i32>() {
            Ok(0) => Ok(()),
            Ok(errno) => Err(Errno::from_raw_os_error(errno)),
            Err(_) => panic!("the child reported {rest:?}"),
        })
        .collect();
    assert!(!outcomes.is_empty(), "the child ran no step: {stdout}");
    outcomes
}

/// The child process of [`child`]: this test binary run again with CSD_CHILD_FILE and
/// CSD_CHILD_STEPS set. Runs the steps in order, one per line, and prints `@child-step ERRNO`
/// for each (0 when it worked), stopping after the first that failed:
/// - `as UID GID GROUPS`: drop to those credentials (GROUPS: supplementary groups separated by
///   commas, or `-` for none);
/// - `set KEY VALUE`: set an extended attribute of the file;
/// - `map` (last): map the whole file shared and fault every page in, in this same process
///   (it becomes a `python3` that does, and reports).
#[test]
#[ignore = "run by the tests of this file as a second process"]
fn child_steps() {
    let (Some(file), Some(steps)) = (
        std::env::var_os("CSD_CHILD_FILE").map(PathBuf::from),
        std::env::var("CSD_CHILD_STEPS").ok(),
    ) else {
        return;
    };
    let errno = |e: Errno| e.raw_os_error();
    let io_errno = |e: std::io::Error| errno_of(&e).raw_os_error();
    for step in steps.lines() {
        let words: Vec<&str> = step.split_whitespace().collect();
        let outcome: Result<(), i32> = match words.as_slice() {
            ["as", uid, gid, groups] => {
                let id = |w: &str| w.parse::<u32>().expect("a numeric id");
                let groups: Vec<nix::unistd::Gid> = groups
                    .split(',')
                    .filter(|g| *g != "-")
                    .map(|g| nix::unistd::Gid::from_raw(id(g)))
                    .collect();
                nix::unistd::setgroups(&groups)
                    .and_then(|()| nix::unistd::setgid(nix::unistd::Gid::from_raw(id(gid))))
                    .and_then(|()| nix::unistd::setuid(nix::unistd::Uid::from_raw(id(uid))))
                    .map_err(|e| e as i32)
            }
            ["set", key, value @ ..] => set(&file, key, &value.join(" ")).map_err(errno),
            // The last step: this process becomes the one that maps, and reports.
            ["map"] => std::fs::metadata(&file).map_err(io_errno).and_then(|meta| {
                let err = mapping::populate_in_this_process(&file, meta.len() as usize);
                Err(io_errno(err))
            }),
            _ => panic!("unknown child step {step:?}"),
        };
        let code = outcome.err().unwrap_or(0);
        println!("\n@child-step {code}");
        if code != 0 {
            break;
        }
    }
}

/// Negative kernel returns reach the caller as errnos FUSE accepts (others EIO), never as a hang.
#[test]
fn kernel_return_values_reach_the_caller_as_valid_errnos() {
    let mut m = setup(&pattern(1, 20_000), &[], &["tests/return_param"]);
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

/// Offloading a sparse file writes nothing: stat, free space and content stay; kernels read zeros.
#[test]
fn offloading_a_sparse_file_leaves_it_as_it_was() {
    let mut m = setup(b"", &[], &["passthrough", "entropy"]);
    let file = m.path("sparse");
    let size: usize = 4 << 20;
    let (a, b) = (pattern(2, 100_000), pattern(3, 50_000));
    let b_at = 3_000_123;
    let mut want = vec![0u8; size];
    want[..a.len()].copy_from_slice(&a);
    want[b_at..b_at + b.len()].copy_from_slice(&b);
    let empty = free_blocks(&m);
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
    // The file holds 150 KB of data in 4 MiB: if it were not sparse, there is nothing to test.
    assert!(
        empty - free < (size / 4096 / 4) as u64,
        "the file took {} blocks: it is not sparse",
        empty - free
    );

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

/// A read stream's process is refused mapped pages, so another process's mapping sees the file.
#[test]
fn shared_mappings_never_see_a_streams_output() {
    let data = pattern(4, 256 << 10);
    let mut m = setup(&data, &[], &["tests/xor_read"]);
    let file = m.path("data");
    // Mapped first: a mapping made after the child's would drop the cached pages as it is made.
    let map = SharedMap::new(&file, data.len()).expect("map");
    let steps = "set user.csd.args 0xff\nset user.csd.read_stream /kernels/xor_read.o\nmap";
    let outcomes = child(&file, steps);
    let seen = map
        .read()
        .expect("the mapping process answers")
        .expect("this process's pages are the file's");
    assert!(
        seen == data,
        "another process's mapping saw the stream's output: {} of {} bytes differ",
        seen.iter().zip(&data).filter(|(a, b)| a != b).count(),
        data.len()
    );
    assert_eq!(
        outcomes,
        [Ok(()), Ok(()), Err(Errno::FAULT)],
        "the stream's process is refused its mapped pages"
    );
    assert!(
        m.log().contains("memory mapping"),
        "the daemon log says why: {}",
        m.log()
    );
    // The stream itself still works for read(2).
    set(&file, "user.csd.args", "0xff").expect("args");
    set(&file, "user.csd.read_stream", "/kernels/xor_read.o").expect("read stream");
    assert_eq!(
        pread(&file, 4096, 8192).expect("stream read"),
        reference::xor(&data[4096..12288], 0xff)
    );
    remove(&file, "user.csd.read_stream").expect("remove");
    m.unmount_and_fsck();
}

/// Kernel paths are checked with supplementary groups: one grants access, no group gets EACCES.
#[test]
fn kernel_paths_are_checked_against_supplementary_groups() {
    let data = pattern(5, 10_000);
    let mut m = setup(&data, &["--allow-other"], &[]);
    let (user, group, other) = (5000u32, 4242u32, 4343u32);
    fs::set_permissions(&m.root, fs::Permissions::from_mode(0o755)).expect("chmod root");
    let dir = m.path("kernels/private");
    fs::create_dir(&dir).expect("mkdir");
    let kernel = dir.join("passthrough.o");
    fs::copy(kernel_object("passthrough"), &kernel).expect("copy kernel");
    for (path, mode) in [(&dir, 0o750), (&kernel, 0o640)] {
        std::os::unix::fs::chown(path, Some(0), Some(group)).expect("chown");
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }
    let file = m.path("data");
    std::os::unix::fs::chown(&file, Some(user), Some(user)).expect("chown data");
    let job = "set user.csd.file_job /kernels/private/passthrough.o";
    for (creds, want) in [
        (format!("{user} {user} {group}"), Ok(())),
        (format!("{user} {user} {other},{user}"), Err(Errno::ACCESS)),
        (format!("{user} {group} -"), Ok(())),
        (format!("{user} {user} -"), Err(Errno::ACCESS)),
    ] {
        assert_eq!(
            child(&file, &format!("as {creds}\n{job}")),
            [Ok(()), want],
            "uid gid groups: {creds}"
        );
    }
    m.unmount_and_fsck();
}

/// Reads racing stream replacements get either kernel's output or EAGAIN, never the raw file.
#[test]
fn a_stream_replaced_under_its_reads_never_returns_raw_bytes() {
    let data = pattern(6, 64 << 10);
    // Five workers: three reads in flight and the replacing setxattr are served at once.
    let mut m = setup(&data, &["--threads", "5"], &["tests/xor_read"]);
    let file = m.path("data");
    let keys = [0x55u64, 0xaa];
    let outputs: Vec<Vec<u8>> = keys.iter().map(|&k| reference::xor(&data, k)).collect();
    set(&file, "user.csd.args", "0x55").expect("args");
    set(&file, "user.csd.read_stream", "/kernels/xor_read.o").expect("read stream");
    let done = AtomicBool::new(false);
    let wrong = AtomicU64::new(0);
    let tallies = std::thread::scope(|s| {
        let readers: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    // Reads of each key's output, EAGAINs, raw reads, anything else.
                    let mut tally = [0u64; 5];
                    while !done.load(Ordering::Relaxed) {
                        let kind = match pread(&file, 0, data.len()) {
                            Ok(got) if got == outputs[0] => 0,
                            Ok(got) if got == outputs[1] => 1,
                            Err(Errno::AGAIN) => 2,
                            Ok(got) if got == data => 3,
                            _ => 4,
                        };
                        tally[kind] += 1;
                        if kind > 2 {
                            wrong.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    tally
                })
            })
            .collect();
        // Bounded: 2000 replacements, fewer once a read went wrong.
        for i in 0..2000 {
            if wrong.load(Ordering::Relaxed) > 0 {
                break;
            }
            let key = keys[(i + 1) % 2];
            set(&file, "user.csd.args", &format!("{key:#x}")).expect("args");
            set(&file, "user.csd.read_stream", "/kernels/xor_read.o").expect("replace");
        }
        done.store(true, Ordering::Relaxed);
        readers
            .into_iter()
            .map(|r| r.join().expect("reader"))
            .fold([0u64; 5], |mut sum, t| {
                sum.iter_mut().zip(t).for_each(|(s, t)| *s += t);
                sum
            })
    });
    let [first, second, again, raw, other] = tallies;
    assert_eq!(
        (raw, other),
        (0, 0),
        "{raw} reads returned the raw file, {other} something else \
         ({first} + {second} kernel outputs, {again} EAGAIN)"
    );
    assert!(
        first > 0 && second > 0,
        "both kernels' outputs were read: {tallies:?}"
    );
    remove(&file, "user.csd.read_stream").expect("remove");
    assert!(fs::read(&file).expect("read") == data);
    m.unmount_and_fsck();
}

/// Reads `len` bytes at `offset` through the open handle `f` in one pread.
fn pread_on(f: &File, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset).expect("pread");
    buf
}

/// An offload applies to the handles opened after its key is set: while this process streams
/// a file through a handle opened after the key, its handle opened before, `cat` in another
/// process and a shared mapping in a third read the file's bytes, through the page cache; the
/// stream's output never reaches them.
#[test]
fn offload_handles_and_regular_handles_share_a_file() {
    let data = pattern(5, 512 << 10);
    let mut m = setup(&data, &[], &["tests/xor_read"]);
    let file = m.path("data");
    let before = File::open(&file).expect("open before the key");
    set(&file, "user.csd.args", "0xff").expect("args");
    set(&file, "user.csd.read_stream", "/kernels/xor_read.o").expect("read stream");
    let after = File::open(&file).expect("open after the key");
    let window = |at: usize| at..at + 64 * 1024;
    for round in 0..4usize {
        let at = round * 100_000;
        assert_eq!(
            pread_on(&after, at as u64, 64 * 1024),
            reference::xor(&data[window(at)], 0xff),
            "the offload handle, round {round}"
        );
        assert!(
            pread_on(&before, at as u64, 64 * 1024) == data[window(at)],
            "the handle opened before the key read other bytes, round {round}"
        );
        let cat = Command::new("cat").arg(&file).output().expect("cat");
        assert!(
            cat.stdout == data,
            "cat saw the stream's output, round {round}"
        );
        let map = SharedMap::new(&file, data.len()).expect("map");
        let seen = map
            .read()
            .expect("the mapping answers")
            .expect("mapped pages");
        assert!(
            seen == data,
            "a mapping saw the stream's output, round {round}"
        );
    }
    drop((before, after));
    remove(&file, "user.csd.read_stream").expect("remove");
    assert!(pread(&file, 0, data.len()).expect("read") == data);
    m.unmount_and_fsck();
}

/// Bytes written through an offload handle reach the readers of the page cache: a reader that
/// keeps its handle open and one that opens afterwards read what was stored, not the pages
/// cached before the write.
#[test]
fn writes_on_offload_handles_reach_cached_readers() {
    let data = pattern(6, 256 << 10);
    let mut m = setup(&data, &[], &["xor"]);
    let file = m.path("data");
    // Cached: read through a handle that stays open, and by another process.
    let open_reader = File::open(&file).expect("open");
    assert!(pread_on(&open_reader, 0, data.len()) == data);
    let cat = Command::new("cat").arg(&file).output().expect("cat");
    assert!(cat.stdout == data);
    set(&file, "user.csd.args", "0x5a").expect("args");
    set(&file, "user.csd.write_stream", "/kernels/xor.o").expect("write stream");
    {
        let w = fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .expect("open the offload handle");
        w.write_all_at(&data[8192..8192 + 16384], 8192)
            .expect("write through the stream");
    }
    remove(&file, "user.csd.write_stream").expect("remove");
    let mut want = data.clone();
    want[8192..8192 + 16384].copy_from_slice(&reference::xor(&data[8192..8192 + 16384], 0x5a));
    assert!(
        pread_on(&open_reader, 0, data.len()) == want,
        "a handle open across the write read stale pages"
    );
    let cat = Command::new("cat").arg(&file).output().expect("cat");
    assert!(cat.stdout == want, "a new open read stale pages");
    drop(open_reader);
    m.unmount_and_fsck();
}
