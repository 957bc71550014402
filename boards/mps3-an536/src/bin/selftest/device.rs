//! The controller end to end: commands in as NVMe entries, `Completion`s out, host memory
//! through a `SliceDma`, over the zone manager the [`crate::zones`] part rebooted.

use alloc::vec;
use alloc::vec::Vec;

use common::command::{Command, CommandId, CommandResult, Completion, Submission};
use common::zns::{ReportFilter, ZoneAction};
use common::Status;
use firmware::controller::{Controller, ProgramConfig, SliceDma};
use firmware::nand::sim::SimNand;
use semihosting::println;

use crate::zones::{self, RamZones};
use crate::{pattern, Checks, LBA};

/// The host side: numbers commands and hands the controller its memory.
pub struct Host {
    pub ctrl: Controller<SimNand>,
    next_cid: u16,
}

impl Host {
    /// Submits a command that completes at once, with `buf` as its host memory.
    pub fn submit(&mut self, command: Command, buf: &mut [u8]) -> Completion {
        let cid = self.cid();
        let sub = Submission::new(cid, command);
        match self.ctrl.submit_command(0, &sub, &mut SliceDma::new(buf)) {
            Some(done) => done,
            None => self.finish(cid),
        }
    }

    /// Polls until command `cid` completes.
    pub fn finish(&mut self, cid: CommandId) -> Completion {
        loop {
            match self.ctrl.poll() {
                Some((_, done)) if done.cid == cid => return done,
                Some(_) => {}
                None if !self.ctrl.busy() => return Completion::status(cid, Status::InternalError),
                None => {}
            }
        }
    }

    fn cid(&mut self) -> CommandId {
        let cid = CommandId(self.next_cid);
        self.next_cid = self.next_cid.wrapping_add(1);
        cid
    }

    /// The first LBA of zone `zone`.
    pub fn zslba(&self, zone: u32) -> u64 {
        zones::start(self.ctrl.zones(), zone)
    }

    /// Writes `data` (whole LBAs) at `slba` in transfers of at most `mdts` LBAs.
    pub fn write(&mut self, slba: u64, data: &[u8], mdts: usize) -> Status {
        for (i, chunk) in data.chunks(mdts * LBA).enumerate() {
            let mut buf = chunk.to_vec();
            let nlb = (chunk.len() / LBA) as u32;
            let at = slba + (i * mdts) as u64;
            let done = self.submit(Command::Write { slba: at, nlb }, &mut buf);
            if done.status != Status::Success {
                return done.status;
            }
        }
        Status::Success
    }
}

/// Runs the controller part over `zones`; returns the host for the program part.
pub fn run(zones: RamZones, checks: &mut Checks) -> Host {
    println!("-- controller: submissions and completions");
    let mut host = Host {
        ctrl: Controller::new(zones, ProgramConfig::default()),
        next_cid: 1,
    };
    let mut identify = vec![0u8; 4096];
    let done = host.submit(Command::Identify, &mut identify);
    println!("identify: {}", done.status);
    checks.check(
        matches!(done.result, CommandResult::Transferred(n) if n > 0),
        "identify transfers its data",
    );

    let zslba = host.zslba(5);
    let data = pattern(10, 8 * LBA);
    let mut buf = data.clone();
    let done = host.submit(
        Command::Write {
            slba: zslba,
            nlb: 8,
        },
        &mut buf,
    );
    println!("write zone 5 +0, 8 LBAs: {}", done.status);
    let mut back = vec![0u8; data.len()];
    let done = host.submit(
        Command::Read {
            slba: zslba,
            nlb: 8,
        },
        &mut back,
    );
    let same = back == data;
    println!(
        "read zone 5 +0, 8 LBAs: {}, {:?}, {}",
        done.status,
        done.result,
        if same { "data matches" } else { "data differs" }
    );
    checks.check(same, "controller read returns what was written");

    let mut buf = pattern(11, 4 * LBA);
    let done = host.submit(Command::ZoneAppend { zslba, nlb: 4 }, &mut buf);
    match done.result {
        CommandResult::Lba(lba) => {
            println!(
                "zone append zone 5, 4 LBAs: {}, at +{}",
                done.status,
                lba - zslba
            )
        }
        _ => println!(
            "zone append zone 5, 4 LBAs: {}, no LBA in the completion",
            done.status
        ),
    }
    let mut oversized = vec![0u8; LBA];
    let done = host.submit(
        Command::Read {
            slba: zslba,
            nlb: 2,
        },
        &mut oversized,
    );
    println!("read 2 LBAs into 1 LBA of host memory: {}", done.status);
    let done = host.submit(
        Command::ZoneManagementSend {
            slba: zslba,
            action: ZoneAction::Finish,
            select_all: false,
        },
        &mut [],
    );
    println!("finish zone 5: {}", done.status);
    zones::show(host.ctrl.zones(), 5);
    let mut report = vec![0u8; 4096];
    let done = host.submit(
        Command::ZoneManagementReceive {
            slba: 0,
            filter: ReportFilter::Full,
            max_zones: 16,
            partial: false,
        },
        &mut report,
    );
    println!("report full zones: {}", done.status);
    let full: Vec<u32> = (0..host.ctrl.zones().layout().nr_zones)
        .filter(|&z| {
            host.ctrl
                .zones()
                .zone(z)
                .is_some_and(|d| d.state == common::zns::ZoneState::Full)
        })
        .collect();
    println!("  full zones: {full:?}");
    host
}
