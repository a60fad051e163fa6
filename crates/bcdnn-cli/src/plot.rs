//! `bcdnn plot`: draws the curves of one or more run records into one SVG or PNG figure.
//!
//! The figure has three panels side by side, with one colour per run:
//!
//! - accuracy against iteration, training accuracy solid and test accuracy dashed;
//! - the objective `Lbar` against iteration, on a logarithmic y axis;
//! - the squared step length `||P^k - P^{k-1}||^2` (`step_w + step_u + step_v`) against
//!   iteration on log-log axes, with a `c/k` reference line.
//!
//! A record is the JSON-lines file that `bcdnn train --record` writes (see `record.rs`): a
//! `"kind": "run"` line, `"kind": "iteration"` lines and usually a `"kind": "summary"` line. A
//! record without the summary line (the temporary file of an interrupted run) is plotted with a
//! warning. Records of trainers that do not compute every value, such as SGD, use the same
//! layout with those fields null or absent. A null or absent value is left out of its panel,
//! and so is a value of zero or below in a logarithmic panel.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Deserialize;
use serde_json::Value;

use crate::record::RECORD_FORMAT_VERSION;

/// Oldest record format version this program reads. Version 1 lacks the fields that version 2
/// added, and the figure uses none of them.
const OLDEST_FORMAT_VERSION: u32 = 1;

/// DejaVu Sans 2.37, embedded so that text is measured and drawn the same way on machines
/// without system fonts. Licence: `assets/DejaVuSans-LICENSE.txt`.
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// The font family every text element of the figure uses.
const FONT_FAMILY: &str = "sans-serif";

/// Line colours of the runs, in input order (matplotlib's "tab10" palette); the eleventh
/// run reuses the first colour.
const RUN_COLOURS: [RGBColor; 10] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
];

/// Arguments of `bcdnn plot`.
#[derive(clap::Args, Debug, Clone)]
pub struct PlotArgs {
    /// Run records written by `bcdnn train --record`, one colour per file.
    #[arg(required = true, value_name = "RUN.jsonl")]
    pub inputs: Vec<PathBuf>,
    /// Figure file to write; its extension selects the format, `.svg` or `.png`. An existing
    /// file is replaced.
    #[arg(short, long, value_name = "FIGURE")]
    pub output: PathBuf,
    /// Legend name of one run, given once per input in input order. Without it a run is named
    /// by the `label` field of its run line, or else by its file name without the extension.
    #[arg(long = "label", value_name = "NAME")]
    pub labels: Vec<String>,
    /// Width of the figure in pixels.
    #[arg(long, default_value_t = 1800, value_parser = clap::value_parser!(u32).range(300..=20000))]
    pub width: u32,
    /// Height of the figure in pixels.
    #[arg(long, default_value_t = 560, value_parser = clap::value_parser!(u32).range(200..=20000))]
    pub height: u32,
}

/// Reads every record of `args.inputs` and writes the figure to `args.output`.
pub fn run_plot(args: &PlotArgs) -> Result<()> {
    let format = FigureFormat::from_path(&args.output)?;
    if !args.labels.is_empty() && args.labels.len() != args.inputs.len() {
        bail!(
            "{} --label values were given for {} run records; give one --label per record, in the same order, or none",
            args.labels.len(),
            args.inputs.len()
        );
    }

    crate::output::ensure_regular_file_or_missing(&args.output, "--output")?;
    if let Ok(output) = std::fs::canonicalize(&args.output) {
        for input in &args.inputs {
            if std::fs::canonicalize(input).is_ok_and(|input| input == output) {
                bail!(
                    "output {} is also the input record {}; writing the figure would destroy the record, so choose another -o path",
                    args.output.display(),
                    input.display()
                );
            }
        }
    }

    let mut runs = Vec::with_capacity(args.inputs.len());
    for (index, path) in args.inputs.iter().enumerate() {
        let mut run = read_run(path)?;
        if let Some(label) = args.labels.get(index) {
            run.label = label.clone();
        }
        runs.push(run);
    }

    write_figure(&runs, &args.output, format, (args.width, args.height))?;
    log::info!("wrote {} ({} runs)", args.output.display(), runs.len());
    Ok(())
}

/// The file formats a figure can be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FigureFormat {
    Svg,
    Png,
}

impl FigureFormat {
    /// Picks the format from the extension of `path`, ignoring case.
    pub fn from_path(path: &Path) -> Result<Self> {
        let extension = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
        match extension.as_deref() {
            Some("svg") => Ok(FigureFormat::Svg),
            Some("png") => Ok(FigureFormat::Png),
            Some(other) => bail!(
                "unsupported figure format '.{other}' of {}; name the output file with .svg or .png",
                path.display()
            ),
            None => bail!("figure file {} has no extension; name it with .svg or .png", path.display()),
        }
    }

    fn extension(self) -> &'static str {
        match self {
            FigureFormat::Svg => "svg",
            FigureFormat::Png => "png",
        }
    }
}

/// The values of one iteration line that the figure uses; `None` where the line has null or
/// no value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IterationPoint {
    pub iteration: usize,
    pub objective: Option<f64>,
    pub train_accuracy: Option<f64>,
    pub test_accuracy: Option<f64>,
    /// `step_w + step_u + step_v`; `None` unless all three are present.
    pub step: Option<f64>,
}

/// The curves of one run record.
#[derive(Clone, Debug, PartialEq)]
pub struct RunCurves {
    /// Legend name.
    pub label: String,
    pub points: Vec<IterationPoint>,
}

/// One `"kind": "iteration"` line. Fields other than these are ignored.
#[derive(Deserialize)]
struct IterationLine {
    iteration: usize,
    objective: Option<f64>,
    train_accuracy: Option<f64>,
    test_accuracy: Option<f64>,
    step_w: Option<f64>,
    step_u: Option<f64>,
    step_v: Option<f64>,
}

/// Reads and checks the run record at `path`.
///
/// The error names the file, and the line where there is one. It rejects:
/// - an empty file, or a line that is not valid JSON (a file truncated mid-line included);
/// - a first line that is not a `"kind": "run"` line, or whose `format_version` is outside
///   [`OLDEST_FORMAT_VERSION`]..=[`RECORD_FORMAT_VERSION`];
/// - a second run line, a line of an unknown kind, or a line after the summary line;
/// - a record without iteration lines.
pub fn read_run(path: &Path) -> Result<RunCurves> {
    let text = fs::read_to_string(path).with_context(|| format!("failed to read run record {}", path.display()))?;
    let location = |line: usize| format!("run record {}, line {line}", path.display());
    let mut lines =
        text.lines().enumerate().map(|(index, line)| (index + 1, line)).filter(|(_, line)| !line.trim().is_empty());
    let last_line = text.lines().count();
    let ends_mid_line = !text.ends_with('\n');

    let parse = |number: usize, line: &str| -> Result<Value> {
        serde_json::from_str(line).map_err(|error| {
            if number == last_line && ends_mid_line {
                anyhow!(
                    "{}: the file ends in the middle of a line ({error}); the run that writes it may still be running or may have been killed",
                    location(number)
                )
            } else {
                anyhow!("{}: not valid JSON: {error}", location(number))
            }
        })
    };

    let Some((first_number, first_line)) = lines.next() else {
        bail!(
            "run record {} is empty; a record starts with a {{\"kind\": \"run\"}} line, as written by `bcdnn train --record`",
            path.display()
        );
    };
    let run = parse(first_number, first_line)?;
    check_run_line(&run, &location(first_number))?;

    let mut points = Vec::new();
    let mut summary_line = None;
    for (number, line) in lines {
        let value = parse(number, line)?;
        if let Some(summary) = summary_line {
            bail!(
                "{}: a line follows the summary line {summary}; a record ends with its summary line",
                location(number)
            );
        }
        match value.get("kind").and_then(Value::as_str) {
            Some("iteration") => {
                let iteration: IterationLine = serde_json::from_value(value)
                    .with_context(|| format!("{}: invalid iteration line", location(number)))?;
                points.push(iteration.into_point());
            }
            Some("summary") => summary_line = Some(number),
            Some("run") => bail!(
                "{}: a second run line; plot each run's record as its own input instead of joining records",
                location(number)
            ),
            Some(other) => bail!(
                "{}: unknown line kind \"{other}\"; records of format versions {OLDEST_FORMAT_VERSION} to {RECORD_FORMAT_VERSION} have run, iteration and summary lines",
                location(number)
            ),
            None => bail!("{}: the line has no string field \"kind\"", location(number)),
        }
    }

    if points.is_empty() {
        bail!(
            "run record {} has no iteration lines, so there is nothing to plot; the run stopped before its first iteration",
            path.display()
        );
    }
    if summary_line.is_none() {
        log::warn!(
            "run record {} has no summary line, so the run may be unfinished; plotting its {} iterations",
            path.display(),
            points.len()
        );
    }

    let label = match run.get("label").and_then(Value::as_str) {
        Some(label) => label.to_string(),
        None => path.file_stem().unwrap_or(path.as_os_str()).to_string_lossy().into_owned(),
    };
    Ok(RunCurves { label, points })
}

/// Checks that `run` is a run line of the format version this program reads.
fn check_run_line(run: &Value, location: &str) -> Result<()> {
    let kind = run.get("kind").and_then(Value::as_str);
    if kind != Some("run") {
        let found = match kind {
            Some(kind) => format!("a \"{kind}\" line"),
            None => "a line without a string field \"kind\"".to_string(),
        };
        bail!(
            "{location}: expected the run line {{\"kind\": \"run\", ...}} first but found {found}; check that the file is a record written by `bcdnn train --record`"
        );
    }
    let writer = match run.get("bcdnn_version").and_then(Value::as_str) {
        Some(version) => format!("bcdnn {version}"),
        None => "a bcdnn version that did not record its version".to_string(),
    };
    match run.get("format_version").and_then(Value::as_u64) {
        Some(version) if (u64::from(OLDEST_FORMAT_VERSION)..=u64::from(RECORD_FORMAT_VERSION)).contains(&version) => {
            Ok(())
        }
        Some(version) => bail!(
            "{location}: record format version {version} is not supported; this bcdnn reads versions {OLDEST_FORMAT_VERSION} to {RECORD_FORMAT_VERSION}, so plot the record with {writer}, which wrote it"
        ),
        None => bail!("{location}: the run line has no integer field \"format_version\""),
    }
}

impl IterationLine {
    fn into_point(self) -> IterationPoint {
        let step = match (self.step_w, self.step_u, self.step_v) {
            (Some(w), Some(u), Some(v)) => Some(w + u + v),
            _ => None,
        };
        IterationPoint {
            iteration: self.iteration,
            objective: self.objective,
            train_accuracy: self.train_accuracy,
            test_accuracy: self.test_accuracy,
            step,
        }
    }
}

impl RunCurves {
    /// `(iteration, value)` of every point where `value` is present and finite, and positive
    /// when `positive` is set (for logarithmic axes).
    fn series(&self, value: impl Fn(&IterationPoint) -> Option<f64>, positive: bool) -> Points {
        self.points
            .iter()
            .filter_map(|point| value(point).map(|v| (point.iteration as f64, v)))
            .filter(|&(_, v)| v.is_finite() && (!positive || v > 0.0))
            .collect()
    }
}

/// Draws the figure into a temporary file beside `output` and renames it onto `output`, so a
/// reader never sees a half-written figure and a failure leaves an existing `output` as it was.
fn write_figure(runs: &[RunCurves], output: &Path, format: FigureFormat, size: (u32, u32)) -> Result<()> {
    if output.is_dir() {
        bail!(
            "figure path {} is a directory; give a file path such as {}",
            output.display(),
            output.join("figure.svg").display()
        );
    }
    let Some(file_name) = output.file_name() else {
        bail!("figure path {} has no file name; give a file path such as figure.svg", output.display());
    };
    let directory = match output.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !directory.is_dir() {
        bail!("directory {} of figure file {} does not exist; create it first", directory.display(), output.display());
    }

    // The temporary name keeps the format's extension last because the PNG encoder picks the
    // format from the extension.
    let temp_name = format!(".{}.{}.tmp.{}", file_name.to_string_lossy(), std::process::id(), format.extension());
    let temp_path = directory.join(temp_name);
    let written = render(runs, &temp_path, format, size).and_then(|()| {
        fs::rename(&temp_path, output)
            .with_context(|| format!("failed to move the figure from {} to {}", temp_path.display(), output.display()))
    });
    if written.is_err() {
        match fs::remove_file(&temp_path) {
            Ok(()) => {}
            Err(error) if error.kind() == ErrorKind::NotFound => {}
            Err(error) => log::warn!("failed to remove temporary figure file {}: {error}", temp_path.display()),
        }
    }
    written
}

/// Draws the figure into the file `path` in `format`.
fn render(runs: &[RunCurves], path: &Path, format: FigureFormat, size: (u32, u32)) -> Result<()> {
    plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, FONT)
        .map_err(|_| anyhow!("the embedded font DejaVuSans.ttf could not be parsed"))?;
    let drawing_failed = |error: String| anyhow!("failed to draw figure {}: {error}", path.display());
    match format {
        FigureFormat::Svg => {
            let mut svg = String::new();
            {
                let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
                draw_figure(&root, runs).map_err(|e| drawing_failed(e.to_string()))?;
                root.present().map_err(|e| drawing_failed(e.to_string()))?;
            }
            fs::write(path, svg).with_context(|| format!("failed to write figure file {}", path.display()))
        }
        FigureFormat::Png => {
            let root = BitMapBackend::new(path, size).into_drawing_area();
            draw_figure(&root, runs).map_err(|e| drawing_failed(e.to_string()))?;
            root.present().map_err(|e| drawing_failed(e.to_string()))
        }
    }
}

/// `(iteration, value)` pairs of one curve.
type Points = Vec<(f64, f64)>;

type DrawResult<DB> = std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn draw_figure<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, runs: &[RunCurves]) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 3));
    draw_accuracy_panel(&panels[0], runs)?;
    draw_objective_panel(&panels[1], runs)?;
    draw_step_panel(&panels[2], runs)
}

fn run_colour(index: usize) -> RGBColor {
    RUN_COLOURS[index % RUN_COLOURS.len()]
}

fn caption_font() -> TextStyle<'static> {
    (FONT_FAMILY, 22).into_font().into()
}

fn label_font() -> TextStyle<'static> {
    (FONT_FAMILY, 15).into_font().into()
}

/// Smallest and largest value, or `None` for no values.
fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |range, v| match range {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// Returns a linear axis range over `[lo, hi]` with 4% padding, at least one unit wide.
fn linear_range(lo: f64, hi: f64) -> std::ops::Range<f64> {
    let span = (hi - lo).max(1.0);
    (lo - 0.04 * span)..(hi + 0.04 * span)
}

/// Returns a logarithmic axis range over the positive `[lo, hi]`, padded by a fifth of a decade on
/// each side.
fn log_range(lo: f64, hi: f64) -> std::ops::Range<f64> {
    let pad = 10f64.powf(0.2);
    (lo / pad)..(hi * pad)
}

/// Formats a tick of a logarithmic axis as a power of ten (`1e-3`), other values in short
/// scientific notation.
fn log_tick(value: &f64) -> String {
    let exponent = value.log10().round();
    if (value.log10() - exponent).abs() < 1e-9 {
        format!("1e{exponent}")
    } else {
        format!("{value:.1e}")
    }
}

/// Formats a tick of a linear iteration axis: whole numbers without decimals.
fn iteration_tick(value: &f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// Formats a tick of a logarithmic iteration axis, labelling only 1, 2 and 5 times a power of
/// ten so that the labels of the nine ticks per decade do not overlap.
fn log_iteration_tick(value: &f64) -> String {
    let leading = value / 10f64.powf(value.log10().floor());
    if [1.0, 2.0, 5.0].iter().any(|&m| (leading - m).abs() < 1e-6) {
        format!("{value}")
    } else {
        String::new()
    }
}

/// Draws `points` as a solid or dashed line of `colour`, or as a dot when there is a single
/// point, and names the series `label` in the legend when a label is given. Draws nothing and
/// adds no legend entry for no points.
fn draw_curve<DB, X, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    points: &[(f64, f64)],
    colour: RGBColor,
    dashed: bool,
    label: Option<&str>,
) -> DrawResult<DB>
where
    DB: DrawingBackend,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    if points.is_empty() {
        return Ok(());
    }
    let style = colour.stroke_width(2);
    let annotation = if points.len() == 1 {
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))?
    } else if dashed {
        chart.draw_series(DashedLineSeries::new(points.iter().copied(), 8, 5, style))?
    } else {
        chart.draw_series(LineSeries::new(points.iter().copied(), style))?
    };
    if let Some(label) = label {
        annotation.label(label).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
    }
    Ok(())
}

/// Draws a panel's caption and a note in place of a chart when no run has values for it.
fn draw_empty_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, caption: &str, note: &str) -> DrawResult<DB> {
    let inner = area.titled(caption, caption_font())?;
    let (width, height) = inner.dim_in_pixel();
    let style = label_font().pos(plotters::style::text_anchor::Pos::new(
        plotters::style::text_anchor::HPos::Center,
        plotters::style::text_anchor::VPos::Center,
    ));
    inner.draw_text(note, &style, (width as i32 / 2, height as i32 / 2))
}

fn draw_accuracy_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, runs: &[RunCurves]) -> DrawResult<DB> {
    let caption = "Accuracy (train solid, test dashed)";
    let curves: Vec<(Points, Points)> = runs
        .iter()
        .map(|run| (run.series(|p| p.train_accuracy, false), run.series(|p| p.test_accuracy, false)))
        .collect();
    let all = curves.iter().flat_map(|(train, test)| train.iter().chain(test));
    let (Some((x_lo, x_hi)), Some((y_lo, y_hi))) = (bounds(all.clone().map(|p| p.0)), bounds(all.map(|p| p.1))) else {
        return draw_empty_panel(area, caption, "no accuracy values in these records");
    };

    // Accuracy is a fraction, so the axis shows at least 0.1 and ends just past [0, 1], where
    // a curve at 0 or 1 stays clear of the frame.
    let span = (y_hi - y_lo).max(0.1);
    let y_range = (y_lo - 0.05 * span).max(-0.01)..(y_hi + 0.05 * span).min(1.01);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, caption_font())
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(linear_range(x_lo, x_hi), y_range)?;
    chart
        .configure_mesh()
        .x_desc("iteration")
        .y_desc("accuracy")
        .x_label_formatter(&iteration_tick)
        .label_style(label_font())
        .axis_desc_style(label_font())
        .draw()?;

    for (index, (run, (train, test))) in runs.iter().zip(&curves).enumerate() {
        let colour = run_colour(index);
        let label = Some(run.label.as_str());
        // The run is named once, by its training curve or, without one, by its test curve.
        draw_curve(&mut chart, train, colour, false, label)?;
        draw_curve(&mut chart, test, colour, true, if train.is_empty() { label } else { None })?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(label_font())
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
}

fn draw_objective_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, runs: &[RunCurves]) -> DrawResult<DB> {
    let caption = "Objective Lbar";
    let curves: Vec<Points> = runs.iter().map(|run| run.series(|p| p.objective, true)).collect();
    let all = curves.iter().flatten();
    let (Some((x_lo, x_hi)), Some((y_lo, y_hi))) = (bounds(all.clone().map(|p| p.0)), bounds(all.map(|p| p.1))) else {
        return draw_empty_panel(area, caption, "no positive objective values in these records");
    };

    let mut chart = ChartBuilder::on(area)
        .caption(caption, caption_font())
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(linear_range(x_lo, x_hi), log_range(y_lo, y_hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("iteration")
        .y_desc("objective (log scale)")
        .x_label_formatter(&iteration_tick)
        .y_label_formatter(&log_tick)
        .label_style(label_font())
        .axis_desc_style(label_font())
        .draw()?;

    for (index, (run, points)) in runs.iter().zip(&curves).enumerate() {
        draw_curve(&mut chart, points, run_colour(index), false, Some(&run.label))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(label_font())
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
}

fn draw_step_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, runs: &[RunCurves]) -> DrawResult<DB> {
    let caption = "Step ||P^k - P^(k-1)||^2";
    // Iteration 0, if a record has it, has no place on a logarithmic axis.
    let curves: Vec<Points> =
        runs.iter().map(|run| run.series(|p| p.step, true).into_iter().filter(|&(k, _)| k >= 1.0).collect()).collect();
    let all = curves.iter().flatten();
    let (Some((x_lo, x_hi)), Some((y_lo, y_hi))) = (bounds(all.clone().map(|p| p.0)), bounds(all.map(|p| p.1))) else {
        return draw_empty_panel(area, caption, "no positive step values in these records");
    };

    // The reference c/k passes through the first point of the first run that has steps.
    let (k0, step0) = curves.iter().find_map(|points| points.first().copied()).expect("bounds found a point");
    let c = k0 * step0;
    let reference = [(x_lo, c / x_lo), (x_hi, c / x_hi)];
    let (y_lo, y_hi) = (y_lo.min(c / x_hi), y_hi.max(c / x_lo));
    let x_range = if x_hi > x_lo { x_lo..x_hi } else { (x_lo / 2.0).max(1.0)..x_hi * 2.0 };

    let mut chart = ChartBuilder::on(area)
        .caption(caption, caption_font())
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range.log_scale(), log_range(y_lo, y_hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("iteration k (log scale)")
        .y_desc("squared step (log scale)")
        .x_label_formatter(&log_iteration_tick)
        // The light lines of a logarithmic axis crowd into a grey band towards the end of a
        // decade, so the x axis keeps only its bold lines.
        .x_max_light_lines(0)
        .y_label_formatter(&log_tick)
        .label_style(label_font())
        .axis_desc_style(label_font())
        .draw()?;

    for (index, (run, points)) in runs.iter().zip(&curves).enumerate() {
        draw_curve(&mut chart, points, run_colour(index), false, Some(&run.label))?;
    }
    let grey = RGBColor(0x40, 0x40, 0x40);
    chart
        .draw_series(DashedLineSeries::new(reference, 4, 4, grey.stroke_width(1)))?
        .label("c/k reference")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], grey.stroke_width(1)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .label_font(label_font())
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Creates a fresh, empty directory under the system's temporary directory.
    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bcdnn-plot-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn run_line(format_version: u32, label: Option<&str>) -> String {
        let mut run = serde_json::json!({
            "kind": "run",
            "format_version": format_version,
            "bcdnn_version": "0.1.0",
            "preset": "paper",
        });
        if let Some(label) = label {
            run["label"] = Value::from(label);
        }
        run.to_string()
    }

    /// Returns an iteration line of a BCD run at iteration `k`, with values that fall like a run's.
    fn bcd_iteration(k: usize) -> String {
        let k_f = k as f64;
        serde_json::json!({
            "kind": "iteration",
            "iteration": k,
            "objective": 3000.0 / k_f.powf(0.7),
            "train_accuracy": 0.97 - 0.5 / (k_f + 1.0),
            "test_accuracy": 0.95 - 0.5 / (k_f + 1.0),
            "step_w": 20.0 / (k_f * k_f),
            "step_u": 10.0 / k_f.powf(1.5),
            "step_v": 5.0 / k_f.powf(1.5),
            "update_seconds": 0.5,
        })
        .to_string()
    }

    /// Returns an iteration line of an SGD run: accuracies only, no objective and no steps.
    fn sgd_iteration(k: usize) -> String {
        let k_f = k as f64;
        serde_json::json!({
            "kind": "iteration",
            "iteration": k,
            "objective": null,
            "train_accuracy": 0.9 - 0.3 / k_f,
            "test_accuracy": 0.88 - 0.3 / k_f,
        })
        .to_string()
    }

    fn summary_line() -> String {
        serde_json::json!({"kind": "summary", "status": "completed"}).to_string()
    }

    fn record(lines: &[String]) -> String {
        let mut text = lines.join("\n");
        text.push('\n');
        text
    }

    fn bcd_record(iterations: usize, label: Option<&str>) -> String {
        let mut lines = vec![run_line(RECORD_FORMAT_VERSION, label)];
        lines.extend((1..=iterations).map(bcd_iteration));
        lines.push(summary_line());
        record(&lines)
    }

    fn sgd_record(epochs: usize) -> String {
        let mut lines = vec![run_line(RECORD_FORMAT_VERSION, Some("SGD lr 0.1"))];
        lines.extend((1..=epochs).map(sgd_iteration));
        lines.push(summary_line());
        record(&lines)
    }

    fn plot_args(inputs: Vec<PathBuf>, output: PathBuf) -> PlotArgs {
        PlotArgs { inputs, output, labels: Vec::new(), width: 1500, height: 480 }
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, text).unwrap();
        path
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    /// Runs `run_plot`, expecting it to fail, and returns the error chain as one string.
    fn plot_error(args: &PlotArgs) -> String {
        let error = run_plot(args).expect_err("plotting should fail");
        format!("{error:#}")
    }

    #[test]
    fn svg_of_one_run() {
        let dir = scratch_dir("svg-one");
        let input = write(&dir, "bcd-run.jsonl", &bcd_record(30, None));
        let output = dir.join("figure.svg");
        run_plot(&plot_args(vec![input], output.clone())).unwrap();

        let svg = fs::read_to_string(&output).unwrap();
        assert!(svg.trim_start().starts_with("<svg"), "output starts with {:?}", &svg[..svg.len().min(80)]);
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("bcd-run"), "the legend names the run by its file stem");
        assert!(svg.contains("Accuracy (train solid, test dashed)"));
        assert!(svg.contains("Objective Lbar"));
        assert!(svg.contains("c/k reference"));
        assert_eq!(files_in(&dir), ["bcd-run.jsonl", "figure.svg"], "no temporary file is left");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn svg_of_several_runs() {
        let dir = scratch_dir("svg-several");
        let first = write(&dir, "alpha-5.jsonl", &bcd_record(40, None));
        let second = write(&dir, "labelled.jsonl", &bcd_record(12, Some("gamma 2")));
        let sgd = write(&dir, "sgd.jsonl", &sgd_record(20));
        let output = dir.join("runs.SVG");
        run_plot(&plot_args(vec![first, second, sgd], output.clone())).unwrap();

        let svg = fs::read_to_string(&output).unwrap();
        assert!(svg.trim_start().starts_with("<svg"));
        assert!(svg.contains("</svg>"));
        assert!(svg.contains("alpha-5"));
        assert!(svg.contains("gamma 2"), "the run line's label replaces the file stem");
        assert!(!svg.contains("labelled"), "the file stem of a labelled run is not shown");
        assert!(svg.contains("SGD lr 0.1"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn label_arguments_name_runs() {
        let dir = scratch_dir("labels");
        let first = write(&dir, "a.jsonl", &bcd_record(5, Some("from the record")));
        let second = write(&dir, "b.jsonl", &bcd_record(5, None));
        let mut args = plot_args(vec![first, second], dir.join("figure.svg"));
        args.labels = vec!["first run".into(), "second run".into()];
        run_plot(&args).unwrap();

        let svg = fs::read_to_string(dir.join("figure.svg")).unwrap();
        assert!(svg.contains("first run"));
        assert!(svg.contains("second run"));
        assert!(!svg.contains("from the record"));

        args.labels.pop();
        assert!(plot_error(&args).contains("1 --label values were given for 2 run records"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn png_has_png_signature() {
        let dir = scratch_dir("png");
        let input = write(&dir, "run.jsonl", &bcd_record(25, None));
        let sgd = write(&dir, "sgd.jsonl", &sgd_record(25));
        let output = dir.join("figure.png");
        run_plot(&plot_args(vec![input, sgd], output.clone())).unwrap();

        let bytes = fs::read(&output).unwrap();
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "output starts with {:?}", &bytes[..bytes.len().min(8)]);
        assert_eq!(files_in(&dir), ["figure.png", "run.jsonl", "sgd.jsonl"], "no temporary file is left");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn records_without_objective_or_steps_plot_empty_panels() {
        let dir = scratch_dir("sgd-only");
        let input = write(&dir, "sgd.jsonl", &sgd_record(8));
        let output = dir.join("figure.svg");
        run_plot(&plot_args(vec![input], output.clone())).unwrap();

        let svg = fs::read_to_string(&output).unwrap();
        assert!(svg.contains("no positive objective values in these records"));
        assert!(svg.contains("no positive step values in these records"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn single_iteration_and_non_positive_values_plot() {
        // One iteration, an objective of 0 and a step of 0: both are left out of the log
        // panels, so those panels show their empty-panel note.
        let dir = scratch_dir("single");
        let iteration = serde_json::json!({
            "kind": "iteration", "iteration": 1, "objective": 0.0, "train_accuracy": 0.5,
            "test_accuracy": null, "step_w": 0.0, "step_u": 0.0, "step_v": 0.0,
        });
        let text = record(&[run_line(RECORD_FORMAT_VERSION, None), iteration.to_string()]);
        let input = write(&dir, "one.jsonl", &text);
        let output = dir.join("figure.svg");
        run_plot(&plot_args(vec![input], output.clone())).unwrap();

        let svg = fs::read_to_string(&output).unwrap();
        assert!(svg.contains("no positive objective values"));
        assert!(svg.contains("no positive step values"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn read_run_sums_steps_and_keeps_nulls() {
        let dir = scratch_dir("read");
        let text = record(&[run_line(RECORD_FORMAT_VERSION, None), bcd_iteration(2), sgd_iteration(3)]);
        let input = write(&dir, "mixed.jsonl", &text);
        let run = read_run(&input).unwrap();

        assert_eq!(run.label, "mixed");
        assert_eq!(run.points.len(), 2);
        let first = run.points[0];
        assert_eq!(first.iteration, 2);
        assert_eq!(first.step, Some(20.0 / 4.0 + 10.0 / 2f64.powf(1.5) + 5.0 / 2f64.powf(1.5)));
        assert_eq!(first.objective, Some(3000.0 / 2f64.powf(0.7)));
        let second = run.points[1];
        assert_eq!(second.objective, None);
        assert_eq!(second.step, None);
        assert_eq!(second.train_accuracy, Some(0.9 - 0.1));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn record_rejections() {
        let dir = scratch_dir("rejections");
        let run = run_line(RECORD_FORMAT_VERSION, None);
        let mut truncated = record(&[run.clone(), bcd_iteration(1), bcd_iteration(2)]);
        truncated.truncate(truncated.len() - 20);
        let cases: Vec<(&str, String, &str)> = vec![
            ("empty", String::new(), "is empty"),
            ("blank", "\n \n".to_string(), "is empty"),
            ("truncated", truncated, "line 3: the file ends in the middle of a line"),
            ("garbage", record(&[run.clone(), "{not json".into(), bcd_iteration(2)]), "line 2: not valid JSON"),
            ("iteration-first", record(&[bcd_iteration(1)]), "line 1: expected the run line"),
            ("array-first", record(&["[1, 2]".into()]), "line 1: expected the run line"),
            (
                "version",
                record(&[run_line(RECORD_FORMAT_VERSION + 1, None), bcd_iteration(1)]),
                "format version 3 is not supported",
            ),
            (
                "no-version",
                record(&[r#"{"kind": "run"}"#.into(), bcd_iteration(1)]),
                "no integer field \"format_version\"",
            ),
            ("no-iterations", record(&[run.clone(), summary_line()]), "has no iteration lines"),
            ("run-only", record(std::slice::from_ref(&run)), "has no iteration lines"),
            (
                "bad-iteration",
                record(&[run.clone(), r#"{"kind": "iteration", "iteration": "one"}"#.into()]),
                "line 2: invalid iteration line",
            ),
            ("second-run", record(&[run.clone(), bcd_iteration(1), run.clone()]), "line 3: a second run line"),
            (
                "unknown-kind",
                record(&[run.clone(), r#"{"kind": "checkpoint"}"#.into()]),
                "line 2: unknown line kind \"checkpoint\"",
            ),
            (
                "after-summary",
                record(&[run.clone(), bcd_iteration(1), summary_line(), bcd_iteration(2)]),
                "line 4: a line follows the summary line 3",
            ),
        ];
        for (name, text, expected) in cases {
            let input = write(&dir, &format!("{name}.jsonl"), &text);
            let message = plot_error(&plot_args(vec![input.clone()], dir.join("figure.svg")));
            assert!(message.contains(expected), "{name}: expected {expected:?} in {message:?}");
            assert!(message.contains(&input.display().to_string()), "{name}: the message names the file: {message:?}");
        }
        assert_eq!(files_in(&dir).iter().filter(|name| name.contains("figure")).count(), 0, "no figure is written");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn version_1_record_is_read() {
        let dir = scratch_dir("version-1");
        let text = record(&[run_line(1, None), bcd_iteration(1), bcd_iteration(2), summary_line()]);
        let input = write(&dir, "old.jsonl", &text);
        let run = read_run(&input).unwrap();
        assert_eq!(run.points.len(), 2);
        assert_eq!(run.points[1].objective, Some(3000.0 / 2f64.powf(0.7)));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_record_is_rejected() {
        let dir = scratch_dir("missing");
        let input = dir.join("absent.jsonl");
        let message = plot_error(&plot_args(vec![input.clone()], dir.join("figure.svg")));
        assert!(message.contains(&format!("failed to read run record {}", input.display())), "{message}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn record_without_summary_is_plotted() {
        let dir = scratch_dir("no-summary");
        let text = record(&[run_line(RECORD_FORMAT_VERSION, None), bcd_iteration(1), bcd_iteration(2)]);
        let input = write(&dir, "partial.jsonl", &text);
        assert_eq!(read_run(&input).unwrap().points.len(), 2);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn output_format_rejections() {
        let dir = scratch_dir("formats");
        let input = write(&dir, "run.jsonl", &bcd_record(3, None));
        let cases = [
            (dir.join("figure.pdf"), "unsupported figure format '.pdf'"),
            (dir.join("figure"), "has no extension"),
            (dir.join("absent").join("figure.svg"), "does not exist"),
        ];
        for (output, expected) in cases {
            let message = plot_error(&plot_args(vec![input.clone()], output.clone()));
            assert!(message.contains(expected), "{}: expected {expected:?} in {message:?}", output.display());
        }

        let directory = dir.join("figure.svg");
        fs::create_dir(&directory).unwrap();
        assert!(plot_error(&plot_args(vec![input], directory)).contains("is a directory"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn existing_figure_is_replaced() {
        let dir = scratch_dir("replace");
        let input = write(&dir, "run.jsonl", &bcd_record(4, None));
        let output = write(&dir, "figure.svg", "old contents");
        run_plot(&plot_args(vec![input], output.clone())).unwrap();
        assert!(fs::read_to_string(&output).unwrap().starts_with("<svg"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn log_ticks_show_powers_of_ten() {
        assert_eq!(log_tick(&1000.0), "1e3");
        assert_eq!(log_tick(&0.001), "1e-3");
        assert_eq!(log_tick(&1.0), "1e0");
        assert_eq!(log_tick(&2500.0), "2.5e3");
    }

    #[test]
    fn iteration_ticks() {
        assert_eq!(iteration_tick(&10.0), "10");
        assert_eq!(iteration_tick(&2.5), "2.5");
        assert_eq!(log_iteration_tick(&1.0), "1");
        assert_eq!(log_iteration_tick(&20.0), "20");
        assert_eq!(log_iteration_tick(&500.0), "500");
        assert_eq!(log_iteration_tick(&3.0), "");
        assert_eq!(log_iteration_tick(&90.0), "");
    }
}
