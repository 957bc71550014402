//! Golden I/O counts of a fixed workload, so that changes in write amplification show.

use lfs::{InodeNo, Lfs};
use testkit::{device::*, geometry, rng::pattern};

/// A fixed workload (a directory, 8 files of 10 000 bytes, each fsync'ed, one rewritten,
/// unmount) programs a pinned number of NAND pages and issues a pinned number of commands.
#[test]
fn golden_io_counts() {
    let device = fresh(geometry::small());
    let (programs, commands) = (nand_stats(&device).programs, device.commands());
    let lfs = Lfs::mount(&device).expect("mount");
    let d = lfs.mkdir(InodeNo::ROOT, b"d", 0o755, 0, 0).expect("mkdir");
    for i in 0..8u64 {
        let f = lfs
            .create(d.ino, format!("f{i}").as_bytes(), 0o644, 0, 0)
            .expect("create");
        lfs.write(f.ino, 0, &pattern(i, 10_000)).expect("write");
        lfs.fsync(f.ino, false).expect("fsync");
    }
    let f = lfs.lookup(d.ino, b"f3").expect("f3");
    lfs.write(f.ino, 5000, &pattern(99, 100)).expect("rewrite");
    lfs.fsync(f.ino, false).expect("fsync");
    let fs = lfs.stats().expect("stats");
    lfs.unmount().expect("unmount");
    let programs = nand_stats(&device).programs - programs;
    let commands = device.commands() - commands;
    println!("{fs:?}\nNAND programs {programs}, device commands {commands}");
    // 8 files x 3 blocks + 1 rewritten block; one log block per fsync, the mount's
    // checkpoint (image + record); the unmount's checkpoint is in the device counts.
    // Commands: 26 reads, appends and zone actions, and 22 Flushes: two per fsync (the data
    // before the log records that name it, then the records) and two per checkpoint (the
    // image before its record, then the record), at mount and at unmount.
    assert_eq!(fs.data_write_blocks, 25);
    assert_eq!((fs.meta_blocks, fs.checkpoints), (11, 1));
    assert_eq!(programs, 38, "NAND pages programmed");
    assert_eq!(commands, 48, "device commands");
}
