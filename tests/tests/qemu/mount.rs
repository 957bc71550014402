//! The file system mounted with the device running on the Cortex-R52 in QEMU, over the serial
//! link: ordinary file I/O, an offload through `setxattr`, and a restart of QEMU on the same
//! image. Slow (every block crosses an emulated UART), so the data is small.

use std::path::Path;

use tests::{kernel_object, mount::Mount, reference, xattr};

fn set(path: &Path, name: &str, value: &str) {
    xattr::set(path, name, value)
        .unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", path.display()));
}

fn get(path: &Path, name: &str) -> Vec<u8> {
    xattr::get(path, name).unwrap_or_else(|e| panic!("getxattr {name} on {}: {e}", path.display()))
}

/// Files written through `csd mount --device qemu`, an entropy offload run on the board, and
/// everything read back after QEMU restarts on the same image; fsck is clean after each unmount.
#[test]
fn mount_over_qemu_offload_and_restart() {
    // The board's decoded log lands in the daemon log: proof that QEMU served the mount.
    let mut mount = Mount::new(&["--capacity", "16M"], &["--device", "qemu", "--board-log"]);
    let data: Vec<u8> = (0..40_000u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::create_dir(mount.path("kernels")).unwrap();
    std::fs::copy(kernel_object("entropy"), mount.path("kernels/entropy.o")).unwrap();
    std::fs::write(mount.path("data.bin"), &data).unwrap();
    std::fs::write(mount.path("notes.txt"), b"written through the Cortex-R52\n").unwrap();

    let file = mount.path("data.bin");
    set(&file, "user.csd.file_job", "/kernels/entropy.o");
    let histogram = get(&file, "user.csd.result");
    let expected = reference::histogram_bytes(&reference::entropy_histogram(&data));
    assert_eq!(
        histogram, expected,
        "the board's histogram differs from the host's"
    );

    // Unmount (QEMU stops), mount again (QEMU restarts over the same image file).
    mount.unmount_and_fsck();
    let ups = |log: &str| {
        log.matches("board: INFO  link: up on the Cortex-R52")
            .count()
    };
    assert_eq!(ups(&mount.log()), 1, "{}", mount.log());
    mount.mount();
    assert_eq!(std::fs::read(mount.path("data.bin")).unwrap(), data);
    assert_eq!(
        std::fs::read(mount.path("notes.txt")).unwrap(),
        b"written through the Cortex-R52\n"
    );
    mount.unmount_and_fsck();
    assert_eq!(ups(&mount.log()), 2, "QEMU restarted:\n{}", mount.log());
}
