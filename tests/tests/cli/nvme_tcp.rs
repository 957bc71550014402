//! `csd device start --nvme-tcp`: a host written from the NVMe/TCP and NVMe over Fabrics
//! specifications (not from the target's code) connects, enables the controller, reads the
//! Identify structures, and writes, reads and reports zones on an I/O queue.

use std::{
    io::{Read, Write},
    net::TcpStream,
};

use tests::{
    csd_json,
    nvme_host::{free_port, io_sqe, le16, le32, le64, Host, SGL_IN_CAPSULE, SGL_TRANSPORT},
    running::RunningDevice,
};

const NQN: &str = "nqn.2026-12.dev.csd:test";

/// A new 64 MiB device `dev.img` in a temporary directory, running and serving NVMe/TCP as
/// [`NQN`] on a free loopback port.
fn serving() -> (tempfile::TempDir, RunningDevice, u16) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let image = dir.path().join("dev.img");
    let img = image.to_str().expect("a UTF-8 path");
    tests::csd_ok(["device", "create", img, "--capacity", "64M"]);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let device = RunningDevice::start_with(&image, &["--nvme-tcp", &listen, "--nqn", NQN]);
    (dir, device, port)
}

#[test]
fn a_host_from_the_specifications_connects_and_does_io() {
    let (dir, device, port) = serving();
    let image = dir.path().join("dev.img");
    let img = image.to_str().expect("a UTF-8 path");

    // A connection that sends garbage is closed; the target goes on serving others.
    let mut garbage = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    garbage.write_all(&[0xff; 8]).expect("send");
    let mut rest = Vec::new();
    let _ = garbage.read_to_end(&mut rest);
    // A C2HTermReq (03h, 24 bytes) with FES Invalid PDU Header Field, then the close.
    assert_eq!(rest.len(), 24, "{rest:?}");
    assert_eq!((rest[0], le16(&rest, 8)), (0x03, 0x01), "{rest:?}");

    // The admin queue: Connect, CAP, CC.EN, CSTS.RDY.
    let mut admin = Host::connect(port);
    let connected = admin.fabrics_connect(NQN, 0, 0xffff);
    assert_eq!(connected.status, 0, "{connected:?}");
    let cntlid = connected.dw0 as u16;
    let cap = admin.property(None, 0x00);
    let cap = u64::from(cap.dw0) | u64::from(cap.dw1) << 32;
    assert!(cap & 0xffff >= 31, "MQES");
    assert_eq!(cap >> 37 & 1, 1, "CAP.CSS: the NVM command set");
    assert_eq!(
        admin.property(None, 0x1c).dw0 & 1,
        0,
        "not ready before CC.EN"
    );
    let cc = 1 | 6 << 16 | 4 << 20; // EN, IOSQES 64 bytes, IOCQES 16 bytes
    assert_eq!(admin.property(Some(cc), 0x14).status, 0);
    assert_eq!(admin.property(None, 0x1c).dw0 & 1, 1, "CSTS.RDY");
    assert_eq!(admin.property(None, 0x08).dw0, 0x0002_0100, "VS 2.1");

    // Identify Controller: the subsystem's NQN at byte 768; Identify Namespace; the zoned
    // command set's Identify Namespace.
    let ctrl = admin.identify(0, 0x01, 0x00);
    assert_eq!(&ctrl[768..768 + NQN.len()], NQN.as_bytes());
    assert_eq!(ctrl[768 + NQN.len()], 0);
    assert_eq!((ctrl[512], ctrl[513]), (0x66, 0x44), "SQES and CQES");
    assert_eq!(
        le32(&ctrl, 516),
        3,
        "three namespaces: zoned, compute, memory"
    );
    let report = csd_json(["zone", "report", img, "--json"]);
    let zones = report.as_array().expect("zones");
    let zone_lbas = zones[1]["zslba"].as_u64().expect("zslba");
    let ns = admin.identify(1, 0x00, 0x00);
    assert_eq!(le64(&ns, 0), zone_lbas * zones.len() as u64, "NSZE");
    assert_eq!(ns[128 + 2], 12, "4 KiB LBAs");
    let zns = admin.identify(1, 0x05, 0x02);
    assert_eq!(le64(&zns, 2816), zone_lbas, "zone size");
    let list = admin.identify(0, 0x02, 0x00);
    let active = [
        le32(&list, 0),
        le32(&list, 4),
        le32(&list, 8),
        le32(&list, 12),
    ];
    assert_eq!(active, [1, 2, 3, 0], "active namespaces");
    assert_eq!(le32(&admin.identify(1, 0x02, 0x00), 0), 2, "active above 1");
    // The program namespaces' command sets (namespace identification descriptor type 04h),
    // and each is ready (NSTAT bit 0 of the command set independent Identify Namespace).
    for (nsid, csi) in [(1, 0x02), (2, 0x04), (3, 0x03)] {
        let descriptors = admin.identify(nsid, 0x03, 0x00);
        assert_eq!(
            descriptors[..5],
            [0x04, 0x01, 0, 0, csi],
            "namespace {nsid}"
        );
        assert_eq!(
            admin.identify(nsid, 0x08, 0x00)[14] & 1,
            1,
            "namespace {nsid} ready"
        );
    }
    // An opcode the target does not know: Invalid Command Opcode, and the queue goes on.
    let unknown = admin.sqe(0xc5, 0, SGL_IN_CAPSULE, 0);
    let (cqe, _) = admin.call(&unknown, &[]);
    assert_eq!(cqe.status, 0x001, "{cqe:?}");
    let keep_alive = admin.sqe(0x18, 0, SGL_IN_CAPSULE, 0);
    assert_eq!(admin.call(&keep_alive, &[]).0.status, 0);

    // An I/O queue of the same controller: Zone Append with in-capsule data, a Write whose
    // data the target asks for (R2T, H2CData), a Read, and a zone report.
    let mut io = Host::connect(port);
    assert_eq!(io.fabrics_connect(NQN, 1, cntlid).status, 0);
    let first = vec![0xa5u8; 4096];
    let append = io_sqe(&mut io, 0x7d, 0, 1, SGL_IN_CAPSULE, 4096);
    let (cqe, _) = io.call(&append, &first);
    assert_eq!(cqe.status, 0, "{cqe:?}");
    assert_eq!(
        u64::from(cqe.dw0) | u64::from(cqe.dw1) << 32,
        0,
        "assigned LBA"
    );

    let second: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
    let write = io_sqe(&mut io, 0x01, 1, 1, SGL_TRANSPORT, 4096);
    io.send(&write, &[]);
    let write_cid = io.cid;
    // The host does not wait: a Flush follows before the target's R2T is answered.
    let flush = io.sqe(0x00, 1, SGL_IN_CAPSULE, 0);
    io.send(&flush, &[]);
    let flush_cid = io.cid;
    io.cid = write_cid;
    let r2t = io.read_pdu();
    assert_eq!(r2t.kind, 0x09, "R2T");
    assert_eq!(le16(&r2t.header, 0), io.cid);
    assert_eq!((le32(&r2t.header, 4), le32(&r2t.header, 8)), (0, 4096));
    io.send_h2c(&r2t.header, &second, false);
    let done = Host::response(&io.read_pdu());
    assert_eq!((done.cid, done.status), (write_cid, 0), "{done:?}");
    let flushed = Host::response(&io.read_pdu());
    assert_eq!((flushed.cid, flushed.status), (flush_cid, 0), "{flushed:?}");
    io.cid = flush_cid;

    let read = io_sqe(&mut io, 0x02, 0, 2, SGL_TRANSPORT, 8192);
    let (cqe, data) = io.call(&read, &[]);
    assert_eq!(cqe.status, 0);
    assert_eq!(data[..4096], first[..]);
    assert_eq!(data[4096..], second[..]);

    let mut recv = io_sqe(&mut io, 0x7a, 0, 1, SGL_TRANSPORT, 128);
    recv[48..52].copy_from_slice(&(128u32 / 4 - 1).to_le_bytes()); // NUMD
    recv[54] = 1; // Partial Report
    let (cqe, data) = io.call(&recv, &[]);
    assert_eq!(cqe.status, 0);
    assert_eq!(le64(&data, 0), 1, "one zone reported");
    assert_eq!(data[64] & 0xf, 0x2, "sequential write required");
    assert_eq!(data[65] >> 4, 0x2, "implicitly opened");
    assert_eq!(le64(&data, 64 + 24), 2, "write pointer");

    // The zone report of `csd`, attached to the same running device, agrees.
    let report = csd_json(["zone", "report", img, "--json"]);
    assert_eq!(report[0]["state"], "implicit_open");
    assert_eq!(report[0]["wp"], 2);

    // A kernel through this project's own commands (vendor-specific opcodes): Load Program
    // (admin C1h) with the clang-built object in the capsule, Execute Program (I/O C2h) over
    // the two blocks written; the histogram comes back as data, the byte count in dword 0.
    let object = std::fs::read(tests::kernel_object("entropy")).expect("entropy.o");
    let mut load = admin.sqe(0xc1, 0, SGL_IN_CAPSULE, object.len() as u32);
    load[40] = 3; // program index
    assert_eq!(admin.call(&load, &object).0.status, 0, "Load Program");
    let mut exec = io_sqe(&mut io, 0xc2, 0, 2, SGL_TRANSPORT, 2048);
    exec[40..44].copy_from_slice(&3u32.to_le_bytes()); // CDW10: program index
    exec[48..52].fill(0); // CDW12 and CDW13: the first LBA (0)
    exec[52..56].fill(0);
    exec[56..60].copy_from_slice(&1u32.to_le_bytes()); // CDW14: 2 LBAs, 0's based
    let (cqe, output) = io.call(&exec, &[]);
    assert_eq!(cqe.status, 0, "Execute Program: {cqe:?}");
    assert_eq!(cqe.dw0, 8192, "the kernel's return value: bytes it read");
    let mut both = first.clone();
    both.extend_from_slice(&second);
    let want = tests::reference::histogram_bytes(&tests::reference::entropy_histogram(&both));
    assert_eq!(output, want, "the histogram of the two blocks");
    let mut missing = io_sqe(&mut io, 0xc2, 0, 1, SGL_TRANSPORT, 2048);
    missing[40..44].copy_from_slice(&9u32.to_le_bytes());
    missing[48..60].fill(0);
    assert_eq!(io.call(&missing, &[]).0.status, 0x702, "Program Not Active");

    // Transfers past what Identify advertises (MDTS, in 4 KiB units as a power of two at
    // byte 77) are refused with Invalid Field in Command before any data moves: no R2T comes,
    // the completion does, and the queue goes on.
    let most = 1u32 << ctrl[77];
    for (opcode, slba, what) in [
        (0x02, 0, "a Read"),
        (0x01, 2, "a Write, answered without an R2T"),
    ] {
        let huge = io_sqe(
            &mut io,
            opcode,
            slba,
            most as u16 + 1,
            SGL_TRANSPORT,
            (most + 1) * 4096,
        );
        let (cqe, _) = io.call(&huge, &[]);
        assert_eq!(cqe.status, 0x002, "{what} past MDTS");
    }
    let mut huge_load = admin.sqe(0xc1, 0, SGL_TRANSPORT, 64 << 20);
    huge_load[40] = 4;
    let (cqe, _) = admin.call(&huge_load, &[]);
    assert_eq!(
        cqe.status, 0x002,
        "a 64 MiB program, answered without an R2T"
    );

    // A write out of place: the device's status goes back in the completion.
    let bad = io_sqe(&mut io, 0x01, 7, 1, SGL_IN_CAPSULE, 4096);
    let (cqe, _) = io.call(&bad, &first);
    assert_eq!(cqe.status, 0x1bc, "Zone Invalid Write: {cqe:?}");
    drop((admin, io));
    drop(device);
}

/// The discovery controller: a host connects to the well-known discovery NQN and reads the
/// Discovery log page (70h), which lists this subsystem on this port over TCP.
#[test]
fn discovery_lists_the_subsystem() {
    const DISCOVERY: &str = "nqn.2014-08.org.nvmexpress.discovery";
    let (_dir, _device, port) = serving();

    let mut host = Host::connect(port);
    assert_eq!(host.fabrics_connect(DISCOVERY, 0, 0xffff).status, 0);
    assert_eq!(host.property(Some(1), 0x14).status, 0);
    let ctrl = host.identify(0, 0x01, 0x00);
    assert_eq!(ctrl[111], 2, "CNTRLTYPE: discovery controller");
    assert_eq!(&ctrl[768..768 + DISCOVERY.len()], DISCOVERY.as_bytes());
    // Get Log Page 70h, 2 KiB: NUMDL (0's based dwords) in CDW10 bits 31:16.
    let mut get = host.sqe(0x02, 0, SGL_TRANSPORT, 2048);
    get[40] = 0x70;
    get[42..44].copy_from_slice(&(2048u16 / 4 - 1).to_le_bytes());
    let (cqe, log) = host.call(&get, &[]);
    assert_eq!(cqe.status, 0, "{cqe:?}");
    assert_eq!(le64(&log, 8), 1, "one record");
    let entry = &log[1024..];
    assert_eq!(
        (entry[0], entry[1], entry[2]),
        (3, 1, 2),
        "TCP, IPv4, NVM subsystem"
    );
    assert_eq!(
        &entry[32..32 + port.to_string().len()],
        port.to_string().as_bytes()
    );
    assert_eq!(&entry[256..256 + NQN.len()], NQN.as_bytes());
    assert_eq!(&entry[512..521], b"127.0.0.1");
    // A discovery controller has no namespace: the zoned Identify Namespace is Invalid Field.
    let mut ns = host.sqe(0x06, 1, SGL_TRANSPORT, 4096);
    ns[40] = 0x05;
    ns[47] = 0x02;
    assert_eq!(host.call(&ns, &[]).0.status, 0x002);
}

/// Header and data digests (CRC-32C), as a host asks for them in ICReq: every PDU the target
/// sends carries the right ones (the host checks each); data with a wrong data digest is not
/// written and its command completes with Transient Transport Error; a wrong header digest
/// ends the connection with a C2HTermReq (Header Digest Error).
#[test]
fn digests_guard_headers_and_data() {
    let (dir, device, port) = serving();
    let image = dir.path().join("dev.img");
    let img = image.to_str().expect("a UTF-8 path");

    let mut admin = Host::connect_with_digests(port, true, true);
    let connected = admin.fabrics_connect(NQN, 0, 0xffff);
    assert_eq!(connected.status, 0, "{connected:?}");
    let cntlid = connected.dw0 as u16;
    assert_eq!(admin.property(Some(1 | 6 << 16 | 4 << 20), 0x14).status, 0);
    let ctrl = admin.identify(0, 0x01, 0x00);
    assert_eq!(&ctrl[768..768 + NQN.len()], NQN.as_bytes());

    // Only the header digest on one queue, only the data digest on another.
    let mut headers_only = Host::connect_with_digests(port, true, false);
    assert_eq!(headers_only.fabrics_connect(NQN, 1, cntlid).status, 0);
    let mut io = Host::connect_with_digests(port, false, true);
    assert_eq!(io.fabrics_connect(NQN, 2, cntlid).status, 0);

    let first = vec![0x3cu8; 4096];
    let append = io_sqe(&mut headers_only, 0x7d, 0, 1, SGL_IN_CAPSULE, 4096);
    assert_eq!(headers_only.call(&append, &first).0.status, 0);

    // In-capsule data with a wrong digest: not written.
    let write = io_sqe(&mut io, 0x01, 1, 1, SGL_IN_CAPSULE, 4096);
    let spoiled = io.pdu_bytes(0x04, 0, &write, &first, true);
    io.stream.write_all(&spoiled).expect("send");
    let cqe = Host::response(&io.read_pdu());
    assert_eq!(cqe.status, 0x22, "Transient Transport Error: {cqe:?}");
    assert!(!cqe.dnr, "a transport error may be retried");
    // H2CData with a wrong digest: not written either; the host retries with a good one.
    for spoil in [true, false] {
        let second: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
        let write = io_sqe(&mut io, 0x01, 1, 1, SGL_TRANSPORT, 4096);
        io.send(&write, &[]);
        let r2t = io.read_pdu();
        assert_eq!(r2t.kind, 0x09, "R2T");
        io.send_h2c(&r2t.header, &second, spoil);
        let cqe = Host::response(&io.read_pdu());
        let want = if spoil { 0x22 } else { 0 };
        assert_eq!(
            (cqe.status, cqe.dnr),
            (want, false),
            "spoiled {spoil}: {cqe:?}"
        );
        let report = csd_json(["zone", "report", img, "--json"]);
        assert_eq!(report[0]["wp"], if spoil { 1 } else { 2 });
        if !spoil {
            let read = io_sqe(&mut headers_only, 0x02, 0, 2, SGL_TRANSPORT, 8192);
            let (cqe, data) = headers_only.call(&read, &[]);
            assert_eq!(cqe.status, 0);
            assert_eq!((&data[..4096], &data[4096..]), (&first[..], &second[..]));
            let read = io_sqe(&mut io, 0x02, 1, 1, SGL_TRANSPORT, 4096);
            assert_eq!(io.call(&read, &[]).1, second);
        }
    }

    // A wrong header digest: C2HTermReq with FES 03h, then the target closes the connection.
    let keep_alive = headers_only.sqe(0x18, 0, SGL_IN_CAPSULE, 0);
    let mut pdu = headers_only.pdu_bytes(0x04, 0, &keep_alive, &[], false);
    pdu[72] ^= 1;
    headers_only.stream.write_all(&pdu).expect("send");
    let term = headers_only.read_pdu();
    assert_eq!(term.kind, 0x03, "C2HTermReq");
    assert_eq!(le16(&term.header, 0), 0x03, "FES: Header Digest Error");
    let mut rest = Vec::new();
    let _ = headers_only.stream.read_to_end(&mut rest);
    assert!(rest.is_empty(), "nothing after the termination request");
    // The other queues go on.
    let keep_alive = admin.sqe(0x18, 0, SGL_IN_CAPSULE, 0);
    assert_eq!(admin.call(&keep_alive, &[]).0.status, 0);
    drop((admin, io, headers_only));
    drop(device);
}

/// The Computational Programs commands, laid out by hand from the layouts docs/ARCHITECTURE.md
/// gives ("Commands on the wire"): Load Program (admin 85h) of a linked image, Program
/// Activation Management (88h), Memory Range Set Management (89h) over two written blocks,
/// Execute Program on the compute namespace (2) with its parameter data, and Memory Read of
/// the output on the memory namespace (3) give the entropy histogram of the two blocks.
/// Refused: a run of a program never activated, a namespace the device does not have, an
/// Execute Program without its parameter data, an image that is not one.
#[test]
fn computational_programs_commands_run_a_kernel() {
    let (dir, device, port) = serving();
    let linked = dir.path().join("entropy.img");
    let object = tests::kernel_object("entropy");
    tests::csd_ok([
        "kernel",
        "link",
        object.to_str().expect("a UTF-8 path"),
        "-o",
        linked.to_str().expect("a UTF-8 path"),
    ]);
    let program = std::fs::read(&linked).expect("the linked image");

    let mut admin = Host::connect(port);
    let connected = admin.fabrics_connect(NQN, 0, 0xffff);
    assert_eq!(connected.status, 0, "{connected:?}");
    assert_eq!(admin.property(Some(1 | 6 << 16 | 4 << 20), 0x14).status, 0);
    let mut io = Host::connect(port);
    assert_eq!(io.fabrics_connect(NQN, 1, connected.dw0 as u16).status, 0);
    let blocks = [vec![0x11u8; 4096], vec![0xeeu8; 4096]];
    for block in &blocks {
        let append = io_sqe(&mut io, 0x7d, 0, 1, SGL_IN_CAPSULE, 4096);
        assert_eq!(io.call(&append, block).0.status, 0, "Zone Append");
    }
    let set_dw = |sqe: &mut [u8; 64], at: usize, v: u32| {
        sqe[at..at + 4].copy_from_slice(&v.to_le_bytes());
    };

    // Load Program: the program index and program type C0h, Select 0 (load) in CDW10; the
    // size in CDW11, the bytes of this command in CDW14, their offset in CDW15 (0).
    let load = |admin: &mut Host, index: u32, image: &[u8]| {
        let len = image.len() as u32;
        let mut load = admin.sqe(0x85, 0, SGL_IN_CAPSULE, len);
        set_dw(&mut load, 40, index | 0xc0 << 16);
        set_dw(&mut load, 44, len);
        set_dw(&mut load, 56, len);
        admin.call(&load, image).0.status
    };
    assert_eq!(load(&mut admin, 1, &program), 0, "Load Program");
    let mut corrupt = program.clone();
    corrupt[..8].fill(0);
    assert_eq!(load(&mut admin, 4, &corrupt), 0x703, "Program Rejected");
    // Program Activation Management: index 1, Select 1 (activate) in bits 19:16.
    let mut activate = admin.sqe(0x88, 0, SGL_IN_CAPSULE, 0);
    set_dw(&mut activate, 40, 1 | 1 << 16);
    assert_eq!(admin.call(&activate, &[]).0.status, 0, "activate");
    // Memory Range Set Management: create (Select 0) range set 2 of one extent, LBA 0 and 2
    // blocks (12 bytes of data), a file of 8 KiB, 2 KiB of output.
    let mut extent = 0u64.to_le_bytes().to_vec();
    extent.extend_from_slice(&2u32.to_le_bytes());
    let mut set = admin.sqe(0x89, 0, SGL_IN_CAPSULE, 12);
    set_dw(&mut set, 40, 2 << 16);
    set_dw(&mut set, 44, 1);
    set_dw(&mut set, 48, 8192);
    set_dw(&mut set, 56, 2048);
    assert_eq!(admin.call(&set, &extent).0.status, 0, "range set");

    // Execute Program on namespace `nsid`: program index and range set 2 in CDW2; the
    // parameter data: offset 0, length 8 KiB, a file job (1), four reserved bytes.
    let mut parameters = 0u64.to_le_bytes().to_vec();
    parameters.extend_from_slice(&8192u64.to_le_bytes());
    parameters.extend_from_slice(&1u32.to_le_bytes());
    parameters.extend_from_slice(&[0; 4]);
    let execute = |io: &mut Host, nsid: u32, index: u32, parameters: &[u8]| {
        let mut exec = io.sqe(0x01, nsid, SGL_IN_CAPSULE, parameters.len() as u32);
        set_dw(&mut exec, 8, index | 2 << 16);
        io.call(&exec, parameters).0
    };
    let cqe = execute(&mut io, 2, 1, &parameters);
    assert_eq!(cqe.status, 0, "Execute Program: {cqe:?}");
    assert_eq!(cqe.dw0, 8192, "the kernel's return value: bytes it read");
    // Memory Read on namespace 3: range set 2's output starts at byte 2 << 32.
    let mut read = io.sqe(0x02, 3, SGL_TRANSPORT, 2048);
    set_dw(&mut read, 44, 2);
    set_dw(&mut read, 48, 2048);
    let (cqe, output) = io.call(&read, &[]);
    assert_eq!(cqe.status, 0, "Memory Read: {cqe:?}");
    let both = blocks.concat();
    let want = tests::reference::histogram_bytes(&tests::reference::entropy_histogram(&both));
    assert_eq!(output, want, "the histogram of the two blocks");

    for (nsid, index, parameters, status, what) in [
        (2, 5, &parameters[..], 0x702, "Program Not Active"),
        (9, 1, &parameters[..], 0x00b, "Invalid Namespace or Format"),
        (
            2,
            1,
            &[][..],
            0x004,
            "Data Transfer Error: no parameter data",
        ),
    ] {
        assert_eq!(
            execute(&mut io, nsid, index, parameters).status,
            status,
            "{what}"
        );
    }
    drop((admin, io));
    drop(device);
}
