//! The clang-built C kernels on the device: each kernel image comes from the host's loader,
//! downloads through Load Program in small chunks and runs through the controller over a file
//! whose blocks are scattered over two zones (extents neither contiguous nor in LBA order).
//! Every output and r0 is compared with `tests::reference`, computed here from the file's
//! bytes. Hostile kernels from `kernels/tests` end with typed statuses and faults, and the
//! device keeps serving after each.
//!
//! Every command goes to two devices over the same NAND contents, one running kernels on the
//! interpreter and one on the JIT; their completions (status, result, every counter), the
//! bytes they hand the host, and each run's output must be identical.
//!
//! Needs `target/kernels/` (`cargo xtask kernels`).

use common::abi;
use common::command::{Command, CommandId, CommandResult, Completion, Submission};
use common::program::{
    ActivateProgram, ExecFault, ExecOutcome, ExecResult, ExecuteProgram, Extent, LoadProgram,
    MemoryRangeSet, ProgramOp, ProgramSlot, RangeSetId, ReadOutput,
};
use common::{Status, LBA_BYTES};
use firmware::controller::{Controller, ProgramConfig, SliceDma};
use firmware::nand::sim::SimNand;
use firmware::nand::Geometry;
use firmware::zns::ZoneManager;
use jit::{ExecutorKind, HostExecutor};
use testkit::{geometry, rng::pattern};
use tests::reference;

/// 2 channels x 2 dies x 16 blocks x 64 pages (the tests' small geometry): 15 zones of 256
/// LBAs.
const GEOMETRY: Geometry = geometry::small();
const LBA: usize = LBA_BYTES as usize;
const ZONE: u64 = 256;
/// Bytes of the test file: several hundred KiB, not a multiple of 4096.
const FILE_SIZE: usize = 300_000 + 1_234;
/// The byte that fills every block around the file (and the tail of its last block).
const FOREIGN: u8 = 0xEE;
/// Fuel of one slice: small, so every kernel run spans many slices.
const SLICE_FUEL: u64 = 20_000;
/// The program slot and range set the tests use.
const SLOT: u8 = 0;
const SET: u16 = 0;
/// Load Program chunk size: small enough that every kernel image takes several chunks.
const CHUNK: usize = 256;

/// The device twice (interpreter, JIT) and a host that numbers its commands.
#[derive(Debug)]
struct Dev {
    ctrl: Controller<SimNand, HostExecutor>,
    jit: Controller<SimNand, HostExecutor>,
    next_cid: u16,
}

fn controller(kind: ExecutorKind) -> Controller<SimNand, HostExecutor> {
    let zones = ZoneManager::format(SimNand::new(GEOMETRY), geometry::zones_for(&GEOMETRY))
        .expect("format");
    let config = ProgramConfig {
        slice_fuel: SLICE_FUEL,
        ..ProgramConfig::default()
    };
    let executor = HostExecutor::new(kind).expect("an executor for this host");
    Controller::with_executor(zones, config, executor)
}

impl Dev {
    fn new() -> Self {
        Dev {
            ctrl: controller(ExecutorKind::Interp),
            jit: controller(ExecutorKind::Jit),
            next_cid: 1,
        }
    }

    /// Submits `sub` to both devices, each with its own copy of `buf`; both must answer
    /// alike and leave the same bytes in host memory.
    fn submit_both(&mut self, sqid: u16, sub: &Submission, buf: &mut [u8]) -> Option<Completion> {
        let mut twin = buf.to_vec();
        let done = self.ctrl.submit_command(sqid, sub, &mut SliceDma::new(buf));
        let jit = self
            .jit
            .submit_command(sqid, sub, &mut SliceDma::new(&mut twin));
        assert_eq!(done, jit, "the JIT device answered {sub:?} otherwise");
        assert!(
            buf == twin.as_slice(),
            "the JIT device left other bytes for {sub:?}"
        );
        done
    }

    fn submission(&mut self, command: Command) -> Submission {
        self.next_cid = self.next_cid.wrapping_add(1);
        Submission::new(CommandId(self.next_cid), command)
    }

    /// A command that completes at once, with `buf` as its host memory.
    fn submit(&mut self, command: Command, buf: &mut [u8]) -> Completion {
        let sub = self.submission(command);
        let done = self
            .submit_both(0, &sub, buf)
            .unwrap_or_else(|| panic!("{command:?} went to the background"));
        assert_eq!(done.cid, sub.cid);
        done
    }

    fn append(&mut self, zslba: u64, data: &[u8]) -> u64 {
        let mut buf = data.to_vec();
        let nlb = (data.len() / LBA) as u32;
        let done = self.submit(Command::ZoneAppend { zslba, nlb }, &mut buf);
        match (done.status, done.result) {
            (Status::Success, CommandResult::Lba(lba)) => lba,
            other => panic!("append: {other:?}"),
        }
    }

    /// Appends `blocks` (whole blocks) to zone `zslba` in appends of at most 16 blocks;
    /// returns the first LBA.
    fn append_all(&mut self, zslba: u64, blocks: &[u8]) -> u64 {
        let mut first = None;
        for piece in blocks.chunks(16 * LBA) {
            let lba = self.append(zslba, piece);
            first.get_or_insert(lba);
        }
        first.expect("something to append")
    }

    fn read(&mut self, slba: u64, nlb: u32) -> Vec<u8> {
        let mut buf = vec![0u8; nlb as usize * LBA];
        let done = self.submit(Command::Read { slba, nlb }, &mut buf);
        assert_eq!(done.status, Status::Success);
        buf
    }

    /// Load Program of `image` in [`CHUNK`]-byte chunks; the last chunk's status.
    fn load(&mut self, slot: u8, image: &[u8]) -> Status {
        let mut status = Status::InvalidField;
        for (i, chunk) in image.chunks(CHUNK).enumerate() {
            let load = LoadProgram {
                slot: ProgramSlot(slot),
                offset: (i * CHUNK) as u32,
                total_len: image.len() as u32,
                chunk_len: chunk.len() as u32,
            };
            status = self
                .submit(Command::LoadProgram(load), &mut chunk.to_vec())
                .status;
            if !status.is_success() {
                break;
            }
        }
        status
    }

    /// Loads the clang-built kernel `name` (through the host's loader) and activates it.
    fn install(&mut self, name: &str) {
        let image = kernel_image(name);
        if !name.starts_with("tests/") {
            assert!(image.len() > CHUNK, "{name} downloads in several chunks");
        }
        assert_eq!(self.load(SLOT, &image), Status::Success, "{name}");
        let act = ActivateProgram {
            slot: ProgramSlot(SLOT),
            activate: true,
        };
        assert_eq!(
            self.submit(Command::ActivateProgram(act), &mut []).status,
            Status::Success
        );
    }

    fn ranges(&mut self, id: u16, extents: &[Extent], file_size: u64) {
        let mut buf: Vec<u8> = extents.iter().flat_map(|e| e.to_le_bytes()).collect();
        let set = MemoryRangeSet {
            id: RangeSetId(id),
            extent_count: extents.len() as u32,
            file_size,
            out_cap: 1 << 20,
        };
        let done = self.submit(Command::MemoryRangeSet(set), &mut buf);
        assert_eq!(done.status, Status::Success);
    }

    /// Execute Program, polled to completion; the completion and the output.
    fn execute(&mut self, exec: ExecuteProgram, input: &[u8]) -> (Completion, Vec<u8>) {
        let sub = self.submission(Command::ExecuteProgram(exec));
        let mut buf = input.to_vec();
        let queued = self.submit_both(1, &sub, &mut buf);
        assert_eq!(queued, None, "Execute Program completes through poll");
        let poll = |ctrl: &mut Controller<SimNand, HostExecutor>| loop {
            if let Some((sqid, done)) = ctrl.poll() {
                assert_eq!((sqid, done.cid), (1, sub.cid));
                break done;
            }
        };
        let done = poll(&mut self.ctrl);
        let jit = poll(&mut self.jit);
        assert_eq!(done, jit, "the JIT ran {exec:?} otherwise");
        let mut out = vec![0u8; 1 << 20];
        let read = ReadOutput {
            range_set: exec.range_set,
            offset: 0,
            len: u32::MAX,
        };
        let got = self.submit(Command::ReadOutput(read), &mut out);
        let CommandResult::Transferred(n) = got.result else {
            panic!("read output: {got:?}");
        };
        out.truncate(n as usize);
        (done, out)
    }

    /// Runs the installed kernel; asserts it exited and returns r0, the output and the stats.
    fn run(&mut self, exec: ExecuteProgram, input: &[u8]) -> (u64, Vec<u8>, ExecResult) {
        let (done, out) = self.execute(exec, input);
        let result = exec_result(&done);
        assert_eq!(done.status, Status::Success, "{exec:?}: {result:?}");
        let ExecOutcome::Exited { r0 } = result.outcome else {
            panic!("{exec:?}: {result:?}");
        };
        assert_eq!(result.stats.bytes_returned, out.len() as u64);
        (r0, out, result)
    }
}

fn exec_result(done: &Completion) -> ExecResult {
    match done.result {
        CommandResult::Exec(result) => result,
        other => panic!("expected an exec result, got {other:?} ({})", done.status),
    }
}

fn exec(op: ProgramOp, offset: u64, len: u64, param0: u64, param1: u64) -> ExecuteProgram {
    ExecuteProgram {
        slot: ProgramSlot(SLOT),
        range_set: RangeSetId(SET),
        op,
        offset,
        len,
        param0,
        param1,
        fuel: 0,
    }
}

/// The image of the clang-built kernel `name`, linked by the host's loader.
fn kernel_image(name: &str) -> Vec<u8> {
    host_shell::loader::load_object(tests::kernel_object(name))
        .unwrap_or_else(|e| panic!("link {name}: {e}"))
        .to_bytes()
}

/// A file on the device: its bytes and its extents in file order.
#[derive(Debug)]
struct File {
    data: Vec<u8>,
    extents: Vec<Extent>,
}

impl File {
    fn size(&self) -> u64 {
        self.data.len() as u64
    }

    /// File offset where extent `i` starts.
    fn extent_start(&self, i: usize) -> u64 {
        self.extents[..i]
            .iter()
            .map(|e| u64::from(e.lba_count) * LBA_BYTES as u64)
            .sum()
    }
}

/// The file's blocks, its last one padded with [`FOREIGN`] bytes.
fn blocks_of(data: &[u8]) -> Vec<u8> {
    let mut blocks = data.to_vec();
    blocks.resize(data.len().div_ceil(LBA) * LBA, FOREIGN);
    blocks
}

/// Writes `data` scattered over zones 1 and 3, surrounded by foreign blocks: the second half
/// of the file goes first, into the lower zone; the first half is split in two extents with
/// foreign blocks between them. Extents are listed in file order.
fn place_file(dev: &mut Dev, data: &[u8]) -> File {
    let blocks = blocks_of(data);
    let n = blocks.len() / LBA;
    let (q, half) = (n / 4, n / 2);
    let block = |range: core::ops::Range<usize>| &blocks[range.start * LBA..range.end * LBA];
    let foreign = |count: usize| vec![FOREIGN; count * LBA];
    let (low, high) = (ZONE, 3 * ZONE);

    dev.append_all(low, &foreign(3));
    let second = dev.append_all(low, block(half..n));
    dev.append_all(low, &foreign(2));
    dev.append_all(high, &foreign(5));
    let first = dev.append_all(high, block(0..q));
    dev.append_all(high, &foreign(2));
    let middle = dev.append_all(high, block(q..half));
    dev.append_all(high, &foreign(1));

    let extents = vec![
        Extent {
            start_lba: first,
            lba_count: q as u32,
        },
        Extent {
            start_lba: middle,
            lba_count: (half - q) as u32,
        },
        Extent {
            start_lba: second,
            lba_count: (n - half) as u32,
        },
    ];
    assert!(
        second < first && first + q as u64 != middle,
        "scattered on purpose"
    );
    dev.ranges(SET, &extents, data.len() as u64);
    File {
        data: data.to_vec(),
        extents,
    }
}

/// A device holding the random test file, `prepare`d before it is written.
fn device_with_file(prepare: impl FnOnce(&mut Vec<u8>)) -> (Dev, File) {
    let mut dev = Dev::new();
    let mut data = pattern(0x5EED, FILE_SIZE);
    prepare(&mut data);
    let file = place_file(&mut dev, &data);
    (dev, file)
}

/// The requests every read kernel is run for: (op, offset, len).
fn requests(file: &File) -> Vec<(ProgramOp, u64, u64)> {
    let size = file.size();
    let b1 = file.extent_start(1);
    let b2 = file.extent_start(2);
    vec![
        (ProgramOp::FileJob, 0, size),
        (ProgramOp::FileJob, 0, u64::MAX),
        (ProgramOp::ReadStream, 40_963, 50_001),
        (ProgramOp::ReadStream, b1 - 5, b2 - b1 + 10),
        (ProgramOp::ReadStream, 8192, 4096),
        (ProgramOp::ReadStream, size - 7_001, 7_001),
        (ProgramOp::ReadStream, size - 100, 5_000),
        (ProgramOp::ReadStream, size + 10, 100),
    ]
}

/// Checks that the data on the device still reads back, and a passthrough run is right.
fn assert_still_serving(dev: &mut Dev, file: &File) {
    let e = file.extents[1];
    let start = file.extent_start(1) as usize;
    assert_eq!(dev.read(e.start_lba, 2), file.data[start..start + 2 * LBA]);
    dev.install("passthrough");
    let (r0, out, _) = dev.run(exec(ProgramOp::ReadStream, 1000, 9000, 0, 0), &[]);
    assert_eq!((r0, out.as_slice()), (9000, &file.data[1000..10_000]));
}

/// passthrough returns exactly the requested bytes of the scattered file, clipped at EOF,
/// across extent boundaries and non-aligned offsets.
#[test]
fn passthrough_matches_reference() {
    let (mut dev, file) = device_with_file(|_| {});
    dev.install("passthrough");
    for (op, offset, len) in requests(&file) {
        let want = reference::passthrough(reference::file_range(&file.data, offset, len));
        let (r0, out, result) = dev.run(exec(op, offset, len, 0, 0), &[]);
        assert_eq!(r0, want.len() as u64, "{op:?} {offset}+{len}");
        assert!(out == want, "{op:?} {offset}+{len}: output differs");
        assert_eq!(result.stats.device_bytes_read, want.len() as u64);
    }
}

/// entropy's histogram, in C and in Rust, equals the reference histogram for every request.
#[test]
fn entropy_matches_reference() {
    for kernel in ["entropy", "entropy_rs"] {
        entropy_of(kernel);
    }
}

fn entropy_of(kernel: &str) {
    let (mut dev, file) = device_with_file(|_| {});
    dev.install(kernel);
    for (op, offset, len) in requests(&file) {
        let range = reference::file_range(&file.data, offset, len);
        let counts = reference::entropy_histogram(range);
        let (r0, out, _) = dev.run(exec(op, offset, len, 0, 0), &[]);
        assert_eq!(r0, range.len() as u64, "{op:?} {offset}+{len}");
        assert_eq!(
            out,
            reference::histogram_bytes(&counts),
            "{op:?} {offset}+{len}"
        );
    }
}

/// The Rust csv_filter emits the reference's records for several fields and values, over a
/// CSV file scattered like the others (records crossing block and extent boundaries, a last
/// record without a newline, CRLF ends, a record too long).
#[test]
fn csv_filter_rs_matches_reference() {
    let (mut dev, file) = device_with_file(|data| {
        let mut csv = String::new();
        for i in 0..12_000u64 {
            let end = if i % 7 == 0 { "\r\n" } else { "\n" };
            csv.push_str(&format!("{i},{},{}{end}", i % 13, (i * 31) % 17));
            if i == 500 {
                csv.push_str(&format!("{},3,3\n", "9".repeat(1500)));
            }
        }
        csv.push_str("99999,3,5");
        *data = csv.into_bytes();
    });
    dev.install("csv_filter_rs");
    for (field, value) in [(1, 3), (2, 5), (0, 4242), (1, 99), (3, 1)] {
        let (want, count) = reference::csv_filter(&file.data, field, value);
        let (r0, out, _) = dev.run(exec(ProgramOp::FileJob, 0, file.size(), field, value), &[]);
        assert_eq!(r0, count, "field {field} = {value}");
        assert!(out == want, "field {field} = {value}: output differs");
    }
}

/// filter_u32 counts the same values as the reference for several thresholds, including
/// requests that start at an offset that is no multiple of 4.
#[test]
fn filter_u32_matches_reference() {
    let (mut dev, file) = device_with_file(|_| {});
    dev.install("filter_u32");
    for threshold in [0, 0x8000_0000, 0xFFFF_FFF0, 1 << 32] {
        for (op, offset, len) in requests(&file) {
            let range = reference::file_range(&file.data, offset, len);
            let want = reference::filter_u32_count(range, threshold);
            let (r0, out, _) = dev.run(exec(op, offset, len, threshold, 0), &[]);
            assert_eq!(r0, want, "{threshold:#x} {op:?} {offset}+{len}");
            assert_eq!(out, reference::u64_output(want));
        }
    }
}

/// pattern counts overlapping matches of 1-, 3- and 8-byte patterns like the reference,
/// including matches that span a 4096-byte boundary and the boundaries between extents; a
/// pattern length outside 1..=8 returns EINVAL and emits nothing.
#[test]
fn pattern_matches_reference() {
    const EIGHT: &[u8; 8] = b"csd-pat!";
    let (mut dev, file) = device_with_file(|data| {
        // Plant the 8-byte pattern across block boundaries (which include the extents'
        // boundaries, at multiples of 4096) and twice overlapping-adjacent.
        for at in [4093, 8190, 18 * 4096 - 3, 37 * 4096 - 1, 100_000, 100_008] {
            data[at..at + 8].copy_from_slice(EIGHT);
        }
    });
    dev.install("pattern");
    let three = u64::from(file.data[4095]) // bytes 4095..4098 span the first block boundary
        | u64::from(file.data[4096]) << 8
        | u64::from(file.data[4097]) << 16;
    let cases = [
        (u64::from(file.data[12_345]), 1),
        (three | 0xABCD_0000_0000_0000, 3), // bits above the length are ignored
        (u64::from_le_bytes(*EIGHT), 8),
    ];
    for (pattern, plen) in cases {
        for (op, offset, len) in requests(&file) {
            let range = reference::file_range(&file.data, offset, len);
            let want = reference::pattern_count(range, pattern, plen).expect("valid length");
            let (r0, out, _) = dev.run(exec(op, offset, len, pattern, plen), &[]);
            assert_eq!(r0, want, "len {plen} {op:?} {offset}+{len}");
            assert_eq!(out, reference::u64_output(want));
        }
    }
    let all = reference::pattern_count(&file.data, u64::from_le_bytes(*EIGHT), 8);
    assert_eq!(all, Some(6), "every planted pattern counted once");

    for bad_len in [0, 9, u64::MAX] {
        assert_eq!(reference::pattern_count(&file.data, 1, bad_len), None);
        let (r0, out, _) = dev.run(exec(ProgramOp::FileJob, 0, file.size(), 1, bad_len), &[]);
        assert_eq!(r0, abi::err::INVALID as u64, "param1 {bad_len}");
        assert!(out.is_empty());
    }
}

/// xor as a write stream transforms its input exactly like the reference (across many
/// slices), the transformed bytes can be stored and read back, and outside a write stream it
/// returns NOT_SUPPORTED.
#[test]
fn xor_write_stream_matches_reference() {
    let (mut dev, file) = device_with_file(|_| {});
    dev.install("xor");
    for (key, len) in [(0x5A, 100_003usize), (0x1_A5, 4096), (0xFF, 1), (0x42, 0)] {
        let input = pattern(key, len);
        let want = reference::xor(&input, key);
        let (r0, out, _) = dev.run(exec(ProgramOp::WriteStream, 0, len as u64, key, 0), &input);
        assert_eq!(r0, len as u64, "key {key:#x}");
        assert!(out == want, "key {key:#x}: output differs");
        if len >= LBA {
            let stored = &out[..LBA];
            let lba = dev.append(5 * ZONE, stored);
            assert_eq!(dev.read(lba, 1), stored);
            assert_eq!(reference::xor(stored, key), input[..LBA]);
        }
    }
    let (r0, out, _) = dev.run(exec(ProgramOp::ReadStream, 0, file.size(), 0x5A, 0), &[]);
    assert_eq!(r0, abi::err::NOT_SUPPORTED as u64);
    assert!(out.is_empty());
}

/// A kernel only sees its own file: two files share a zone, the range set names file A's
/// extents only, and no run over A (whole, past EOF, far past EOF) ever yields a byte of B
/// or of the foreign tail of A's last block.
#[test]
fn kernels_are_confined_to_their_files_extents() {
    let mut dev = Dev::new();
    let size_a = 6 * LBA + 100;
    let a: Vec<u8> = pattern(7, size_a)
        .into_iter()
        .map(|b| if b == FOREIGN { 0x11 } else { b })
        .collect();
    let zslba = 7 * ZONE;
    let start_a = dev.append_all(zslba, &blocks_of(&a));
    let start_b = dev.append_all(zslba, &vec![FOREIGN; 8 * LBA]);
    assert_eq!(start_b, start_a + 7, "B follows A in the same zone");
    let extents = [Extent {
        start_lba: start_a,
        lba_count: 7,
    }];
    dev.ranges(SET, &extents, size_a as u64);
    dev.install("passthrough");
    let size = size_a as u64;
    for (offset, len) in [(0, u64::MAX), (0, size + 8 * 4096), (size - 50, 10_000)] {
        let (r0, out, _) = dev.run(exec(ProgramOp::ReadStream, offset, len, 0, 0), &[]);
        let want = &a[offset as usize..];
        assert_eq!(
            (r0, out.as_slice()),
            (want.len() as u64, want),
            "{offset}+{len}"
        );
        assert!(!out.contains(&FOREIGN));
    }
    for offset in [size, size + 1, 7 * 4096, 9 * 4096, u64::MAX - 1] {
        let (r0, out, result) = dev.run(exec(ProgramOp::ReadStream, offset, 4096, 0, 0), &[]);
        assert_eq!((r0, out.len()), (0, 0), "offset {offset}: nothing past EOF");
        assert_eq!(result.stats.device_bytes_read, 0);
    }
    for kernel in ["entropy", "entropy_rs"] {
        dev.install(kernel);
        let (_, out, _) = dev.run(exec(ProgramOp::FileJob, 0, u64::MAX, 0, 0), &[]);
        let counts = reference::histogram_bytes(&reference::entropy_histogram(&a));
        assert_eq!(out, counts, "{kernel}: the histogram of A alone");
    }
    // B is really on the device, right behind A.
    assert_eq!(dev.read(start_b, 1), vec![FOREIGN; LBA]);
}

/// hostile_infinite_loop stops with ProgramOutOfFuel after exactly its budget.
#[test]
fn hostile_infinite_loop_runs_out_of_fuel() {
    let (mut dev, file) = device_with_file(|_| {});
    dev.install("tests/hostile_infinite_loop");
    let mut run = exec(ProgramOp::FileJob, 0, 0, 0, 0);
    run.fuel = 100_000;
    let (done, out) = dev.execute(run, &[]);
    assert_eq!(done.status, Status::ProgramOutOfFuel);
    let result = exec_result(&done);
    assert_eq!(result.outcome, ExecOutcome::Faulted(ExecFault::OutOfFuel));
    assert_eq!(result.stats.fuel_used, 100_000);
    assert!(out.is_empty());
    assert_still_serving(&mut dev, &file);
}

/// hostile_emit_oob: csd_emit of memory outside every region faults the kernel with a
/// HelperFault naming the helper and the address; nothing is emitted.
#[test]
fn hostile_emit_oob_faults() {
    let (mut dev, file) = device_with_file(|_| {});
    dev.install("tests/hostile_emit_oob");
    let (done, out) = dev.execute(exec(ProgramOp::FileJob, 0, 0, 0, 0), &[]);
    assert_eq!(done.status, Status::ProgramFault);
    assert!(
        matches!(
            exec_result(&done).outcome,
            ExecOutcome::Faulted(ExecFault::HelperFault {
                helper: abi::helper::EMIT,
                addr: 0x1_8000_0000,
                len: 16,
                ..
            })
        ),
        "{done:?}"
    );
    assert!(out.is_empty());
    assert_still_serving(&mut dev, &file);
}

/// hostile_wild_load: a NULL dereference and a load at an unmapped address fault with a
/// MemoryFault read of 8 bytes at that address.
#[test]
fn hostile_wild_load_faults() {
    let (mut dev, file) = device_with_file(|_| {});
    for addr in [0u64, 0x1_8000_0000, abi::region::RODATA_BASE + 0x10_0000] {
        dev.install("tests/hostile_wild_load");
        let (done, _) = dev.execute(exec(ProgramOp::FileJob, 0, 0, addr, 0), &[]);
        assert_eq!(done.status, Status::ProgramFault);
        let outcome = exec_result(&done).outcome;
        assert!(
            matches!(
                outcome,
                ExecOutcome::Faulted(ExecFault::MemoryFault { addr: a, len: 8, write: false, .. })
                    if a == addr
            ),
            "{addr:#x}: {outcome:?}"
        );
        assert_still_serving(&mut dev, &file);
    }
}

/// hostile_write_ctx: a store into the read-only context faults, and the next run sees an
/// intact context (its len).
#[test]
fn hostile_write_ctx_faults() {
    let (mut dev, file) = device_with_file(|_| {});
    dev.install("tests/hostile_write_ctx");
    let (done, _) = dev.execute(exec(ProgramOp::ReadStream, 0, 77, 0, 0), &[]);
    assert_eq!(done.status, Status::ProgramFault);
    let outcome = exec_result(&done).outcome;
    assert!(
        matches!(
            outcome,
            ExecOutcome::Faulted(ExecFault::MemoryFault { addr, len: 8, write: true, .. })
                if addr == abi::region::CTX_BASE + u64::from(abi::ctx::LEN)
        ),
        "{outcome:?}"
    );
    assert_still_serving(&mut dev, &file);
}

/// hostile_stack_escape: a store above the top of the entry stack frame faults as a write.
#[test]
fn hostile_stack_escape_faults() {
    let (mut dev, file) = device_with_file(|_| {});
    for param1 in [0u64, 1, 1000] {
        dev.install("tests/hostile_stack_escape");
        let (done, _) = dev.execute(exec(ProgramOp::FileJob, 0, 0, 5, param1), &[]);
        assert_eq!(done.status, Status::ProgramFault, "param1 {param1}");
        let outcome = exec_result(&done).outcome;
        assert!(
            matches!(
                outcome,
                ExecOutcome::Faulted(ExecFault::MemoryFault { write: true, .. })
            ),
            "param1 {param1}: {outcome:?}"
        );
        assert_still_serving(&mut dev, &file);
    }
}

/// hostile_unknown_helper links, but the device's verifier rejects it at load: the slot
/// cannot be activated.
#[test]
fn hostile_unknown_helper_is_rejected_at_load() {
    let (mut dev, file) = device_with_file(|_| {});
    let image = kernel_image("tests/hostile_unknown_helper");
    assert_eq!(dev.load(SLOT, &image), Status::ProgramRejected);
    let act = ActivateProgram {
        slot: ProgramSlot(SLOT),
        activate: true,
    };
    assert_eq!(
        dev.submit(Command::ActivateProgram(act), &mut []).status,
        Status::ProgramNotActive
    );
    assert_still_serving(&mut dev, &file);
}

/// hostile_deep_recursion is either refused at load or stopped at MAX_CALL_DEPTH with
/// CallDepthExceeded; a shallow recursion that fits the call depth runs normally.
#[test]
fn hostile_deep_recursion_is_stopped() {
    let (mut dev, file) = device_with_file(|_| {});
    let image = kernel_image("tests/hostile_deep_recursion");
    match dev.load(SLOT, &image) {
        Status::ProgramRejected => {}
        Status::Success => {
            dev.install("tests/hostile_deep_recursion");
            // descend(d) = descend(d - 1) + d + 1, descend(0) = 0.
            let (r0, _, _) = dev.run(exec(ProgramOp::FileJob, 0, 0, 3, 0), &[]);
            assert_eq!(r0, 9, "four nested calls fit");
            let (done, _) = dev.execute(exec(ProgramOp::FileJob, 0, 0, 1_000_000, 0), &[]);
            assert_eq!(done.status, Status::ProgramFault);
            let outcome = exec_result(&done).outcome;
            assert!(
                matches!(
                    outcome,
                    ExecOutcome::Faulted(ExecFault::CallDepthExceeded { .. })
                ),
                "{outcome:?}"
            );
        }
        other => panic!("load: {other:?}"),
    }
    assert_still_serving(&mut dev, &file);
}
