//! A restricted Boltzmann machine on binarised MNIST, trained by contrastive divergence (CD-k)
//! with block Gibbs sampling on the device.
//!
//! ```text
//! cargo run --release --example rbm
//! cargo run --release --example rbm -- --k 3 --hidden 500
//! cargo run --release --example rbm -- --help
//! ```
//!
//! Each training step runs a k-step Gibbs chain from the batch (Bernoulli samples drawn on the
//! device from the seeded counter-based generator) and follows the gradient of the free-energy
//! difference `F(v₀) − F(stop_gradient(v_k))`, which is the CD-k statistic (see `kiln::nn::Rbm`).
//! Prints the test reconstruction error (mean squared error per pixel of the mean-field
//! reconstruction `σ(σ(vW + c)Wᵀ + b)` against the binary image) before training and after every
//! epoch, then runs one Gibbs chain per digit class from its first test image and writes the
//! visible probabilities along the chains as a PNG: one row per chain, columns after
//! 0 (the image), 1, 2, 5, 10, 20, 50, 100, 200, 500 and 1000 Gibbs steps. Ends with a JSON line.

mod common;

use clap::Parser;
use common::{json_escape, positive};
use kiln::data::{load_mnist, Dataset};
use kiln::nn::Rbm;
use kiln::rng::Rng;
use kiln::{backward, Backend, Feed, Graph, Optimizer, ParamStore, Program, Training};
use std::path::PathBuf;
use std::time::Instant;

/// Train an RBM on binarised MNIST with CD-k; report reconstruction error and draw samples.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Training images (the first N of MNIST's 60,000).
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    train: u64,
    /// Test images (the first N of MNIST's 10,000).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    test: u64,
    /// Passes over the training images.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    epochs: u64,
    /// Mini-batch size (a final partial batch of each epoch is skipped).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=4096))]
    batch: u64,
    /// Hidden units.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=8192))]
    hidden: u64,
    /// Gibbs steps per CD update (CD-k).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
    k: u64,
    /// Persistent CD: each step's chains continue from where the previous step's ended (carried
    /// on the device) instead of restarting at the batch.
    #[arg(long)]
    pcd: bool,
    /// Learning rate of SGD with momentum.
    #[arg(long, default_value_t = 0.05, value_parser = positive)]
    lr: f32,
    /// Momentum.
    #[arg(long, default_value_t = 0.9, value_parser = momentum)]
    momentum: f64,
    /// A pixel is 1 when its intensity in [0, 1] is above this.
    #[arg(long, default_value_t = 0.5, value_parser = open_fraction)]
    threshold: f32,
    /// Gibbs steps of the sampling chains in the picture (columns up to this many).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    gibbs: u64,
    /// Seed of the initial weights, the batch order and the sampling.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// auto: a real GPU if there is one, else the CPU backend.
    #[arg(long, env = "KILN_DEVICE", default_value = "auto", value_parser = ["auto", "cpu", "gpu"])]
    device: String,
    /// Where to write the picture of the sampling chains (PNG).
    #[arg(long, default_value_os_t = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/rbm.png")))]
    image: PathBuf,
    /// A directory with MNIST's four IDX files.
    #[arg(long, default_value_os_t = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist")))]
    data: PathBuf,
}

fn momentum(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..1.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a momentum in [0, 1)")),
    }
}

fn open_fraction(s: &str) -> Result<f32, String> {
    common::parse_f32(s, |v| v > 0.0 && v < 1.0, "a threshold in (0, 1)")
}

type BoxError = Box<dyn std::error::Error>;

/// The images with every pixel above `t` set to 1 and the rest to 0.
fn binarise(d: &Dataset, t: f32) -> Dataset {
    let mut b = d.clone();
    b.images.iter_mut().for_each(|v| *v = (*v > t) as u8 as f32);
    b
}

/// Columns of the picture: the Gibbs steps after which the chains are shown.
fn columns(max: u64) -> Vec<u64> {
    let mut c: Vec<u64> = [
        0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000,
    ]
    .into_iter()
    .filter(|&s| s < max)
    .collect();
    c.push(max);
    c
}

fn run<B: Backend>(dev: &B, a: &Args) -> Result<String, BoxError> {
    let (train, test) = load_mnist(&a.data)?;
    let (train, test) = (train.take(a.train as usize), test.take(a.test as usize));
    let (train, test) = (binarise(&train, a.threshold), binarise(&test, a.threshold));
    if train.len() < a.batch as usize {
        return Err(format!("{} training images do not fill one batch of {}", train.len(), a.batch).into());
    }
    let (h, w) = match train.sample_shape[..] {
        [1, h, w] | [h, w] => (h, w),
        ref s => return Err(format!("expected grayscale images, got samples of shape {s:?}").into()),
    };
    let (b, d, hid) = (a.batch as usize, train.sample_len(), a.hidden as usize);
    let e = 500.min(test.len());
    // The first test image of each class: the chains' starting points.
    let starts: Vec<usize> = (0..test.classes as u32)
        .filter_map(|c| test.labels.iter().position(|&l| l == c))
        .collect();
    let chains = starts.len().max(1);

    // One graph: the CD-k training step, the test reconstruction, and one Gibbs step of the
    // sampling chains, all over the same parameters.
    let mut g = Graph::new();
    let rbm = Rbm::new(&mut g, "rbm", d, hid)?;
    let v = g.input("v", [b, d])?;
    let cd = if a.pcd {
        let chain = g.input("chain", [b, d])?;
        rbm.persistent_contrastive_divergence(&mut g, v, chain, a.k as usize)?
    } else {
        rbm.contrastive_divergence(&mut g, v, a.k as usize)?
    };
    let grads = backward(&mut g, cd.loss)?;
    let ve = g.input("ve", [e, d])?;
    let recon = rbm.reconstruct(&mut g, ve)?;
    let vs = g.input("vs", [chains, d])?;
    let gibbs = rbm.gibbs(&mut g, vs)?;

    let mut store = ParamStore::new(dev, &g, a.seed)?;
    let opt = Optimizer::momentum(a.lr, a.momentum);
    let mut step = Program::compile(
        &g,
        &mut store,
        &[cd.loss, cd.v_model],
        Some(Training::new(&grads, &opt)),
    )?;
    step.set_seed(a.seed);
    if a.pcd {
        step.carry(cd.v_model, "chain")?;
    }
    let mut eval = Program::compile(&g, &mut store, &[recon], None)?;
    let mut sample = Program::compile(&g, &mut store, &[gibbs.v_probs, gibbs.v], None)?;

    let mut recon_error = || -> kiln::Result<f32> {
        let mut sse = 0.0f64;
        let mut xb = vec![0f32; e * d];
        for rows in test.images.chunks(e * d) {
            xb[..rows.len()].copy_from_slice(rows);
            xb[rows.len()..].fill(0.0);
            let out = eval.run(&[("ve", Feed::F32(&xb))])?;
            let r = &out.get(recon)?.data[..rows.len()];
            sse += r.iter().zip(rows).map(|(p, x)| ((p - x) as f64).powi(2)).sum::<f64>();
        }
        Ok((sse / test.images.len() as f64) as f32)
    };
    eprintln!(
        "rbm: {} binarised training images, {d} visible × {hid} hidden units, {}CD-{}, {} epochs, SGD lr {} momentum {}, on {}",
        train.len(),
        if a.pcd { "persistent " } else { "" },
        a.k,
        a.epochs,
        a.lr,
        a.momentum,
        dev.info().backend
    );
    let mut errors = vec![recon_error()?];
    println!("{:>5} {:>22} {:>9}", "epoch", "test reconstruction", "seconds");
    println!("{:>5} {:>22.5} {:>9}", 0, errors[0], "");
    let start = Instant::now();
    let mut xb = vec![0f32; b * d];
    let mut yb = vec![0u32; b];
    for epoch in 0..a.epochs {
        let mut idx: Vec<usize> = (0..train.len()).collect();
        Rng::new(a.seed ^ (epoch + 1).wrapping_mul(0x9e37_79b9)).shuffle(&mut idx);
        for (i, chunk) in idx.chunks_exact(b).enumerate() {
            train.gather(chunk, &mut xb, &mut yb)?;
            if a.pcd && epoch == 0 && i == 0 {
                // The persistent chains start at the first batch.
                step.run(&[("v", Feed::F32(&xb)), ("chain", Feed::F32(&xb))])?;
            } else {
                step.run(&[("v", Feed::F32(&xb))])?;
            }
        }
        errors.push(recon_error()?);
        println!(
            "{:>5} {:>22.5} {:>9.1}",
            epoch + 1,
            errors[errors.len() - 1],
            start.elapsed().as_secs_f64()
        );
    }
    let train_secs = start.elapsed().as_secs_f64();

    // Sampling: one chain per class from its first test image, a fresh seed every step (an
    // inference program draws the same numbers run after run until its seed changes).
    let cols = columns(a.gibbs);
    let mut state: Vec<f32> = starts
        .iter()
        .flat_map(|&i| test.images[i * d..(i + 1) * d].to_vec())
        .collect();
    let mut shown: Vec<Vec<f32>> = vec![state.clone()];
    for t in 1..=a.gibbs {
        sample.set_seed(a.seed.wrapping_mul(1_000_003).wrapping_add(t));
        let out = sample.run(&[("vs", Feed::F32(&state))])?;
        state = out.get(gibbs.v)?.data.clone();
        if cols.contains(&t) {
            shown.push(out.get(gibbs.v_probs)?.data.clone());
        }
    }
    // Row r is chain r; column c the chain after cols[c] steps.
    let cells: Vec<&[f32]> = (0..chains)
        .flat_map(|r| shown.iter().map(move |s| &s[r * d..(r + 1) * d]))
        .collect();
    kiln::image::grid(&cells, h, w, cols.len(), 2)?
        .scaled(2)
        .save_png(&a.image)?;
    println!(
        "wrote {}: {chains} Gibbs chains (rows) from the first test image of each digit, after {:?} steps (columns)",
        a.image.display(),
        cols
    );
    let errs: Vec<String> = errors.iter().map(|e| format!("{e:.5}")).collect();
    Ok(format!(
        "{{\"example\":\"rbm\",\"train_images\":{},\"test_images\":{},\"visible\":{d},\"hidden\":{hid},\"k\":{},\"persistent\":{},\"epochs\":{},\"test_reconstruction_mse\":[{}],\"seconds\":{train_secs:.1},\"gibbs_steps\":{},\"image\":\"{}\",\"device\":\"{}\",\"seed\":{}}}",
        train.len(),
        test.len(),
        a.k,
        a.pcd,
        a.epochs,
        errs.join(","),
        a.gibbs,
        json_escape(&a.image.display().to_string()),
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
            eprintln!("rbm: {e}");
            std::process::exit(1);
        }
    }
}
