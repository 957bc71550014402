//! `csd device create|info`: making images and describing them.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use common::LBA_BYTES;
use firmware::{
    nand::Geometry,
    zns::{Layout, ZoneConfig},
};
use host_shell::{
    device::create_image,
    link::{
        running::{self, Welcome},
        Session,
    },
    nand::{image::Header, preset::Preset},
    units::{parse_size, Bytes, SizeError},
    zonemap::state_name,
};
use serde_json::json;

use super::{print_json, spinner, with_device, During};

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Create and format a new device image file (sparse: it takes disk space as it fills).
    Create(CreateArgs),
    /// Show a device's geometry, zones, limits, wear, bad blocks and counters.
    Info(InfoArgs),
    /// Power the device on and keep it running in the background: every csd command on the
    /// image (zone, kernel, device info, mkfs, fsck, mount) attaches to it until `device stop`.
    Start(StartArgs),
    /// Power off the device `device start` keeps running (refused while it is mounted).
    Stop(StopArgs),
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// The device image.
    image: PathBuf,
    /// Run in this process until stopped (SIGINT or SIGTERM, or `csd device stop`).
    #[arg(long)]
    foreground: bool,
    /// The daemon's log [default: IMAGE.log].
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// Also serve the device to NVMe/TCP hosts (`nvme connect -t tcp`) on ADDR:PORT, or on
    /// PORT of the loopback interface.
    #[arg(long, value_name = "ADDR:PORT", value_parser = listen_arg)]
    nvme_tcp: Option<std::net::SocketAddr>,
    /// The NVMe/TCP subsystem's name [default: nqn.2026-12.dev.csd:IMAGE-FILE-NAME].
    #[arg(long, value_name = "NQN", requires = "nvme_tcp")]
    nqn: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// `ADDR:PORT`, or `PORT` on the loopback interface.
fn listen_arg(text: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse()
        .map_err(|_| format!("{text:?} is not ADDR:PORT (for example 127.0.0.1:4420) or a port"))
}

impl StartArgs {
    /// The subsystem's NQN.
    fn nqn(&self) -> String {
        self.nqn.clone().unwrap_or_else(|| {
            let name = self
                .image
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "device".into());
            format!("nqn.2026-12.dev.csd:{name}")
        })
    }
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// The device image.
    image: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Path of the image (`device create`: it must not exist; `mkfs`: made if missing).
    pub(crate) image: PathBuf,
    /// NAND shape, NAND timing and the CPU that runs kernels; the image records it, and every
    /// command on the image models its time (see `--timing`).
    #[arg(long, value_enum, default_value_t = Preset::Small)]
    preset: Preset,
    /// Raw NAND capacity, e.g. 64M or 1G: whole erase blocks on every die [default: 64M for
    /// small, 1G for zn540].
    #[arg(long, value_name = "SIZE", value_parser = size_arg)]
    capacity: Option<u64>,
    /// Zone size, e.g. 1M: a power of two and a whole number of erase blocks (256K on small,
    /// 1M on zn540) [default: one erase block per die].
    #[arg(long, value_name = "SIZE", value_parser = size_arg)]
    zone_size: Option<u64>,
    /// Writable bytes of each zone: whole 4 KiB blocks, at most the zone size and more than half
    /// of it (the zone size is the capacity rounded up to a power of two). Without --zone-size,
    /// each zone gets just enough erase blocks for it [default: the whole zone].
    #[arg(long, value_name = "SIZE", value_parser = size_arg)]
    zone_capacity: Option<u64>,
    /// Most zones open at once (0: no limit) [default: 14, like a ZN540].
    #[arg(long, value_name = "N")]
    max_open: Option<u32>,
    /// Most zones active (open or closed) at once (0: no limit) [default: 14, and at least
    /// --max-open].
    #[arg(long, value_name = "N")]
    max_active: Option<u32>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// What `device create` made.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Created {
    image: String,
    preset: &'static str,
    raw_bytes: u64,
    zones: u64,
    zone_bytes: u64,
    zone_capacity_bytes: u64,
    /// 0: no limit.
    max_open: u32,
    max_active: u32,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The device image.
    image: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn size_arg(text: &str) -> Result<u64, SizeError> {
    parse_size(text)
}

pub fn run(command: DeviceCommand) -> anyhow::Result<()> {
    match command {
        DeviceCommand::Create(args) => create(&args),
        DeviceCommand::Info(args) => info(&args),
        DeviceCommand::Start(args) if args.foreground => serve(&args),
        DeviceCommand::Start(args) => start(&args),
        DeviceCommand::Stop(args) => stop(&args),
    }
}

/// The pid of the device running over `image`, if one does.
fn running_pid(image: &Path) -> anyhow::Result<Option<u32>> {
    Ok(match running::connect(image, &Session::Raw)? {
        Some((_, Welcome::Attached { pid, .. })) => Some(pid),
        _ => None,
    })
}

/// `device start` in the background: the same command with `--foreground`, then a wait until
/// its socket answers.
fn start(args: &StartArgs) -> anyhow::Result<()> {
    if let Some(pid) = running_pid(&args.image)? {
        anyhow::bail!(
            "{}: a device is already running over it (pid {pid})",
            args.image.display()
        );
    }
    let mut argv: Vec<std::ffi::OsString> = vec![
        "device".into(),
        "start".into(),
        args.image.clone().into(),
        "--foreground".into(),
    ];
    if let Some(addr) = args.nvme_tcp {
        argv.extend(["--nvme-tcp".into(), addr.to_string().into()]);
        argv.extend(["--nqn".into(), args.nqn().into()]);
    }
    let log = super::daemon::log_path(&args.image, args.log.as_deref());
    let mut daemon = super::daemon::Daemon::spawn("the device daemon", &argv, log)?;
    let bar = spinner("powering on");
    let ready = daemon.wait(|| running_pid(&args.image).ok().flatten().is_some());
    bar.finish_and_clear();
    ready?;
    let socket = running::socket_path(&args.image);
    let nvme_tcp = args.nvme_tcp.map(|addr| (addr.to_string(), args.nqn()));
    if args.json {
        return print_json(&json!({
            "image": args.image.display().to_string(),
            "pid": daemon.pid(),
            "socket": socket.display().to_string(),
            "log": daemon.log().display().to_string(),
            "nvme_tcp": nvme_tcp.as_ref().map(|(addr, _)| addr),
            "nqn": nvme_tcp.as_ref().map(|(_, nqn)| nqn),
        }));
    }
    println!(
        "device running over {} (pid {}, socket {}, log {})",
        args.image.display(),
        daemon.pid(),
        socket.display(),
        daemon.log().display()
    );
    if let Some((addr, nqn)) = nvme_tcp {
        println!("NVMe/TCP: {nqn} on {addr}");
    }
    Ok(())
}

/// The device daemon: powers the device on, serves sessions on the image's socket until
/// stopped, then powers it off.
fn serve(args: &StartArgs) -> anyhow::Result<()> {
    host_shell::daemon::name("csd device");
    // Blocked before any thread starts, so that only the signal thread receives them.
    let signals = host_shell::fuse::StopSignals::block()?;
    if let Some(pid) = running_pid(&args.image)? {
        anyhow::bail!(
            "{}: a device is already running over it (pid {pid})",
            args.image.display()
        );
    }
    let device = super::open::OpenDevice::power_on(super::open::selected(), &args.image)?;
    let socket = running::socket_path(&args.image);
    // This process holds the image's lock: a socket left there is a dead daemon's.
    let _ = std::fs::remove_file(&socket);
    let listener = std::os::unix::net::UnixListener::bind(&socket)
        .with_context(|| format!("could not listen on {}", socket.display()))?;
    // The NVMe/TCP listener first: a port in use fails the start, with nothing running yet.
    let nvme_tcp = match args.nvme_tcp {
        Some(addr) => Some(
            std::net::TcpListener::bind(addr)
                .with_context(|| format!("could not listen for NVMe/TCP hosts on {addr}"))?,
        ),
        None => None,
    };
    let server = running::Server::new(device.driver());
    let stop = server.stopper();
    let target = nvme_tcp.map(|listener| {
        let image = args.image.clone();
        // Kernels run on program slots of sessions of this running device, attached at the
        // first run (the server is serving by then).
        let session = move || {
            let attached =
                host_shell::link::AttachedDevice::attach(&image, &Session::Raw).ok()??;
            let driver = attached.driver();
            let keep: host_shell::nvmf::Keep = Box::new(attached);
            Some((driver, keep))
        };
        let target = host_shell::nvmf::Target::new(
            device.driver(),
            &args.nqn(),
            server.file_system_held(),
            session,
        );
        let serving = std::sync::Arc::clone(&target);
        let nqn = args.nqn();
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        std::thread::spawn(move || {
            host_shell::daemon::log(format_args!("NVMe/TCP: serving {nqn} on {addr}"));
            if let Err(e) = serving.serve(listener) {
                host_shell::daemon::log(format_args!("NVMe/TCP: the listener failed: {e}"));
            }
        });
        target
    });
    std::thread::Builder::new()
        .name("csd-signals".into())
        .spawn(move || {
            if let Ok(signal) = signals.wait() {
                host_shell::daemon::log(format_args!("{signal}: powering off"));
                stop();
            }
        })
        .context("could not start the signal thread")?;
    host_shell::daemon::log(format_args!(
        "powered on {}; attach through {}",
        args.image.display(),
        socket.display()
    ));
    let served = server.run_then(listener, Duration::from_secs(10), || {
        if let Some(target) = &target {
            target.stop();
        }
    });
    let _ = std::fs::remove_file(&socket);
    drop(server);
    let closed = device.close();
    served.with_context(|| format!("could not serve on {}", socket.display()))?;
    closed.with_context(|| {
        format!(
            "{}: the device did not power off cleanly",
            args.image.display()
        )
    })?;
    host_shell::daemon::log(format_args!("powered off {}: clean", args.image.display()));
    Ok(())
}

/// How long `device stop` asks again while a file system holds the device.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// `device stop`: asks the daemon to power off and waits until it has.
fn stop(args: &StopArgs) -> anyhow::Result<()> {
    let image = args.image.display();
    // A mount that was just unmounted still holds the file system for a moment (its
    // checkpoint): a refusal is asked again for a while.
    let started = std::time::Instant::now();
    loop {
        match running::connect(&args.image, &Session::Stop)? {
            None => {
                anyhow::bail!("{image}: no device is running over it (`csd device start` runs one)")
            }
            Some((_, Welcome::Refused(_))) if started.elapsed() < STOP_GRACE => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Some((_, Welcome::Refused(why))) => {
                anyhow::bail!("{image}: the device cannot stop: {why}")
            }
            Some((_, Welcome::Stopping)) => break,
            Some((_, other)) => anyhow::bail!("{image}: the device answered {other:?} to a stop"),
        }
    }
    let bar = spinner("powering off");
    let off = super::open::wait_unlocked(&args.image, Duration::from_secs(60));
    bar.finish_and_clear();
    if !off {
        anyhow::bail!("{image}: the device did not power off within 60 s; see its log");
    }
    if args.json {
        return print_json(&json!({ "image": image.to_string(), "stopped": true }));
    }
    println!("powered off {image}");
    Ok(())
}

pub(crate) fn create(args: &CreateArgs) -> anyhow::Result<()> {
    let created = make(args)?;
    if args.json {
        return print_json(&created);
    }
    println!(
        "created {}: {} preset, {} raw NAND, {} zones of {} (capacity {}), max open {}, max active {}",
        created.image,
        created.preset,
        Bytes(created.raw_bytes),
        created.zones,
        Bytes(created.zone_bytes),
        Bytes(created.zone_capacity_bytes),
        limit(created.max_open),
        limit(created.max_active),
    );
    Ok(())
}

/// Creates and formats the image `args` describe.
pub(crate) fn make(args: &CreateArgs) -> anyhow::Result<Created> {
    let capacity = args
        .capacity
        .unwrap_or_else(|| args.preset.default_capacity());
    let geometry = args.preset.geometry(capacity)?;
    let zones = zone_config(&geometry, args)?;
    let layout = Layout::new(geometry, zones).map_err(|err| {
        anyhow!(
            "these zones do not fit the NAND: {err} ({} blocks of {} in all, 2 for metadata, {} spare)",
            geometry.blocks(),
            Bytes(block_bytes(&geometry)),
            zones.spare_blocks
        )
    })?;
    let bar = spinner("formatting");
    let result = create_image(
        &args.image,
        Header {
            geometry,
            zones,
            timing_preset: args.preset.id(),
        },
    );
    bar.finish_and_clear();
    result?;
    let lba = u64::from(LBA_BYTES);
    Ok(Created {
        image: args.image.display().to_string(),
        preset: args.preset.name(),
        raw_bytes: capacity,
        zones: u64::from(layout.nr_zones),
        zone_bytes: layout.zone_size * lba,
        zone_capacity_bytes: layout.zone_cap * lba,
        max_open: zones.max_open,
        max_active: zones.max_active,
    })
}

fn limit(n: u32) -> String {
    if n == 0 {
        "unlimited".into()
    } else {
        n.to_string()
    }
}

fn block_bytes(geometry: &Geometry) -> u64 {
    u64::from(geometry.pages_per_block) * u64::from(LBA_BYTES)
}

/// Whole 4 KiB blocks of `bytes`, or an error naming `what`.
fn in_blocks(bytes: u64, what: &str) -> anyhow::Result<u64> {
    let lba = u64::from(LBA_BYTES);
    if bytes == 0 || !bytes.is_multiple_of(lba) {
        return Err(anyhow!(
            "{what} {bytes} bytes is not a positive whole number of {lba}-byte blocks"
        ));
    }
    Ok(bytes / lba)
}

/// Maps the size and limit options onto the zone manager's configuration. A zone is a number of
/// whole erase blocks, and its size is its capacity rounded up to a power of two (see
/// `firmware::zns::Layout`).
fn zone_config(geometry: &Geometry, args: &CreateArgs) -> anyhow::Result<ZoneConfig> {
    let mut zones = ZoneConfig::for_geometry(geometry);
    let ppb = u64::from(geometry.pages_per_block);
    let erase_block = Bytes(block_bytes(geometry));
    let size = args
        .zone_size
        .map(|bytes| -> anyhow::Result<u64> {
            let lbas = in_blocks(bytes, "the zone size")?;
            if !lbas.is_power_of_two() || !lbas.is_multiple_of(ppb) {
                return Err(anyhow!(
                    "the zone size {} must be a power of two and a whole number of {erase_block} erase blocks",
                    Bytes(bytes)
                ));
            }
            Ok(lbas)
        })
        .transpose()?;
    let cap = args
        .zone_capacity
        .map(|bytes| in_blocks(bytes, "the zone capacity"))
        .transpose()?;
    let blocks_for = |lbas: u64| -> anyhow::Result<u32> {
        u32::try_from(lbas.div_ceil(ppb)).map_err(|_| anyhow!("the zone is too large"))
    };
    match (size, cap) {
        (Some(size), cap) => {
            zones.zone_blocks = blocks_for(size)?;
            if let Some(cap) = cap {
                if cap > size || cap <= size / 2 {
                    return Err(anyhow!(
                        "the zone capacity {} must be at most the zone size {} and more than half of it",
                        Bytes(cap * u64::from(LBA_BYTES)),
                        Bytes(size * u64::from(LBA_BYTES))
                    ));
                }
                zones.zone_cap_lbas = Some(cap);
            }
        }
        (None, Some(cap)) => {
            zones.zone_blocks = blocks_for(cap)?;
            zones.zone_cap_lbas = Some(cap);
        }
        (None, None) => {}
    }
    let (default_open, default_active) = (zones.max_open, zones.max_active);
    match (args.max_open, args.max_active) {
        (Some(open), Some(active)) => {
            if active != 0 && (open == 0 || open > active) {
                return Err(anyhow!(
                    "--max-open {open} must be between 1 and --max-active {active}"
                ));
            }
            (zones.max_open, zones.max_active) = (open, active);
        }
        (Some(open), None) => {
            zones.max_open = open;
            zones.max_active = if open == 0 {
                0
            } else {
                open.max(default_active)
            };
        }
        (None, Some(active)) => {
            zones.max_active = active;
            zones.max_open = if active == 0 {
                default_open
            } else {
                active.min(default_open)
            };
        }
        (None, None) => {}
    }
    Ok(zones)
}

fn info(args: &InfoArgs) -> anyhow::Result<()> {
    let image_bytes = std::fs::metadata(&args.image)
        .with_context(|| format!("could not read {}", args.image.display()))?
        .len();
    let report = with_device(&args.image, |device, driver| {
        let identify = driver.identify().during("identify")?;
        let health = driver.health().during("get health")?;
        let zones = driver.all_zones().during("zone report")?;
        Ok((identify, health, zones, device.stats()))
    })?;
    let (identify, health, zones, stats) = report;
    let preset = recorded_preset(&args.image)?;
    // Modeled time is kept in-process only (the board in QEMU keeps none).
    let timing_on =
        super::open::timing_selected() == super::open::TimingSwitch::On && stats.is_some();
    let modeled_ns = stats.map(|s| s.modeled_ns);
    let mut states: Vec<(&str, usize)> = Vec::new();
    for state in host_shell::zonemap::STATES {
        let n = zones.iter().filter(|z| z.state == state).count();
        states.push((state_name(state), n));
    }
    let nand = identify.nand;
    let raw = u64::from(nand.channels)
        * u64::from(nand.dies_per_channel)
        * u64::from(nand.blocks_per_die)
        * u64::from(nand.pages_per_block)
        * u64::from(nand.page_bytes);
    let lba = u64::from(identify.lba_bytes);
    if args.json {
        let states: serde_json::Map<String, serde_json::Value> = states
            .iter()
            .map(|(name, n)| ((*name).to_string(), json!(n)))
            .collect();
        return print_json(&json!({
            "image": args.image.display().to_string(),
            "image_bytes": image_bytes,
            "preset": preset.map(Preset::name),
            "timing": if timing_on && preset.is_some() { "on" } else { "off" },
            "cpu": preset.map(|p| p.cpu()),
            "modeled_ns": modeled_ns,
            // The board (`--device qemu`, no in-process counters) always interprets.
            "executor": if stats.is_some() { super::open::executor().name() } else { "interp" },
            "geometry": {
                "channels": nand.channels,
                "dies_per_channel": nand.dies_per_channel,
                "blocks_per_die": nand.blocks_per_die,
                "pages_per_block": nand.pages_per_block,
                "page_bytes": nand.page_bytes,
                "spare_bytes": nand.spare_bytes,
                "raw_bytes": raw,
            },
            "zones": {
                "count": identify.nr_zones,
                "size_lbas": identify.zone_size_lbas,
                "capacity_lbas": identify.zone_cap_lbas,
                "lba_bytes": identify.lba_bytes,
                "states": states,
            },
            "limits": {
                "max_open": identify.max_open,
                "max_active": identify.max_active,
                "zasl_lbas": identify.zasl_lbas,
                "mdts_lbas": identify.mdts_lbas,
                "cross_zone_read": identify.cross_zone_read,
            },
            "health": health,
            "counters": stats,
        }));
    }
    let states: Vec<String> = states
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    println!(
        "image        {} ({})",
        args.image.display(),
        Bytes(image_bytes)
    );
    println!(
        "geometry     {} channels x {} dies, {} blocks per die, {} pages per block, {}+{} bytes per page ({} raw)",
        nand.channels,
        nand.dies_per_channel,
        nand.blocks_per_die,
        nand.pages_per_block,
        nand.page_bytes,
        nand.spare_bytes,
        Bytes(raw)
    );
    println!(
        "zones        {} zones of {} ({} LBAs), capacity {} ({} LBAs), {}-byte LBAs",
        identify.nr_zones,
        Bytes(identify.zone_size_lbas * lba),
        identify.zone_size_lbas,
        Bytes(identify.zone_cap_lbas * lba),
        identify.zone_cap_lbas,
        identify.lba_bytes
    );
    println!("zone states  {}", states.join(", "));
    println!(
        "limits       max open {}, max active {}, append limit {} LBAs, transfer limit {} LBAs",
        limit(identify.max_open),
        limit(identify.max_active),
        identify.zasl_lbas,
        identify.mdts_lbas
    );
    println!(
        "health       {} blocks, {} bad, {} free; erase counts {} to {} (total {})",
        health.total_blocks,
        health.bad_blocks,
        health.free_blocks,
        health.erase_min,
        health.erase_max,
        health.erase_total
    );
    match stats {
        Some(stats) => println!(
            "counters     {} commands, {} to the device, {} to the host; NAND {} reads, {} programs, {} erases (this session)",
            stats.commands,
            Bytes(stats.link_to_device_bytes),
            Bytes(stats.link_to_host_bytes),
            stats.nand_reads,
            stats.nand_programs,
            stats.nand_erases
        ),
        None => println!("counters     none (the device runs in QEMU)"),
    }
    match (preset, modeled_ns) {
        (Some(p), Some(ns)) if timing_on => {
            let cpu = p.cpu();
            println!(
                "timing       {} preset ({} x {} at {} MHz); modeled {} since power-on",
                p.name(),
                cpu.cores,
                cpu.core,
                cpu.clock_hz / 1_000_000,
                host_shell::units::Nanos(ns)
            );
        }
        (Some(p), None) => println!(
            "timing       {} preset, not modeled (the board keeps no modeled time)",
            p.name()
        ),
        (Some(p), _) => println!("timing       {} preset, modeled time off", p.name()),
        (None, _) => println!("timing       none recorded (the image was made without a preset)"),
    }
    Ok(())
}

/// The timing preset the image at `path` was made with, if it records one.
fn recorded_preset(path: &std::path::Path) -> anyhow::Result<Option<Preset>> {
    use std::io::Read;
    let mut head = vec![0u8; firmware::nand::image::HEADER_BYTES];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .with_context(|| format!("could not read {}", path.display()))?;
    let header = Header::decode(&head).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(Preset::from_id(header.timing_preset))
}
