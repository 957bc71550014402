//! `csd zone ...`: zone reports, zone state changes, and data in and out of zones.

use std::{
    io::{BufRead, Read, Write},
    path::PathBuf,
};

use anyhow::{anyhow, Context};
use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use common::{
    zns::{ReportFilter, ZoneAction, ZoneState},
    LBA_BYTES,
};
use host_shell::zonemap::state_name;
use host_shell::{
    device::image_zone_erase_counts,
    driver::Driver,
    units::{parse_size, Bytes},
    zonemap::ZoneMap,
};
use serde_json::json;

use super::{
    is_stdio, output_writer, pad_to_blocks, print_json, progress, read_input, spinner, with_device,
    zone_start, During,
};

#[derive(Debug, Subcommand)]
pub enum ZoneCommand {
    /// List zones with their state, start, write pointer and capacity.
    Report(ReportArgs),
    /// Open a zone explicitly (it stays open until closed, finished or reset).
    Open(TargetArgs),
    /// Close an open zone, releasing its open resource.
    Close(TargetArgs),
    /// Finish a zone: it becomes full and takes no more writes until reset.
    Finish(TargetArgs),
    /// Reset a zone: its data is gone and its write pointer goes back to its start.
    Reset(TargetArgs),
    /// Zone Append a file to a zone; prints the LBA the device chose for its first block.
    Append(AppendArgs),
    /// Write a file at an LBA, which must be its zone's write pointer.
    Write(WriteArgs),
    /// Read bytes from an LBA to a file or stdout.
    Read(ReadArgs),
    /// Every zone's state, write pointer, file-system live data and erase counts, as a table,
    /// an SVG picture or JSON.
    Map(MapArgs),
}

/// Zone states as the CLI names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum StateArg {
    Empty,
    ImplicitOpen,
    ExplicitOpen,
    Closed,
    Full,
    ReadOnly,
    Offline,
}

impl StateArg {
    fn filter(self) -> ReportFilter {
        match self {
            StateArg::Empty => ReportFilter::Empty,
            StateArg::ImplicitOpen => ReportFilter::ImplicitlyOpened,
            StateArg::ExplicitOpen => ReportFilter::ExplicitlyOpened,
            StateArg::Closed => ReportFilter::Closed,
            StateArg::Full => ReportFilter::Full,
            StateArg::ReadOnly => ReportFilter::ReadOnly,
            StateArg::Offline => ReportFilter::Offline,
        }
    }
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The device image.
    image: PathBuf,
    /// Only zones in this state.
    #[arg(long, value_enum)]
    state: Option<StateArg>,
    /// Print a JSON list of {zone, state, zslba, wp, zcap} instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["zones", "all"])))]
pub struct TargetArgs {
    /// The device image.
    image: PathBuf,
    /// The zone's index (0 is the first zone); several zones are acted on in order, in one
    /// session of the device, stopping at the first failure.
    #[arg(value_name = "ZONE")]
    zones: Vec<u32>,
    /// Every zone the action applies to (NVMe Select All: open acts on closed zones, close on
    /// open zones, finish on open and closed zones, reset on open, closed and full zones).
    #[arg(long)]
    all: bool,
}

#[derive(Debug, Args)]
pub struct AppendArgs {
    /// The device image.
    image: PathBuf,
    /// The zone's index.
    zone: u32,
    /// The data (`-`: stdin). A length that is not a multiple of 4096 bytes is padded with
    /// zeros to whole blocks. Data over the device's append limit goes in several Zone Appends
    /// (in order); the first one's LBA is printed.
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// Append each 4096-byte block as it is read, in its own Zone Append, and print each
    /// acknowledged LBA on its own line as soon as the device completes it (a stream: with
    /// --json, one {"lba": N} object per line).
    #[arg(long)]
    block_by_block: bool,
    /// Print {"lba": N} (and "lbas": [...] when split into several appends).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct WriteArgs {
    /// The device image.
    image: PathBuf,
    /// Where to write: the write pointer of the zone holding it.
    lba: u64,
    /// The data (`-`: stdin), padded with zeros to whole 4096-byte blocks.
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
}

#[derive(Debug, Args)]
pub struct ReadArgs {
    /// The device image.
    image: PathBuf,
    /// The first LBA to read.
    lba: u64,
    /// Bytes to read, e.g. 4096 or 1M (whole blocks are read; the output stops at this length).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    len: u64,
    /// Write the data to this file instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct MapArgs {
    /// The device image (not mounted). Its file system, if it holds one, is mounted to count
    /// each zone's live blocks (a mount writes a checkpoint).
    image: PathBuf,
    /// Draw the zones as an SVG picture into this file (`-`: stdout): outlined in their state's
    /// colour, filled up to the write pointer and the live data, with a bar and a number for
    /// the highest erase count of their blocks, and a legend.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Print the same data as JSON: {zone_size_lbas, zone_cap_lbas, file_system, zones: [{zone,
    /// state, zslba, wp, zcap, written_lbas, role, live_blocks, erase_counts}]}. Without --svg
    /// or --json, a table.
    #[arg(long)]
    json: bool,
}

pub fn run(command: ZoneCommand) -> anyhow::Result<()> {
    match command {
        ZoneCommand::Report(args) => report(&args),
        ZoneCommand::Open(args) => action(&args, ZoneAction::Open, "zone open"),
        ZoneCommand::Close(args) => action(&args, ZoneAction::Close, "zone close"),
        ZoneCommand::Finish(args) => action(&args, ZoneAction::Finish, "zone finish"),
        ZoneCommand::Reset(args) => action(&args, ZoneAction::Reset, "zone reset"),
        ZoneCommand::Append(args) if args.block_by_block => append_stream(&args),
        ZoneCommand::Append(args) => append(&args),
        ZoneCommand::Write(args) => write(&args),
        ZoneCommand::Read(args) => read(&args),
        ZoneCommand::Map(args) => map(&args),
    }
}

fn report(args: &ReportArgs) -> anyhow::Result<()> {
    let filter = args.state.map_or(ReportFilter::All, StateArg::filter);
    let (zones, zone_size) = with_device(&args.image, |_, driver| {
        let info = driver.info();
        let (_, zones) = driver
            .report(0, filter, info.nr_zones)
            .during("zone report")?;
        Ok((zones, info.zone_size_lbas))
    })?;
    if args.json {
        let list: Vec<ZoneJson> = zones
            .iter()
            .map(|z| ZoneJson {
                zone: z.zslba / zone_size,
                state: state_name(z.state),
                zslba: z.zslba,
                wp: z.wp,
                zcap: z.zcap,
            })
            .collect();
        return print_json(&list);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:>6}  {:<13}  {:>12}  {:>12}  {:>10}",
        "zone", "state", "zslba", "wp", "zcap"
    )?;
    for z in &zones {
        writeln!(
            out,
            "{:>6}  {:<13}  {:>12}  {:>12}  {:>10}",
            z.zslba / zone_size,
            state_name(z.state),
            z.zslba,
            z.wp,
            z.zcap
        )?;
    }
    Ok(())
}

/// One zone of `csd zone report --json`.
#[derive(Debug, serde::Serialize)]
struct ZoneJson {
    zone: u64,
    state: &'static str,
    zslba: u64,
    wp: u64,
    zcap: u64,
}

fn action(args: &TargetArgs, action: ZoneAction, what: &str) -> anyhow::Result<()> {
    with_device(&args.image, |_, driver| {
        if args.all {
            return driver.zone_action(0, action, true).during(what);
        }
        for &zone in &args.zones {
            let zslba = zone_start(driver, zone)?;
            driver
                .zone_action(zslba, action, false)
                .during(&format!("{what} of zone {zone}"))?;
        }
        Ok(())
    })
}

fn append(args: &AppendArgs) -> anyhow::Result<()> {
    let mut data = read_input(&args.input)?;
    pad_to_blocks(&mut data);
    let lbas = with_device(&args.image, |_, driver| {
        let zslba = zone_start(driver, args.zone)?;
        check_room(driver, args.zone, zslba, data.len() as u64)?;
        let step = driver.info().zasl_lbas.max(1) as usize * LBA_BYTES as usize;
        let bar = progress(data.len() as u64, "appending");
        let mut lbas = Vec::with_capacity(data.len().div_ceil(step));
        for chunk in data.chunks(step) {
            lbas.push(driver.append(zslba, chunk.to_vec()).during("zone append")?);
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        Ok(lbas)
    })?;
    let first = lbas.first().copied().unwrap_or_default();
    if args.json {
        print_json(&AppendJson {
            lba: first,
            lbas: (lbas.len() > 1).then_some(lbas),
        })
    } else {
        println!("{first}");
        Ok(())
    }
}

/// Refuses an append that cannot fit in what is left of the zone, before any of it is written.
/// A full zone is left to the device, which answers Zone Is Full.
fn check_room(driver: &Driver, zone: u32, zslba: u64, len_bytes: u64) -> anyhow::Result<()> {
    let (_, zones) = driver
        .report(zslba, ReportFilter::All, 1)
        .during("zone report")?;
    let Some(z) = zones.first() else {
        return Ok(());
    };
    if z.state == ZoneState::Full {
        return Ok(());
    }
    let lba = u64::from(LBA_BYTES);
    let room = (z.zslba + z.zcap).saturating_sub(z.wp) * lba;
    if len_bytes > room {
        return Err(anyhow!(
            "{} does not fit in zone {zone}: it has room for {} more (capacity {}, {} written); nothing was appended",
            Bytes(len_bytes),
            Bytes(room),
            Bytes(z.zcap * lba),
            Bytes((z.wp - z.zslba) * lba)
        ));
    }
    Ok(())
}

/// `csd zone append --json`: the first LBA, and every piece's LBA when split.
#[derive(Debug, serde::Serialize)]
struct AppendJson {
    lba: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    lbas: Option<Vec<u64>>,
}

/// Reads up to one block; a short block only at the end of the input.
fn read_block(input: &mut dyn Read, block: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < block.len() {
        match input.read(&mut block[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn append_stream(args: &AppendArgs) -> anyhow::Result<()> {
    let mut input: Box<dyn BufRead> = if is_stdio(&args.input) {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(&args.input)
                .with_context(|| format!("could not read {}", args.input.display()))?,
        ))
    };
    with_device(&args.image, |_, driver| {
        let zslba = zone_start(driver, args.zone)?;
        let mut out = std::io::stdout().lock();
        let mut block = vec![0u8; LBA_BYTES as usize];
        loop {
            let n = read_block(&mut input, &mut block).context("could not read the input")?;
            if n == 0 {
                return Ok(());
            }
            block[n..].fill(0);
            let lba = driver.append(zslba, block.clone()).during("zone append")?;
            if args.json {
                writeln!(out, "{}", json!({ "lba": lba }))?;
            } else {
                writeln!(out, "{lba}")?;
            }
            // Acknowledged means printed: flush before taking the next block.
            out.flush().context("could not write to stdout")?;
        }
    })
}

fn write(args: &WriteArgs) -> anyhow::Result<()> {
    let mut data = read_input(&args.input)?;
    pad_to_blocks(&mut data);
    with_device(&args.image, |_, driver| {
        let step = STEP_BYTES;
        let bar = progress(data.len() as u64, "writing");
        let mut lba = args.lba;
        for chunk in data.chunks(step) {
            driver.write(lba, chunk).during("write")?;
            lba += (chunk.len() / LBA_BYTES as usize) as u64;
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        Ok(())
    })
}

/// Bytes per driver call of a long write or read, so its progress bar moves (the driver splits
/// each call further by the device's transfer limit).
const STEP_BYTES: usize = 1 << 20;

fn read(args: &ReadArgs) -> anyhow::Result<()> {
    if args.len == 0 {
        return Err(anyhow!("--len 0 reads nothing: give a positive length"));
    }
    let mut out = output_writer(args.output.as_ref())?;
    with_device(&args.image, |_, driver| {
        let step = (STEP_BYTES / LBA_BYTES as usize) as u64;
        let blocks = args.len.div_ceil(u64::from(LBA_BYTES));
        let bar = progress(args.len, "reading");
        let mut left = args.len;
        let mut lba = args.lba;
        let end = args
            .lba
            .checked_add(blocks)
            .ok_or_else(|| anyhow!("LBA {} + {} blocks overflows", args.lba, blocks))?;
        while lba < end {
            let n = (end - lba).min(step);
            let data = driver.read(lba, n).during("read")?;
            let keep = data.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            out.write_all(&data[..keep])
                .and_then(|()| out.flush())
                .map_err(|e| anyhow!("could not write the data: {e}"))?;
            left -= keep as u64;
            lba += n;
            bar.inc(keep as u64);
        }
        bar.finish_and_clear();
        Ok(())
    })
}

fn map(args: &MapArgs) -> anyhow::Result<()> {
    let svg_to_stdout = args.svg.as_deref().is_some_and(is_stdio);
    if svg_to_stdout && args.json {
        return Err(anyhow!(
            "--svg - and --json would both write to stdout: give --svg a file"
        ));
    }
    // The map mounts the file system (if the image holds one) to find its live data.
    super::open::use_file_system(format!("csd zone map (pid {})", std::process::id()));
    let bar = spinner("mapping the zones");
    let map = (|| -> anyhow::Result<ZoneMap> {
        let map = with_device(&args.image, |_, driver| {
            ZoneMap::read(driver).with_context(|| format!("{}", args.image.display()))
        })?;
        // The zone manager's erase counts, from the image once the device is closed.
        let counts = image_zone_erase_counts(&args.image).with_context(|| {
            format!(
                "could not read the erase counts of {}",
                args.image.display()
            )
        })?;
        Ok(map.with_erase_counts(counts))
    })();
    bar.finish_and_clear();
    let map = map?;
    if let Some(path) = &args.svg {
        let title = format!("Zones of {}", args.image.display());
        let mut out = output_writer(Some(path))?;
        out.write_all(map.to_svg(&title).as_bytes())
            .and_then(|()| out.flush())
            .with_context(|| format!("could not write {}", path.display()))?;
    }
    if args.json {
        return print_json(&map);
    }
    if args.svg.is_none() {
        print_map(&map)?;
    }
    Ok(())
}

/// The zone map as a table: one line per zone.
fn print_map(map: &ZoneMap) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:>6}  {:<13}  {:>10}  {:>10}  {:<10}  erase counts",
        "zone", "state", "written", "live", "role"
    )?;
    for z in &map.zones {
        let live = z
            .live_blocks
            .map_or_else(|| "-".to_string(), |n| n.to_string());
        let role = z.role.map_or("-", |r| r.name());
        let erase: Vec<String> = z.erase_counts.iter().map(u32::to_string).collect();
        writeln!(
            out,
            "{:>6}  {:<13}  {:>10}  {:>10}  {:<10}  {}",
            z.zone,
            state_name(z.state),
            z.written_lbas,
            live,
            role,
            if erase.is_empty() {
                "-".to_string()
            } else {
                erase.join(" ")
            }
        )?;
    }
    Ok(())
}
