//! `csd device ...` and the CLI's error conventions, through the real binary: images are
//! created and described, bad arguments and broken images give one clear line and a non-zero
//! exit code, and every command has `--help`.

use tests::{csd, csd_fails, csd_json, csd_ok};

/// A created image describes itself: geometry, zones, limits and health match what was asked.
#[test]
fn create_and_info() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("dev.img");
    let out = csd_ok([
        "device",
        "create",
        img.to_str().unwrap(),
        "--capacity",
        "32M",
        "--zone-size",
        "2M",
        "--zone-capacity",
        "1536K",
        "--max-open",
        "3",
        "--max-active",
        "5",
    ]);
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("created "), "{text}");

    let info = csd_json(["device", "info", img.to_str().unwrap(), "--json"]);
    assert_eq!(info["geometry"]["channels"], 2);
    assert_eq!(info["geometry"]["raw_bytes"], 32 << 20);
    assert_eq!(info["zones"]["size_lbas"], 512);
    assert_eq!(info["zones"]["capacity_lbas"], 384);
    let zones = info["zones"]["count"].as_u64().unwrap();
    assert!(zones > 0 && zones <= 16, "{info}");
    assert_eq!(info["zones"]["states"]["empty"], zones);
    assert_eq!(info["limits"]["max_open"], 3);
    assert_eq!(info["limits"]["max_active"], 5);
    assert_eq!(info["health"]["bad_blocks"], 0);
    assert_eq!(info["health"]["total_blocks"], 128);
    assert!(info["counters"]["commands"].as_u64().unwrap() > 0);
    assert_eq!(
        info["image_bytes"].as_u64().unwrap(),
        std::fs::metadata(&img).unwrap().len()
    );

    let text = String::from_utf8(csd_ok(["device", "info", img.to_str().unwrap()])).unwrap();
    assert!(text.contains("max open 3, max active 5"), "{text}");
}

/// `device create --json` and `mkfs --json` describe what they made; mkfs of an existing image
/// says it created nothing.
#[test]
fn create_and_mkfs_json() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("dev.img");
    let img = img.to_str().unwrap();
    let made = csd_json(["device", "create", img, "--capacity", "32M", "--json"]);
    assert_eq!(made["image"], img);
    assert_eq!(made["preset"], "small");
    assert_eq!(made["raw_bytes"], 32 << 20);
    assert!(made["zones"].as_u64().unwrap() > 0, "{made}");
    assert_eq!(made["max_open"], 14);
    let fs = csd_json(["mkfs", img, "--json", "--uid", "7", "--gid", "8"]);
    assert_eq!(fs["created"], serde_json::Value::Null, "{fs}");
    assert_eq!((fs["uid"].as_u64(), fs["gid"].as_u64()), (Some(7), Some(8)));
    let other = dir.path().join("fs.img");
    let fs = csd_json([
        "mkfs",
        other.to_str().unwrap(),
        "--preset",
        "zn540",
        "--json",
    ]);
    assert_eq!(fs["created"]["preset"], "zn540", "{fs}");
    assert_eq!(fs["created"]["raw_bytes"], 1u64 << 30);
}

/// Arguments that make no sense are refused before anything is created, each with one line.
#[test]
fn bad_create_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("dev.img");
    let img = img.to_str().unwrap();

    let err = csd_fails(2, ["device", "create", img, "--preset", "huge"]);
    assert!(
        err.contains("'huge'") && err.contains("small, zn540"),
        "{err}"
    );
    let err = csd_fails(2, ["device", "create", img, "--capacity", "12Q"]);
    assert!(err.contains("is not a size"), "{err}");
    let err = csd_fails(1, ["device", "create", img, "--capacity", "5M"]);
    assert!(err.contains("does not fit"), "{err}");
    let err = csd_fails(1, ["device", "create", img, "--zone-size", "768K"]);
    assert!(err.contains("power of two"), "{err}");
    let err = csd_fails(1, ["device", "create", img, "--zone-size", "128K"]);
    assert!(err.contains("erase blocks"), "{err}");
    let err = csd_fails(
        1,
        [
            "device",
            "create",
            img,
            "--zone-size",
            "1M",
            "--zone-capacity",
            "512K",
        ],
    );
    assert!(err.contains("more than half"), "{err}");
    let err = csd_fails(1, ["device", "create", img, "--zone-size", "128M"]);
    assert!(err.contains("do not fit the NAND"), "{err}");
    let err = csd_fails(
        1,
        [
            "device",
            "create",
            img,
            "--max-open",
            "5",
            "--max-active",
            "2",
        ],
    );
    assert!(err.contains("--max-open 5"), "{err}");
    assert!(
        !std::path::Path::new(img).exists(),
        "a refused create leaves no file"
    );

    csd_ok(["device", "create", img]);
    let err = csd_fails(1, ["device", "create", img]);
    assert!(err.contains("already exists"), "{err}");
}

/// Opening what is not a usable image fails with one line naming the file and the problem.
#[test]
fn missing_and_corrupt_images() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.img");
    let err = csd_fails(1, ["device", "info", missing.to_str().unwrap()]);
    assert!(
        err.contains("missing.img") && err.contains("No such file"),
        "{err}"
    );

    let img = dir.path().join("dev.img");
    csd_ok([
        "device",
        "create",
        img.to_str().unwrap(),
        "--capacity",
        "16M",
    ]);
    let mut bytes = std::fs::read(&img).unwrap();
    bytes[20] ^= 0x40; // a geometry field of the header
    std::fs::write(&img, &bytes).unwrap();
    for args in [
        vec!["device", "info", img.to_str().unwrap()],
        vec!["zone", "report", img.to_str().unwrap(), "--json"],
    ] {
        let out = csd(&args);
        assert!(!out.status.success());
        assert!(out.stdout.is_empty(), "no output from a corrupt image");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("dev.img") && err.contains("corrupt"), "{err}");
    }

    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    let err = csd_fails(1, ["zone", "report", text.to_str().unwrap()]);
    assert!(err.contains("not a csd device image"), "{err}");
}

/// Every command and group answers `--help` with its usage, on stdout, exit code 0.
#[test]
fn help_everywhere() {
    let commands: &[&[&str]] = &[
        &[],
        &["device"],
        &["device", "create"],
        &["device", "info"],
        &["zone"],
        &["zone", "report"],
        &["zone", "open"],
        &["zone", "close"],
        &["zone", "finish"],
        &["zone", "reset"],
        &["zone", "append"],
        &["zone", "write"],
        &["zone", "read"],
        &["zone", "map"],
        &["kernel"],
        &["kernel", "run"],
        &["kernel", "link"],
        &["kernel", "asm"],
        &["kernel", "disasm"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.push("--help");
        let out = csd(&args);
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(out.status.success(), "csd {args:?}");
        assert!(text.contains("Usage: csd"), "csd {args:?}: {text}");
    }
    let append = String::from_utf8(csd(["zone", "append", "--help"]).stdout).unwrap();
    assert!(append.contains("padded with zeros"), "{append}");
}
