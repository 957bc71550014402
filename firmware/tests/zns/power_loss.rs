//! Power loss at every NAND operation of a fixed workload: after each cut the zone manager is
//! mounted again over the same NAND and must show the state "before" or "after" the command in
//! flight (for a multi-LBA write: any prefix of it), every acknowledged write, no torn data,
//! and zones that can still be written or reset.

use common::zns::{ZoneAction, ZoneState, ZONE_ATTR_FINISHED_BY_CONTROLLER};
use common::Status;
use firmware::nand::sim::SimNand;
use firmware::zns::ZoneManager;
use testkit::zns_model::{config, formatted, page, pages, Manager, Model};

#[derive(Clone, Debug)]
enum W {
    Append(u32, Vec<u32>),
    Write(u32, Vec<u32>),
    Action(u32, ZoneAction, bool),
}

fn workload() -> Vec<W> {
    use ZoneAction::*;
    vec![
        W::Append(0, vec![1, 2]),
        W::Write(1, vec![3]),
        W::Append(0, vec![4]),
        W::Write(1, vec![5, 6, 7]),
        W::Action(1, Finish, false),
        W::Write(2, (8..=13).collect()),
        W::Action(0, Reset, false),
        W::Append(0, vec![14, 15]),
        W::Action(3, Open, false),
        W::Write(3, vec![16]),
        W::Action(3, Close, false),
        W::Write(2, (17..=22).collect()),
        W::Action(1, Reset, false),
        W::Append(1, vec![23]),
        W::Action(0, Finish, true),
        W::Action(0, Reset, true),
        W::Append(0, vec![24, 25]),
        W::Action(0, Finish, false),
        W::Action(0, Reset, false),
        W::Append(0, vec![26]),
        W::Action(2, Reset, false),
        W::Action(0, Finish, false),
        W::Append(2, vec![27]),
    ]
}

fn run(m: &mut Manager, model: &Model, w: &W) -> Result<(), Status> {
    let size = model.size;
    match w {
        W::Append(z, s) => m.append(u64::from(*z) * size, &pages(s)).map(|_| ()),
        W::Write(z, s) => {
            let wp = u64::from(*z) * size + model.zones[*z as usize].written;
            m.write(wp, &pages(s))
        }
        W::Action(z, a, all) => m.zone_action(u64::from(*z) * size, *a, *all),
    }
}

/// The model after `w`, or after only the first `k` LBAs of a write.
fn apply(model: &Model, w: &W, k: Option<usize>) -> Model {
    let mut m = model.clone();
    let size = m.size;
    let r = match w {
        W::Append(z, s) => m
            .write(u64::from(*z) * size, &s[..k.unwrap_or(s.len())], true)
            .map(|_| ()),
        W::Write(z, s) => {
            let wp = u64::from(*z) * size + m.zones[*z as usize].written;
            m.write(wp, &s[..k.unwrap_or(s.len())], false).map(|_| ())
        }
        W::Action(z, a, all) => m.action(u64::from(*z) * size, *a, *all),
    };
    r.unwrap();
    m
}

/// Whether the device shows exactly `c` (zone `torn` may also be Full, finished by the
/// controller, with `c`'s data).
fn shows(m: &mut Manager, c: &Model, torn: Option<usize>) -> bool {
    for z in 0..c.zones.len() {
        let got = m.zone(z as u32).unwrap();
        let want = c.descriptor(z);
        let torn_full = Some(z) == torn
            && got.state == ZoneState::Full
            && got.attrs == ZONE_ATTR_FINISHED_BY_CONTROLLER
            && got.wp == want.zslba + c.cap;
        if got != want && !torn_full {
            return false;
        }
    }
    let mut buf = vec![0u8; 4096];
    for lba in 0..c.nsze() {
        if c.zones[(lba / c.size) as usize].state == ZoneState::Offline {
            continue;
        }
        if m.read(lba, &mut buf).is_err() {
            return false;
        }
        let ok = match c.data.get(&lba) {
            Some(&s) => buf == page(s),
            None => buf.iter().all(|&b| b == 0),
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Each zone the workload touched can still be written (after a reset if Full) and reads back.
fn assert_usable(m: &mut Manager, size: u64) {
    for z in 0..4u64 {
        let d = m.zone(z as u32).unwrap();
        if d.state == ZoneState::Full {
            m.zone_action(z * size, ZoneAction::Reset, false).unwrap();
        }
        let wp = m.zone(z as u32).unwrap().wp;
        m.write(wp, &page(999)).unwrap();
        let mut buf = vec![0u8; 4096];
        m.read(wp, &mut buf).unwrap();
        assert_eq!(buf, page(999));
        m.zone_action(z * size, ZoneAction::Reset, false).unwrap();
    }
}

/// Total NAND operations of the workload after format.
fn total_ops() -> u64 {
    let mut m = formatted(config());
    m.nand_mut().reset_stats();
    let id = m.identify();
    let mut model = Model::new(id.nr_zones, id.zone_size_lbas, &config());
    for w in workload() {
        run(&mut m, &model, &w).unwrap();
        model = apply(&model, &w, None);
    }
    m.nand().stats().ops()
}

/// Runs the workload with power cut by `cut`, remounts, checks "before or after" and returns
/// whether a zone came back finished by the controller (a torn write at its write pointer).
fn cut_and_check(cut: impl FnOnce(&mut SimNand)) -> bool {
    let cfg = config();
    let mut m = formatted(cfg);
    m.nand_mut().reset_stats();
    cut(m.nand_mut());
    let id = m.identify();
    let mut model = Model::new(id.nr_zones, id.zone_size_lbas, &cfg);
    let mut inflight = None;
    for w in workload() {
        match run(&mut m, &model, &w) {
            Ok(()) => model = apply(&model, &w, None),
            Err(Status::CommandAborted) => {
                inflight = Some(w);
                break;
            }
            Err(e) => panic!("{w:?} failed with {e}"),
        }
    }
    let w = inflight.expect("the power cut never happened");
    assert!(m.nand().power_lost());
    let store = m.into_nand().into_store();
    let mut m = ZoneManager::mount(SimNand::with_store(store), cfg).unwrap();

    let mut candidates = vec![(model.clone(), None), (apply(&model, &w, None), None)];
    if let W::Append(z, s) | W::Write(z, s) = &w {
        candidates.push((model.clone(), Some(*z as usize)));
        for k in 1..s.len() {
            candidates.push((apply(&model, &w, Some(k)), Some(*z as usize)));
        }
    }
    let found = candidates.into_iter().any(|(mut c, torn)| {
        c.reboot();
        shows(&mut m, &c, torn)
    });
    assert!(found, "cut during {w:?}: state is neither before nor after");
    let torn =
        (0..id.nr_zones).any(|z| m.zone(z).unwrap().attrs == ZONE_ATTR_FINISHED_BY_CONTROLLER);
    assert_usable(&mut m, id.zone_size_lbas);
    torn
}

/// Cutting power at every single NAND operation of the workload leaves "before" or "after".
#[test]
fn power_cut_at_every_operation() {
    let total = total_ops();
    assert!(total > 40, "workload too small: {total} operations");
    let mut torn = 0;
    for n in 0..total {
        torn += usize::from(cut_and_check(|nand| nand.cut_power_after_ops(n)));
    }
    assert!(torn > 0, "no cut tore a page at a write pointer");
}

/// Cutting power after every third of a page's bytes also leaves "before" or "after".
#[test]
fn power_cut_by_bytes() {
    for n in (0..100_000).step_by(1400) {
        cut_and_check(|nand| nand.cut_power_after_bytes(n));
    }
}

/// Media damage on page 0 of a zone's second block (so that block no longer binds to its
/// slot) brings the zone back Full, finished by the controller, instead of Closed at LBA 1
/// with programmed pages in its first slot that the next writes would program again; a reset
/// makes it usable.
/// (Found by the `mount_image` fuzz target: the emulator panicked on a double program.)
#[test]
fn damaged_first_page_of_a_slot_finishes_the_zone() {
    use firmware::nand::sim::{PageState, PageStore};
    use firmware::nand::PageAddr;

    let cfg = config();
    let mut m = formatted(cfg);
    let size = m.identify().zone_size_lbas;
    m.write(0, &pages(&[1, 2, 3, 4])).unwrap();
    let block = m.slot_block(0, 1).unwrap();
    let mut store = m.into_nand().into_store();
    let addr = PageAddr::new(block, 0);
    let (mut data, mut spare) = (vec![0u8; 4096], vec![0u8; 64]);
    store
        .load(addr, &mut data, &mut spare)
        .expect("RAM stores never fail");
    data[0] ^= 1;
    store
        .save(addr, &data, &spare, PageState::Programmed)
        .expect("the store takes the page");

    let mut m = ZoneManager::mount(SimNand::with_store(store), cfg).unwrap();
    let z = m.zone(0).unwrap();
    assert_eq!(z.state, ZoneState::Full);
    assert_eq!(z.attrs, ZONE_ATTR_FINISHED_BY_CONTROLLER);
    assert_eq!(m.write(z.wp, &pages(&[5])), Err(Status::ZoneFull));
    // The LBA before the damage still reads back.
    let mut buf = vec![0u8; 4096];
    m.read(0, &mut buf).unwrap();
    assert!(buf == page(1), "LBA 0 differs");
    m.zone_action(0, ZoneAction::Reset, false).unwrap();
    m.write(0, &pages(&[6, 7, 8])).unwrap();
    assert_usable(&mut m, size);
}

/// A page that reads as erased while a later page of its block is programmed (its charge
/// leaked away) finishes the zone at mount, so the zone manager never programs below a
/// programmed page. Found by the `mount_image` fuzz target.
#[test]
fn erased_looking_page_below_programmed_pages_finishes_the_zone() {
    use firmware::nand::sim::{PageState, PageStore};
    use firmware::nand::PageAddr;

    let cfg = config();
    let mut m = formatted(cfg);
    let size = m.identify().zone_size_lbas;
    // Two slots, capacity 12: offsets 0..9 written, pages 0..4 of slot 0's block and 0..4 of
    // slot 1's. Page 3 of both (offsets 6 and 7) reads as erased while page 4 (offsets 8, 9) is
    // programmed. The write-pointer search probes offset 6 first, so it stops there, and the
    // page right above it in each slot looks erased: only a page further up tells.
    m.write(0, &pages(&[1, 2, 3, 4, 5, 6, 7, 8])).unwrap();
    m.write(8, &pages(&[9, 10])).unwrap();
    let blocks = [m.slot_block(0, 0).unwrap(), m.slot_block(0, 1).unwrap()];
    let mut store = m.into_nand().into_store();
    let (data, spare) = (vec![0xFFu8; 4096], vec![0xFFu8; 64]);
    for block in blocks {
        store
            .save(PageAddr::new(block, 3), &data, &spare, PageState::Erased)
            .expect("the store takes the page");
    }

    let mut m = ZoneManager::mount(SimNand::with_store(store), cfg).unwrap();
    let z = m.zone(0).unwrap();
    assert_eq!(z.state, ZoneState::Full);
    assert_eq!(z.attrs, ZONE_ATTR_FINISHED_BY_CONTROLLER);
    assert_eq!(m.write(z.wp, &pages(&[9])), Err(Status::ZoneFull));
    m.zone_action(0, ZoneAction::Reset, false).unwrap();
    m.write(0, &pages(&[6, 7, 8])).unwrap();
    assert_usable(&mut m, size);
}
