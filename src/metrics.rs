//! Training metrics as data and as files: one record per step and one per epoch
//! ([`crate::train::Trainer::fit`] fills them in its `History`), written to a directory as
//! `steps.csv`, `epochs.csv`, and the curves `loss.svg` and `accuracy.svg`.
//!
//! The plots use `plotters`' SVG backend alone: text is written as SVG `<text>` elements that
//! the viewer renders with its own sans-serif font, so no font file or font crate is needed
//! (plotters then sizes labels by a rough estimate, which is why the label areas below are
//! generous). Every file is replaced atomically ([`crate::checkpoint::write_atomic`]): a run
//! killed while writing leaves the previous epoch's files, never a torn one.

use crate::error::{Error, Result};
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::Path;

/// One training step.
#[derive(Clone, Debug, PartialEq)]
pub struct StepMetrics {
    /// The epoch it belongs to (1-based).
    pub epoch: usize,
    /// The step's number in the run (1-based, counting every epoch's steps, resumed ones too).
    pub step: u64,
    /// The training loss of its batch.
    pub loss: f32,
    /// Samples per second over this step (batch gathering, upload, run and read-back).
    pub samples_per_s: f64,
    /// The learning rate its update used, when the program has an optimiser.
    pub learning_rate: Option<f32>,
}

/// One epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochMetrics {
    /// The epoch (1-based).
    pub epoch: usize,
    /// The number of its last step (as in [`StepMetrics::step`]).
    pub step: u64,
    /// Mean training loss over its batches.
    pub train_loss: f32,
    /// Training accuracy over its batches (running, as the weights changed).
    pub train_accuracy: f32,
    /// Validation loss after it, when there is a validation set.
    pub validation_loss: Option<f32>,
    /// Validation accuracy after it.
    pub validation_accuracy: Option<f32>,
    /// Wall-clock seconds of the epoch: training and validation.
    pub seconds: f64,
}

/// The records of a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsLog {
    /// Every training step, in order.
    pub steps: Vec<StepMetrics>,
    /// Every epoch, in order.
    pub epochs: Vec<EpochMetrics>,
}

/// Make `dir` usable for metrics files: create it (and its parents) if it does not exist; an
/// error if it exists and is not a directory. Call it before training, so a bad path fails
/// before any work.
pub fn prepare_dir(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::Io(format!(
            "{}: exists and is not a directory (metrics need a directory)",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Io(format!("{}: cannot create the metrics directory: {e}", dir.display())))
}

fn opt(v: Option<f32>) -> String {
    v.map_or(String::new(), |v| v.to_string())
}

/// The plotted per-step series holds at most this many points; longer runs are drawn as means
/// of consecutive steps (the CSV keeps every step).
const MAX_POINTS: usize = 2000;

impl MetricsLog {
    /// `steps.csv`: a header, then one row per step (an empty learning rate when unknown).
    pub fn steps_csv(&self) -> String {
        let mut s = String::from("epoch,step,loss,samples_per_s,learning_rate\n");
        for r in &self.steps {
            let _ = writeln!(
                s,
                "{},{},{},{:.1},{}",
                r.epoch,
                r.step,
                r.loss,
                r.samples_per_s,
                opt(r.learning_rate)
            );
        }
        s
    }

    /// `epochs.csv`: a header, then one row per epoch (empty validation fields without a
    /// validation set).
    pub fn epochs_csv(&self) -> String {
        let mut s = String::from("epoch,step,train_loss,train_accuracy,validation_loss,validation_accuracy,seconds\n");
        for r in &self.epochs {
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{:.3}",
                r.epoch,
                r.step,
                r.train_loss,
                r.train_accuracy,
                opt(r.validation_loss),
                opt(r.validation_accuracy),
                r.seconds
            );
        }
        s
    }

    /// `loss.svg`: training loss per step (means of consecutive steps past 2,000 steps), the
    /// mean training loss of each epoch, and validation loss after each epoch, against the step.
    pub fn loss_svg(&self) -> Result<String> {
        let per = self.steps.len().div_ceil(MAX_POINTS).max(1);
        let steps: Vec<(f64, f64)> = self
            .steps
            .chunks(per)
            .map(|c| {
                let loss = c.iter().map(|r| r.loss as f64).sum::<f64>() / c.len() as f64;
                (c[c.len() - 1].step as f64, loss)
            })
            .filter(|(_, l)| l.is_finite())
            .collect();
        // Each epoch's mean is drawn across the steps it averages: a staircase.
        let mut train = Vec::new();
        let mut from = self.steps.first().map_or(1, |r| r.step);
        for e in &self.epochs {
            let m = e.train_loss as f64;
            if m.is_finite() {
                train.extend([(from.min(e.step) as f64, m), (e.step as f64, m)]);
            }
            from = e.step + 1;
        }
        let val: Vec<(f64, f64)> = finite(self.epochs.iter().map(|e| (e.step as f64, e.validation_loss)));
        let first = self.steps.first().map_or(0.0, |r| r.step as f64 - 1.0);
        let last = steps.iter().chain(&train).map(|p| p.0).fold(first + 1.0, f64::max);
        let top = steps.iter().chain(&train).chain(&val).map(|p| p.1).fold(0.0, f64::max);
        let step_label = match per {
            1 => "training loss, each step".to_string(),
            k => format!("training loss, mean of every {k} steps"),
        };
        let series = [
            Series {
                label: step_label,
                points: steps,
                color: RGBColor(120, 160, 220),
                width: 1,
                marks: false,
            },
            Series {
                label: "training loss, mean over each epoch".into(),
                points: train,
                color: RGBColor(20, 60, 160),
                width: 2,
                marks: false,
            },
            Series {
                label: "validation loss, after each epoch".into(),
                points: val,
                color: RGBColor(220, 90, 20),
                width: 2,
                marks: true,
            },
        ];
        // A margin on the right, so the last validation mark is not cut, and headroom above the
        // curves for the legend (losses fall, so the upper right is where the room is).
        let x = first..last + (last - first) * 0.02;
        let y = 0.0..(top * 1.3).max(1e-6);
        plot(
            "Loss",
            "step",
            "loss",
            x,
            y,
            None,
            SeriesLabelPosition::UpperRight,
            &series,
            |v| format!("{v:.0}"),
        )
    }

    /// `accuracy.svg`: training accuracy (running over each epoch) and validation accuracy after
    /// each epoch, in percent, against the epoch.
    pub fn accuracy_svg(&self) -> Result<String> {
        let pct = |v: Option<f32>| v.map(|a| 100.0 * a);
        let train = finite(
            self.epochs
                .iter()
                .map(|e| (e.epoch as f64, pct(Some(e.train_accuracy)))),
        );
        let val = finite(self.epochs.iter().map(|e| (e.epoch as f64, pct(e.validation_accuracy))));
        let (lo_x, hi_x) = train
            .iter()
            .chain(&val)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.0), b.max(p.0)));
        let x = if lo_x.is_finite() {
            lo_x - 0.5..hi_x + 0.5
        } else {
            0.5..1.5
        };
        let low = train.iter().chain(&val).map(|p| p.1).fold(100.0, f64::min);
        // Zoom in on the values: from a little below the lowest to 100%.
        let y = ((low - (100.0 - low) * 0.1 - 0.5).floor().max(0.0))..100.0;
        let series = [
            Series {
                label: "training accuracy, running over the epoch".into(),
                points: train,
                color: RGBColor(20, 60, 160),
                width: 2,
                marks: true,
            },
            Series {
                label: "validation accuracy, after the epoch".into(),
                points: val,
                color: RGBColor(220, 90, 20),
                width: 2,
                marks: true,
            },
        ];
        // One label per epoch (up to 20), and no ticks between them.
        let labels = ((x.end - x.start).round() as usize).clamp(2, 20);
        // Accuracy rises, so the lower right is where the room is for the legend.
        let legend = SeriesLabelPosition::LowerRight;
        plot(
            "Accuracy",
            "epoch",
            "accuracy (%)",
            x,
            y,
            Some(labels),
            legend,
            &series,
            |v| {
                if v.fract() == 0.0 {
                    format!("{v:.0}")
                } else {
                    String::new()
                }
            },
        )
    }

    /// Write `steps.csv`, `epochs.csv`, `loss.svg` and `accuracy.svg` into `dir` (created if
    /// missing), each replaced atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        prepare_dir(dir)?;
        let files = [
            ("steps.csv", self.steps_csv()),
            ("epochs.csv", self.epochs_csv()),
            ("loss.svg", self.loss_svg()?),
            ("accuracy.svg", self.accuracy_svg()?),
        ];
        for (name, text) in files {
            crate::checkpoint::write_atomic(&dir.join(name), text.as_bytes())?;
        }
        Ok(())
    }
}

/// The points whose value is present and finite.
fn finite(points: impl Iterator<Item = (f64, Option<f32>)>) -> Vec<(f64, f64)> {
    points
        .filter_map(|(x, y)| y.map(|y| (x, y as f64)))
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect()
}

struct Series {
    label: String,
    points: Vec<(f64, f64)>,
    color: RGBColor,
    width: u32,
    /// Draw a dot at each point (so a single point is visible).
    marks: bool,
}

/// One line chart as SVG text: a title, labelled axes with a light grid, the series that have
/// points, and a legend.
#[allow(clippy::too_many_arguments)]
fn plot(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
    x_labels: Option<usize>,
    legend: SeriesLabelPosition,
    series: &[Series],
    x_label: impl Fn(&f64) -> String,
) -> Result<String> {
    let fail = |e: &dyn std::fmt::Display| Error::Io(format!("drawing the {title} plot: {e}"));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x, y)
            .map_err(|e| fail(&e))?;
        let mut mesh = chart.configure_mesh();
        if let Some(n) = x_labels {
            mesh.x_labels(n);
        }
        mesh.x_desc(x_desc)
            .y_desc(y_desc)
            .x_label_formatter(&x_label)
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| fail(&e))?;
        let mut any = false;
        for s in series.iter().filter(|s| !s.points.is_empty()) {
            any = true;
            let style = ShapeStyle::from(&s.color).stroke_width(s.width);
            let line = LineSeries::new(s.points.iter().copied(), style).point_size(if s.marks { 3 } else { 0 });
            let color = s.color;
            chart
                .draw_series(line)
                .map_err(|e| fail(&e))?
                .label(s.label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        if any {
            chart
                .configure_series_labels()
                .position(legend)
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(180, 180, 180))
                .draw()
                .map_err(|e| fail(&e))?;
        }
        root.present().map_err(|e| fail(&e))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log() -> MetricsLog {
        let steps = (1..=6)
            .map(|s| StepMetrics {
                epoch: (s as usize - 1) / 3 + 1,
                step: s,
                loss: 2.0 / s as f32,
                samples_per_s: 1000.0,
                learning_rate: (s != 6).then_some(0.01),
            })
            .collect();
        let epochs = (1..=2)
            .map(|e| EpochMetrics {
                epoch: e,
                step: 3 * e as u64,
                train_loss: 1.0 / e as f32,
                train_accuracy: 0.5 + 0.2 * e as f32,
                validation_loss: (e == 2).then_some(0.4),
                validation_accuracy: (e == 2).then_some(0.85),
                seconds: 1.5,
            })
            .collect();
        MetricsLog { steps, epochs }
    }

    #[test]
    fn csv_has_a_header_and_one_row_per_record() {
        let l = log();
        let steps_csv = l.steps_csv();
        let steps: Vec<&str> = steps_csv.lines().collect();
        assert_eq!(steps[0], "epoch,step,loss,samples_per_s,learning_rate");
        assert_eq!(
            (steps.len(), steps[1], steps[6]),
            (7, "1,1,2,1000.0,0.01", "2,6,0.33333334,1000.0,")
        );
        let epochs = l.epochs_csv();
        let rows: Vec<&str> = epochs.lines().collect();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1], "1,3,1,0.7,,,1.500");
        assert_eq!(rows[2], "2,6,0.5,0.9,0.4,0.85,1.500");
    }

    #[test]
    fn plots_are_svg_with_their_series_and_labels() {
        let l = log();
        let loss = l.loss_svg().unwrap();
        assert!(loss.starts_with("<svg") && loss.trim_end().ends_with("</svg>"));
        for text in [
            "Loss",
            "step",
            "training loss, each step",
            "validation loss, after each epoch",
        ] {
            assert!(loss.contains(text), "{text} missing");
        }
        let acc = l.accuracy_svg().unwrap();
        for text in [
            "Accuracy",
            "epoch",
            "accuracy (%)",
            "validation accuracy, after the epoch",
        ] {
            assert!(acc.contains(text), "{text} missing");
        }
        // Empty logs still draw (axes, no series) instead of failing.
        let empty = MetricsLog::default();
        assert!(empty.loss_svg().unwrap().contains("<svg") && empty.accuracy_svg().is_ok());
        // A long run is drawn as bucket means.
        let mut long = log();
        long.steps = (1..=5000)
            .map(|s| StepMetrics {
                epoch: 1,
                step: s,
                loss: 1.0,
                samples_per_s: 1.0,
                learning_rate: None,
            })
            .collect();
        assert!(long.loss_svg().unwrap().contains("mean of every 3 steps"));
    }

    #[test]
    fn write_refuses_a_file_for_a_directory() {
        let f = std::env::temp_dir().join(format!("kiln-metrics-file-{}", std::process::id()));
        std::fs::write(&f, b"x").unwrap();
        let e = log().write(&f).unwrap_err().to_string();
        assert!(e.contains("exists and is not a directory"), "{e}");
        std::fs::remove_file(&f).unwrap();
    }
}
