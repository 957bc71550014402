use super::*;
use crate::{
    program::{
        ActivateProgram, ExecResult, ExecuteProgram, LoadProgram, MemoryRangeSet, ProgramOp,
        ProgramSlot, ReadOutput, RunStats,
    },
    zns::{IdentifyZns, NandInfo, ZoneDescriptor, ZoneState, ZoneType},
};

/// `command`'s entry on an I/O queue.
fn io_sqe(command: &Command, cid: CommandId, nsid: u32) -> Option<Sqe> {
    let (queue, sqe) = encode(cid, command, 0).ok()?;
    assert_eq!((queue, sqe.nsid), (QueueType::Io, nsid));
    Some(sqe)
}

/// The dword at byte `at` of `b`.
fn dw(b: &[u8; SQE_BYTES], at: usize) -> u32 {
    get_u32(b, at)
}

/// Every command the device has goes to its queue type and comes back unchanged.
#[test]
fn every_command_round_trips() {
    let exec = ExecuteProgram {
        slot: ProgramSlot(3),
        range_set: RangeSetId(0x1234),
        op: ProgramOp::WriteStream,
        offset: 0x1_0000_0001,
        len: 0x2_0000_0002,
        param0: 0x3_0000_0003,
        param1: 0x4_0000_0004,
        fuel: 0x5_0000_0005,
    };
    let commands = [
        (Command::Flush, QueueType::Io),
        (Command::Identify, QueueType::Admin),
        (
            Command::IdentifyStructure {
                cns: cns::CSI_NAMESPACE,
                csi: csi::ZONED,
                nsid: NSID,
            },
            QueueType::Admin,
        ),
        (Command::GetHealth, QueueType::Admin),
        (Command::ReadLog(RangeSetId(9)), QueueType::Admin),
        (
            Command::LoadProgram(LoadProgram {
                slot: ProgramSlot(2),
                offset: 4096,
                total_len: 10_000,
                chunk_len: 4096,
            }),
            QueueType::Admin,
        ),
        (
            Command::ActivateProgram(ActivateProgram {
                slot: ProgramSlot(2),
                activate: false,
            }),
            QueueType::Admin,
        ),
        (
            Command::MemoryRangeSet(MemoryRangeSet {
                id: RangeSetId(7),
                extent_count: 300,
                file_size: 0x1_2345_6789,
                out_cap: 1 << 20,
            }),
            QueueType::Admin,
        ),
        (Command::ExecuteProgram(exec), QueueType::Io),
        (
            Command::ReadOutput(ReadOutput {
                range_set: RangeSetId(7),
                offset: 8,
                len: 512,
            }),
            QueueType::Io,
        ),
    ];
    for (command, queue) in commands {
        let (q, sqe) = encode(CommandId(5), &command, 4096).expect("encodes");
        assert_eq!(q, queue, "{command:?}");
        let back = Sqe::from_bytes(&sqe.to_bytes());
        let params = parameter_data(&command);
        assert_eq!(decode(q, &back, || params), Ok(command));
    }
    // Execute Program without its parameter data in host memory.
    let (q, sqe) = encode(CommandId(5), &Command::ExecuteProgram(exec), 0).unwrap();
    assert_eq!(decode(q, &sqe, || None), Err(SqeError::Data));
}

/// The largest zone report an entry can ask for (NUMD FFFFFFFFh, 0's based) decodes and
/// encodes back to the same entry.
#[test]
fn the_largest_zone_report_round_trips() {
    let mut sqe = Sqe::new(opcode::ZONE_MANAGEMENT_RECEIVE, 3, NSID);
    sqe.set_cdw(12, u32::MAX);
    let command = decode(QueueType::Io, &sqe, || None).expect("a report");
    assert!(matches!(
        command,
        Command::ZoneManagementReceive {
            max_zones: 0x0fff_ffff,
            ..
        }
    ));
    let (_, again) = encode(CommandId(3), &command, 0).expect("it encodes");
    assert_eq!(again, sqe);
}

/// The vendor-specific log pages: Get Log Page (02h) with the log page identifier in
/// CDW10 bits 7:0, the 0's based dword count in bits 31:16, the log specific identifier
/// in CDW11 bits 31:16.
#[test]
fn golden_log_pages() {
    let (queue, sqe) = encode(CommandId(1), &Command::ReadLog(RangeSetId(3)), 4096).unwrap();
    let b = sqe.to_bytes();
    assert_eq!(
        (queue, b[0], dw(&b, 40), dw(&b, 44)),
        (QueueType::Admin, 0x02, 0x03ff_00c2, 0x0003_0000)
    );
    // The same opcode on an I/O queue is a Read.
    assert!(matches!(
        decode(QueueType::Io, &sqe, || None),
        Ok(Command::Read { .. })
    ));
    let mut unknown = sqe;
    unknown.cdw[0] = 0x03ff_0002; // the SMART log: not served here
    assert_eq!(
        decode(QueueType::Admin, &unknown, || None),
        Err(SqeError::LogPage)
    );
    assert_eq!(SqeError::LogPage.status().code(), 0x109, "Invalid Log Page");
}

/// The data transfer direction in an opcode's bits 1:0.
#[test]
fn opcodes_say_which_way_data_goes() {
    let sending = [opcode::WRITE, opcode::ZONE_APPEND, opcode::LOAD_PROGRAM];
    let rest = [opcode::READ, opcode::FLUSH, opcode::PROGRAM_ACTIVATION];
    assert!(sending.into_iter().all(sends_data));
    assert!(!rest.into_iter().any(sends_data));
    assert!(sends_data(opcode::MEMORY_RANGE_SET) && sends_data(cp::EXECUTE_PROGRAM));
    assert!(!sends_data(cp::READ_OUTPUT) && !sends_data(opcode::GET_LOG_PAGE));
}

/// The program commands in the layouts of [`cp`].
#[test]
fn golden_program_commands() {
    let load = Command::LoadProgram(LoadProgram {
        slot: ProgramSlot(2),
        offset: 0x1000,
        total_len: 0x2345,
        chunk_len: 0x1000,
    });
    let b = encode(CommandId(1), &load, 0x1000).unwrap().1.to_bytes();
    // PIND 2, PTYPE C0h, SEL 0 (load); PSIZE; NUMB; LOFF.
    assert_eq!(b[0], 0x85);
    assert_eq!((dw(&b, 40), dw(&b, 44)), (0x00c0_0002, 0x2345));
    assert_eq!((dw(&b, 56), dw(&b, 60)), (0x1000, 0x1000));

    let act = Command::ActivateProgram(ActivateProgram {
        slot: ProgramSlot(2),
        activate: true,
    });
    let b = encode(CommandId(1), &act, 0).unwrap().1.to_bytes();
    assert_eq!((b[0], dw(&b, 40)), (0x88, 0x0001_0002));

    let set = Command::MemoryRangeSet(MemoryRangeSet {
        id: RangeSetId(5),
        extent_count: 2,
        file_size: 8192,
        out_cap: 4096,
    });
    let b = encode(CommandId(1), &set, 24).unwrap().1.to_bytes();
    // SEL 0 (create) in bits 3:0, RSID in bits 31:16.
    assert_eq!((b[0], dw(&b, 40), dw(&b, 44)), (0x89, 0x0005_0000, 2));

    let exec = ExecuteProgram {
        slot: ProgramSlot(1),
        range_set: RangeSetId(5),
        op: ProgramOp::FileJob,
        offset: 0,
        len: 8192,
        param0: 0xaa,
        param1: 0xbb,
        fuel: 1 << 36,
    };
    let (queue, sqe) = encode(CommandId(1), &Command::ExecuteProgram(exec), 0).unwrap();
    let b = sqe.to_bytes();
    // Opcode 01h on the compute namespace (2): CDW2 PIND and RSID, CDW3 no inline ranges,
    // CDW4 and CDW5 zero, CPARAM1 and CPARAM2, the fuel.
    assert_eq!((queue, b[0], dw(&b, 4)), (QueueType::Io, 0x01, 2));
    assert_eq!((dw(&b, 8), dw(&b, 12), sqe.mptr), (0x0005_0001, 0, 0));
    assert_eq!(
        (dw(&b, 40), dw(&b, 48), dw(&b, 56), dw(&b, 60)),
        (0xaa, 0xbb, 0, 0x10)
    );
    let mut params = [0u8; 24];
    params[9] = 0x20; // length 8192
    params[16] = 1; // a file job
    assert_eq!(parameter_data(&Command::ExecuteProgram(exec)), Some(params));
    params[20] = 1; // a reserved byte
    assert_eq!(decode(queue, &sqe, || Some(params)), Err(SqeError::Field));
    // Opcode 01h on the zoned namespace is a Write.
    let mut write = sqe;
    write.nsid = NSID;
    assert!(matches!(
        decode(queue, &write, || None),
        Ok(Command::Write { .. })
    ));
    let mut elsewhere = sqe;
    elsewhere.nsid = 9;
    assert_eq!(decode(queue, &elsewhere, || None), Err(SqeError::Namespace));

    let read = Command::ReadOutput(ReadOutput {
        range_set: RangeSetId(5),
        offset: 0x40,
        len: 0x200,
    });
    let b = encode(CommandId(1), &read, 0x200).unwrap().1.to_bytes();
    // Memory Read (02h) on the memory namespace (3): the starting byte 5 << 32 | 40h.
    assert_eq!((b[0], dw(&b, 4)), (0x02, 3));
    assert_eq!((dw(&b, 40), dw(&b, 44), dw(&b, 48)), (0x40, 5, 0x200));
}

/// A kernel that exited returns its r0 in dwords 0 and 1; its counters and a refused
/// program's reason travel beside the entry.
#[test]
fn program_completions() {
    let run = ExecResult {
        outcome: ExecOutcome::Exited { r0: 0x1_0000_0002 },
        stats: RunStats {
            instructions: 10,
            ..RunStats::default()
        },
    };
    let done = Completion::ok(CommandId(4), CommandResult::Exec(run));
    let (cqe, rest) = completion_entry(&done);
    assert_eq!((cqe.dw0, cqe.dw1, cqe.cid), (2, 1, 4));
    assert_eq!(completion_of(None, &cqe, rest), Some(done));
    let append = Command::ZoneAppend { zslba: 0, nlb: 1 };
    let placed = Completion::ok(CommandId(4), CommandResult::Lba(0x1_0000_0000));
    let (cqe, rest) = completion_entry(&placed);
    assert_eq!(rest, None);
    assert_eq!(completion_of(Some(&append), &cqe, rest), Some(placed));
    let mut unknown = cqe;
    unknown.status = 0x3ff;
    assert_eq!(completion_of(Some(&append), &unknown, None), None);
}

/// A Read as the specification lays it out, byte by byte.
#[test]
fn golden_read() {
    let read = Command::Read {
        slba: 0x1122_3344_5566_7788,
        nlb: 8,
    };
    let sqe = io_sqe(&read, CommandId(0xabcd), 1).expect("a read");
    let mut want = [0u8; SQE_BYTES];
    want[0] = 0x02;
    want[2..4].copy_from_slice(&[0xcd, 0xab]);
    want[4] = 1;
    want[40..48].copy_from_slice(&[0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]);
    want[48] = 7; // 0's based
    assert_eq!(sqe.to_bytes(), want);
    assert_eq!(io_command(&Sqe::from_bytes(&want)), Ok(read));
}

#[test]
fn golden_zone_commands() {
    let append = io_sqe(
        &Command::ZoneAppend {
            zslba: 0x100,
            nlb: 1,
        },
        CommandId(2),
        1,
    )
    .expect("an append");
    let b = append.to_bytes();
    assert_eq!((b[0], b[40], b[41], b[48]), (0x7d, 0x00, 0x01, 0));

    let reset_all = io_sqe(
        &Command::ZoneManagementSend {
            slba: 0,
            action: ZoneAction::Reset,
            select_all: true,
        },
        CommandId(3),
        1,
    )
    .expect("a send");
    let b = reset_all.to_bytes();
    // CDW13 at bytes 55:52: Zone Send Action 04h, Select All in bit 8.
    assert_eq!((b[0], b[52], b[53]), (0x79, 0x04, 0x01));

    let report = Command::ZoneManagementReceive {
        slba: 0x200,
        filter: ReportFilter::Closed,
        max_zones: 3,
        partial: true,
    };
    let b = io_sqe(&report, CommandId(4), 1)
        .expect("a receive")
        .to_bytes();
    // NUMD: (64 + 3 * 64) / 4 - 1 = 63; Report Zones with the Closed option (04h),
    // Partial Report in bit 16.
    assert_eq!(
        (b[0], b[48], b[52], b[53], b[54]),
        (0x7a, 63, 0x00, 0x04, 0x01)
    );
    assert_eq!(io_command(&Sqe::from_bytes(&b)), Ok(report));
}

#[test]
fn unknown_opcodes_and_fields_are_refused() {
    let mut sqe = Sqe::new(0x05, 1, 1);
    assert_eq!(io_command(&sqe), Err(SqeError::Opcode(0x05)));
    assert_eq!(SqeError::Opcode(5).status(), Status::InvalidOpcode);
    sqe.opcode = opcode::ZONE_MANAGEMENT_SEND;
    sqe.set_cdw(13, 0x09);
    assert_eq!(io_command(&sqe), Err(SqeError::Field));
    sqe.opcode = opcode::ZONE_MANAGEMENT_RECEIVE;
    sqe.set_cdw(13, 0x01); // the extended report
    assert_eq!(io_command(&sqe), Err(SqeError::Field));
    assert!(io_sqe(&Command::Read { slba: 0, nlb: 0 }, CommandId(0), 1).is_none());
}

/// A Zone Append's completion: the assigned LBA in dwords 0 and 1; a failure's status
/// (Zone Is Full, 1B9h) in dword 3 bits 31:17 with Do Not Retry.
#[test]
fn golden_completions() {
    let done = Completion {
        cid: CommandId(0x1234),
        status: Status::Success,
        result: CommandResult::Lba(0x1_0000_0002),
    };
    let b = Cqe::of(&done, 1, 5, true).to_bytes();
    assert_eq!(
        b,
        [2, 0, 0, 0, 1, 0, 0, 0, 5, 0, 1, 0, 0x34, 0x12, 0x01, 0x00]
    );
    let full = Completion::status(CommandId(7), Status::ZoneFull);
    let cqe = Cqe::of(&full, 1, 0, false);
    let b = cqe.to_bytes();
    let dw3 = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
    assert_eq!(dw3 >> 17 & 0xff, 0xb9, "status code");
    assert_eq!(dw3 >> 25 & 0x7, 0x1, "status code type: command specific");
    assert_eq!(dw3 >> 31, 1, "do not retry");
    assert_eq!(Cqe::from_bytes(&b), cqe);
}

#[test]
fn golden_zone_report() {
    let d = ZoneDescriptor {
        zone_type: ZoneType::SequentialWriteRequired,
        state: ZoneState::ImplicitlyOpened,
        attrs: 0,
        zcap: 0x80,
        zslba: 0x100,
        wp: 0x102,
    };
    let mut out = [0xffu8; 256];
    assert_eq!(write_zone_report(9, &[d], &mut out), 128);
    assert_eq!(out[..8], [9, 0, 0, 0, 0, 0, 0, 0]);
    assert!(out[8..64].iter().all(|&b| b == 0));
    assert_eq!(out[64], 0x02, "zone type: sequential write required");
    assert_eq!(out[65], 0x20, "zone state 2h in bits 7:4");
    assert_eq!(out[72..80], [0x80, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(out[80..88], [0x00, 0x01, 0, 0, 0, 0, 0, 0]);
    assert_eq!(out[88..96], [0x02, 0x01, 0, 0, 0, 0, 0, 0]);
    assert_eq!(zone_report_count(&out), Some(9));
    assert_eq!(zone_descriptor(&out, 0), Some(d));
}

fn identify() -> IdentifyZns {
    IdentifyZns {
        lba_bytes: 4096,
        nsze_lbas: 30 * 256,
        zone_size_lbas: 256,
        zone_cap_lbas: 256,
        nr_zones: 30,
        max_open: 14,
        max_active: 0,
        zasl_lbas: 32,
        mdts_lbas: 256,
        volatile_write_cache: true,
        cross_zone_read: true,
        nand: NandInfo {
            channels: 2,
            dies_per_channel: 2,
            blocks_per_die: 32,
            pages_per_block: 32,
            page_bytes: 4096,
            spare_bytes: 64,
        },
        programs: crate::program::ProgramResources {
            slots: 4,
            range_sets: 8,
            max_extents: 256,
            max_output_bytes: 1 << 20,
        },
    }
}

#[test]
fn golden_identify() {
    let sqe = identify_sqe(CommandId(1), 1, cns::CSI_NAMESPACE, csi::ZONED);
    let b = sqe.to_bytes();
    // CNS in CDW10 bits 7:0 (byte 40), CSI in CDW11 bits 31:24 (byte 47).
    assert_eq!((b[0], b[40], b[47]), (0x06, 0x05, 0x02));
    assert_eq!(identify_of(&Sqe::from_bytes(&b)), (0x05, 0x02));

    let id = identify();
    let ns = identify_data(|b| identify_namespace(&id, b));
    assert_eq!(ns[..8], 7680u64.to_le_bytes());
    assert_eq!(ns[130], 12, "LBA data size 2^12");
    let zns = identify_data(|b| identify_zns_namespace(&id, b));
    assert_eq!(zns[4..8], u32::MAX.to_le_bytes(), "no active limit");
    assert_eq!(zns[8..12], 13u32.to_le_bytes(), "MOR is 0's based");
    assert_eq!(zns[2816..2824], 256u64.to_le_bytes(), "zone size");
    assert_eq!(
        identify_data(|b| identify_zns_controller(&id, b))[0],
        5,
        "ZASL: 128 KiB = 2^5 x 4 KiB"
    );
    let names = ControllerNames {
        serial: "CSD0001",
        model: "csd",
        firmware: "0.1",
        subnqn: "nqn.2026-12.org.csd:dev",
    };
    let ctrl = identify_data(|b| identify_controller(&id, &names, b));
    assert_eq!(&ctrl[4..11], b"CSD0001");
    assert_eq!(ctrl[11], b' ');
    assert_eq!(ctrl[77], 8, "MDTS: 1 MiB = 2^8 x 4 KiB");
    assert_eq!(
        (ctrl[512], ctrl[513], ctrl[516], ctrl[525]),
        (0x66, 0x44, 1, 1)
    );
    assert_eq!(
        &ctrl[768..768 + names.subnqn.len()],
        names.subnqn.as_bytes()
    );
    assert_eq!(ctrl[768 + names.subnqn.len()], 0);
}
