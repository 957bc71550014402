//! The controller's ZNS and admin commands, each through `Controller::submit` with a
//! `SliceDma`: data round trips, status mapping, reports and identify data decoded from the
//! bytes the host receives, and reboots over the same NAND.

use crate::support::{Dev, GEOMETRY, LBA};
use common::command::{Command, CommandId, CommandResult, DeviceHealth};
use common::nvme::{self, QueueType, Sqe};
use common::zns::{IdentifyZns, ReportFilter, ZoneAction, ZoneDescriptor, ZoneState};
use common::Status;
use firmware::controller::{ProgramConfig, SliceDma};
use testkit::rng::pattern;

/// Zone size (and capacity) of the test layout: 4 blocks of 64 pages.
const ZONE: u64 = 256;

fn dev() -> Dev {
    Dev::new(ProgramConfig::default())
}

/// Zone Management Receive decoded from the ZNS layout: the number of matching zones and the
/// descriptors the transfer holds.
fn report(
    dev: &mut Dev,
    slba: u64,
    filter: ReportFilter,
    max_zones: u32,
    partial: bool,
) -> (u64, Vec<ZoneDescriptor>) {
    let mut buf = vec![0u8; 4096];
    let done = dev.submit(
        Command::ZoneManagementReceive {
            slba,
            filter,
            max_zones,
            partial,
        },
        &mut buf,
    );
    assert_eq!(done.status, Status::Success);
    let CommandResult::Transferred(n) = done.result else {
        panic!("report returned {:?}", done.result);
    };
    assert_eq!(
        (n as usize - nvme::ZONE_REPORT_HEADER_BYTES) % nvme::ZONE_DESCRIPTOR_BYTES,
        0,
        "a header and whole descriptors"
    );
    let (nr_zones, zones) = nvme::read_zone_report(&buf[..n as usize]).expect("a zone report");
    let zones = zones.map(|z| z.expect("a zone descriptor")).collect();
    (nr_zones, zones)
}

fn zone_send(dev: &mut Dev, slba: u64, action: ZoneAction, select_all: bool) -> Status {
    dev.status(Command::ZoneManagementSend {
        slba,
        action,
        select_all,
    })
}

fn health(dev: &mut Dev) -> DeviceHealth {
    let mut buf = vec![0u8; 256];
    let done = dev.submit(Command::GetHealth, &mut buf);
    assert_eq!(done.status, Status::Success);
    let CommandResult::Transferred(n) = done.result else {
        panic!("health returned {:?}", done.result);
    };
    postcard::from_bytes(&buf[..n as usize]).expect("device health")
}

/// NVMe's Identify (06h), as an entry laid out by hand from the specification (CNS in byte
/// 40, CSI in byte 47), answers the specifications' structures; a structure the device does
/// not have is an invalid field.
#[test]
fn identify_answers_the_specifications_structures() {
    let mut dev = dev();
    let id = dev.ctrl.identify();
    let mut identify_ns = |nsid: u8, cns: u8, csi: u8| {
        let mut b = [0u8; nvme::SQE_BYTES];
        b[0] = 0x06;
        b[2] = 0x42; // command identifier 42h
        b[4] = nsid;
        b[40] = cns;
        b[47] = csi;
        let mut data = vec![0u8; 4096];
        let done = dev
            .ctrl
            .submit(
                0,
                QueueType::Admin,
                &Sqe::from_bytes(&b),
                &mut SliceDma::new(&mut data),
            )
            .expect("identify completes at once");
        assert_eq!(done.cid, CommandId(0x42));
        (done.status, data)
    };
    // The zoned namespace's structures are namespace 1's only.
    assert_eq!(identify_ns(2, 0x00, 0x00).0, Status::InvalidNamespace);
    assert_eq!(identify_ns(0xff, 0x05, 0x02).0, Status::InvalidNamespace);
    let mut identify = |cns: u8, csi: u8| identify_ns(1, cns, csi);
    let (status, ns) = identify(0x00, 0x00);
    assert_eq!(status, Status::Success);
    assert_eq!(ns[..8], id.nsze_lbas.to_le_bytes(), "NSZE");
    assert_eq!(ns[130], 12, "LBA format 0: 2^12-byte blocks");
    let (status, ctrl) = identify(0x01, 0x00);
    assert_eq!(status, Status::Success);
    assert_eq!(&ctrl[4..7], b"csd", "serial number");
    assert_eq!(
        (ctrl[512], ctrl[513], ctrl[516]),
        (0x66, 0x44, 1),
        "SQES, CQES, NN"
    );
    let (status, zns) = identify(0x05, 0x02);
    assert_eq!(status, Status::Success);
    assert_eq!(zns[2816..2824], ZONE.to_le_bytes(), "zone size");
    let (status, zctrl) = identify(0x06, 0x02);
    assert_eq!(status, Status::Success);
    let zasl = u64::from(id.zasl_lbas) * u64::from(id.lba_bytes) / 4096;
    assert_eq!(1u64 << zctrl[0], zasl, "ZASL");
    for (cns, csi) in [(0x05, 0x00), (0x06, 0x04), (0x02, 0x00), (0xff, 0x02)] {
        assert_eq!(
            identify(cns, csi).0,
            Status::InvalidField,
            "CNS {cns:02x}h CSI {csi:02x}h"
        );
    }
}

/// Identify sends the zone manager's identify data with the controller's program resources,
/// postcard-encoded, by DMA.
#[test]
fn identify_decodes_to_the_zone_managers_identify() {
    let mut dev = dev();
    let mut buf = vec![0u8; 512];
    let done = dev.submit(Command::Identify, &mut buf);
    assert_eq!(done.status, Status::Success);
    let CommandResult::Transferred(n) = done.result else {
        panic!("identify returned {:?}", done.result);
    };
    let id: IdentifyZns = postcard::from_bytes(&buf[..n as usize]).unwrap();
    assert_eq!(id, dev.ctrl.identify());
    let config = ProgramConfig::default();
    let programs = common::program::ProgramResources {
        slots: config.slots,
        range_sets: config.range_sets,
        max_extents: config.max_extents,
        max_output_bytes: config.max_output_bytes,
    };
    assert_eq!(
        id,
        IdentifyZns {
            programs,
            ..dev.ctrl.zones().identify()
        }
    );
    assert_eq!(id.zone_size_lbas, ZONE);
    assert_eq!(id.nr_zones, 15);
    assert_eq!(id.nand, GEOMETRY.info());
}

/// Write, Read and Zone Append round-trip data; the append's LBA is the write pointer; a
/// reboot over the same NAND reads every block back.
#[test]
fn write_read_append_round_trip_and_survive_reboot() {
    let mut dev = dev();
    let a = pattern(1, 3 * LBA);
    let b = pattern(2, 2 * LBA);
    let c = pattern(3, 5 * LBA);
    assert_eq!(dev.write(0, &a), Status::Success);
    assert_eq!(
        dev.append(0, &b),
        Ok(3),
        "append lands at the write pointer"
    );
    assert_eq!(dev.append(ZONE, &c), Ok(ZONE));
    assert_eq!(dev.write(ZONE + 5, &a), Status::Success);
    assert_eq!(dev.status(Command::Flush), Status::Success);
    assert_eq!(dev.read(0, 3).unwrap(), a);
    assert_eq!(dev.read(3, 2).unwrap(), b);
    assert_eq!(dev.read(ZONE, 5).unwrap(), c);
    assert_eq!(
        dev.read(5, 2).unwrap(),
        vec![0u8; 2 * LBA],
        "unwritten reads as zeros"
    );

    let mut dev = dev.reboot(ProgramConfig::default());
    assert_eq!(dev.read(0, 3).unwrap(), a);
    assert_eq!(dev.read(3, 2).unwrap(), b);
    assert_eq!(dev.read(ZONE, 5).unwrap(), c);
    assert_eq!(dev.read(ZONE + 5, 3).unwrap(), a);
    assert_eq!(
        dev.append(0, &b),
        Ok(5),
        "the write pointer is rebuilt from media"
    );
    assert_eq!(dev.read(5, 2).unwrap(), b);
}

/// Zone and range errors come back with their NVMe status, and a failed write changes nothing.
#[test]
fn io_errors_map_to_their_status() {
    let mut dev = dev();
    let one = pattern(4, LBA);
    assert_eq!(dev.write(0, &one), Status::Success);
    assert_eq!(
        dev.write(5, &one),
        Status::ZoneInvalidWrite,
        "ahead of the wp"
    );
    assert_eq!(
        dev.write(0, &one),
        Status::ZoneInvalidWrite,
        "behind the wp"
    );
    assert_eq!(
        dev.append(3, &one),
        Err(Status::InvalidField),
        "append not at zslba"
    );
    assert_eq!(
        dev.append(0, &pattern(5, 9 * LBA)),
        Err(Status::InvalidField),
        "append over zasl"
    );
    assert_eq!(dev.read(15 * ZONE, 1), Err(Status::LbaOutOfRange));
    assert_eq!(dev.read(0, 17), Err(Status::InvalidField), "read over mdts");
    assert_eq!(dev.read(0, 0), Err(Status::InvalidField), "zero blocks");
    assert_eq!(
        dev.write(ZONE - 1, &pattern(6, 2 * LBA)),
        Status::ZoneInvalidWrite
    );

    // Crossing the capacity: fill zone 2 to one block short, then write two.
    let zslba = 2 * ZONE;
    for k in 0..(ZONE / 16 - 1) {
        assert_eq!(
            dev.write(zslba + 16 * k, &pattern(k, 16 * LBA)),
            Status::Success
        );
    }
    assert_eq!(
        dev.write(zslba + ZONE - 16, &pattern(7, 15 * LBA)),
        Status::Success
    );
    assert_eq!(
        dev.write(zslba + ZONE - 1, &pattern(8, 2 * LBA)),
        Status::ZoneBoundaryError
    );
    assert_eq!(dev.write(zslba + ZONE - 1, &one), Status::Success);
    assert_eq!(dev.append(zslba, &one), Err(Status::ZoneFull));

    // A finished zone is full; an Offline action on an Empty zone is no valid transition.
    assert_eq!(
        zone_send(&mut dev, 0, ZoneAction::Finish, false),
        Status::Success
    );
    assert_eq!(dev.write(1, &one), Status::ZoneFull);
    assert_eq!(
        zone_send(&mut dev, 3 * ZONE, ZoneAction::Offline, false),
        Status::InvalidZoneStateTransition
    );
    assert_eq!(
        zone_send(&mut dev, 15 * ZONE, ZoneAction::Open, false),
        Status::LbaOutOfRange
    );

    // Four explicitly opened zones use up max_open: a write to a fifth cannot open it.
    for z in 3..7 {
        assert_eq!(
            zone_send(&mut dev, z * ZONE, ZoneAction::Open, false),
            Status::Success
        );
    }
    assert_eq!(dev.write(7 * ZONE, &one), Status::TooManyOpenZones);
    assert_eq!(dev.read(7 * ZONE, 1).unwrap(), vec![0u8; LBA]);
    assert_eq!(dev.read(0, 1).unwrap(), one, "the device keeps serving");
}

/// A host buffer smaller than the transfer is a Data Transfer Error, for every command that
/// moves data, and the command has no effect.
#[test]
fn dma_buffer_too_small_is_a_data_transfer_error() {
    let mut dev = dev();
    let mut small = vec![0u8; LBA];
    let transfers = [
        Command::Read { slba: 0, nlb: 2 },
        Command::Write { slba: 0, nlb: 2 },
        Command::ZoneAppend { zslba: 0, nlb: 2 },
    ];
    for command in transfers {
        let done = dev.submit(command, &mut small);
        assert_eq!(done.status, Status::DataTransferError, "{command:?}");
    }
    let mut tiny = vec![0u8; 4];
    for command in [
        Command::Identify,
        Command::GetHealth,
        Command::ZoneManagementReceive {
            slba: 0,
            filter: ReportFilter::All,
            max_zones: 8,
            partial: false,
        },
    ] {
        let done = dev.submit(command, &mut tiny);
        assert_eq!(done.status, Status::DataTransferError, "{command:?}");
    }
    let (_, zones) = report(&mut dev, 0, ReportFilter::All, 1, false);
    assert_eq!(zones[0].state, ZoneState::Empty, "nothing was written");
    assert_eq!(zones[0].wp, 0);
}

/// Entries the device cannot serve complete with the status that names why, and change
/// nothing: an opcode it does not have, a namespace it does not have, a zone action it does
/// not know, and an Execute Program whose parameter data is missing from host memory.
#[test]
fn hostile_entries_are_refused() {
    let mut dev = dev();
    let mut data = pattern(9, LBA);
    let write = |cid, nsid| {
        let mut sqe = Sqe::new(nvme::opcode::WRITE, cid, nsid);
        sqe.cdw = [0; 6];
        sqe
    };
    let mut unknown = write(1, 1);
    unknown.opcode = 0x7f;
    let mut bad_action = write(2, 1);
    bad_action.opcode = nvme::opcode::ZONE_MANAGEMENT_SEND;
    bad_action.cdw[3] = 0x0f;
    let mut execute = write(4, nvme::cp::COMPUTE_NSID);
    execute.opcode = nvme::cp::EXECUTE_PROGRAM;
    let cases = [
        (QueueType::Io, unknown, Status::InvalidOpcode),
        (QueueType::Io, bad_action, Status::InvalidField),
        (QueueType::Io, write(3, 9), Status::InvalidNamespace),
        (QueueType::Admin, write(5, 1), Status::InvalidOpcode),
        (QueueType::Io, execute, Status::DataTransferError),
    ];
    for (queue, sqe, status) in cases {
        let done = dev
            .ctrl
            .submit(0, queue, &sqe, &mut SliceDma::new(&mut []))
            .expect("a refused entry completes at once");
        assert_eq!(
            (done.cid, done.status),
            (CommandId(sqe.cid), status),
            "{sqe:?}"
        );
        assert_eq!(done.result, CommandResult::None);
    }
    assert_eq!(
        dev.read(0, 1).unwrap(),
        vec![0u8; LBA],
        "nothing was written"
    );
    // The same write on namespace 1 with its data lands.
    let done = dev
        .ctrl
        .submit(
            0,
            QueueType::Io,
            &write(6, 1),
            &mut SliceDma::new(&mut data),
        )
        .expect("a write completes");
    assert_eq!(done.status, Status::Success);
    assert_eq!(dev.read(0, 1).unwrap(), data);
}

/// Zone Management Send moves zones through their states; Receive reports them (filters,
/// partial reports, starting zone) in bytes that decode to the header and descriptors; a
/// reboot reports the same zones.
#[test]
fn zone_management_send_and_receive() {
    let mut dev = dev();
    let four = pattern(10, 4 * LBA);
    assert_eq!(dev.write(0, &four), Status::Success);
    assert_eq!(dev.append(ZONE, &four), Ok(ZONE));
    assert_eq!(
        zone_send(&mut dev, 0, ZoneAction::Close, false),
        Status::Success
    );
    assert_eq!(
        zone_send(&mut dev, ZONE, ZoneAction::Finish, false),
        Status::Success
    );
    assert_eq!(
        zone_send(&mut dev, 2 * ZONE, ZoneAction::Open, false),
        Status::Success
    );

    let (nr_zones, zones) = report(&mut dev, 0, ReportFilter::All, 4, false);
    assert_eq!(nr_zones, 15);
    assert_eq!(zones.len(), 4);
    let states: Vec<ZoneState> = zones.iter().map(|d| d.state).collect();
    assert_eq!(
        states,
        [
            ZoneState::Closed,
            ZoneState::Full,
            ZoneState::ExplicitlyOpened,
            ZoneState::Empty
        ]
    );
    assert_eq!(zones[0].wp, 4);
    assert_eq!(zones[2].wp, 2 * ZONE);
    assert_eq!(zones[3].zslba, 3 * ZONE);
    assert!(zones.iter().all(|d| d.zcap == ZONE));

    let (nr_zones, zones) = report(&mut dev, ZONE, ReportFilter::Full, 8, false);
    assert_eq!((nr_zones, zones.len()), (1, 1));
    assert_eq!(zones[0].zslba, ZONE);
    let (nr_zones, zones) = report(&mut dev, 0, ReportFilter::Empty, 2, false);
    assert_eq!((nr_zones, zones.len()), (12, 2));
    let (nr_zones, zones) = report(&mut dev, 0, ReportFilter::Empty, 2, true);
    assert_eq!((nr_zones, zones.len()), (2, 2));
    let (nr_zones, _) = report(&mut dev, 5 * ZONE + 3, ReportFilter::All, 0, false);
    assert_eq!(nr_zones, 10, "from the zone holding slba on");

    let mut dev = dev.reboot(ProgramConfig::default());
    let (_, after) = report(&mut dev, 0, ReportFilter::All, 2, false);
    assert_eq!(after[0].state, ZoneState::Closed);
    assert_eq!(after[0].wp, 4);
    assert_eq!(after[1].state, ZoneState::Full);

    assert_eq!(
        zone_send(&mut dev, 0, ZoneAction::Reset, true),
        Status::Success
    );
    let (nr_zones, _) = report(&mut dev, 0, ReportFilter::Empty, 0, false);
    assert_eq!(nr_zones, 15, "reset all empties every zone");
    assert_eq!(dev.read(0, 1).unwrap(), vec![0u8; LBA]);
    let mut dev = dev.reboot(ProgramConfig::default());
    let (nr_zones, _) = report(&mut dev, 0, ReportFilter::Empty, 0, false);
    assert_eq!(nr_zones, 15, "the reset survives a reboot");
}

/// Get Health decodes and counts blocks as zones bind and erase them.
#[test]
fn health_decodes_and_tracks_wear() {
    let mut dev = dev();
    let before = health(&mut dev);
    assert_eq!(before.total_blocks, GEOMETRY.blocks());
    assert_eq!(before.bad_blocks, 0);
    assert_eq!(
        before.free_blocks,
        GEOMETRY.blocks() - 2,
        "all but the metadata log"
    );
    // Format erased every block once.
    assert_eq!((before.erase_min, before.erase_max), (1, 1));
    assert_eq!(before.erase_total, u64::from(GEOMETRY.blocks()));

    assert_eq!(dev.write(0, &pattern(11, 4 * LBA)), Status::Success);
    let after = health(&mut dev);
    assert_eq!(
        after.free_blocks,
        before.free_blocks - 4,
        "one block per die bound"
    );
    // Binding erased those four blocks once more.
    assert_eq!(after.erase_total, before.erase_total + 4);
    assert_eq!((after.erase_min, after.erase_max), (1, 2));
}
