//! `offload.entropy`: the byte histogram (Shannon entropy) of one file through the mount, done
//! three ways, each checked against the native histogram before any figure counts:
//! - regular: read the file (1 MiB reads) and count bytes in native Rust on the host;
//! - `file_job`: `setxattr user.csd.file_job /kernels/entropy.o`, `getxattr user.csd.result`;
//! - `read_stream`: `setxattr user.csd.read_stream /kernels/entropy.o`, then 1 MiB reads that
//!   each return the histogram of their range, summed on the host.
//!
//! Each way runs once unmeasured first (for the offloads, the mount then holds the kernel
//! linked). Client CPU is the CPU time (user + system) of the thread doing the job, so the mount's own
//! threads in this process do not count; link bytes and modeled device time (the zn540 preset:
//! NAND, link and the device's CPU) are the device's counters over the job. The modeled end to
//! end time adds the host's own work to the device's: for the regular way the histogram
//! computed natively over the bytes in memory, for the offloads the client's CPU.

use std::{fs::File, io::Read, os::unix::fs::FileExt, path::Path, time::Instant};

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;
use tests::reference::{entropy_histogram, sample_text};

use crate::{mount::CsdMount, report::Spread};

const KERNEL: &str = "/kernels/entropy.o";
const READ_BYTES: usize = 1 << 20;
const PAGE: usize = 4096;

/// One way of computing the histogram.
#[derive(Debug, Serialize)]
pub struct Way {
    /// Seconds per run.
    pub wall: Spread,
    /// Client CPU seconds per run.
    pub client_cpu: Spread,
    /// Bytes over the host link per run, both ways, to the device, to the host (medians).
    pub link_bytes: u64,
    pub link_to_device_bytes: u64,
    pub link_to_host_bytes: u64,
    /// Modeled device seconds per run with the zn540 preset (median).
    pub modeled_device_s: f64,
    /// Modeled device seconds plus the host's own work (median; see the module docs).
    pub modeled_end_to_end_s: f64,
}

/// An offloaded way against the regular one (medians).
#[derive(Debug, Serialize)]
pub struct Versus {
    #[serde(flatten)]
    pub way: Way,
    /// Offloaded throughput / regular throughput.
    pub wall_ratio: f64,
    /// Regular client CPU seconds / offloaded client CPU seconds.
    pub client_cpu_reduction: f64,
    /// Regular link bytes / offloaded link bytes.
    pub link_bytes_reduction: f64,
}

/// `offload.entropy`; the top-level ratios are `file_job`'s.
#[derive(Debug, Serialize)]
pub struct Entropy {
    pub data_bytes: u64,
    /// The histogram computed natively over the bytes in memory, on one host core.
    pub native_histogram_s: Spread,
    /// The last file job's modeled time on the device: all of it, its compute on the device's
    /// core, its NAND reads (overlapping the compute).
    pub file_job_device_s: f64,
    pub file_job_device_compute_s: f64,
    pub file_job_device_nand_s: f64,
    pub wall_ratio: f64,
    pub client_cpu_reduction: f64,
    pub link_bytes_reduction: f64,
    pub regular: Way,
    pub file_job: Versus,
    pub read_stream: Versus,
}

/// Measures the three ways over a file of `data_bytes`, `reps` times each.
pub fn run(root: &Path, data_bytes: usize, reps: usize) -> Result<Entropy> {
    let kernel = root.join("target/kernels/entropy.o");
    ensure!(
        kernel.is_file(),
        "{} is missing: build the kernels with `cargo xtask kernels`",
        kernel.display()
    );
    let data = sample_text(data_bytes);
    let expected = entropy_histogram(&data);
    let mount = CsdMount::new(data_bytes as u64)?;
    let file = mount.root().join("sample.txt");
    std::fs::write(&file, &data).context("write the sample file")?;
    File::open(&file)
        .and_then(|f| f.sync_all())
        .context("fsync the sample file")?;
    std::fs::create_dir(mount.root().join("kernels")).context("mkdir /kernels")?;
    std::fs::copy(&kernel, mount.root().join("kernels/entropy.o"))
        .context("copy entropy.o into the mount")?;

    let mut native = Vec::new();
    for _ in 0..reps.max(3) {
        let started = Instant::now();
        std::hint::black_box(entropy_histogram(std::hint::black_box(&data)));
        native.push(started.elapsed().as_secs_f64());
    }
    let native = Spread::of(&native);
    let mut regular = measure(&mount, reps, expected, || regular(&file)).context("regular")?;
    regular.modeled_end_to_end_s = regular.modeled_device_s + native.median;
    let file_job = measure(&mount, reps, expected, || file_job(&file)).context("file_job")?;
    let stats =
        tests::xattr::numbers(&file, "user.csd.stats").context("getxattr user.csd.stats")?;
    let seconds = |key: &str| -> Result<f64> {
        let ns = stats
            .get(key)
            .with_context(|| format!("user.csd.stats has no {key}"))?;
        Ok(*ns as f64 / 1e9)
    };
    let read_stream = measure(&mount, reps, expected, || read_stream(&file, data_bytes))
        .context("read_stream")?;
    mount.finish()?;
    let file_job = versus(&regular, file_job);
    let read_stream = versus(&regular, read_stream);
    Ok(Entropy {
        data_bytes: data_bytes as u64,
        native_histogram_s: native,
        file_job_device_s: seconds("device_ns")?,
        file_job_device_compute_s: seconds("device_compute_ns")?,
        file_job_device_nand_s: seconds("device_nand_ns")?,
        wall_ratio: file_job.wall_ratio,
        client_cpu_reduction: file_job.client_cpu_reduction,
        link_bytes_reduction: file_job.link_bytes_reduction,
        regular,
        file_job,
        read_stream,
    })
}

fn versus(regular: &Way, way: Way) -> Versus {
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::INFINITY };
    Versus {
        wall_ratio: ratio(regular.wall.median, way.wall.median),
        client_cpu_reduction: ratio(regular.client_cpu.median, way.client_cpu.median),
        link_bytes_reduction: ratio(regular.link_bytes as f64, way.link_bytes as f64),
        way,
    }
}

/// Runs `job` `reps` times, checking its histogram each time.
fn measure(
    mount: &CsdMount,
    reps: usize,
    expected: [u64; 256],
    mut job: impl FnMut() -> Result<[u64; 256]>,
) -> Result<Way> {
    // One run first, not counted: the first offload also reads and links the kernel object
    // (about 12 KiB over the link), which later ones find linked already.
    ensure!(
        job()? == expected,
        "the histogram differs from the native one"
    );
    let (mut wall, mut cpu, mut modeled) = (vec![], vec![], vec![]);
    let (mut link, mut to_device, mut to_host) = (vec![], vec![], vec![]);
    for _ in 0..reps {
        let before = mount.stats();
        let (cpu0, started) = (tests::thread_cpu(), Instant::now());
        let counts = job()?;
        wall.push(started.elapsed().as_secs_f64());
        cpu.push((tests::thread_cpu() - cpu0).as_secs_f64());
        let used = mount.stats().since(&before);
        link.push(used.link_bytes() as f64);
        to_device.push(used.link_to_device_bytes as f64);
        to_host.push(used.link_to_host_bytes as f64);
        modeled.push(used.modeled_ns as f64 / 1e9);
        ensure!(
            counts == expected,
            "the histogram differs from the native one"
        );
    }
    let client_cpu = Spread::of(&cpu);
    let modeled_device_s = Spread::of(&modeled).median;
    Ok(Way {
        wall: Spread::of(&wall),
        // The regular way's caller replaces the client CPU with the native histogram.
        modeled_end_to_end_s: modeled_device_s + client_cpu.median,
        client_cpu,
        link_bytes: Spread::of(&link).median as u64,
        link_to_device_bytes: Spread::of(&to_device).median as u64,
        link_to_host_bytes: Spread::of(&to_host).median as u64,
        modeled_device_s,
    })
}

/// Reads the file from the device (its cached pages dropped first, as fio does before a job:
/// the page cache would hide the link bytes) and counts its bytes natively.
fn regular(file: &Path) -> Result<[u64; 256]> {
    let mut counts = [0u64; 256];
    let mut f = File::open(file).context("open the sample file")?;
    rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed)
        .context("drop the file's cached pages")?;
    let mut buf = vec![0u8; READ_BYTES];
    loop {
        let n = f.read(&mut buf).context("read the sample file")?;
        if n == 0 {
            return Ok(counts);
        }
        for &b in &buf[..n] {
            counts[usize::from(b)] += 1;
        }
    }
}

fn file_job(file: &Path) -> Result<[u64; 256]> {
    tests::xattr::set(file, "user.csd.file_job", KERNEL).context("setxattr user.csd.file_job")?;
    let mut result = [0u8; 4096];
    let n = rustix::fs::getxattr(file, "user.csd.result", &mut result[..])
        .context("getxattr user.csd.result")?;
    let mut counts = [0u64; 256];
    add_histogram(&mut counts, &result[..n])?;
    Ok(counts)
}

fn read_stream(file: &Path, data_bytes: usize) -> Result<[u64; 256]> {
    tests::xattr::set(file, "user.csd.read_stream", KERNEL)
        .context("setxattr user.csd.read_stream")?;
    let f = File::open(file).context("open the sample file")?;
    let mut counts = [0u64; 256];
    // One read must reach the mount as one request: direct I/O splits a read whose buffer is
    // not page-aligned, and a stream returns only the first part's output.
    let mut raw = vec![0u8; READ_BYTES + PAGE];
    let skip = raw.as_ptr().align_offset(PAGE);
    let out = &mut raw[skip..skip + READ_BYTES];
    for offset in (0..data_bytes).step_by(READ_BYTES) {
        let n = f
            .read_at(out, offset as u64)
            .context("read with the read stream")?;
        add_histogram(&mut counts, &out[..n])?;
    }
    tests::xattr::remove(file, "user.csd.read_stream")
        .context("removexattr user.csd.read_stream")?;
    Ok(counts)
}

/// Adds the kernel's 2 KiB histogram (256 little-endian u64) to `counts`.
fn add_histogram(counts: &mut [u64; 256], bytes: &[u8]) -> Result<()> {
    if bytes.len() != 2048 {
        bail!("the kernel returned {} bytes, not a histogram", bytes.len());
    }
    for (count, b) in counts.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut le = [0u8; 8];
        le.copy_from_slice(b);
        *count += u64::from_le_bytes(le);
    }
    Ok(())
}
