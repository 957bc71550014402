//! Absurd command lines through the real `csd` binary: huge, zero, negative and garbage
//! numbers, missing files, directories and non-images as images, hostile kernels. Each ends
//! with a non-zero exit code and one clear `csd: ` line (never a panic or a signal), and the
//! device image is still usable afterwards.

use crate::tally::Tally;
use tests::{csd, csd_ok, kernel_object};

/// Runs `csd args`: it must fail with exit code 1 or 2 and exactly one `csd: ` line.
fn fails_clearly(args: &[&str]) -> Result<(), String> {
    let out = csd(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(1 | 2) => {}
        other => return Err(format!("exit {other:?}: {stderr}")),
    }
    let lines: Vec<&str> = stderr.lines().collect();
    if lines.len() != 1 || !lines[0].starts_with("csd: ") || stderr.contains("panicked") {
        return Err(format!("not one clear line: {stderr}"));
    }
    Ok(())
}

/// Every absurd argument gets one clear error, and the image still works afterwards.
#[test]
fn absurd_arguments() {
    let dir = tempfile::tempdir().expect("temp dir");
    let img = dir.path().join("dev.img");
    let img = img.to_str().expect("utf-8 path");
    csd_ok(["device", "create", img, "--capacity", "16M"]);
    let data = dir.path().join("data.bin");
    std::fs::write(&data, [1u8; 5000]).expect("write data");
    let data = data.to_str().expect("utf-8 path");
    let zeros = dir.path().join("zeros.img");
    std::fs::write(&zeros, vec![0u8; 8192]).expect("write zeros");
    let zeros = zeros.to_str().expect("utf-8 path");
    let dir_path = dir.path().to_str().expect("utf-8 path");
    let missing = dir.path().join("missing.img");
    let missing = missing.to_str().expect("utf-8 path");
    let new_img = dir.path().join("new.img");
    let new_img = new_img.to_str().expect("utf-8 path");
    let hostile_kernel = |name: &str| {
        kernel_object(&format!("tests/{name}"))
            .to_string_lossy()
            .into_owned()
    };
    let garbage_kernel = dir.path().join("garbage.o");
    std::fs::write(&garbage_kernel, b"\x7fELF not really").expect("write");
    let garbage_kernel = garbage_kernel.to_str().expect("utf-8 path");

    let mut cases: Vec<Vec<String>> = Vec::new();
    let mut add = |args: &[&str]| cases.push(args.iter().map(|s| s.to_string()).collect());
    for capacity in [
        "0",
        "-1",
        "-5M",
        "1",
        "4095",
        "18446744073709551615",
        "999999999T",
        "1e9",
        "",
        "garbage",
        "16MM",
        "0x10M",
    ] {
        add(&["device", "create", new_img, "--capacity", capacity]);
    }
    for size in ["0", "-4K", "3", "1T", "99999999999999999999", "x"] {
        add(&["device", "create", new_img, "--zone-size", size]);
        add(&["device", "create", new_img, "--zone-capacity", size]);
    }
    for n in ["-1", "99999999999", "abc", "4294967296"] {
        add(&["device", "create", new_img, "--max-open", n]);
        add(&["device", "create", new_img, "--max-active", n]);
    }
    add(&["device", "create", img]); // exists
    add(&["device", "create", dir_path]);
    add(&["device", "create", "/proc/version"]);
    for image in [missing, dir_path, zeros, data, "/dev/null", ""] {
        add(&["device", "info", image]);
        add(&["zone", "report", image]);
        add(&["zone", "map", image]);
    }
    add(&["zone", "map", img, "--svg", dir_path]);
    add(&["zone", "map", img, "--svg", "-", "--json"]);
    for lba in [
        "-1",
        "18446744073709551615",
        "18446744073709551616",
        "1e3",
        "zz",
        "999999999",
    ] {
        add(&["zone", "read", img, lba, "--len", "4096"]);
        add(&["zone", "write", img, lba, "--input", data]);
        add(&["zone", "append", img, lba, "--input", data]);
        add(&["zone", "open", img, lba]);
        add(&["zone", "reset", img, lba]);
    }
    for len in ["0", "-1", "99999999T", "1.5", "x"] {
        add(&["zone", "read", img, "0", "--len", len]);
    }
    add(&["zone", "write", img, "0", "--input", missing]);
    add(&["zone", "write", img, "0", "--input", dir_path]);
    add(&["zone", "read", img, "0", "--len", "4096", "-o", dir_path]);
    add(&["kernel", "run", img, missing, "--zone", "0"]);
    add(&["kernel", "run", img, dir_path, "--zone", "0"]);
    add(&["kernel", "run", img, garbage_kernel, "--zone", "0"]);
    add(&["kernel", "run", img, data, "--zone", "0"]);
    for name in [
        "hostile_unknown_helper",
        "hostile_wild_load",
        "hostile_stack_escape",
        "hostile_infinite_loop",
    ] {
        let k = hostile_kernel(name);
        add(&["kernel", "run", img, &k, "--zone", "0", "--fuel", "100000"]);
    }
    let passthrough = kernel_object("passthrough").to_string_lossy().into_owned();
    for (flag, value) in [
        ("--zone", "99999"),
        ("--zone", "-1"),
        ("--fuel", "0"),
        ("--fuel", "-5"),
        ("--out-cap", "99999999T"),
        ("--param0", "nope"),
        ("--op", "explode"),
        ("--lba", "18446744073709551615"),
    ] {
        add(&["kernel", "run", img, &passthrough, flag, value]);
    }
    add(&["kernel", "asm", missing]);
    add(&["kernel", "disasm", missing]);
    add(&["kernel", "disasm", dir_path]);
    add(&["no-such-command"]);
    add(&["device", "info"]);

    let mut tally = Tally::new("cli arguments");
    for args in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        tally.check(format!("csd {}", args.join(" ")), || fails_clearly(&args));
    }
    // The image still works after all of that.
    tally.check("the image afterwards", || {
        let out = csd(["zone", "report", img]);
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    tally.finish();
}
