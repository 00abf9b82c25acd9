//! Ensembles and bagging: K LeNet-5s, each trained on a bootstrap resample of 5,000 MNIST
//! training images (bagging) — or on all of them from different initial weights and batch
//! orders (`--mode seeds`) — and their predicted class probabilities averaged.
//!
//! ```text
//! cargo run --release --example ensemble                       # 5 bagged LeNets
//! cargo run --release --example ensemble -- --mode seeds --members 3 --epochs 3
//! ```
//!
//! Prints each member's test accuracy and the ensemble's as a table, then a JSON line.

mod common;

use clap::{Parser, ValueEnum};
use common::positive;
use kiln::data::load_mnist;
use kiln::ensemble::{Bagging, Ensemble, Recipe};
use kiln::nn;
use kiln::train::FitConfig;
use kiln::{Backend, Graph, NodeId, Optimizer};
use std::path::PathBuf;
use std::time::Instant;

/// Train K LeNet-5s on resamples of MNIST and average their predictions.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Members of the ensemble.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100))]
    members: u64,
    /// How the members differ: bagging (bootstrap resamples, and their own initial weights and
    /// batch orders) or seeds (all the data; only weights and batch orders differ).
    #[arg(long, value_enum, default_value_t = Mode::Bagging)]
    mode: Mode,
    /// Training images (the first N of MNIST's training set).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=60000))]
    train: u64,
    /// Passes over each member's training set.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    epochs: u64,
    /// Samples per step.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-3, value_parser = positive)]
    lr: f32,
    /// Seed of member 0 (member k uses seed + k for its weights and batch order).
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
enum Mode {
    Bagging,
    Seeds,
}

type BoxError = Box<dyn std::error::Error>;

fn run<B: Backend>(
    dev: &B,
    a: &Args,
    train: &kiln::data::Dataset,
    test: &kiln::data::Dataset,
) -> Result<String, BoxError> {
    let lenet = |g: &mut Graph, x: NodeId, _: bool| nn::lenet5(g, x);
    let recipe = Recipe {
        sample_shape: train.sample_shape.clone(),
        classes: 10,
        batch: a.batch as usize,
        model: &lenet,
        penalty: None,
        optimizer: Optimizer::adam(a.lr),
    };
    let bagging = Bagging {
        members: a.members as usize,
        bootstrap: a.mode == Mode::Bagging,
        seed: a.seed,
    };
    let fit = FitConfig {
        epochs: a.epochs as usize,
        seed: a.seed,
        progress: true,
        ..Default::default()
    };
    eprintln!(
        "{} LeNet-5s on {} MNIST training images ({}), {} epochs each, on {}",
        a.members,
        train.len(),
        if bagging.bootstrap {
            "bootstrap resamples"
        } else {
            "all of them, different seeds"
        },
        a.epochs,
        dev.info().adapter
    );
    let start = Instant::now();
    let mut ens = Ensemble::train(dev, &recipe, train, &bagging, &fit)?;
    let seconds = start.elapsed().as_secs_f64();
    let acc = ens.evaluate(test)?;
    println!();
    println!("| model | test accuracy |");
    println!("| --- | --- |");
    for (k, m) in acc.members.iter().enumerate() {
        println!("| member {} | {:.2}% |", k + 1, 100.0 * m);
    }
    println!("| mean of the members | {:.2}% |", 100.0 * acc.mean_member());
    println!("| best member | {:.2}% |", 100.0 * acc.best_member());
    println!(
        "| **ensemble** (mean probabilities) | **{:.2}%** |",
        100.0 * acc.ensemble
    );
    println!();
    let members: Vec<String> = acc.members.iter().map(|m| format!("{m:.4}")).collect();
    Ok(format!(
        "{{\"example\":\"ensemble\",\"mode\":\"{}\",\"members\":{},\"train_images\":{},\"epochs\":{},\"member_test_accuracy\":[{}],\"mean_member_test_accuracy\":{:.4},\"best_member_test_accuracy\":{:.4},\"ensemble_test_accuracy\":{:.4},\"train_seconds\":{seconds:.1},\"seed\":{},\"device\":\"{}\"}}",
        if bagging.bootstrap { "bagging" } else { "seeds" },
        a.members,
        train.len(),
        a.epochs,
        members.join(","),
        acc.mean_member(),
        acc.best_member(),
        acc.ensemble,
        a.seed,
        dev.info().backend
    ))
}

fn main() {
    let a = Args::parse();
    let result = (|| -> Result<String, BoxError> {
        let (train, mut test) = load_mnist(&a.data)?;
        let mut train = train.take(a.train as usize);
        if (a.batch as usize) > train.len() {
            return Err(format!("--batch {} is more than the {} training images", a.batch, train.len()).into());
        }
        if train.sample_shape != [1, 28, 28] || train.classes != 10 {
            return Err(format!("expected 28×28 images of 10 classes, found {:?}", train.sample_shape).into());
        }
        let (mean, std) = train.stats();
        train.normalize(mean, std);
        test.normalize(mean, std);
        match kiln::Device::choose(&a.device)? {
            kiln::Device::Cpu(cpu) => run(&cpu, &a, &train, &test),
            kiln::Device::Gpu(gpu) => run(&gpu, &a, &train, &test),
        }
    })();
    match result {
        Ok(json) => println!("{json}"),
        Err(e) => {
            eprintln!("ensemble: {e}");
            std::process::exit(1);
        }
    }
}
