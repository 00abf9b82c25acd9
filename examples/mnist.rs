//! Train LeNet-5 (or a small residual CNN) on MNIST and report test accuracy.
//!
//! cargo run --release --example mnist -- [--epochs 1] [--batch 64] [--lr 1e-3]
//!     [--optimizer adam|adamw|sgd|momentum|nesterov|rmsprop|adagrad] [--device auto|cpu|gpu]
//!     [--data DIR] [--limit N] [--val N] [--model lenet|resnet] [--seed S] [--patience P]
//!     [--precision f32|mixed] [--plan]
//!
//! `--precision mixed` trains with f16 activations and gradients, f32 master weights and
//! update, and dynamic loss scaling; `--plan` prints the compiled training program (every
//! kernel with its shapes, type, bytes and buffer) before training.
//!
//! Progress goes to stderr; the last line of stdout is a JSON object with the run's metrics.

use kiln::data::{load_mnist, Dataset};
use kiln::nn::{self, BatchNorm, Conv2d, Linear, ResidualBlock};
use kiln::train::{FitConfig, Precision, Trainer};
use kiln::{Backend, Graph, NodeId, Optimizer};
use std::path::PathBuf;

struct Args {
    epochs: usize,
    batch: usize,
    lr: f32,
    optimizer: String,
    device: String,
    data: PathBuf,
    limit: Option<usize>,
    val: usize,
    model: String,
    seed: u64,
    patience: Option<usize>,
    precision: Precision,
    plan: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        epochs: 1,
        batch: 64,
        lr: 1e-3,
        optimizer: "adam".into(),
        device: std::env::var("KILN_DEVICE").unwrap_or_else(|_| "auto".into()),
        data: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/mnist"),
        limit: None,
        val: 5000,
        model: "lenet".into(),
        seed: 1,
        patience: None,
        precision: Precision::F32,
        plan: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| v.parse::<f64>().map_err(|_| format!("{flag}: `{v}` is not a number"));
        match flag.as_str() {
            "--epochs" => a.epochs = num(val()?)? as usize,
            "--batch" => a.batch = num(val()?)? as usize,
            "--lr" => a.lr = num(val()?)? as f32,
            "--optimizer" => a.optimizer = val()?,
            "--device" => a.device = val()?,
            "--data" => a.data = PathBuf::from(val()?),
            "--limit" => a.limit = Some(num(val()?)? as usize),
            "--val" => a.val = num(val()?)? as usize,
            "--model" => a.model = val()?,
            "--seed" => a.seed = num(val()?)? as u64,
            "--patience" => a.patience = Some(num(val()?)? as usize),
            "--precision" => {
                a.precision = match val()?.as_str() {
                    "f32" => Precision::F32,
                    "mixed" => Precision::Mixed,
                    other => return Err(format!("--precision: `{other}` is not f32 or mixed")),
                }
            }
            "--plan" => a.plan = true,
            "-h" | "--help" => return Err("usage: see the comment at the top of examples/mnist.rs".into()),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

/// LeNet-5 (the library's `nn::lenet5`); it has no train/eval differences.
fn lenet(g: &mut Graph, x: NodeId, _train: bool) -> kiln::Result<NodeId> {
    nn::lenet5(g, x)
}

/// A small residual CNN: conv 3×3×16 + BN → two residual stages (16, then 32 at stride 2) →
/// global average pooling → FC 10.
fn resnet(g: &mut Graph, x: NodeId, train: bool) -> kiln::Result<NodeId> {
    let stem = Conv2d::same(g, "stem", 1, 16, 3)?.no_bias();
    let bn = BatchNorm::new(g, "stem_bn", 16)?;
    let b1 = ResidualBlock::new(g, "block1", 16, 16, 1)?;
    let b2 = ResidualBlock::new(g, "block2", 16, 32, 2)?;
    let fc = Linear::new(g, "fc", 32, 10)?;
    let h = stem.forward(g, x)?;
    let h = bn.forward(g, h, train)?;
    let h = g.relu(h)?;
    let h = g.max_pool2d(h, [2, 2], [2, 2], [0, 0])?; // (B, 16, 14, 14)
    let h = b1.forward(g, h, train)?;
    let h = b2.forward(g, h, train)?; // (B, 32, 7, 7)
    let h = g.global_avg_pool(h)?; // (B, 32)
    fc.forward(g, h)
}

fn optimizer(name: &str, lr: f32) -> Result<Optimizer, String> {
    Ok(match name {
        "adam" => Optimizer::adam(lr),
        "adamw" => Optimizer::adamw(lr, 1e-2),
        "sgd" => Optimizer::sgd(lr),
        "momentum" => Optimizer::momentum(lr, 0.9),
        "nesterov" => Optimizer::nesterov(lr, 0.9),
        "rmsprop" => Optimizer::rmsprop(lr),
        "adagrad" => Optimizer::adagrad(lr),
        other => return Err(format!("unknown optimizer `{other}`")),
    })
}

fn run<B: Backend>(
    backend: &B,
    a: &Args,
    train: &Dataset,
    val: Option<&Dataset>,
    test: &Dataset,
) -> Result<String, Box<dyn std::error::Error>> {
    let model: &dyn Fn(&mut Graph, NodeId, bool) -> kiln::Result<NodeId> = match a.model.as_str() {
        "lenet" => &lenet,
        "resnet" => &resnet,
        other => return Err(format!("unknown model `{other}` (lenet or resnet)").into()),
    };
    let opt = optimizer(&a.optimizer, a.lr)?;
    if a.batch == 0 || a.batch > train.len() {
        return Err(format!(
            "--batch {} must be between 1 and the {} training images",
            a.batch,
            train.len()
        )
        .into());
    }
    let t0 = std::time::Instant::now();
    let mut trainer = Trainer::classifier_with_precision(
        backend,
        &train.sample_shape,
        10,
        a.batch,
        model,
        None,
        &opt,
        a.seed,
        a.precision,
    )
    .map_err(|e| match e {
        kiln::Error::OutOfMemory(m) => format!("{m} This run has --batch {}.", a.batch).into(),
        e => Box::<dyn std::error::Error>::from(e),
    })?;
    if a.plan {
        eprintln!("{}", trainer.train_program().plan());
    }
    let info = backend.info();
    eprintln!(
        "{} on {} ({}): {} parameters, {} kernels per step, compiled in {:.2}s",
        a.model,
        info.adapter,
        info.backend,
        trainer.store().entries().iter().map(|e| e.shape.numel()).sum::<usize>(),
        trainer.kernels_per_step(),
        t0.elapsed().as_secs_f64()
    );
    let cfg = FitConfig {
        epochs: a.epochs,
        seed: a.seed,
        patience: a.patience,
        progress: true,
        ..Default::default()
    };
    let hist = trainer.fit(train, val, &cfg)?;
    let tm = trainer.evaluate(test)?;
    let last = hist.train.last().copied().unwrap_or_default();
    let vm = hist.validation.last().copied();
    let opt_num = |v: Option<f32>| v.map_or("null".to_string(), |v| format!("{v:.6}"));
    eprintln!("test loss {:.4}, test accuracy {:.2}%", tm.loss, 100.0 * tm.accuracy);
    Ok(format!(
        "{{\"model\":\"{}\",\"epochs\":{},\"batch\":{},\"optimizer\":\"{}\",\"lr\":{},\"train_samples\":{},\"train_loss\":{:.6},\"train_accuracy\":{:.6},\"validation_loss\":{},\"validation_accuracy\":{},\"test_loss\":{:.6},\"test_accuracy\":{:.6},\"samples_per_s\":{:.1},\"device\":\"{}\",\"adapter\":\"{}\",\"peak_bytes\":{},\"precision\":\"{}\",\"loss_scale\":{},\"skipped_updates\":{},\"stopped_early\":{}}}",
        a.model,
        hist.train.len(),
        a.batch,
        a.optimizer,
        a.lr,
        train.len(),
        last.loss,
        last.accuracy,
        opt_num(vm.map(|m| m.loss)),
        opt_num(vm.map(|m| m.accuracy)),
        tm.loss,
        tm.accuracy,
        hist.samples_per_s,
        info.backend,
        info.adapter.replace('"', "'"),
        trainer.peak_bytes(),
        a.precision.name(),
        opt_num(hist.loss_scale),
        hist.skipped_updates,
        hist.stopped_early
    ))
}

fn main() {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("mnist: {e}");
            std::process::exit(2);
        }
    };
    let result = (|| -> Result<String, Box<dyn std::error::Error>> {
        let (mut train, mut test) = load_mnist(&a.data)?;
        if let Some(n) = a.limit {
            train = train.take(n);
        }
        let (mut train, mut val) = if a.val > 0 && a.val < train.len() {
            let (t, v) = train.split(a.val, a.seed)?;
            (t, Some(v))
        } else {
            (train, None)
        };
        // Normalise with the training set's own statistics.
        let (mean, std) = train.stats();
        train.normalize(mean, std);
        test.normalize(mean, std);
        if let Some(v) = val.as_mut() {
            v.normalize(mean, std);
        }
        eprintln!(
            "MNIST from {}: {} train, {} validation, {} test",
            a.data.display(),
            train.len(),
            val.as_ref().map_or(0, |v| v.len()),
            test.len()
        );
        match kiln::Device::choose(&a.device)? {
            kiln::Device::Cpu(cpu) => run(&cpu, &a, &train, val.as_ref(), &test),
            kiln::Device::Gpu(gpu) => run(&gpu, &a, &train, val.as_ref(), &test),
        }
    })();
    match result {
        Ok(json) => println!("{json}"),
        Err(e) => {
            eprintln!("mnist: {e}");
            std::process::exit(1);
        }
    }
}
