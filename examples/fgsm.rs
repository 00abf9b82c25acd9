//! Adversarial examples and adversarial training with the fast gradient sign method (FGSM):
//! LeNet-5 trained normally and trained on clean + FGSM examples, each then tested on the clean
//! test images and on FGSM-perturbed ones.
//!
//! ```text
//! cargo run --release --example fgsm                 # 10,000 training images, 2 epochs
//! cargo run --release --example fgsm -- --help
//! ```
//!
//! The perturbation `x + ε·sign(∂L/∂x)` (clamped to the pixel range [0, 1]) is computed inside
//! the program that uses it — by the training step for adversarial training, and by the
//! evaluation program for the attack — with `kiln::adversarial`. Both models start from the same
//! weights and see the same batches. Pixels are fed in [0, 1], so ε is in pixel units; the
//! models normalise inside the graph. Prints a table of test accuracies and ends with a JSON line.

mod common;

use clap::Parser;
use common::positive;
use kiln::adversarial::{fgsm, fgsm_training_loss};
use kiln::data::{load_mnist, Dataset};
use kiln::rng::Rng;
use kiln::{backward, loss, nn, Backend, Feed, Graph, NodeId, Optimizer, ParamStore, Program, Training};
use std::path::PathBuf;
use std::time::Instant;

/// Train LeNet-5 normally and adversarially (FGSM) on MNIST; test both against FGSM.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Training images (the first N of MNIST's 60,000).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    train: u64,
    /// Test images (the first N of MNIST's 10,000).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    test: u64,
    /// Passes over the training images.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    epochs: u64,
    /// Mini-batch size (a final partial batch of each epoch is skipped).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    batch: u64,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-3, value_parser = positive)]
    lr: f32,
    /// ε of the FGSM examples adversarial training uses, in pixel units.
    #[arg(long, default_value_t = 0.2, value_parser = unit)]
    train_eps: f32,
    /// Weight α of the clean loss in α·L(x) + (1 − α)·L(x_adv).
    #[arg(long, default_value_t = 0.5, value_parser = fraction)]
    alpha: f32,
    /// The attack strengths ε to test, comma-separated, in pixel units.
    #[arg(long, default_value = "0.1,0.2", value_delimiter = ',', value_parser = unit, num_args = 1..)]
    eps: Vec<f32>,
    /// Seed of the initial weights and of the batch order.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// auto: a real GPU if there is one, else the CPU backend.
    #[arg(long, env = "KILN_DEVICE", default_value = "auto", value_parser = ["auto", "cpu", "gpu"])]
    device: String,
    /// A directory with MNIST's four IDX files.
    #[arg(long, default_value_os_t = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist")))]
    data: PathBuf,
}

/// ε in (0, 1]: a perturbation of at most the whole pixel range.
fn unit(s: &str) -> Result<f32, String> {
    common::parse_f32(s, |v| v > 0.0 && v <= 1.0, "an ε in (0, 1]")
}

fn fraction(s: &str) -> Result<f32, String> {
    common::parse_f32(s, |v| (0.0..=1.0).contains(&v), "a number in [0, 1]")
}

type BoxError = Box<dyn std::error::Error>;

/// MNIST's mean and standard deviation of pixel intensity, for normalising inside the graph.
const MEAN: f32 = 0.1307;
const STD: f32 = 0.3081;

/// LeNet-5 on pixels in [0, 1] (normalised inside the graph) → logits `(N, 10)`.
fn lenet(g: &mut Graph, x: NodeId) -> kiln::Result<NodeId> {
    let xn = g.add_scalar(x, -MEAN)?;
    let xn = g.mul_scalar(xn, 1.0 / STD)?;
    nn::lenet5(g, xn)
}

/// What one model's evaluation graph fetches: clean logits and the logits under each attack.
struct Eval {
    x: &'static str,
    y: &'static str,
    clean: NodeId,
    attacked: Vec<NodeId>,
}

/// Build the training graph (normal or adversarial) and the evaluation graph of one model on
/// one graph (the parameters are shared by name).
fn build(a: &Args, adversarial: bool, eval_batch: usize) -> kiln::Result<(Graph, NodeId, Eval)> {
    let b = a.batch as usize;
    let mut g = Graph::new();
    let x = g.input("x", [b, 1, 28, 28])?;
    let y = g.labels("y", [b], 10)?;
    let mut loss_of = |g: &mut Graph, input: NodeId| -> kiln::Result<NodeId> {
        let logits = lenet(g, input)?;
        loss::cross_entropy(g, logits, y)
    };
    let train_loss = if adversarial {
        fgsm_training_loss(&mut g, x, a.train_eps, (0.0, 1.0), a.alpha, &mut loss_of)?.total
    } else {
        loss_of(&mut g, x)?
    };
    let xe = g.input("xe", [eval_batch, 1, 28, 28])?;
    let ye = g.labels("ye", [eval_batch], 10)?;
    let clean = lenet(&mut g, xe)?;
    let eval_loss = loss::cross_entropy(&mut g, clean, ye)?;
    let attacked = a
        .eps
        .iter()
        .map(|&eps| {
            let adv = fgsm(&mut g, xe, eval_loss, eps, (0.0, 1.0))?;
            lenet(&mut g, adv)
        })
        .collect::<kiln::Result<Vec<_>>>()?;
    let eval = Eval {
        x: "xe",
        y: "ye",
        clean,
        attacked,
    };
    Ok((g, train_loss, eval))
}

/// Accuracy on clean images, then under each attack, over `test`.
fn evaluate<B: Backend>(
    g: &Graph,
    store: &mut ParamStore<B>,
    e: &Eval,
    test: &Dataset,
    n: usize,
) -> kiln::Result<Vec<f32>> {
    let mut fetch = vec![e.clean];
    fetch.extend(&e.attacked);
    let mut prog = Program::compile(g, store, &fetch, None)?;
    let per = test.sample_len();
    let mut correct = vec![0usize; fetch.len()];
    let (mut xb, mut yb) = (vec![0f32; n * per], vec![0u32; n]);
    let idx: Vec<usize> = (0..test.len()).collect();
    for chunk in idx.chunks(n) {
        // A final partial batch is padded with blank images, which are not counted.
        test.gather(chunk, &mut xb, &mut yb)?;
        let out = prog.run(&[(e.x, Feed::F32(&xb)), (e.y, Feed::Labels(&yb))])?;
        for (c, &node) in correct.iter_mut().zip(&fetch) {
            let pred = out.get(node)?.argmax_rows();
            *c += pred
                .iter()
                .zip(chunk)
                .filter(|(&p, &i)| p == test.labels[i] as usize)
                .count();
        }
    }
    Ok(correct.iter().map(|&c| c as f32 / test.len() as f32).collect())
}

/// One model trained and tested: `(accuracies, last epoch's mean training loss, seconds)`.
fn train_and_test<B: Backend>(
    dev: &B,
    a: &Args,
    train: &Dataset,
    test: &Dataset,
    adversarial: bool,
) -> Result<(Vec<f32>, f32, f64), BoxError> {
    let eval_batch = 500.min(test.len());
    let (mut g, train_loss, eval) = build(a, adversarial, eval_batch)?;
    let grads = backward(&mut g, train_loss)?;
    let mut store = ParamStore::new(dev, &g, a.seed)?;
    let opt = Optimizer::adam(a.lr);
    let mut step = Program::compile(&g, &mut store, &[train_loss], Some(Training::new(&grads, &opt)))?;
    let b = a.batch as usize;
    let per = train.sample_len();
    let (mut xb, mut yb) = (vec![0f32; b * per], vec![0u32; b]);
    let start = Instant::now();
    let mut last = f32::NAN;
    for epoch in 0..a.epochs {
        let mut idx: Vec<usize> = (0..train.len()).collect();
        Rng::new(a.seed ^ (epoch + 1).wrapping_mul(0x9e37_79b9)).shuffle(&mut idx);
        let (mut sum, mut steps) = (0.0f64, 0usize);
        for chunk in idx.chunks_exact(b) {
            train.gather(chunk, &mut xb, &mut yb)?;
            let out = step.run(&[("x", Feed::F32(&xb)), ("y", Feed::Labels(&yb))])?;
            sum += out.scalar(train_loss)? as f64;
            steps += 1;
        }
        last = (sum / steps.max(1) as f64) as f32;
        eprintln!(
            "  {} epoch {}: training loss {last:.4} ({:.0} s)",
            if adversarial { "adversarial" } else { "standard" },
            epoch + 1,
            start.elapsed().as_secs_f64()
        );
    }
    let secs = start.elapsed().as_secs_f64();
    let acc = evaluate(&g, &mut store, &eval, test, eval_batch)?;
    Ok((acc, last, secs))
}

fn run<B: Backend>(dev: &B, a: &Args) -> Result<String, BoxError> {
    let (train, test) = load_mnist(&a.data)?;
    if train.sample_shape != [1, 28, 28] {
        return Err(format!(
            "LeNet-5 here takes 1×28×28 images, the data has {:?}",
            train.sample_shape
        )
        .into());
    }
    let (train, test) = (train.take(a.train as usize), test.take(a.test as usize));
    if train.len() < a.batch as usize {
        return Err(format!("{} training images do not fill one batch of {}", train.len(), a.batch).into());
    }
    eprintln!(
        "fgsm: {} training images, {} epochs, batch {}, adversarial training at ε = {} (α = {}), {} test images, on {}",
        train.len(),
        a.epochs,
        a.batch,
        a.train_eps,
        a.alpha,
        test.len(),
        dev.info().backend
    );
    let (std_acc, std_loss, std_secs) = train_and_test(dev, a, &train, &test, false)?;
    let (adv_acc, adv_loss, adv_secs) = train_and_test(dev, a, &train, &test, true)?;

    let mut header = format!("{:<22} {:>8}", "test accuracy", "clean");
    for eps in &a.eps {
        header += &format!(" {:>12}", format!("FGSM ε={eps}"));
    }
    println!("{header}");
    for (name, acc) in [("standard training", &std_acc), ("adversarial training", &adv_acc)] {
        let mut line = format!("{name:<22} {:>8}", format!("{:.2}%", 100.0 * acc[0]));
        for v in &acc[1..] {
            line += &format!(" {:>12}", format!("{:.2}%", 100.0 * v));
        }
        println!("{line}");
    }
    println!("training time: standard {std_secs:.0} s, adversarial {adv_secs:.0} s");
    let list = |acc: &[f32]| {
        let v: Vec<String> = acc[1..].iter().map(|v| format!("{v:.4}")).collect();
        v.join(",")
    };
    let eps: Vec<String> = a.eps.iter().map(|e| e.to_string()).collect();
    Ok(format!(
        "{{\"example\":\"fgsm\",\"train_images\":{},\"test_images\":{},\"epochs\":{},\"train_eps\":{},\"alpha\":{},\"eps\":[{}],\"standard\":{{\"clean\":{:.4},\"fgsm\":[{}],\"train_loss\":{std_loss:.4},\"seconds\":{std_secs:.1}}},\"adversarial\":{{\"clean\":{:.4},\"fgsm\":[{}],\"train_loss\":{adv_loss:.4},\"seconds\":{adv_secs:.1}}},\"device\":\"{}\",\"seed\":{}}}",
        train.len(),
        test.len(),
        a.epochs,
        a.train_eps,
        a.alpha,
        eps.join(","),
        std_acc[0],
        list(&std_acc),
        adv_acc[0],
        list(&adv_acc),
        dev.info().backend,
        a.seed
    ))
}

fn main() {
    let a = Args::parse();
    let result = (|| -> Result<String, BoxError> {
        match kiln::Device::choose(&a.device)? {
            kiln::Device::Cpu(cpu) => run(&cpu, &a),
            kiln::Device::Gpu(gpu) => run(&gpu, &a),
        }
    })();
    match result {
        Ok(json) => println!("{json}"),
        Err(e) => {
            eprintln!("fgsm: {e}");
            std::process::exit(1);
        }
    }
}
