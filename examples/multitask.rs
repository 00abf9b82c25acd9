//! Multi-task learning: one LeNet-5 trunk shared by two heads — the digit (10 classes) and a
//! second label derived from it (its parity, or whether it is at least 5) — trained on the
//! weighted sum of the two cross-entropies, against two separate LeNet-5s, one per task,
//! trained on the same batches for the same steps.
//!
//! ```text
//! cargo run --release --example multitask                       # digit + parity
//! cargo run --release --example multitask -- --second ge5 --weights 1,0.5 --train 2000
//! ```
//!
//! The graphs and the training loop are written by hand (two label inputs, one loss each,
//! `loss::weighted_sum`), with a `kiln::progress` bar. Prints test accuracy on both tasks and
//! the parameter counts of both set-ups, then a JSON line.

mod common;

use clap::{Parser, ValueEnum};
use common::{non_negative, positive};
use kiln::data::{load_mnist, Dataset};
use kiln::nn::{self, Conv2d, Linear};
use kiln::progress::Progress;
use kiln::rng::Rng;
use kiln::{backward, loss, Backend, Feed, Graph, NodeId, Optimizer, ParamStore, Program, Training};
use std::path::PathBuf;
use std::time::Instant;

/// A shared trunk with two heads against two separate networks, on MNIST.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The second task, derived from the digit: its parity (odd = 1) or whether it is ≥ 5.
    #[arg(long, value_enum, default_value_t = Second::Parity)]
    second: Second,
    /// Weights of the digit loss and the second task's loss in the shared model's sum.
    #[arg(long, value_delimiter = ',', num_args = 1, default_value = "1,1", value_parser = non_negative)]
    weights: Vec<f32>,
    /// Training images (the first N of MNIST's training set).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=60000))]
    train: u64,
    /// Passes over the training images.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    epochs: u64,
    /// Samples per step.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-3, value_parser = positive)]
    lr: f32,
    /// Seed of the initial weights and the shuffles.
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
enum Second {
    /// 1 for odd digits.
    Parity,
    /// 1 for digits 5–9.
    Ge5,
}

impl Second {
    fn name(self) -> &'static str {
        match self {
            Second::Parity => "parity",
            Second::Ge5 => "ge5",
        }
    }

    fn label(self, digit: u32) -> u32 {
        match self {
            Second::Parity => digit % 2,
            Second::Ge5 => (digit >= 5) as u32,
        }
    }
}

type BoxError = Box<dyn std::error::Error>;

/// LeNet-5 up to its 84-unit layer, parameters under `prefix`: `(B, 1, 28, 28)` → `(B, 84)`.
fn trunk(g: &mut Graph, prefix: &str, x: NodeId) -> kiln::Result<NodeId> {
    let h = Conv2d::new(g, &format!("{prefix}.conv1"), 1, 6, 5, 1, 2)?.forward(g, x)?;
    let h = g.relu(h)?;
    let h = g.max_pool2d(h, [2, 2], [2, 2], [0, 0])?; // (B, 6, 14, 14)
    let h = Conv2d::new(g, &format!("{prefix}.conv2"), 6, 16, 5, 1, 0)?.forward(g, h)?;
    let h = g.relu(h)?;
    let h = g.max_pool2d(h, [2, 2], [2, 2], [0, 0])?; // (B, 16, 5, 5)
    let h = nn::flatten(g, h)?; // (B, 400)
    let h = Linear::new(g, &format!("{prefix}.fc1"), 400, 120)?.forward(g, h)?;
    let h = g.relu(h)?;
    let h = Linear::new(g, &format!("{prefix}.fc2"), 120, 84)?.forward(g, h)?;
    g.relu(h)
}

/// One set-up: a graph whose training loss covers both tasks, its two logits, and programs.
struct Setup<B: Backend> {
    name: &'static str,
    train: Program<B>,
    eval: Program<B>,
    loss: NodeId,
    digit: NodeId,
    second: NodeId,
    params: usize,
}

/// `shared`: one trunk, two heads, `w₀·CE(digit) + w₁·CE(second)`. Otherwise two whole
/// networks (disjoint parameters) whose losses are summed: the gradient of each network's
/// parameters is that of its own loss alone, so this trains them exactly as two separate runs
/// on the same batches would (Adam is per parameter).
fn setup<B: Backend>(dev: &B, a: &Args, shared: bool) -> kiln::Result<Setup<B>> {
    let b = a.batch as usize;
    let mut g = Graph::new();
    let x = g.input("x", [b, 1, 28, 28])?;
    let y_digit = g.labels("digit", [b], 10)?;
    let y_second = g.labels("second", [b], 2)?;
    let (digit, second) = if shared {
        let h = trunk(&mut g, "trunk", x)?;
        let d = Linear::new(&mut g, "digit_head", 84, 10)?.forward(&mut g, h)?;
        let s = Linear::new(&mut g, "second_head", 84, 2)?.forward(&mut g, h)?;
        (d, s)
    } else {
        let hd = trunk(&mut g, "digit_net", x)?;
        let d = Linear::new(&mut g, "digit_net.head", 84, 10)?.forward(&mut g, hd)?;
        let hs = trunk(&mut g, "second_net", x)?;
        let s = Linear::new(&mut g, "second_net.head", 84, 2)?.forward(&mut g, hs)?;
        (d, s)
    };
    let ld = loss::cross_entropy(&mut g, digit, y_digit)?;
    let ls = loss::cross_entropy(&mut g, second, y_second)?;
    let (wd, ws) = if shared {
        (a.weights[0], a.weights[1])
    } else {
        (1.0, 1.0)
    };
    let total = loss::weighted_sum(&mut g, &[(ld, wd), (ls, ws)])?;
    let grads = backward(&mut g, total)?;
    let mut store = ParamStore::new(dev, &g, a.seed)?;
    let opt = Optimizer::adam(a.lr);
    let mut train = Program::compile(&g, &mut store, &[total], Some(Training::new(&grads, &opt)))?;
    train.set_seed(a.seed);
    let eval = Program::compile(&g, &mut store, &[digit, second], None)?;
    Ok(Setup {
        name: if shared {
            "shared trunk, two heads"
        } else {
            "two separate networks"
        },
        train,
        eval,
        loss: total,
        digit,
        second,
        params: g.params().iter().map(|p| p.shape.numel()).sum(),
    })
}

/// The second task's labels of `digits`.
fn second_labels(a: &Args, digits: &[u32]) -> Vec<u32> {
    digits.iter().map(|&d| a.second.label(d)).collect()
}

/// Train `s` for `a.epochs` epochs; returns the mean training loss of the last epoch.
fn fit<B: Backend>(a: &Args, s: &mut Setup<B>, data: &Dataset) -> Result<f32, BoxError> {
    let b = a.batch as usize;
    let steps = data.len() / b;
    let mut rng = Rng::new(a.seed);
    let (mut x, mut y) = (vec![0f32; b * data.sample_len()], vec![0u32; b]);
    let mut last = 0.0;
    for epoch in 1..=a.epochs {
        let mut order: Vec<usize> = (0..data.len()).collect();
        rng.shuffle(&mut order);
        let mut bar = Progress::training(true, format!("{} {epoch}/{}", s.name, a.epochs), steps as u64);
        let mut sum = 0f64;
        for step in 0..steps {
            data.gather(&order[step * b..(step + 1) * b], &mut x, &mut y)?;
            let y2 = second_labels(a, &y);
            let out = s.train.run(&[
                ("x", Feed::F32(&x)),
                ("digit", Feed::Labels(&y)),
                ("second", Feed::Labels(&y2)),
            ])?;
            let l = out.scalar(s.loss)?;
            if !l.is_finite() {
                return Err(format!("{}: the loss is {l} at epoch {epoch}, step {}", s.name, step + 1).into());
            }
            sum += l as f64;
            bar.update(
                (step + 1) as u64,
                ((step + 1) * b) as u64,
                Some(sum / (step + 1) as f64),
            );
        }
        bar.finish();
        last = (sum / steps as f64) as f32;
    }
    Ok(last)
}

/// Test accuracy of both heads.
fn evaluate<B: Backend>(a: &Args, s: &mut Setup<B>, data: &Dataset) -> kiln::Result<(f32, f32)> {
    let b = a.batch as usize;
    let (mut x, mut y) = (vec![0f32; b * data.sample_len()], vec![0u32; b]);
    let (mut hits_d, mut hits_s) = (0usize, 0usize);
    let order: Vec<usize> = (0..data.len()).collect();
    for idx in order.chunks(b) {
        data.gather(idx, &mut x, &mut y)?;
        let out = s.eval.run(&[("x", Feed::F32(&x))])?;
        let pd = out.get(s.digit)?.argmax_rows();
        let ps = out.get(s.second)?.argmax_rows();
        for (i, &d) in y.iter().enumerate().take(idx.len()) {
            hits_d += (pd[i] == d as usize) as usize;
            hits_s += (ps[i] == a.second.label(d) as usize) as usize;
        }
    }
    let n = data.len().max(1) as f32;
    Ok((hits_d as f32 / n, hits_s as f32 / n))
}

fn run<B: Backend>(dev: &B, a: &Args, train: &Dataset, test: &Dataset) -> Result<String, BoxError> {
    eprintln!(
        "digit + {} on {} MNIST training images, {} epochs, loss weights {:?}, on {}",
        a.second.name(),
        train.len(),
        a.epochs,
        a.weights,
        dev.info().adapter
    );
    let mut rows = vec![];
    for shared in [true, false] {
        let mut s = setup(dev, a, shared)?;
        let start = Instant::now();
        let train_loss = fit(a, &mut s, train)?;
        let seconds = start.elapsed().as_secs_f64();
        let (digit, second) = evaluate(a, &mut s, test)?;
        rows.push((s.name, s.params, train_loss, digit, second, seconds));
    }
    println!();
    println!(
        "| model | parameters | digit test accuracy | {} test accuracy | last-epoch training loss (sum of both) | seconds |",
        a.second.name()
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for (name, params, l, d, s, secs) in &rows {
        println!(
            "| {name} | {params} | {:.2}% | {:.2}% | {l:.4} | {secs:.0} |",
            100.0 * d,
            100.0 * s
        );
    }
    println!();
    let (sh, se) = (&rows[0], &rows[1]);
    Ok(format!(
        "{{\"example\":\"multitask\",\"second_task\":\"{}\",\"weights\":[{},{}],\"train_images\":{},\"epochs\":{},\"shared_params\":{},\"separate_params\":{},\"shared_digit_accuracy\":{:.4},\"shared_second_accuracy\":{:.4},\"separate_digit_accuracy\":{:.4},\"separate_second_accuracy\":{:.4},\"seed\":{},\"device\":\"{}\"}}",
        a.second.name(),
        a.weights[0],
        a.weights[1],
        train.len(),
        a.epochs,
        sh.1,
        se.1,
        sh.3,
        sh.4,
        se.3,
        se.4,
        a.seed,
        dev.info().backend
    ))
}

fn main() {
    let a = Args::parse();
    let result = (|| -> Result<String, BoxError> {
        if a.weights.len() != 2 {
            return Err(format!(
                "--weights takes two numbers (digit, second task), got {}",
                a.weights.len()
            )
            .into());
        }
        if a.weights.iter().all(|&w| w == 0.0) {
            return Err("--weights: at least one loss weight must be positive".into());
        }
        let (train, mut test) = load_mnist(&a.data)?;
        let mut train = train.take(a.train as usize);
        if (a.batch as usize) > train.len() {
            return Err(format!("--batch {} is more than the {} training images", a.batch, train.len()).into());
        }
        if train.sample_shape != [1, 28, 28] || train.classes != 10 {
            return Err(format!("expected 28×28 digits in 10 classes, found {:?}", train.sample_shape).into());
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
            eprintln!("multitask: {e}");
            std::process::exit(1);
        }
    }
}
