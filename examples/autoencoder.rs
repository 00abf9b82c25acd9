//! Dense autoencoders on MNIST: untied (the decoder has its own weights), tied (the decoder
//! multiplies by the encoder's transposed matrices: half the weights) and denoising (tied,
//! trained to rebuild clean images from ones with 30% of their pixels zeroed on the device).
//!
//! ```text
//! cargo run --release --example autoencoder
//! cargo run --release --example autoencoder -- --help
//! ```
//!
//! Prints each model's parameter counts and its reconstruction error (mean squared error per
//! pixel, pixels in [0, 1]) on the test images, clean and with 30% of their pixels masked; writes
//! a PNG grid and ends with a JSON line. The grid's columns are the first test image of each
//! digit; its rows: (1) the image, reconstructed by (2) the untied, (3) the tied and (4) the
//! denoising model; (5) the image with pixels masked, reconstructed from that by (6) the tied and
//! (7) the denoising model.

mod common;

use clap::Parser;
use common::{json_escape, positive};
use kiln::data::{load_mnist, Dataset};
use kiln::nn::DenseAutoencoder;
use kiln::rng::Rng;
use kiln::{backward, Backend, Feed, Graph, NodeId, Optimizer, ParamStore, Program, Training, UnaryOp};
use std::path::PathBuf;
use std::time::Instant;

/// Train untied, tied and denoising autoencoders on MNIST and compare their reconstructions.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Training images (the first N of MNIST's 60,000).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    train: u64,
    /// Test images (the first N of MNIST's 10,000).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    test: u64,
    /// Passes over the training images, for each model.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    epochs: u64,
    /// Mini-batch size (a final partial batch of each epoch is skipped).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=4096))]
    batch: u64,
    /// Layer sizes after the 784 inputs, down to the code, comma-separated.
    #[arg(long, default_value = "256,64", value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..=4096), num_args = 1..)]
    sizes: Vec<u64>,
    /// The activation after every layer but the last (the reconstruction is a sigmoid).
    #[arg(long, value_enum, default_value_t = Activation::Relu)]
    activation: Activation,
    /// Fraction of input pixels the denoising model's training (and the masked test) zeroes.
    #[arg(long, default_value_t = 0.3, value_parser = open_fraction)]
    masking: f32,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 2e-3, value_parser = positive)]
    lr: f32,
    /// Seed of the initial weights, the batch order and the test masks.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// auto: a real GPU if there is one, else the CPU backend.
    #[arg(long, env = "KILN_DEVICE", default_value = "auto", value_parser = ["auto", "cpu", "gpu"])]
    device: String,
    /// Where to write the grid of originals and reconstructions (PNG).
    #[arg(long, default_value_os_t = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/autoencoder.png")))]
    image: PathBuf,
    /// A directory with MNIST's four IDX files.
    #[arg(long, default_value_os_t = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist")))]
    data: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Activation {
    Relu,
    Sigmoid,
    Tanh,
}

impl Activation {
    fn op(self) -> UnaryOp {
        match self {
            Activation::Relu => UnaryOp::Relu,
            Activation::Sigmoid => UnaryOp::Sigmoid,
            Activation::Tanh => UnaryOp::Tanh,
        }
    }
}

fn open_fraction(s: &str) -> Result<f32, String> {
    common::parse_f32(s, |v| v > 0.0 && v < 1.0, "a fraction in (0, 1)")
}

type BoxError = Box<dyn std::error::Error>;

/// One of the three models.
#[derive(Clone, Copy)]
struct Kind {
    name: &'static str,
    tied: bool,
    denoising: bool,
}

const KINDS: [Kind; 3] = [
    Kind {
        name: "untied",
        tied: false,
        denoising: false,
    },
    Kind {
        name: "tied",
        tied: true,
        denoising: false,
    },
    Kind {
        name: "denoising (tied)",
        tied: true,
        denoising: true,
    },
];

/// What one trained model reports.
struct Trained {
    weights: usize,
    params: usize,
    mse_clean: f32,
    mse_masked: f32,
    train_loss: f32,
    secs: f64,
    /// Reconstructions of the picture's originals, then of their masked versions.
    shown: Vec<Vec<f32>>,
}

/// The sum of squared differences of `a` and `b`.
fn sse(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum()
}

fn train_one<B: Backend>(
    dev: &B,
    a: &Args,
    k: Kind,
    train: &Dataset,
    test: &Dataset,
    masked: &[f32],
    shown: &[usize],
) -> Result<Trained, BoxError> {
    let (b, d) = (a.batch as usize, train.sample_len());
    let e = 500.min(test.len());
    let mut sizes = vec![d];
    sizes.extend(a.sizes.iter().map(|&s| s as usize));
    let mut g = Graph::new();
    let ae = DenseAutoencoder::new(&mut g, "ae", &sizes, k.tied)?.with_activation(a.activation.op());
    let x = g.input("x", [b, d])?;
    let (_, loss) = ae.loss(&mut g, x, k.denoising.then_some(a.masking))?;
    let grads = backward(&mut g, loss)?;
    let xe = g.input("xe", [e, d])?;
    let (_, logits) = ae.forward(&mut g, xe)?;
    let recon: NodeId = g.sigmoid(logits)?;
    let mut store = ParamStore::new(dev, &g, a.seed)?;
    let opt = Optimizer::adam(a.lr);
    let mut step = Program::compile(&g, &mut store, &[loss], Some(Training::new(&grads, &opt)))?;
    let mut eval = Program::compile(&g, &mut store, &[recon], None)?;

    let start = Instant::now();
    let (mut xb, mut yb) = (vec![0f32; b * d], vec![0u32; b]);
    let mut last = f32::NAN;
    for epoch in 0..a.epochs {
        let mut idx: Vec<usize> = (0..train.len()).collect();
        Rng::new(a.seed ^ (epoch + 1).wrapping_mul(0x9e37_79b9)).shuffle(&mut idx);
        let (mut sum, mut steps) = (0.0f64, 0usize);
        for chunk in idx.chunks_exact(b) {
            train.gather(chunk, &mut xb, &mut yb)?;
            sum += step.run(&[("x", Feed::F32(&xb))])?.scalar(loss)? as f64;
            steps += 1;
        }
        last = (sum / steps.max(1) as f64) as f32;
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "  {}: training loss {last:.4} after {} epochs ({secs:.0} s)",
        k.name, a.epochs
    );

    // Reconstruct every test image, clean and masked, `e` at a time (the last batch padded).
    let mut reconstruct = |images: &[f32]| -> kiln::Result<Vec<f32>> {
        let mut out = Vec::with_capacity(images.len());
        let mut xb = vec![0f32; e * d];
        for rows in images.chunks(e * d) {
            xb[..rows.len()].copy_from_slice(rows);
            xb[rows.len()..].fill(0.0);
            let r = eval.run(&[("xe", Feed::F32(&xb))])?;
            out.extend_from_slice(&r.get(recon)?.data[..rows.len()]);
        }
        Ok(out)
    };
    let clean = reconstruct(&test.images)?;
    let from_masked = reconstruct(masked)?;
    let n = test.images.len() as f64;
    let pick = |r: &[f32], i: usize| r[i * d..(i + 1) * d].to_vec();
    let mut picture: Vec<Vec<f32>> = shown.iter().map(|&i| pick(&clean, i)).collect();
    picture.extend(shown.iter().map(|&i| pick(&from_masked, i)));
    Ok(Trained {
        weights: ae.weight_count(&g),
        params: ae.parameter_count(&g),
        mse_clean: (sse(&clean, &test.images) / n) as f32,
        mse_masked: (sse(&from_masked, &test.images) / n) as f32,
        train_loss: last,
        secs,
        shown: picture,
    })
}

fn run<B: Backend>(dev: &B, a: &Args) -> Result<String, BoxError> {
    let (train, test) = load_mnist(&a.data)?;
    let (train, test) = (train.take(a.train as usize), test.take(a.test as usize));
    if train.len() < a.batch as usize {
        return Err(format!("{} training images do not fill one batch of {}", train.len(), a.batch).into());
    }
    let d = train.sample_len();
    let (h, w) = match train.sample_shape[..] {
        [1, h, w] | [h, w] => (h, w),
        ref s => return Err(format!("expected grayscale images, got samples of shape {s:?}").into()),
    };
    // The same masked test images for every model: each pixel zeroed with probability `masking`.
    let mut rng = Rng::new(a.seed ^ 0x6d61_736b);
    let masked: Vec<f32> = test
        .images
        .iter()
        .map(|&v| if rng.uniform() < a.masking { 0.0 } else { v })
        .collect();
    // The first test image of each class, in class order, for the picture.
    let shown: Vec<usize> = (0..test.classes as u32)
        .filter_map(|c| test.labels.iter().position(|&l| l == c))
        .collect();
    eprintln!(
        "autoencoder: {} training images, {} epochs, layers {d}-{}, {} test images, on {}",
        train.len(),
        a.epochs,
        a.sizes.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("-"),
        test.len(),
        dev.info().backend
    );
    let results = KINDS
        .iter()
        .map(|&k| train_one(dev, a, k, &train, &test, &masked, &shown))
        .collect::<Result<Vec<_>, _>>()?;

    println!(
        "{:<18} {:>9} {:>11} {:>14} {:>21}",
        "model",
        "weights",
        "parameters",
        "test MSE",
        format!("MSE from {:.0}% masked", 100.0 * a.masking)
    );
    for (k, r) in KINDS.iter().zip(&results) {
        println!(
            "{:<18} {:>9} {:>11} {:>14.5} {:>21.5}",
            k.name, r.weights, r.params, r.mse_clean, r.mse_masked
        );
    }
    println!(
        "tying the weights: {} → {} weights ({:.3}×), {} → {} parameters",
        results[0].weights,
        results[1].weights,
        results[1].weights as f64 / results[0].weights as f64,
        results[0].params,
        results[1].params
    );

    // Rows: originals; untied, tied, denoising reconstructions; masked; tied and denoising
    // reconstructions of the masked images.
    let s = shown.len();
    let mut rows: Vec<&[f32]> = shown.iter().map(|&i| &test.images[i * d..(i + 1) * d]).collect();
    for r in &results {
        rows.extend(r.shown[..s].iter().map(|v| v.as_slice()));
    }
    rows.extend(shown.iter().map(|&i| &masked[i * d..(i + 1) * d]));
    for r in &results[1..] {
        rows.extend(r.shown[s..].iter().map(|v| v.as_slice()));
    }
    kiln::image::grid(&rows, h, w, s.max(1), 2)?
        .scaled(2)
        .save_png(&a.image)?;
    println!(
        "wrote {} (rows: originals; untied, tied, denoising reconstructions; masked; tied and denoising reconstructions of the masked)",
        a.image.display()
    );

    let model = |k: &Kind, r: &Trained| {
        format!(
            "\"{}\":{{\"weights\":{},\"parameters\":{},\"test_mse\":{:.6},\"test_mse_from_masked\":{:.6},\"train_loss\":{:.5},\"seconds\":{:.1}}}",
            k.name.split(' ').next().unwrap_or(k.name),
            r.weights,
            r.params,
            r.mse_clean,
            r.mse_masked,
            r.train_loss,
            r.secs
        )
    };
    let models: Vec<String> = KINDS.iter().zip(&results).map(|(k, r)| model(k, r)).collect();
    Ok(format!(
        "{{\"example\":\"autoencoder\",\"train_images\":{},\"test_images\":{},\"epochs\":{},\"sizes\":[{d},{}],\"masking\":{},{},\"image\":\"{}\",\"device\":\"{}\",\"seed\":{}}}",
        train.len(),
        test.len(),
        a.epochs,
        a.sizes.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(","),
        a.masking,
        models.join(","),
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
            eprintln!("autoencoder: {e}");
            std::process::exit(1);
        }
    }
}
