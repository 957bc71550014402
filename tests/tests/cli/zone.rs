//! `csd zone ...` end to end through the real binary on file-backed images: every command is a
//! new process, so every step also proves the image reopens (power-on recovery) with the state
//! the previous process left.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::Stdio,
};

use serde_json::Value;
use tests::{csd_command, csd_fails, csd_json, csd_ok, json};

const BLOCK: usize = 4096;

/// A fresh image in a temporary directory, made with `csd device create IMAGE extra...`.
fn image(dir: &Path, extra: &[&str]) -> PathBuf {
    let path = dir.join("dev.img");
    let mut args = vec!["device", "create", path.to_str().expect("utf-8 temp path")];
    args.extend_from_slice(extra);
    csd_ok(args);
    path
}

/// `csd zone report IMAGE --json`, parsed.
fn report(img: &Path) -> Vec<Value> {
    let out = csd_ok([
        "zone",
        "report",
        img.to_str().expect("utf-8 path"),
        "--json",
    ]);
    json(&out).as_array().expect("a JSON list").clone()
}

/// Bytes that differ block by block, with a tail that is not a whole block.
fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i / BLOCK) as u8 ^ (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// An append of a file larger than the append limit and not a whole number of blocks: split in
/// order, padded with zeros, reported, and read back byte for byte by later processes.
#[test]
fn append_report_reopen_read() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), &["--capacity", "16M"]);
    let img_s = img.to_str().unwrap();
    let zones = report(&img);
    assert!(zones.len() > 3);
    for (i, z) in zones.iter().enumerate() {
        assert_eq!(z["zone"], i as u64);
        assert_eq!(z["state"], "empty");
        assert_eq!(z["wp"], z["zslba"]);
    }
    let zslba = zones[2]["zslba"].as_u64().unwrap();

    let payload = data(300_000, 7); // 74 blocks, the last one partial
    let input = dir.path().join("payload.bin");
    std::fs::write(&input, &payload).unwrap();
    let out = csd_json([
        "zone",
        "append",
        img_s,
        "2",
        "--input",
        input.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out["lba"], zslba);
    let lbas: Vec<u64> = out["lbas"]
        .as_array()
        .expect("split appends list their LBAs")
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(
        lbas,
        vec![zslba, zslba + 32, zslba + 64],
        "32-block append limit"
    );

    let z = &report(&img)[2];
    assert_eq!(
        z["state"], "closed",
        "an open zone comes back closed after power-off"
    );
    assert_eq!(z["wp"].as_u64().unwrap(), zslba + 74);
    let closed = csd_json(["zone", "report", img_s, "--state", "closed", "--json"]);
    assert_eq!(closed.as_array().unwrap().len(), 1);
    assert_eq!(closed[0]["zone"], 2);
    let empty = csd_json(["zone", "report", img_s, "--state", "empty", "--json"]);
    assert_eq!(empty.as_array().unwrap().len(), zones.len() - 1);

    // Read back to a file, exactly --len bytes, and to stdout across the padding.
    let back = dir.path().join("back.bin");
    csd_ok([
        "zone",
        "read",
        img_s,
        &zslba.to_string(),
        "--len",
        "300000",
        "--output",
        back.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&back).unwrap(), payload);
    let tail = csd_ok([
        "zone",
        "read",
        img_s,
        &(zslba + 73).to_string(),
        "--len",
        "4K",
    ]);
    let mut expected = payload[73 * BLOCK..].to_vec();
    expected.resize(BLOCK, 0);
    assert_eq!(tail, expected, "the partial block is padded with zeros");

    // A plain append prints the LBA the device chose.
    let small = dir.path().join("small.bin");
    std::fs::write(&small, data(BLOCK, 1)).unwrap();
    let lba = csd_ok([
        "zone",
        "append",
        img_s,
        "2",
        "--input",
        small.to_str().unwrap(),
    ]);
    assert_eq!(
        String::from_utf8(lba).unwrap().trim(),
        (zslba + 74).to_string()
    );
}

/// Writes must land at the write pointer; elsewhere the ZNS status is named with its code.
#[test]
fn write_at_the_write_pointer() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), &["--capacity", "16M"]);
    let img_s = img.to_str().unwrap();
    let zslba = report(&img)[1]["zslba"].as_u64().unwrap();
    let input = dir.path().join("in.bin");
    std::fs::write(&input, data(3 * BLOCK, 3)).unwrap();
    let input = input.to_str().unwrap();
    csd_ok(["zone", "write", img_s, &zslba.to_string(), "--input", input]);
    csd_ok([
        "zone",
        "write",
        img_s,
        &(zslba + 3).to_string(),
        "--input",
        input,
    ]);
    let err = csd_fails(
        1,
        ["zone", "write", img_s, &zslba.to_string(), "--input", input],
    );
    assert_eq!(err, "csd: write failed: Zone Invalid Write (1BCh)");
    let read = csd_ok(["zone", "read", img_s, &zslba.to_string(), "--len", "24K"]);
    assert_eq!(read, [data(3 * BLOCK, 3), data(3 * BLOCK, 3)].concat());
}

/// Appending to a zone until it is full ends with Zone Is Full (1B9h) on stderr; finish and
/// reset then move it through its states.
#[test]
fn full_zone_and_state_changes() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), &["--capacity", "16M"]);
    let img_s = img.to_str().unwrap();
    let zcap = report(&img)[0]["zcap"].as_u64().unwrap() as usize;
    let input = dir.path().join("quarter.bin");
    std::fs::write(&input, data(zcap * BLOCK / 4, 9)).unwrap();
    let input = input.to_str().unwrap();
    let mut appended = 0;
    let err = loop {
        let out = tests::csd(["zone", "append", img_s, "0", "--input", input]);
        if !out.status.success() {
            break String::from_utf8(out.stderr).unwrap();
        }
        appended += 1;
        assert!(appended <= 4, "a zone takes four quarters");
    };
    assert_eq!(appended, 4);
    assert_eq!(err, "csd: zone append failed: Zone Is Full (1B9h)\n");
    assert_eq!(report(&img)[0]["state"], "full");

    csd_ok(["zone", "open", img_s, "1"]);
    csd_ok(["zone", "finish", img_s, "1"]);
    assert_eq!(report(&img)[1]["state"], "full");
    csd_ok(["zone", "reset", img_s, "--all"]);
    assert!(report(&img).iter().all(|z| z["state"] == "empty"));

    // An append larger than the room left is refused before any of it is written.
    let big = dir.path().join("big.bin");
    std::fs::write(&big, data(zcap * BLOCK + 1, 2)).unwrap();
    let err = csd_fails(
        1,
        [
            "zone",
            "append",
            img_s,
            "2",
            "--input",
            big.to_str().unwrap(),
        ],
    );
    assert!(err.contains("does not fit in zone 2"), "{err}");
    let z = &report(&img)[2];
    assert_eq!(
        (&z["state"], &z["wp"]),
        (&Value::from("empty"), &z["zslba"])
    );

    let zones = report(&img).len();
    let err = csd_fails(1, ["zone", "open", img_s, &zones.to_string()]);
    assert!(err.contains("does not exist"), "{err}");
    let err = csd_fails(2, ["zone", "open", img_s]);
    assert!(err.contains("--all"), "{err}");
}

/// Explicit opens past the limits fail as the ZNS specification says: past max open with
/// Too Many Open Zones (1BEh), and past max active (closed zones holding data count) with
/// Too Many Active Zones (1BDh).
#[test]
fn open_and_active_limits() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(
        dir.path(),
        &["--capacity", "16M", "--max-open", "2", "--max-active", "3"],
    );
    let img_s = img.to_str().unwrap();
    let err = csd_fails(1, ["zone", "open", img_s, "0", "1", "2"]);
    assert_eq!(
        err,
        "csd: zone open of zone 2 failed: Too Many Open Zones (1BEh)"
    );

    let other = tempfile::tempdir().unwrap();
    let img = image(
        other.path(),
        &["--capacity", "16M", "--max-open", "2", "--max-active", "2"],
    );
    let img_s = img.to_str().unwrap();
    let input = other.path().join("one.bin");
    std::fs::write(&input, data(BLOCK, 0)).unwrap();
    for zone in ["0", "1"] {
        csd_ok([
            "zone",
            "append",
            img_s,
            zone,
            "--input",
            input.to_str().unwrap(),
        ]);
    }
    let err = csd_fails(1, ["zone", "open", img_s, "2"]);
    assert_eq!(
        err,
        "csd: zone open of zone 2 failed: Too Many Active Zones (1BDh)"
    );
    // Closed zones reopen fine: they already hold their active resource.
    csd_ok(["zone", "open", img_s, "0", "1"]);
}

/// Block `index` of the kill test: its index in the first 8 bytes, then a byte derived from it.
fn stream_block(index: u64) -> Vec<u8> {
    let mut block = vec![(index % 251) as u8; BLOCK];
    block[..8].copy_from_slice(&index.to_le_bytes());
    block
}

/// A `csd zone append --block-by-block` killed with SIGKILL in the middle of a stream leaves an
/// image that opens, with every append it had acknowledged present and correct, and nothing but
/// whole, in-order appends after them.
#[test]
fn kill_9_mid_stream_keeps_acknowledged_appends() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), &["--capacity", "64M", "--zone-size", "4M"]);
    let img_s = img.to_str().unwrap().to_string();
    let zslba = report(&img)[1]["zslba"].as_u64().unwrap();

    let mut child = csd_command([
        "zone",
        "append",
        &img_s,
        "1",
        "--input",
        "-",
        "--block-by-block",
        "--json",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    // 250 blocks go in, and stdin stays open until after the kill: the stream is still
    // going (appending, or waiting for more) when SIGKILL arrives.
    let mut stdin = child.stdin.take().unwrap();
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        for i in 0..250u64 {
            if stdin.write_all(&stream_block(i)).is_err() {
                return; // killed
            }
        }
        let _ = stopped.recv();
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    while acked.len() < 200 {
        let line = lines.next().expect("csd acknowledges appends").unwrap();
        acked.push(json(line.as_bytes())["lba"].as_u64().unwrap());
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    drop(stop);
    writer.join().unwrap();
    // Lines already in the pipe were acknowledged too.
    for line in lines {
        acked.push(json(line.unwrap().as_bytes())["lba"].as_u64().unwrap());
    }

    let expected: Vec<u64> = (0..acked.len() as u64).map(|i| zslba + i).collect();
    assert_eq!(acked, expected, "appends land in order");

    // A new process opens the image (power-on recovery) and finds every acknowledged block.
    let zone = &report(&img)[1];
    let wp = zone["wp"].as_u64().unwrap();
    assert!(wp >= zslba + acked.len() as u64, "{zone}");
    assert!(wp <= zslba + 250, "{zone}");
    let blocks = wp - zslba;
    let data = csd_ok([
        "zone",
        "read",
        &img_s,
        &zslba.to_string(),
        "--len",
        &(blocks * BLOCK as u64).to_string(),
    ]);
    for (i, block) in data.chunks(BLOCK).enumerate() {
        assert_eq!(block, stream_block(i as u64), "block {i} of {blocks}");
    }
    // And it still takes appends where the stream stopped.
    let more = dir.path().join("more.bin");
    std::fs::write(&more, stream_block(blocks)).unwrap();
    let lba = csd_ok([
        "zone",
        "append",
        &img_s,
        "1",
        "--input",
        more.to_str().unwrap(),
    ]);
    assert_eq!(String::from_utf8(lba).unwrap().trim(), wp.to_string());
}

/// `csd zone map` of a device without a file system: the JSON gives every zone's state and
/// written LBAs, erase counts for the blocks a written zone holds and none for empty zones, and
/// no file-system usage; the SVG is well-formed XML with one `rect.zone` per zone and a legend
/// saying there is no file system; the table names each zone. Bad outputs are refused.
#[test]
fn zone_map_of_a_raw_device() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), &["--capacity", "16M"]);
    let img_s = img.to_str().unwrap();
    let input = dir.path().join("in.bin");
    std::fs::write(&input, data(10 * BLOCK, 4)).unwrap();
    csd_ok([
        "zone",
        "append",
        img_s,
        "2",
        "--input",
        input.to_str().unwrap(),
    ]);
    csd_ok(["zone", "finish", img_s, "3"]);
    let zones = report(&img).len();

    let map = csd_json(["zone", "map", img_s, "--json"]);
    assert_eq!(map["file_system"], false, "{map}");
    let list = map["zones"].as_array().expect("a list of zones");
    assert_eq!(list.len(), zones);
    for (i, z) in list.iter().enumerate() {
        assert_eq!(z["zone"], i as u64, "{z}");
        assert_eq!(z["live_blocks"], Value::Null, "{z}");
        assert_eq!(z["role"], Value::Null, "{z}");
        let erases = z["erase_counts"].as_array().expect("erase counts");
        match i {
            2 => {
                assert_eq!(z["state"], "closed", "{z}");
                assert_eq!(z["written_lbas"], 10, "{z}");
                assert!(!erases.is_empty(), "a written zone holds blocks: {z}");
                assert!(erases.iter().all(|n| n.as_u64() >= Some(1)), "{z}");
            }
            3 => {
                assert_eq!(z["state"], "full", "{z}");
                assert_eq!(z["written_lbas"], z["zcap"], "{z}");
            }
            _ => {
                assert_eq!(z["state"], "empty", "{z}");
                assert_eq!(z["written_lbas"], 0, "{z}");
                assert!(erases.is_empty(), "an empty zone holds no blocks: {z}");
            }
        }
    }

    let svg = dir.path().join("map.svg");
    let out = csd_ok(["zone", "map", img_s, "--svg", svg.to_str().unwrap()]);
    assert!(out.is_empty(), "--svg alone prints nothing");
    let parsed = tests::svg::zone_map_summary(&svg);
    assert_eq!(parsed["root"], "{http://www.w3.org/2000/svg}svg");
    let drawn: Vec<u64> = parsed["zones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(drawn, (0..zones as u64).collect::<Vec<_>>());
    let legend = parsed["legend"].as_array().unwrap();
    assert_eq!(legend.len(), 1, "{parsed}");
    let legend = legend[0].as_str().unwrap();
    for words in [
        "empty",
        "closed",
        "full",
        "write pointer",
        "no file system",
        "erase count",
    ] {
        assert!(legend.contains(words), "{words:?} in {legend}");
    }

    let table = String::from_utf8(csd_ok(["zone", "map", img_s])).unwrap();
    assert_eq!(table.lines().count(), zones + 1, "{table}");
    assert!(table.lines().nth(3).unwrap().contains("closed"), "{table}");

    let err = csd_fails(1, ["zone", "map", img_s, "--svg", "-", "--json"]);
    assert!(err.contains("both write to stdout"), "{err}");
    let err = csd_fails(
        1,
        ["zone", "map", img_s, "--svg", dir.path().to_str().unwrap()],
    );
    assert!(err.contains("could not create"), "{err}");
    let missing = dir.path().join("missing.img");
    let err = csd_fails(1, ["zone", "map", missing.to_str().unwrap()]);
    assert!(err.contains("missing.img"), "{err}");
}

/// A device with more zones than one Zone Management Receive asks for (4,096 a command): the
/// report comes in pieces and lists every zone once, in order, with and without a state
/// filter.
#[test]
fn a_report_of_thousands_of_zones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = image(dir.path(), &["--capacity", "5G"]);
    let img_str = img.to_str().expect("utf-8 path");
    csd_ok(["zone", "finish", img_str, "4500"]);
    let zones = report(&img);
    assert!(zones.len() > 4096, "{} zones", zones.len());
    for (i, zone) in zones.iter().enumerate() {
        assert_eq!(zone["zone"], i as u64, "zone {i} in its place");
    }
    assert_eq!(zones[4500]["state"], "full");
    let full = csd_json(["zone", "report", img_str, "--state", "full", "--json"]);
    let full = full.as_array().expect("a JSON list");
    assert_eq!(full.len(), 1, "{full:?}");
    assert_eq!(full[0]["zone"], 4500);
    let empty = csd_json(["zone", "report", img_str, "--state", "empty", "--json"]);
    assert_eq!(
        empty.as_array().expect("a JSON list").len(),
        zones.len() - 1
    );
}
