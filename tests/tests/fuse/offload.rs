//! Offload through extended attributes on a real mount: every kernel through every key it
//! applies to, compared with `tests::reference`; snapshot isolation from a concurrent writer;
//! state per process (two processes with different kernels at once, a multi-threaded reader,
//! other processes seeing the live file); hostile kernels failing with clear errnos while the
//! mount keeps serving; device slots coming back after removexattr and process exit.
//!
//! The xattr calls are made in this test's own process (rustix), because the state belongs
//! to the process that sets it; a second process is this test binary run again
//! ([`child_reader`]).

use std::{
    fs,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use rustix::io::Errno;
use testkit::rng::pattern;
use tests::{
    kernel_object,
    mount::Mount,
    reference,
    xattr::{get, numbers, remove, set},
};

/// Sample data: every byte value, u32 values on both sides of 2^31 and the pattern "ab".
fn sample(len: usize) -> Vec<u8> {
    let mut data = pattern(1, len);
    for i in (0..len.saturating_sub(2)).step_by(997) {
        data[i..i + 2].copy_from_slice(b"ab");
    }
    data
}

/// A mount with the kernels copied to /kernels and `data` in /data.
fn setup(data: &[u8], mount_args: &[&str]) -> Mount {
    let m = Mount::new(&[], mount_args);
    fs::create_dir(m.path("kernels")).expect("mkdir /kernels");
    for k in ["passthrough", "entropy", "filter_u32", "pattern", "xor"] {
        fs::copy(kernel_object(k), m.path(&format!("kernels/{k}.o"))).expect("copy kernel");
    }
    fs::write(m.path("data"), data).expect("write data");
    m
}

/// What each read kernel must return over `bytes` with `args`.
type Reference = fn(&[u8], (u64, u64)) -> Vec<u8>;

const READ_KERNELS: [(&str, &str, Reference); 4] = [
    ("passthrough", "0 0", |d, _| reference::passthrough(d)),
    ("entropy", "0 0", |d, _| {
        reference::histogram_bytes(&reference::entropy_histogram(d))
    }),
    ("filter_u32", "0x80000000 0", |d, (p0, _)| {
        reference::u64_output(reference::filter_u32_count(d, p0))
    }),
    ("pattern", "0x6261 2", |d, (p0, p1)| {
        reference::u64_output(reference::pattern_count(d, p0, p1).unwrap_or_default())
    }),
];

fn parse_args(args: &str) -> (u64, u64) {
    let v: Vec<u64> = args
        .split_whitespace()
        .map(|w| match w.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).expect("hex"),
            None => w.parse().expect("decimal"),
        })
        .collect();
    (v[0], v[1])
}

/// Reads `len` bytes at `offset` in one pread.
fn pread(path: &Path, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let f = fs::File::open(path)?;
    let mut buf = vec![0u8; len];
    let n = f.read_at(&mut buf, offset)?;
    buf.truncate(n);
    Ok(buf)
}

const RANGES: [(u64, usize); 5] = [
    (0, 4096),
    (12_345, 100_000),
    (1_000_000, 512 << 10),
    (3_000_000 - 5_000, 64 << 10),
    (0, 512 << 10),
];

/// read_stream with passthrough, entropy, filter_u32 and pattern returns the reference's
/// output for every requested range; reads past the end return end of file; removing the key
/// returns the process to the file's bytes.
#[test]
fn read_stream_every_kernel_matches_reference() {
    let data = sample(3_000_000);
    let mut m = setup(&data, &[]);
    let file = m.path("data");
    for (kernel, args, want) in READ_KERNELS {
        set(&file, "user.csd.args", args).expect("set args");
        set(
            &file,
            "user.csd.read_stream",
            &format!("/kernels/{kernel}.o"),
        )
        .expect(kernel);
        assert_eq!(
            get(&file, "user.csd.read_stream").expect("get key"),
            format!("/kernels/{kernel}.o").as_bytes()
        );
        for (offset, len) in RANGES {
            let got = pread(&file, offset, len).expect("offloaded read");
            let bytes = reference::file_range(&data, offset, len as u64);
            assert_eq!(
                got,
                want(bytes, parse_args(args)),
                "{kernel} at {offset}+{len}"
            );
        }
        assert!(pread(&file, data.len() as u64, 4096)
            .expect("read")
            .is_empty());
        let stats = String::from_utf8(get(&file, "user.csd.stats").expect("stats")).expect("text");
        assert!(stats.starts_with("instructions="), "{stats}");
        remove(&file, "user.csd.read_stream").expect("remove");
        assert_eq!(pread(&file, 5, 10).expect("regular read"), &data[5..15]);
    }
    assert_eq!(
        remove(&file, "user.csd.read_stream"),
        Err(Errno::NODATA),
        "nothing is set any more"
    );
    m.unmount_and_fsck();
}

/// file_job runs each kernel once over the whole file; user.csd.result returns its output
/// (asked twice, size then value, without a re-run), user.csd.stats its counters; another
/// process sees no result.
#[test]
fn file_job_every_kernel_and_stats() {
    let data = sample(2_000_000);
    let mut m = setup(&data, &[]);
    let file = m.path("data");
    for (kernel, args, want) in READ_KERNELS {
        set(&file, "user.csd.args", args).expect("set args");
        let want = want(&data, parse_args(args));
        let job = set(&file, "user.csd.file_job", &format!("kernels/{kernel}.o"));
        let stats = String::from_utf8(get(&file, "user.csd.stats").expect("stats")).expect("text");
        if want.len() <= 64 << 10 {
            job.expect(kernel);
            assert_eq!(
                get(&file, "user.csd.result").expect("result"),
                want,
                "{kernel}"
            );
            assert_eq!(get(&file, "user.csd.result").expect("again"), want);
            assert!(
                stats.contains(&format!("bytes_returned={}", want.len())),
                "{stats}"
            );
        } else {
            // The passthrough of 2 MB is over the 64 KiB an xattr holds.
            assert_eq!(job, Err(Errno::TOOBIG), "{kernel}");
            assert_eq!(get(&file, "user.csd.result"), Err(Errno::NODATA));
        }
        assert!(
            stats.contains(&format!("device_bytes_read={}", data.len())),
            "{kernel}: {stats}"
        );
        // The same stats must not change on a second get: no re-run.
        assert_eq!(
            String::from_utf8(get(&file, "user.csd.stats").expect("stats")).expect("text"),
            stats
        );
    }
    let out = Command::new("getfattr")
        .args(["-n", "user.csd.result"])
        .arg(&file)
        .output()
        .expect("getfattr");
    assert!(!out.status.success(), "another process has no result");
    let link = String::from_utf8(get(&m.root, "user.csd.link").expect("link")).expect("text");
    assert!(link.starts_with("to_device="), "{link}");
    m.unmount_and_fsck();
}

/// A kernel's `csd_log` lines come back through `user.csd.log`, one per line, for the process
/// that ran it; a run that logs nothing leaves it empty.
#[test]
fn kernel_log_lines_reach_the_caller() {
    let data = sample(4096);
    let mut m = setup(&data, &[]);
    fs::copy(
        kernel_object("tests/log_twice"),
        m.path("kernels/log_twice.o"),
    )
    .expect("copy log_twice");
    let file = m.path("data");
    assert_eq!(
        get(&file, "user.csd.log"),
        Err(Errno::NODATA),
        "nothing ran yet"
    );
    set(&file, "user.csd.file_job", "/kernels/log_twice.o").expect("job");
    assert_eq!(
        get(&file, "user.csd.log").expect("log"),
        b"first line\nsecond line\n"
    );
    assert!(set(&file, "user.csd.log", "x").is_err(), "read only");
    set(&file, "user.csd.file_job", "/kernels/entropy.o").expect("job");
    assert_eq!(get(&file, "user.csd.log").expect("log"), b"");
    m.unmount_and_fsck();
}

/// `user.csd.counters` on the mount's root reports the file system's and the device's counters
/// live: data blocks written once a write is fsync'ed, and the device's commands and NAND
/// programs with them. Other inodes do not have it, and it cannot be set.
#[test]
fn counters_on_the_root_are_live() {
    let mut m = setup(&sample(4096), &[]);
    let counters =
        |m: &Mount| numbers(&m.root, "user.csd.counters").expect("counters of key=number pairs");
    let before = counters(&m);
    let file = m.path("written");
    fs::write(&file, vec![5u8; 1 << 20]).expect("write");
    fs::File::open(&file)
        .and_then(|f| f.sync_all())
        .expect("fsync");
    let after = counters(&m);
    assert!(
        after["data_write_blocks"] >= before["data_write_blocks"] + 256,
        "{before:?} -> {after:?}"
    );
    assert!(after["commands"] > before["commands"], "{after:?}");
    assert!(
        after["nand_programs"] > before["nand_programs"],
        "{after:?}"
    );
    assert!(after.contains_key("modeled_ns"), "{after:?}");
    assert_eq!(get(&file, "user.csd.counters"), Err(Errno::NODATA));
    assert!(set(&m.root, "user.csd.counters", "1").is_err());
    m.unmount_and_fsck();
}

/// The linked image of a kernel is kept between jobs (a repeat reads nothing of the kernel
/// file over the link), and a kernel file rewritten in place is linked again, not served stale.
#[test]
fn kernel_images_are_cached_until_the_file_changes() {
    let data = sample(300_000);
    let mut m = setup(&data, &[]);
    let file = m.path("data");
    let link_bytes = |m: &Mount| -> u64 {
        let link = String::from_utf8(get(&m.root, "user.csd.link").expect("link")).expect("text");
        link.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(_, v)| v.parse::<u64>().expect("a count"))
            .sum()
    };
    let kernel = m.path("kernels/k.o");
    fs::copy(kernel_object("entropy"), &kernel).expect("copy entropy");
    let histogram = reference::histogram_bytes(&reference::entropy_histogram(&data));
    set(&file, "user.csd.file_job", "/kernels/k.o").expect("first job");
    assert_eq!(get(&file, "user.csd.result").expect("result"), histogram);
    let before = link_bytes(&m);
    set(&file, "user.csd.file_job", "/kernels/k.o").expect("second job");
    let second = link_bytes(&m) - before;
    assert_eq!(get(&file, "user.csd.result").expect("result"), histogram);
    let object = fs::metadata(kernel_object("entropy"))
        .expect("entropy.o")
        .len();
    assert!(
        second < object,
        "a repeated job moved {second} link bytes, more than the {object}-byte kernel object"
    );
    // Rewrite the same inode with another kernel: the next job must run the new one.
    let pattern = fs::read(kernel_object("pattern")).expect("pattern.o");
    fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&kernel)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &pattern))
        .expect("rewrite k.o in place");
    set(&file, "user.csd.args", "0x6261 2").expect("args");
    set(&file, "user.csd.file_job", "/kernels/k.o").expect("job with the new kernel");
    assert_eq!(
        get(&file, "user.csd.result").expect("result"),
        reference::u64_output(reference::pattern_count(&data, 0x6261, 2).unwrap_or_default())
    );
    m.unmount_and_fsck();
}

/// write_stream with xor: the stored file is the xor of what was written; other processes
/// and a remount see the stored bytes.
#[test]
fn write_stream_xor_stores_transformed_bytes() {
    let mut m = setup(b"", &[]);
    let file = m.path("out");
    fs::write(&file, b"").expect("create");
    set(&file, "user.csd.args", "0x5a").expect("args");
    set(&file, "user.csd.write_stream", "/kernels/xor.o").expect("write_stream");
    let data = sample(700_000);
    {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .expect("open");
        f.write_all_at(&data[..300_000], 0).expect("write");
        f.write_all_at(&data[300_000..], 300_000).expect("write");
    }
    remove(&file, "user.csd.write_stream").expect("end the stream");
    let want = reference::xor(&data, 0x5a);
    assert_eq!(fs::read(&file).expect("read"), want);
    let out = Command::new("cat").arg(&file).output().expect("cat");
    assert_eq!(out.stdout, want);
    m.remount();
    assert_eq!(fs::read(&file).expect("read after remount"), want);
    m.unmount_and_fsck();
}

/// A regular writer (another process) rewrites the file while this process reads it through
/// an offload: the offload sees the snapshot taken at set time, everyone else the new file.
#[test]
fn offload_reads_the_snapshot_while_the_file_is_rewritten() {
    let old = sample(1_000_000);
    let mut m = setup(&old, &[]);
    let file = m.path("data");
    set(&file, "user.csd.read_stream", "/kernels/passthrough.o").expect("set");
    let new: Vec<u8> = old.iter().map(|b| !b).collect();
    let staged = m.dir().join("new.bin");
    fs::write(&staged, &new).expect("stage");
    for round in 0..3 {
        let status = Command::new("cp")
            .arg(&staged)
            .arg(&file)
            .status()
            .expect("cp");
        assert!(status.success());
        for (offset, len) in [(0u64, 65_536usize), (500_000, 300_000)] {
            let got = pread(&file, offset, len).expect("offloaded read");
            assert_eq!(
                got,
                &old[offset as usize..offset as usize + len],
                "round {round}"
            );
        }
        let out = Command::new("cat").arg(&file).output().expect("cat");
        assert_eq!(out.stdout, new, "other processes see the live file");
    }
    remove(&file, "user.csd.read_stream").expect("remove");
    assert_eq!(fs::read(&file).expect("read"), new);
    m.unmount_and_fsck();
}

/// On a nearly full device, rewriting a file a read stream holds needs the zones its snapshot
/// pins: the rewrite succeeds (it failed with ENOSPC), the stream's next read answers `EBUSY`
/// instead of reading zones that hold other data now, and a new stream reads the new data.
#[test]
fn writes_take_back_a_read_streams_snapshot_on_a_full_device() {
    // 32 MiB of NAND hold about 22 MiB of file data.
    let mut m = Mount::new(&["--capacity", "32M"], &[]);
    fs::create_dir(m.path("kernels")).expect("mkdir /kernels");
    fs::copy(
        kernel_object("passthrough"),
        m.path("kernels/passthrough.o"),
    )
    .expect("copy");
    let file = m.path("data");
    let old = sample(18 << 20);
    fs::write(&file, &old).expect("write data");
    set(&file, "user.csd.read_stream", "/kernels/passthrough.o").expect("set");
    assert_eq!(
        pread(&file, 4096, 8192).expect("stream read"),
        old[4096..12288]
    );
    let new: Vec<u8> = old.iter().map(|b| !b).collect();
    fs::write(&file, &new).expect("the rewrite takes the snapshot's zones back");
    fs::File::open(&file)
        .and_then(|f| f.sync_all())
        .expect("fsync the rewrite");
    let err = pread(&file, 4096, 8192).expect_err("the stream's snapshot is gone");
    assert_eq!(Errno::from_io_error(&err), Some(Errno::BUSY), "{err}");
    assert!(
        m.log()
            .contains("was reclaimed for writes; answering EBUSY"),
        "the daemon log says why:\n{}",
        m.log()
    );
    remove(&file, "user.csd.read_stream").expect("remove the reclaimed stream");
    set(&file, "user.csd.read_stream", "/kernels/passthrough.o").expect("set again");
    assert_eq!(
        pread(&file, 4096, 8192).expect("stream read"),
        new[4096..12288]
    );
    remove(&file, "user.csd.read_stream").expect("remove");
    assert!(fs::read(&file).expect("read") == new);
    m.unmount();
    assert!(
        m.log()
            .lines()
            .any(|l| l.contains("counters") && l.ends_with(" snapshots_reclaimed=1")),
        "the daemon counted the reclaimed snapshot:\n{}",
        m.log()
    );
    m.fsck().expect("fsck");
}

/// The offload state is per process: four threads of this process all get the entropy
/// kernel's output.
#[test]
fn multi_threaded_reader_shares_the_process_state() {
    let data = sample(2_000_000);
    let mut m = setup(&data, &[]);
    let file = m.path("data");
    set(&file, "user.csd.read_stream", "/kernels/entropy.o").expect("set");
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (file, data) = (&file, &data);
            s.spawn(move || {
                for i in 0..10u64 {
                    let offset = (t * 400_000 + i * 37_000) % 1_900_000;
                    let got = pread(file, offset, 100_000).expect("read");
                    let want = reference::histogram_bytes(&reference::entropy_histogram(
                        reference::file_range(data, offset, 100_000),
                    ));
                    assert_eq!(got, want, "thread {t} read {i}");
                }
            });
        }
    });
    m.unmount_and_fsck();
}

/// The second process of [`two_processes_offload_different_kernels_at_once`]: this test
/// binary run again with CSD_CHILD_FILE set. It offloads the entropy kernel, says it is
/// ready, reads, and writes "ok" (or what went wrong) to CSD_CHILD_REPORT.
#[test]
#[ignore = "run by two_processes_offload_different_kernels_at_once as a second process"]
fn child_reader() {
    let (Some(file), Some(report), Some(ready)) = (
        std::env::var_os("CSD_CHILD_FILE").map(PathBuf::from),
        std::env::var_os("CSD_CHILD_REPORT").map(PathBuf::from),
        std::env::var_os("CSD_CHILD_READY").map(PathBuf::from),
    ) else {
        return;
    };
    let result = (|| -> Result<(), String> {
        let data = fs::read(&file).map_err(|e| e.to_string())?;
        set(&file, "user.csd.read_stream", "/kernels/entropy.o").map_err(|e| e.to_string())?;
        fs::write(&ready, b"").map_err(|e| e.to_string())?;
        for i in 0..30u64 {
            let offset = i * 50_000;
            let got = pread(&file, offset, 200_000).map_err(|e| e.to_string())?;
            let want = reference::histogram_bytes(&reference::entropy_histogram(
                reference::file_range(&data, offset, 200_000),
            ));
            if got != want {
                return Err(format!("read {i} at {offset} differs"));
            }
        }
        Ok(())
    })();
    let text = match result {
        Ok(()) => "ok".to_string(),
        Err(e) => e,
    };
    fs::write(report, text).expect("write the report");
}

/// Two processes offload different kernels on the same file at the same time (entropy in a
/// child, passthrough here); each gets its own kernel's output.
#[test]
fn two_processes_offload_different_kernels_at_once() {
    let data = sample(1_600_000);
    let mut m = setup(&data, &[]);
    let file = m.path("data");
    let report = m.dir().join("child.report");
    let ready = m.dir().join("child.ready");
    let child_test = tests::test_name(module_path!(), "child_reader");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", &child_test, "--ignored", "--test-threads=1"])
        .env("CSD_CHILD_FILE", &file)
        .env("CSD_CHILD_REPORT", &report)
        .env("CSD_CHILD_READY", &ready)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start the child");
    let started = Instant::now();
    while !ready.exists() && !report.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "child never got ready"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    set(&file, "user.csd.read_stream", "/kernels/passthrough.o").expect("set");
    for i in 0..30u64 {
        let offset = i * 40_000;
        assert_eq!(
            pread(&file, offset, 100_000).expect("read"),
            &data[offset as usize..offset as usize + 100_000]
        );
    }
    let status = child.wait().expect("child finished");
    assert!(status.success());
    assert_eq!(fs::read_to_string(&report).expect("report"), "ok");
    m.unmount_and_fsck();
}

/// Hostile kernels fail with a clear errno and a line in the daemon log; bad values fail
/// with ENOENT/EINVAL/ENOEXEC; the mount keeps serving, and no device slot leaks: after all
/// that, and after a process that held every slot exits, all slots can be used again.
#[test]
fn hostile_kernels_fail_cleanly_and_the_mount_keeps_working() {
    let data = sample(300_000);
    let mut m = setup(&data, &["--fuel", "20000000"]);
    let file = m.path("data");
    let hostile = [
        ("hostile_infinite_loop", "0 0", Some(Errno::TIME)),
        ("hostile_unknown_helper", "0 0", Some(Errno::NOEXEC)),
        ("hostile_wild_load", "0 0", None),
        ("hostile_stack_escape", "0 0", None),
        ("hostile_emit_oob", "0 0", None),
        ("hostile_write_ctx", "0 0", None),
        ("hostile_deep_recursion", "100000 0", None),
    ];
    for (name, args, exact) in hostile {
        let src = kernel_object(&format!("tests/{name}"));
        fs::copy(&src, m.path(&format!("kernels/{name}.o"))).expect("copy hostile kernel");
        set(&file, "user.csd.args", args).expect("args");
        let err = set(&file, "user.csd.file_job", &format!("/kernels/{name}.o")).expect_err(name);
        match exact {
            Some(want) => assert_eq!(err, want, "{name}"),
            None => assert!(
                [Errno::IO, Errno::NOEXEC, Errno::TIME].contains(&err),
                "{name}: {err:?}"
            ),
        }
        assert!(
            m.log().contains(name),
            "{name} is in the daemon log: {}",
            m.log()
        );
    }
    // A read stream that cannot finish fails the read, not the mount.
    set(
        &file,
        "user.csd.read_stream",
        "/kernels/hostile_infinite_loop.o",
    )
    .expect("set");
    let err = pread(&file, 0, 4096).expect_err("out of fuel");
    assert_eq!(err.raw_os_error(), Some(Errno::TIME.raw_os_error()));
    remove(&file, "user.csd.read_stream").expect("remove");

    fs::write(m.path("kernels/garbage.o"), b"not an ELF object").expect("write");
    let cases = [
        ("/kernels/missing.o", Errno::NOENT),
        ("/nodir/x.o", Errno::NOENT),
        ("/kernels/garbage.o", Errno::NOEXEC),
        ("/kernels", Errno::INVAL),
        ("", Errno::INVAL),
    ];
    for (value, want) in cases {
        assert_eq!(
            set(&file, "user.csd.read_stream", value),
            Err(want),
            "{value:?}"
        );
    }
    assert_eq!(set(&file, "user.csd.args", "1 2 3"), Err(Errno::INVAL));
    assert_eq!(set(&file, "user.csd.result", "x"), Err(Errno::PERM));

    // Every slot is free: a child takes all eight and exits without removing them.
    for i in 0..8 {
        fs::write(m.path(&format!("f{i}")), &data[..1000]).expect("write");
    }
    let script = (0..8)
        .map(|i| {
            format!(
                "setfattr -n user.csd.read_stream -v /kernels/passthrough.o {}",
                m.path(&format!("f{i}")).display()
            )
        })
        .collect::<Vec<_>>()
        .join(" && ");
    let status = Command::new("sh")
        .args(["-c", &script])
        .status()
        .expect("sh");
    assert!(status.success(), "a process may hold all eight slots");
    for i in 0..8 {
        set(
            &m.path(&format!("f{i}")),
            "user.csd.read_stream",
            "/kernels/passthrough.o",
        )
        .expect("slots of exited processes come back");
    }
    assert_eq!(
        set(&file, "user.csd.read_stream", "/kernels/passthrough.o"),
        Err(Errno::BUSY),
        "a ninth stream finds no slot"
    );
    assert_eq!(pread(&m.path("f3"), 0, 1000).expect("read"), &data[..1000]);
    assert_eq!(fs::read(&file).expect("regular read"), data);
    m.unmount_and_fsck();
}
