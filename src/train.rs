//! The Trainer: a classifier on the general loop of [`crate::learner`]. It builds the training
//! and evaluation programs over one ParamStore, runs epochs of seeded mini-batches from a
//! [`Dataset`] with progress bars, evaluates on validation and test sets, stops early when
//! validation loss stops improving, and records (and optionally writes) per-step and per-epoch
//! metrics.

use crate::autodiff::{backward, backward_scaled};
use crate::backend::Backend;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::exec::{ParamStore, Program};
use crate::graph::{Graph, NodeId};
use crate::learner::{Batch, Batches, Control, Event, FitOptions, Learner, Metric, Scores, Validate};
use crate::metrics::MetricsLog;
use crate::optim::Optimizer;
use crate::rng::Rng;
use crate::shape::DType;

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
    /// Seconds from the start of `fit` to the end of its first training step.
    pub first_step_s: Option<f64>,
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

/// A classifier being trained: logits `(B, classes)` from samples `(B, sample_shape…)`. A thin
/// layer on [`Learner`]: the inputs are `x` and `y`, the loss is cross-entropy (plus a penalty),
/// the metrics are loss and accuracy, and the batches come from a [`Dataset`].
pub struct Trainer<B: Backend> {
    learner: Learner<B>,
    batch: usize,
    sample_len: usize,
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
        let accuracy = vec![Metric::accuracy("accuracy", train_logits, "y")];
        let learner = Learner::with_gradients(backend, g, &grads, accuracy, optimizer, seed)?.evaluation(vec![
            Metric::per_sample_mean("loss", eval_losses),
            Metric::accuracy("accuracy", eval_logits, "y"),
        ])?;
        Ok(Trainer {
            learner,
            batch,
            sample_len: sample_shape.iter().product(),
        })
    }

    /// The general loop underneath (its graph, store and programs).
    pub fn learner(&mut self) -> &mut Learner<B> {
        &mut self.learner
    }

    /// The parameters.
    pub fn store(&self) -> &ParamStore<B> {
        self.learner.store()
    }

    /// The graph holding both programs.
    pub fn graph(&self) -> &Graph {
        self.learner.graph()
    }

    /// Peak device bytes of the training step (its buffers plus the ParamStore).
    pub fn peak_bytes(&self) -> usize {
        self.learner.train_program().peak_bytes()
    }

    /// Save the weights, optimiser state, update counter and loss scale, with `epoch` (the
    /// epochs completed), to a safetensors checkpoint (atomically: see [`crate::checkpoint`]).
    pub fn save(&self, path: &std::path::Path, model: &str, epoch: usize) -> Result<()> {
        let info = crate::checkpoint::CheckpointInfo {
            model: model.into(),
            epoch: epoch as u64,
            extra: Default::default(),
        };
        crate::checkpoint::save(path, self.learner.store(), &info)
    }

    /// Load a checkpoint written by [`Trainer::save`] for the same model; returns the epochs it
    /// had completed (pass them as [`FitConfig::start_epoch`] to continue exactly).
    pub fn load(&mut self, path: &std::path::Path, model: &str) -> Result<usize> {
        let info = crate::checkpoint::load(path, self.learner.store_mut(), Some(model))?;
        Ok(info.epoch as usize)
    }

    /// The training program (its plan, loss scale, update counter).
    pub fn train_program(&self) -> &Program<B> {
        self.learner.train_program()
    }

    /// Kernels one training step runs.
    pub fn kernels_per_step(&self) -> usize {
        self.learner.train_program().kernel_count()
    }

    /// Train for `cfg.epochs` epochs (dropping each epoch's final partial batch), evaluating on
    /// `validation` after each.
    pub fn fit(&mut self, data: &Dataset, validation: Option<&Dataset>, cfg: &FitConfig) -> Result<History> {
        self.check_data(data)?;
        if let Some(v) = validation {
            self.check_data(v)?;
        }
        if data.len() / self.batch == 0 {
            return Err(Error::Invalid {
                op: "fit",
                reason: format!("{} samples do not fill one batch of {}", data.len(), self.batch),
            });
        }
        let opts = FitOptions {
            epochs: cfg.epochs,
            start_epoch: cfg.start_epoch,
            validate: Validate::EveryEpoch,
            monitor: "loss".into(),
            patience: cfg.patience,
            restore_best: false,
            progress: cfg.progress,
            metrics: cfg.metrics.clone(),
        };
        let mut train = DatasetBatches::shuffled(data, self.batch, cfg.seed);
        let mut val = validation.map(|v| DatasetBatches::in_order(v, self.batch));
        let save = cfg.save.clone();
        let progress = cfg.progress;
        let mut on_event = |l: &mut Learner<B>, e: &Event| -> Result<Control> {
            if let (Event::Epoch { epoch, .. }, Some(s)) = (e, &save) {
                let info = crate::checkpoint::CheckpointInfo {
                    model: s.model.clone(),
                    epoch: *epoch as u64,
                    extra: Default::default(),
                };
                crate::checkpoint::save(&s.path, l.store(), &info)?;
                if progress {
                    eprintln!("saved {}", s.path.display());
                }
            }
            Ok(Control::Continue)
        };
        let r = self.learner.fit(
            &opts,
            &mut train,
            val.as_mut().map(|v| v as &mut dyn Batches),
            &mut on_event,
        )?;
        let metrics = |s: &Scores| Metrics {
            loss: s.get("loss").unwrap_or(f64::NAN) as f32,
            accuracy: s.get("accuracy").unwrap_or(f64::NAN) as f32,
        };
        let prog = self.learner.train_program();
        Ok(History {
            train: r.train.iter().map(metrics).collect(),
            validation: r.validation.iter().map(|v| metrics(&v.2)).collect(),
            samples_per_s: r.samples_per_s,
            stopped_early: r.stopped_early,
            loss_scale: prog.loss_scale(),
            skipped_updates: prog.skipped_updates(),
            log: r.log,
            first_step_s: r.first_step_s,
        })
    }

    /// Loss and accuracy on every sample of `data` (the final partial batch is padded, and the
    /// padding excluded), with a progress bar when stderr is a terminal.
    pub fn evaluate(&mut self, data: &Dataset) -> Result<Metrics> {
        self.evaluate_with(data, true, "evaluation")
    }

    /// [`Trainer::evaluate`], with the progress bar (labelled `label`) only if `progress`.
    pub fn evaluate_with(&mut self, data: &Dataset, progress: bool, label: &str) -> Result<Metrics> {
        self.check_data(data)?;
        let mut b = DatasetBatches::in_order(data, self.batch);
        let s = self.learner.evaluate_with(&mut b, progress, label)?;
        Ok(Metrics {
            loss: s.get("loss").unwrap_or(f64::NAN) as f32,
            accuracy: s.get("accuracy").unwrap_or(f64::NAN) as f32,
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

/// A [`Dataset`] as [`Batches`] of `x` (samples) and `y` (labels): shuffled per epoch (dropping
/// the final partial batch) for training, or in order (padding the final batch, whose padding
/// metrics skip) for evaluation.
pub struct DatasetBatches<'a> {
    data: &'a Dataset,
    batch: usize,
    order: Vec<usize>,
    shuffle: Option<(Rng, usize)>,
}

impl<'a> DatasetBatches<'a> {
    /// Shuffled batches: epoch `e`'s order is the `e`-th shuffle of a generator seeded with
    /// `seed` (an epoch started out of turn replays the shuffles before it, so a resumed run
    /// sees the batches it would have seen).
    pub fn shuffled(data: &'a Dataset, batch: usize, seed: u64) -> Self {
        DatasetBatches {
            data,
            batch: batch.max(1),
            order: Vec::new(),
            shuffle: Some((Rng::new(seed), 0)),
        }
    }

    /// Every sample once, in order; the last batch padded.
    pub fn in_order(data: &'a Dataset, batch: usize) -> Self {
        DatasetBatches {
            data,
            batch: batch.max(1),
            order: (0..data.len()).collect(),
            shuffle: None,
        }
    }
}

impl Batches for DatasetBatches<'_> {
    fn start(&mut self, epoch: usize) -> Result<usize> {
        match &mut self.shuffle {
            Some((rng, drawn)) => {
                while *drawn < epoch {
                    let mut order: Vec<usize> = (0..self.data.len()).collect();
                    rng.shuffle(&mut order);
                    self.order = order;
                    *drawn += 1;
                }
                Ok(self.data.len() / self.batch)
            }
            None => Ok(self.data.len().div_ceil(self.batch)),
        }
    }

    fn batch(&mut self, i: usize) -> Result<Batch> {
        let s = self.data.sample_len();
        let lo = (i * self.batch).min(self.order.len());
        let idx = &self.order[lo..(lo + self.batch).min(self.order.len())];
        let mut x = vec![0f32; self.batch * s];
        let mut y = vec![0u32; self.batch];
        self.data.gather(idx, &mut x, &mut y)?;
        Ok(Batch::new(idx.len()).f32("x", x).labels("y", y))
    }
}
