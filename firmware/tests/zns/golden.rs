//! Golden NAND operation counts for fixed workloads, so that a change in write amplification
//! or in the cost of mounting is noticed.

use common::zns::ZoneAction;
use firmware::nand::sim::{SimNand, Stats};
use firmware::zns::ZoneManager;
use testkit::zns_model::{config, formatted, pages};

const Z: u64 = 16;

fn counts(s: Stats) -> (u64, u64, u64) {
    (s.reads, s.programs, s.erases)
}

/// Writes, appends, reads, a finish and a reset cost exactly these reads, programs, erases.
#[test]
fn golden_workload_counts() {
    let mut m = formatted(config());
    assert_eq!(
        counts(m.nand().stats()),
        (0, 1, 32),
        "format: erase all, one checkpoint"
    );
    m.nand_mut().reset_stats();

    m.append(0, &pages(&[1, 2, 3, 4])).unwrap();
    m.write(Z, &pages(&[5, 6])).unwrap();
    assert_eq!(
        counts(m.nand().stats()),
        (0, 6, 4),
        "one program per LBA, one erase per bind"
    );
    let mut buf = vec![0u8; 6 * 4096];
    m.read(0, &mut buf).unwrap();
    assert_eq!(
        counts(m.nand().stats()),
        (4, 6, 4),
        "reads of unwritten LBAs cost nothing"
    );
    m.zone_action(Z, ZoneAction::Finish, false).unwrap();
    m.zone_action(0, ZoneAction::Reset, false).unwrap();
    m.zone_action(0, ZoneAction::Reset, false).unwrap();
    assert_eq!(
        counts(m.nand().stats()),
        (4, 8, 4),
        "one checkpoint per finish and real reset"
    );
    let s = m.nand().stats();
    assert_eq!(s.program_bytes, 8 * (4096 + 64));
}

/// Mounting reads the metadata log, page 0 of each block and a binary search per zone.
#[test]
fn golden_mount_counts() {
    let mut m = formatted(config());
    m.write(0, &pages(&[1, 2, 3])).unwrap();
    m.write(Z, &pages(&[4; 8])).unwrap();
    m.zone_action(2 * Z, ZoneAction::Finish, false).unwrap();
    let store = m.into_nand().into_store();
    let m = ZoneManager::mount(SimNand::with_store(store), config()).unwrap();
    let got = counts(m.nand().stats());
    // Log: 3 + 1 reads in the active block, 4 in the erased one; page 0 of 30 blocks; for the
    // partly written zones 0 and 1, the binary search of the write pointer and a read of the
    // pages above it in their bound slots (every one must be erased); unbound slots and the
    // finished zone cost no read.
    assert_eq!(got, (8 + 30 + 21, 0, 0), "mount");
}
