//! The report's plots: grouped bar charts as SVG (plotters), next to report.md.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

/// One series of bars: a name and one value per category.
#[derive(Debug)]
pub struct Series<'a> {
    pub name: &'a str,
    pub values: Vec<f64>,
}

/// A bar chart: one group of bars per category, one bar per series.
#[derive(Debug)]
pub struct Bars<'a> {
    pub title: &'a str,
    pub y_label: &'a str,
    pub categories: Vec<String>,
    pub series: Vec<Series<'a>>,
    /// A dashed horizontal line (say, "equal to the peer" at 1.0).
    pub reference: Option<f64>,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x8c, 0x56, 0x4b),
];

/// One line: a name and its points.
#[derive(Debug)]
pub struct Line {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A line chart on logarithmic axes.
#[derive(Debug)]
pub struct Lines<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub lines: Vec<Line>,
}

/// Draws `chart` into the SVG file `path`.
pub fn draw_lines(chart: &Lines<'_>, path: &Path) -> Result<()> {
    let err = |e: DrawingAreaErrorKind<_>| anyhow!("drawing {}: {e}", path.display());
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let points = || chart.lines.iter().flat_map(|l| l.points.iter().copied());
    let (x0, x1) = points().fold((f64::MAX, f64::MIN), |(a, b), (x, _)| (a.min(x), b.max(x)));
    let (y0, y1) = points().fold((f64::MAX, f64::MIN), |(a, b), (_, y)| (a.min(y), b.max(y)));
    if !(x0 > 0.0 && y0 > 0.0 && x1 > x0 && y1.is_finite()) {
        return Err(anyhow!("drawing {}: no positive points", path.display()));
    }
    let mut plot = ChartBuilder::on(&root)
        .caption(chart.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d((x0..x1).log_scale(), (y0 / 1.5..y1 * 1.5).log_scale())
        .map_err(err)?;
    plot.configure_mesh()
        .x_desc(chart.x_label)
        .y_desc(chart.y_label)
        .draw()
        .map_err(err)?;
    for (i, line) in chart.lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        plot.draw_series(LineSeries::new(
            line.points.iter().copied(),
            color.stroke_width(2),
        ))
        .map_err(err)?
        .label(line.name.as_str())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
    }
    plot.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Draws `bars` into the SVG file `path`.
pub fn draw(bars: &Bars<'_>, path: &Path) -> Result<()> {
    let err = |e: DrawingAreaErrorKind<_>| anyhow!("drawing {}: {e}", path.display());
    let root = SVGBackend::new(path, (800, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let n = bars.categories.len();
    let top = bars
        .series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .chain(bars.reference)
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        * 1.15;
    let top = if top > 0.0 { top } else { 1.0 };
    let mut chart = ChartBuilder::on(&root)
        .caption(bars.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..n as f64, 0.0..top)
        .map_err(err)?;
    let names = bars.categories.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(2 * n + 1)
        .x_label_formatter(&move |x: &f64| {
            let i = x.floor();
            if (x - i - 0.5).abs() < 1e-6 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(bars.y_label)
        .draw()
        .map_err(err)?;
    let width = 0.8 / bars.series.len().max(1) as f64;
    for (s, series) in bars.series.iter().enumerate() {
        let color = COLORS[s % COLORS.len()];
        chart
            .draw_series(series.values.iter().enumerate().map(|(c, &v)| {
                let x0 = c as f64 + 0.1 + s as f64 * width;
                let v = if v.is_finite() { v } else { top };
                Rectangle::new([(x0, 0.0), (x0 + width * 0.95, v)], color.filled())
            }))
            .map_err(err)?
            .label(series.name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    if let Some(r) = bars.reference {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(0.0, r), (n as f64, r)],
                BLACK.stroke_width(1),
            )))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
