//! The Trainer: builds a classifier's training and evaluation programs over one ParamStore,
//! runs epochs of seeded mini-batches with progress bars, evaluates on validation and test
//! sets, stops early when validation loss stops improving, and records (and optionally writes)
//! per-step and per-epoch metrics.

use crate::autodiff::{backward, backward_scaled};
use crate::backend::Backend;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::exec::{Feed, ParamStore, Program, Training};
use crate::graph::{Graph, NodeId};
use crate::metrics::{EpochMetrics, MetricsLog, StepMetrics};
use crate::optim::Optimizer;
use crate::progress::Progress;
use crate::rng::Rng;
use crate::shape::DType;
use std::time::Instant;

/// A model: `(graph, input, train) → logits`, called once for training and once for evaluation.
pub type Model<'a> = &'a dyn Fn(&mut Graph, NodeId, bool) -> Result<NodeId>;

/// An extra loss term added to the training loss, e.g. an L2 penalty.
pub type Penalty<'a> = &'a dyn Fn(&mut Graph) -> Result<NodeId>;

/// Loss and accuracy on a dataset.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Metrics {
    /// Mean cross-entropy.
    pub loss: f32,
    /// Fraction classified correctly.
    pub accuracy: f32,
}

/// The numeric precision of training.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// f16 activations and gradients, f32 master weights and optimiser update, f32 losses,
    /// dynamic loss scaling (see [`crate::exec::LossScaling`]).
    Mixed,
}

impl Precision {
    /// `f32` or `mixed`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Mixed => "mixed",
        }
    }
}

/// What [`Trainer::fit`] did.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// Training metrics of each epoch (running over its batches).
    pub train: Vec<Metrics>,
    /// Validation metrics after each epoch, if a validation set was given.
    pub validation: Vec<Metrics>,
    /// Training throughput over all epochs, samples per second.
    pub samples_per_s: f64,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// The loss scale at the end (mixed precision).
    pub loss_scale: Option<f32>,
    /// Updates skipped because a scaled gradient overflowed (mixed precision).
    pub skipped_updates: u64,
    /// Every step's and every epoch's metrics (what [`FitConfig::metrics`] writes).
    pub log: MetricsLog,
}

/// How to fit.
#[derive(Clone, Debug)]
pub struct FitConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Seed of the per-epoch shuffles.
    pub seed: u64,
    /// Stop after this many epochs without a better validation loss.
    pub patience: Option<usize>,
    /// Show progress on stderr: a bar with ETA, loss and samples/s for each epoch and a bar for
    /// validation when stderr is a terminal, plain lines about every 10% of an epoch when it is
    /// not, and a summary line per epoch. `false` prints nothing.
    pub progress: bool,
    /// Epochs already done (when resuming from a checkpoint): training runs epochs
    /// `start_epoch + 1 ..= epochs`, and the shuffles continue where that run left them.
    pub start_epoch: usize,
    /// Save a checkpoint here after every epoch (see [`Trainer::save`]).
    pub save: Option<SaveTo>,
    /// Write the run's metrics into this directory after every epoch (created if missing):
    /// `steps.csv`, `epochs.csv`, `loss.svg`, `accuracy.svg` (see [`crate::metrics`]). A
    /// resumed run's files hold the epochs that run trained.
    pub metrics: Option<std::path::PathBuf>,
}

/// Where [`Trainer::fit`] saves a checkpoint after each epoch, and the model name it records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaveTo {
    /// The checkpoint file (replaced atomically each time).
    pub path: std::path::PathBuf,
    /// The model's name, checked when the checkpoint is loaded.
    pub model: String,
}

impl Default for FitConfig {
    fn default() -> Self {
        FitConfig {
            epochs: 1,
            seed: 0,
            patience: None,
            progress: true,
            start_epoch: 0,
            save: None,
            metrics: None,
        }
    }
}

/// A classifier being trained: logits `(B, classes)` from samples `(B, sample_shape…)`.
pub struct Trainer<B: Backend> {
    store: ParamStore<B>,
    train: Program<B>,
    eval: Program<B>,
    loss: NodeId,
    train_logits: NodeId,
    eval_logits: NodeId,
    eval_losses: NodeId,
    batch: usize,
    sample_len: usize,
    graph: Graph,
}

impl<B: Backend> Trainer<B> {
    /// Build a classifier. `model(graph, x, train)` maps `x: (batch, sample_shape…)` to logits
    /// `(batch, classes)`; it is called twice, with `train` true and false, over the same
    /// parameters (dropout and batch norm differ between the two). The training loss is mean
    /// cross-entropy plus `penalty(graph)` when given (e.g. an L2 term).
    #[allow(clippy::too_many_arguments)]
    pub fn classifier(
        backend: &B,
        sample_shape: &[usize],
        classes: usize,
        batch: usize,
        model: Model<'_>,
        penalty: Option<Penalty<'_>>,
        optimizer: &Optimizer,
        seed: u64,
    ) -> Result<Self> {
        Self::classifier_with_precision(
            backend,
            sample_shape,
            classes,
            batch,
            model,
            penalty,
            optimizer,
            seed,
            Precision::F32,
        )
    }

    /// [`Trainer::classifier`] in a chosen precision. With [`Precision::Mixed`] the samples are
    /// cast to f16 before `model`, so every layer computes in f16 (see [`crate::nn`]).
    #[allow(clippy::too_many_arguments)]
    pub fn classifier_with_precision(
        backend: &B,
        sample_shape: &[usize],
        classes: usize,
        batch: usize,
        model: Model<'_>,
        penalty: Option<Penalty<'_>>,
        optimizer: &Optimizer,
        seed: u64,
        precision: Precision,
    ) -> Result<Self> {
        if batch == 0 {
            return Err(Error::Invalid {
                op: "Trainer",
                reason: "batch size must be at least 1".into(),
            });
        }
        let mut g = Graph::new();
        let mut shape = vec![batch];
        shape.extend_from_slice(sample_shape);
        let x = g.input("x", shape)?;
        let y = g.labels("y", [batch], classes)?;
        let x = match precision {
            Precision::F32 => x,
            Precision::Mixed => g.cast(x, DType::F16)?,
        };
        let train_logits = model(&mut g, x, true)?;
        if g.shape(train_logits).dims() != [batch, classes] {
            return Err(Error::Shape {
                op: "Trainer::classifier",
                node: g.describe(train_logits),
                shapes: vec![g.shape(train_logits).0.clone()],
                reason: format!("the model must return logits ({batch}, {classes})"),
            });
        }
        let mut loss = crate::loss::cross_entropy(&mut g, train_logits, y)?;
        if let Some(p) = penalty {
            let pen = p(&mut g)?;
            loss = g.add(loss, pen)?;
        }
        g.set_name(loss, "loss");
        let grads = match precision {
            Precision::F32 => backward(&mut g, loss)?,
            Precision::Mixed => backward_scaled(&mut g, loss)?,
        };
        let eval_logits = model(&mut g, x, false)?;
        let eval_f32 = g.cast(eval_logits, DType::F32)?;
        let eval_losses = g.softmax_cross_entropy(eval_f32, y, 0.0)?;
        let mut store = ParamStore::new(backend, &g, seed)?;
        let mut train = Program::compile(
            &g,
            &mut store,
            &[loss, train_logits],
            Some(Training::new(&grads, optimizer)),
        )?;
        train.set_seed(seed);
        let eval = Program::compile(&g, &mut store, &[eval_logits, eval_losses], None)?;
        Ok(Trainer {
            store,
            train,
            eval,
            loss,
            train_logits,
            eval_logits,
            eval_losses,
            batch,
            sample_len: sample_shape.iter().product(),
            graph: g,
        })
    }

    /// The parameters.
    pub fn store(&self) -> &ParamStore<B> {
        &self.store
    }

    /// The graph holding both programs.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Peak device bytes of the training step (its buffers plus the ParamStore).
    pub fn peak_bytes(&self) -> usize {
        self.train.peak_bytes()
    }

    /// Save the weights, optimiser state, update counter and loss scale, with `epoch` (the
    /// epochs completed), to a safetensors checkpoint (atomically: see [`crate::checkpoint`]).
    pub fn save(&self, path: &std::path::Path, model: &str, epoch: usize) -> Result<()> {
        let info = crate::checkpoint::CheckpointInfo {
            model: model.into(),
            epoch: epoch as u64,
            extra: Default::default(),
        };
        crate::checkpoint::save(path, &self.store, &info)
    }

    /// Load a checkpoint written by [`Trainer::save`] for the same model; returns the epochs it
    /// had completed (pass them as [`FitConfig::start_epoch`] to continue exactly).
    pub fn load(&mut self, path: &std::path::Path, model: &str) -> Result<usize> {
        let info = crate::checkpoint::load(path, &mut self.store, Some(model))?;
        Ok(info.epoch as usize)
    }

    /// The training program (its plan, loss scale, update counter).
    pub fn train_program(&self) -> &Program<B> {
        &self.train
    }

    /// Kernels one training step runs.
    pub fn kernels_per_step(&self) -> usize {
        self.train.kernel_count()
    }

    /// Train for `cfg.epochs` epochs (dropping each epoch's final partial batch), evaluating on
    /// `validation` after each.
    pub fn fit(&mut self, data: &Dataset, validation: Option<&Dataset>, cfg: &FitConfig) -> Result<History> {
        self.check_data(data)?;
        let steps = data.len() / self.batch;
        if steps == 0 {
            return Err(Error::Invalid {
                op: "fit",
                reason: format!("{} samples do not fill one batch of {}", data.len(), self.batch),
            });
        }
        if let Some(dir) = &cfg.metrics {
            crate::metrics::prepare_dir(dir)?;
        }
        let mut rng = Rng::new(cfg.seed);
        // A resumed run replays the finished epochs' shuffles, so the next epoch sees the batches
        // it would have seen without the interruption.
        for _ in 0..cfg.start_epoch {
            let mut order: Vec<usize> = (0..data.len()).collect();
            rng.shuffle(&mut order);
        }
        let mut x = vec![0f32; self.batch * self.sample_len];
        let mut y = vec![0u32; self.batch];
        let mut hist = History::default();
        let (mut best, mut since_best) = (f32::INFINITY, 0);
        let mut train_time = 0.0;
        for epoch in cfg.start_epoch + 1..=cfg.epochs {
            let mut order: Vec<usize> = (0..data.len()).collect();
            rng.shuffle(&mut order);
            let (mut loss_sum, mut hits) = (0f64, 0usize);
            let start = Instant::now();
            let mut progress = Progress::training(cfg.progress, format!("epoch {epoch}/{}", cfg.epochs), steps as u64);
            for s in 0..steps {
                let step_start = Instant::now();
                let learning_rate = self.train.learning_rate();
                let idx = &order[s * self.batch..(s + 1) * self.batch];
                data.gather(idx, &mut x, &mut y)?;
                let out = self.train.run(&[("x", Feed::F32(&x)), ("y", Feed::Labels(&y))])?;
                let l = out.scalar(self.loss)?;
                if !l.is_finite() {
                    progress.finish();
                    return Err(Error::NonFinite(format!(
                        "training loss is {l} at epoch {epoch}, step {}; lower the learning rate or clip gradients",
                        s + 1
                    )));
                }
                loss_sum += l as f64;
                hits += accuracy_hits(&out.get(self.train_logits)?.argmax_rows(), &y, self.batch);
                hist.log.steps.push(StepMetrics {
                    epoch,
                    step: ((epoch - 1) * steps + s + 1) as u64,
                    loss: l,
                    samples_per_s: self.batch as f64 / step_start.elapsed().as_secs_f64().max(1e-9),
                    learning_rate,
                });
                let done = s + 1;
                progress.update(done as u64, (done * self.batch) as u64, Some(loss_sum / done as f64));
            }
            progress.finish();
            train_time += start.elapsed().as_secs_f64();
            let m = Metrics {
                loss: (loss_sum / steps as f64) as f32,
                accuracy: hits as f32 / (steps * self.batch) as f32,
            };
            hist.train.push(m);
            let mut line = format!(
                "epoch {epoch}/{}: train loss {:.4} acc {:.2}%",
                cfg.epochs,
                m.loss,
                100.0 * m.accuracy
            );
            let vm = match validation {
                Some(v) => Some(self.evaluate_with(v, cfg.progress, "validation")?),
                None => None,
            };
            if let Some(vm) = vm {
                hist.validation.push(vm);
                line += &format!(", validation loss {:.4} acc {:.2}%", vm.loss, 100.0 * vm.accuracy);
                if vm.loss < best {
                    best = vm.loss;
                    since_best = 0;
                } else {
                    since_best += 1;
                }
            }
            hist.log.epochs.push(EpochMetrics {
                epoch,
                step: (epoch * steps) as u64,
                train_loss: m.loss,
                train_accuracy: m.accuracy,
                validation_loss: vm.map(|v| v.loss),
                validation_accuracy: vm.map(|v| v.accuracy),
                seconds: start.elapsed().as_secs_f64(),
            });
            if cfg.progress {
                eprintln!("{line}");
            }
            if let Some(dir) = &cfg.metrics {
                hist.log.write(dir)?;
            }
            if let Some(s) = &cfg.save {
                self.save(&s.path, &s.model, epoch)?;
                if cfg.progress {
                    eprintln!("saved {}", s.path.display());
                }
            }
            if cfg.patience.is_some_and(|p| since_best >= p) {
                hist.stopped_early = true;
                if cfg.progress {
                    eprintln!("early stopping: validation loss has not improved for {since_best} epochs");
                }
                break;
            }
        }
        hist.samples_per_s = (hist.train.len() * steps * self.batch) as f64 / train_time.max(1e-9);
        hist.loss_scale = self.train.loss_scale();
        hist.skipped_updates = self.train.skipped_updates();
        Ok(hist)
    }

    /// Loss and accuracy on every sample of `data` (the final partial batch is padded, and the
    /// padding excluded), with a progress bar when stderr is a terminal.
    pub fn evaluate(&mut self, data: &Dataset) -> Result<Metrics> {
        self.evaluate_with(data, true, "evaluation")
    }

    /// [`Trainer::evaluate`], with the progress bar (labelled `label`) only if `progress`.
    pub fn evaluate_with(&mut self, data: &Dataset, progress: bool, label: &str) -> Result<Metrics> {
        self.check_data(data)?;
        let mut x = vec![0f32; self.batch * self.sample_len];
        let mut y = vec![0u32; self.batch];
        let order: Vec<usize> = (0..data.len()).collect();
        let (mut loss_sum, mut hits) = (0f64, 0usize);
        let batches = data.len().div_ceil(self.batch) as u64;
        let mut bar = Progress::evaluation(progress, label.to_string(), batches);
        for (b, idx) in order.chunks(self.batch).enumerate() {
            data.gather(idx, &mut x, &mut y)?;
            let out = self.eval.run(&[("x", Feed::F32(&x)), ("y", Feed::Labels(&y))])?;
            loss_sum += out.get(self.eval_losses)?.data[..idx.len()]
                .iter()
                .map(|&v| v as f64)
                .sum::<f64>();
            hits += accuracy_hits(&out.get(self.eval_logits)?.argmax_rows(), &y, idx.len());
            bar.update(b as u64 + 1, (b * self.batch + idx.len()) as u64, None);
        }
        bar.finish();
        Ok(Metrics {
            loss: (loss_sum / data.len().max(1) as f64) as f32,
            accuracy: hits as f32 / data.len().max(1) as f32,
        })
    }

    fn check_data(&self, d: &Dataset) -> Result<()> {
        if d.sample_len() != self.sample_len {
            return Err(Error::Invalid {
                op: "Trainer",
                reason: format!("samples of shape {:?} do not match the model's input", d.sample_shape),
            });
        }
        Ok(())
    }
}

fn accuracy_hits(pred: &[usize], y: &[u32], n: usize) -> usize {
    pred.iter().zip(y).take(n).filter(|(p, l)| **p == **l as usize).count()
}
