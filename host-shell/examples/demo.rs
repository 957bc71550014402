//! The main job on a built-in default, run by `cargo xtask demo` (which first builds the
//! kernels with clang): `cargo run --release -p host-shell --example demo`.
//!
//! Makes a device image (ZN540 preset, timing model on), writes 64 MiB of sample data into its
//! zones, and computes the data's Shannon entropy twice: the regular way (read every block over
//! the host link, count bytes on the host) and offloaded (the clang-built `entropy.o` kernel
//! runs on the device next to the data; only its 2 KiB histogram crosses the link). It prints
//! both results, the bytes that crossed the link for each, and the modeled device time.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use common::{
    program::{ExecOutcome, ExecuteProgram, Extent, ProgramOp, ProgramSlot, RangeSetId},
    LBA_BYTES,
};
use host_shell::{
    device::{create_image, DeviceOptions, FileDevice},
    loader,
    nand::{image::Header, preset::Preset},
    units::Bytes,
};

const DATA_BYTES: usize = 64 << 20;

fn main() -> Result<()> {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(std::path::PathBuf::from)
        .context("the workspace root")?;
    let dir = root.join("target/demo");
    std::fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    let image = dir.join("device.img");
    if image.exists() {
        std::fs::remove_file(&image)
            .with_context(|| format!("could not remove {}", image.display()))?;
    }

    let preset = Preset::Zn540;
    let geometry = preset.geometry(preset.default_capacity())?;
    let zones = firmware::zns::ZoneConfig::for_geometry(&geometry);
    create_image(&image, Header { geometry, zones })?;
    let options = DeviceOptions {
        timing: Some(preset.timing()),
        ..DeviceOptions::default()
    };
    let device = FileDevice::open(&image, options)?;
    let driver = device.driver();
    let info = *driver.info();
    println!(
        "device  {} ({} preset): {} zones of {}, {} channels x {} dies",
        image.display(),
        preset.name(),
        info.nr_zones,
        Bytes(info.zone_cap_lbas * u64::from(LBA_BYTES)),
        geometry.channels,
        geometry.dies_per_channel
    );

    // Write the sample data zone after zone; remember where it went.
    let data = sample_data(DATA_BYTES);
    let started = Instant::now();
    let mut extents: Vec<Extent> = Vec::new();
    let zone_bytes = (info.zone_cap_lbas * u64::from(LBA_BYTES)) as usize;
    for (i, chunk) in data.chunks(zone_bytes).enumerate() {
        let zslba = i as u64 * info.zone_size_lbas;
        let mut padded = chunk.to_vec();
        padded.resize(
            chunk.len().div_ceil(LBA_BYTES as usize) * LBA_BYTES as usize,
            0,
        );
        let lbas = driver.append_all(zslba, &padded)?;
        let first = *lbas.first().context("an empty append")?;
        extents.push(Extent {
            start_lba: first,
            lba_count: (padded.len() / LBA_BYTES as usize) as u32,
        });
    }
    println!(
        "wrote   {} of sample data in {:.2} s",
        Bytes(data.len() as u64),
        started.elapsed().as_secs_f64()
    );

    // Regular: every block crosses the link, the host counts.
    let before = device.stats();
    let started = Instant::now();
    let mut counts = [0u64; 256];
    let mut left = data.len();
    for extent in &extents {
        let bytes = driver.read(extent.start_lba, u64::from(extent.lba_count))?;
        for &b in &bytes[..left.min(bytes.len())] {
            counts[usize::from(b)] += 1;
        }
        left = left.saturating_sub(bytes.len());
    }
    let regular_wall = started.elapsed();
    let regular = device.stats().since(&before);

    // Offloaded: the kernel runs on the device, only the histogram comes back.
    let object = root.join("target/kernels/entropy.o");
    if !object.is_file() {
        bail!(
            "{} is missing: build the kernels with `cargo xtask kernels`",
            object.display()
        );
    }
    let program = loader::load_object(&object)?.to_bytes();
    let before = device.stats();
    let started = Instant::now();
    let (slot, set) = (ProgramSlot(0), RangeSetId(0));
    driver.load_program(slot, &program)?;
    driver.activate(slot, true)?;
    driver.set_ranges(set, &extents, data.len() as u64, 2048)?;
    let exec = ExecuteProgram {
        slot,
        range_set: set,
        op: ProgramOp::FileJob,
        offset: 0,
        len: data.len() as u64,
        param0: 0,
        param1: 0,
        fuel: 0,
    };
    let result = driver.execute(exec, Vec::new())?;
    if let ExecOutcome::Faulted(fault) = result.outcome {
        bail!("the entropy kernel faulted on the device: {fault:?}");
    }
    let output = driver.read_output(set, 0, 2048)?;
    let offload_wall = started.elapsed();
    let offloaded = device.stats().since(&before);
    let mut device_counts = [0u64; 256];
    for (count, bytes) in device_counts.iter_mut().zip(output.chunks_exact(8)) {
        *count = u64::from_le_bytes(bytes.try_into().context("a short histogram")?);
    }

    let regular_h = entropy(&counts);
    let offload_h = entropy(&device_counts);
    println!();
    println!(
        "Shannon entropy of {} (bits per byte):",
        Bytes(data.len() as u64)
    );
    println!(
        "  regular    H = {regular_h:.6}  link {:>10}  wall {:>6.2} s  modeled device {:>6.3} s",
        Bytes(regular.link_bytes()).to_string(),
        regular_wall.as_secs_f64(),
        regular.modeled_ns as f64 / 1e9
    );
    println!(
        "  offloaded  H = {offload_h:.6}  link {:>10}  wall {:>6.2} s  modeled device {:>6.3} s",
        Bytes(offloaded.link_bytes()).to_string(),
        offload_wall.as_secs_f64(),
        offloaded.modeled_ns as f64 / 1e9
    );
    println!(
        "  kernel: {} instructions, {} read on the device, {} returned",
        result.stats.instructions,
        Bytes(result.stats.device_bytes_read),
        Bytes(result.stats.bytes_returned)
    );
    if counts != device_counts {
        bail!("the offloaded histogram differs from the one computed on the host");
    }
    println!(
        "  same histogram; {:.0}x fewer bytes crossed the host link",
        regular.link_bytes() as f64 / offloaded.link_bytes().max(1) as f64
    );
    device.close()?;
    Ok(())
}

fn entropy(counts: &[u64; 256]) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / total as f64;
            -p * p.log2()
        })
        .sum()
}

/// Text-like sample data: words of a small vocabulary from a fixed-seed generator, so the
/// entropy is well below 8 bits per byte and the same on every run.
fn sample_data(len: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "storage ", "zone ", "append ", "kernel ", "device ", "flash ", "block ", "page ", "the ",
        "of ", "and ", "data ", "near ", "compute ", "link ", "bytes\n",
    ];
    let mut out = Vec::with_capacity(len + 16);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(WORDS[(state % 16) as usize].as_bytes());
    }
    out.truncate(len);
    out
}
