//! Mounting damaged media: a tiny device holding a file system, damaged by the fuzzer, then
//! power-on recovery of the zone manager, the file system's mount and fsck, and a write to
//! show the device still serves. Never a panic or a hang, only a clear error.
//!
//! First byte: which level.
//! - even: the image file. The rest overwrites the start of the image file (header, page
//!   states); with the second byte odd, the header's CRC is recomputed first so the fields
//!   behind it are reached. Then `FileDevice::open`, `Lfs::mount`, `fsck`.
//! - odd: the NAND pages. The rest is a list of damages (`arbitrary`) to programmed pages of
//!   the RAM image (bit flips in the data or spare area, torn or erased pages): the zone
//!   manager's spare records and checkpoints, the file system's checkpoint and log all live
//!   there. Then `RamDevice::mount`, `Lfs::mount`, `fsck`.
#![no_main]

use std::{path::PathBuf, sync::OnceLock};

use arbitrary::{Arbitrary, Unstructured};
use firmware::nand::{
    sim::{PageState, PageStore, RamStore},
    PageAddr,
};
use host_shell::{
    device::{FileDevice, RamDevice},
    driver::Driver,
    lfs::{InodeNo, Lfs},
    nand::{file::FileStore, image::Header},
};
use libfuzzer_sys::fuzz_target;

use testkit::tiny_fs::{options, populated, programmed_pages, zones, GEOMETRY};

/// The pristine media: formatted, a file system with a directory and two files (one synced,
/// one left in the log), unmounted cleanly.
struct Base {
    store: RamStore,
    programmed: Vec<PageAddr>,
    file: Vec<u8>,
    path: PathBuf,
}

fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| {
        let store = populated();
        let programmed = programmed_pages(&store);
        // The same media as an image file.
        let dir = std::env::temp_dir().join(format!("csd-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("base.img");
        let _ = std::fs::remove_file(&path);
        let mut fs = FileStore::create(
            &path,
            Header {
                geometry: GEOMETRY,
                zones: zones(),
                timing_preset: 0,
            },
        )
        .expect("image");
        let (mut data, mut spare) = (vec![0u8; 4096], vec![0u8; 64]);
        for &addr in &programmed {
            store
                .load(addr, &mut data, &mut spare)
                .expect("RAM stores never fail");
            fs.save(addr, &data, &spare, PageState::Programmed)
                .expect("the store takes the page");
        }
        drop(fs);
        let file = std::fs::read(&path).expect("read image");
        Base {
            store,
            programmed,
            file,
            path: dir.join("fuzz.img"),
        }
    })
}

/// Mounts the file system, checks it and writes to it; every error is acceptable, a panic
/// anywhere (this thread or the device's) is not.
fn exercise(driver: &Driver) {
    let Ok(lfs) = Lfs::mount(driver) else {
        // The device itself must still answer.
        let _ = driver.all_zones();
        return;
    };
    let _ = lfs.fsck();
    if let Ok(entries) = lfs.readdir(InodeNo::ROOT, 0) {
        for e in entries.iter().take(8) {
            if let Ok(attr) = lfs.getattr(e.ino) {
                let _ = lfs.read(attr.ino, 0, attr.size.min(1 << 16) as u32);
            }
        }
    }
    if let Ok(f) = lfs.create(InodeNo::ROOT, b"new", 0o644, 0, 0) {
        let _ = lfs.write(f.ino, 0, &[7u8; 5000]);
        let _ = lfs.fsync(f.ino, false);
    }
    let _ = lfs.unmount();
}

fn image_level(rest: &[u8]) {
    let Some((&fix_crc, patch)) = rest.split_first() else {
        return;
    };
    let b = base();
    let mut file = b.file.clone();
    let n = patch.len().min(file.len());
    file[..n].copy_from_slice(&patch[..n]);
    if patch.len() > file.len() {
        file.extend_from_slice(&patch[file.len()..]);
    } else if patch.len() < 84 && fix_crc & 2 == 2 {
        // A short file: the header itself truncated.
        file.truncate(patch.len());
    }
    if fix_crc & 1 == 1 && file.len() >= 84 {
        let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&file[..80]);
        file[80..84].copy_from_slice(&crc.to_le_bytes());
    }
    std::fs::write(&b.path, &file).expect("write the image");
    let Ok(device) = FileDevice::open(&b.path, options()) else {
        return;
    };
    exercise(&device.driver());
    let _ = device.close();
}

#[derive(Debug, Arbitrary)]
enum Damage {
    Flip {
        page: u16,
        offset: u16,
        xor: u8,
        spare: bool,
    },
    Torn {
        page: u16,
    },
    Erased {
        page: u16,
    },
}

/// Changes a page's data and spare bytes and says its new state.
type Mutate<'a> = &'a dyn Fn(&mut [u8], &mut [u8]) -> PageState;

fn page_level(rest: &[u8]) {
    let Ok(damages) = Vec::<Damage>::arbitrary_take_rest(Unstructured::new(rest)) else {
        return;
    };
    let b = base();
    let mut store = b.store.clone();
    let (mut data, mut spare) = (vec![0u8; 4096], vec![0u8; 64]);
    for d in damages.iter().take(32) {
        let (page, f): (u16, Mutate<'_>) = match d {
            Damage::Flip {
                page,
                offset,
                xor,
                spare,
            } => {
                let (offset, xor, in_spare) = (*offset, (*xor).max(1), *spare);
                (*page, &move |d: &mut [u8], s: &mut [u8]| {
                    if in_spare {
                        s[usize::from(offset) % s.len()] ^= xor;
                    } else {
                        d[usize::from(offset) % d.len()] ^= xor;
                    }
                    PageState::Programmed
                })
            }
            Damage::Torn { page } => (*page, &|_: &mut [u8], _: &mut [u8]| PageState::Torn),
            Damage::Erased { page } => (*page, &|d: &mut [u8], s: &mut [u8]| {
                d.fill(0xFF);
                s.fill(0xFF);
                PageState::Erased
            }),
        };
        let addr = b.programmed[usize::from(page) % b.programmed.len()];
        let state = store
            .load(addr, &mut data, &mut spare)
            .expect("the store reads");
        if state != PageState::Programmed {
            continue;
        }
        let new = f(&mut data, &mut spare);
        store
            .save(addr, &data, &spare, new)
            .expect("the store takes the page");
    }
    let Ok(device) = RamDevice::mount(store, zones(), options(), "fuzz") else {
        return;
    };
    exercise(&device.driver());
    let _ = device.close();
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((mode, rest)) if mode & 1 == 1 => page_level(rest),
        Some((_, rest)) => image_level(rest),
        None => {}
    }
});
