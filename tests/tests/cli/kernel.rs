//! `csd kernel ...` through the real binary: every C kernel runs on the device over data a
//! previous process appended, and its output matches the plain-Rust reference; faults,
//! rejections and assembler text round trips.

use std::path::{Path, PathBuf};

use serde_json::Value;
use testkit::hex;
use tests::{csd, csd_fails, csd_json, csd_ok, json, kernel_object, reference};

const BLOCK: usize = 4096;

/// An image with `data` appended to zone 1 (padded to whole blocks by the CLI).
fn image_with(dir: &Path, data: &[u8]) -> PathBuf {
    let img = dir.join("dev.img");
    csd_ok([
        "device",
        "create",
        img.to_str().expect("utf-8 path"),
        "--capacity",
        "16M",
    ]);
    let input = dir.join("data.bin");
    std::fs::write(&input, data).expect("write the input");
    csd_ok([
        "zone",
        "append",
        img.to_str().expect("utf-8 path"),
        "1",
        "--input",
        input.to_str().expect("utf-8 path"),
    ]);
    img
}

/// `csd kernel run IMAGE KERNEL args... --json`, which must succeed; its JSON.
fn run(img: &Path, kernel: &str, args: &[&str]) -> Value {
    let object = kernel_object(kernel);
    let mut all = vec![
        "kernel".to_string(),
        "run".into(),
        img.display().to_string(),
        object.display().to_string(),
        "--json".into(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    csd_json(all)
}

fn output(v: &Value) -> Vec<u8> {
    hex::decode(v["output_hex"].as_str().expect("output_hex"))
}

fn sample() -> Vec<u8> {
    let mut data: Vec<u8> = (0..5 * BLOCK as u32 + 1000)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    data[100..106].copy_from_slice(b"abcabc");
    data
}

/// Each read kernel over a zone (all its written blocks) and over an LBA range (exact bytes)
/// gives the reference's output, and the JSON carries the run's counters.
#[test]
fn c_kernels_match_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample();
    let img = image_with(dir.path(), &data);
    let mut zone_data = data.clone();
    zone_data.resize(data.len().div_ceil(BLOCK) * BLOCK, 0);
    let zslba = "256"; // zone 1 of a small device with 1 MiB zones
    let len = data.len().to_string();

    let v = run(&img, "passthrough", &["--zone", "1"]);
    assert_eq!(output(&v), reference::passthrough(&zone_data));
    assert_eq!(v["ret"], zone_data.len() as u64);
    assert_eq!(v["bytes_returned"], zone_data.len() as u64);
    assert_eq!(v["device_bytes_read"], zone_data.len() as u64);
    assert!(v["instructions"].as_u64().unwrap() > 0);
    assert!(v["fuel_used"].as_u64().unwrap() >= v["instructions"].as_u64().unwrap());
    // The image records the small preset: its device time is modeled, compute included.
    let modeled = |key: &str| v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"));
    assert!(modeled("device_compute_ns") > 0 && modeled("device_nand_ns") > 0);
    assert!(modeled("device_ns") >= modeled("device_compute_ns").max(modeled("device_nand_ns")));

    let v = run(&img, "passthrough", &["--lba", zslba, "--len", &len]);
    assert_eq!(output(&v), data);

    let v = run(&img, "entropy", &["--lba", zslba, "--len", &len]);
    let counts = reference::entropy_histogram(&data);
    assert_eq!(output(&v), reference::histogram_bytes(&counts));

    let v = run(
        &img,
        "filter_u32",
        &["--zone", "1", "--param0", "2000000000"],
    );
    let count = reference::filter_u32_count(&zone_data, 2_000_000_000);
    assert_eq!(output(&v), reference::u64_output(count));
    assert_eq!(v["ret"], count);

    let pattern = u64::from_le_bytes(*b"abc\0\0\0\0\0").to_string();
    let v = run(
        &img,
        "pattern",
        &[
            "--lba", zslba, "--len", &len, "--param0", &pattern, "--param1", "3",
        ],
    );
    let count = reference::pattern_count(&data, u64::from_le_bytes(*b"abc\0\0\0\0\0"), 3).unwrap();
    assert!(count >= 2);
    assert_eq!(output(&v), reference::u64_output(count));

    let v = run(&img, "tests/features", &["--zone", "1"]);
    assert_eq!(
        output(&v),
        reference::u64_output(reference::popcount(&zone_data))
    );

    // xor is a write-stream transform: its input comes with the command.
    let input = dir.path().join("stream.bin");
    std::fs::write(&input, &data[..3000]).unwrap();
    let v = run(
        &img,
        "xor",
        &[
            "--op",
            "write-stream",
            "--input",
            input.to_str().unwrap(),
            "--param0",
            "90",
        ],
    );
    assert_eq!(output(&v), reference::xor(&data[..3000], 90));

    // --output writes the raw output to a file and leaves it out of the JSON.
    let out = dir.path().join("out.bin");
    let v = run(
        &img,
        "passthrough",
        &["--zone", "1", "--output", out.to_str().unwrap()],
    );
    assert!(v.get("output_hex").is_none(), "{v}");
    assert_eq!(std::fs::read(&out).unwrap(), zone_data);
}

/// A kernel that faults or runs out of fuel exits non-zero with one sentence, and with --json
/// the JSON (with an "error") still prints; a kernel the verifier refuses is named with why.
#[test]
fn faults_and_rejections() {
    let dir = tempfile::tempdir().unwrap();
    let img = image_with(dir.path(), &sample());
    let img_s = img.to_str().unwrap();

    let wild = kernel_object("tests/hostile_wild_load");
    let out = csd([
        "kernel",
        "run",
        img_s,
        wild.to_str().unwrap(),
        "--zone",
        "1",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out.stdout);
    assert!(v["ret"].is_null());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr, format!("csd: {}\n", v["error"].as_str().unwrap()));
    assert!(
        stderr.starts_with("csd: kernel faulted: memory fault at pc "),
        "{stderr}"
    );

    let endless = kernel_object("tests/hostile_infinite_loop");
    let err = csd_fails(
        1,
        [
            "kernel",
            "run",
            img_s,
            endless.to_str().unwrap(),
            "--zone",
            "1",
            "--fuel",
            "5000",
        ],
    );
    assert!(
        err.starts_with("csd: kernel ran out of fuel after "),
        "{err}"
    );

    let unknown = kernel_object("tests/hostile_unknown_helper");
    let err = csd_fails(
        1,
        [
            "kernel",
            "run",
            img_s,
            unknown.to_str().unwrap(),
            "--zone",
            "1",
        ],
    );
    assert!(
        err.contains("hostile_unknown_helper.o") && err.contains("unknown helper"),
        "{err}"
    );

    let pass = kernel_object("passthrough");
    let err = csd_fails(
        1,
        [
            "kernel",
            "run",
            img_s,
            pass.to_str().unwrap(),
            "--zone",
            "99",
        ],
    );
    assert!(err.contains("zone 99 does not exist"), "{err}");
    let err = csd_fails(
        1,
        ["kernel", "run", img_s, "/nonexistent/k.o", "--zone", "1"],
    );
    assert!(err.contains("/nonexistent/k.o"), "{err}");
    let err = csd_fails(
        2,
        [
            "kernel",
            "run",
            img_s,
            pass.to_str().unwrap(),
            "--lba",
            "256",
        ],
    );
    assert!(err.contains("--len"), "{err}");
}

/// Assembler text becomes a program image the device runs; the disassembly assembles back to
/// the same image, and a clang-built kernel disassembles from its object.
#[test]
fn asm_disasm_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let img = image_with(dir.path(), &sample());
    let source = dir.path().join("k.s");
    std::fs::write(
        &source,
        "mov64 r0, 0\nldxdw r2, [r1+8]\njeq r2, 0, +2\nmov64 r0, r2\nadd64 r0, 7\nexit\n",
    )
    .unwrap();
    let image = dir.path().join("k.img");
    csd_ok([
        "kernel",
        "asm",
        source.to_str().unwrap(),
        "-o",
        image.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&image).unwrap();
    assert_eq!(&bytes[..4], b"CSDP");
    assert_eq!(bytes.len(), 16 + 6 * 8);

    // It runs: r0 = file_size + 7.
    let ran = csd_json([
        "kernel",
        "run",
        img.to_str().unwrap(),
        image.to_str().unwrap(),
        "--zone",
        "1",
        "--json",
    ]);
    let zone_bytes = sample().len().div_ceil(BLOCK) * BLOCK;
    assert_eq!(ran["ret"], zone_bytes as u64 + 7);

    let text = String::from_utf8(csd_ok(["kernel", "disasm", image.to_str().unwrap()])).unwrap();
    assert_eq!(text.lines().count(), 6, "{text}");
    assert!(text.lines().last().unwrap().ends_with("exit"), "{text}");
    // --json: the same listing as {pc, text} objects.
    let listing = csd_json(["kernel", "disasm", image.to_str().unwrap(), "--json"]);
    let listing = listing.as_array().expect("a JSON list");
    assert_eq!(listing.len(), 6, "{listing:?}");
    for (insn, line) in listing.iter().zip(text.lines()) {
        let (pc, desc) = line.split_once(": ").expect("`pc: insn`");
        assert_eq!(insn["pc"].as_u64(), pc.trim().parse().ok(), "{insn}");
        assert_eq!(insn["text"], desc, "{insn}");
    }
    assert_eq!(listing[5]["text"], "exit");
    // A 64-bit immediate load takes two slots: the next pc is two on.
    let wide = dir.path().join("wide.s");
    std::fs::write(&wide, "lddw r0, 0x100000001\nexit\n").unwrap();
    let wide_image = dir.path().join("wide.img");
    csd_ok([
        "kernel",
        "asm",
        wide.to_str().unwrap(),
        "-o",
        wide_image.to_str().unwrap(),
    ]);
    let listing = csd_json(["kernel", "disasm", wide_image.to_str().unwrap(), "--json"]);
    let pcs: Vec<u64> = listing
        .as_array()
        .expect("a JSON list")
        .iter()
        .map(|i| i["pc"].as_u64().expect("a pc"))
        .collect();
    assert_eq!(pcs, [0, 2], "{listing}");
    let again = dir.path().join("again.s");
    let stripped: String = text
        .lines()
        .map(|l| l.split_once(": ").expect("`pc: insn`").1.to_string() + "\n")
        .collect();
    std::fs::write(&again, stripped).unwrap();
    let raw = dir.path().join("again.bin");
    csd_ok([
        "kernel",
        "asm",
        again.to_str().unwrap(),
        "-o",
        raw.to_str().unwrap(),
        "--raw",
    ]);
    assert_eq!(std::fs::read(&raw).unwrap(), bytes[16..].to_vec());
    let raw_text = csd_ok(["kernel", "disasm", raw.to_str().unwrap()]);
    assert_eq!(String::from_utf8(raw_text).unwrap(), text);

    let bad = dir.path().join("bad.s");
    std::fs::write(&bad, "mov64 r0, 1\nfrobnicate r1\nexit\n").unwrap();
    let err = csd_fails(
        1,
        [
            "kernel",
            "asm",
            bad.to_str().unwrap(),
            "-o",
            raw.to_str().unwrap(),
        ],
    );
    assert!(err.contains("does not assemble"), "{err}");

    let object = kernel_object("entropy");
    let text = String::from_utf8(csd_ok(["kernel", "disasm", object.to_str().unwrap()])).unwrap();
    assert!(
        text.contains("call 0x1") || text.contains("call 1"),
        "csd_read: {text}"
    );
    assert!(text.lines().count() > 10);
}

/// `csd kernel link` writes the program image `kernel run` would load from the object: it
/// disassembles to the same instructions and runs to the same output; a file that is not an
/// object is refused with a sentence naming it.
#[test]
fn link_writes_the_image_run_loads() {
    let dir = tempfile::tempdir().unwrap();
    let object = kernel_object("entropy");
    let image = dir.path().join("entropy.img");
    csd_ok([
        "kernel",
        "link",
        object.to_str().unwrap(),
        "-o",
        image.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&image).expect("the image was written");
    assert!(bytes.starts_with(b"CSDP"), "a program image");
    let from_object = csd_ok(["kernel", "disasm", object.to_str().unwrap()]);
    let from_image = csd_ok(["kernel", "disasm", image.to_str().unwrap()]);
    assert_eq!(from_image, from_object);

    let data: Vec<u8> = (0..3 * BLOCK).map(|i| (i % 7) as u8).collect();
    let img = image_with(dir.path(), &data);
    let run = |kernel: &Path| {
        csd_json([
            "kernel",
            "run",
            img.to_str().unwrap(),
            kernel.to_str().unwrap(),
            "--zone",
            "1",
            "--json",
        ])
    };
    let from_image = run(&image);
    assert_eq!(from_image["output_hex"], run(&object)["output_hex"]);
    // And that output is the histogram, computed independently of the loader.
    let counts = reference::entropy_histogram(&data);
    assert_eq!(output(&from_image), reference::histogram_bytes(&counts));

    let err = csd_fails(
        1,
        [
            "kernel",
            "link",
            image.to_str().unwrap(),
            "-o",
            dir.path().join("again.img").to_str().unwrap(),
        ],
    );
    assert!(err.contains("is not a kernel object"), "{err}");
}
