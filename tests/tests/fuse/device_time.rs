//! Modeled device time through a real mount: an image made with `--preset` keeps its timing,
//! a file job's `user.csd.stats` reports the device's compute and NAND time, and file jobs at
//! once run side by side on the preset's cores.

use std::{collections::BTreeMap, fs, path::Path};

use testkit::rng::pattern;
use tests::{
    csd_json, kernel_object,
    mount::Mount,
    xattr::{numbers, set},
};

/// A mount of a fresh `preset` image with the entropy kernel at /k/entropy.o.
fn setup(preset: &str) -> Mount {
    let m = Mount::new(&["--preset", preset], &[]);
    fs::create_dir(m.path("k")).expect("mkdir /k");
    fs::copy(kernel_object("entropy"), m.path("k/entropy.o")).expect("copy kernel");
    m
}

/// Runs entropy over `file` as a file job; returns its `user.csd.stats` as numbers.
fn file_job(file: &Path) -> BTreeMap<String, u64> {
    set(file, "user.csd.file_job", "/k/entropy.o").expect("file job");
    numbers(file, "user.csd.stats").expect("stats of key=number pairs")
}

/// On a zn540 image, compute grows with the kernel's instructions (4, 8 and 16 MiB inputs),
/// and a run's device time covers its compute and its NAND reads; `device info --json` names
/// the preset and reports the modeled time of its own power-on.
#[test]
fn file_jobs_report_modeled_device_time() {
    let mut m = setup("zn540");
    let mut per_instruction = Vec::new();
    for mib in [4usize, 8, 16] {
        let file = m.path(&format!("data{mib}"));
        fs::write(&file, pattern(mib as u64, mib << 20)).expect("write");
        let stats = file_job(&file);
        let (compute, nand, device) = (
            stats["device_compute_ns"],
            stats["device_nand_ns"],
            stats["device_ns"],
        );
        assert!(compute > 0 && nand > 0, "{mib} MiB: {stats:?}");
        assert!(device >= compute && device >= nand, "{mib} MiB: {stats:?}");
        per_instruction.push(compute as f64 / stats["instructions"] as f64);
    }
    // The same mix of instructions each time: the same time per instruction.
    let (lo, hi) = per_instruction
        .iter()
        .fold((f64::MAX, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    assert!(hi / lo < 1.02, "ns per instruction {per_instruction:?}");
    m.unmount();
    let image = m.image.display().to_string();
    let info = csd_json(["device", "info", &image, "--json"]);
    assert_eq!(info["preset"], "zn540");
    assert!(
        info["modeled_ns"].as_u64().expect("modeled_ns") > 0,
        "{info}"
    );
    let off = csd_json(["--timing", "off", "device", "info", &image, "--json"]);
    assert_eq!(off["modeled_ns"], 0, "{off}");
}

/// Four file jobs at once on a four-core preset end in about a quarter of the modeled time of
/// the same four one after another.
#[test]
fn four_file_jobs_share_four_cores() {
    let m = setup("newport");
    let files: Vec<_> = (0..4)
        .map(|i| {
            let file = m.path(&format!("data{i}"));
            fs::write(&file, pattern(i, 2 << 20)).expect("write");
            file
        })
        .collect();
    let one_after_another: u64 = files.iter().map(|f| file_job(f)["device_ns"]).sum();
    let at_once = std::thread::scope(|s| {
        let jobs: Vec<_> = files
            .iter()
            .map(|f| s.spawn(move || file_job(f)["device_ns"]))
            .collect();
        jobs.into_iter()
            .map(|j| j.join().expect("job"))
            .max()
            .expect("four jobs")
    });
    let ratio = at_once as f64 / one_after_another as f64;
    assert!(
        (0.2..0.35).contains(&ratio),
        "four at once took {at_once} ns, one after another {one_after_another} ns"
    );
}
