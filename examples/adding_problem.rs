//! The adding problem (Hochreiter & Schmidhuber 1997): a sequence of T random numbers in
//! [0, 1), two of them marked (one in each half); the target is the sum of the two marked
//! numbers. Always answering 1 scores a mean squared error of about 0.167; solving it means
//! carrying two numbers across up to T steps — the vanishing-gradient story, measured.
//!
//! ```text
//! cargo run --release --example adding_problem              # RNN and LSTM at T = 50 and 100
//! cargo run --release --example adding_problem -- --steps 500 --lengths 20
//! ```
//!
//! For each model and length it trains the same budget (hidden 64, Adam 1e-2, batch 64,
//! gradients clipped to norm 1, the LSTM's forget-gate bias starting at 1) and prints the test MSE on 1000 fixed sequences and
//! ‖∂L/∂x₁‖, the gradient of the loss with respect to the first input, averaged over the test
//! batch: how much the first steps can still learn from the loss at the end.

mod common;

use clap::Parser;
use common::{finite, positive};
use kiln::nn::{Cell, Linear, Recurrent};
use kiln::rng::Rng;
use kiln::{backward, gradients, loss, Backend, Feed, Graph, Init, Optimizer, ParamStore, Program, Training};
use std::time::Instant;

/// RNN vs LSTM on the adding problem.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Optimiser steps per model and length.
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u64).range(1..))]
    steps: u64,
    /// Sequence lengths, comma-separated (each at least 2).
    #[arg(long, default_value = "50,100", value_delimiter = ',', value_parser = clap::value_parser!(u64).range(2..))]
    lengths: Vec<u64>,
    /// Hidden units.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    hidden: u64,
    /// Sequences per step.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-2, value_parser = positive)]
    lr: f32,
    /// The LSTM's forget-gate bias at the start (Jozefowicz et al. 2015: 1 lets it remember from
    /// the first step); 0 keeps the default initialisation.
    #[arg(long, default_value_t = 1.0, value_parser = finite)]
    forget_bias: f32,
    /// Seed of the weights and the data.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// auto: a real GPU if there is one, else the CPU backend.
    #[arg(long, env = "KILN_DEVICE", default_value = "auto", value_parser = ["auto", "cpu", "gpu"])]
    device: String,
}

/// `n` sequences of length `t`, time-major `(t, n, 2)`, and their targets `(n, 1)`.
fn batch(rng: &mut Rng, t: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
    let mut x = vec![0f32; t * n * 2];
    let mut y = vec![0f32; n];
    for b in 0..n {
        let first = rng.below(t / 2);
        let second = t / 2 + rng.below(t - t / 2);
        for s in 0..t {
            let v = rng.uniform();
            x[(s * n + b) * 2] = v;
            if s == first || s == second {
                x[(s * n + b) * 2 + 1] = 1.0;
                y[b] += v;
            }
        }
    }
    (x, y)
}

struct Outcome {
    mse: f32,
    grad_first: f32,
    seconds: f64,
}

fn train<B: Backend>(dev: &B, a: &Args, cell: Cell, t: usize) -> kiln::Result<Outcome> {
    let (n, h) = (a.batch as usize, a.hidden as usize);
    let test_n = 1000;
    let mut g = Graph::new();
    let rnn = Recurrent::new(&mut g, "rnn", cell, 2, h, 1)?;
    let head = Linear::with_inits(
        &mut g,
        "head",
        h,
        1,
        Init::torch_default(),
        Some(Init::bias_for_fan_in(h)),
    )?;
    let build = |g: &mut Graph, tag: &str, n: usize| -> kiln::Result<_> {
        let x = g.input(&format!("{tag}.x"), [t, n, 2])?;
        let y = g.input(&format!("{tag}.y"), [n, 1])?;
        let o = rnn.forward(g, x, None, None)?;
        let last = g.slice(o.output, 0, t - 1, t)?;
        let last = g.reshape(last, [n, h])?;
        let pred = head.forward(g, last)?;
        Ok((x, y, loss::mse(g, pred, y)?))
    };
    let (_, _, train_loss) = build(&mut g, "train", n)?;
    let grads = backward(&mut g, train_loss)?;
    let (tx, _, test_loss) = build(&mut g, "test", test_n)?;
    let dx = gradients(&mut g, test_loss, &[tx])?[0].expect("the loss depends on the inputs");
    let mut store = ParamStore::new(dev, &g, a.seed)?;
    if cell == Cell::Lstm && a.forget_bias != 0.0 {
        // Gates are i, f, g, o: the forget gate's biases are rows H..2H of b_ih (set) and b_hh
        // (zeroed), so it starts at σ(forget_bias).
        for (name, v) in [("rnn.bias_ih_l0", a.forget_bias), ("rnn.bias_hh_l0", 0.0)] {
            let mut b = store.get(name)?.data;
            b[h..2 * h].fill(v);
            store.set(name, &b)?;
        }
    }
    let opt = Optimizer::adam(a.lr).clip_norm(1.0);
    let mut prog = Program::compile(&g, &mut store, &[train_loss], Some(Training::new(&grads, &opt)))?;
    let mut rng = Rng::new(a.seed ^ 0xadd);
    let start = Instant::now();
    for _ in 0..a.steps {
        let (x, y) = batch(&mut rng, t, n);
        prog.run(&[("train.x", Feed::F32(&x)), ("train.y", Feed::F32(&y))])?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let mut test = Program::compile(&g, &mut store, &[test_loss, dx], None)?;
    let (x, y) = batch(&mut Rng::new(7), t, test_n);
    let out = test.run(&[("test.x", Feed::F32(&x)), ("test.y", Feed::F32(&y))])?;
    // ∂L/∂x at step 0: (N, 2) per sequence, its norm averaged over the test sequences. The loss
    // is a mean over them, so scale back to one sequence's loss.
    let d = &out.get(dx)?.data[..test_n * 2];
    let grad_first = d
        .chunks(2)
        .map(|v| ((v[0] * v[0] + v[1] * v[1]) as f64).sqrt() * test_n as f64)
        .sum::<f64>()
        / test_n as f64;
    Ok(Outcome {
        mse: out.scalar(test_loss)?,
        grad_first: grad_first as f32,
        seconds,
    })
}

fn run<B: Backend>(dev: &B, a: &Args) -> kiln::Result<()> {
    println!(
        "adding problem: {} steps of {} sequences, hidden {}, Adam {}, clip 1, LSTM forget bias {} ({})",
        a.steps,
        a.batch,
        a.hidden,
        a.lr,
        a.forget_bias,
        dev.info().adapter
    );
    println!(
        "{:<6} {:>5} {:>10} {:>12} {:>9}",
        "model", "T", "test MSE", "‖∂L/∂x₁‖", "seconds"
    );
    let mut rows = Vec::new();
    for &t in &a.lengths {
        for (name, cell) in [("rnn", Cell::Tanh), ("lstm", Cell::Lstm)] {
            let o = train(dev, a, cell, t as usize)?;
            println!(
                "{name:<6} {t:>5} {:>10.4} {:>12.3e} {:>9.1}",
                o.mse, o.grad_first, o.seconds
            );
            rows.push(format!(
                "{{\"model\":\"{name}\",\"T\":{t},\"test_mse\":{:.5},\"grad_first\":{:.4e},\"seconds\":{:.1}}}",
                o.mse, o.grad_first, o.seconds
            ));
        }
    }
    println!("baseline (always 1): MSE ≈ 0.167");
    println!(
        "{{\"example\":\"adding_problem\",\"steps\":{},\"results\":[{}]}}",
        a.steps,
        rows.join(",")
    );
    Ok(())
}

fn main() {
    let a = Args::parse();
    let r = kiln::Device::choose(&a.device).and_then(|d| match d {
        kiln::Device::Cpu(cpu) => run(&cpu, &a),
        kiln::Device::Gpu(gpu) => run(&gpu, &a),
    });
    if let Err(e) = r {
        eprintln!("adding_problem: {e}");
        std::process::exit(1);
    }
}
