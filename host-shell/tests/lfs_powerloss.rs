//! Power loss at NAND operations during an fsync-heavy workload with the cleaner running:
//! the file system mounts without repair, fsck is clean, every fsync'ed byte is there and
//! every file is in a state it had between operations since its last fsync.

mod lfs_common;

use std::collections::BTreeMap;

use firmware::nand::sim::RamStore;
use host_shell::{
    device::{DeviceOptions, RamDevice},
    lfs::{InodeNo, Lfs, LfsError, SetAttr},
};
use lfs_common::*;

const ROOT: InodeNo = InodeNo::ROOT;
const FILES: usize = 3;

/// Each file's possible states: the last fsync'ed one and every one after it.
type Candidates = BTreeMap<String, Vec<Option<Vec<u8>>>>;

fn push(c: &mut Candidates, name: &str, state: Option<Vec<u8>>) {
    c.entry(name.to_string())
        .or_insert_with(|| vec![None])
        .push(state);
}

/// The workload; stops at the first error (the power cut). Every op's after-state is a
/// candidate before the op runs, so an op cut in flight may be either.
fn workload(lfs: &Lfs, c: &mut Candidates) -> Result<(), LfsError> {
    let mut content: Vec<Option<Vec<u8>>> = vec![None; FILES];
    for step in 0..150u64 {
        let i = (step as usize) % FILES;
        let name = format!("f{i}");
        let ino = match lfs.lookup(ROOT, name.as_bytes()) {
            Ok(a) => a.ino,
            Err(LfsError::NotFound) => {
                content[i] = Some(Vec::new());
                push(c, &name, content[i].clone());
                lfs.create(ROOT, name.as_bytes(), 0o644, 0, 0)?.ino
            }
            Err(e) => return Err(e),
        };
        let bytes = content[i].get_or_insert_with(Vec::new);
        match step % 9 {
            4 => {
                let size = (step * 1777) % 9000;
                bytes.resize(size as usize, 0);
                push(c, &name, content[i].clone());
                lfs.setattr(
                    ino,
                    SetAttr {
                        size: Some(size),
                        ..SetAttr::default()
                    },
                )?;
            }
            7 => {
                content[i] = None;
                push(c, &name, None);
                lfs.unlink(ROOT, name.as_bytes())?;
                continue;
            }
            _ => {
                let off = (step * 3001) % 12_000;
                let data = pattern(step, 1 + ((step * 977) % 9000) as usize);
                let end = off as usize + data.len();
                if bytes.len() < end {
                    bytes.resize(end, 0);
                }
                bytes[off as usize..end].copy_from_slice(&data);
                push(c, &name, content[i].clone());
                lfs.write(ino, off, &data)?;
            }
        }
        if step % 2 == 0 {
            lfs.fsync(ino, false)?;
            // Durable now: only this state (or later ones) may come back.
            c.insert(name.clone(), vec![content[i].clone()]);
        }
        if step % 5 == 0 {
            lfs.gc_step()?;
        }
    }
    Ok(())
}

fn formatted() -> (RamStore, firmware::nand::Geometry) {
    let geometry = tiny_geometry();
    let device = fresh(geometry);
    (device.close().expect("close"), geometry)
}

/// Runs the workload with a cut after `cut` NAND ops (none if `None`); returns the NAND ops
/// the run took.
fn run(store: &RamStore, geometry: firmware::nand::Geometry, cut: Option<u64>) -> u64 {
    let options = DeviceOptions {
        power_cut_after_ops: cut,
        ..DeviceOptions::default()
    };
    let device = RamDevice::mount(store.clone(), zones_for(&geometry), options, "ram")
        .expect("the device mounts");
    let start = device.stats();
    let mut c = Candidates::new();
    let result = Lfs::mount(&device.driver()).and_then(|lfs| {
        let r = workload(&lfs, &mut c);
        if cut.is_none() {
            r.as_ref().expect("the workload runs without a cut");
        }
        r
    });
    let ops = {
        let s = device.stats();
        s.nand_reads + s.nand_programs + s.nand_erases
            - (start.nand_reads + start.nand_programs + start.nand_erases)
    };
    match cut {
        None => {
            result.expect("no cut, no error");
        }
        // The sweep cuts before the workload's last NAND operation, so some call must report
        // the lost power rather than finish as if nothing happened.
        Some(n) => assert!(
            result.is_err(),
            "a cut after {n} ops did not interrupt the workload"
        ),
    }
    // Power back on over the same NAND.
    let device = reboot(device, DeviceOptions::default());
    let lfs = Lfs::mount(&device.driver())
        .unwrap_or_else(|e| panic!("cut after {cut:?} ops: mount failed: {e}"));
    let problems = lfs.fsck().expect("fsck");
    assert!(problems.is_empty(), "cut after {cut:?} ops: {problems:#?}");
    for (name, states) in &c {
        let now = match lfs.lookup(ROOT, name.as_bytes()) {
            Ok(a) => Some(read_all(&lfs, a.ino)),
            Err(LfsError::NotFound) => None,
            Err(e) => panic!("{name}: {e}"),
        };
        assert!(
            states.contains(&now),
            "cut after {cut:?} ops: {name} is in none of its {} possible states (len {:?})",
            states.len(),
            now.as_ref().map(Vec::len)
        );
    }
    ops
}

fn sweep(step: usize) {
    assert!(step > 0);
    let (store, geometry) = formatted();
    let total = run(&store, geometry, None);
    assert!(total > 100, "the workload takes {total} NAND ops");
    for cut in (1..total).step_by(step) {
        run(&store, geometry, Some(cut));
    }
}

/// Every single NAND operation of the workload as the power-cut point: remount, fsck clean,
/// every fsync'ed byte present, every file in its before or after state (about 12 s).
#[test]
fn power_cut_every_op() {
    sweep(1);
}
