//! Train LeNet-5 (or a small residual CNN) on MNIST and report test accuracy.
//!
//! cargo run --release --example mnist -- --help     # every flag with its default
//!
//! `--precision mixed` trains with f16 activations and gradients, f32 master weights and
//! update, and dynamic loss scaling; `--plan` prints the compiled training program (every
//! kernel with its shapes, type, bytes and buffer) before training.
//!
//! Progress goes to stderr; the last line of stdout is a JSON object with the run's metrics.

mod common;

use clap::{Parser, ValueEnum};
use common::{non_negative, positive};
use kiln::data::{load_mnist, Dataset};
use kiln::nn::{self, BatchNorm, Conv2d, Linear, ResidualBlock};
use kiln::train::{FitConfig, Precision, SaveTo, Trainer};
use kiln::{Backend, Graph, NodeId, Optimizer, Schedule};
use std::path::PathBuf;

/// Train LeNet-5 (or a small residual CNN) on MNIST and report test accuracy. Progress goes to
/// stderr; the last line of stdout is a JSON object with the run's metrics.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Passes over the training set (0 with --load: evaluate the checkpoint only).
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Samples per step.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-3, value_parser = positive)]
    lr: f32,
    /// Update rule.
    #[arg(long, value_enum, default_value_t = Opt::Adam)]
    optimizer: Opt,
    /// Learning-rate schedule over the run's updates.
    #[arg(long, value_enum, default_value_t = Sched::Constant)]
    schedule: Sched,
    /// L2 weight decay on weights (decoupled for adamw, whose default is 0.01).
    #[arg(long, value_parser = non_negative)]
    weight_decay: Option<f32>,
    /// auto: a real GPU if there is one, else the CPU backend.
    #[arg(long, value_enum, env = "KILN_DEVICE", default_value_t = Dev::Auto)]
    device: Dev,
    /// A directory with MNIST's four IDX files (gzipped or not).
    #[arg(long, default_value_os_t = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist")))]
    data: PathBuf,
    /// Train on the first N training images only.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
    /// Hold out N training images for validation (0: none).
    #[arg(long, default_value_t = 5000)]
    val: usize,
    /// The network.
    #[arg(long, value_enum, default_value_t = Model::Lenet)]
    model: Model,
    /// Seed of the initial weights and the shuffles.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Stop after this many epochs without a better validation loss (needs --val > 0).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    patience: Option<u64>,
    /// f32, or mixed: f16 activations and gradients, f32 master weights, loss scaling.
    #[arg(long, value_enum, default_value_t = Prec::F32)]
    precision: Prec,
    /// Print the compiled training program before training.
    #[arg(long)]
    plan: bool,
    /// Write the training graph (forward, backward and evaluation nodes) as Graphviz DOT here.
    #[arg(long)]
    dot: Option<PathBuf>,
    /// Save a checkpoint (weights, optimiser state, position) here after each epoch.
    #[arg(long)]
    save: Option<PathBuf>,
    /// Start from this checkpoint: continue its run up to --epochs, or only evaluate it with
    /// --epochs 0.
    #[arg(long)]
    load: Option<PathBuf>,
    /// Write metrics here after each epoch (the directory is created if missing): steps.csv,
    /// epochs.csv, and the curves loss.svg and accuracy.svg.
    #[arg(long)]
    metrics: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Opt {
    Adam,
    Adamw,
    Sgd,
    Momentum,
    Nesterov,
    Rmsprop,
    Adagrad,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Sched {
    Constant,
    /// ×0.1 after half of the updates.
    Step,
    /// Cosine decay to lr/100 over the run.
    Cosine,
    /// 5% linear warm-up, then cosine.
    WarmupCosine,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Dev {
    Auto,
    Cpu,
    Gpu,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Model {
    Lenet,
    Resnet,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Prec {
    F32,
    Mixed,
}

/// A value as it is spelled on the command line.
fn flag(v: impl ValueEnum) -> String {
    v.to_possible_value()
        .map_or_else(String::new, |p| p.get_name().to_string())
}

impl Model {
    fn name(self) -> &'static str {
        match self {
            Model::Lenet => "lenet",
            Model::Resnet => "resnet",
        }
    }
}

/// LeNet-5 (the library's `nn::lenet5_for`, sized to the images and classes); it has no
/// train/eval differences.
fn lenet(g: &mut Graph, x: NodeId, classes: usize) -> kiln::Result<NodeId> {
    nn::lenet5_for(g, x, classes)
}

/// A small residual CNN: conv 3×3×16 + BN → two residual stages (16, then 32 at stride 2) →
/// global average pooling → FC to the classes.
fn resnet(g: &mut Graph, x: NodeId, train: bool, classes: usize) -> kiln::Result<NodeId> {
    let channels = g.shape(x).dims()[1];
    let stem = Conv2d::same(g, "stem", channels, 16, 3)?.no_bias();
    let bn = BatchNorm::new(g, "stem_bn", 16)?;
    let b1 = ResidualBlock::new(g, "block1", 16, 16, 1)?;
    let b2 = ResidualBlock::new(g, "block2", 16, 32, 2)?;
    let fc = Linear::new(g, "fc", 32, classes)?;
    let h = stem.forward(g, x)?;
    let h = bn.forward(g, h, train)?;
    let h = g.relu(h)?;
    let h = g.max_pool2d(h, [2, 2], [2, 2], [0, 0])?; // (B, 16, 14, 14)
    let h = b1.forward(g, h, train)?;
    let h = b2.forward(g, h, train)?; // (B, 32, 7, 7)
    let h = g.global_avg_pool(h)?; // (B, 32)
    fc.forward(g, h)
}

/// The optimiser and schedule the flags ask for, over `updates` updates in all.
fn optimizer(a: &Args, updates: u64) -> Optimizer {
    let lr = a.lr;
    let opt = match a.optimizer {
        Opt::Adam => Optimizer::adam(lr),
        Opt::Adamw => Optimizer::adamw(lr, a.weight_decay.unwrap_or(1e-2)),
        Opt::Sgd => Optimizer::sgd(lr),
        Opt::Momentum => Optimizer::momentum(lr, 0.9),
        Opt::Nesterov => Optimizer::nesterov(lr, 0.9),
        Opt::Rmsprop => Optimizer::rmsprop(lr),
        Opt::Adagrad => Optimizer::adagrad(lr),
    };
    let opt = match (a.optimizer, a.weight_decay) {
        (Opt::Adamw, _) | (_, None) => opt,
        (_, Some(wd)) => opt.weight_decay(wd),
    };
    let total = updates.max(1);
    let cosine = Schedule::Cosine {
        lr,
        min_lr: lr / 100.0,
        steps: total,
    };
    opt.schedule(match a.schedule {
        Sched::Constant => Schedule::Constant(lr),
        Sched::Step => Schedule::StepDecay {
            lr,
            every: (total / 2).max(1),
            gamma: 0.1,
        },
        Sched::Cosine => cosine,
        Sched::WarmupCosine => cosine.with_warmup((total / 20).max(1)),
    })
}

fn run<B: Backend>(
    backend: &B,
    a: &Args,
    train: &Dataset,
    val: Option<&Dataset>,
    test: &Dataset,
) -> Result<String, Box<dyn std::error::Error>> {
    // The classes and the image size come from the data.
    let classes = train.classes;
    let lenet_model = |g: &mut Graph, x: NodeId, _: bool| lenet(g, x, classes);
    let resnet_model = |g: &mut Graph, x: NodeId, train: bool| resnet(g, x, train, classes);
    let model: &dyn Fn(&mut Graph, NodeId, bool) -> kiln::Result<NodeId> = match a.model {
        Model::Lenet => &lenet_model,
        Model::Resnet => &resnet_model,
    };
    let batch = a.batch as usize;
    let opt = optimizer(a, (a.epochs * (train.len() / batch)) as u64);
    let t0 = std::time::Instant::now();
    let precision = match a.precision {
        Prec::F32 => Precision::F32,
        Prec::Mixed => Precision::Mixed,
    };
    let mut trainer = Trainer::classifier_with_precision(
        backend,
        &train.sample_shape,
        classes,
        batch,
        model,
        None,
        &opt,
        a.seed,
        precision,
    )
    .map_err(|e| match e {
        kiln::Error::OutOfMemory(m) => format!("{m} This run has --batch {}.", a.batch).into(),
        e => Box::<dyn std::error::Error>::from(e),
    })?;
    let start_epoch = match &a.load {
        Some(path) => {
            let done = trainer.load(path, a.model.name())?;
            eprintln!("loaded {} ({done} epochs done)", path.display());
            done
        }
        None => 0,
    };
    if a.epochs > 0 && start_epoch > a.epochs {
        return Err(format!(
            "the checkpoint has {start_epoch} epochs done, more than --epochs {}",
            a.epochs
        )
        .into());
    }
    if a.plan {
        eprintln!("{}", trainer.train_program().plan());
    }
    if let Some(path) = &a.dot {
        std::fs::write(path, trainer.graph().to_dot())?;
        eprintln!(
            "wrote {} (render it with `dot -Tsvg {} > graph.svg`)",
            path.display(),
            path.display()
        );
    }
    let info = backend.info();
    eprintln!(
        "{} on {} ({}): {} parameters, {} kernels per step, compiled in {:.2}s",
        a.model.name(),
        info.adapter,
        info.backend,
        trainer.store().entries().iter().map(|e| e.shape.numel()).sum::<usize>(),
        trainer.kernels_per_step(),
        t0.elapsed().as_secs_f64()
    );
    let compile_s = t0.elapsed().as_secs_f64();
    let hist = if a.epochs > start_epoch {
        let cfg = FitConfig {
            epochs: a.epochs,
            seed: a.seed,
            patience: a.patience.map(|p| p as usize),
            progress: true,
            start_epoch,
            save: a.save.as_ref().map(|path| SaveTo {
                path: path.clone(),
                model: a.model.name().into(),
            }),
            metrics: a.metrics.clone(),
        };
        trainer.fit(train, val, &cfg)?
    } else {
        kiln::train::History::default()
    };
    if let Some(dir) = a.metrics.as_ref().filter(|_| !hist.train.is_empty()) {
        eprintln!(
            "wrote {}/{{steps.csv, epochs.csv, loss.svg, accuracy.svg}}",
            dir.display()
        );
    }
    let tm = trainer.evaluate(test)?;
    let last = hist.train.last().copied().unwrap_or_default();
    let vm = hist.validation.last().copied();
    let opt_num = |v: Option<f32>| v.map_or("null".to_string(), |v| format!("{v:.6}"));
    eprintln!("test loss {:.4}, test accuracy {:.2}%", tm.loss, 100.0 * tm.accuracy);
    Ok(format!(
        "{{\"model\":\"{}\",\"epochs\":{},\"batch\":{},\"optimizer\":\"{}\",\"schedule\":\"{}\",\"lr\":{},\"train_samples\":{},\"train_loss\":{},\"train_accuracy\":{},\"validation_loss\":{},\"validation_accuracy\":{},\"test_loss\":{:.6},\"test_accuracy\":{:.6},\"samples_per_s\":{:.1},\"device\":\"{}\",\"adapter\":\"{}\",\"peak_bytes\":{},\"precision\":\"{}\",\"loss_scale\":{},\"skipped_updates\":{},\"stopped_early\":{},\"first_step_s\":{}}}",
        a.model.name(),
        start_epoch + hist.train.len(),
        a.batch,
        flag(a.optimizer),
        flag(a.schedule),
        a.lr,
        train.len(),
        opt_num(hist.train.last().map(|_| last.loss)),
        opt_num(hist.train.last().map(|_| last.accuracy)),
        opt_num(vm.map(|m| m.loss)),
        opt_num(vm.map(|m| m.accuracy)),
        tm.loss,
        tm.accuracy,
        hist.samples_per_s,
        info.backend,
        info.adapter.replace('"', "'"),
        trainer.peak_bytes(),
        precision.name(),
        opt_num(hist.loss_scale),
        hist.skipped_updates,
        hist.stopped_early,
        // Time to first step: building and compiling the programs, then the first step.
        hist.first_step_s.map_or("null".into(), |f| format!("{:.3}", compile_s + f))
    ))
}

fn main() {
    let a = Args::parse();
    let result = (|| -> Result<String, Box<dyn std::error::Error>> {
        // Everything the flags decide is checked before anything is compiled or allocated.
        if a.patience.is_some() && a.val == 0 {
            return Err("--patience needs a validation set (--val > 0)".into());
        }
        if a.epochs == 0 && a.load.is_none() {
            return Err("--epochs 0 only evaluates a checkpoint: give --load PATH".into());
        }
        if let Some(dir) = &a.metrics {
            if a.epochs == 0 {
                return Err("--metrics records training: it needs --epochs > 0".into());
            }
            kiln::metrics::prepare_dir(dir).map_err(|e| format!("--metrics: {e}"))?;
        }
        let (mut train, mut test) = load_mnist(&a.data)?;
        if let Some(n) = a.limit {
            train = train.take(n as usize);
        }
        if a.val >= train.len() {
            return Err(format!(
                "--val {} leaves no training images (the training set has {})",
                a.val,
                train.len()
            )
            .into());
        }
        let (mut train, mut val) = if a.val > 0 {
            let (t, v) = train.split(a.val, a.seed)?;
            (t, Some(v))
        } else {
            (train, None)
        };
        if a.batch as usize > train.len() {
            return Err(format!(
                "--batch {} must be at most the {} training images",
                a.batch,
                train.len()
            )
            .into());
        }
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
        let device = match a.device {
            Dev::Auto => "auto",
            Dev::Cpu => "cpu",
            Dev::Gpu => "gpu",
        };
        match kiln::Device::choose(device)? {
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
