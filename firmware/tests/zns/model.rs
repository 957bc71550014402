//! Model-based test: random ZNS command sequences, with power cycles, against the reference
//! model in `testkit::zns_model`, comparing every status, appended LBA, report and byte read.

use common::zns::{ReportFilter, ZoneAction};
use proptest::prelude::*;
use testkit::zns_model::{self, config, formatted, page, pages, reboot, Model};

#[derive(Clone, Debug)]
enum Op {
    /// Write `nlb` LBAs at the zone's write pointer plus `skew` (0 most of the time).
    Write {
        zone: u32,
        skew: u8,
        nlb: u8,
    },
    Append {
        zone: u32,
        nlb: u8,
        misaligned: bool,
    },
    Read {
        lba: u64,
        nlb: u8,
    },
    Action {
        zone: u32,
        action: ZoneAction,
        all: bool,
        misaligned: bool,
    },
    Report {
        zone: u32,
        filter: ReportFilter,
        max: u32,
        partial: bool,
    },
    Reboot,
}

fn action() -> impl Strategy<Value = ZoneAction> {
    prop_oneof![
        Just(ZoneAction::Open),
        Just(ZoneAction::Close),
        Just(ZoneAction::Finish),
        Just(ZoneAction::Reset),
        Just(ZoneAction::Offline),
    ]
}

fn filter() -> impl Strategy<Value = ReportFilter> {
    prop_oneof![
        Just(ReportFilter::All),
        Just(ReportFilter::Empty),
        Just(ReportFilter::ImplicitlyOpened),
        Just(ReportFilter::ExplicitlyOpened),
        Just(ReportFilter::Closed),
        Just(ReportFilter::Full),
        Just(ReportFilter::ReadOnly),
        Just(ReportFilter::Offline),
    ]
}

/// Zones 0..6 are used most (so limits and states interact); 14 is out of range.
fn zone() -> impl Strategy<Value = u32> {
    prop_oneof![8 => 0u32..6, 1 => 0u32..15]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (zone(), prop_oneof![6 => Just(0u8), 1 => 1u8..4], 1u8..=4)
            .prop_map(|(zone, skew, nlb)| Op::Write { zone, skew, nlb }),
        4 => (zone(), 1u8..=5, proptest::bool::weighted(0.1))
            .prop_map(|(zone, nlb, misaligned)| Op::Append { zone, nlb, misaligned }),
        3 => (0u64..230, 1u8..=9).prop_map(|(lba, nlb)| Op::Read { lba, nlb }),
        4 => (zone(), action(), proptest::bool::weighted(0.2), proptest::bool::weighted(0.05))
            .prop_map(|(zone, action, all, misaligned)| Op::Action { zone, action, all, misaligned }),
        1 => (zone(), filter(), 0u32..5, any::<bool>())
            .prop_map(|(zone, filter, max, partial)| Op::Report { zone, filter, max, partial }),
        1 => Just(Op::Reboot),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    /// Every completion, appended LBA, report and byte read matches the model, across reboots.
    #[test]
    fn matches_reference_model(ops in proptest::collection::vec(op(), 1..70)) {
        let cfg = config();
        let mut m = formatted(cfg);
        let id = m.identify();
        let mut model = Model::new(id.nr_zones, id.zone_size_lbas, &cfg);
        let mut seed = 0u32;
        for op in ops {
            match op {
                Op::Write { zone, skew, nlb } => {
                    let wp = model.zones.get(zone as usize).map_or(0, |z| z.written);
                    let lba = u64::from(zone) * model.size + wp + u64::from(skew);
                    let seeds: Vec<u32> = (0..nlb).map(|_| { seed += 1; seed }).collect();
                    let got = m.write(lba, &pages(&seeds));
                    prop_assert_eq!(got, model.write(lba, &seeds, false).map(|_| ()), "{:?}", op);
                }
                Op::Append { zone, nlb, misaligned } => {
                    let lba = u64::from(zone) * model.size + u64::from(misaligned);
                    let seeds: Vec<u32> = (0..nlb).map(|_| { seed += 1; seed }).collect();
                    let got = m.append(lba, &pages(&seeds));
                    prop_assert_eq!(got, model.write(lba, &seeds, true), "{:?}", op);
                }
                Op::Read { lba, nlb } => {
                    let mut buf = vec![0xAAu8; usize::from(nlb) * 4096];
                    let got = m.read(lba, &mut buf);
                    let want = model.read(lba, u64::from(nlb));
                    prop_assert_eq!(got, want.as_ref().map(|_| ()).map_err(|e| *e), "{:?}", op);
                    if let Ok(seeds) = want {
                        for (k, s) in seeds.iter().enumerate() {
                            let chunk = &buf[k * 4096..(k + 1) * 4096];
                            match s {
                                Some(s) => prop_assert!(chunk == page(*s).as_slice(), "LBA {} differs", lba + k as u64),
                                None => prop_assert!(chunk.iter().all(|&b| b == 0), "LBA {} not zeros", lba + k as u64),
                            }
                        }
                    }
                }
                Op::Action { zone, action, all, misaligned } => {
                    let lba = u64::from(zone) * model.size + u64::from(misaligned);
                    let got = m.zone_action(lba, action, all);
                    prop_assert_eq!(got, model.action(lba, action, all), "{:?}", op);
                }
                Op::Report { zone, filter, max, partial } => {
                    let lba = u64::from(zone) * model.size;
                    let got = m.report(lba, filter, max, partial).map(|r| (r.nr_zones, r.descriptors));
                    prop_assert_eq!(got, model.report(lba, filter, max, partial), "{:?}", op);
                }
                Op::Reboot => {
                    m = reboot(m, cfg);
                    model.reboot();
                }
            }
            for z in 0..model.zones.len() {
                prop_assert_eq!(m.zone(z as u32), Some(model.descriptor(z)), "zone {} after {:?}", z, op);
            }
        }
        let mut m = reboot(m, cfg);
        model.reboot();
        zns_model::assert_contents(&mut m, &model);
    }
}
