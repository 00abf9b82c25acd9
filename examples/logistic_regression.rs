//! Logistic regression on a real table: the Wisconsin Diagnostic Breast Cancer data (569 fine
//! needle aspirates, 30 features of their cell nuclei, malignant or benign), read with
//! `kiln::data::read_csv` from `data/breast_cancer.csv`.
//!
//! cargo run --release --example logistic_regression -- --help
//!
//! The model is one linear unit and a sigmoid, `p(malignant | x) = σ(x·w + b)`, trained by
//! full-batch Adam on the mean binary cross-entropy (`loss::bce_with_logits`). Features are
//! standardised with the training split's per-feature mean and deviation (the test rows never
//! inform them). Prints test accuracy, the confusion matrix, the majority-class baseline and
//! the features with the largest weights.

mod common;

use clap::{Parser, ValueEnum};
use common::{non_negative, positive};
use kiln::data::{read_csv, CsvHeader, Dataset};
use kiln::{backward, loss, nn, Backend, Feed, Graph, Init, Optimizer, ParamStore, Program, Training};
use std::path::PathBuf;

/// Logistic regression on a CSV table `label,feature1,…` with 0/1 labels (by default the
/// Wisconsin Diagnostic Breast Cancer data); prints test accuracy.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The CSV file: first column the 0/1 label, then the features.
    #[arg(long, default_value_os_t = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/breast_cancer.csv")))]
    data: PathBuf,
    /// Whether the first row holds column names (auto: when none of its fields is a number).
    #[arg(long, value_enum, default_value_t = HeaderArg::Auto)]
    header: HeaderArg,
    /// Fraction of the rows held out (by a seeded shuffle) as the test set.
    #[arg(long, default_value_t = 0.2, value_parser = fraction)]
    test_fraction: f64,
    /// Full-batch Adam steps.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    steps: u64,
    /// Learning rate.
    #[arg(long, default_value_t = 0.05, value_parser = positive)]
    lr: f32,
    /// L2 penalty λ·Σw² on the weights (not the bias).
    #[arg(long, default_value_t = 0.0, value_parser = non_negative)]
    l2: f32,
    /// Seed of the train/test split.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// auto: a real GPU if there is one, else the CPU backend.
    #[arg(long, value_enum, env = "KILN_DEVICE", default_value_t = Dev::Auto)]
    device: Dev,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum HeaderArg {
    Auto,
    Yes,
    No,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Dev {
    Auto,
    Cpu,
    Gpu,
}

fn fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v < 1.0 => Ok(v),
        _ => Err(format!("`{s}` is not a fraction strictly between 0 and 1")),
    }
}

/// Rows of `d` as the model's feeds: features `(n, d)` and 0/1 targets `(n, 1)` as floats.
fn targets(d: &Dataset) -> Vec<f32> {
    d.labels.iter().map(|&l| l as f32).collect()
}

/// Counts of (true positives, false positives, false negatives, true negatives) at p ≥ 0.5,
/// from logits.
fn confusion(logits: &[f32], labels: &[u32]) -> [usize; 4] {
    let mut c = [0; 4];
    for (&z, &l) in logits.iter().zip(labels) {
        let i = match (z >= 0.0, l == 1) {
            (true, true) => 0,
            (true, false) => 1,
            (false, true) => 2,
            (false, false) => 3,
        };
        c[i] += 1;
    }
    c
}

fn run<B: Backend>(
    backend: &B,
    a: &Args,
    train: &Dataset,
    test: &Dataset,
    names: &[String],
) -> Result<(), Box<dyn std::error::Error>> {
    let d = train.sample_len();
    let (n_train, n_test) = (train.len(), test.len());
    let mut g = Graph::new();
    let x = g.input("x", [n_train, d])?;
    let y = g.input("y", [n_train, 1])?;
    let x_test = g.input("x_test", [n_test, d])?;
    let y_test = g.input("y_test", [n_test, 1])?;
    // One linear unit: logit = x·w + b; both applications share the parameters by name.
    let unit = nn::Linear::with_init(&mut g, "logreg", d, 1, Init::Zeros, true)?;
    let logits = unit.forward(&mut g, x)?; // (n_train, 1)
    let mut objective = loss::bce_with_logits(&mut g, logits, y)?;
    if a.l2 > 0.0 {
        let params = loss::decayed_params(&g);
        let pen = loss::l2_penalty(&mut g, &params, a.l2)?;
        objective = g.add(objective, pen)?;
    }
    let grads = backward(&mut g, objective)?;
    let test_logits = unit.forward(&mut g, x_test)?; // (n_test, 1)
    let test_loss = loss::bce_with_logits(&mut g, test_logits, y_test)?;

    let mut store = ParamStore::new(backend, &g, a.seed)?;
    let opt = Optimizer::adam(a.lr);
    let mut step = Program::compile(&g, &mut store, &[objective], Some(Training::new(&grads, &opt)))?;
    let mut eval = Program::compile(&g, &mut store, &[logits, test_logits, test_loss], None)?;
    let (ty, tty) = (targets(train), targets(test));
    let feeds = [
        ("x", Feed::F32(&train.images)),
        ("y", Feed::F32(&ty)),
        ("x_test", Feed::F32(&test.images)),
        ("y_test", Feed::F32(&tty)),
    ];
    let every = (a.steps / 5).max(1);
    for s in 1..=a.steps {
        let l = step.run(&feeds[..2])?.scalar(objective)?;
        if s % every == 0 || s == a.steps {
            eprintln!("step {s:>5}/{}: training loss {l:.4}", a.steps);
        }
    }
    let out = eval.run(&feeds)?;
    let train_c = confusion(&out.get(logits)?.data, &train.labels);
    let [tp, fp, fn_, tn] = confusion(&out.get(test_logits)?.data, &test.labels);
    let acc = |c: [usize; 4]| (c[0] + c[3]) as f64 / c.iter().sum::<usize>().max(1) as f64;
    let positives = test.labels.iter().filter(|&&l| l == 1).count();
    let baseline = positives.max(n_test - positives) as f64 / n_test as f64;

    println!(
        "{} training rows, {} test rows, {d} features, on {}",
        n_train,
        n_test,
        backend.info().adapter
    );
    println!("train accuracy {:.2}%", 100.0 * acc(train_c));
    println!(
        "test accuracy {:.2}% ({} of {}), test loss {:.4}; always predicting the majority class: {:.2}%",
        100.0 * acc([tp, fp, fn_, tn]),
        tp + tn,
        n_test,
        out.scalar(test_loss)?,
        100.0 * baseline
    );
    println!("confusion (rows: true label, columns: predicted):");
    println!("             pred 1  pred 0");
    println!("  label 1  {tp:>7} {fn_:>7}");
    println!("  label 0  {fp:>7} {tn:>7}");
    let w = store.get("logreg.w")?.data;
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&i, &j| w[j].abs().total_cmp(&w[i].abs()));
    println!("largest weights (per training standard deviation of the feature):");
    for &i in order.iter().take(5) {
        let name = names.get(i).map_or_else(|| format!("feature {}", i + 1), |n| n.clone());
        println!("  {name:<28} {:+.3}", w[i]);
    }
    Ok(())
}

fn main() {
    let a = Args::parse();
    let result = (|| -> Result<(), Box<dyn std::error::Error>> {
        let header = match a.header {
            HeaderArg::Auto => CsvHeader::Auto,
            HeaderArg::Yes => CsvHeader::Present,
            HeaderArg::No => CsvHeader::Absent,
        };
        let table = read_csv(&a.data, header)?;
        let names = table.feature_names().map(<[String]>::to_vec).unwrap_or_default();
        let data = table.classification(Some(2))?;
        let n_test = (data.len() as f64 * a.test_fraction).round() as usize;
        if n_test == 0 || n_test >= data.len() {
            return Err(format!(
                "--test-fraction {} of {} rows leaves {n_test} test rows and {} training rows; both need at least one",
                a.test_fraction,
                data.len(),
                data.len().saturating_sub(n_test)
            )
            .into());
        }
        let (mut train, mut test) = data.split(n_test, a.seed)?;
        let (mean, std) = train.feature_stats();
        train.standardize(&mean, &std)?;
        test.standardize(&mean, &std)?;
        eprintln!(
            "{}: {} rows of {} features ({} labelled 1)",
            a.data.display(),
            data.len(),
            data.sample_len(),
            data.labels.iter().filter(|&&l| l == 1).count()
        );
        let device = match a.device {
            Dev::Auto => "auto",
            Dev::Cpu => "cpu",
            Dev::Gpu => "gpu",
        };
        match kiln::Device::choose(device)? {
            kiln::Device::Cpu(cpu) => run(&cpu, &a, &train, &test, &names),
            kiln::Device::Gpu(gpu) => run(&gpu, &a, &train, &test, &names),
        }
    })();
    if let Err(e) = result {
        eprintln!("logistic_regression: {e}");
        std::process::exit(1);
    }
}
