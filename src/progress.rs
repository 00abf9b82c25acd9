//! Progress of training and evaluation on stderr: an `indicatif` bar (ETA, live loss,
//! samples/s) when stderr is a terminal; plain lines about every 10% of a training epoch when
//! it is not, so logs hold no escape codes or carriage returns; nothing when progress is off.
//! The Trainer uses it; hand-written loops can too (`examples/char_lm.rs`).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::time::Instant;

/// One epoch's (or one evaluation's) progress.
pub enum Progress {
    /// Prints nothing.
    Off,
    /// An `indicatif` bar.
    Bar(ProgressBar),
    /// Plain lines about every tenth of the total.
    Lines {
        /// Where the lines go.
        out: Box<dyn Write>,
        /// What each line starts with.
        prefix: String,
        /// Steps in all.
        total: u64,
        /// When it started.
        start: Instant,
    },
}

fn bar(prefix: String, total: u64, template: &str) -> Progress {
    // The templates are constants, so a template error is a bug here; fall back to the default
    // bar rather than fail a training run over its progress display.
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()).with_style(style);
    b.set_prefix(prefix);
    Progress::Bar(b)
}

/// `1:05`, or `1:02:05` past an hour.
fn clock(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s / 3600 {
        0 => format!("{}:{:02}", s / 60, s % 60),
        h => format!("{h}:{:02}:{:02}", s / 60 % 60, s % 60),
    }
}

impl Progress {
    /// Training over `total` steps, e.g. `prefix` = "epoch 2/5".
    pub fn training(on: bool, prefix: String, total: u64) -> Progress {
        match (on, std::io::stderr().is_terminal()) {
            (false, _) => Progress::Off,
            (true, true) => bar(prefix, total, "{prefix} [{wide_bar}] {pos}/{len} {msg} ETA {eta}"),
            (true, false) => Progress::lines(Box::new(std::io::stderr()), prefix, total),
        }
    }

    /// Evaluation over `total` batches: a bar on a terminal, silent otherwise (evaluation is
    /// short next to an epoch, and its result is what gets printed).
    pub fn evaluation(on: bool, prefix: String, total: u64) -> Progress {
        if on && std::io::stderr().is_terminal() {
            bar(prefix, total, "{prefix} [{wide_bar}] {pos}/{len} batches ETA {eta}")
        } else {
            Progress::Off
        }
    }

    /// Plain lines to `out`.
    pub fn lines(out: Box<dyn Write>, prefix: String, total: u64) -> Progress {
        Progress::Lines {
            out,
            prefix,
            total,
            start: Instant::now(),
        }
    }

    /// `done` of the total steps are finished, `samples` samples seen, with this running mean
    /// loss (training) or none (evaluation).
    pub fn update(&mut self, done: u64, samples: u64, loss: Option<f64>) {
        self.update_with(done, samples, loss, "");
    }

    /// [`Progress::update`] with `extra` text after the loss (e.g. a gradient norm).
    pub fn update_with(&mut self, done: u64, samples: u64, loss: Option<f64>, extra: &str) {
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!(" {extra}")
        };
        match self {
            Progress::Off => {}
            Progress::Bar(b) => {
                let rate = samples as f64 / b.elapsed().as_secs_f64().max(1e-9);
                if let Some(l) = loss {
                    b.set_message(format!("loss {l:.4}{extra} {rate:.0} samples/s"));
                }
                b.set_position(done);
            }
            Progress::Lines {
                out,
                prefix,
                total,
                start,
            } => {
                let total = (*total).max(1);
                // A line each time a tenth is crossed (every step when there are fewer than 10).
                if done == 0 || done * 10 / total == (done - 1) * 10 / total {
                    return;
                }
                let secs = start.elapsed().as_secs_f64();
                let rate = samples as f64 / secs.max(1e-9);
                let eta = secs / done as f64 * total.saturating_sub(done) as f64;
                let filled = (30 * done / total) as usize;
                let loss = loss.map_or(String::new(), |l| format!(" loss {l:.4}"));
                let _ = writeln!(
                    out,
                    "{prefix} [{}{}] {done}/{total}{loss}{extra} {rate:.0} samples/s ETA {}",
                    "#".repeat(filled.min(30)),
                    ".".repeat(30 - filled.min(30)),
                    clock(eta)
                );
                let _ = out.flush();
            }
        }
    }

    /// Remove the bar (the caller prints the summary line in its place).
    pub fn finish(&self) {
        if let Progress::Bar(b) = self {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn run(total: u64) -> Vec<String> {
        let sink = Sink::default();
        let mut p = Progress::lines(Box::new(sink.clone()), "epoch 1/2".into(), total);
        for done in 1..=total {
            p.update(done, done * 64, Some(0.5));
        }
        p.finish();
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains(['\x1b', '\r']), "escape codes in {text:?}");
        text.lines().map(String::from).collect()
    }

    #[test]
    fn plain_lines_every_tenth_without_escape_codes() {
        let lines = run(938);
        assert_eq!(lines.len(), 10);
        assert!(lines[0].starts_with("epoch 1/2 [###...........................] 94/938 loss 0.5000 "));
        assert!(lines[9].starts_with("epoch 1/2 [##############################] 938/938 loss 0.5000 "));
        assert!(lines.iter().all(|l| l.contains(" samples/s ETA ")));
        assert!(lines[9].ends_with("ETA 0:00"), "{}", lines[9]);
        // Fewer steps than tenths: a line each.
        assert_eq!(run(3).len(), 3);
    }

    #[test]
    fn clock_reads_minutes_and_hours() {
        assert_eq!(
            (clock(5.2), clock(65.0), clock(3725.0)),
            ("0:05".into(), "1:05".into(), "1:02:05".into())
        );
    }
}
