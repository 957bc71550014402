//! The file-system commands of `csd`: `kernel run --file` on an unmounted image, `fsck
//! --json`, and a foreground mount that SIGTERM unmounts cleanly.

use std::{
    fs,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use testkit::hex;
use tests::{csd, csd_command, csd_json, csd_ok, kernel_object, mount::Mount, reference};

fn is_mounted(path: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let want = path.display().to_string();
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()) && l.contains(" - fuse"))
}

/// Unmounts lazily if a test stops with the mount still there.
struct Lazy<'a>(&'a Path);

impl Drop for Lazy<'_> {
    fn drop(&mut self) {
        if is_mounted(self.0) {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(self.0)
                .status();
        }
    }
}

/// `csd kernel run IMAGE entropy.o --file /data` runs the kernel over a file of an unmounted
/// image; `csd fsck --json` reports it clean afterwards.
#[test]
fn kernel_run_on_a_file_and_fsck_json() {
    let data: Vec<u8> = (0..500_000u32).map(|i| (i % 97) as u8).collect();
    let mut m = Mount::new(&[], &[]);
    fs::create_dir(m.path("dir")).expect("mkdir");
    fs::write(m.path("dir/data"), &data).expect("write");
    m.unmount();
    let image = m.image.display().to_string();
    let entropy = kernel_object("entropy").display().to_string();
    let json = csd_json([
        "kernel",
        "run",
        &image,
        &entropy,
        "--file",
        "/dir/data",
        "--json",
    ]);
    let want = reference::histogram_bytes(&reference::entropy_histogram(&data));
    assert_eq!(json["output_hex"], hex::encode(&want));
    assert_eq!(json["device_bytes_read"], data.len() as u64);
    let out = csd(["kernel", "run", &image, &entropy, "--file", "/missing"]);
    assert!(!out.status.success());
    let json = csd_json(["fsck", &image, "--json"]);
    assert_eq!(json["clean"], true, "{json}");
    assert_eq!(json["problems"].as_array().map(Vec::len), Some(0));
}

/// A foreground mount serves until SIGTERM, then unmounts, checkpoints and exits 0; the
/// data is there after the next mount.
#[test]
fn foreground_mount_unmounts_cleanly_on_sigterm() {
    let mut m = Mount::new(&[], &[]);
    m.unmount();
    let root = m.root.canonicalize().expect("mount point");
    let _lazy = Lazy(&root);
    let mut daemon = csd_command([
        "mount".as_ref(),
        m.image.as_os_str(),
        root.as_os_str(),
        "--foreground".as_ref(),
    ])
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("start csd mount --foreground");
    let started = Instant::now();
    while !is_mounted(&root) {
        assert!(
            daemon.try_wait().expect("wait").is_none(),
            "csd mount --foreground exited early"
        );
        assert!(started.elapsed() < Duration::from_secs(60), "no mount");
        std::thread::sleep(Duration::from_millis(20));
    }
    fs::write(root.join("kept"), b"through SIGTERM").expect("write");
    let status = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let out = daemon.wait_with_output().expect("daemon exits");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("SIGTERM") && log.contains("clean"), "{log}");
    assert!(!is_mounted(&root));
    csd_ok(["fsck", &m.image.display().to_string()]);
    m.mount();
    assert_eq!(fs::read(m.path("kept")).expect("read"), b"through SIGTERM");
    m.unmount_and_fsck();
}

/// `csd mount --json` names the daemon's pid, the mount point and the log; after writes and an
/// unmount, `csd zone map --json` of the image counts the file's blocks as the file system's
/// live data (the checkpoint zones 0 and 1 named as such, written zones holding blocks with
/// erase counts), and `--svg` draws a well-formed picture with one `rect.zone` per zone and a
/// legend for live data.
#[test]
fn mount_json_and_zone_map_of_a_file_system() {
    let mut m = Mount::new(&["--capacity", "16M"], &[]);
    m.unmount();
    let root = m.root.canonicalize().expect("mount point");
    let _lazy = Lazy(&root);
    let image = m.image.display().to_string();
    let log = m.dir().join("json-mount.log");
    let mounted = csd_json([
        "mount".as_ref(),
        m.image.as_os_str(),
        root.as_os_str(),
        "--log".as_ref(),
        log.as_os_str(),
        "--json".as_ref(),
    ]);
    assert_eq!(mounted["image"], image.as_str(), "{mounted}");
    assert_eq!(
        mounted["mountpoint"],
        root.display().to_string().as_str(),
        "{mounted}"
    );
    assert_eq!(
        mounted["log"],
        log.display().to_string().as_str(),
        "{mounted}"
    );
    let pid = mounted["pid"].as_u64().expect("a pid");
    assert!(is_mounted(&root));
    let data = vec![0x6bu8; 3 << 20];
    fs::write(root.join("big"), &data).expect("write");
    fs::write(root.join("gone"), vec![1u8; 1 << 20]).expect("write");
    fs::remove_file(root.join("gone")).expect("unlink");
    let status = Command::new("fusermount3")
        .arg("-u")
        .arg(&root)
        .status()
        .expect("fusermount3");
    assert!(status.success());
    let started = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the daemon {pid} did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let map = csd_json(["zone", "map", &image, "--json"]);
    assert_eq!(map["file_system"], true, "{map}");
    let zones = map["zones"].as_array().expect("zones");
    let live: u64 = zones
        .iter()
        .map(|z| z["live_blocks"].as_u64().expect("live blocks"))
        .sum();
    assert_eq!(live, (data.len() / 4096) as u64, "{map}");
    assert_eq!(zones[0]["role"], "checkpoint");
    assert_eq!(zones[1]["role"], "checkpoint");
    assert!(zones.iter().any(|z| z["role"] == "metadata"), "{map}");
    for z in zones {
        let erases = z["erase_counts"].as_array().expect("erase counts");
        assert_eq!(
            erases.is_empty(),
            z["written_lbas"] == 0,
            "written zones hold blocks, empty ones none: {z}"
        );
        assert!(
            z["live_blocks"].as_u64() <= z["written_lbas"].as_u64(),
            "{z}"
        );
    }

    let svg = m.dir().join("zones.svg");
    csd_ok(["zone", "map", &image, "--svg", &svg.display().to_string()]);
    let parsed = tests::svg::zone_map_summary(&svg);
    assert_eq!(
        parsed["zones"].as_array().map(Vec::len),
        Some(zones.len()),
        "{parsed}"
    );
    let legend = parsed["legend"][0].as_str().expect("a legend");
    assert!(legend.contains("live file data"), "{legend}");
    m.fsck().expect("the map leaves a clean file system");
}

/// While a mount runs over an image, every other `csd` command on that image is refused with
/// one line saying so (two devices over one image would each write it as their own); after
/// the unmount the same commands work and the file system is intact.
#[test]
fn an_image_in_use_is_refused() {
    let mut m = Mount::new(&[], &[]);
    fs::write(m.path("kept"), b"still here").expect("write");
    let image = m.image.display().to_string();
    for args in [
        vec!["zone", "report", image.as_str()],
        vec!["fsck", image.as_str()],
        vec!["device", "info", image.as_str()],
    ] {
        let out = csd(args.iter().copied());
        assert_eq!(out.status.code(), Some(1), "{args:?} while mounted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&image) && err.contains("in use by another csd process"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(fs::read(m.path("kept")).expect("read"), b"still here");
    m.unmount();
    let json = csd_json(["fsck", &image, "--json"]);
    assert_eq!(json["clean"], true, "{json}");
    m.mount();
    assert_eq!(fs::read(m.path("kept")).expect("read"), b"still here");
}

/// A mount on a running device shares it: zone reports and kernel runs work beside the mount,
/// a raw reset of one of the file system's zones is refused (Access Denied, naming the mount)
/// and the file is intact, the device will not stop while mounted, and fsck is clean after the
/// unmount and the stop.
#[test]
fn a_mount_shares_a_running_device() {
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut m = Mount::new(&[], &[]);
    m.unmount();
    let image = m.image.display().to_string();
    let mut device = tests::running::RunningDevice::start(&[], &m.image);
    m.mount();
    fs::write(m.path("data"), &data).expect("write");
    let json = csd_json(["zone", "report", &image, "--json"]);
    let zones = json.as_array().expect("zones");
    let used = zones
        .iter()
        .find(|z| z["state"] != "empty")
        .expect("the file system wrote a zone");
    let zone = used["zone"].as_u64().unwrap().to_string();
    let out = csd(["zone", "reset", &image, &zone]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Access Denied") && err.contains("csd mount on"),
        "{err}"
    );
    let err = device.stop().expect_err("a mounted device does not stop");
    assert!(err.contains("in use by csd mount"), "{err}");
    let entropy = kernel_object("entropy").display().to_string();
    // Offloads through the mount and raw kernel runs of another kernel take turns on the
    // device; each gets its own kernel's output.
    let other = kernel_object("xor").display().to_string();
    fs::copy(&entropy, m.path("entropy.o")).expect("copy kernel");
    let want = reference::histogram_bytes(&reference::entropy_histogram(&data));
    for _ in 0..2 {
        tests::xattr::set(&m.path("data"), "user.csd.file_job", "/entropy.o").expect("file job");
        let run = csd_json(["kernel", "run", &image, &other, "--zone", &zone, "--json"]);
        assert!(run["instructions"].as_u64().unwrap() > 0, "{run}");
        let got = tests::xattr::get(&m.path("data"), "user.csd.result").expect("result");
        assert_eq!(got, want);
    }
    assert_eq!(fs::read(m.path("data")).expect("read"), data);
    m.unmount();
    device.stop().expect("device stop");
    let json = csd_json(["fsck", &image, "--json"]);
    assert_eq!(json["clean"], true, "{json}");
    m.mount();
    assert_eq!(fs::read(m.path("data")).expect("read"), data);
}

/// An NVMe/TCP host obeys the running device's rules too: while the file system is mounted on
/// it, the host's Zone Append completes with Access Denied and the file is intact; after the
/// unmount the same append succeeds.
#[test]
fn nvme_tcp_writes_wait_for_the_mount() {
    use tests::nvme_host::{free_port, io_sqe, Host, SGL_IN_CAPSULE};
    const NQN: &str = "nqn.2026-12.dev.csd:fuse";
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 13) as u8).collect();
    let mut m = Mount::new(&[], &[]);
    m.unmount();
    let listen = format!("127.0.0.1:{}", free_port());
    let port: u16 = listen
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let device =
        tests::running::RunningDevice::start_with(&m.image, &["--nvme-tcp", &listen, "--nqn", NQN]);
    m.mount();
    fs::write(m.path("kept"), &data).expect("write");

    let mut admin = Host::connect(port);
    let cntlid = admin.fabrics_connect(NQN, 0, 0xffff).dw0 as u16;
    assert_eq!(admin.property(Some(1 | 6 << 16 | 4 << 20), 0x14).status, 0);
    let mut io = Host::connect(port);
    assert_eq!(io.fabrics_connect(NQN, 1, cntlid).status, 0);
    // The last zone: the file system has not written it.
    let zones = tests::csd_json(["zone", "report", &m.image.display().to_string(), "--json"]);
    let last = zones.as_array().and_then(|z| z.last()).expect("zones");
    let zslba = last["zslba"].as_u64().expect("zslba");
    let append = io_sqe(&mut io, 0x7d, zslba, 1, SGL_IN_CAPSULE, 4096);
    let (cqe, _) = io.call(&append, &[0x5a; 4096]);
    assert_eq!(cqe.status, 0x286, "Access Denied while mounted: {cqe:?}");
    assert_eq!(fs::read(m.path("kept")).expect("read"), data);
    m.unmount();
    let append = io_sqe(&mut io, 0x7d, zslba, 1, SGL_IN_CAPSULE, 4096);
    let (cqe, _) = io.call(&append, &[0x5a; 4096]);
    assert_eq!(cqe.status, 0, "allowed once unmounted: {cqe:?}");
    drop((admin, io));
    drop(device);
    m.mount();
    assert_eq!(fs::read(m.path("kept")).expect("read"), data);
}
