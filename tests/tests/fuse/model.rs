//! Random file operations through a real mount against an in-memory model (a `BTreeMap` of
//! paths to contents), with remounts in between: after every remount the whole tree must
//! match the model, and fsck must be clean at the end.

use std::{collections::BTreeMap, fs, io::ErrorKind, os::unix::fs::FileExt};

use testkit::rng::Rng;
use tests::mount::Mount;

const NAMES: [&str; 8] = ["a", "b", "c", "d/e", "d/f", "d/g", "h", "d/i"];

fn check_tree(m: &Mount, model: &BTreeMap<String, Vec<u8>>) {
    for name in NAMES {
        let on_disk = match fs::read(m.path(name)) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => panic!("{name}: {e}"),
        };
        assert_eq!(on_disk.as_ref(), model.get(name), "{name}");
    }
}

fn run(seed: u64, ops: usize, remount_every: usize, mount_args: &[&str]) {
    let mut m = Mount::new(&[], mount_args);
    fs::create_dir(m.path("d")).expect("mkdir d");
    let mut rng = Rng::new(seed);
    let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for step in 1..=ops {
        let name = NAMES[rng.below(NAMES.len() as u64) as usize];
        let path = m.path(name);
        match rng.below(10) {
            // Write at a random offset (extending with zeros as POSIX says).
            0..=3 => {
                let offset = rng.below(200_000);
                let max = if rng.below(4) == 0 { 300_000 } else { 5_000 };
                let len = 1 + rng.below(max);
                let byte = rng.next_u64() as u8;
                let data = vec![byte; len as usize];
                let f = fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
                    .expect("open for write");
                f.write_all_at(&data, offset).expect("write");
                if rng.below(3) == 0 {
                    f.sync_data().expect("fsync");
                }
                let content = model.entry(name.to_string()).or_default();
                let end = (offset + len) as usize;
                if content.len() < end {
                    content.resize(end, 0);
                }
                content[offset as usize..end].copy_from_slice(&data);
            }
            4 => {
                let size = rng.below(250_000);
                if let Some(content) = model.get_mut(name) {
                    fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .and_then(|f| f.set_len(size))
                        .expect("truncate");
                    content.resize(size as usize, 0);
                }
            }
            5 => {
                let removed = fs::remove_file(&path);
                assert_eq!(
                    removed.is_ok(),
                    model.remove(name).is_some(),
                    "unlink {name}"
                );
            }
            6 => {
                let to = NAMES[rng.below(NAMES.len() as u64) as usize];
                let renamed = fs::rename(&path, m.path(to));
                match model.remove(name) {
                    Some(content) => {
                        renamed.expect("rename");
                        model.insert(to.to_string(), content);
                    }
                    None => assert!(renamed.is_err(), "rename of missing {name}"),
                }
            }
            // Read a random range and compare.
            _ => {
                let offset = rng.below(300_000);
                let len = 1 + rng.below(100_000) as usize;
                match model.get(name) {
                    Some(content) => {
                        let f = fs::File::open(&path).expect("open");
                        let mut buf = vec![0u8; len];
                        let mut got = 0;
                        while got < len {
                            let n = f
                                .read_at(&mut buf[got..], offset + got as u64)
                                .expect("read");
                            if n == 0 {
                                break;
                            }
                            got += n;
                        }
                        buf.truncate(got);
                        let start = (offset as usize).min(content.len());
                        let end = (offset as usize + len).min(content.len());
                        assert_eq!(buf, &content[start..end], "{name} at {offset}+{len}");
                    }
                    None => assert!(fs::File::open(&path).is_err(), "{name} exists"),
                }
            }
        }
        if step % remount_every == 0 {
            m.remount();
            check_tree(&m, &model);
        }
    }
    check_tree(&m, &model);
    m.unmount_and_fsck();
}

/// 400 random operations with a remount every 100.
#[test]
fn random_operations_match_the_model() {
    run(0x5EED_0001, 400, 100, &[]);
}

/// The same over `/dev/fuse`, when the others run over FUSE over io_uring.
#[test]
fn random_operations_match_the_model_over_dev_fuse() {
    run(0x5EED_0001, 400, 100, &["--no-io-uring"]);
}

/// 6000 random operations with a remount every 250 (cleaning included: the data written is
/// several times the device).
#[test]
#[ignore = "long: run with --ignored"]
fn random_operations_match_the_model_long() {
    run(0x5EED_0002, 6000, 250, &[]);
}
