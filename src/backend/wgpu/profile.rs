//! `KILN_PROFILE=1`'s report: per kernel family and entry point, the dispatches, seconds, and
//! the GFLOP/s and GB/s achieved against each dispatch's [`Cost`](super::kernels::Cost)
//! estimate (a roofline: compare them with the adapter's peak arithmetic and memory rates to
//! see which kernels are bound by which), then the slowest individual dispatches.

use super::kernels::{matmul, Dispatch, Family};
use std::collections::HashMap;
use std::fmt::Write;

/// What a prepared dispatch is, for the report.
pub struct Kind {
    /// The family.
    pub family: Family,
    /// The entry point, with its variant where it has one: `matmul [tiled 64x64x16 r4x4]`.
    pub entry: String,
    /// Floating-point operations per run.
    pub flops: f64,
    /// Bytes moved per run (the compulsory traffic).
    pub bytes: f64,
}

impl Kind {
    /// Of a planned dispatch.
    pub fn of(d: &Dispatch) -> Kind {
        let variant = (d.family == Family::Matmul).then(|| matmul::variant_of(d)).flatten();
        Kind {
            family: d.family,
            entry: match variant {
                // A product with its epilogue (`matmul::with_epilogue`) carries its own source.
                Some(v) if d.source.is_some() => format!("{} [{}] + epilogue", d.entry, v.name()),
                Some(v) => format!("{} [{}]", d.entry, v.name()),
                // A max pooling's argmax with its gather (`conv::pool_with_values`).
                None if d.entry == "pool_argmax" && d.source.is_some() => format!("{} + values", d.entry),
                // A conv.wgsl op with its epilogue (`conv::with_epilogue`).
                None if d.family == Family::Conv && d.source.is_some() => format!("{} + epilogue", d.entry),
                // A fused kernel computed inside the reduction of its value (`reduce::with_prologue`).
                None if d.family == Family::Reduce && d.source.is_some() => format!("fused + {}", d.entry),
                None => d.entry.to_string(),
            },
            flops: d.cost.flops,
            bytes: d.bytes(),
        }
    }
}

/// One prepared dispatch and its measured time.
pub struct Row<'a> {
    /// Entry point, grid and leading parameters.
    pub label: &'a str,
    /// Family, entry and cost.
    pub kind: &'a Kind,
    /// Seconds over all runs.
    pub seconds: f64,
    /// Runs.
    pub runs: usize,
}

#[derive(Default)]
struct Sum {
    seconds: f64,
    runs: usize,
    flops: f64,
    bytes: f64,
}

impl Sum {
    fn add(&mut self, r: &Row) {
        self.seconds += r.seconds;
        self.runs += r.runs;
        self.flops += r.kind.flops * r.runs as f64;
        self.bytes += r.kind.bytes * r.runs as f64;
    }

    fn line(&self, out: &mut String, name: &str, total: f64) {
        let rate = |x: f64| x / self.seconds.max(1e-12) / 1e9;
        let _ = writeln!(
            out,
            "  {name:<44} {:>8} {:>9.4}s {:>5.1}% {:>9.2} {:>8.2}",
            self.runs,
            self.seconds,
            100.0 * self.seconds / total.max(1e-12),
            rate(self.flops),
            rate(self.bytes),
        );
    }
}

/// The report, sorted by time: families, each followed by its entry points, then the ten
/// slowest dispatches.
pub fn report(rows: &[Row]) -> String {
    let total: f64 = rows.iter().map(|r| r.seconds).sum();
    let mut families: HashMap<Family, (Sum, HashMap<&str, Sum>)> = HashMap::new();
    let mut labels: HashMap<&str, Sum> = HashMap::new();
    for r in rows {
        let f = families.entry(r.kind.family).or_default();
        f.0.add(r);
        f.1.entry(r.kind.entry.as_str()).or_default().add(r);
        labels.entry(r.label).or_default().add(r);
    }
    let by_time = |a: &Sum, b: &Sum| b.seconds.total_cmp(&a.seconds);
    let mut out = format!(
        "kiln profile ({} dispatches/step): {total:.3}s in kernels\n  {:<44} {:>8} {:>10} {:>6} {:>9} {:>8}\n",
        rows.len(),
        "family / entry point",
        "runs",
        "seconds",
        "share",
        "GFLOP/s",
        "GB/s"
    );
    let mut fams: Vec<_> = families.into_iter().collect();
    fams.sort_by(|a, b| by_time(&a.1 .0, &b.1 .0));
    for (family, (sum, entries)) in fams {
        sum.line(&mut out, &format!("{family:?}").to_lowercase(), total);
        let mut entries: Vec<_> = entries.into_iter().collect();
        entries.sort_by(|a, b| by_time(&a.1, &b.1));
        for (entry, s) in entries {
            s.line(&mut out, &format!("  {entry}"), total);
        }
    }
    let mut labels: Vec<_> = labels.into_iter().collect();
    labels.sort_by(|a, b| by_time(&a.1, &b.1));
    out += "  slowest dispatches (entry [groups] [leading parameters]):\n";
    for (label, s) in labels.into_iter().take(10) {
        s.line(&mut out, &format!("  {label}"), total);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_groups_by_family_and_entry_and_computes_rates() {
        let mm = Kind {
            family: Family::Matmul,
            entry: "matmul [tiled 64x64x16 r4x4]".into(),
            flops: 2e9,
            bytes: 1e9,
        };
        let ew = Kind {
            family: Family::Elementwise,
            entry: "unary".into(),
            flops: 1e6,
            bytes: 8e6,
        };
        let rows = [
            Row {
                label: "matmul [16, 16, 1] [1024, 1024, 1024]",
                kind: &mm,
                seconds: 2.0,
                runs: 2,
            },
            Row {
                label: "unary [4, 1, 1] [1000000]",
                kind: &ew,
                seconds: 0.5,
                runs: 1,
            },
        ];
        let r = report(&rows);
        // Two runs of 2 GFLOP and 1 GB in 2 s: 2 GFLOP/s and 1 GB/s; the matmul family first.
        let mm_line = r.lines().find(|l| l.trim_start().starts_with("matmul ")).unwrap();
        assert!(mm_line.contains("2.00") && mm_line.contains("1.00"), "{r}");
        let first = r.lines().nth(2).unwrap();
        assert!(first.trim_start().starts_with("matmul"), "{r}");
        assert!(
            r.contains("elementwise") && r.contains("  unary") && r.contains("80.0%"),
            "{r}"
        );
    }
}
