//! Ensembles and bagging: K classifiers, each trained on a bootstrap resample of the training
//! set (bagging) or on all of it from its own initial weights and batch order, whose predicted
//! class probabilities are averaged. A [`Predictor`] evaluates one trained model's
//! probabilities; an [`Ensemble`] holds K of them.

use crate::backend::Backend;
use crate::data::Dataset;
use crate::error::{invalid, Result};
use crate::exec::{Feed, ParamStore, Program};
use crate::graph::{Graph, NodeId};
use crate::optim::Optimizer;
use crate::train::{FitConfig, Trainer};

/// A classifier: `(graph, input, train) → logits`, as [`Trainer::classifier`] takes it.
pub type Model<'a> = &'a dyn Fn(&mut Graph, NodeId, bool) -> Result<NodeId>;

/// An extra training loss term (e.g. an L2 penalty), as [`Trainer::classifier`] takes it.
pub type Penalty<'a> = &'a dyn Fn(&mut Graph) -> Result<NodeId>;

/// A trained classifier's class probabilities, `softmax(model(x, false))`, over batches of
/// samples. It holds its own copy of the weights ([`Predictor::load`] copies them in).
pub struct Predictor<B: Backend> {
    store: ParamStore<B>,
    program: Program<B>,
    probs: NodeId,
    params: Vec<String>,
    batch: usize,
    sample_shape: Vec<usize>,
    classes: usize,
}

impl<B: Backend> Predictor<B> {
    /// The evaluation graph of `model` (`train` false) on batches of `batch` samples of
    /// `sample_shape`, ending in the softmax over `classes` logits; weights from their
    /// initialisers until [`Predictor::load`].
    pub fn new(backend: &B, sample_shape: &[usize], classes: usize, batch: usize, model: Model<'_>) -> Result<Self> {
        if batch == 0 {
            return invalid("Predictor", "batch size must be at least 1");
        }
        let mut g = Graph::new();
        let mut shape = vec![batch];
        shape.extend_from_slice(sample_shape);
        let x = g.input("x", shape)?;
        let logits = model(&mut g, x, false)?;
        if g.shape(logits).dims() != [batch, classes] {
            return Err(crate::error::Error::Shape {
                op: "Predictor",
                node: g.describe(logits),
                shapes: vec![g.shape(logits).0.clone()],
                reason: format!("the model must return logits ({batch}, {classes})"),
            });
        }
        let logits = g.cast(logits, crate::shape::DType::F32)?;
        let probs = g.softmax(logits)?;
        let mut store = ParamStore::new(backend, &g, 0)?;
        let program = Program::compile(&g, &mut store, &[probs], None)?;
        Ok(Predictor {
            store,
            program,
            probs,
            params: g.params().iter().map(|p| p.name.clone()).collect(),
            batch,
            sample_shape: sample_shape.to_vec(),
            classes,
        })
    }

    /// Copy every parameter the model uses (weights, and batch-norm statistics) from `from`,
    /// e.g. a [`Trainer`]'s store; a missing or misshapen one is an error naming it.
    pub fn load<C: Backend>(&mut self, from: &ParamStore<C>) -> Result<()> {
        for name in &self.params {
            self.store.set(name, &from.get(name)?.data)?;
        }
        Ok(())
    }

    /// The model's parameters (the predictor's copy).
    pub fn store(&self) -> &ParamStore<B> {
        &self.store
    }

    /// Class probabilities of every sample of `data`, `(data.len(), classes)` row-major.
    pub fn probabilities(&mut self, data: &Dataset) -> Result<Vec<f32>> {
        if data.sample_shape != self.sample_shape || data.classes != self.classes {
            return invalid(
                "Predictor::probabilities",
                format!(
                    "samples {:?} of {} classes, but the model takes {:?} and predicts {}",
                    data.sample_shape, data.classes, self.sample_shape, self.classes
                ),
            );
        }
        let per: usize = self.sample_shape.iter().product();
        let mut x = vec![0f32; self.batch * per];
        let mut y = vec![0u32; self.batch];
        let mut out = Vec::with_capacity(data.len() * self.classes);
        let order: Vec<usize> = (0..data.len()).collect();
        for idx in order.chunks(self.batch) {
            data.gather(idx, &mut x, &mut y)?;
            let r = self.program.run(&[("x", Feed::F32(&x))])?;
            out.extend_from_slice(&r.get(self.probs)?.data[..idx.len() * self.classes]);
        }
        Ok(out)
    }
}

/// The fraction of rows of `probs` `(labels.len(), classes)` whose largest entry is at the
/// label (the first largest, on ties).
pub fn accuracy(probs: &[f32], labels: &[u32], classes: usize) -> f32 {
    if labels.is_empty() || classes == 0 {
        return 0.0;
    }
    let hits = probs
        .chunks(classes)
        .zip(labels)
        .filter(|(row, &l)| {
            let best = row.iter().enumerate().fold(
                (0, f32::NEG_INFINITY),
                |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) },
            );
            best.0 == l as usize
        })
        .count();
    hits as f32 / labels.len() as f32
}

/// The element-wise mean of equally long probability tables.
pub fn average(tables: &[Vec<f32>]) -> Vec<f32> {
    let Some(first) = tables.first() else {
        return Vec::new();
    };
    let mut mean = vec![0f32; first.len()];
    for t in tables {
        for (m, &v) in mean.iter_mut().zip(t) {
            *m += v;
        }
    }
    let k = tables.len() as f32;
    mean.iter_mut().for_each(|m| *m /= k);
    mean
}

/// What each member of an ensemble is trained as: [`Trainer::classifier`]'s arguments.
pub struct Recipe<'a> {
    /// Shape of one sample.
    pub sample_shape: Vec<usize>,
    /// Classes.
    pub classes: usize,
    /// Samples per step.
    pub batch: usize,
    /// The model (called with `train` true for training, false for prediction).
    pub model: Model<'a>,
    /// An extra training loss term, e.g. an L2 penalty.
    pub penalty: Option<Penalty<'a>>,
    /// The optimiser.
    pub optimizer: Optimizer,
}

/// How the members differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bagging {
    /// How many members.
    pub members: usize,
    /// Train each member on a bootstrap resample of the data (bagging); `false` trains every
    /// member on all of it, so only their initial weights and batch orders differ.
    pub bootstrap: bool,
    /// Member `k` starts from the weights of seed `seed + k`, shuffles with `fit.seed + k` and
    /// resamples with a key of (`seed`, `k`); member 0 with `bootstrap` off is the single model
    /// `Trainer::classifier(.., seed)` fitted with `fit`.
    pub seed: u64,
}

/// Accuracies of an ensemble and of each of its members on one dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct EnsembleAccuracy {
    /// Each member's accuracy.
    pub members: Vec<f32>,
    /// The accuracy of the averaged probabilities.
    pub ensemble: f32,
}

impl EnsembleAccuracy {
    /// The best member's accuracy.
    pub fn best_member(&self) -> f32 {
        self.members.iter().copied().fold(0.0, f32::max)
    }

    /// The mean member accuracy.
    pub fn mean_member(&self) -> f32 {
        self.members.iter().sum::<f32>() / self.members.len().max(1) as f32
    }
}

/// K trained predictors whose probabilities are averaged.
pub struct Ensemble<B: Backend> {
    members: Vec<Predictor<B>>,
}

impl<B: Backend> Ensemble<B> {
    /// An ensemble of already trained predictors (at least one).
    pub fn new(members: Vec<Predictor<B>>) -> Result<Self> {
        if members.is_empty() {
            return invalid("Ensemble", "an ensemble needs at least one member");
        }
        Ok(Ensemble { members })
    }

    /// Train `bagging.members` classifiers by `recipe` on `data` (or on bootstrap resamples of
    /// it), each with `fit` (its seed offset per member; see [`Bagging::seed`]). With
    /// `fit.progress` each member's training is shown, after a line naming it.
    pub fn train(backend: &B, recipe: &Recipe<'_>, data: &Dataset, bagging: &Bagging, fit: &FitConfig) -> Result<Self> {
        if bagging.members == 0 {
            return invalid("Ensemble::train", "an ensemble needs at least one member");
        }
        let mut members = Vec::with_capacity(bagging.members);
        for k in 0..bagging.members {
            let k64 = k as u64;
            let resampled;
            let train = if bagging.bootstrap {
                resampled = data.bootstrap(crate::rng::key(bagging.seed, &format!("bootstrap {k}")));
                &resampled
            } else {
                data
            };
            if fit.progress {
                eprintln!(
                    "member {}/{}: {} samples{}",
                    k + 1,
                    bagging.members,
                    train.len(),
                    if bagging.bootstrap { " (bootstrap resample)" } else { "" }
                );
            }
            let mut t = Trainer::classifier(
                backend,
                &recipe.sample_shape,
                recipe.classes,
                recipe.batch,
                recipe.model,
                recipe.penalty,
                &recipe.optimizer,
                bagging.seed.wrapping_add(k64),
            )?;
            let cfg = FitConfig {
                seed: fit.seed.wrapping_add(k64),
                ..fit.clone()
            };
            t.fit(train, None, &cfg)?;
            let mut p = Predictor::new(
                backend,
                &recipe.sample_shape,
                recipe.classes,
                recipe.batch,
                recipe.model,
            )?;
            p.load(t.store())?;
            members.push(p);
        }
        Ok(Ensemble { members })
    }

    /// The members.
    pub fn members(&self) -> &[Predictor<B>] {
        &self.members
    }

    /// Each member's class probabilities on `data` (see [`Predictor::probabilities`]).
    pub fn member_probabilities(&mut self, data: &Dataset) -> Result<Vec<Vec<f32>>> {
        self.members.iter_mut().map(|m| m.probabilities(data)).collect()
    }

    /// The members' averaged class probabilities on `data`, `(data.len(), classes)`.
    pub fn probabilities(&mut self, data: &Dataset) -> Result<Vec<f32>> {
        Ok(average(&self.member_probabilities(data)?))
    }

    /// Each member's accuracy on `data`, and the ensemble's.
    pub fn evaluate(&mut self, data: &Dataset) -> Result<EnsembleAccuracy> {
        let each = self.member_probabilities(data)?;
        Ok(EnsembleAccuracy {
            members: each.iter().map(|p| accuracy(p, &data.labels, data.classes)).collect(),
            ensemble: accuracy(&average(&each), &data.labels, data.classes),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averaging_and_accuracy() {
        // Two members that each get one of two samples right; their mean gets both.
        let a = vec![0.9, 0.1, 0.6, 0.4];
        let b = vec![0.3, 0.7, 0.1, 0.9];
        let labels = [0, 1];
        assert_eq!(accuracy(&a, &labels, 2), 0.5);
        assert_eq!(accuracy(&b, &labels, 2), 0.5);
        let m = average(&[a, b]);
        assert!(
            m.iter().zip([0.6, 0.4, 0.35, 0.65]).all(|(x, y)| (x - y).abs() < 1e-6),
            "{m:?}"
        );
        assert_eq!(accuracy(&m, &labels, 2), 1.0);
        assert!(average(&[]).is_empty());
        assert_eq!(accuracy(&[], &[], 2), 0.0);
    }
}
