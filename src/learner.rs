//! A general training loop: any graph, any named inputs, any scalar loss, any metrics.
//!
//! A [`Learner`] owns a graph, its [`ParamStore`], a training program (the loss, its gradients
//! and the optimiser update) and optionally an evaluation program (metrics only). Data comes as
//! [`Batch`]es of named, owned feeds from a [`Batches`] source, which decides the order (and
//! shuffles) per epoch. Use it three ways:
//!
//! - step by step: [`Learner::step`] and [`Learner::evaluate`] in a loop of your own, doing
//!   whatever you like in between;
//! - [`Learner::fit`]: epochs with a progress bar, validation every epoch or every N steps,
//!   early stopping with patience that restores the best weights (and says from which epoch),
//!   metrics logged per step and per epoch, and a callback after every step and every
//!   evaluation that can stop the run;
//! - through [`crate::train::Trainer`], the classifier front end built on it.

use crate::autodiff::{backward, Gradients};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::exec::{Feed, Outputs, ParamStore, Program, Training};
use crate::graph::{Graph, NodeId};
use crate::metrics::{EpochMetrics, MetricsLog, StepMetrics};
use crate::optim::Optimizer;
use crate::progress::Progress;
use std::time::Instant;

/// The values of one input for one step.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    /// f32 values (an f16 input rounds them).
    F32(Vec<f32>),
    /// Class labels (checked against the input's class count).
    Labels(Vec<u32>),
    /// u32 values (token ids).
    U32(Vec<u32>),
}

/// One step's feeds, by input name, and how many real samples they hold (a padded final batch
/// holds fewer than its size; metrics count only the real ones).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    /// `(input name, values)`.
    pub feeds: Vec<(String, Data)>,
    /// Real samples in the batch.
    pub samples: usize,
}

impl Batch {
    /// An empty batch of `samples` samples; add inputs with [`Batch::f32`], [`Batch::labels`],
    /// [`Batch::u32`].
    pub fn new(samples: usize) -> Batch {
        Batch {
            feeds: Vec::new(),
            samples,
        }
    }

    /// Add an f32 input.
    pub fn f32(mut self, name: &str, v: Vec<f32>) -> Batch {
        self.feeds.push((name.into(), Data::F32(v)));
        self
    }

    /// Add a labels input.
    pub fn labels(mut self, name: &str, v: Vec<u32>) -> Batch {
        self.feeds.push((name.into(), Data::Labels(v)));
        self
    }

    /// Add a u32 input.
    pub fn u32(mut self, name: &str, v: Vec<u32>) -> Batch {
        self.feeds.push((name.into(), Data::U32(v)));
        self
    }

    /// The values of a labels or u32 input.
    pub fn ids(&self, name: &str) -> Option<&[u32]> {
        self.feeds.iter().find(|f| f.0 == name).and_then(|f| match &f.1 {
            Data::Labels(v) | Data::U32(v) => Some(v.as_slice()),
            Data::F32(_) => None,
        })
    }

    /// The feeds as [`Program::run`] takes them.
    pub fn as_feeds(&self) -> Vec<(&str, Feed<'_>)> {
        self.feeds
            .iter()
            .map(|(n, d)| {
                (
                    n.as_str(),
                    match d {
                        Data::F32(v) => Feed::F32(v),
                        Data::Labels(v) => Feed::Labels(v),
                        Data::U32(v) => Feed::U32(v),
                    },
                )
            })
            .collect()
    }
}

/// Where batches come from.
pub trait Batches {
    /// Begin epoch `epoch` (1-based; 0 for an evaluation pass) and say how many batches it has.
    /// Shuffle here. A resumed run starts at a later epoch: make the order of epoch `e` depend
    /// only on `e` (and a seed), or replay the skipped epochs' shuffles.
    fn start(&mut self, epoch: usize) -> Result<usize>;
    /// Batch `i` (0-based) of the current epoch.
    fn batch(&mut self, i: usize) -> Result<Batch>;
}

type Compute = Box<dyn Fn(&Outputs, &Batch) -> Result<(f64, f64)>>;

/// A quantity averaged over batches: each batch contributes `(sum, count)` computed from the
/// program's outputs and the batch, and the metric is `Σ sum / Σ count`.
pub struct Metric {
    name: String,
    fetch: Vec<NodeId>,
    compute: Compute,
}

impl Metric {
    /// A metric from the nodes it reads and how to compute a batch's `(sum, count)`.
    pub fn new(
        name: &str,
        fetch: &[NodeId],
        compute: impl Fn(&Outputs, &Batch) -> Result<(f64, f64)> + 'static,
    ) -> Metric {
        Metric {
            name: name.into(),
            fetch: fetch.to_vec(),
            compute: Box::new(compute),
        }
    }

    /// The mean of a scalar node, weighted by each batch's samples.
    pub fn mean(name: &str, node: NodeId) -> Metric {
        Metric::new(name, &[node], move |out, b| {
            Ok((out.scalar(node)? as f64 * b.samples as f64, b.samples as f64))
        })
    }

    /// The mean of the first `samples` elements of a per-sample node (padding excluded).
    pub fn per_sample_mean(name: &str, node: NodeId) -> Metric {
        Metric::new(name, &[node], move |out, b| {
            let v = &out.get(node)?.data;
            let n = b.samples.min(v.len());
            Ok((v[..n].iter().map(|&x| x as f64).sum(), n as f64))
        })
    }

    /// The fraction of the batch's real rows whose largest logit is the label in input `labels`.
    pub fn accuracy(name: &str, logits: NodeId, labels: &str) -> Metric {
        let labels = labels.to_string();
        Metric::new(name, &[logits], move |out, b| {
            let y = b.ids(&labels).ok_or_else(|| Error::Invalid {
                op: "Metric::accuracy",
                reason: format!("the batch has no labels input `{labels}`"),
            })?;
            let pred = out.get(logits)?.argmax_rows();
            let n = b.samples.min(y.len()).min(pred.len());
            let hits = pred.iter().zip(y).take(n).filter(|(p, l)| **p == **l as usize).count();
            Ok((hits as f64, n as f64))
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Metric values by name, in the order they were declared.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scores(pub Vec<(String, f64)>);

impl Scores {
    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.iter().find(|s| s.0 == name).map(|s| s.1)
    }
}

impl std::fmt::Display for Scores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (n, v)) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            if n.contains("acc") {
                write!(f, "{sep}{n} {:.2}%", 100.0 * v)?;
            } else {
                write!(f, "{sep}{n} {v:.4}")?;
            }
        }
        Ok(())
    }
}

/// Running sums of metrics.
struct Tally(Vec<(f64, f64)>);

impl Tally {
    fn new(n: usize) -> Tally {
        Tally(vec![(0.0, 0.0); n])
    }

    fn add(&mut self, metrics: &[Metric], out: &Outputs, b: &Batch) -> Result<()> {
        for (t, m) in self.0.iter_mut().zip(metrics) {
            let (s, c) = (m.compute)(out, b)?;
            t.0 += s;
            t.1 += c;
        }
        Ok(())
    }

    fn scores(&self, metrics: &[Metric]) -> Scores {
        Scores(
            metrics
                .iter()
                .zip(&self.0)
                .map(|(m, t)| (m.name.clone(), t.0 / t.1.max(1e-300)))
                .collect(),
        )
    }
}

/// When to evaluate during [`Learner::fit`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Validate {
    /// After every epoch.
    #[default]
    EveryEpoch,
    /// After every `n` optimiser steps (and never at an epoch's end unless it falls there).
    EverySteps(usize),
}

/// How [`Learner::fit`] runs.
#[derive(Clone, Debug)]
pub struct FitOptions {
    /// Passes over the training batches.
    pub epochs: usize,
    /// Epochs already done (when resuming): training runs epochs `start_epoch + 1 ..= epochs`.
    pub start_epoch: usize,
    /// When to evaluate on the validation batches.
    pub validate: Validate,
    /// The validation metric early stopping and best-weight tracking watch (lower is better
    /// unless its name contains "acc").
    pub monitor: String,
    /// Stop after this many evaluations without improvement of `monitor`.
    pub patience: Option<usize>,
    /// At the end, put back the weights of the best evaluation (when there was validation).
    pub restore_best: bool,
    /// Progress bars and summary lines on stderr.
    pub progress: bool,
    /// Write `steps.csv`, `epochs.csv`, `loss.svg`, `accuracy.svg` here after every epoch
    /// ([`crate::metrics`]; created if missing, checked before training).
    pub metrics: Option<std::path::PathBuf>,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            epochs: 1,
            start_epoch: 0,
            validate: Validate::EveryEpoch,
            monitor: "loss".into(),
            patience: None,
            restore_best: false,
            progress: true,
            metrics: None,
        }
    }
}

/// What happened, for a [`Learner::fit`] callback.
pub enum Event<'a> {
    /// An optimiser step finished.
    Step {
        /// Epoch (1-based).
        epoch: usize,
        /// Step in the run (1-based).
        step: u64,
        /// Its loss.
        loss: f32,
        /// The training program's outputs.
        outputs: &'a Outputs,
    },
    /// An evaluation on the validation batches finished.
    Validated {
        /// Epoch (1-based).
        epoch: usize,
        /// Step in the run.
        step: u64,
        /// The validation metrics.
        scores: &'a Scores,
    },
    /// An epoch finished (after its validation, if any).
    Epoch {
        /// Epoch (1-based).
        epoch: usize,
        /// The training metrics over its batches.
        train: &'a Scores,
        /// The last validation metrics, if any.
        validation: Option<&'a Scores>,
    },
}

/// What a callback wants next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Go on.
    Continue,
    /// End the run after this event (best weights are still restored if asked for).
    Stop,
}

/// What [`Learner::fit`] did.
#[derive(Clone, Debug, Default)]
pub struct FitReport {
    /// Training metrics of each epoch.
    pub train: Vec<Scores>,
    /// Every validation, with the epoch and step it followed.
    pub validation: Vec<(usize, u64, Scores)>,
    /// Every step and epoch (`loss`/`accuracy` and validation `loss`/`accuracy` by those names).
    pub log: MetricsLog,
    /// Training samples per second over the run.
    pub samples_per_s: f64,
    /// Whether early stopping (or a callback) ended the run.
    pub stopped_early: bool,
    /// The epoch and step of the best validation, and its monitored value.
    pub best: Option<(usize, u64, f64)>,
    /// Whether the best weights were put back at the end.
    pub restored_best: bool,
    /// Seconds from the start of `fit` to the end of its first step (the first step pays for
    /// preparing the program on the device and for the first batch).
    pub first_step_s: Option<f64>,
}

/// A graph with its parameters, a training program and an optional evaluation program.
pub struct Learner<B: Backend> {
    graph: Graph,
    store: ParamStore<B>,
    train: Program<B>,
    loss: NodeId,
    train_metrics: Vec<Metric>,
    eval: Option<(Program<B>, Vec<Metric>)>,
}

impl<B: Backend> Learner<B> {
    /// Train `loss` (a scalar of `graph`) with `optimizer`, computing `metrics` at every step
    /// besides the loss (reported as `loss`): gradients by [`backward`], weights initialised from
    /// `seed`.
    pub fn new(
        backend: &B,
        mut graph: Graph,
        loss: NodeId,
        metrics: Vec<Metric>,
        optimizer: &Optimizer,
        seed: u64,
    ) -> Result<Self> {
        let grads = backward(&mut graph, loss)?;
        Self::with_gradients(backend, graph, &grads, metrics, optimizer, seed)
    }

    /// [`Learner::new`] with gradients computed by the caller (e.g. by
    /// [`crate::autodiff::backward_scaled`] for mixed precision).
    pub fn with_gradients(
        backend: &B,
        graph: Graph,
        grads: &Gradients,
        metrics: Vec<Metric>,
        optimizer: &Optimizer,
        seed: u64,
    ) -> Result<Self> {
        let loss = grads.loss.ok_or_else(|| Error::Invalid {
            op: "Learner",
            reason: "the gradients name no loss".into(),
        })?;
        let mut fetch = vec![loss];
        fetch.extend(metrics.iter().flat_map(|m| m.fetch.iter().copied()));
        graph.check_ids("Learner: training metrics", &fetch)?;
        let mut store = ParamStore::new(backend, &graph, seed)?;
        let mut train = Program::compile(&graph, &mut store, &fetch, Some(Training::new(grads, optimizer)))?;
        train.set_seed(seed);
        Ok(Learner {
            graph,
            store,
            train,
            loss,
            train_metrics: metrics,
            eval: None,
        })
    }

    /// An evaluation program computing `metrics` (nodes of the graph, typically of a copy of the
    /// model built with `train = false`); the one named `loss`, if any, is what early stopping
    /// watches by default.
    pub fn evaluation(mut self, metrics: Vec<Metric>) -> Result<Self> {
        let fetch: Vec<NodeId> = metrics.iter().flat_map(|m| m.fetch.iter().copied()).collect();
        if fetch.is_empty() {
            return crate::error::invalid("Learner::evaluation", "give at least one metric");
        }
        let prog = Program::compile(&self.graph, &mut self.store, &fetch, None)?;
        self.eval = Some((prog, metrics));
        Ok(self)
    }

    /// The graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The parameters.
    pub fn store(&self) -> &ParamStore<B> {
        &self.store
    }

    /// The parameters, to read, write, save or load.
    pub fn store_mut(&mut self) -> &mut ParamStore<B> {
        &mut self.store
    }

    /// The training program.
    pub fn train_program(&self) -> &Program<B> {
        &self.train
    }

    /// The training program, e.g. to carry state or set its seed.
    pub fn train_program_mut(&mut self) -> &mut Program<B> {
        &mut self.train
    }

    /// The loss node.
    pub fn loss(&self) -> NodeId {
        self.loss
    }

    /// One optimiser step on `batch`: returns the loss and the program's outputs. A non-finite
    /// loss is an error naming the step.
    pub fn step(&mut self, batch: &Batch) -> Result<(f32, Outputs)> {
        let out = self.train.run(&batch.as_feeds())?;
        let l = out.scalar(self.loss)?;
        if !l.is_finite() {
            return Err(Error::NonFinite(format!(
                "training loss is {l} at update {}; lower the learning rate or clip gradients",
                self.train.updates() + 1
            )));
        }
        Ok((l, out))
    }

    /// Evaluate every batch of `data` (epoch 0) with the evaluation program's metrics.
    pub fn evaluate(&mut self, data: &mut dyn Batches) -> Result<Scores> {
        self.evaluate_with(data, false, "evaluation")
    }

    /// [`Learner::evaluate`] with a progress bar labelled `label` when stderr is a terminal.
    pub fn evaluate_with(&mut self, data: &mut dyn Batches, progress: bool, label: &str) -> Result<Scores> {
        let Some((prog, metrics)) = self.eval.as_mut() else {
            return crate::error::invalid(
                "Learner::evaluate",
                "no evaluation program: call Learner::evaluation first",
            );
        };
        let n = data.start(0)?;
        let mut tally = Tally::new(metrics.len());
        let mut bar = Progress::evaluation(progress, label.into(), n as u64);
        let mut seen = 0u64;
        for i in 0..n {
            let b = data.batch(i)?;
            let out = prog.run(&b.as_feeds())?;
            tally.add(metrics, &out, &b)?;
            seen += b.samples as u64;
            bar.update(i as u64 + 1, seen, None);
        }
        bar.finish();
        Ok(tally.scores(metrics))
    }

    /// The current weights, by parameter name.
    fn snapshot(&self) -> Result<Vec<(String, Vec<f32>)>> {
        self.store
            .entries()
            .iter()
            .map(|e| Ok((e.name.clone(), self.store.get(&e.name)?.data)))
            .collect()
    }

    /// Train for `opts.epochs` epochs over `train`, validating on `validation` per `opts`, calling
    /// `callback` after every step, validation and epoch. See the module documentation.
    pub fn fit(
        &mut self,
        opts: &FitOptions,
        train: &mut dyn Batches,
        mut validation: Option<&mut dyn Batches>,
        callback: &mut dyn FnMut(&mut Self, &Event) -> Result<Control>,
    ) -> Result<FitReport> {
        if validation.is_some() && self.eval.is_none() {
            return crate::error::invalid(
                "Learner::fit",
                "validation batches need an evaluation program (Learner::evaluation)",
            );
        }
        if opts.patience == Some(0) {
            return crate::error::invalid(
                "Learner::fit",
                "patience 0 would stop before training; use None for no early stopping",
            );
        }
        if let Validate::EverySteps(0) = opts.validate {
            return crate::error::invalid("Learner::fit", "validate every 0 steps");
        }
        if let Some(dir) = &opts.metrics {
            crate::metrics::prepare_dir(dir)?;
        }
        let higher_better = opts.monitor.contains("acc");
        let fit_start = Instant::now();
        let mut report = FitReport::default();
        let mut best_weights: Option<Vec<(String, Vec<f32>)>> = None;
        let mut since_best = 0usize;
        let mut train_time = 0.0;
        let mut samples_seen = 0usize;
        let mut step_no = 0u64;
        for e in 1..=opts.start_epoch {
            // Let the source replay skipped epochs' shuffles.
            let _ = train.start(e)?;
        }
        let mut stop = false;
        'epochs: for epoch in opts.start_epoch + 1..=opts.epochs {
            let steps = train.start(epoch)?;
            if steps == 0 {
                return crate::error::invalid("Learner::fit", format!("epoch {epoch} has no batches"));
            }
            if step_no == 0 {
                step_no = (opts.start_epoch * steps) as u64;
            }
            // (loss sum, samples), then the training metrics; the metrics are moved out while
            // the loop runs (a callback sees a Learner without them).
            let metrics = std::mem::take(&mut self.train_metrics);
            let mut loss_tally = (0f64, 0f64);
            let mut tally = Tally::new(metrics.len());
            let start = Instant::now();
            let mut bar = Progress::training(opts.progress, format!("epoch {epoch}/{}", opts.epochs), steps as u64);
            let mut last_validation: Option<Scores> = None;
            let mut epoch_samples = 0usize;
            let result = (|| -> Result<bool> {
                for i in 0..steps {
                    let t0 = Instant::now();
                    let lr = self.train.learning_rate();
                    let b = train.batch(i)?;
                    let (l, out) = self.step(&b)?;
                    step_no += 1;
                    report
                        .first_step_s
                        .get_or_insert_with(|| fit_start.elapsed().as_secs_f64());
                    epoch_samples += b.samples;
                    loss_tally.0 += l as f64 * b.samples as f64;
                    loss_tally.1 += b.samples as f64;
                    tally.add(&metrics, &out, &b)?;
                    report.log.steps.push(StepMetrics {
                        epoch,
                        step: step_no,
                        loss: l,
                        samples_per_s: b.samples as f64 / t0.elapsed().as_secs_f64().max(1e-9),
                        learning_rate: lr,
                    });
                    bar.update(
                        i as u64 + 1,
                        epoch_samples as u64,
                        Some(loss_tally.0 / loss_tally.1.max(1.0)),
                    );
                    let ev = Event::Step {
                        epoch,
                        step: step_no,
                        loss: l,
                        outputs: &out,
                    };
                    if callback(self, &ev)? == Control::Stop {
                        return Ok(true);
                    }
                    let due = match opts.validate {
                        Validate::EveryEpoch => i + 1 == steps,
                        Validate::EverySteps(n) => step_no.is_multiple_of(n as u64),
                    };
                    if let (true, Some(v)) = (due, validation.as_deref_mut()) {
                        let s = self.evaluate_with(v, opts.progress, "validation")?;
                        let value = s.get(&opts.monitor).ok_or_else(|| Error::Invalid {
                            op: "Learner::fit",
                            reason: format!("no validation metric named `{}` to monitor (have {s})", opts.monitor),
                        })?;
                        let better = match report.best {
                            None => true,
                            Some((_, _, b)) => (higher_better && value > b) || (!higher_better && value < b),
                        };
                        if better {
                            report.best = Some((epoch, step_no, value));
                            since_best = 0;
                            if opts.restore_best {
                                best_weights = Some(self.snapshot()?);
                            }
                        } else {
                            since_best += 1;
                        }
                        report.validation.push((epoch, step_no, s.clone()));
                        let ev = Event::Validated {
                            epoch,
                            step: step_no,
                            scores: &s,
                        };
                        let c = callback(self, &ev)?;
                        last_validation = Some(s);
                        if c == Control::Stop {
                            return Ok(true);
                        }
                        if opts.patience.is_some_and(|p| since_best >= p) {
                            if opts.progress {
                                bar.finish();
                                eprintln!(
                                    "early stopping: validation {} has not improved for {since_best} evaluations",
                                    opts.monitor
                                );
                            }
                            return Ok(true);
                        }
                    }
                }
                Ok(false)
            })();
            bar.finish();
            train_time += start.elapsed().as_secs_f64();
            samples_seen += epoch_samples;
            let mut train_scores = Scores(vec![("loss".into(), loss_tally.0 / loss_tally.1.max(1.0))]);
            train_scores.0.extend(tally.scores(&metrics).0);
            self.train_metrics = metrics;
            let stopped = result?;
            report.log.epochs.push(EpochMetrics {
                epoch,
                step: step_no,
                train_loss: train_scores.get("loss").unwrap_or(f64::NAN) as f32,
                train_accuracy: train_scores.get("accuracy").unwrap_or(f64::NAN) as f32,
                validation_loss: last_validation.as_ref().and_then(|s| s.get("loss")).map(|v| v as f32),
                validation_accuracy: last_validation
                    .as_ref()
                    .and_then(|s| s.get("accuracy"))
                    .map(|v| v as f32),
                seconds: start.elapsed().as_secs_f64(),
            });
            if opts.progress {
                let v = last_validation
                    .as_ref()
                    .map_or(String::new(), |s| format!("; validation: {s}"));
                eprintln!("epoch {epoch}/{}: train: {train_scores}{v}", opts.epochs);
            }
            if let Some(dir) = &opts.metrics {
                report.log.write(dir)?;
            }
            let ev = Event::Epoch {
                epoch,
                train: &train_scores,
                validation: last_validation.as_ref(),
            };
            let c = callback(self, &ev)?;
            report.train.push(train_scores);
            if stopped || c == Control::Stop {
                stop = true;
                break 'epochs;
            }
        }
        report.stopped_early = stop;
        report.samples_per_s = samples_seen as f64 / train_time.max(1e-9);
        if let (Some(w), Some((e, s, v))) = (best_weights, report.best) {
            for (name, data) in &w {
                self.store.set(name, data)?;
            }
            report.restored_best = true;
            if opts.progress {
                eprintln!(
                    "restored the weights of epoch {e} (step {s}), the best validation {} ({v:.4})",
                    opts.monitor
                );
            }
        }
        Ok(report)
    }
}
