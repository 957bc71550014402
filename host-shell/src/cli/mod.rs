//! The `csd` command line: argument parsing (clap derive), one module per command group, and the
//! glue every command shares: opening and closing an image, turning errors into one sentence,
//! progress bars, and reading input files.
//!
//! Every command that touches a device opens its image with [`with_device`] (which runs the
//! firmware's power-on recovery, in-process or on the board in QEMU per `--device`, see
//! [`open`]) and closes it before exiting, also when the command failed, so the image is left
//! as a powered-off device would be.
//!
//! Errors reach the user as `csd: <one sentence>` on stderr with a non-zero exit code: 1 for a
//! failed command, 2 for arguments clap could not parse. Device errors name the command and the
//! NVMe status by name and code (`zone append failed: Zone Is Full (1B9h)`).

mod daemon;
mod device;
mod fs;
mod kernel;
mod open;
mod zone;

use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{anyhow, Context};
use clap::{Parser, Subcommand};
use common::LBA_BYTES;
use host_shell::driver::{Driver, DriverError};
use host_shell::lfs::IoError;
use indicatif::{ProgressBar, ProgressFinish, ProgressStyle};

/// Command line of the csd computational storage device: create zoned device images, read and
/// write their zones, run eBPF kernels on the device over the data, and make, check and mount
/// its file system.
#[derive(Debug, Parser)]
#[command(name = "csd", version, about, propagate_version = true)]
struct Cli {
    /// Where the device runs: in this process, or on the Cortex-R52 in QEMU over the serial
    /// link (the same image file either way).
    #[arg(long, global = true, value_enum, default_value_t)]
    device: open::DeviceKind,
    /// With `--device qemu`: print the board's own log (its defmt messages, decoded with the
    /// board image) on stderr when the device stops.
    #[arg(long, global = true)]
    board_log: bool,
    /// Modeled device time (NAND, link and the device's CPU): `on` follows the preset the
    /// image was made with (`--preset` of `csd mkfs` and `csd device create`), `off` models
    /// none.
    #[arg(long, global = true, value_enum, default_value_t)]
    timing: open::TimingSwitch,
    /// What runs kernels on the in-process device: `jit` (native code; the default where this
    /// host has a code generator) or `interp` (the metered interpreter the board runs). Both
    /// give the same results, faults and fuel; the modeled device CPU follows the choice.
    #[arg(long, global = true, value_enum)]
    executor: Option<open::ExecutorSwitch>,
    #[command(subcommand)]
    group: Group,
}

#[derive(Debug, Subcommand)]
enum Group {
    /// Create device images and show what is in them.
    #[command(subcommand)]
    Device(device::DeviceCommand),
    /// Zone reports, zone state changes, and reads, writes and appends of data.
    #[command(subcommand)]
    Zone(zone::ZoneCommand),
    /// Run eBPF kernels on the device; assemble and disassemble eBPF.
    #[command(subcommand)]
    Kernel(kernel::KernelCommand),
    /// Make a file system on a device image (creating the image if it does not exist).
    Mkfs(fs::MkfsArgs),
    /// Mount a device image's file system with FUSE (in the background unless --foreground).
    Mount(fs::MountArgs),
    /// Check a device image's file system (not mounted); exits non-zero listing problems.
    Fsck(fs::FsckArgs),
}

/// Parses the arguments, runs the command, and turns any error into one line on stderr.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(&err),
    };
    open::select(cli.device);
    open::show_board_log(cli.board_log);
    open::select_timing(cli.timing);
    if let Err(err) = open::select_executor(cli.executor) {
        eprintln!("csd: {}", sentence(&err));
        return ExitCode::from(2);
    }
    let result = match cli.group {
        Group::Device(command) => device::run(command),
        Group::Zone(command) => zone::run(command),
        Group::Kernel(command) => kernel::run(command),
        Group::Mkfs(args) => fs::mkfs(&args),
        Group::Mount(args) => fs::mount(&args),
        Group::Fsck(args) => fs::fsck(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => {
            // The reader went away (`csd zone report IMAGE | head`): nothing left to say.
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("csd: {}", sentence(&err));
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The error and its causes in one line, leaving out a cause its parent already quotes
/// (`{path}: {source}` errors carry their source both ways).
fn sentence(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Help and version go out as clap writes them; a real usage error becomes one line.
fn usage_error(err: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = err.print();
        return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2));
    }
    let text = err.to_string();
    let sentence: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with("Usage:")
                && !l.starts_with("For more information")
                && !l.starts_with("tip:")
        })
        .map(|l| l.strip_prefix("error: ").unwrap_or(l))
        .collect();
    eprintln!(
        "csd: {} (see `csd --help`)",
        sentence.join(" ").trim_end_matches('.')
    );
    ExitCode::from(2)
}

/// Opens the image at `path` where `--device` says, runs `f` with its device and a driver, and
/// closes the device whether `f` succeeded or not.
pub(crate) fn with_device<T>(
    path: &Path,
    f: impl FnOnce(&open::OpenDevice, &Driver) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let device = open::OpenDevice::open_selected(path)?;
    let driver = device.driver();
    let mut result = f(&device, &driver);
    drop(driver);
    if let (Err(e), Some(holder)) = (&result, device.file_system_holder()) {
        let denied = e.chain().any(|cause| {
            cause
                .downcast_ref::<DeviceStatus>()
                .is_some_and(|d| d.status == common::Status::AccessDenied)
        });
        if denied {
            result = Err(anyhow!(
                "{}: {e}: the running device's zones belong to its file system, in use by \
                 {holder}; unmount it first",
                path.display()
            ));
        }
    }
    let closed = device.close();
    let value = result?;
    closed.with_context(|| format!("{}: the device did not close cleanly", path.display()))?;
    Ok(value)
}

/// Names the operation in a driver error: `zone append failed: Zone Is Full (1B9h)`.
pub(crate) trait During<T> {
    fn during(self, what: &str) -> anyhow::Result<T>;
}

impl<T> During<T> for Result<T, DriverError> {
    fn during(self, what: &str) -> anyhow::Result<T> {
        self.map_err(|err| driver_error(what, err))
    }
}

/// A command the device completed with an error status: `what failed: <status>`.
#[derive(Debug, thiserror::Error)]
#[error("{what} failed: {status}")]
pub(crate) struct DeviceStatus {
    what: String,
    status: common::Status,
}

/// `what failed: <status>` for a status the device returned (a [`DeviceStatus`], so callers
/// can tell which), `what failed: <error>` otherwise.
pub(crate) fn driver_error(what: &str, err: DriverError) -> anyhow::Error {
    match err {
        DriverError::Io(IoError::Device { status, .. }) => DeviceStatus {
            what: what.to_string(),
            status,
        }
        .into(),
        other => anyhow!("{what} failed: {other}"),
    }
}

/// The first LBA of zone `zone`, or an error naming the zones that exist.
pub(crate) fn zone_start(driver: &Driver, zone: u32) -> anyhow::Result<u64> {
    let info = driver.info();
    if zone >= info.nr_zones {
        return Err(anyhow!(
            "zone {zone} does not exist: the device has {} zones (0 to {})",
            info.nr_zones,
            info.nr_zones.saturating_sub(1)
        ));
    }
    Ok(u64::from(zone) * info.zone_size_lbas)
}

/// The path `-` means stdin (or stdout).
pub(crate) fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Reads all of `path` (`-`: stdin).
pub(crate) fn read_input(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut data = Vec::new();
    if is_stdio(path) {
        std::io::stdin()
            .lock()
            .read_to_end(&mut data)
            .context("could not read stdin")?;
    } else {
        data = std::fs::read(path).with_context(|| format!("could not read {}", path.display()))?;
    }
    if data.is_empty() {
        return Err(anyhow!(
            "{} is empty: there is nothing to write",
            display_input(path)
        ));
    }
    Ok(data)
}

fn display_input(path: &Path) -> String {
    if is_stdio(path) {
        "stdin".into()
    } else {
        path.display().to_string()
    }
}

/// Pads `data` with zeros to whole blocks.
pub(crate) fn pad_to_blocks(data: &mut Vec<u8>) {
    let block = LBA_BYTES as usize;
    data.resize(data.len().div_ceil(block) * block, 0);
}

/// Where data output goes: a file, or stdout.
pub(crate) fn output_writer(path: Option<&PathBuf>) -> anyhow::Result<Box<dyn Write>> {
    Ok(match path {
        Some(path) if !is_stdio(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("could not create {}", path.display()))?,
        )),
        _ => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    })
}

/// Transfers at least this long get a progress bar (when stderr is a terminal).
const PROGRESS_MIN_BYTES: u64 = 8 << 20;

/// A byte progress bar on stderr for a transfer of `total` bytes. indicatif draws nothing when
/// stderr is not a terminal, so scripts and tests see only the command's output. Like
/// [`spinner`], it clears itself when dropped, so an error leaves no bar above its line.
pub(crate) fn progress(total: u64, what: &str) -> ProgressBar {
    if total < PROGRESS_MIN_BYTES {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total)
        .with_message(what.to_string())
        .with_finish(ProgressFinish::AndClear);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// A spinner on stderr for a step of unknown length; it clears itself when finished or
/// dropped (a step that failed).
pub(crate) fn spinner(what: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner()
        .with_message(what.to_string())
        .with_finish(ProgressFinish::AndClear);
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    bar
}

/// Prints `value` as pretty JSON on stdout.
pub(crate) fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(out))
        .context("could not write to stdout")
}
