//! `concurrent`: regular reads while other processes offload kernels on the same file.
//!
//! - Read throughput: this thread reads the file sequentially (1 MiB reads) for a fixed window
//!   while 0, 1, 2 and 4 worker processes each run `user.csd.file_job` entropy on it in a loop.
//! - Latency: 4 KiB reads at random offsets for a window with no kernel, then while two
//!   processes each run a long kernel (entropy over the whole file, and over a copy of it: file
//!   jobs on one file take turns, as the kernel holds the inode's lock across a setxattr); p50
//!   and p99 of each. The reads are `O_DIRECT`, so each one reaches the file system (not the
//!   page cache).
//!
//! Workers are this binary again (`csd-bench --offload-worker FILE`): a process of its own, as
//! offload state belongs to a process. They print a line per finished job and are killed with
//! SIGKILL at the end of the window (the mount reclaims a killed process's state).

use std::{
    fs::File,
    io::{BufRead, BufReader, Read},
    os::unix::fs::{FileExt, OpenOptionsExt},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;
use testkit::rng::Rng;
use tests::reference::sample_text;

use crate::mount::CsdMount;

/// Reads while `offloaders` processes offload.
#[derive(Debug, Serialize)]
pub struct Throughput {
    pub offloaders: usize,
    pub read_bytes_per_s: f64,
    /// This throughput / the throughput with no offloaders.
    pub ratio_vs_idle: f64,
    /// Kernel runs the workers finished in the window.
    pub offloads_finished: u64,
}

/// Latency of 4 KiB reads, microseconds.
#[derive(Debug, Serialize)]
pub struct Latency {
    pub reads: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

#[derive(Debug, Serialize)]
pub struct Concurrent {
    pub file_bytes: u64,
    pub window_s: f64,
    pub throughput: Vec<Throughput>,
    pub read_4k_idle: Latency,
    pub read_4k_during_kernel: Latency,
    /// p99 during the kernel / p99 idle.
    pub p99_ratio: f64,
    /// In modeled time (zn540 preset): the longest any regular command of this section waited
    /// for the firmware's core, the longest slice that core ran, and the longest a slice's
    /// compute can be (its fuel at the dearest instruction class).
    pub modeled_wait_max_us: f64,
    pub modeled_slice_max_us: f64,
    pub modeled_slice_compute_max_us: f64,
}

/// The worker: runs entropy file jobs on `file` until killed, a line on stdout per job.
pub fn worker(file: &Path) -> Result<()> {
    println!("ready");
    let mut result = [0u8; 4096];
    loop {
        tests::xattr::set(file, "user.csd.file_job", "/kernels/entropy.o")
            .context("setxattr user.csd.file_job")?;
        let n = rustix::fs::getxattr(file, "user.csd.result", &mut result[..])
            .context("getxattr user.csd.result")?;
        ensure!(n == 2048, "the result is {n} bytes, not a histogram");
        println!("done");
    }
}

/// Worker processes, and a count of the jobs they finished.
struct Workers {
    children: Vec<Child>,
    finished: Arc<AtomicU64>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Starts a worker on each of `files` and waits until each is ready.
    fn start(files: &[&Path]) -> Result<Workers> {
        let exe = std::env::current_exe().context("the benchmark's own path")?;
        let finished = Arc::new(AtomicU64::new(0));
        let mut workers = Workers {
            children: Vec::new(),
            finished: Arc::clone(&finished),
            readers: Vec::new(),
        };
        for file in files {
            let mut child = Command::new(&exe)
                .arg("--offload-worker")
                .arg(file)
                .stdout(Stdio::piped())
                .spawn()
                .context("could not start an offload worker")?;
            let stdout = child.stdout.take().context("the worker's stdout")?;
            workers.children.push(child);
            let mut lines = BufReader::new(stdout).lines();
            if !matches!(lines.next(), Some(Ok(ref l)) if l == "ready") {
                bail!("an offload worker did not start");
            }
            let finished = Arc::clone(&finished);
            workers.readers.push(std::thread::spawn(move || {
                for line in lines.map_while(Result::ok) {
                    if line == "done" {
                        finished.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        Ok(workers)
    }

    /// Kills the workers; returns how many jobs they finished. A worker that exited by itself
    /// failed (it loops until killed).
    fn stop(mut self) -> Result<u64> {
        let mut failed = 0;
        for child in &mut self.children {
            if child.try_wait()?.is_some() {
                failed += 1;
            }
            let _ = child.kill();
            child.wait()?;
        }
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        ensure!(failed == 0, "{failed} offload workers failed (see above)");
        Ok(self.finished.load(Ordering::Relaxed))
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Measures over a file of `file_bytes`, `window` per measurement.
pub fn run(root: &Path, file_bytes: usize, window: Duration) -> Result<Concurrent> {
    let kernel = root.join("target/kernels/entropy.o");
    let mount = CsdMount::new(file_bytes as u64)?;
    let file = mount.root().join("sample.txt");
    std::fs::write(&file, sample_text(file_bytes)).context("write the sample file")?;
    std::fs::create_dir(mount.root().join("kernels")).context("mkdir /kernels")?;
    std::fs::copy(&kernel, mount.root().join("kernels/entropy.o"))
        .context("copy entropy.o into the mount")?;

    let mut throughput: Vec<Throughput> = Vec::new();
    for offloaders in [0, 1, 2, 4] {
        let workers = Workers::start(&vec![file.as_path(); offloaders])?;
        let bytes_per_s = read_throughput(&file, window)?;
        let offloads_finished = workers.stop()?;
        let idle = throughput
            .first()
            .map_or(bytes_per_s, |t| t.read_bytes_per_s);
        throughput.push(Throughput {
            offloaders,
            read_bytes_per_s: bytes_per_s,
            ratio_vs_idle: bytes_per_s / idle,
            offloads_finished,
        });
    }
    let read_4k_idle = read_latency(&file, file_bytes as u64, window)?;
    // The two kernels run over two files: file jobs on one file take turns, as the kernel
    // holds a file's inode lock across a setxattr, and with it across the job.
    let second = mount.root().join("sample2.txt");
    std::fs::copy(&file, &second).context("copy the sample file")?;
    let workers = Workers::start(&[&file, &second])?;
    // Let the kernels start before measuring.
    std::thread::sleep(Duration::from_millis(100));
    let read_4k_during_kernel = read_latency(&file, file_bytes as u64, window)?;
    workers.stop()?;
    let stats = mount.stats();
    let modeled_wait_max_us = stats.modeled_wait_max_ns as f64 / 1e3;
    let modeled_slice_max_us = stats.modeled_slice_max_ns as f64 / 1e3;
    mount.finish()?;
    let cpu = crate::mount::PRESET.cpu();
    let c = cpu.interpreted;
    let dearest = c.alu.max(c.memory).max(c.branch).max(c.call);
    let slice_fuel = firmware::controller::ProgramConfig::default().slice_fuel;
    Ok(Concurrent {
        modeled_wait_max_us,
        modeled_slice_max_us,
        modeled_slice_compute_max_us: (slice_fuel * dearest) as f64 / cpu.clock_hz as f64 * 1e6,
        file_bytes: file_bytes as u64,
        window_s: window.as_secs_f64(),
        throughput,
        p99_ratio: read_4k_during_kernel.p99_us / read_4k_idle.p99_us,
        read_4k_idle,
        read_4k_during_kernel,
    })
}

/// Sequential 1 MiB reads of `file`, from the start again at its end, for `window`.
fn read_throughput(file: &Path, window: Duration) -> Result<f64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    let started = Instant::now();
    while started.elapsed() < window {
        let mut f = File::open(file).context("open the sample file")?;
        loop {
            let n = f.read(&mut buf).context("read the sample file")?;
            bytes += n as u64;
            if n == 0 || started.elapsed() >= window {
                break;
            }
        }
    }
    Ok(bytes as f64 / started.elapsed().as_secs_f64())
}

/// 4 KiB `O_DIRECT` reads at random 4 KiB-aligned offsets for `window`.
fn read_latency(file: &Path, file_bytes: u64, window: Duration) -> Result<Latency> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(file)
        .context("open the sample file with O_DIRECT")?;
    // O_DIRECT wants a buffer aligned to the block.
    let mut space = vec![0u8; 8192];
    let at = space.as_ptr().align_offset(4096);
    let buf = &mut space[at..at + 4096];
    let mut micros = Vec::new();
    let mut rng = Rng::new(0);
    let blocks = (file_bytes / 4096).max(1);
    let started = Instant::now();
    while started.elapsed() < window {
        let offset = rng.below(blocks) * 4096;
        let t = Instant::now();
        let n = f.read_at(buf, offset).context("a 4 KiB read")?;
        micros.push(t.elapsed().as_secs_f64() * 1e6);
        ensure!(n == 4096, "a 4 KiB read returned {n} bytes");
    }
    ensure!(!micros.is_empty(), "no read finished in the window");
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros[((micros.len() - 1) as f64 * q).round() as usize];
    Ok(Latency {
        reads: micros.len(),
        p50_us: at(0.50),
        p99_us: at(0.99),
        max_us: at(1.0),
    })
}
