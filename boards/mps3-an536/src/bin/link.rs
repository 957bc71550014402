//! The device: mounts (or formats) the zone manager over the NAND, builds the controller and
//! serves the host shell's commands over UART0 with framed postcard messages.
//!
//! Semihosting arguments: `link [IMAGE]`. With IMAGE, the NAND lives in that host file (created
//! and formatted if it does not exist), so the device survives a QEMU restart; without it, in
//! board memory. Logs go out through defmt on semihosting standard output.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::ffi::CString;

use firmware::controller::{Controller, ProgramConfig};
use firmware::nand::image::Header;
use firmware::nand::sim::{RamStore, SimNand};
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
    defmt::info!(
        "link: {} zones of {} LBAs, serving on UART0",
        layout.nr_zones,
        layout.zone_size
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
                Ok(z) => z,
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
    ZoneManager::format(SimNand::with_store(BoardStore::File(store)), config)
        .unwrap_or_else(|e| fail("could not format the NAND image", &e))
}

fn fail(what: &str, why: &dyn core::fmt::Debug) -> ! {
    semihosting::eprintln!("link: {what}: {why:?}");
    mps3_an536::exit(1)
}
