//! Each ZNS status code (1B8h..1BFh) and each generic status the zone manager produces is
//! caused here by the situation that must cause it.

use common::zns::{ReportFilter, ZoneAction, ZoneState};
use common::Status;
use firmware::nand::PageAddr;
use firmware::zns::ZoneConfig;
use testkit::zns_model::{self, config, formatted, page, pages, reboot};

const Z: u64 = 16; // zone size in LBAs of `config()`

/// A write that runs past the zone capacity fails with Zone Boundary Error.
#[test]
fn zone_boundary_error_on_write_past_capacity() {
    let mut m = formatted(config());
    m.write(0, &pages(&[1, 2, 3, 4, 5, 6, 7, 8])).unwrap();
    assert_eq!(
        m.write(8, &pages(&[9, 10, 11, 12, 13])),
        Err(Status::ZoneBoundaryError)
    );
    assert_eq!(m.zone(0).unwrap().wp, 8);
}

/// Without cross-zone reads, a read spanning two zones fails with Zone Boundary Error.
#[test]
fn zone_boundary_error_on_read_across_zones() {
    let cfg = ZoneConfig {
        cross_zone_read: false,
        ..config()
    };
    let mut m = formatted(cfg);
    let mut buf = vec![0u8; 2 * 4096];
    assert_eq!(m.read(Z - 1, &mut buf), Err(Status::ZoneBoundaryError));
    assert_eq!(m.read(Z - 2, &mut buf), Ok(()));
}

/// Writing to a Full zone fails with Zone Full.
#[test]
fn zone_full() {
    let mut m = formatted(config());
    m.zone_action(Z, ZoneAction::Finish, false).unwrap();
    assert_eq!(m.write(Z, &page(1)), Err(Status::ZoneFull));
    assert!(matches!(m.append(Z, &page(1)), Err(Status::ZoneFull)));
}

/// After a program failure the zone is Read Only and writes fail with Zone Read Only.
#[test]
fn zone_read_only() {
    let mut m = formatted(config());
    m.write(0, &page(1)).unwrap();
    let block = m.slot_block(0, 1);
    assert_eq!(block, None);
    // Slot 1 is bound at the second write: make that block fail its first program.
    let next = firmware::nand::BlockId(17);
    m.nand_mut().fail_next_program(PageAddr::new(next, 0));
    assert_eq!(m.write(1, &page(2)), Err(Status::WriteFault));
    assert_eq!(m.zone(0).unwrap().state, ZoneState::ReadOnly);
    assert_eq!(m.write(1, &page(3)), Err(Status::ZoneReadOnly));
}

/// Reading or writing an Offline zone fails with Zone Offline.
#[test]
fn zone_offline() {
    let mut m = formatted(config());
    // Zone 1's slot 0 takes the least-worn free block of die 0: block 1.
    m.nand_mut()
        .fail_next_program(PageAddr::new(firmware::nand::BlockId(1), 0));
    assert_eq!(m.write(Z, &page(1)), Err(Status::WriteFault));
    m.zone_action(Z, ZoneAction::Offline, false).unwrap();
    let mut buf = vec![0u8; 4096];
    assert_eq!(m.read(Z, &mut buf), Err(Status::ZoneOffline));
    assert_eq!(m.write(Z, &page(1)), Err(Status::ZoneOffline));
    // A read starting in a good zone and crossing into the offline one fails too.
    assert_eq!(m.read(Z - 1, &mut [0u8; 8192]), Err(Status::ZoneOffline));
    assert_eq!(m.read(Z - 1, &mut buf), Ok(()));
}

/// A write that is not at the write pointer fails with Zone Invalid Write.
#[test]
fn zone_invalid_write() {
    let mut m = formatted(config());
    assert_eq!(m.write(1, &page(1)), Err(Status::ZoneInvalidWrite));
    m.write(0, &page(1)).unwrap();
    assert_eq!(m.write(0, &page(2)), Err(Status::ZoneInvalidWrite));
}

/// Activating a zone beyond max active fails with Too Many Active Zones.
#[test]
fn too_many_active_zones() {
    let mut m = formatted(config()); // max_open 3, max_active 4
    for z in 0..4 {
        m.write(z * Z, &page(1)).unwrap();
    }
    assert_eq!(m.write(4 * Z, &page(1)), Err(Status::TooManyActiveZones));
    assert_eq!(
        m.zone_action(4 * Z, ZoneAction::Open, false),
        Err(Status::TooManyActiveZones)
    );
    m.zone_action(0, ZoneAction::Finish, false).unwrap();
    assert_eq!(m.write(4 * Z, &page(1)), Ok(()));
}

/// Explicitly opened zones are never auto-closed: a further open fails with Too Many Open
/// Zones, while an implicit open closes the oldest implicitly opened zone.
#[test]
fn too_many_open_zones_and_auto_close() {
    let mut m = formatted(config());
    m.write(0, &page(1)).unwrap(); // implicitly opened, oldest
    m.write(Z, &page(2)).unwrap(); // implicitly opened
    m.zone_action(2 * Z, ZoneAction::Open, false).unwrap();
    m.write(3 * Z, &page(3)).unwrap(); // at the limit: zone 0 is closed
    assert_eq!(m.zone(0).unwrap().state, ZoneState::Closed);
    assert_eq!(m.zone(1).unwrap().state, ZoneState::ImplicitlyOpened);
    m.zone_action(Z, ZoneAction::Open, false).unwrap();
    m.zone_action(3 * Z, ZoneAction::Open, false).unwrap();
    // Three explicitly opened zones: nothing may be closed behind the host's back.
    assert_eq!(
        m.zone_action(0, ZoneAction::Open, false),
        Err(Status::TooManyOpenZones)
    );
    assert_eq!(m.write(1, &page(4)), Err(Status::TooManyOpenZones));
    assert_eq!(m.zone(2).unwrap().state, ZoneState::ExplicitlyOpened);
}

/// Transitions the specification forbids fail with Invalid Zone State Transition.
#[test]
fn invalid_zone_state_transition() {
    let mut m = formatted(config());
    m.zone_action(0, ZoneAction::Finish, false).unwrap();
    assert_eq!(
        m.zone_action(0, ZoneAction::Open, false),
        Err(Status::InvalidZoneStateTransition)
    );
    assert_eq!(
        m.zone_action(0, ZoneAction::Close, false),
        Err(Status::InvalidZoneStateTransition)
    );
    assert_eq!(
        m.zone_action(Z, ZoneAction::Offline, false),
        Err(Status::InvalidZoneStateTransition)
    );
    // Zone 1's slot 0 takes the least-worn free block of die 0: block 1.
    m.nand_mut()
        .fail_next_program(PageAddr::new(firmware::nand::BlockId(1), 0));
    assert_eq!(m.write(Z, &page(1)), Err(Status::WriteFault));
    assert_eq!(m.zone(1).unwrap().state, ZoneState::ReadOnly);
    assert_eq!(
        m.zone_action(Z, ZoneAction::Reset, false),
        Err(Status::InvalidZoneStateTransition)
    );
    assert_eq!(
        m.zone_action(Z, ZoneAction::Finish, false),
        Err(Status::InvalidZoneStateTransition)
    );
}

/// Malformed commands fail with Invalid Field: appends not at a zone start or above ZASL,
/// transfers above MDTS or not a whole number of LBAs, zone actions inside a zone.
#[test]
fn invalid_field() {
    let mut m = formatted(config()); // zasl 4, mdts 8
    assert_eq!(m.append(1, &page(1)), Err(Status::InvalidField));
    assert_eq!(
        m.append(0, &pages(&[1, 2, 3, 4, 5])),
        Err(Status::InvalidField)
    );
    assert_eq!(m.write(0, &pages(&[1; 9])), Err(Status::InvalidField));
    assert_eq!(m.write(0, &[0u8; 100]), Err(Status::InvalidField));
    assert_eq!(m.read(0, &mut []), Err(Status::InvalidField));
    assert_eq!(
        m.zone_action(3, ZoneAction::Reset, false),
        Err(Status::InvalidField)
    );
}

/// Commands past the end of the namespace fail with LBA Out of Range.
#[test]
fn lba_out_of_range() {
    let mut m = formatted(config());
    let nsze = m.identify().nsze_lbas;
    assert_eq!(
        m.read(nsze - 1, &mut [0u8; 8192]),
        Err(Status::LbaOutOfRange)
    );
    assert_eq!(m.write(nsze, &page(1)), Err(Status::LbaOutOfRange));
    assert_eq!(
        m.zone_action(nsze, ZoneAction::Open, false),
        Err(Status::LbaOutOfRange)
    );
    assert!(matches!(
        m.report(nsze, ReportFilter::All, 1, false),
        Err(Status::LbaOutOfRange)
    ));
}

/// A page that cannot be read back fails with Unrecovered Read Error.
#[test]
fn unrecovered_read_error() {
    let mut m = formatted(config());
    m.write(0, &page(1)).unwrap();
    let block = m.slot_block(0, 0).unwrap();
    m.nand_mut().fail_next_read(PageAddr::new(block, 0));
    let mut buf = vec![0u8; 4096];
    assert_eq!(m.read(0, &mut buf), Err(Status::UnrecoveredReadError));
    assert_eq!(m.read(0, &mut buf), Ok(()));
    assert_eq!(buf, page(1));
}

/// After a power loss every command fails with Command Aborted until the next mount.
#[test]
fn command_aborted_after_power_loss() {
    let mut m = formatted(config());
    m.nand_mut().cut_power_after_ops(0);
    assert_eq!(m.write(0, &page(1)), Err(Status::CommandAborted));
    assert_eq!(m.read(0, &mut [0u8; 4096]), Err(Status::CommandAborted));
    assert_eq!(
        m.zone_action(0, ZoneAction::Reset, true),
        Err(Status::CommandAborted)
    );
    let mut m = reboot(m, config());
    assert_eq!(m.zone(0).unwrap().state, ZoneState::Empty);
    assert_eq!(m.write(0, &page(1)), Ok(()));
}

/// Zone Append returns the LBA it wrote at, and reads return the data there.
#[test]
fn append_returns_lba() {
    let mut m = formatted(config());
    assert_eq!(m.append(Z, &pages(&[1, 2])), Ok(Z));
    assert_eq!(m.append(Z, &page(3)), Ok(Z + 2));
    let mut buf = vec![0u8; 3 * 4096];
    m.read(Z, &mut buf).unwrap();
    assert_eq!(buf, pages(&[1, 2, 3]));
}

/// Identify reports the layout: zone size a power of two above the capacity, limits, no
/// volatile write cache.
#[test]
fn identify() {
    let m = formatted(config());
    let id = m.identify();
    assert_eq!(
        (id.zone_size_lbas, id.zone_cap_lbas, id.nr_zones),
        (16, 12, 14)
    );
    assert_eq!((id.max_open, id.max_active, id.zasl_lbas), (3, 4, 4));
    assert_eq!(id.nsze_lbas, 14 * 16);
    assert!(!id.volatile_write_cache);
    let d = ZoneConfig::for_geometry(&zns_model::GEOMETRY);
    assert_eq!((d.max_open, d.max_active), (14, 14));
}

/// Reports start at the zone holding the LBA, filter by state and honour partial reports.
#[test]
fn report_filters_and_partial() {
    let mut m = formatted(config());
    m.write(Z, &page(1)).unwrap();
    m.write(3 * Z, &page(2)).unwrap();
    m.zone_action(3 * Z, ZoneAction::Close, false).unwrap();
    let r = m.report(Z + 5, ReportFilter::Empty, 2, false).unwrap();
    assert_eq!(r.nr_zones, 11);
    assert_eq!(
        r.descriptors.iter().map(|d| d.zslba).collect::<Vec<_>>(),
        [2 * Z, 4 * Z]
    );
    let r = m.report(0, ReportFilter::Empty, 2, true).unwrap();
    assert_eq!(r.nr_zones, 2);
    let r = m.report(0, ReportFilter::Closed, 10, false).unwrap();
    assert_eq!((r.nr_zones, r.descriptors[0].wp), (1, 3 * Z + 1));
}
