//! The zone map: every zone of a device as one SVG picture or one JSON list (`csd zone map`,
//! and the bench's `zone-map.svg`): its state, how far it is written, the file system's live
//! data in it and the erase counts of the NAND blocks it holds.
//!
//! Three sources, each through its public interface: the device's zone report, the mounted file
//! system's [`Lfs::zone_usage`] ([`ZoneMap::read`] takes both from a running device), and the
//! zone manager's erase counts, read from the powered-off media afterwards
//! ([`crate::device::zone_erase_counts`], added with [`ZoneMap::with_erase_counts`]).
//!
//! The picture is a grid of rectangles with labels and a legend, written as SVG text here: the
//! bench's plotting crate draws charts with axes, which this is not.

use std::fmt::Write;

use common::zns::{ZoneDescriptor, ZoneState};
use lfs::{IoError, Lfs, LfsError, ZoneRole, ZoneUsage, Zoned};
use serde::Serializer;

/// A zone state's name in reports and JSON.
pub fn state_name(state: ZoneState) -> &'static str {
    match state {
        ZoneState::Empty => "empty",
        ZoneState::ImplicitlyOpened => "implicit_open",
        ZoneState::ExplicitlyOpened => "explicit_open",
        ZoneState::Closed => "closed",
        ZoneState::Full => "full",
        ZoneState::ReadOnly => "read_only",
        ZoneState::Offline => "offline",
    }
}

/// Every zone state, in the legend's order.
pub const STATES: [ZoneState; 7] = ZoneState::ALL;

/// The colour a state is drawn in.
fn state_colour(state: ZoneState) -> &'static str {
    match state {
        ZoneState::Empty => "#bdbdbd",
        ZoneState::ImplicitlyOpened => "#6baed6",
        ZoneState::ExplicitlyOpened => "#2171b5",
        ZoneState::Closed => "#fd8d3c",
        ZoneState::Full => "#525252",
        ZoneState::ReadOnly => "#cb181d",
        ZoneState::Offline => "#000000",
    }
}

const WRITTEN_COLOUR: &str = "#c6dbef";
const LIVE_COLOUR: &str = "#31a354";
const WEAR_COLOUR: &str = "#8c2d04";

/// Why [`ZoneMap::read`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ZoneMapError {
    /// The device holds a file system that could not be mounted or asked.
    #[error("could not read the file system's zones: {0}")]
    FileSystem(#[source] LfsError),
    /// The zone report failed.
    #[error("zone report failed: {0}")]
    Report(#[source] IoError),
}

/// Every zone of a device, as [`ZoneMap::read`] found it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ZoneMap {
    pub zone_size_lbas: u64,
    pub zone_cap_lbas: u64,
    /// Whether the device holds a file system (then each zone has a role and live blocks).
    pub file_system: bool,
    pub zones: Vec<MapZone>,
}

/// One zone of a [`ZoneMap`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct MapZone {
    pub zone: u32,
    #[serde(serialize_with = "state_str")]
    pub state: ZoneState,
    pub zslba: u64,
    /// The write pointer as the zone report gives it.
    pub wp: u64,
    pub zcap: u64,
    /// LBAs written from the zone's start (a full zone's whole capacity, none for an offline
    /// one).
    pub written_lbas: u64,
    /// What the file system uses the zone for; none without a file system.
    #[serde(serialize_with = "role_str")]
    pub role: Option<ZoneRole>,
    /// Blocks of file data the file system maps into the zone: its valid data. None without a
    /// file system.
    pub live_blocks: Option<u64>,
    /// The erase counts of the NAND blocks the zone holds now, in slot order (none while it is
    /// empty: a zone takes its blocks at its first write and gives them back at its reset).
    pub erase_counts: Vec<u32>,
}

fn state_str<S: Serializer>(state: &ZoneState, out: S) -> Result<S::Ok, S::Error> {
    out.serialize_str(state_name(*state))
}

fn role_str<S: Serializer>(role: &Option<ZoneRole>, out: S) -> Result<S::Ok, S::Error> {
    match role {
        Some(role) => out.serialize_str(role.name()),
        None => out.serialize_none(),
    }
}

impl MapZone {
    /// The highest erase count of the zone's blocks (0 while it holds none).
    pub fn erase_max(&self) -> u32 {
        self.erase_counts.iter().copied().max().unwrap_or(0)
    }
}

impl ZoneMap {
    /// The zones of `report` (every zone of the device, in order), without file-system usage
    /// or erase counts.
    pub fn from_report(report: &[ZoneDescriptor], zone_size_lbas: u64, zone_cap_lbas: u64) -> Self {
        let zones = report
            .iter()
            .map(|d| MapZone {
                zone: u32::try_from(d.zslba / zone_size_lbas.max(1)).unwrap_or(u32::MAX),
                state: d.state,
                zslba: d.zslba,
                wp: d.wp,
                zcap: d.zcap,
                written_lbas: match d.state {
                    ZoneState::Empty | ZoneState::Offline => 0,
                    ZoneState::Full => d.zcap,
                    _ => d.wp.saturating_sub(d.zslba).min(d.zcap),
                },
                role: None,
                live_blocks: None,
                erase_counts: Vec::new(),
            })
            .collect();
        ZoneMap {
            zone_size_lbas,
            zone_cap_lbas,
            file_system: false,
            zones,
        }
    }

    /// Adds what the file system keeps in each zone ([`Lfs::zone_usage`]).
    pub fn with_file_system(mut self, usage: &[ZoneUsage]) -> Self {
        self.file_system = true;
        for u in usage {
            if let Some(z) = self.zones.iter_mut().find(|z| z.zone == u.zone.0) {
                z.role = Some(u.role);
                z.live_blocks = Some(u.live_blocks);
            }
        }
        self
    }

    /// Adds the erase counts of each zone's blocks, by zone
    /// ([`crate::device::zone_erase_counts`]).
    pub fn with_erase_counts(mut self, counts: Vec<Vec<u32>>) -> Self {
        for (z, counts) in self.zones.iter_mut().zip(counts) {
            z.erase_counts = counts;
        }
        self
    }

    /// The zones of a running device and, if it holds a file system, what the file system keeps
    /// in each. The file system is mounted (which writes a checkpoint, as every mount does)
    /// and let go without an unmount: nothing changed after the mount made everything durable,
    /// and an unmount would write another checkpoint after the zones were looked at. The zones
    /// are reported after the mount, so they show what it left. A device with no file system
    /// (or zones too few for one) gives a map without usage.
    pub fn read<D: Zoned + Clone + 'static>(device: &D) -> Result<ZoneMap, ZoneMapError> {
        let usage = match Lfs::mount(device) {
            Ok(fs) => Some(fs.zone_usage().map_err(ZoneMapError::FileSystem)?),
            Err(LfsError::NotFormatted | LfsError::InvalidArgument(_)) => None,
            Err(e) => return Err(ZoneMapError::FileSystem(e)),
        };
        let info = *device.info();
        let report = device.all_zones().map_err(ZoneMapError::Report)?;
        let map = ZoneMap::from_report(&report, info.zone_size_lbas, info.zone_cap_lbas);
        Ok(match usage {
            Some(usage) => map.with_file_system(&usage),
            None => map,
        })
    }

    /// The map as an SVG picture titled `title`: one cell per zone, in rows of [`COLUMNS`],
    /// outlined in its state's colour, filled from the bottom up to its write pointer and, inside
    /// that, up to its live data; a bar at its right edge for the highest erase count of its
    /// blocks against the device's highest. A legend explains the colours.
    pub fn to_svg(&self, title: &str) -> String {
        let rows = self.zones.len().div_ceil(COLUMNS).max(1);
        let width = 2 * MARGIN + COLUMNS * CELL_W - GAP;
        let grid_top = MARGIN + TITLE_H;
        let legend_top = grid_top + rows * CELL_H + MARGIN;
        let height = legend_top + LEGEND_H + MARGIN;
        let wear_max = self.zones.iter().map(MapZone::erase_max).max().unwrap_or(0);
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="10">
<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>
<text x="{MARGIN}" y="{}" font-size="14">{}</text>"##,
            MARGIN + 14,
            escape(title)
        );
        for (i, z) in self.zones.iter().enumerate() {
            let x = MARGIN + (i % COLUMNS) * CELL_W;
            let y = grid_top + (i / COLUMNS) * CELL_H;
            self.cell(&mut svg, z, x, y, wear_max);
        }
        self.legend(&mut svg, legend_top, wear_max);
        svg.push_str("</svg>\n");
        svg
    }

    fn cell(&self, svg: &mut String, z: &MapZone, x: usize, y: usize, wear_max: u32) {
        let (w, h) = (CELL_W - GAP, CELL_H - GAP);
        let cap = z.zcap.max(1) as f64;
        // The bars' area: below the zone's number, above its erase count.
        let (bar_x, bar_top, bar_w, bar_h) = (x + 5, y + 16, w - 16, h - 30);
        let fill = |lbas: u64| (bar_h as f64 * (lbas.min(z.zcap) as f64 / cap)).round() as usize;
        let mut detail = format!(
            "zone {}: {}, {} of {} LBAs written",
            z.zone,
            state_name(z.state),
            z.written_lbas,
            z.zcap
        );
        if let (Some(role), Some(live)) = (z.role, z.live_blocks) {
            let _ = write!(detail, "; file system: {}, {live} live blocks", role.name());
        }
        let _ = write!(detail, "; erase counts {:?}", z.erase_counts);
        let _ = writeln!(
            svg,
            r##"<rect class="zone" data-zone="{}" x="{x}" y="{y}" width="{w}" height="{h}" fill="#ffffff" stroke="{}" stroke-width="3"><title>{}</title></rect>"##,
            z.zone,
            state_colour(z.state),
            escape(&detail)
        );
        let written = fill(z.written_lbas);
        let _ = writeln!(
            svg,
            r##"<rect class="written" x="{bar_x}" y="{}" width="{bar_w}" height="{written}" fill="{WRITTEN_COLOUR}"/>"##,
            bar_top + bar_h - written
        );
        if let Some(live) = z.live_blocks.filter(|&n| n > 0) {
            let live = fill(live);
            let _ = writeln!(
                svg,
                r##"<rect class="live" x="{}" y="{}" width="{}" height="{live}" fill="{LIVE_COLOUR}"/>"##,
                bar_x + 3,
                bar_top + bar_h - live,
                bar_w - 6
            );
        }
        if wear_max > 0 && !z.erase_counts.is_empty() {
            let wear = (bar_h as f64 * f64::from(z.erase_max()) / f64::from(wear_max)).round();
            let wear = (wear as usize).max(1);
            let _ = writeln!(
                svg,
                r##"<rect class="wear" x="{}" y="{}" width="4" height="{wear}" fill="{WEAR_COLOUR}"/>"##,
                bar_x + bar_w + 3,
                bar_top + bar_h - wear
            );
        }
        let role = z.role.map_or("", |r| match r {
            ZoneRole::Checkpoint => " ckpt",
            ZoneRole::Metadata => " meta",
            ZoneRole::Hot => " hot",
            ZoneRole::Cold => " cold",
            ZoneRole::Data | ZoneRole::Free => "",
        });
        let _ = writeln!(
            svg,
            r##"<text x="{}" y="{}">{}{role}</text>"##,
            x + 5,
            y + 12,
            z.zone
        );
        if !z.erase_counts.is_empty() {
            let _ = writeln!(
                svg,
                r##"<text x="{}" y="{}">e{}</text>"##,
                x + 5,
                y + h - 4,
                z.erase_max()
            );
        }
    }

    fn legend(&self, svg: &mut String, top: usize, wear_max: u32) {
        let _ = writeln!(svg, r#"<g id="legend">"#);
        for (i, state) in STATES.iter().enumerate() {
            let x = MARGIN + i * LEGEND_STATE_W;
            let _ = writeln!(
                svg,
                r##"<rect class="swatch" x="{x}" y="{top}" width="14" height="14" fill="#ffffff" stroke="{}" stroke-width="3"/><text x="{}" y="{}">{}</text>"##,
                state_colour(*state),
                x + 20,
                top + 11,
                state_name(*state)
            );
        }
        let lines = [
            (WRITTEN_COLOUR, "written, up to the write pointer".to_string()),
            (
                LIVE_COLOUR,
                if self.file_system {
                    "live file data (the file system's valid blocks)".to_string()
                } else {
                    "live file data: none, the device holds no file system".to_string()
                },
            ),
            (
                WEAR_COLOUR,
                format!(
                    "eN: highest erase count of the zone's blocks (bar: against the device's highest, {wear_max})"
                ),
            ),
        ];
        for (i, (colour, text)) in lines.iter().enumerate() {
            let y = top + 22 + i * 18;
            let _ = writeln!(
                svg,
                r##"<rect class="swatch" x="{MARGIN}" y="{y}" width="14" height="14" fill="{colour}"/><text x="{}" y="{}">{}</text>"##,
                MARGIN + 20,
                y + 11,
                escape(text)
            );
        }
        let _ = writeln!(svg, "</g>");
    }
}

/// Zones per row of the picture.
pub const COLUMNS: usize = 16;
const CELL_W: usize = 64;
const CELL_H: usize = 72;
const GAP: usize = 6;
const MARGIN: usize = 16;
const TITLE_H: usize = 24;
const LEGEND_H: usize = 80;
const LEGEND_STATE_W: usize = 110;

/// `text` with XML's special characters escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use common::zns::ZoneType;
    use lfs::ZoneId;

    use super::*;

    fn zone(zslba: u64, state: ZoneState, wp: u64) -> ZoneDescriptor {
        ZoneDescriptor {
            zone_type: ZoneType::SequentialWriteRequired,
            state,
            attrs: 0,
            zcap: 100,
            zslba,
            wp,
        }
    }

    /// Written LBAs follow the state (a full zone is written to capacity whatever its write
    /// pointer says); usage and erase counts land on their zones; the picture has one
    /// `rect.zone` per zone, a live bar only where there is live data, a wear bar only where
    /// the zone holds blocks, and the title's XML characters escaped.
    #[test]
    fn map_and_picture() {
        let report = [
            zone(0, ZoneState::Closed, 40),
            zone(128, ZoneState::Full, 128),
            zone(256, ZoneState::Empty, 256),
        ];
        let usage = [
            ZoneUsage {
                zone: ZoneId(0),
                role: ZoneRole::Hot,
                live_blocks: 30,
            },
            ZoneUsage {
                zone: ZoneId(1),
                role: ZoneRole::Data,
                live_blocks: 0,
            },
            ZoneUsage {
                zone: ZoneId(2),
                role: ZoneRole::Free,
                live_blocks: 0,
            },
        ];
        let map = ZoneMap::from_report(&report, 128, 100)
            .with_file_system(&usage)
            .with_erase_counts(vec![vec![3, 5], vec![4], vec![]]);
        let written: Vec<u64> = map.zones.iter().map(|z| z.written_lbas).collect();
        assert_eq!(written, [40, 100, 0]);
        assert_eq!(map.zones[0].live_blocks, Some(30));
        assert_eq!(map.zones[1].role, Some(ZoneRole::Data));
        assert_eq!(map.zones[0].erase_max(), 5);
        assert_eq!(map.zones[2].erase_max(), 0);

        let svg = map.to_svg("zones of a<b & \"c\"");
        assert!(svg.contains("zones of a&lt;b &amp; &quot;c&quot;"), "{svg}");
        assert_eq!(svg.matches(r#"<rect class="zone""#).count(), 3);
        assert_eq!(svg.matches(r#"<rect class="live""#).count(), 1);
        assert_eq!(svg.matches(r#"<rect class="wear""#).count(), 2);
        assert_eq!(svg.matches(r#"<g id="legend">"#).count(), 1);
        assert!(svg.trim_end().ends_with("</svg>"));

        let json = serde_json::to_value(&map).expect("json");
        assert_eq!(json["zones"][1]["state"], "full");
        assert_eq!(json["zones"][0]["role"], "hot");
        assert_eq!(json["zones"][0]["erase_counts"], serde_json::json!([3, 5]));
    }
}
