//! Random file operations against an in-memory model (path -> bytes), with remounts.

use std::collections::BTreeMap;

use lfs::{FileKind, InodeNo, Lfs, LfsError, RenameFlags, SetAttr};
use testkit::{
    device::*,
    fs::*,
    geometry,
    rng::{pattern, Rng},
};

#[derive(Debug, Clone, PartialEq)]
enum Node {
    File(Vec<u8>),
    Dir,
}

const DIRS: [&str; 3] = ["", "/a", "/a/b"];
const NAMES: [&str; 5] = ["x", "y", "z", "w", "v"];

fn parent_of(path: &str) -> &str {
    &path[..path.rfind('/').expect("absolute path")]
}

fn name_of(path: &str) -> &str {
    &path[path.rfind('/').expect("absolute path") + 1..]
}

fn random_path(rng: &mut Rng) -> String {
    let d = DIRS[rng.below(DIRS.len() as u64) as usize];
    format!("{d}/{}", NAMES[rng.below(NAMES.len() as u64) as usize])
}

fn parent_ino(lfs: &Lfs, path: &str) -> InodeNo {
    walk(lfs, parent_of(path)).expect("parent exists").ino
}

/// Checks that the file system holds exactly the model.
fn verify(lfs: &Lfs, model: &BTreeMap<String, Node>) {
    for (path, node) in model {
        let attr = walk(lfs, path).unwrap_or_else(|e| panic!("{path}: {e}"));
        match node {
            Node::File(bytes) => {
                assert_eq!(attr.kind, FileKind::File, "{path}");
                assert_eq!(attr.size, bytes.len() as u64, "{path} size");
                assert!(read_all(lfs, attr.ino) == *bytes, "{path} content");
            }
            Node::Dir => assert_eq!(attr.kind, FileKind::Dir, "{path}"),
        }
    }
    // Nothing else exists.
    for d in DIRS {
        let Ok(dir) = walk(lfs, d) else { continue };
        for e in lfs
            .readdir(dir.ino, 0)
            .expect("readdir")
            .into_iter()
            .skip(2)
        {
            let path = format!("{d}/{}", String::from_utf8_lossy(&e.name));
            assert!(model.contains_key(&path), "{path} exists but should not");
        }
    }
}

fn run(seed: u64, ops: usize, remount_every: usize) {
    let mut rng = Rng::new(seed);
    let mut device = fresh(geometry::small());
    let mut lfs = Lfs::mount(&device).expect("mount");
    let mut model: BTreeMap<String, Node> = BTreeMap::new();
    for step in 0..ops {
        let path = random_path(&mut rng);
        let parent_exists =
            parent_of(&path).is_empty() || model.get(parent_of(&path)) == Some(&Node::Dir);
        match rng.below(10) {
            0 => {
                // create
                if !parent_exists {
                    continue;
                }
                let r = lfs.create(
                    parent_ino(&lfs, &path),
                    name_of(&path).as_bytes(),
                    0o644,
                    0,
                    0,
                );
                match model.entry(path) {
                    std::collections::btree_map::Entry::Occupied(e) => {
                        assert!(matches!(r, Err(LfsError::Exists)), "{}: {r:?}", e.key())
                    }
                    std::collections::btree_map::Entry::Vacant(e) => {
                        r.expect("create");
                        e.insert(Node::File(Vec::new()));
                    }
                }
            }
            1..=3 => {
                // write
                let Some(Node::File(bytes)) = model.get_mut(&path) else {
                    continue;
                };
                let off = rng.below(40_000) as usize;
                let len = 1 + rng.below(12_000) as usize;
                let data = pattern(rng.next_u64(), len);
                let ino = walk(&lfs, &path).expect("file").ino;
                lfs.write(ino, off as u64, &data).expect("write");
                if bytes.len() < off + len {
                    bytes.resize(off + len, 0);
                }
                bytes[off..off + len].copy_from_slice(&data);
            }
            4 => {
                // truncate
                let Some(Node::File(bytes)) = model.get_mut(&path) else {
                    continue;
                };
                let size = rng.below(50_000);
                let ino = walk(&lfs, &path).expect("file").ino;
                lfs.setattr(
                    ino,
                    SetAttr {
                        size: Some(size),
                        ..SetAttr::default()
                    },
                )
                .expect("truncate");
                bytes.resize(size as usize, 0);
            }
            5 => {
                // unlink or rmdir
                let r = if !parent_exists {
                    continue;
                } else {
                    match model.get(&path) {
                        Some(Node::Dir) => {
                            lfs.rmdir(parent_ino(&lfs, &path), name_of(&path).as_bytes())
                        }
                        _ => lfs.unlink(parent_ino(&lfs, &path), name_of(&path).as_bytes()),
                    }
                };
                match model.get(&path) {
                    None => assert!(matches!(r, Err(LfsError::NotFound)), "{path}: {r:?}"),
                    Some(Node::File(_)) => {
                        r.expect("unlink");
                        model.remove(&path);
                    }
                    Some(Node::Dir) => {
                        let prefix = format!("{path}/");
                        if model.keys().any(|k| k.starts_with(&prefix)) {
                            assert!(matches!(r, Err(LfsError::NotEmpty)), "{path}: {r:?}");
                        } else {
                            r.expect("rmdir");
                            model.remove(&path);
                        }
                    }
                }
            }
            6 => {
                // rename a file
                let to = random_path(&mut rng);
                let to_parent_ok =
                    parent_of(&to).is_empty() || model.get(parent_of(&to)) == Some(&Node::Dir);
                let Some(Node::File(_)) = model.get(&path) else {
                    continue;
                };
                if !to_parent_ok || matches!(model.get(&to), Some(Node::Dir)) {
                    continue;
                }
                lfs.rename(
                    parent_ino(&lfs, &path),
                    name_of(&path).as_bytes(),
                    parent_ino(&lfs, &to),
                    name_of(&to).as_bytes(),
                    RenameFlags::default(),
                )
                .expect("rename");
                let node = model.remove(&path).expect("source");
                model.insert(to, node);
            }
            7 => {
                // mkdir of one of the fixed directories
                let d = DIRS[1 + rng.below(2) as usize];
                let parent_ok =
                    parent_of(d).is_empty() || model.get(parent_of(d)) == Some(&Node::Dir);
                if !parent_ok {
                    continue;
                }
                let r = lfs.mkdir(parent_ino(&lfs, d), name_of(d).as_bytes(), 0o755, 0, 0);
                if model.contains_key(d) {
                    assert!(matches!(r, Err(LfsError::Exists)), "{d}: {r:?}");
                } else {
                    r.expect("mkdir");
                    model.insert(d.to_string(), Node::Dir);
                }
            }
            8 => {
                // read a random range
                let Some(Node::File(bytes)) = model.get(&path) else {
                    continue;
                };
                let off = rng.below(50_000);
                let len = rng.below(20_000) as u32;
                let ino = walk(&lfs, &path).expect("file").ino;
                let got = lfs.read(ino, off, len).expect("read");
                let start = (off as usize).min(bytes.len());
                let end = (off as usize + len as usize).min(bytes.len());
                assert!(got == bytes[start..end], "{path} read {off}+{len}");
            }
            _ => {
                if let Some(Node::File(_)) = model.get(&path) {
                    let ino = walk(&lfs, &path).expect("file").ino;
                    lfs.fsync(ino, false).expect("fsync");
                }
            }
        }
        if remount_every > 0 && step % remount_every == remount_every - 1 {
            (lfs, device) = remount(lfs, device);
            verify(&lfs, &model);
        }
    }
    verify(&lfs, &model);
    assert_clean(&lfs);
    let (lfs, _device) = remount(lfs, device);
    verify(&lfs, &model);
}

/// A few thousand random operations match the model, with remounts in between.
#[test]
fn random_ops_match_model() {
    run(0x5EED, 3000, 400);
}

/// A second seed, remounting often.
#[test]
fn random_ops_match_model_frequent_remounts() {
    run(0xC0FFEE, 1500, 97);
}

/// Hundreds of thousands of random operations (run with --ignored).
#[test]
#[ignore]
fn random_ops_match_model_long() {
    for seed in 1..=5 {
        run(seed * 7919, 100_000, 5000);
    }
}
