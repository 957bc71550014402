//! Shared helpers of the controller tests: a small device, a host that numbers its commands,
//! assembled programs, and reboots over the same NAND.

use common::command::{Command, CommandId, CommandResult, Completion, Submission};
use common::program::{
    ActivateProgram, ExecResult, ExecuteProgram, Extent, LoadProgram, MemoryRangeSet, ProgramOp,
    ProgramSlot, RangeSetId, ReadOutput,
};
use common::{Status, LBA_BYTES};
use firmware::controller::{Controller, ProgramConfig, SliceDma};
use firmware::nand::sim::SimNand;
use firmware::nand::Geometry;
use firmware::zns::{ZoneConfig, ZoneManager};
use testkit::geometry;

/// 2 channels x 2 dies x 16 blocks x 64 pages of 4096 + 64 bytes (16 MiB): the tests' small
/// geometry.
pub const GEOMETRY: Geometry = geometry::small();

/// Bytes of one LBA.
pub const LBA: usize = LBA_BYTES as usize;

/// One block per die in each zone (256 LBAs), appends of up to 8 LBAs, transfers up to 16.
pub fn zone_config() -> ZoneConfig {
    ZoneConfig {
        max_open: 4,
        max_active: 6,
        zasl_lbas: 8,
        mdts_lbas: 16,
        ..geometry::zones_for(&GEOMETRY)
    }
}

/// The device under test and a host that numbers its commands.
#[derive(Debug)]
pub struct Dev {
    pub ctrl: Controller<SimNand>,
    next_cid: u16,
}

impl Dev {
    /// A device over a freshly formatted emulator.
    pub fn new(config: ProgramConfig) -> Self {
        let zones = ZoneManager::format(SimNand::new(GEOMETRY), zone_config()).expect("format");
        Dev::over(zones, config)
    }

    /// A device over an existing zone manager.
    pub fn over(zones: ZoneManager<SimNand>, config: ProgramConfig) -> Self {
        Dev {
            ctrl: Controller::new(zones, config),
            next_cid: 1,
        }
    }

    /// Powers off, wraps the media in a new emulator, mounts it and boots a new controller.
    pub fn reboot(self, config: ProgramConfig) -> Self {
        let store = self.ctrl.into_zones().into_nand().into_store();
        let zones = ZoneManager::mount(SimNand::with_store(store), zone_config()).expect("mount");
        Dev::over(zones, config)
    }

    /// A fresh command id.
    pub fn cid(&mut self) -> CommandId {
        let cid = CommandId(self.next_cid);
        self.next_cid = self.next_cid.wrapping_add(1);
        cid
    }

    /// Submits a command that must complete at once, with `buf` as its host memory.
    pub fn submit(&mut self, command: Command, buf: &mut [u8]) -> Completion {
        let cid = self.cid();
        let done = self
            .ctrl
            .submit_command(0, &Submission::new(cid, command), &mut SliceDma::new(buf))
            .unwrap_or_else(|| panic!("{command:?} went to the background"));
        assert_eq!(done.cid, cid, "completion echoes the command id");
        done
    }

    /// Submits a command without host memory; returns its status.
    pub fn status(&mut self, command: Command) -> Status {
        self.submit(command, &mut []).status
    }

    /// Read: the blocks, or the status.
    pub fn read(&mut self, slba: u64, nlb: u32) -> Result<Vec<u8>, Status> {
        let mut buf = vec![0u8; nlb as usize * LBA];
        let done = self.submit(Command::Read { slba, nlb }, &mut buf);
        match done.status {
            Status::Success => {
                assert_eq!(done.result, CommandResult::Transferred(buf.len() as u32));
                Ok(buf)
            }
            status => Err(status),
        }
    }

    /// Write at `slba` (whole blocks).
    pub fn write(&mut self, slba: u64, data: &[u8]) -> Status {
        let mut buf = data.to_vec();
        let nlb = (data.len() / LBA) as u32;
        self.submit(Command::Write { slba, nlb }, &mut buf).status
    }

    /// Zone Append to the zone at `zslba`: the LBA the data landed on, or the status.
    pub fn append(&mut self, zslba: u64, data: &[u8]) -> Result<u64, Status> {
        let mut buf = data.to_vec();
        let nlb = (data.len() / LBA) as u32;
        let done = self.submit(Command::ZoneAppend { zslba, nlb }, &mut buf);
        match (done.status, done.result) {
            (Status::Success, CommandResult::Lba(lba)) => Ok(lba),
            (Status::Success, other) => panic!("append returned {other:?}"),
            (status, _) => Err(status),
        }
    }

    /// Load Program: `image` into `slot` in chunks of `chunk` bytes; the last chunk's status.
    pub fn load(&mut self, slot: u8, image: &[u8], chunk: usize) -> Status {
        let mut last = Status::InvalidField;
        for (i, piece) in image.chunks(chunk).enumerate() {
            last = self.load_chunk(slot, image, i * chunk, piece.len());
            if !last.is_success() {
                return last;
            }
        }
        last
    }

    /// Load Program: one chunk `image[offset..offset + len]`.
    pub fn load_chunk(&mut self, slot: u8, image: &[u8], offset: usize, len: usize) -> Status {
        let mut buf = image[offset..offset + len].to_vec();
        let load = LoadProgram {
            slot: ProgramSlot(slot),
            offset: offset as u32,
            total_len: image.len() as u32,
            chunk_len: len as u32,
        };
        self.submit(Command::LoadProgram(load), &mut buf).status
    }

    /// Program Activation.
    pub fn activate(&mut self, slot: u8, activate: bool) -> Status {
        self.status(Command::ActivateProgram(ActivateProgram {
            slot: ProgramSlot(slot),
            activate,
        }))
    }

    /// Loads `image` into `slot` in one chunk and activates it, asserting both succeed.
    pub fn install(&mut self, slot: u8, image: &[u8]) {
        assert_eq!(self.load(slot, image, image.len()), Status::Success);
        assert_eq!(self.activate(slot, true), Status::Success);
    }

    /// Memory Range Set over `extents`.
    pub fn ranges(&mut self, id: u16, extents: &[Extent], file_size: u64, out_cap: u32) -> Status {
        let mut buf: Vec<u8> = extents.iter().flat_map(|e| e.to_le_bytes()).collect();
        let set = MemoryRangeSet {
            id: RangeSetId(id),
            extent_count: extents.len() as u32,
            file_size,
            out_cap,
        };
        self.submit(Command::MemoryRangeSet(set), &mut buf).status
    }

    /// Submits Execute Program (with `input` as its host memory), which must go to the
    /// background, and polls until it completes.
    pub fn execute(&mut self, exec: ExecuteProgram, input: &[u8]) -> Completion {
        let cid = self.cid();
        let mut buf = input.to_vec();
        let sub = Submission::new(cid, Command::ExecuteProgram(exec));
        let queued = self
            .ctrl
            .submit_command(3, &sub, &mut SliceDma::new(&mut buf));
        assert_eq!(queued, None, "Execute Program completes through poll");
        self.finish(cid)
    }

    /// Polls until the command `cid` completes.
    pub fn finish(&mut self, cid: CommandId) -> Completion {
        loop {
            if let Some((sqid, done)) = self.ctrl.poll() {
                assert_eq!(sqid, 3, "completion goes to the submitting queue");
                assert_eq!(done.cid, cid);
                assert!(!self.ctrl.busy());
                return done;
            }
        }
    }

    /// Read Output: the whole output of range set `id`.
    pub fn output(&mut self, id: u16) -> Vec<u8> {
        let mut buf = vec![0u8; 1 << 20];
        let read = ReadOutput {
            range_set: RangeSetId(id),
            offset: 0,
            len: u32::MAX,
        };
        let done = self.submit(Command::ReadOutput(read), &mut buf);
        assert_eq!(done.status, Status::Success);
        let CommandResult::Transferred(n) = done.result else {
            panic!("read output returned {:?}", done.result);
        };
        buf.truncate(n as usize);
        buf
    }
}

/// An Execute Program of `slot` over range set `set` with the given op and parameters.
pub fn exec(slot: u8, set: u16, op: ProgramOp, offset: u64, len: u64) -> ExecuteProgram {
    ExecuteProgram {
        slot: ProgramSlot(slot),
        range_set: RangeSetId(set),
        op,
        offset,
        len,
        param0: 0,
        param1: 0,
        fuel: 0,
    }
}

/// The ExecResult of a completion.
pub fn exec_result(done: &Completion) -> ExecResult {
    match done.result {
        CommandResult::Exec(result) => result,
        other => panic!("expected an exec result, got {other:?} ({:?})", done.status),
    }
}

/// A program image of rbpf assembler text.
pub fn image(src: &str) -> Vec<u8> {
    let text = rbpf::assembler::assemble(src).unwrap_or_else(|e| panic!("assemble: {e}"));
    firmware::ebpf::encode_image(&text, &[])
}

/// Reads `len` bytes at `offset` of the snapshot into scratch memory (at most its size), emits
/// what it read and returns the byte count (or the helper's negative error).
pub const READ_EMIT: &str = "
    mov64 r6, r1
    call 3
    mov64 r7, r0
    ldxdw r1, [r6+16]
    mov64 r2, r7
    ldxdw r3, [r6+24]
    call 1
    mov64 r8, r0
    jsle r8, 0, +4
    mov64 r1, r7
    mov64 r2, r8
    call 2
    mov64 r0, r8
    exit";

/// Loops `param0` times (4 instructions a turn) mixing a hash into r0; returns the hash.
pub const SPIN: &str = "
    ldxdw r2, [r1+32]
    mov64 r0, 7
    mul64 r0, 31
    add64 r0, r2
    sub64 r2, 1
    jne r2, 0, -4
    exit";

/// The value [`SPIN`] returns for `turns`.
pub fn spin_result(turns: u64) -> u64 {
    let mut r0 = 7u64;
    for r2 in (1..=turns).rev() {
        r0 = r0.wrapping_mul(31).wrapping_add(r2);
    }
    r0
}

/// Copies its write-stream input to the output 8 bytes at a time through the stack; returns
/// the bytes copied, or `csd_input`'s negative error.
pub const ECHO_INPUT: &str = "
    mov64 r6, 0
    mov64 r1, r10
    sub64 r1, 8
    mov64 r2, 8
    call 5
    jslt r0, 0, +9
    jeq r0, 0, +7
    mov64 r7, r0
    mov64 r1, r10
    sub64 r1, 8
    mov64 r2, r7
    call 2
    add64 r6, r7
    ja -13
    mov64 r0, r6
    exit";
