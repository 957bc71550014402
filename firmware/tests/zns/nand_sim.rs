//! The strict NAND emulator: it panics on contract breaks, reports device conditions as
//! errors, counts operations, cuts power and survives a reboot.

use firmware::nand::sim::{PageState, PageStore, SimNand};
use firmware::nand::{BlockId, Geometry, Nand, NandErrorKind, PageAddr};

const G: Geometry = Geometry {
    channels: 1,
    dies_per_channel: 1,
    blocks_per_die: 4,
    pages_per_block: 4,
    page_bytes: 4096,
    spare_bytes: 64,
};

fn at(block: u32, page: u32) -> PageAddr {
    PageAddr::new(BlockId(block), page)
}

/// Programming a page twice without an erase is a contract break: the emulator panics.
#[test]
#[should_panic(expected = "not erased")]
fn program_twice_panics() {
    let mut n = SimNand::new(G);
    n.program_page(at(0, 0), &[1; 4096], &[0; 64]).unwrap();
    let _ = n.program_page(at(0, 0), &[2; 4096], &[0; 64]);
}

/// Programming below an already programmed page of the block panics.
#[test]
#[should_panic(expected = "below programmed page")]
fn program_out_of_order_panics() {
    let mut n = SimNand::new(G);
    n.program_page(at(0, 2), &[1; 4096], &[0; 64]).unwrap();
    let _ = n.program_page(at(0, 1), &[2; 4096], &[0; 64]);
}

/// A buffer that is not one page panics.
#[test]
#[should_panic(expected = "buffers must be one page")]
fn wrong_buffer_panics() {
    let mut n = SimNand::new(G);
    let _ = n.program_page(at(0, 0), &[1; 100], &[0; 64]);
}

/// Out-of-bounds addresses, injected failures and grown bad blocks are errors, not panics.
#[test]
fn device_conditions_are_errors() {
    let mut n = SimNand::new(G);
    assert_eq!(n.erase_block(BlockId(4)), Err(NandErrorKind::OutOfBounds));
    n.fail_next_program(at(1, 0));
    assert_eq!(
        n.program_page(at(1, 0), &[1; 4096], &[0; 64]),
        Err(NandErrorKind::ProgramFailed)
    );
    n.fail_block(BlockId(2));
    assert_eq!(n.erase_block(BlockId(2)), Err(NandErrorKind::EraseFailed));
    n.fail_next_read(at(3, 0));
    let (mut d, mut s) = (vec![0; 4096], vec![0; 64]);
    assert_eq!(
        n.read_page(at(3, 0), &mut d, &mut s),
        Err(NandErrorKind::Uncorrectable)
    );
    assert_eq!(n.read_page(at(3, 0), &mut d, &mut s), Ok(()));
    assert!(d.iter().chain(&s).all(|&b| b == 0xFF));
}

/// Counters, a power cut tearing the program in flight, and a reboot over the same media.
#[test]
fn counts_cuts_and_reboots() {
    let mut n = SimNand::new(G);
    n.erase_block(BlockId(0)).unwrap();
    n.program_page(at(0, 0), &[7; 4096], &[7; 64]).unwrap();
    let (mut d, mut s) = (vec![0; 4096], vec![0; 64]);
    n.read_page(at(0, 0), &mut d, &mut s).unwrap();
    let st = n.stats();
    assert_eq!((st.reads, st.programs, st.erases), (1, 1, 1));
    assert_eq!((st.read_bytes, st.program_bytes), (4160, 4160));
    n.cut_power_after_ops(0);
    assert_eq!(
        n.program_page(at(0, 1), &[8; 4096], &[8; 64]),
        Err(NandErrorKind::PowerLost)
    );
    assert!(n.power_lost());
    assert_eq!(
        n.read_page(at(0, 0), &mut d, &mut s),
        Err(NandErrorKind::PowerLost)
    );
    let store = n.into_store();
    assert_eq!(store.state(at(0, 1)), PageState::Torn);
    let mut n = SimNand::with_store(store);
    n.read_page(at(0, 0), &mut d, &mut s).unwrap();
    assert_eq!(d, vec![7; 4096]);
    n.read_page(at(0, 1), &mut d, &mut s).unwrap();
    assert_ne!(d, vec![8; 4096], "a torn page never reads back as the data");
}

/// A cut after N programmed bytes skips reads and tears the program that passes N right
/// there: the bytes before it (data, then spare) as intended, the rest garbled.
#[test]
fn cut_by_program_bytes_tears_mid_page() {
    for cut in [0u64, 1, 2048, 4095, 4096, 4100, 4159] {
        let mut n = SimNand::new(G);
        n.erase_block(BlockId(0)).unwrap();
        n.program_page(at(0, 0), &[7; 4096], &[7; 64]).unwrap();
        n.cut_power_after_program_bytes(cut);
        let (mut d, mut s) = (vec![0; 4096], vec![0; 64]);
        n.read_page(at(0, 0), &mut d, &mut s).unwrap();
        n.read_page(at(0, 0), &mut d, &mut s).unwrap();
        assert!(!n.power_lost(), "reads do not count towards the cut");
        assert_eq!(
            n.program_page(at(0, 1), &[8; 4096], &[8; 64]),
            Err(NandErrorKind::PowerLost)
        );
        let store = n.into_store();
        assert_eq!(store.state(at(0, 1)), PageState::Torn);
        assert_eq!(store.load(at(0, 1), &mut d, &mut s), Ok(PageState::Torn));
        let page: Vec<u8> = d.iter().chain(&s).copied().collect();
        let cut = cut as usize;
        assert!(page[..cut].iter().all(|&b| b == 8), "cut at {cut}");
        assert!(page[cut..].iter().all(|&b| b == !8), "cut at {cut}");
    }
}
