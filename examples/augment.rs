//! Data augmentation on a small training set: LeNet-5 trained on the first 5,000 MNIST training
//! images as they are, and again with every training batch augmented on the device (random
//! shifts, small rotations, contrast and brightness jitter, noise: `Graph::augment`), then both
//! evaluated on the 10,000 test images.
//!
//! ```text
//! cargo run --release --example augment                      # the default comparison
//! cargo run --release --example augment -- --shift 3 --rotate 15 --noise 0.2 --epochs 20
//! ```
//!
//! Prints a table of the two runs and ends with a JSON line.

mod common;

use clap::{Parser, ValueEnum};
use common::{non_negative, positive};
use kiln::data::{load_mnist, Dataset};
use kiln::graph::Augment;
use kiln::nn;
use kiln::train::{FitConfig, Trainer};
use kiln::{Backend, Graph, NodeId, Optimizer, Schedule};
use std::path::PathBuf;
use std::time::Instant;

/// LeNet-5 on a few thousand MNIST images, with and without on-device augmentation.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Training images (the first N of MNIST's training set).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=60000))]
    train: u64,
    /// Passes over the training images (each run).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    epochs: u64,
    /// Samples per step.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,
    /// Adam's learning rate (the peak of the cosine schedule).
    #[arg(long, default_value_t = 2e-3, value_parser = positive)]
    lr: f32,
    /// Learning-rate schedule: constant, or cosine decay to lr/100 over the run (which lets the
    /// augmented run, still improving when a constant rate ends, settle).
    #[arg(long, value_enum, default_value_t = Sched::Cosine)]
    schedule: Sched,
    /// Largest translation, pixels (a random 28×28 crop of the image padded by this much).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..28))]
    shift: u64,
    /// Largest rotation, degrees (0 to 45).
    #[arg(long, default_value_t = 10.0, value_parser = degrees)]
    rotate: f32,
    /// Flip half of the images left to right (wrong for digits; here to try).
    #[arg(long)]
    flip: bool,
    /// Largest relative contrast change (0 to 1).
    #[arg(long, default_value_t = 0.2, value_parser = fraction)]
    contrast: f32,
    /// Largest brightness offset, in standard deviations of the pixel values.
    #[arg(long, default_value_t = 0.1, value_parser = non_negative)]
    brightness: f32,
    /// Standard deviation of the added noise, in standard deviations of the pixel values.
    #[arg(long, default_value_t = 0.1, value_parser = non_negative)]
    noise: f32,
    /// Seed of the initial weights, the shuffles and the augmentations (both runs start from
    /// the same weights and see the same batches).
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
enum Sched {
    Constant,
    Cosine,
}

fn fraction(s: &str) -> Result<f32, String> {
    common::parse_f32(s, |v| (0.0..=1.0).contains(&v), "a number in [0, 1]")
}

fn degrees(s: &str) -> Result<f32, String> {
    common::parse_f32(s, |v| (0.0..=45.0).contains(&v), "an angle in [0, 45] degrees")
}

type BoxError = Box<dyn std::error::Error>;

/// One run's result.
struct Outcome {
    train_accuracy: f32,
    test_accuracy: f32,
    test_loss: f32,
    seconds: f64,
}

fn train_and_test<B: Backend>(
    dev: &B,
    a: &Args,
    aug: Augment,
    train: &Dataset,
    test: &Dataset,
) -> Result<Outcome, BoxError> {
    let lenet = |g: &mut Graph, x: NodeId, _: bool| nn::lenet5(g, x);
    let model = nn::augmented(lenet, aug);
    let steps = a.epochs * (train.len() as u64 / a.batch);
    let opt = match a.schedule {
        Sched::Constant => Optimizer::adam(a.lr),
        Sched::Cosine => Optimizer::adam(a.lr).schedule(Schedule::Cosine {
            lr: a.lr,
            min_lr: a.lr / 100.0,
            steps: steps.max(1),
        }),
    };
    let mut t = Trainer::classifier(dev, &[1, 28, 28], 10, a.batch as usize, &model, None, &opt, a.seed)?;
    let start = Instant::now();
    let cfg = FitConfig {
        epochs: a.epochs as usize,
        seed: a.seed,
        progress: true,
        ..Default::default()
    };
    let hist = t.fit(train, None, &cfg)?;
    let m = t.evaluate(test)?;
    Ok(Outcome {
        train_accuracy: hist.train.last().map_or(0.0, |m| m.accuracy),
        test_accuracy: m.accuracy,
        test_loss: m.loss,
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn run<B: Backend>(dev: &B, a: &Args, train: &Dataset, test: &Dataset, fill: f32) -> Result<String, BoxError> {
    let aug = Augment {
        shift: a.shift as usize,
        flip: a.flip,
        rotate: a.rotate,
        brightness: a.brightness,
        contrast: a.contrast,
        noise: a.noise,
        fill,
        center: 0.0,
    };
    eprintln!(
        "LeNet-5 on {} MNIST training images, {} epochs, on {}",
        train.len(),
        a.epochs,
        dev.info().adapter
    );
    eprintln!("-- without augmentation");
    let plain = train_and_test(dev, a, Augment::default(), train, test)?;
    eprintln!("-- with augmentation: {aug:?}");
    let augmented = train_and_test(dev, a, aug, train, test)?;
    println!();
    println!("| run | train accuracy (last epoch) | test accuracy | test loss | seconds |");
    println!("| --- | --- | --- | --- | --- |");
    for (name, o) in [("plain", &plain), ("augmented", &augmented)] {
        println!(
            "| {name} | {:.2}% | {:.2}% | {:.4} | {:.0} |",
            100.0 * o.train_accuracy,
            100.0 * o.test_accuracy,
            o.test_loss,
            o.seconds
        );
    }
    println!();
    Ok(format!(
        "{{\"example\":\"augment\",\"train_images\":{},\"epochs\":{},\"lr\":{},\"schedule\":\"{}\",\"test_accuracy_plain\":{:.4},\"test_accuracy_augmented\":{:.4},\"test_loss_plain\":{:.4},\"test_loss_augmented\":{:.4},\"train_accuracy_plain\":{:.4},\"train_accuracy_augmented\":{:.4},\"shift\":{},\"rotate\":{},\"flip\":{},\"contrast\":{},\"brightness\":{},\"noise\":{},\"seed\":{},\"device\":\"{}\"}}",
        train.len(),
        a.epochs,
        a.lr,
        if a.schedule == Sched::Cosine { "cosine" } else { "constant" },
        plain.test_accuracy,
        augmented.test_accuracy,
        plain.test_loss,
        augmented.test_loss,
        plain.train_accuracy,
        augmented.train_accuracy,
        a.shift,
        a.rotate,
        a.flip,
        a.contrast,
        a.brightness,
        a.noise,
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
        if train.sample_shape != [1, 28, 28] {
            return Err(format!("expected 28×28 images, found {:?}", train.sample_shape).into());
        }
        let (mean, std) = train.stats();
        train.normalize(mean, std);
        test.normalize(mean, std);
        // A blank pixel after normalisation: what translated and rotated images reveal.
        let fill = -mean / std;
        match kiln::Device::choose(&a.device)? {
            kiln::Device::Cpu(cpu) => run(&cpu, &a, &train, &test, fill),
            kiln::Device::Gpu(gpu) => run(&gpu, &a, &train, &test, fill),
        }
    })();
    match result {
        Ok(json) => println!("{json}"),
        Err(e) => {
            eprintln!("augment: {e}");
            std::process::exit(1);
        }
    }
}
