//! Model selection by k-fold cross-validation: choose the L2 weight (or the dropout rate) of an
//! MLP on a small MNIST training set by stratified 5-fold cross-validation, report each
//! candidate's validation accuracy as mean ± sd over the folds, retrain the winner on all the
//! training images and report its test accuracy.
//!
//! ```text
//! cargo run --release --example kfold                                    # L2 weight
//! cargo run --release --example kfold -- --tune dropout --candidates 0,0.25,0.5,0.75
//! ```
//!
//! Prints a table of candidates and ends with a JSON line. For reference (it plays no part in
//! the choice) every candidate is also retrained on all the training images and tested.

mod common;

use clap::{Parser, ValueEnum};
use common::{non_negative, positive};
use kiln::crossval::{select, Selection};
use kiln::data::{load_mnist, Dataset};
use kiln::nn::{self, Linear};
use kiln::train::{FitConfig, Trainer};
use kiln::{loss, Backend, Graph, NodeId, Optimizer};
use std::path::PathBuf;

/// Choose an MLP's L2 weight or dropout rate on a small MNIST set by k-fold cross-validation.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// What to tune.
    #[arg(long, value_enum, default_value_t = Tune::L2)]
    tune: Tune,
    /// The candidate values, comma-separated (default: 0,1e-4,1e-3,1e-2 for l2 and
    /// 0,0.2,0.4,0.6 for dropout). L2 weights are ≥ 0; dropout rates in [0, 1).
    #[arg(long, value_delimiter = ',', value_parser = non_negative)]
    candidates: Vec<f32>,
    /// Folds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(2..=50))]
    folds: u64,
    /// Training images (the first N of MNIST's training set), split into the folds.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(2..=60000))]
    train: u64,
    /// Passes over the training images in every fit.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    epochs: u64,
    /// Hidden units of the MLP (784 → hidden → ReLU → [dropout] → 10).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    hidden: u64,
    /// Samples per step.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-3, value_parser = positive)]
    lr: f32,
    /// Seed of the folds, the initial weights and the shuffles.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// auto: a real GPU if there is one, else the CPU backend.
    #[arg(long, env = "KILN_DEVICE", default_value = "auto", value_parser = ["auto", "cpu", "gpu"])]
    device: String,
    /// A directory with MNIST's four IDX files (gzipped or not).
    #[arg(long, default_value_os_t = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist")))]
    data: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Tune {
    /// The weight λ of the penalty λ·Σw² on the weights (not the biases).
    L2,
    /// The dropout rate after the hidden layer.
    Dropout,
}

impl Tune {
    fn name(self) -> &'static str {
        match self {
            Tune::L2 => "l2",
            Tune::Dropout => "dropout",
        }
    }
}

type BoxError = Box<dyn std::error::Error>;

/// An extra loss term, as the Trainer takes it.
type Penalty<'a> = &'a dyn Fn(&mut Graph) -> kiln::Result<NodeId>;

/// Train the MLP with candidate value `v` on `train` and return its accuracy on `eval`.
fn fit_and_score<B: Backend>(dev: &B, a: &Args, v: f32, train: &Dataset, eval: &Dataset) -> kiln::Result<f32> {
    let (hidden, tune) = (a.hidden as usize, a.tune);
    let features: usize = train.sample_shape.iter().product();
    let model = move |g: &mut Graph, x: NodeId, training: bool| -> kiln::Result<NodeId> {
        let h = nn::flatten(g, x)?;
        let h = Linear::new(g, "fc1", features, hidden)?.forward(g, h)?;
        let h = g.relu(h)?;
        let h = match tune {
            Tune::Dropout if training && v > 0.0 => g.dropout(h, v)?,
            _ => h,
        };
        Linear::new(g, "fc2", hidden, train.classes)?.forward(g, h)
    };
    let l2 = move |g: &mut Graph| {
        let w = loss::decayed_params(g);
        loss::l2_penalty(g, &w, v)
    };
    let penalty: Option<Penalty<'_>> = match tune {
        Tune::L2 if v > 0.0 => Some(&l2),
        _ => None,
    };
    let opt = Optimizer::adam(a.lr);
    let mut t = Trainer::classifier(
        dev,
        &train.sample_shape,
        train.classes,
        a.batch as usize,
        &model,
        penalty,
        &opt,
        a.seed,
    )?;
    let cfg = FitConfig {
        epochs: a.epochs as usize,
        seed: a.seed,
        progress: false,
        ..Default::default()
    };
    t.fit(train, None, &cfg)?;
    Ok(t.evaluate_with(eval, false, "evaluation")?.accuracy)
}

fn run<B: Backend>(dev: &B, a: &Args, candidates: &[f32], train: &Dataset, test: &Dataset) -> Result<String, BoxError> {
    let folds = train.stratified_folds(a.folds as usize, a.seed)?;
    let smallest = (0..folds.k())
        .map(|i| train.len() - folds.validation(i).len())
        .min()
        .unwrap_or(0);
    if (a.batch as usize) > smallest {
        return Err(format!("--batch {} is more than a fold's {smallest} training images", a.batch).into());
    }
    eprintln!(
        "{}-fold cross-validation of the {} over {:?} on {} MNIST images (MLP 784-{}-10, {} epochs per fit), on {}",
        a.folds,
        a.tune.name(),
        candidates,
        train.len(),
        a.hidden,
        a.epochs,
        dev.info().adapter
    );
    let total = candidates.len() * folds.k();
    let mut done = 0;
    let sel: Selection<f32> = select(train, &folds, candidates, |&v, i, t, val| {
        let acc = fit_and_score(dev, a, v, t, val)?;
        done += 1;
        eprintln!(
            "[{done}/{total}] {} = {v}: fold {} validation accuracy {:.2}%",
            a.tune.name(),
            i + 1,
            100.0 * acc
        );
        Ok(acc)
    })?;
    let winner = *sel.winner();
    eprintln!("retraining every candidate on all {} training images", train.len());
    let tests: Vec<f32> = candidates
        .iter()
        .map(|&v| fit_and_score(dev, a, v, train, test))
        .collect::<kiln::Result<_>>()?;
    println!();
    println!(
        "| {} | validation accuracy, {}-fold (mean ± sd) | test accuracy, retrained on all {} (reference) |",
        a.tune.name(),
        a.folds,
        train.len()
    );
    println!("| --- | --- | --- |");
    for (i, ((v, s), t)) in sel.candidates.iter().zip(&tests).enumerate() {
        let mark = if i == sel.best { " ← chosen" } else { "" };
        println!(
            "| {v}{mark} | {:.2}% ± {:.2} | {:.2}% |",
            100.0 * s.mean,
            100.0 * s.sd,
            100.0 * t
        );
    }
    println!();
    println!(
        "chosen {} = {winner}: test accuracy {:.2}% after retraining on all {} training images",
        a.tune.name(),
        100.0 * tests[sel.best],
        train.len()
    );
    let cv: Vec<String> = sel
        .candidates
        .iter()
        .map(|(v, s)| format!("{{\"value\":{v},\"mean\":{:.4},\"sd\":{:.4}}}", s.mean, s.sd))
        .collect();
    Ok(format!(
        "{{\"example\":\"kfold\",\"tune\":\"{}\",\"folds\":{},\"train_images\":{},\"cv\":[{}],\"chosen\":{winner},\"test_accuracy\":{:.4},\"seed\":{},\"device\":\"{}\"}}",
        a.tune.name(),
        a.folds,
        train.len(),
        cv.join(","),
        tests[sel.best],
        a.seed,
        dev.info().backend
    ))
}

fn main() {
    let a = Args::parse();
    let result = (|| -> Result<String, BoxError> {
        let candidates = match (a.candidates.is_empty(), a.tune) {
            (true, Tune::L2) => vec![0.0, 1e-4, 1e-3, 1e-2],
            (true, Tune::Dropout) => vec![0.0, 0.2, 0.4, 0.6],
            (false, _) => a.candidates.clone(),
        };
        if a.tune == Tune::Dropout {
            if let Some(p) = candidates.iter().find(|&&p| p >= 1.0) {
                return Err(format!("--candidates: dropout rate {p} is not in [0, 1)").into());
            }
        }
        let (train, mut test) = load_mnist(&a.data)?;
        let mut train = train.take(a.train as usize);
        if (a.folds as usize) > train.len() {
            return Err(format!("--folds {} is more than the {} training images", a.folds, train.len()).into());
        }
        let (mean, std) = train.stats();
        train.normalize(mean, std);
        test.normalize(mean, std);
        match kiln::Device::choose(&a.device)? {
            kiln::Device::Cpu(cpu) => run(&cpu, &a, &candidates, &train, &test),
            kiln::Device::Gpu(gpu) => run(&gpu, &a, &candidates, &train, &test),
        }
    })();
    match result {
        Ok(json) => println!("{json}"),
        Err(e) => {
            eprintln!("kfold: {e}");
            std::process::exit(1);
        }
    }
}
