//! The device: mounts (or formats) the zone manager over the NAND, builds the controller and
//! serves the host shell's commands over UART0 with framed postcard messages.
//!
//! Semihosting arguments: `link [IMAGE]`. With IMAGE, the NAND lives in that host file (created
//! and formatted if it does not exist), so the device survives a QEMU restart; without it, in
//! board memory. Logs go out through defmt on semihosting standard output (the host shell
//! decodes them with this ELF): the geometry it came up with, what mounting found, and faults.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::ffi::CString;

use common::zns::ZoneState;
use firmware::controller::{Controller, ProgramConfig};
use firmware::nand::image::Header;
use firmware::nand::sim::{RamStore, SimNand};
use firmware::nand::BlockId;
use firmware::zns::{MountError, ZoneConfig, ZoneManager};
use mps3_an536::image::FileStore;
use mps3_an536::serve::Server;
use mps3_an536::store::{BoardStore, BOARD_GEOMETRY};
use mps3_an536::uart::Uart;

type BoardNand = SimNand<BoardStore>;

#[aarch32_rt::entry]
fn main() -> ! {
    mps3_an536::init_heap();
    let zones = match image_path() {
        Some(path) => file_device(&path),
        None => {
            defmt::info!("link: NAND in board memory");
            let nand = SimNand::with_store(BoardStore::Ram(RamStore::new(BOARD_GEOMETRY)));
            let config = ZoneConfig::for_geometry(&BOARD_GEOMETRY);
            match ZoneManager::format(nand, config) {
                Ok(z) => z,
                Err(e) => fail("could not format the board-memory NAND", &e),
            }
        }
    };
    let layout = *zones.layout();
    let g = layout.geometry;
    defmt::info!(
        "link: up on the {=str}: NAND of {} channels x {} dies x {} blocks x {} pages of {} bytes",
        env!("CSD_BOARD_CORE"),
        g.channels,
        g.dies_per_channel,
        g.blocks_per_die,
        g.pages_per_block,
        g.page_bytes
    );
    defmt::info!(
        "link: {} zones of {} LBAs (capacity {}), at most {} open and {} active; serving on UART0",
        layout.nr_zones,
        layout.zone_size,
        layout.zone_cap,
        layout.config.max_open,
        layout.config.max_active
    );
    let controller = Controller::new(zones, ProgramConfig::default());
    let Some(mut uart) = Uart::take_uart0() else {
        fail("UART0 is taken", &"")
    };
    Server::new(controller).run(&mut uart)
}

/// The image path from the semihosting command line, if one was given.
fn image_path() -> Option<CString> {
    let args = semihosting::experimental::env::args::<1024>().ok()?;
    let path = (&args).nth(1)?.ok()?;
    CString::new(path).ok()
}

/// Opens the image at `path` and mounts it, or creates and formats it.
fn file_device(path: &CString) -> ZoneManager<BoardNand> {
    match FileStore::open(path) {
        Ok(store) => {
            let config = store.header().zones;
            defmt::info!("link: NAND image opened");
            match ZoneManager::mount(SimNand::with_store(BoardStore::File(store)), config) {
                Ok(z) => {
                    log_mount(&z);
                    z
                }
                Err(MountError::Unformatted) => {
                    defmt::info!("link: the image is blank, formatting it");
                    let store = FileStore::open(path)
                        .unwrap_or_else(|e| fail("could not reopen the NAND image", &e));
                    format(store)
                }
                Err(e) => fail("could not mount the NAND image", &e),
            }
        }
        Err(mps3_an536::image::ImageError::Io(_)) => {
            defmt::info!("link: no NAND image yet, creating one");
            let header = Header {
                geometry: BOARD_GEOMETRY,
                zones: ZoneConfig::for_geometry(&BOARD_GEOMETRY),
                timing_preset: 0,
            };
            let store = FileStore::create(path, header)
                .unwrap_or_else(|e| fail("could not create the NAND image", &e));
            format(store)
        }
        Err(e) => fail("could not open the NAND image", &e),
    }
}

fn format(store: FileStore) -> ZoneManager<BoardNand> {
    let config = store.header().zones;
    let zones = ZoneManager::format(SimNand::with_store(BoardStore::File(store)), config)
        .unwrap_or_else(|e| fail("could not format the NAND image", &e));
    defmt::info!("link: formatted the NAND image");
    zones
}

/// Logs what power-on recovery rebuilt from the image: the zones holding data by state, and
/// the blocks retired as bad.
fn log_mount(zones: &ZoneManager<BoardNand>) {
    let layout = zones.layout();
    let (mut open, mut closed, mut full, mut read_only, mut offline) =
        (0u32, 0u32, 0u32, 0u32, 0u32);
    for zone in 0..layout.nr_zones {
        match zones.zone(zone).map(|d| d.state) {
            Some(ZoneState::ImplicitlyOpened | ZoneState::ExplicitlyOpened) => open += 1,
            Some(ZoneState::Closed) => closed += 1,
            Some(ZoneState::Full) => full += 1,
            Some(ZoneState::ReadOnly) => read_only += 1,
            Some(ZoneState::Offline) => offline += 1,
            Some(ZoneState::Empty) | None => {}
        }
    }
    let bad = (0..layout.geometry.blocks())
        .filter(|&b| zones.is_bad(BlockId(b)))
        .count();
    defmt::info!(
        "link: mounted the NAND image: {} open, {} closed, {} full, {} read-only and {} offline zones; {} bad blocks",
        open,
        closed,
        full,
        read_only,
        offline,
        bad as u32
    );
}

/// Reports a failure to start (on standard error as text, and in the defmt log) and ends the
/// run with status 1.
fn fail(what: &str, why: &dyn core::fmt::Debug) -> ! {
    defmt::error!("link: {=str}: {}", what, defmt::Debug2Format(why));
    semihosting::eprintln!("link: {what}: {why:?}");
    mps3_an536::exit(1)
}
