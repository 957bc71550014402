//! The device through its queues: image files, reopening, several queues from several threads.

use common::{zns::ZoneState, Status, LBA_BYTES};
use host_shell::{
    device::{create_image, DeviceError, DeviceOptions, FileDevice, RamDevice},
    lfs::{InodeNo, Lfs},
    nand::{file::ImageError, image::Header, preset::Preset},
};
use testkit::{fs::*, geometry, rng::pattern};

fn small_header() -> Header {
    let geometry = geometry::small();
    Header {
        geometry,
        zones: geometry::zones_for(&geometry),
        timing_preset: 0,
    }
}

/// A device in RAM of the small geometry.
fn small_ram_device() -> RamDevice {
    let geometry = geometry::small();
    RamDevice::in_ram(
        geometry,
        geometry::zones_for(&geometry),
        DeviceOptions::default(),
    )
    .expect("the device starts")
}

fn block(fill: u8) -> Vec<u8> {
    vec![fill; LBA_BYTES as usize]
}

/// Appends survive closing the device and opening the image again in a new device.
#[test]
fn image_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dev.img");
    create_image(&path, small_header()).unwrap();

    let device = FileDevice::open(&path, DeviceOptions::default()).unwrap();
    let driver = device.driver();
    let zone = driver.all_zones().unwrap()[1];
    let a = driver
        .append(zone.zslba, [block(1), block(2)].concat())
        .unwrap();
    let b = driver.append(zone.zslba, block(3)).unwrap();
    assert_eq!((a, b), (zone.zslba, zone.zslba + 2));
    device.close().unwrap();

    let device = FileDevice::open(&path, DeviceOptions::default()).unwrap();
    let driver = device.driver();
    assert_eq!(
        driver.read(zone.zslba, 3).unwrap(),
        [block(1), block(2), block(3)].concat()
    );
    let after = driver.all_zones().unwrap()[1];
    assert_eq!(after.wp, zone.zslba + 3);
    assert_eq!(
        after.state,
        ZoneState::Closed,
        "an open zone comes back Closed after power-off"
    );
}

/// A device refuses to create over an existing file, and refuses files that are not images.
#[test]
fn bad_images_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dev.img");
    create_image(&path, small_header()).unwrap();
    assert!(matches!(
        create_image(&path, small_header()),
        Err(DeviceError::Image(ImageError::Exists { .. }))
    ));

    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    let err = FileDevice::open(&text, DeviceOptions::default()).unwrap_err();
    assert!(
        matches!(err, DeviceError::Image(ImageError::Header { .. })),
        "{err}"
    );

    // A flipped byte in the header's geometry fails its checksum.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 0x01;
    let corrupt = dir.path().join("corrupt.img");
    std::fs::write(&corrupt, &bytes).unwrap();
    let err = FileDevice::open(&corrupt, DeviceOptions::default()).unwrap_err();
    assert!(err.to_string().contains("corrupt"), "{err}");

    // A truncated image is refused with both lengths named.
    let short = dir.path().join("short.img");
    std::fs::write(&short, &std::fs::read(&path).unwrap()[..8192]).unwrap();
    let err = FileDevice::open(&short, DeviceOptions::default()).unwrap_err();
    assert!(
        matches!(err, DeviceError::Image(ImageError::WrongLength { .. })),
        "{err}"
    );
}

/// Four threads on four queues append to their own zones at once; every completion matches
/// its command and every block lands in its own zone.
#[test]
fn queues_from_many_threads() {
    let device = small_ram_device();
    let zones = device.driver().all_zones().unwrap();
    std::thread::scope(|s| {
        for t in 0..4u16 {
            let driver = device.driver_on(t);
            let zslba = zones[usize::from(t)].zslba;
            s.spawn(move || {
                for i in 0..32u8 {
                    let lba = driver.append(zslba, block(t as u8 * 64 + i)).unwrap();
                    assert_eq!(lba, zslba + u64::from(i));
                }
            });
        }
    });
    let driver = device.driver();
    for t in 0..4u8 {
        let data = driver.read(zones[usize::from(t)].zslba, 32).unwrap();
        for (i, chunk) in data.chunks(LBA_BYTES as usize).enumerate() {
            assert!(chunk.iter().all(|&b| b == t * 64 + i as u8));
        }
    }
    let stats = device.stats();
    assert!(stats.commands >= 4 * 32 + 5);
    assert!(stats.link_to_device_bytes >= 4 * 32 * u64::from(LBA_BYTES));
}

/// Device errors come back typed and name the command: a write away from the write pointer.
#[test]
fn device_errors_are_typed() {
    let device = small_ram_device();
    let driver = device.driver();
    let err = driver.write(5, &block(0)).unwrap_err();
    assert_eq!(err.status(), Some(Status::ZoneInvalidWrite));
    assert_eq!(err.to_string(), "Write failed: Zone Invalid Write (1BCh)");
}

/// The file system persists in an image file across closing and reopening the device.
#[test]
fn image_file_persists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fs.img");
    let geometry = geometry::small();
    create_image(
        &path,
        Header {
            geometry,
            zones: geometry::zones_for(&geometry),
            timing_preset: 0,
        },
    )
    .expect("image");
    let device = FileDevice::open(&path, DeviceOptions::default()).expect("open");
    Lfs::mkfs(&device.driver(), 0, 0).expect("mkfs");
    let lfs = Lfs::mount(&device.driver()).expect("mount");
    let d = lfs
        .mkdir(InodeNo::ROOT, b"docs", 0o755, 0, 0)
        .expect("mkdir");
    let f = lfs.create(d.ino, b"readme", 0o644, 0, 0).expect("create");
    let data = pattern(4, 100_000);
    lfs.write(f.ino, 0, &data).expect("write");
    lfs.unmount().expect("unmount");
    device.close().expect("close");
    let device = FileDevice::open(&path, DeviceOptions::default()).expect("reopen");
    let lfs = Lfs::mount(&device.driver()).expect("mount");
    assert_clean(&lfs);
    let f = walk(&lfs, "/docs/readme").expect("lookup");
    assert_eq!(read_all(&lfs, f.ino), data);
}

/// The tests' small geometry (`testkit`, which does not depend on this crate) is the small
/// preset at 16 MiB.
#[test]
fn testkit_small_is_the_small_preset() {
    assert_eq!(
        Preset::Small.geometry(16 << 20).expect("16 MiB fits"),
        geometry::small()
    );
}
