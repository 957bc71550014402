//! Corrupted device images: a tiny device holding a file system, damaged systematically in
//! every metadata structure: the image header (every bit of its checked fields, and absurd
//! values with a valid checksum), the page states, and every programmed page (the zone
//! manager's spare records and checkpoint log, the file system's checkpoints and log, file
//! data): raw bit flips the page checksum catches, torn and erased pages, and bit flips
//! re-sealed with a valid checksum so the decoders above the zone manager see them. Each gives
//! a clear error or a clean mount (fsck may report the damage), never a panic; afterwards the
//! device still serves and the file system can be used or made again.

use std::path::Path;

use crate::tally::{clear, Tally};
use firmware::{
    nand::{
        image::{Header, HEADER_BYTES},
        sim::{PageState, PageStore, RamStore},
        Geometry, PageAddr,
    },
    zns::ZoneConfig,
};
use host_shell::nand::file::ImageError;
use host_shell::{
    device::{create_image, DeviceError, FileDevice, RamDevice},
    driver::Driver,
    lfs::{InodeNo, Lfs},
};
use testkit::tiny_fs::{options, populate, populated, programmed_pages, zones, GEOMETRY};

/// Mounts the file system, checks it and uses it; if it cannot be mounted, the device must
/// still answer and take a new file system. `Err` only when something is mishandled.
fn exercise(driver: &Driver) -> Result<(), String> {
    match Lfs::mount(driver) {
        Ok(lfs) => {
            lfs.fsck().map_err(|e| format!("fsck could not run: {e}"))?;
            if let Err(e) = lfs
                .create(InodeNo::ROOT, b"new", 0o644, 0, 0)
                .and_then(|f| lfs.write(f.ino, 0, &[7u8; 5000]).map(|_| f))
                .and_then(|f| lfs.fsync(f.ino, false))
            {
                clear(&e.to_string())?;
            }
            if let Err(e) = lfs.unmount() {
                clear(&e.to_string())?;
            }
            Ok(())
        }
        Err(e) => {
            clear(&e.to_string())?;
            driver
                .all_zones()
                .map_err(|e| format!("the device stopped answering: {e}"))?;
            match Lfs::mkfs(driver, 0, 0) {
                Ok(()) => Lfs::mount(driver)
                    .map(|_| ())
                    .map_err(|e| format!("a new file system does not mount: {e}")),
                Err(e) => clear(&e.to_string()),
            }
        }
    }
}

fn closed<S: host_shell::device::Media>(
    device: host_shell::device::Device<S>,
) -> Result<(), String> {
    match device.close() {
        Err(DeviceError::Crashed) => Err("the device thread panicked".into()),
        _ => Ok(()),
    }
}

/// Opens the image file at `path` and exercises it.
fn open_file(path: &Path) -> Result<(), String> {
    match FileDevice::open(path, options()) {
        Err(e) => clear(&e.to_string()),
        Ok(device) => {
            let r = exercise(&device.driver());
            closed(device).and(r)
        }
    }
}

/// The undamaged image opens, mounts, checks clean and holds the tree `populate` wrote.
fn pristine(path: &Path) -> Result<(), String> {
    let device = FileDevice::open(path, options()).map_err(|e| format!("open: {e}"))?;
    let driver = device.driver();
    let lfs = Lfs::mount(&driver).map_err(|e| format!("mount: {e}"))?;
    let problems = lfs.fsck().map_err(|e| format!("fsck: {e}"))?;
    if !problems.is_empty() {
        return Err(format!("fsck found {problems:?}"));
    }
    let dir = lfs
        .lookup(InodeNo::ROOT, b"d")
        .map_err(|e| format!("d: {e}"))?;
    let a = lfs.lookup(dir.ino, b"a").map_err(|e| format!("d/a: {e}"))?;
    let data = lfs
        .read(a.ino, 0, 9000)
        .map_err(|e| format!("read d/a: {e}"))?;
    if data != [0xA5; 9000] {
        return Err("d/a does not hold what was written".into());
    }
    lfs.unmount().map_err(|e| format!("unmount: {e}"))?;
    closed(device)
}

/// The header: every bit of its checked bytes, absurd field values under a valid checksum,
/// page state bytes no image holds, and truncated files.
#[test]
fn corrupted_image_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("base.img");
    let header = Header {
        geometry: GEOMETRY,
        zones: zones(),
        timing_preset: 0,
    };
    create_image(&path, header).expect("create");
    let device = FileDevice::open(&path, options()).expect("open");
    populate(&device.driver());
    device.close().expect("close");
    let base = std::fs::read(&path).expect("read");
    let img = dir.path().join("hostile.img");
    let mut tally = Tally::new("image files");
    let try_bytes = |tally: &mut Tally, what: String, bytes: &[u8]| {
        std::fs::write(&img, bytes).expect("write the image");
        tally.check(what, || open_file(&img));
    };
    std::fs::write(&img, &base).expect("write the image");
    tally.check("the pristine image", || pristine(&img));
    // Bytes 0..80 are under the header's CRC and 80..84 are the CRC: any one flipped bit must
    // be refused as a bad header, before anything behind it is trusted.
    for i in 0..84 {
        for bit in 0..8 {
            let mut b = base.clone();
            b[i] ^= 1 << bit;
            std::fs::write(&img, &b).expect("write the image");
            tally.check(
                format!("header bit {bit} of byte {i}"),
                || match FileDevice::open(&img, options()) {
                    Err(DeviceError::Image(ImageError::Header { .. })) => Ok(()),
                    Err(e) => Err(format!("refused, but not as a bad header: {e}")),
                    Ok(_) => Err("a flipped header bit went unnoticed".into()),
                },
            );
        }
    }
    // Absurd zone configurations with a valid checksum.
    let absurd = [0u32, 1, 3, 1000, u32::MAX];
    for v in absurd {
        let variants: [(&str, ZoneConfig); 7] = [
            (
                "zone_blocks",
                ZoneConfig {
                    zone_blocks: v,
                    ..zones()
                },
            ),
            (
                "zone_cap",
                ZoneConfig {
                    zone_cap_lbas: Some(u64::from(v)),
                    ..zones()
                },
            ),
            (
                "nr_zones",
                ZoneConfig {
                    nr_zones: Some(v),
                    ..zones()
                },
            ),
            (
                "spare_blocks",
                ZoneConfig {
                    spare_blocks: v,
                    ..zones()
                },
            ),
            (
                "max_open",
                ZoneConfig {
                    max_open: v,
                    ..zones()
                },
            ),
            (
                "zasl",
                ZoneConfig {
                    zasl_lbas: v,
                    ..zones()
                },
            ),
            (
                "mdts",
                ZoneConfig {
                    mdts_lbas: v,
                    ..zones()
                },
            ),
        ];
        for (field, config) in variants {
            let mut b = base.clone();
            b[..HEADER_BYTES].copy_from_slice(
                &Header {
                    zones: config,
                    ..header
                }
                .encode(),
            );
            try_bytes(&mut tally, format!("{field} = {v}"), &b);
        }
    }
    // Geometries that do not match the file, with a valid checksum.
    let geometries = [
        (
            "channels = 2",
            Geometry {
                channels: 2,
                ..GEOMETRY
            },
        ),
        (
            "dies_per_channel = 3",
            Geometry {
                dies_per_channel: 3,
                ..GEOMETRY
            },
        ),
        (
            "blocks_per_die = 25",
            Geometry {
                blocks_per_die: 25,
                ..GEOMETRY
            },
        ),
        (
            "pages_per_block = 16",
            Geometry {
                pages_per_block: 16,
                ..GEOMETRY
            },
        ),
        (
            "spare_bytes = 32",
            Geometry {
                spare_bytes: 32,
                ..GEOMETRY
            },
        ),
    ];
    for (what, geometry) in geometries {
        let h = Header { geometry, ..header }.encode();
        assert!(
            Header::decode(&h).is_ok(),
            "{what}: the header itself is valid"
        );
        let mut b = base.clone();
        b[..HEADER_BYTES].copy_from_slice(&h);
        try_bytes(&mut tally, format!("geometry {what}"), &b);
    }
    for (page, value) in [(0usize, 4u8), (7, 0xFF), (100, 9)] {
        let mut b = base.clone();
        b[HEADER_BYTES + page] = value;
        try_bytes(&mut tally, format!("state byte {value} at page {page}"), &b);
    }
    for len in [
        0,
        7,
        8,
        100,
        HEADER_BYTES - 1,
        HEADER_BYTES,
        HEADER_BYTES + 5,
        base.len() - 1,
    ] {
        try_bytes(&mut tally, format!("image cut at {len}"), &base[..len]);
    }
    let mut longer = base.clone();
    longer.extend_from_slice(&[0; 4096]);
    try_bytes(&mut tally, "image extended".into(), &longer);
    tally.finish();
}

/// CRC-32C (Castagnoli), the page checksum of the zone manager's records.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Makes a damaged page valid again: the record's data and record checksums
/// (`firmware::zns::record`: data CRC at spare 20, record CRC over 0..24 at 24).
fn reseal(data: &[u8], spare: &mut [u8]) {
    spare[20..24].copy_from_slice(&crc32c(data).to_le_bytes());
    let rec = crc32c(&spare[..24]);
    spare[24..28].copy_from_slice(&rec.to_le_bytes());
}

#[derive(Clone, Copy, Debug)]
enum Damage {
    /// Raw bit flip in the data: the page checksum no longer matches.
    DataFlip(usize),
    /// Raw bit flip in the spare record.
    SpareFlip(usize),
    /// A bit flip in the data under a valid checksum: the contents are wrong.
    SealedDataFlip(usize),
    /// A record field changed under a valid checksum (zone, generation, offset, erase count).
    SealedRecordFlip(usize),
    Torn,
    Erased,
}

fn damaged(base: &RamStore, addr: PageAddr, damage: Damage) -> RamStore {
    let mut store = base.clone();
    let (mut data, mut spare) = (vec![0u8; 4096], vec![0u8; 64]);
    store
        .load(addr, &mut data, &mut spare)
        .expect("the image reads");
    let state = match damage {
        Damage::DataFlip(i) => {
            data[i] ^= 1 << (i % 8);
            PageState::Programmed
        }
        Damage::SpareFlip(i) => {
            spare[i] ^= 1 << (i % 8);
            PageState::Programmed
        }
        Damage::SealedDataFlip(i) => {
            data[i] ^= 1 << (i % 8);
            reseal(&data, &mut spare);
            PageState::Programmed
        }
        Damage::SealedRecordFlip(i) => {
            spare[i] ^= 1;
            reseal(&data, &mut spare);
            PageState::Programmed
        }
        Damage::Torn => PageState::Torn,
        Damage::Erased => {
            data.fill(0xFF);
            spare.fill(0xFF);
            PageState::Erased
        }
    };
    store
        .save(addr, &data, &spare, state)
        .expect("the image takes the page");
    store
}

/// Every programmed page of a small file system, damaged in every way above.
#[test]
fn corrupted_pages() {
    let base = populated();
    let programmed = programmed_pages(&base);
    let mut damages = vec![
        Damage::DataFlip(0),
        Damage::DataFlip(4095),
        Damage::SpareFlip(0),
        Damage::SpareFlip(27),
        Damage::Torn,
        Damage::Erased,
    ];
    // Record fields: kind, index/count, zone, generation/sequence, offset, erase count.
    damages.extend([0, 2, 4, 8, 12, 16].map(Damage::SealedRecordFlip));
    // Headers of the file system's checkpoint and log blocks, then a sample of the rest.
    damages.extend(
        (0..48)
            .chain([64, 100, 512, 2048, 4095])
            .map(Damage::SealedDataFlip),
    );
    let mut tally = Tally::new("damaged pages");
    for &addr in &programmed {
        for &damage in &damages {
            let store = damaged(&base, addr, damage);
            tally.check(
                format!("{damage:?} at {addr:?}"),
                || match RamDevice::mount(store, zones(), options(), "hostile") {
                    Err(e) => clear(&e.to_string()),
                    Ok(device) => {
                        let r = exercise(&device.driver());
                        closed(device).and(r)
                    }
                },
            );
        }
    }
    tally.finish();
}

/// A header whose counts multiply past even u64 is refused as too many pages, not an
/// arithmetic overflow (found by the mount_image fuzz target).
#[test]
fn geometry_counts_past_u64_are_refused() {
    let geometry = Geometry {
        channels: u32::MAX,
        dies_per_channel: u32::MAX,
        blocks_per_die: u32::MAX,
        pages_per_block: u32::MAX,
        ..GEOMETRY
    };
    let h = Header {
        geometry,
        zones: zones(),
        timing_preset: 0,
    }
    .encode();
    assert!(
        matches!(
            Header::decode(&h),
            Err(firmware::nand::image::HeaderError::BadGeometry(_))
        ),
        "{:?}",
        Header::decode(&h)
    );
}
