//! `cargo xtask guest`: a Linux guest attaches a running csd device over NVMe/TCP with Linux's
//! own nvme-tcp driver, and what it sees is checked.
//!
//! The guest is built from Debian packages and cached under `target/guest/`: the kernel of
//! `linux-image-cloud-amd64` (downloaded with `apt-get download`, unpacked with `dpkg-deb`),
//! and an initramfs of busybox-static, the kernel's virtio-net and NVMe/TCP modules, and this
//! machine's `nvme` (nvme-cli), `fio` and `blkzone` with the libraries `ldd` names (the guest
//! runs the same Debian release). Its init script is `xtask/src/guest/init.sh`. QEMU
//! (`qemu-system-x86_64`, TCG: KVM opens on this machine kind but a guest under it stops)
//! boots it with a user-mode network whose gateway is the host's loopback, where `csd device
//! start --nvme-tcp` listens.
//!
//! Checked from the guest's console: `nvme discover` lists the subsystem; the connect succeeds; `nvme list` shows the device; the
//! block layer sees a host-managed zoned disk; `blkzone report` lists sequential-write-required
//! zones; fio in zbd mode writes 4 MiB and verifies it, then verifies it again with 16 reads
//! in flight; the zone report the guest reads
//! after fio (`nvme zns report-zones`) matches `csd zone report` of the running device, zone
//! by zone; and the entropy kernel, loaded and run with `nvme admin-passthru` and
//! `io-passthru`, returns the same histogram of fio's 4 MiB as `csd kernel run` on the running
//! device twice: through this project's vendor-specific Load and Execute Program, and through
//! the Computational Programs commands (Load Program, Program Activation Management, Memory
//! Range Set Management, then Execute Program and Memory Read on the generic char devices Linux
//! makes for the compute and memory namespaces), whose completion carries the kernel's return
//! value.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};

use crate::cmd;

/// The guest's init script.
const INIT: &str = include_str!("guest/init.sh");
/// The subsystem name the device serves.
const NQN: &str = "nqn.2026-12.dev.csd:guest";
/// The modules the init script loads, by path under the kernel's module tree.
const MODULES: [&str; 10] = [
    "drivers/virtio/virtio_ring",
    "drivers/virtio/virtio",
    "drivers/virtio/virtio_pci_modern_dev",
    "drivers/virtio/virtio_pci_legacy_dev",
    "drivers/virtio/virtio_pci",
    "net/core/failover",
    "drivers/net/net_failover",
    "drivers/net/virtio_net",
    "drivers/nvme/host/nvme-fabrics",
    "drivers/nvme/host/nvme-tcp",
];
/// This machine's programs the guest runs, with their libraries.
const PROGRAMS: [&str; 3] = ["/usr/sbin/nvme", "/usr/bin/fio", "/usr/sbin/blkzone"];
/// How long the guest may take, boot to power-off.
const GUEST_TIMEOUT: Duration = Duration::from_secs(300);

pub fn run() -> Result<()> {
    let root = crate::root();
    let dir = root.join("target/guest");
    fs::create_dir_all(&dir)?;
    let kernel = kernel(&dir)?;
    let entropy = crate::kernels::build()?
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == "entropy.o"))
        .context("cargo xtask kernels built no entropy.o")?;
    let initrd = initramfs(&dir, &kernel, &entropy)?;
    cmd::run(cmd::cargo(&root).args(["build", "--locked", "-p", "host-shell", "--bin", "csd"]))?;
    let csd = root.join("target/debug/csd");

    let work = dir.join("run");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let image = work.join("dev.img");
    cmd::run(
        Command::new(&csd)
            .arg("device")
            .arg("create")
            .arg(&image)
            .args(["--capacity", "256M"]),
    )?;
    let port = free_port()?;
    let listen = format!("127.0.0.1:{port}");
    cmd::run(
        Command::new(&csd)
            .arg("device")
            .arg("start")
            .arg(&image)
            .args(["--nvme-tcp", &listen, "--nqn", NQN]),
    )?;
    let device = Running {
        csd: csd.clone(),
        image: image.clone(),
    };

    let console = dir.join("console.log");
    let started = Instant::now();
    boot(&kernel.vmlinuz, &initrd, port, &console)?;
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&fs::read(&console)?).into_owned();
    let host_zones = cmd::output(
        Command::new(&csd)
            .arg("zone")
            .arg("report")
            .arg(&image)
            .arg("--json"),
    )?;
    // The same kernel over the same 4 MiB, run by csd on the running device.
    let host_run = cmd::output(
        Command::new(&csd)
            .args(["kernel", "run"])
            .arg(&image)
            .arg(&entropy)
            .args(["--lba", "0", "--len", "4194304", "--json"]),
    )?;
    drop(device);
    // The target's log names each connection's digests: the last ones asked for both.
    let log = image.with_extension("img.log");
    let log = fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
    ensure!(
        log.contains("header and data digests"),
        "no connection with header and data digests in the device's log"
    );

    check(&text, &host_zones, &host_run).with_context(|| {
        format!(
            "the guest's console ({}) does not show what it should",
            console.display()
        )
    })?;
    let up = guest_line(&text, "up").unwrap_or("?");
    eprintln!(
        "guest: Linux's nvme-tcp driver attached the device (userland up {up} s after boot, \
         {:.1} s boot to power-off); host-managed zoned disk; fio zbd wrote and verified 4 MiB; \
         its zone report matches csd's; the entropy kernel run through nvme io-passthru gave \
         csd kernel run's histogram, with the vendor-specific commands and with the \
         Computational Programs commands; with header and data digests fio wrote and verified \
         4 MiB",
        took.as_secs_f64()
    );
    Ok(())
}

/// Stops the running device when dropped.
struct Running {
    csd: PathBuf,
    image: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new(&self.csd)
            .arg("device")
            .arg("stop")
            .arg(&self.image)
            .stdout(Stdio::null())
            .status();
    }
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The guest's kernel and its module tree.
struct Kernel {
    vmlinuz: PathBuf,
    modules: PathBuf,
}

/// The kernel of linux-image-cloud-amd64, downloaded and unpacked once.
fn kernel(dir: &Path) -> Result<Kernel> {
    let unpacked = dir.join("kernel");
    let found = || -> Option<Kernel> {
        let boot = fs::read_dir(unpacked.join("boot")).ok()?;
        let vmlinuz = boot.filter_map(|e| e.ok().map(|e| e.path())).find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })?;
        let version = vmlinuz
            .file_name()?
            .to_string_lossy()
            .strip_prefix("vmlinuz-")?
            .to_string();
        let modules = unpacked.join("lib/modules").join(version).join("kernel");
        modules.is_dir().then_some(Kernel { vmlinuz, modules })
    };
    if let Some(k) = found() {
        return Ok(k);
    }
    // The metapackage names the kernel package of the release.
    let depends =
        cmd::output(Command::new("apt-cache").args(["depends", "linux-image-cloud-amd64"]))?;
    let package = depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .context("linux-image-cloud-amd64 names no kernel package (run `apt-get update`)")?
        .to_string();
    let download = |dir: &Path| {
        cmd::run(
            Command::new("apt-get")
                .args(["download", "-q", &package])
                .current_dir(dir),
        )
    };
    if download(dir).is_err() {
        cmd::run(Command::new("apt-get").args(["update", "-q"]))?;
        download(dir)?;
    }
    let deb = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
        })
        .with_context(|| format!("apt-get download left no {package} package"))?;
    let _ = fs::remove_dir_all(&unpacked);
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    let _ = fs::remove_file(&deb);
    found().with_context(|| format!("{package} holds no vmlinuz and module tree"))
}

/// The initramfs, rebuilt when the init script changed.
fn initramfs(dir: &Path, kernel: &Kernel, entropy: &Path) -> Result<PathBuf> {
    let out = dir.join("initrd.gz");
    let stamp = dir.join("initrd.init");
    let object = fs::read(entropy).with_context(|| {
        format!(
            "could not read {} (`cargo xtask kernels`)",
            entropy.display()
        )
    })?;
    // The init script, the modules and the kernel object it runs: rebuilt when one changed.
    let made_from = format!("{INIT}\n{MODULES:?}\n{:?}", object);
    if out.is_file() && fs::read_to_string(&stamp).ok().as_deref() == Some(made_from.as_str()) {
        return Ok(out);
    }
    let tree = dir.join("initramfs");
    let _ = fs::remove_dir_all(&tree);
    for sub in ["bin", "modules", "proc", "sys", "dev", "tmp"] {
        fs::create_dir_all(tree.join(sub))?;
    }
    copy(Path::new("/usr/bin/busybox"), &tree.join("bin/busybox"))?;
    // The modules, and `modules/order`: their names in MODULES's order, which init loads.
    let mut order = String::new();
    for module in MODULES {
        let name = Path::new(module).file_name().context("a module name")?;
        let mut to = tree.join("modules").join(name);
        to.set_extension("ko");
        copy(&kernel.modules.join(format!("{module}.ko")), &to)?;
        order.push_str(&format!("{}\n", name.to_string_lossy()));
    }
    fs::write(tree.join("modules/order"), order)?;
    for program in PROGRAMS {
        let program = Path::new(program);
        copy(
            program,
            &tree
                .join("bin")
                .join(program.file_name().context("a name")?),
        )?;
        let libraries = cmd::output(Command::new("ldd").arg(program))?;
        for lib in libraries.split_whitespace().filter(|w| w.starts_with('/')) {
            let lib = Path::new(lib);
            copy(lib, &tree.join(lib.strip_prefix("/")?))?;
        }
    }
    fs::create_dir_all(tree.join("kernels"))?;
    fs::write(tree.join("kernels/entropy.o"), &object)?;
    let init = tree.join("init");
    fs::write(&init, INIT)?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755))?;
    cmd::run(
        Command::new("sh")
            .arg("-c")
            .arg("find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 > \"$0\"")
            .arg(&out)
            .current_dir(&tree),
    )?;
    fs::write(&stamp, made_from)?;
    Ok(out)
}

/// Copies a file (following links), making its directory.
fn copy(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(from, to).with_context(|| {
        format!(
            "could not copy {} into the guest (is it installed? `cargo xtask deps`)",
            from.display()
        )
    })?;
    Ok(())
}

/// Boots the guest until it powers off, its console in `console`.
fn boot(vmlinuz: &Path, initrd: &Path, port: u16, console: &Path) -> Result<()> {
    let append = format!("console=ttyS0 quiet panic=-1 csd.port={port} csd.nqn={NQN}");
    let log = fs::File::create(console)?;
    let mut qemu = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-m",
            "1024",
            "-nographic",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", &append])
        .args([
            "-netdev",
            "user,id=net0",
            "-device",
            "virtio-net-pci,netdev=net0",
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("could not start qemu-system-x86_64 (install it with `cargo xtask deps`)")?;
    let started = Instant::now();
    loop {
        if let Some(status) = qemu.try_wait()? {
            ensure!(status.success(), "QEMU exited with {status}");
            return Ok(());
        }
        if started.elapsed() > GUEST_TIMEOUT {
            let _ = qemu.kill();
            let _ = qemu.wait();
            bail!(
                "the guest did not power off within {} s",
                GUEST_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One zone as the guest's `nvme zns report-zones` printed it: start, write pointer, state
/// (the descriptor's byte, state in bits 7:4).
fn guest_zones(text: &str) -> Vec<(u64, u64, u8)> {
    let after = text.split("GUEST: zones after fio").nth(1).unwrap_or("");
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    after
        .lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let at = |key: &str| {
                words
                    .iter()
                    .position(|w| *w == key)
                    .and_then(|i| words.get(i + 1))
            };
            Some((
                hex(at("SLBA:")?)?,
                hex(at("WP:")?)?,
                hex(at("State:")?)? as u8,
            ))
        })
        .collect()
}

/// The state names of `csd zone report --json`, by the specification's values.
fn state_value(name: &str) -> Option<u8> {
    Some(match name {
        "empty" => 0x1,
        "implicit_open" => 0x2,
        "explicit_open" => 0x3,
        "closed" => 0x4,
        "read_only" => 0xd,
        "full" => 0xe,
        "offline" => 0xf,
        _ => return None,
    })
}

/// What follows `GUEST: KEY ` on the console's first line that has it.
fn guest_line<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let prefix = format!("GUEST: {key} ");
    text.lines().find_map(|l| l.split(prefix.as_str()).nth(1))
}

fn check(text: &str, host_zones: &str, host_run: &str) -> Result<()> {
    let discovered = format!("GUEST: discover 0 subnqn: {NQN}");
    ensure!(
        text.contains(&discovered),
        "no {discovered:?}: nvme discover did not list the subsystem"
    );
    for want in [
        "GUEST: connect 0",
        "csd computational storage device",
        "GUEST: zoned host-managed",
        "SEQ_WRITE_REQUIRED",
        "GUEST: fio 0",
        "GUEST: fio-qd16 0",
        "GUEST: load 0",
        "GUEST: execute 0",
        "GUEST: cp-load 0",
        "GUEST: cp-activate 0",
        "GUEST: cp-range-set 0",
        "GUEST: cp-read 0",
        "GUEST: connect-digests 0",
        "GUEST: fio-digests 0",
        "GUEST: done",
    ] {
        ensure!(text.contains(want), "no {want:?}");
    }
    ensure!(!text.contains("insmod"), "a module did not load");
    let guest = guest_zones(text);
    ensure!(
        guest.len() >= 4,
        "the guest reported {} zones after fio",
        guest.len()
    );
    // The host's report, from `csd zone report --json`: zslba, wp and state of each zone.
    let field = |zone: &str, key: &str| -> Option<String> {
        let at = zone.find(&format!("\"{key}\":"))? + key.len() + 3;
        let rest = zone[at..].trim_start();
        let end = rest.find([',', '\n', '}']).unwrap_or(rest.len());
        Some(rest[..end].trim().trim_matches('"').to_string())
    };
    let host: Vec<(u64, u64, u8)> = host_zones
        .split('{')
        .skip(1)
        .filter_map(|z| {
            Some((
                field(z, "zslba")?.parse().ok()?,
                field(z, "wp")?.parse().ok()?,
                state_value(&field(z, "state")?)?,
            ))
        })
        .collect();
    for (i, &(slba, wp, state)) in guest.iter().enumerate() {
        let Some(&(h_slba, h_wp, h_state)) = host.get(i) else {
            bail!("csd reports fewer zones than the guest");
        };
        ensure!(
            (slba, wp, state >> 4) == (h_slba, h_wp, h_state),
            "zone {i}: the guest sees start {slba:#x}, write pointer {wp:#x}, state {:#x}; csd \
             reports {h_slba:#x}, {h_wp:#x}, {h_state:#x}",
            state >> 4
        );
    }
    let written = guest.iter().filter(|&&(slba, wp, _)| wp > slba).count();
    ensure!(
        written >= 4,
        "fio's 4 MiB should fill 4 zones; {written} have data"
    );
    // The kernel's output through NVMe/TCP is csd's own run's.
    let histogram = guest_line(text, "histogram").map(str::trim).unwrap_or("");
    let want = host_run
        .split("\"output_hex\":")
        .nth(1)
        .and_then(|rest| rest.split('"').nth(1))
        .context("csd kernel run printed no output_hex")?;
    ensure!(
        histogram.len() == 4096 && histogram == want,
        "the histogram through NVMe/TCP ({} hex digits) is not csd kernel run's",
        histogram.len()
    );
    // The Computational Programs commands ran the same kernel: its return value (the bytes
    // it read, 4 MiB) in the completion, the same histogram in the memory namespace.
    let executed = guest_line(text, "cp-execute").context("no GUEST: cp-execute line")?;
    ensure!(
        executed.starts_with("0 ") && executed.contains("00400000"),
        "Execute Program through the compute namespace: {executed:?}"
    );
    let cp_histogram = guest_line(text, "cp-histogram")
        .map(str::trim)
        .unwrap_or("");
    ensure!(
        cp_histogram == want,
        "the histogram through the Computational Programs commands ({} hex digits) is not csd \
         kernel run's",
        cp_histogram.len()
    );
    Ok(())
}
