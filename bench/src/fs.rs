//! `fs`: fio through the csd mount, through bindfs over tmpfs (a peer FUSE file system) and on
//! tmpfs itself (the limit), the same jobs in the same run.
//!
//! Jobs, in this order on one file per fio job and target: sequential 1 MiB write (then
//! `fsync`), sequential 1 MiB read, the same read again without dropping the page cache
//! first (`seq_read_cached`), 4 KiB random read, 4 KiB random write (then `fsync`);
//! `psync`, page cache as each file system offers it (csd: the page cache for handles without
//! offload state), with one fio job and then with four at once (`fs.jobs4`). Needs root (tmpfs
//! and bindfs mounts), fio and bindfs (`cargo xtask deps` installs both).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::{mount::CsdMount, report::Spread};

/// One fio job.
#[derive(Debug, Clone, Copy)]
struct Job {
    key: &'static str,
    rw: &'static str,
    block: &'static str,
    /// Random jobs do this fraction of the file (seconds matter more than coverage).
    io_fraction: u64,
    /// Whether fio drops the file's cached pages first (its default): false reads what the
    /// job before left in the page cache.
    invalidate: bool,
}

const JOBS: [Job; 5] = [
    Job {
        key: "seq_write",
        rw: "write",
        block: "1M",
        io_fraction: 1,
        invalidate: true,
    },
    Job {
        key: "seq_read",
        rw: "read",
        block: "1M",
        io_fraction: 1,
        invalidate: true,
    },
    Job {
        key: "seq_read_cached",
        rw: "read",
        block: "1M",
        io_fraction: 1,
        invalidate: false,
    },
    Job {
        key: "rand_read_4k",
        rw: "randread",
        block: "4k",
        io_fraction: 4,
        invalidate: true,
    },
    Job {
        key: "rand_write_4k",
        rw: "randwrite",
        block: "4k",
        io_fraction: 4,
        invalidate: true,
    },
];

/// One job on the three targets: bytes per second.
#[derive(Debug, Serialize)]
pub struct JobFigures {
    pub csd: Spread,
    pub bindfs: Spread,
    pub tmpfs: Spread,
    /// csd / bindfs (medians; above 1: csd is faster).
    pub ratio_vs_bindfs: f64,
    /// csd / tmpfs (medians).
    pub ratio_vs_tmpfs: f64,
}

/// Every pattern with one number of fio jobs, keyed as in report.json.
#[derive(Debug, Serialize)]
pub struct Patterns {
    pub seq_write: JobFigures,
    pub seq_read: JobFigures,
    /// The sequential read again, from the page cache the first one filled.
    pub seq_read_cached: JobFigures,
    pub rand_read_4k: JobFigures,
    pub rand_write_4k: JobFigures,
}

impl Patterns {
    /// The patterns in [`JOBS`]'s order, with their names in the report.
    pub fn named(&self) -> [(&'static str, &JobFigures); 5] {
        [
            ("seq write 1 MiB (+fsync)", &self.seq_write),
            ("seq read 1 MiB", &self.seq_read),
            ("seq read 1 MiB, cached", &self.seq_read_cached),
            ("rand read 4 KiB", &self.rand_read_4k),
            ("rand write 4 KiB (+fsync)", &self.rand_write_4k),
        ]
    }
}

/// `fs`: every pattern with one job (`fs.<pattern>`) and with four (`fs.jobs4.<pattern>`).
#[derive(Debug, Serialize)]
pub struct Fs {
    /// Bytes of each fio job's file.
    pub file_bytes: u64,
    pub fio_version: String,
    #[serde(flatten)]
    pub jobs1: Patterns,
    pub jobs4: Patterns,
}

/// Numbers of fio jobs run at once, in order.
const JOB_COUNTS: [u32; 2] = [1, 4];

/// A tmpfs mount (and a bindfs mount over it) that go away when dropped.
#[derive(Debug)]
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn run_checked(command: &mut Command) -> Result<String> {
    let out = command
        .output()
        .with_context(|| format!("could not run {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs every job `reps` times on each target, on a file of `file_bytes`.
pub fn run(file_bytes: u64, reps: usize) -> Result<Fs> {
    let fio_version = run_checked(Command::new("fio").arg("--version"))
        .context("fio is missing: `cargo xtask deps` installs it")?
        .trim()
        .to_string();
    run_checked(Command::new("bindfs").arg("--version"))
        .context("bindfs is missing: `cargo xtask deps` installs it")?;
    let dir = tempfile::tempdir().context("a temporary directory")?;
    let tmpfs = dir.path().join("tmpfs");
    let bindfs = dir.path().join("bindfs");
    std::fs::create_dir(&tmpfs)?;
    std::fs::create_dir(&bindfs)?;
    run_checked(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!(
                "size={}",
                file_bytes * 2 * u64::from(JOB_COUNTS[1]) + (16 << 20)
            ))
            .arg("tmpfs")
            .arg(&tmpfs),
    )
    .context("could not mount a tmpfs (the fs figures need root)")?;
    let _tmpfs_mount = Unmount(tmpfs.clone());
    let tmpfs_data = tmpfs.join("data");
    std::fs::create_dir(&tmpfs_data)?;
    run_checked(Command::new("bindfs").arg(&tmpfs_data).arg(&bindfs))?;
    let _bindfs_mount = Unmount(bindfs.clone());
    let csd = CsdMount::new(file_bytes * u64::from(JOB_COUNTS[1]))?;

    let targets: [(&str, &Path); 3] = [
        ("csd", csd.root()),
        ("bindfs", &bindfs),
        ("tmpfs", &tmpfs_data),
    ];
    // samples[count][pattern][target]
    let mut samples = vec![vec![[vec![], vec![], vec![]]; JOBS.len()]; JOB_COUNTS.len()];
    for _ in 0..reps {
        for (c, &jobs) in JOB_COUNTS.iter().enumerate() {
            for (t, (name, path)) in targets.iter().enumerate() {
                let dir = path.join(format!("fio{jobs}"));
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("mkdir {}", dir.display()))?;
                for (j, job) in JOBS.iter().enumerate() {
                    let bytes_per_s = fio(&dir, *job, file_bytes, jobs)
                        .with_context(|| format!("fio {} with {jobs} jobs on {name}", job.key))?;
                    samples[c][j][t].push(bytes_per_s);
                }
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("rm -r {}", dir.display()))?;
            }
        }
    }
    csd.finish()?;
    let mut counts = samples.into_iter().map(|patterns| {
        let mut figures = patterns.into_iter().map(|[c, b, t]| {
            let (csd, bindfs, tmpfs) = (Spread::of(&c), Spread::of(&b), Spread::of(&t));
            JobFigures {
                ratio_vs_bindfs: csd.median / bindfs.median,
                ratio_vs_tmpfs: csd.median / tmpfs.median,
                csd,
                bindfs,
                tmpfs,
            }
        });
        let mut next = || figures.next().context("a pattern's figures");
        Ok::<_, anyhow::Error>(Patterns {
            seq_write: next()?,
            seq_read: next()?,
            seq_read_cached: next()?,
            rand_read_4k: next()?,
            rand_write_4k: next()?,
        })
    });
    let mut next = || counts.next().context("a job count's figures")?;
    Ok(Fs {
        file_bytes,
        fio_version,
        jobs1: next()?,
        jobs4: next()?,
    })
}

/// Runs `jobs` fio jobs of `job` at once in `dir`, each on its own file of `file_bytes`;
/// returns their bytes per second together.
fn fio(dir: &Path, job: Job, file_bytes: u64, jobs: u32) -> Result<f64> {
    let mut fio = Command::new("fio");
    fio.arg("--name=csd-bench")
        .arg(format!("--directory={}", dir.display()))
        .arg(format!("--numjobs={jobs}"))
        .arg("--group_reporting")
        .arg(format!("--size={file_bytes}"))
        .arg(format!("--io_size={}", file_bytes / job.io_fraction))
        .arg(format!("--rw={}", job.rw))
        .arg(format!("--bs={}", job.block))
        .args(["--ioengine=psync", "--randrepeat=1", "--output-format=json"]);
    if job.rw.contains("write") {
        fio.arg("--end_fsync=1");
    }
    if !job.invalidate {
        fio.arg("--invalidate=0");
    }
    let out = run_checked(&mut fio)?;
    // fio may print notes before the JSON document.
    let json = out
        .find('{')
        .map(|i| &out[i..])
        .context("fio printed no JSON")?;
    let doc: serde_json::Value = serde_json::from_str(json).context("fio's JSON")?;
    let side = if job.rw.contains("write") {
        "write"
    } else {
        "read"
    };
    let job = &doc["jobs"][0];
    if job["error"].as_i64().unwrap_or(0) != 0 {
        bail!("fio reported error {}", job["error"]);
    }
    let bw = job[side]["bw_bytes"]
        .as_f64()
        .context("fio's JSON has no bw_bytes")?;
    if bw <= 0.0 {
        bail!("fio measured no {side} bandwidth");
    }
    Ok(bw)
}
