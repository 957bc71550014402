//! The main job on a built-in default, run by `cargo xtask demo` (which first builds the
//! kernels with clang): `cargo run --release -p host-shell --example demo`.
//!
//! Makes a device image (ZN540 preset, timing model on) with a file system, mounts it with
//! FUSE in a temporary directory, writes 64 MiB of sample data with ordinary file I/O, copies
//! the clang-built `entropy.o` into the mount, and computes the file's Shannon entropy twice:
//! the regular way (read the file through the mount: every byte crosses the host link) and
//! offloaded (`setxattr user.csd.file_job /kernels/entropy.o`: the kernel runs on the device
//! next to the data, and `getxattr user.csd.result` returns its 2 KiB histogram). It prints
//! both results and, for each way, the bytes that crossed the link (the device's counters),
//! the host CPU of the thread doing the job, the modeled device time (the preset's NAND, link
//! and CPU; for the offload its compute and NAND parts) and a modeled end-to-end time: the
//! device's time plus the host's own work, which for the regular way is the histogram measured
//! natively over the bytes in memory. It unmounts, also when a step fails.

use std::{
    fs,
    io::{Read, Write},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};
use tests::reference::{entropy_histogram, sample_text, shannon_entropy};

use anyhow::{anyhow, bail, Context, Result};
use host_shell::{
    device::{create_image, DeviceOptions, FileDevice},
    fuse::{self, MountConfig},
    lfs::Lfs,
    nand::{image::Header, preset::Preset},
    units::{Bytes, Nanos},
};

const DATA_BYTES: usize = 64 << 20;

fn main() -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .context("the workspace root")?;
    let object = root.join("target/kernels/entropy.o");
    if !object.is_file() {
        bail!(
            "{} is missing: build the kernels with `cargo xtask kernels`",
            object.display()
        );
    }
    let dir = tempfile::tempdir().context("a temporary directory")?;
    let image = dir.path().join("device.img");
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).context("the mount point")?;

    let preset = Preset::Zn540;
    let geometry = preset.geometry(preset.default_capacity())?;
    let zones = firmware::zns::ZoneConfig::for_geometry(&geometry);
    create_image(
        &image,
        Header {
            geometry,
            zones,
            timing_preset: preset.id(),
        },
    )?;
    // The image records its preset, and the device follows it.
    let device = Arc::new(FileDevice::open(&image, DeviceOptions::default())?);
    let driver = device.driver();
    Lfs::mkfs(&driver, 0, 0)?;
    let info = *driver.info();
    println!(
        "device  {} preset: {} zones of {}, {} channels x {} dies; mounted on {}",
        preset.name(),
        info.nr_zones,
        Bytes(info.zone_cap_lbas * u64::from(common::LBA_BYTES)),
        geometry.channels,
        geometry.dies_per_channel,
        mnt.display()
    );

    let counters = Arc::clone(&device);
    let link = Box::new(move || Some(counters.stats()));
    let mounted = fuse::mount(&driver, &mnt, &MountConfig::default(), link)?;
    let background = fuse::Background::serve(mounted)?;
    let shown = job(&device, &object, &mnt);
    let unmounted = background.finish().context("the mount did not end cleanly");
    drop(driver);
    let device = Arc::try_unwrap(device).map_err(|_| anyhow!("the device is still shared"))?;
    let closed = device.close();
    shown?;
    unmounted?;
    closed?;
    println!("unmounted: the file system checkpointed and the device closed");
    Ok(())
}

fn histogram(bytes: &[u8]) -> Result<[u64; 256]> {
    let mut counts = [0u64; 256];
    if bytes.len() != 2048 {
        bail!("the histogram is {} bytes, not 2048", bytes.len());
    }
    for (count, b) in counts.iter_mut().zip(bytes.chunks_exact(8)) {
        *count = u64::from_le_bytes(b.try_into().context("a short histogram")?);
    }
    Ok(counts)
}

/// Writes the data, then computes the entropy both ways through the mount.
fn job(device: &FileDevice, object: &Path, mnt: &Path) -> Result<()> {
    let data = sample_text(DATA_BYTES);
    let file = mnt.join("sample.txt");
    let started = Instant::now();
    let mut f = fs::File::create(&file).context("create the sample file")?;
    f.write_all(&data).context("write the sample file")?;
    f.sync_all().context("fsync the sample file")?;
    drop(f);
    fs::create_dir(mnt.join("kernels")).context("mkdir /kernels")?;
    fs::copy(object, mnt.join("kernels/entropy.o")).context("copy entropy.o into the mount")?;
    println!(
        "wrote   {} to {} with ordinary file I/O in {:.2} s",
        Bytes(data.len() as u64),
        file.display(),
        started.elapsed().as_secs_f64()
    );

    // Regular: read the file through the mount; every byte crosses the link. (Its pages are
    // dropped from the page cache first: the write just left them there, and a read served
    // from them would not reach the device at all.)
    let mut reader = fs::File::open(&file).context("open the sample file")?;
    rustix::fs::fadvise(&reader, 0, None, rustix::fs::Advice::DontNeed)
        .context("drop the sample file's cached pages")?;
    let before = device.stats();
    let (started, cpu) = (Instant::now(), tests::thread_cpu());
    let mut counts = [0u64; 256];
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf).context("read the sample file")?;
        if n == 0 {
            break;
        }
        for &b in &buf[..n] {
            counts[usize::from(b)] += 1;
        }
    }
    let regular_wall = started.elapsed();
    let regular_cpu = tests::thread_cpu() - cpu;
    let regular = device.stats().since(&before);
    // The host's own work of the regular way, natively: the histogram of bytes in memory.
    let native = Instant::now();
    std::hint::black_box(entropy_histogram(std::hint::black_box(&data)));
    let native = native.elapsed();

    // Offloaded: one setxattr runs the kernel on the device; getxattr returns the histogram.
    let before = device.stats();
    let (started, cpu) = (Instant::now(), tests::thread_cpu());
    tests::xattr::set(&file, "user.csd.file_job", "/kernels/entropy.o")
        .context("setxattr user.csd.file_job")?;
    let mut result = vec![0u8; 4096];
    let n = rustix::fs::getxattr(&file, "user.csd.result", &mut result[..])
        .context("getxattr user.csd.result")?;
    let offload_wall = started.elapsed();
    let offload_cpu = tests::thread_cpu() - cpu;
    let offloaded = device.stats().since(&before);
    let device_counts = histogram(&result[..n])?;
    let stats = tests::xattr::get(&file, "user.csd.stats").context("getxattr user.csd.stats")?;
    let run = tests::xattr::parse_numbers(&stats).context("user.csd.stats is not key=number")?;
    let field = |key: &str| -> Result<u64> {
        run.get(key)
            .copied()
            .with_context(|| format!("user.csd.stats has no {key}"))
    };

    println!();
    println!(
        "Shannon entropy of {} (bits per byte):",
        Bytes(data.len() as u64)
    );
    print_line(
        "regular   ",
        shannon_entropy(&counts),
        &regular,
        regular_wall,
    );
    print_line(
        "offloaded ",
        shannon_entropy(&device_counts),
        &offloaded,
        offload_wall,
    );
    println!();
    println!(
        "Modeled on the {} preset (host CPU: the job's thread, user + system):",
        Preset::Zn540.name()
    );
    let ns = |d: Duration| d.as_nanos() as u64;
    println!(
        "  regular    host CPU {:>10}  device {:>10}  end to end {:>10} (device + native histogram {})",
        Nanos(ns(regular_cpu)).to_string(),
        Nanos(regular.modeled_ns).to_string(),
        Nanos(regular.modeled_ns + ns(native)).to_string(),
        Nanos(ns(native))
    );
    println!(
        "  offloaded  host CPU {:>10}  device {:>10}  end to end {:>10} (kernel {}: compute {}, NAND reads {})",
        Nanos(ns(offload_cpu)).to_string(),
        Nanos(offloaded.modeled_ns).to_string(),
        Nanos(offloaded.modeled_ns + ns(offload_cpu)).to_string(),
        Nanos(field("device_ns")?),
        Nanos(field("device_compute_ns")?),
        Nanos(field("device_nand_ns")?)
    );
    println!("  kernel run: {}", String::from_utf8_lossy(&stats));
    if counts != device_counts {
        bail!("the offloaded histogram differs from the one computed on the host");
    }
    println!(
        "  same histogram; {:.0}x fewer bytes crossed the host link",
        regular.link_bytes() as f64 / offloaded.link_bytes().max(1) as f64
    );
    Ok(())
}

fn print_line(what: &str, h: f64, stats: &host_shell::device::inprocess::Stats, wall: Duration) {
    println!(
        "  {what} H = {h:.6}  link {:>10} (to device {}, to host {})  wall {:>6.2} s",
        Bytes(stats.link_bytes()).to_string(),
        Bytes(stats.link_to_device_bytes),
        Bytes(stats.link_to_host_bytes),
        wall.as_secs_f64(),
    );
}
