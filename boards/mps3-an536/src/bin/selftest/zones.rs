//! The zone manager over board-memory NAND: format, zone states and transitions, the open and
//! active limits (with the implicit auto-close), writes at the write pointer, appends, finish
//! and reset, and power-on recovery over the same pages.

use alloc::vec::Vec;

use common::zns::ZoneAction;
use common::Status;
use firmware::nand::sim::SimNand;
use firmware::zns::{ZoneConfig, ZoneManager};
use mps3_an536::store::BOARD_GEOMETRY;
use semihosting::println;

use crate::{pattern, Checks, Said, LBA};

/// The zone manager the self-test runs: NAND in board memory (DDR).
pub type RamZones = ZoneManager<SimNand>;

/// The board's defaults with small limits, so that a few zones reach them.
pub fn config() -> ZoneConfig {
    ZoneConfig {
        max_open: 2,
        max_active: 4,
        ..ZoneConfig::for_geometry(&BOARD_GEOMETRY)
    }
}

/// Runs the zone manager part; returns the manager rebooted over the same NAND.
pub fn run(checks: &mut Checks) -> RamZones {
    println!("-- zone manager over board-memory NAND");
    let mut zm = match ZoneManager::format(SimNand::new(BOARD_GEOMETRY), config()) {
        Ok(zm) => zm,
        Err(e) => fail("format", &e),
    };
    let layout = *zm.layout();
    let id = zm.identify();
    println!(
        "format: {} zones of {} LBAs, capacity {} LBAs, max open {}, max active {}",
        layout.nr_zones, layout.zone_size, layout.zone_cap, id.max_open, id.max_active
    );
    show(&zm, 0);

    // Writes go at the write pointer and implicitly open the zone.
    let mut zone0 = pattern(1, 4 * LBA);
    println!(
        "write zone 0 +0, 4 LBAs: {}",
        Said(zm.write(start(&zm, 0), &zone0))
    );
    show(&zm, 0);
    let stray = pattern(2, LBA);
    println!(
        "write zone 0 +8 (not the write pointer): {}",
        Said(zm.write(start(&zm, 0) + 8, &stray))
    );

    // Appends land at the write pointer and say where.
    let appended = pattern(3, 2 * LBA);
    match zm.append(start(&zm, 0), &appended) {
        Ok(lba) => println!("append zone 0, 2 LBAs: landed at +{}", lba - start(&zm, 0)),
        Err(s) => println!("append zone 0, 2 LBAs: {s}"),
    }
    zone0.extend_from_slice(&appended);
    show(&zm, 0);
    let too_big = pattern(4, (id.zasl_lbas as usize + 1) * LBA);
    println!(
        "append zone 0, {} LBAs (over the append limit): {}",
        id.zasl_lbas + 1,
        Said(zm.append(start(&zm, 0), &too_big).map(|_| ()))
    );

    // The open limit: a new implicit open closes the oldest implicitly opened zone.
    println!(
        "open zone 1: {}",
        Said(action(&mut zm, 1, ZoneAction::Open))
    );
    show(&zm, 1);
    println!(
        "write zone 2 +0, 1 LBA: {}",
        Said(zm.write(start(&zm, 2), &pattern(5, LBA)))
    );
    show(&zm, 0);
    show(&zm, 2);
    println!(
        "open zone 3: {}",
        Said(action(&mut zm, 3, ZoneAction::Open))
    );
    show(&zm, 2);
    show(&zm, 3);
    // Both open zones are explicitly opened now: nothing can be closed to make room.
    let more = pattern(6, 2 * LBA);
    println!(
        "write zone 0 +6 (closed, two explicitly open): {}",
        Said(zm.write(start(&zm, 0) + 6, &more))
    );
    println!(
        "write zone 4 +0 (empty, four active): {}",
        Said(zm.write(start(&zm, 4), &pattern(7, LBA)))
    );
    println!(
        "close zone 1: {}",
        Said(action(&mut zm, 1, ZoneAction::Close))
    );
    show(&zm, 1);
    println!(
        "write zone 0 +6, 2 LBAs: {}",
        Said(zm.write(start(&zm, 0) + 6, &more))
    );
    zone0.extend_from_slice(&more);
    show(&zm, 0);

    // Finish and reset.
    println!(
        "finish zone 2: {}",
        Said(action(&mut zm, 2, ZoneAction::Finish))
    );
    show(&zm, 2);
    println!(
        "write zone 2 +1 (full): {}",
        Said(zm.write(start(&zm, 2) + 1, &pattern(8, LBA)))
    );
    println!(
        "open zone 2 (full): {}",
        Said(action(&mut zm, 2, ZoneAction::Open))
    );
    println!(
        "reset zone 3: {}",
        Said(action(&mut zm, 3, ZoneAction::Reset))
    );
    show(&zm, 3);
    check_data(&mut zm, checks, &zone0, "zone 0 before power-off");

    // Power-on recovery: the NAND comes out of the manager and a new one mounts it.
    println!("-- power off, mount the same NAND");
    let store = zm.into_nand().into_store();
    let mut zm = match ZoneManager::mount(SimNand::with_store(store), config()) {
        Ok(zm) => zm,
        Err(e) => fail("mount", &e),
    };
    for zone in 0..5 {
        show(&zm, zone);
    }
    check_data(&mut zm, checks, &zone0, "zone 0 after power-on");
    println!(
        "write zone 0 +{}, 1 LBA: {}",
        zone0.len() / LBA,
        Said(zm.write(start(&zm, 0) + (zone0.len() / LBA) as u64, &pattern(9, LBA)))
    );
    show(&zm, 0);
    zm
}

/// The first LBA of zone `zone`.
pub fn start(zm: &RamZones, zone: u32) -> u64 {
    zm.layout().zslba(zone)
}

fn action(zm: &mut RamZones, zone: u32, action: ZoneAction) -> Result<(), Status> {
    zm.zone_action(start(zm, zone), action, false)
}

/// Prints zone `zone`'s state and write pointer (relative to its start).
pub fn show(zm: &RamZones, zone: u32) {
    match zm.zone(zone) {
        Some(d) => println!("  zone {zone}: {:?}, wp +{}", d.state, d.wp - d.zslba),
        None => println!("  zone {zone}: no such zone"),
    }
}

/// Reads the start of zone 0 back and compares it with what was written there.
fn check_data(zm: &mut RamZones, checks: &mut Checks, want: &[u8], what: &str) {
    let mut got = Vec::new();
    got.resize(want.len(), 0u8);
    let read = zm.read(start(zm, 0), &mut got);
    let same = read.is_ok() && got == want;
    println!(
        "read {what}, {} LBAs: {}",
        want.len() / LBA,
        if same { "data matches" } else { "data differs" }
    );
    checks.check(same, what);
}

fn fail(what: &str, why: &dyn core::fmt::Debug) -> ! {
    println!("FAIL: {what}: {why:?}");
    mps3_an536::exit(1)
}
