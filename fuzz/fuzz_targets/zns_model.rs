//! The zone manager against the plain reference model of `testkit::zns_model` (the same
//! model the firmware's proptest `zns_model` uses), on command sequences chosen by the fuzzer,
//! with reboots over the same NAND. Any difference in a status, an appended LBA, a report, a
//! zone descriptor or a byte read panics.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use common::zns::{ReportFilter, ZoneAction};
use libfuzzer_sys::fuzz_target;
use testkit::zns_model::{self, config, formatted, page, pages, reboot, Model};

/// Zones 0..6 are used most (limits and states interact); up to 15 reaches past the end.
#[derive(Debug, Clone, Copy)]
struct Zone(u32);
impl<'a> Arbitrary<'a> for Zone {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let b: u8 = u.arbitrary()?;
        Ok(Zone(if b < 224 {
            u32::from(b % 6)
        } else {
            u32::from(b % 16)
        }))
    }
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Action {
    Open,
    Close,
    Finish,
    Reset,
    Offline,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Filter {
    All,
    Empty,
    ImplicitlyOpened,
    ExplicitlyOpened,
    Closed,
    Full,
    ReadOnly,
    Offline,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Op {
    /// Write `nlb` LBAs at the write pointer plus `skew` (usually 0).
    Write {
        zone: Zone,
        skew: u8,
        nlb: u8,
    },
    Append {
        zone: Zone,
        nlb: u8,
        misaligned: bool,
    },
    Read {
        lba: u8,
        nlb: u8,
    },
    Action {
        zone: Zone,
        action: Action,
        all: bool,
        misaligned: bool,
    },
    Report {
        zone: Zone,
        filter: Filter,
        max: u8,
        partial: bool,
    },
    Reboot,
}

fn action(a: Action) -> ZoneAction {
    match a {
        Action::Open => ZoneAction::Open,
        Action::Close => ZoneAction::Close,
        Action::Finish => ZoneAction::Finish,
        Action::Reset => ZoneAction::Reset,
        Action::Offline => ZoneAction::Offline,
    }
}

fn filter(f: Filter) -> ReportFilter {
    match f {
        Filter::All => ReportFilter::All,
        Filter::Empty => ReportFilter::Empty,
        Filter::ImplicitlyOpened => ReportFilter::ImplicitlyOpened,
        Filter::ExplicitlyOpened => ReportFilter::ExplicitlyOpened,
        Filter::Closed => ReportFilter::Closed,
        Filter::Full => ReportFilter::Full,
        Filter::ReadOnly => ReportFilter::ReadOnly,
        Filter::Offline => ReportFilter::Offline,
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let cfg = config();
    let mut m = formatted(cfg);
    let id = m.identify();
    let mut model = Model::new(id.nr_zones, id.zone_size_lbas, &cfg);
    let mut seed = 0u32;
    for op in ops.into_iter().take(200) {
        match op {
            Op::Write {
                zone: Zone(zone),
                skew,
                nlb,
            } => {
                // Mostly at the write pointer: 1 in 8 skewed by 1..=3.
                let skew = if skew % 8 == 0 {
                    u64::from(skew % 3) + 1
                } else {
                    0
                };
                let nlb = u32::from(nlb % 5) + 1;
                let wp = model.zones.get(zone as usize).map_or(0, |z| z.written);
                let lba = u64::from(zone) * model.size + wp + skew;
                let seeds: Vec<u32> = (0..nlb)
                    .map(|_| {
                        seed += 1;
                        seed
                    })
                    .collect();
                let got = m.write(lba, &pages(&seeds));
                assert_eq!(got, model.write(lba, &seeds, false).map(|_| ()), "{op:?}");
            }
            Op::Append {
                zone: Zone(zone),
                nlb,
                misaligned,
            } => {
                let nlb = u32::from(nlb % 6) + 1;
                let lba = u64::from(zone) * model.size + u64::from(misaligned);
                let seeds: Vec<u32> = (0..nlb)
                    .map(|_| {
                        seed += 1;
                        seed
                    })
                    .collect();
                let got = m.append(lba, &pages(&seeds));
                assert_eq!(got, model.write(lba, &seeds, true), "{op:?}");
            }
            Op::Read { lba, nlb } => {
                let lba = u64::from(lba) % 240;
                let nlb = u64::from(nlb % 10) + 1;
                let mut buf = vec![0xAAu8; nlb as usize * 4096];
                let got = m.read(lba, &mut buf);
                let want = model.read(lba, nlb);
                assert_eq!(got, want.as_ref().map(|_| ()).map_err(|e| *e), "{op:?}");
                if let Ok(seeds) = want {
                    for (k, s) in seeds.iter().enumerate() {
                        let chunk = &buf[k * 4096..(k + 1) * 4096];
                        match s {
                            Some(s) => assert!(
                                chunk == page(*s).as_slice(),
                                "LBA {} differs",
                                lba + k as u64
                            ),
                            None => assert!(
                                chunk.iter().all(|&b| b == 0),
                                "LBA {} not zeros",
                                lba + k as u64
                            ),
                        }
                    }
                }
            }
            Op::Action {
                zone: Zone(zone),
                action: a,
                all,
                misaligned,
            } => {
                let lba = u64::from(zone) * model.size + u64::from(misaligned);
                let got = m.zone_action(lba, action(a), all);
                assert_eq!(got, model.action(lba, action(a), all), "{op:?}");
            }
            Op::Report {
                zone: Zone(zone),
                filter: f,
                max,
                partial,
            } => {
                let lba = u64::from(zone) * model.size;
                let max = u32::from(max % 6);
                let got = m
                    .report(lba, filter(f), max, partial)
                    .map(|r| (r.nr_zones, r.descriptors));
                assert_eq!(got, model.report(lba, filter(f), max, partial), "{op:?}");
            }
            Op::Reboot => {
                m = reboot(m, cfg);
                model.reboot();
            }
        }
        for z in 0..model.zones.len() {
            assert_eq!(
                m.zone(z as u32),
                Some(model.descriptor(z)),
                "zone {z} after {op:?}"
            );
        }
    }
    let mut m = reboot(m, cfg);
    model.reboot();
    zns_model::assert_contents(&mut m, &model);
});
