//! Concurrency under load: fio with `verify=crc32c` writes, rewrites and reads files through a
//! real mount of a small device (so the cleaner has to move live blocks), while two other
//! processes offload kernels on the very files fio rewrites: one runs entropy file jobs, one
//! reads through passthrough read streams and checks every block it gets is a whole block fio
//! wrote (its verify header and both checksums). fio must finish with no error; every offload
//! must give a correct result or an errno the mount documents for a busy or exhausted device
//! (never hang, never return torn or foreign data); the daemon's counters must show the cleaner
//! moved live blocks; fsck must be clean at the end.
//!
//! Prints `reliability: concurrent fio-verify jobs=N bytes=B offloads=K errors=E`: fio jobs
//! run, bytes fio moved, offloads that returned results, and everything that went wrong (fio
//! errors, wrong offload results, undocumented errnos, hangs). Short by default (one round of
//! rewrites); `CSD_RELIABILITY_SECONDS=N` runs rounds for N seconds, `CSD_RELIABILITY_SEED`
//! seeds fio and the offloaders (`tests::reliability`).
//!
//! The offloaders are this test binary run again ([`offloader`]).

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use rustix::io::Errno;
use testkit::rng::{mix, Rng};
use tests::{
    kernel_object,
    mount::Mount,
    reliability::{self, Budget},
    xattr::{get, remove, set},
};

/// The files fio rewrites at random (and the offloaders work on), each [`FILE_BYTES`] long.
const REWRITTEN: [&str; 3] = ["w0", "w1", "w2"];
const FILE_BYTES: u64 = 4 << 20;
/// The file of fio's mixed read/write job.
const MIXED: &str = "rw0";
const MIXED_BYTES: u64 = 2 << 20;
/// The file of fio's job with writes of up to 1 MiB (one FUSE request each): a file's buffer
/// then reaches twice the flush threshold, and one flush spans three zones.
const LARGE: &str = "big0";
const LARGE_BYTES: u64 = 3 << 20;
/// The device: 32 MiB of NAND hold about 22 MiB of file data; fio keeps 17 MiB live and
/// rewrites it, so the cleaner has to move live blocks.
const CAPACITY: &str = "32M";
/// fio's verify unit: every 4 KiB block carries a header.
const BLOCK: u64 = 4096;
/// Pause of an offloader between offloads.
const PAUSE_MS: (u64, u64) = (20, 200);
/// How long the offloaders may take to stop once asked.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// fio.

/// Figures of fio's runs.
#[derive(Debug, Default)]
struct FioTotals {
    jobs: u64,
    bytes: u64,
    errors: Vec<String>,
}

/// fio takes seeds below 2^32 here (3.33 refused a larger one).
fn fio_seed(seed: u64) -> u64 {
    seed & 0xFFFF_FFFF
}

/// The job that lays out every file the offloaders use (before they start: a file fio has
/// not made yet is not there to offload on), each block with a verify header, and verifies
/// them.
fn prepare_job(dir: &Path, seed: u64) -> String {
    format!(
        "[global]\nioengine=psync\ndirectory={dir}\nrandseed={seed}\nverify=crc32c\n\
         verify_fatal=1\nverify_state_save=0\nverify_interval={BLOCK}\n\
         [prepare]\nfilename={files}\nsize={size}\nrw=write\nbs=64k\ndo_verify=1\n\
         [prepare-mixed]\nfilename={MIXED}\nsize={MIXED_BYTES}\nrw=write\nbs=64k\n\
         do_verify=1\n",
        dir = dir.display(),
        seed = fio_seed(seed),
        files = REWRITTEN.join(":"),
        size = FILE_BYTES * REWRITTEN.len() as u64,
    )
}

/// A round under load: random rewrites (4-64 KiB) verified as they go and at the end, random
/// verified reads of the same files, a mixed random read/write job on its own file (with
/// O_DIRECT), and random writes of up to 1 MiB on another. The mixed job verifies as it goes too: fio 3.33 itself reports bad headers for a
/// randrw job of several loops that verifies only at the end, on tmpfs as well.
fn load_job(dir: &Path, seed: u64, loops: u64) -> String {
    format!(
        "[global]\nioengine=psync\ndirectory={dir}\nrandseed={seed}\nverify=crc32c\n\
         verify_fatal=1\nverify_state_save=0\n\
         [rewrite]\nfilename={files}\nsize={size}\nrw=randwrite\nbsrange=4k-64k\n\
         verify_interval={BLOCK}\ndo_verify=1\nverify_backlog=256\nloops={loops}\n\
         [reader]\nfilename={files}\nsize={size}\nrw=randread\nbs=4k\nloops={loops}\n\
         [mixed]\nfilename={MIXED}\nsize={MIXED_BYTES}\nrw=randrw\nbs=4k\ndirect=1\n\
         do_verify=1\nverify_backlog=64\nloops={loops}\n\
         [large]\nfilename={LARGE}\nsize={LARGE_BYTES}\nrw=randwrite\nbsrange=4k-1m\n\
         verify_interval={BLOCK}\ndo_verify=1\nverify_backlog=64\nloops={loops}\n",
        dir = dir.display(),
        seed = fio_seed(seed),
        files = REWRITTEN.join(":"),
        size = FILE_BYTES * REWRITTEN.len() as u64,
    )
}

/// Runs fio on `job` (named `name`), adding its jobs and bytes to `totals` and anything that
/// went wrong to `totals.errors`.
fn run_fio(scratch: &Path, name: &str, job: &str, totals: &mut FioTotals) {
    let job_path = scratch.join(format!("{name}.fio"));
    let out_path = scratch.join(format!("{name}.json"));
    fs::write(&job_path, job).expect("write the job file");
    let out = Command::new("fio")
        .arg(&job_path)
        .arg("--output-format=json")
        .arg("--output")
        .arg(&out_path)
        .output()
        .unwrap_or_else(|e| panic!("fio does not run ({e}): install it with `cargo xtask deps`"));
    let text = fs::read_to_string(&out_path).unwrap_or_default();
    // fio may print notes before the JSON object.
    let json: serde_json::Value = text
        .find('{')
        .and_then(|at| serde_json::from_str(&text[at..]).ok())
        .unwrap_or(serde_json::Value::Null);
    let jobs = json["jobs"].as_array().cloned().unwrap_or_default();
    for j in &jobs {
        totals.jobs += 1;
        for dir in ["read", "write"] {
            totals.bytes += j[dir]["io_bytes"].as_u64().unwrap_or(0);
        }
        let error = j["error"].as_i64().unwrap_or(-1);
        if error != 0 {
            totals.errors.push(format!(
                "fio {name}/{}: error {error}",
                j["jobname"].as_str().unwrap_or("?")
            ));
        }
    }
    if !out.status.success() || jobs.is_empty() {
        totals.errors.push(format!(
            "fio {name} exited with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            text.lines()
                .filter(|l| l.contains("verify") || l.contains("err"))
                .take(10)
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// What fio wrote.

/// crc32c as fio stores it: without the final inversion.
fn fio_crc32c(bytes: &[u8]) -> u32 {
    !crc::Crc::<u32>::new(&crc::CRC_32_ISCSI).checksum(bytes)
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// Whether `block` is a whole 4 KiB block fio wrote at file offset `offset` with
/// `verify=crc32c` and `verify_interval=4096`. fio 3's verify header (little-endian): magic
/// 0xacca (u16 at 0), verify type (u16 at 2), the block's length (u32 at 4), a seed (u64 at 8),
/// the block's file offset (u64 at 16), time, thread and sequence fields, the header's crc32c
/// over bytes 0..36 (u32 at 36); then, for crc32c, the data's crc32c (u32 at 40) over the bytes
/// after the 44-byte header.
fn check_fio_block(block: &[u8], offset: u64) -> Result<(), String> {
    if block.len() != BLOCK as usize {
        return Err(format!("a {}-byte block at {offset}", block.len()));
    }
    let magic = u16::from_le_bytes([block[0], block[1]]);
    let len = le_u32(block, 4);
    let at = u64::from_le_bytes(block[16..24].try_into().expect("8 bytes"));
    if magic != 0xacca || len != BLOCK as u32 {
        return Err(format!(
            "block at {offset}: no fio header (magic {magic:#06x}, length {len})"
        ));
    }
    if at != offset {
        return Err(format!(
            "block at {offset} holds fio's block for offset {at}"
        ));
    }
    if fio_crc32c(&block[..36]) != le_u32(block, 36) {
        return Err(format!("block at {offset}: its header checksum is wrong"));
    }
    if fio_crc32c(&block[44..]) != le_u32(block, 40) {
        return Err(format!(
            "block at {offset}: its data checksum is wrong (torn?)"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The offloaders (separate processes).

/// Errnos the mount documents for a device that is busy or a kernel that ran out of its
/// budget (docs/ARCHITECTURE.md, "Offload keys"): a clear answer under load, not a failure.
const BUSY_ERRNOS: [(Errno, &str); 3] = [
    (Errno::BUSY, "EBUSY"),
    (Errno::TIME, "ETIME"),
    (Errno::TOOBIG, "E2BIG"),
];

/// What one offloader saw.
#[derive(Debug, Default)]
struct OffloadReport {
    offloads: u64,
    clear: BTreeMap<String, u64>,
    failures: Vec<String>,
}

impl OffloadReport {
    /// Files an errno: a documented one for a busy device, or a failure.
    fn errno(&mut self, what: &str, e: Errno) {
        match BUSY_ERRNOS.iter().find(|(b, _)| *b == e) {
            Some((_, name)) => *self.clear.entry(name.to_string()).or_default() += 1,
            None => self.failures.push(format!("{what}: {e}")),
        }
    }

    fn encode(&self) -> String {
        let mut text = format!("offloads {}\n", self.offloads);
        for (name, n) in &self.clear {
            text += &format!("clear {name} {n}\n");
        }
        for f in &self.failures {
            text += &format!("fail {}\n", f.replace('\n', " "));
        }
        text
    }

    fn decode(text: &str) -> OffloadReport {
        let mut r = OffloadReport::default();
        for line in text.lines() {
            let mut w = line.splitn(3, ' ');
            match (w.next(), w.next(), w.next()) {
                (Some("offloads"), Some(n), None) => r.offloads = n.parse().unwrap_or(0),
                (Some("clear"), Some(name), Some(n)) => {
                    r.clear.insert(name.into(), n.parse().unwrap_or(0));
                }
                (Some("fail"), Some(first), rest) => r
                    .failures
                    .push(format!("{first} {}", rest.unwrap_or_default())),
                _ => r.failures.push(format!("report line {line:?}")),
            }
        }
        r
    }
}

/// One entropy file job over `file` (`len` bytes): the histogram must count every byte of the
/// snapshot, which is the whole file (fio never changes its size).
fn file_job(file: &Path, len: u64, report: &mut OffloadReport) {
    let name = file.display();
    if let Err(e) = set(file, "user.csd.args", "0 0") {
        return report.failures.push(format!("set args on {name}: {e}"));
    }
    if let Err(e) = set(file, "user.csd.file_job", "/kernels/entropy.o") {
        return report.errno(&format!("file_job entropy on {name}"), e);
    }
    let result = match get(file, "user.csd.result") {
        Ok(r) => r,
        Err(e) => {
            return report
                .failures
                .push(format!("get the result on {name}: {e}"))
        }
    };
    let stats = get(file, "user.csd.stats")
        .map(|s| String::from_utf8_lossy(&s).into_owned())
        .unwrap_or_default();
    if result.len() != 2048 {
        return report.failures.push(format!(
            "entropy of {}: {} bytes of result, not 2048",
            file.display(),
            result.len()
        ));
    }
    let counted: u64 = result
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .sum();
    let read = format!("device_bytes_read={len}");
    if counted != len || !stats.split_whitespace().any(|w| w == read) {
        return report.failures.push(format!(
            "entropy of {}: counted {counted} bytes of {len}; stats {stats:?}",
            file.display()
        ));
    }
    report.offloads += 1;
}

/// One passthrough read stream over `file`: a few reads at random, every block a whole block
/// fio wrote at that offset; then the stream ends.
fn read_stream(file: &Path, rng: &mut Rng, report: &mut OffloadReport) {
    if let Err(e) = set(file, "user.csd.read_stream", "/kernels/passthrough.o") {
        return report.errno(&format!("read_stream passthrough on {}", file.display()), e);
    }
    // Ok(None) when every read came back whole and right; Ok(Some(errno)) for a read that
    // failed with an errno.
    let reads = (|| -> Result<Option<Errno>, String> {
        let f = fs::File::open(file).map_err(|e| format!("open: {e}"))?;
        for _ in 0..4 {
            let blocks = rng.between(1, 64);
            let offset = rng.below(FILE_BYTES / BLOCK - blocks + 1) * BLOCK;
            let mut buf = vec![0u8; (blocks * BLOCK) as usize];
            let n = match f.read_at(&mut buf, offset) {
                Ok(n) => n,
                Err(e) => return Ok(Some(Errno::from_io_error(&e).unwrap_or(Errno::IO))),
            };
            if n != buf.len() {
                return Err(format!(
                    "{}: read {n} of {} bytes at {offset}",
                    file.display(),
                    buf.len()
                ));
            }
            for (i, block) in buf.chunks(BLOCK as usize).enumerate() {
                check_fio_block(block, offset + i as u64 * BLOCK)
                    .map_err(|e| format!("{} through passthrough: {e}", file.display()))?;
            }
        }
        Ok(None)
    })();
    let removed = remove(file, "user.csd.read_stream");
    match (reads, removed) {
        (Err(e), _) => report.failures.push(e),
        (_, Err(e)) => report.failures.push(format!("remove read_stream: {e}")),
        (Ok(Some(errno)), Ok(())) => report.errno("read through the stream", errno),
        (Ok(None), Ok(())) => report.offloads += 1,
    }
}

/// An offloader: this binary run again with CSD_OFFLOADER (`file_job` or `read_stream`),
/// CSD_OFFLOAD_DIR (fio's directory in the mount), CSD_OFFLOAD_SEED, CSD_OFFLOAD_STOP (a file
/// whose existence ends it) and CSD_OFFLOAD_REPORT (where it writes what it saw).
#[test]
#[ignore = "run by fio_verify_under_offloads_and_cleaning as a separate process"]
fn offloader() {
    let var = |name: &str| std::env::var_os(name).map(PathBuf::from);
    let (Some(role), Some(dir), Some(stop), Some(report_path)) = (
        std::env::var("CSD_OFFLOADER").ok(),
        var("CSD_OFFLOAD_DIR"),
        var("CSD_OFFLOAD_STOP"),
        var("CSD_OFFLOAD_REPORT"),
    ) else {
        return;
    };
    let seed = std::env::var("CSD_OFFLOAD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut rng = Rng::new(seed);
    let mut report = OffloadReport::default();
    while !stop.exists() {
        let i = rng.below(REWRITTEN.len() as u64 + 1) as usize;
        match (role.as_str(), REWRITTEN.get(i)) {
            ("file_job", Some(name)) => file_job(&dir.join(name), FILE_BYTES, &mut report),
            ("file_job", None) => file_job(&dir.join(MIXED), MIXED_BYTES, &mut report),
            ("read_stream", Some(name)) => read_stream(&dir.join(name), &mut rng, &mut report),
            ("read_stream", None) => {}
            _ => panic!("unknown offloader role {role}"),
        }
        // A kernel on the device holds every regular command up for a fuel slice at a time;
        // back to back, they would starve fio in a debug build.
        std::thread::sleep(Duration::from_millis(rng.between(PAUSE_MS.0, PAUSE_MS.1)));
    }
    fs::write(report_path, report.encode()).expect("write the report");
}

fn start_offloader(m: &Mount, role: &str, seed: u64) -> (Child, PathBuf) {
    let report = m.dir().join(format!("{role}.report"));
    let child = Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", "offloader", "--ignored", "--test-threads=1"])
        .env("CSD_OFFLOADER", role)
        .env("CSD_OFFLOAD_DIR", m.path("fio"))
        .env("CSD_OFFLOAD_SEED", seed.to_string())
        .env("CSD_OFFLOAD_STOP", m.dir().join("stop"))
        .env("CSD_OFFLOAD_REPORT", &report)
        .stdout(Stdio::null())
        .spawn()
        .expect("start an offloader");
    (child, report)
}

/// Waits for an offloader to finish after the stop; its report, or a failure if it hung or
/// failed.
fn finish_offloader(mut child: Child, report: &Path, role: &str) -> OffloadReport {
    let started = Instant::now();
    loop {
        match child.try_wait().expect("watch the offloader") {
            Some(status) if status.success() => {
                return OffloadReport::decode(&fs::read_to_string(report).unwrap_or_default());
            }
            Some(status) => {
                return OffloadReport {
                    failures: vec![format!("the {role} offloader failed: {status}")],
                    ..OffloadReport::default()
                };
            }
            None if started.elapsed() > STOP_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return OffloadReport {
                    failures: vec![format!(
                        "the {role} offloader hung: an offload did not return in {STOP_TIMEOUT:?}"
                    )],
                    ..OffloadReport::default()
                };
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The counter `key` of the daemon's last `file system counters:` line.
fn counter(log: &str, key: &str) -> Option<u64> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("file system counters:"))?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// fio with crc32c verification rewrites and reads files on a small device while two other
/// processes run entropy file jobs and passthrough read streams on the same files: fio finds
/// no error, every offload returns a correct result or a documented busy errno, the cleaner
/// moved live blocks, and fsck is clean afterwards.
fn fio_verify_under_offloads_and_cleaning() {
    let seed = reliability::seed();
    let budget = Budget::from_env(1);
    let started = Instant::now();
    let mut m = Mount::new(&["--capacity", CAPACITY], &[]);
    fs::create_dir(m.path("kernels")).expect("mkdir /kernels");
    for k in ["entropy", "passthrough"] {
        fs::copy(kernel_object(k), m.path(&format!("kernels/{k}.o"))).expect("copy a kernel");
    }
    fs::create_dir(m.path("fio")).expect("mkdir /fio");
    let scratch = m.dir().to_path_buf();
    let mut fio = FioTotals::default();
    run_fio(
        &scratch,
        "prepare",
        &prepare_job(&m.path("fio"), seed),
        &mut fio,
    );
    assert!(
        fio.errors.is_empty(),
        "laying the files out failed: {:#?}",
        fio.errors
    );

    let offloaders: Vec<(Child, PathBuf, &str)> = ["file_job", "read_stream"]
        .into_iter()
        .enumerate()
        .map(|(i, role)| {
            let (child, report) = start_offloader(&m, role, mix(seed ^ i as u64));
            (child, report, role)
        })
        .collect();
    let mut rounds = 0u64;
    while budget.more(rounds) {
        let loops = if budget.is_long() { 3 } else { 2 };
        let job = load_job(&m.path("fio"), mix(seed.wrapping_add(rounds)), loops);
        run_fio(&scratch, &format!("round{rounds}"), &job, &mut fio);
        rounds += 1;
        if !fio.errors.is_empty() {
            break;
        }
    }
    fs::write(m.dir().join("stop"), b"").expect("ask the offloaders to stop");
    let mut offloads = 0;
    let mut clear: BTreeMap<String, u64> = BTreeMap::new();
    let mut errors = fio.errors.clone();
    for (child, report, role) in offloaders {
        let r = finish_offloader(child, &report, role);
        assert!(
            r.offloads > 0 || !r.failures.is_empty(),
            "the {role} offloader never got a result while fio ran"
        );
        offloads += r.offloads;
        for (name, n) in r.clear {
            *clear.entry(name).or_default() += n;
        }
        errors.extend(r.failures.into_iter().map(|f| format!("{role}: {f}")));
    }
    m.unmount();
    let log = m.log();
    let (gc_zones, moved) = (counter(&log, "gc_zones"), counter(&log, "gc_moved_blocks"));
    if let Err(report) = m.fsck() {
        errors.push(report);
    }
    println!(
        "fio-verify: seed {seed:#x}: {rounds} round(s) in {:.1} s; cleaner: {} zones, {} blocks \
         moved; offload busy answers: {clear:?}",
        started.elapsed().as_secs_f64(),
        gc_zones.unwrap_or(0),
        moved.unwrap_or(0),
    );
    println!(
        "reliability: concurrent fio-verify jobs={} bytes={} offloads={offloads} errors={}",
        fio.jobs,
        fio.bytes,
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "{} errors (seed {seed:#x}): {:#?}",
        errors.len(),
        errors.iter().take(20).collect::<Vec<_>>()
    );
    assert!(
        gc_zones.is_some_and(|z| z > 0) && moved.is_some_and(|b| b > 0),
        "the cleaner never moved live blocks, so this run did not test it: {log}"
    );
    assert!(
        fio.bytes >= 2 * FILE_BYTES * REWRITTEN.len() as u64,
        "fio moved only {} bytes",
        fio.bytes
    );
}

/// The fio block check accepts a block as fio lays it out and rejects a block at another
/// offset, a torn block and a block of zeros.
#[test]
fn fio_block_check() {
    let mut block = vec![0u8; BLOCK as usize];
    block[0..2].copy_from_slice(&0xaccau16.to_le_bytes());
    block[2..4].copy_from_slice(&5u16.to_le_bytes());
    block[4..8].copy_from_slice(&(BLOCK as u32).to_le_bytes());
    block[16..24].copy_from_slice(&8192u64.to_le_bytes());
    for (i, b) in block[44..].iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    let data_crc = fio_crc32c(&block[44..]);
    block[40..44].copy_from_slice(&data_crc.to_le_bytes());
    let header_crc = fio_crc32c(&block[..36]);
    block[36..40].copy_from_slice(&header_crc.to_le_bytes());
    assert_eq!(check_fio_block(&block, 8192), Ok(()));
    assert!(check_fio_block(&block, 4096).is_err(), "another offset");
    let mut torn = block.clone();
    torn[3000] ^= 1;
    assert!(check_fio_block(&torn, 8192).is_err(), "torn data");
    assert!(
        check_fio_block(&vec![0; BLOCK as usize], 0).is_err(),
        "zeros"
    );
    assert!(check_fio_block(&block[..100], 8192).is_err(), "short");
}

/// The campaign's run, under the name `cargo xtask reliability` runs (and the host-test step of
/// `cargo xtask test` leaves to it).
mod campaign {
    #[test]
    fn fio_verify_under_offloads_and_cleaning() {
        super::fio_verify_under_offloads_and_cleaning();
    }
}
