//! A character-level LSTM language model on the Jargon File, trained with truncated
//! backpropagation through time; then it writes text.
//!
//! ```text
//! cargo run --release --example char_lm                       # the default recipe
//! cargo run --release --example char_lm -- --steps 100 --prompt "hacker" --temperature 0.5
//! ```
//!
//! The recipe (the same as `tools/torch_char_lm.py`, to compare with PyTorch): the text mapped to
//! 96 symbols (`kiln::data::text`), the last 10% held out; embedding 64 → 2-layer LSTM of 256 →
//! linear to 96 logits; 32 lanes read in windows of 64 characters, the LSTM state carried from
//! window to window on the device (no gradient crosses a window) and reset at the start of each
//! pass; mean cross-entropy, Adam 2e-3, gradients clipped to global norm 5. It ends with a JSON
//! line: `val_bpc` (bits per character on the held-out text), `train_bpc`, `steps`,
//! `chars_per_s`, the device, `peak_bytes`.

mod common;

use clap::Parser;
use common::{non_negative, positive};
use kiln::data::text::{decode_ascii96, encode_ascii96, Lanes, ASCII96};
use kiln::nn::{Embedding, Linear, Lstm};
use kiln::{backward, loss, Backend, Feed, Graph, Init, NodeId, Optimizer, ParamStore, Program, Training};
use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

/// Train a character-level LSTM on the Jargon File and sample from it.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Optimiser steps (one window of every lane each).
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    steps: u64,
    /// Characters per window (the truncation length of backpropagation through time).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    window: u64,
    /// Parallel lanes of text (the batch).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,
    /// LSTM hidden size.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    hidden: u64,
    /// LSTM layers.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    layers: u64,
    /// Embedding size.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    embed: u64,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 2e-3, value_parser = positive)]
    lr: f32,
    /// Clip gradients to this global norm (0: no clipping).
    #[arg(long, default_value_t = 5.0, value_parser = non_negative)]
    clip: f32,
    /// Seed of the initial weights and the sampling.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Text the sample starts from.
    #[arg(long, default_value = "The ")]
    prompt: String,
    /// Sampling temperature: lower is more conservative.
    #[arg(long, default_value_t = 0.8, value_parser = positive)]
    temperature: f32,
    /// Characters to sample.
    #[arg(long, default_value_t = 300)]
    sample_len: usize,
    /// auto: a real GPU if there is one, else the CPU backend.
    #[arg(long, env = "KILN_DEVICE", default_value = "auto", value_parser = ["auto", "cpu", "gpu"])]
    device: String,
    /// The corpus: UTF-8 text, gzipped or not.
    #[arg(long, default_value_os_t = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/jargon/jargon.txt.gz")))]
    data: PathBuf,
}

type BoxError = Box<dyn std::error::Error>;

fn read_text(path: &std::path::Path) -> Result<String, BoxError> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| format!("{}: not valid gzip: {e}", path.display()))?;
        out
    } else {
        bytes
    };
    String::from_utf8(bytes).map_err(|e| format!("{}: not UTF-8 text: {e}", path.display()).into())
}

/// The model's sizes.
#[derive(Clone, Copy)]
struct Sizes {
    embed: usize,
    hidden: usize,
    layers: usize,
}

/// One unrolled copy of the model over `(t, n)` ids, its inputs named after `tag`: returns
/// (logits `(t·n, 96)`, final h, final c). Every copy shares the parameters (found by name).
fn model(g: &mut Graph, s: Sizes, tag: &str, t: usize, n: usize) -> kiln::Result<(NodeId, NodeId, NodeId)> {
    let emb = Embedding::new(g, "embed", ASCII96, s.embed)?;
    let lstm = Lstm::lstm(g, "lstm", s.embed, s.hidden, s.layers)?;
    let out = Linear::with_inits(
        g,
        "out",
        s.hidden,
        ASCII96,
        Init::torch_default(),
        Some(Init::bias_for_fan_in(s.hidden)),
    )?;
    let x = g.labels(&format!("{tag}.x"), [t, n], ASCII96)?;
    let h0 = g.input(&format!("{tag}.h0"), lstm.state_shape(n))?;
    let c0 = g.input(&format!("{tag}.c0"), lstm.state_shape(n))?;
    let e = emb.forward(g, x)?; // (T, N, E)
    let o = lstm.forward(g, e, Some(h0), Some(c0))?;
    let flat = g.reshape(o.output, [t * n, s.hidden])?;
    let logits = out.forward(g, flat)?; // (T·N, 96)
    Ok((logits, o.h, o.c.expect("an LSTM has a cell state")))
}

/// A program over one model copy that carries its state from run to run.
struct Unrolled<B: Backend> {
    prog: Program<B>,
    tag: String,
    logits: NodeId,
    loss: Option<NodeId>,
}

impl<B: Backend> Unrolled<B> {
    fn step(&mut self, x: &[u32], y: Option<&[u32]>) -> kiln::Result<kiln::Outputs> {
        let xn = format!("{}.x", self.tag);
        let yn = format!("{}.y", self.tag);
        let mut feeds = vec![(xn.as_str(), Feed::Labels(x))];
        if let Some(y) = y {
            feeds.push((yn.as_str(), Feed::Labels(y)));
        }
        self.prog.run(&feeds)
    }
}

fn compile<B: Backend>(
    g: &Graph,
    store: &mut ParamStore<B>,
    tag: &str,
    (logits, h, c): (NodeId, NodeId, NodeId),
    loss: Option<NodeId>,
    training: Option<Training<'_>>,
) -> kiln::Result<Unrolled<B>> {
    let mut fetch = vec![logits, h, c];
    fetch.extend(loss);
    let mut prog = Program::compile(g, store, &fetch, training)?;
    prog.carry(h, &format!("{tag}.h0"))?;
    prog.carry(c, &format!("{tag}.c0"))?;
    Ok(Unrolled {
        prog,
        tag: tag.into(),
        logits,
        loss,
    })
}

fn run<B: Backend>(dev: &B, a: &Args, train: &[u32], val: &[u32]) -> Result<String, BoxError> {
    let s = Sizes {
        embed: a.embed as usize,
        hidden: a.hidden as usize,
        layers: a.layers as usize,
    };
    let (n, t) = (a.batch as usize, a.window as usize);
    let lanes = Lanes::new(train, n, t).map_err(|e| format!("training text: {e}"))?;
    let val_lanes = Lanes::new(val, n, t).map_err(|e| format!("held-out text: {e}"))?;

    // One graph holds every unrolled copy: training (T = window), evaluation over whole windows
    // and over the last partial one, and generation (T = 1, batch 1).
    let mut g = Graph::new();
    let tr = model(&mut g, s, "train", t, n)?;
    let y = g.labels("train.y", [t * n], ASCII96)?;
    let train_loss = loss::cross_entropy(&mut g, tr.0, y)?;
    let grads = backward(&mut g, train_loss)?;
    let ev = model(&mut g, s, "eval", t, n)?;
    let ey = g.labels("eval.y", [t * n], ASCII96)?;
    let eval_loss = loss::cross_entropy(&mut g, ev.0, ey)?;
    let rest = val_lanes.steps_in(val_lanes.windows_with_rest() - 1);
    let rest_model = if rest < t {
        let m = model(&mut g, s, "rest", rest, n)?;
        let ry = g.labels("rest.y", [rest * n], ASCII96)?;
        Some((m, loss::cross_entropy(&mut g, m.0, ry)?))
    } else {
        None
    };
    let gen = model(&mut g, s, "gen", 1, 1)?;

    let mut store = ParamStore::new(dev, &g, a.seed)?;
    let mut opt = Optimizer::adam(a.lr);
    if a.clip > 0.0 {
        opt = opt.clip_norm(a.clip);
    }
    let mut trainer = compile(
        &g,
        &mut store,
        "train",
        tr,
        Some(train_loss),
        Some(Training::new(&grads, &opt)),
    )?;
    let params: usize = g.params().iter().map(|p| p.shape.numel()).sum();
    eprintln!(
        "{} characters: {} for training ({} lanes of {}, {} windows of {t} per pass), {} held out; {params} parameters; {} kernels per step on {}",
        train.len() + val.len(),
        train.len(),
        n,
        lanes.lane_len(),
        lanes.windows(),
        val.len(),
        trainer.prog.kernel_count(),
        dev.info().adapter
    );

    let steps = a.steps as usize;
    let mut bar = kiln::progress::Progress::training(true, "char_lm".into(), steps as u64);
    let mut recent = std::collections::VecDeque::new();
    let start = Instant::now();
    for step in 0..steps {
        let w = step % lanes.windows();
        if w == 0 {
            trainer.prog.reset_carried()?;
        }
        let (x, y) = lanes.window(w);
        let out = trainer.step(&x, Some(&y))?;
        let l = out.scalar(trainer.loss.expect("the training loss"))?;
        recent.push_back(l);
        if recent.len() > 100 {
            recent.pop_front();
        }
        // Samples here are characters: lanes × window per step.
        let norm = trainer.prog.grad_norm().unwrap_or(f32::NAN);
        bar.update_with(
            (step + 1) as u64,
            ((step + 1) * t * n) as u64,
            Some(l as f64),
            &format!("({:.3} bits/char) grad norm {norm:.2}", l / std::f32::consts::LN_2),
        );
    }
    bar.finish();
    let train_secs = start.elapsed().as_secs_f64();
    let train_bpc = recent.iter().map(|&v| v as f64).sum::<f64>() / recent.len() as f64 / std::f64::consts::LN_2;

    // Held-out bits per character: every lane read start to end, state carried throughout.
    let mut eval = compile(&g, &mut store, "eval", ev, Some(eval_loss), None)?;
    let (mut nats, mut count) = (0f64, 0usize);
    let mut last = None;
    for w in 0..val_lanes.windows() {
        let (x, y) = val_lanes.window(w);
        let out = eval.step(&x, Some(&y))?;
        nats += out.scalar(eval_loss)? as f64 * y.len() as f64;
        count += y.len();
        last = Some((out.get(ev.1)?.data.clone(), out.get(ev.2)?.data.clone()));
    }
    if let Some(((m, rl), (h, c))) = rest_model.zip(last) {
        let mut r = compile(&g, &mut store, "rest", m, Some(rl), None)?;
        let (x, y) = val_lanes.window(val_lanes.windows_with_rest() - 1);
        let out = r.prog.run(&[
            ("rest.x", Feed::Labels(&x)),
            ("rest.y", Feed::Labels(&y)),
            ("rest.h0", Feed::F32(&h)),
            ("rest.c0", Feed::F32(&c)),
        ])?;
        nats += out.scalar(rl)? as f64 * y.len() as f64;
        count += y.len();
    }
    let val_bpc = nats / count as f64 / std::f64::consts::LN_2;

    // Sampling: feed the prompt one character at a time, then the model's own choices.
    let mut gen = compile(&g, &mut store, "gen", gen, None, None)?;
    let mut rng = kiln::rng::Rng::new(a.seed);
    let prompt = encode_ascii96(&a.prompt);
    let mut text = prompt.clone();
    let mut next = None;
    for &c in &prompt {
        let out = gen.step(&[c], None)?;
        next = Some(out.get(gen.logits)?.data.clone());
    }
    let mut logits = match next {
        Some(l) => l,
        None => gen.step(&[0], None)?.get(gen.logits)?.data.clone(), // an empty prompt: after a newline
    };
    for _ in 0..a.sample_len {
        let c = sample(&logits, a.temperature, &mut rng);
        text.push(c);
        logits = gen.step(&[c], None)?.get(gen.logits)?.data.clone();
    }
    println!("{}", decode_ascii96(&text));

    Ok(format!(
        "{{\"example\":\"char_lm\",\"val_bpc\":{val_bpc:.4},\"train_bpc\":{train_bpc:.4},\"steps\":{steps},\"chars_per_s\":{:.0},\"seconds\":{train_secs:.1},\"device\":\"{}\",\"kernels_per_step\":{},\"peak_bytes\":{},\"seed\":{}}}",
        (steps * t * n) as f64 / train_secs,
        dev.info().adapter,
        trainer.prog.kernel_count(),
        trainer.prog.peak_bytes(),
        a.seed
    ))
}

/// Draw from softmax(logits / temperature).
fn sample(logits: &[f32], temperature: f32, rng: &mut kiln::rng::Rng) -> u32 {
    let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let w: Vec<f64> = logits.iter().map(|&l| (((l - m) / temperature) as f64).exp()).collect();
    let total: f64 = w.iter().sum();
    let mut u = rng.uniform() as f64 * total;
    for (i, &p) in w.iter().enumerate() {
        if u < p {
            return i as u32;
        }
        u -= p;
    }
    (w.len() - 1) as u32
}

fn main() {
    let a = Args::parse();
    let result = (|| -> Result<String, BoxError> {
        let text = read_text(&a.data)?;
        let ids = encode_ascii96(&text);
        let held = ids.len() / 10;
        let (train, val) = ids.split_at(ids.len() - held);
        match kiln::Device::choose(&a.device)? {
            kiln::Device::Cpu(cpu) => run(&cpu, &a, train, val),
            kiln::Device::Gpu(gpu) => run(&gpu, &a, train, val),
        }
    })();
    match result {
        Ok(json) => println!("{json}"),
        Err(e) => {
            eprintln!("char_lm: {e}");
            std::process::exit(1);
        }
    }
}
