//! Bad blocks and wear: failed programs and erases retire blocks, zones degrade as the ZNS
//! specification says, the device keeps serving, and blocks wear evenly.

use common::zns::{ZoneAction, ZoneState};
use common::Status;
use firmware::nand::{BlockId, PageAddr};
use testkit::zns_model::{self, config, formatted, page, pages, reboot, Model};

const Z: u64 = 16;

/// A failed program retires the block, makes the zone Read Only with its data readable (also
/// after a reboot), and the zone can then be taken Offline while other zones keep working.
#[test]
fn program_failure_makes_zone_read_only() {
    let mut m = formatted(config());
    m.write(0, &pages(&[1, 2, 3, 4])).unwrap();
    let block = m.slot_block(0, 0).unwrap();
    m.nand_mut().fail_next_program(PageAddr::new(block, 2));
    assert_eq!(m.write(4, &page(5)), Err(Status::WriteFault));
    assert_eq!(m.zone(0).unwrap().state, ZoneState::ReadOnly);
    assert!(m.is_bad(block));
    m.write(Z, &page(6)).unwrap();

    let mut m = reboot(m, config());
    assert_eq!(m.zone(0).unwrap().state, ZoneState::ReadOnly);
    assert!(m.is_bad(block));
    let mut buf = vec![0u8; 4 * 4096];
    m.read(0, &mut buf).unwrap();
    assert_eq!(buf, pages(&[1, 2, 3, 4]));
    m.zone_action(0, ZoneAction::Offline, true).unwrap();
    assert_eq!(m.zone(0).unwrap().state, ZoneState::Offline);
    let m = reboot(m, config());
    assert_eq!(m.zone(0).unwrap().state, ZoneState::Offline);
    assert_eq!(m.zone(1).unwrap().wp, Z + 1);
}

/// A failed erase when a reset zone is written again retires that block and binds another.
#[test]
fn erase_failure_at_rebind_uses_another_block() {
    let mut m = formatted(config());
    m.write(0, &page(1)).unwrap();
    assert_eq!(m.slot_block(0, 0), Some(BlockId(1)));
    m.zone_action(0, ZoneAction::Reset, false).unwrap();
    // Block 1 now has one more erase than block 2, so block 2 is the least worn.
    m.nand_mut().fail_next_erase(BlockId(2));
    m.write(0, &page(2)).unwrap();
    assert!(m.is_bad(BlockId(2)));
    assert_eq!(m.slot_block(0, 0), Some(BlockId(3)));
    let mut m = reboot(m, config());
    assert!(m.is_bad(BlockId(2)));
    let mut buf = vec![0u8; 4096];
    m.read(0, &mut buf).unwrap();
    assert_eq!(buf, page(2));
}

/// With two grown bad blocks every zone can still be filled, and everything reads back after
/// a reboot: the spare blocks replace the retired ones.
#[test]
fn spares_replace_retired_blocks() {
    let cfg = config();
    let mut m = formatted(cfg);
    m.nand_mut().fail_block(BlockId(1));
    m.nand_mut().fail_block(BlockId(17));
    let id = m.identify();
    let mut model = Model::new(id.nr_zones, id.zone_size_lbas, &cfg);
    let mut seed = 0;
    for z in 0..u64::from(id.nr_zones) {
        for chunk in [8, 4] {
            let seeds: Vec<u32> = (0..chunk)
                .map(|_| {
                    seed += 1;
                    seed
                })
                .collect();
            let wp = z * Z + model.zones[z as usize].written;
            m.write(wp, &pages(&seeds)).unwrap();
            model.write(wp, &seeds, false).unwrap();
        }
        assert_eq!(m.zone(z as u32).unwrap().state, ZoneState::Full);
    }
    assert!(m.is_bad(BlockId(1)) && m.is_bad(BlockId(17)));
    let mut m = reboot(m, cfg);
    model.reboot();
    zns_model::assert_contents(&mut m, &model);
}

/// Binding the least-worn block at each reuse keeps erase counts within one of each other,
/// and the counts survive a reboot.
#[test]
fn wear_levelling_at_reset() {
    let cfg = config();
    let mut m = formatted(cfg);
    for round in 0..40 {
        m.write(0, &pages(&[round, round + 1])).unwrap();
        m.zone_action(0, ZoneAction::Reset, false).unwrap();
    }
    let counts = |m: &zns_model::Manager| -> Vec<u32> {
        let meta = m.layout().meta_blocks;
        (0..32)
            .map(BlockId)
            .filter(|b| !meta.contains(b))
            .map(|b| m.erase_count(b).unwrap())
            .collect()
    };
    let before = counts(&m);
    let (min, max) = (before.iter().min().unwrap(), before.iter().max().unwrap());
    assert!(max - min <= 1, "erase counts {before:?}");
    assert!(*min >= 3, "blocks were not rotated: {before:?}");
    let m = reboot(m, cfg);
    assert_eq!(counts(&m), before);
}
