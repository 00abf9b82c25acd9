//! Transfer learning: pre-train a CNN on MNIST digits 0–4, then reuse its layers under a new
//! head for the digits 5–9 trained on 1% of their images — the convolutions frozen (default) or
//! the whole trunk frozen — and compare with the same network trained from scratch on that 1%.
//!
//! cargo run --release --example transfer -- --help
//!
//! Prints a table of test accuracies on the digits 5–9 and ends with a JSON line.

use clap::Parser;
use kiln::data::{load_mnist, Dataset};
use kiln::nn::{self, Conv2d, Linear};
use kiln::train::{FitConfig, Trainer};
use kiln::{Backend, Graph, NodeId, Optimizer};
use std::path::PathBuf;

/// Pre-train on digits 0–4, fine-tune a new head on 1% of digits 5–9, compare with scratch.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Epochs of pre-training on the digits 0–4.
    #[arg(long, default_value_t = 1)]
    pretrain_epochs: usize,
    /// Epochs on the small target set (fine-tuning and from scratch alike).
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    /// Percent of the digits 5–9 training images the target task gets.
    #[arg(long, default_value_t = 1.0, value_parser = percent)]
    percent: f32,
    /// Seed of the initial weights, the target subset and the shuffles.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// What stays frozen while fine-tuning: the convolutions only (the dense layers and the new
    /// head train), or the whole trunk (only the new head trains).
    #[arg(long, value_enum, default_value_t = Freeze::Convs)]
    freeze: Freeze,
    /// A directory with MNIST's four IDX files.
    #[arg(long, default_value_os_t = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist")))]
    data: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Freeze {
    Convs,
    Trunk,
}

fn percent(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if v > 0.0 && v <= 100.0 => Ok(v),
        _ => Err(format!("`{s}` is not a percentage in (0, 100]")),
    }
}

/// The layers shared by both tasks: LeNet-5 up to its 84-unit layer, `(N, 1, 28, 28)` → `(N, 84)`.
const TRUNK: [&str; 8] = [
    "conv1.w", "conv1.b", "conv2.w", "conv2.b", "fc1.w", "fc1.b", "fc2.w", "fc2.b",
];

fn trunk(g: &mut Graph, x: NodeId) -> kiln::Result<NodeId> {
    let h = Conv2d::new(g, "conv1", 1, 6, 5, 1, 2)?.forward(g, x)?;
    let h = g.relu(h)?;
    let h = g.max_pool2d(h, [2, 2], [2, 2], [0, 0])?;
    let h = Conv2d::new(g, "conv2", 6, 16, 5, 1, 0)?.forward(g, h)?;
    let h = g.relu(h)?;
    let h = g.max_pool2d(h, [2, 2], [2, 2], [0, 0])?;
    let h = nn::flatten(g, h)?;
    let h = Linear::new(g, "fc1", 400, 120)?.forward(g, h)?;
    let h = g.relu(h)?;
    let h = Linear::new(g, "fc2", 120, 84)?.forward(g, h)?;
    g.relu(h)
}

/// The images whose label is in `lo..lo + 5`, relabelled `0..5`.
fn digits(d: &Dataset, lo: u32) -> kiln::Result<Dataset> {
    let idx: Vec<usize> = (0..d.len()).filter(|&i| (lo..lo + 5).contains(&d.labels[i])).collect();
    let mut s = d.select(&idx)?;
    s.labels.iter_mut().for_each(|l| *l -= lo);
    s.classes = 5;
    Ok(s)
}

fn run<B: Backend>(b: &B, a: &Args) -> Result<String, Box<dyn std::error::Error>> {
    let (mut train, mut test) = load_mnist(&a.data)?;
    let (mean, std) = train.stats();
    train.normalize(mean, std);
    test.normalize(mean, std);
    let source = digits(&train, 0)?;
    let target_all = digits(&train, 5)?;
    let n = ((target_all.len() as f32 * a.percent / 100.0).round() as usize).max(1);
    let (_, target) = target_all.split(n, a.seed)?;
    let target_test = digits(&test, 5)?;
    let batch = 32.min(target.len());
    let opt = Optimizer::adam(1e-3);
    eprintln!(
        "source: {} images of digits 0-4; target: {} images of digits 5-9 ({}%); target test: {}",
        source.len(),
        target.len(),
        a.percent,
        target_test.len()
    );

    // 1. Pre-train the trunk with a head for the digits 0–4.
    let source_model = |g: &mut Graph, x: NodeId, _: bool| {
        let h = trunk(g, x)?;
        Linear::new(g, "head_0_4", 84, 5)?.forward(g, h)
    };
    let mut pre = Trainer::classifier(b, &source.sample_shape, 5, 64, &source_model, None, &opt, a.seed)?;
    let cfg = |epochs| FitConfig {
        epochs,
        seed: a.seed,
        progress: false,
        ..Default::default()
    };
    pre.fit(&source, None, &cfg(a.pretrain_epochs))?;
    let source_acc = pre.evaluate(&digits(&test, 0)?)?.accuracy;
    eprintln!("pre-trained on 0-4: {:.2}% on their test images", 100.0 * source_acc);

    // 2. Fine-tune: the pre-trained trunk (its frozen part untouched) under a new head for the
    //    digits 5–9.
    let frozen: &[&str] = match a.freeze {
        Freeze::Convs => &TRUNK[..4],
        Freeze::Trunk => &TRUNK,
    };
    let frozen_model = |g: &mut Graph, x: NodeId, _: bool| {
        let h = trunk(g, x)?;
        for p in frozen {
            g.set_trainable(p, false)?;
        }
        Linear::new(g, "head_5_9", 84, 5)?.forward(g, h)
    };
    let mut fine = Trainer::classifier(b, &target.sample_shape, 5, batch, &frozen_model, None, &opt, a.seed)?;
    for p in TRUNK {
        fine.store().set(p, &pre.store().get(p)?.data)?;
    }
    let trainable: usize = fine
        .graph()
        .params()
        .iter()
        .filter(|p| p.trainable)
        .map(|p| p.shape.numel())
        .sum();
    fine.fit(&target, None, &cfg(a.epochs))?;
    let fine_acc = fine.evaluate(&target_test)?.accuracy;

    // 3. The same network from scratch on the same images, every layer trained.
    let scratch_model = |g: &mut Graph, x: NodeId, _: bool| {
        let h = trunk(g, x)?;
        Linear::new(g, "head_5_9", 84, 5)?.forward(g, h)
    };
    let mut scratch = Trainer::classifier(b, &target.sample_shape, 5, batch, &scratch_model, None, &opt, a.seed)?;
    scratch.fit(&target, None, &cfg(a.epochs))?;
    let scratch_acc = scratch.evaluate(&target_test)?.accuracy;
    let all: usize = scratch.store().entries().iter().map(|e| e.shape.numel()).sum();

    println!(
        "test accuracy on the digits 5-9, trained on {} of their images:",
        target.len()
    );
    let what = match a.freeze {
        Freeze::Convs => "pre-trained, convolutions frozen, new head",
        Freeze::Trunk => "pre-trained trunk frozen, new head",
    };
    println!("  {what:<44} {:>8}", format!("{:.2}%", 100.0 * fine_acc));
    println!(
        "  {:<44} {:>8}",
        "same network from scratch",
        format!("{:.2}%", 100.0 * scratch_acc)
    );
    println!("  ({trainable} parameters trained in fine-tuning, {all} from scratch)");
    Ok(format!(
        "{{\"source_images\":{},\"target_images\":{},\"source_test_accuracy\":{:.6},\"fine_tuned_accuracy\":{:.6},\"scratch_accuracy\":{:.6},\"fine_tuned_trainable_parameters\":{},\"scratch_trainable_parameters\":{},\"device\":\"{}\"}}",
        source.len(),
        target.len(),
        source_acc,
        fine_acc,
        scratch_acc,
        trainable,
        all,
        b.info().backend
    ))
}

fn main() {
    let a = Args::parse();
    let result = match kiln::Device::best() {
        Ok(kiln::Device::Cpu(c)) => run(&c, &a),
        Ok(kiln::Device::Gpu(g)) => run(&g, &a),
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(json) => println!("{json}"),
        Err(e) => {
            eprintln!("transfer: {e}");
            std::process::exit(1);
        }
    }
}
