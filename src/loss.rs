//! Loss functions, penalties and metrics, as graph builders. Every loss returns a scalar node
//! (the mean over the batch unless stated), ready for [`crate::backward`]. Losses compute in
//! f32: f16 predictions are converted first (as mixed-precision training does in every
//! framework), so a loss is never rounded to f16.

use crate::error::{invalid, Error, Result};
use crate::graph::{Graph, NodeId};
use crate::shape::DType;

/// `x` in f32 (itself when it already is).
fn f32(g: &mut Graph, x: NodeId) -> Result<NodeId> {
    if g.dtype(x) == DType::F16 {
        g.cast(x, DType::F32)
    } else {
        Ok(x)
    }
}

fn same_shape(g: &Graph, op: &'static str, a: NodeId, b: NodeId) -> Result<()> {
    if g.shape(a) != g.shape(b) {
        return Err(Error::Shape {
            op,
            node: format!("{} vs {}", g.describe(a), g.describe(b)),
            shapes: vec![g.shape(a).0.clone(), g.shape(b).0.clone()],
            reason: "prediction and target must have the same shape".into(),
        });
    }
    Ok(())
}

/// Mean squared error, `mean((p − t)²)`.
pub fn mse(g: &mut Graph, pred: NodeId, target: NodeId) -> Result<NodeId> {
    same_shape(g, "mse", pred, target)?;
    let (pred, target) = (f32(g, pred)?, f32(g, target)?);
    let d = g.sub(pred, target)?;
    let s = g.square(d)?;
    g.mean_all(s)
}

/// Mean absolute error, `mean(|p − t|)`.
pub fn l1(g: &mut Graph, pred: NodeId, target: NodeId) -> Result<NodeId> {
    same_shape(g, "l1", pred, target)?;
    let (pred, target) = (f32(g, pred)?, f32(g, target)?);
    let d = g.sub(pred, target)?;
    let a = g.abs(d)?;
    g.mean_all(a)
}

/// Mean bias error, `mean(p − t)`: a metric (positive when predictions run high).
pub fn mean_bias_error(g: &mut Graph, pred: NodeId, target: NodeId) -> Result<NodeId> {
    same_shape(g, "mean_bias_error", pred, target)?;
    let d = g.sub(pred, target)?;
    g.mean_all(d)
}

/// Softmax cross-entropy of logits `(N, C)` against integer labels `(N)`, averaged over the
/// batch. Fused and computed through log-sum-exp, so large logits do not overflow.
pub fn cross_entropy(g: &mut Graph, logits: NodeId, labels: NodeId) -> Result<NodeId> {
    cross_entropy_smoothed(g, logits, labels, 0.0)
}

/// Cross-entropy against labels smoothed by ε: targets `(1−ε)·onehot + ε/C`.
pub fn cross_entropy_smoothed(g: &mut Graph, logits: NodeId, labels: NodeId, eps: f32) -> Result<NodeId> {
    let logits = f32(g, logits)?;
    let per_row = g.softmax_cross_entropy(logits, labels, eps)?;
    g.mean_all(per_row)
}

/// Binary cross-entropy on logits against targets in `[0, 1]`, averaged:
/// `mean(softplus(x) − t·x)`, which equals `−t·ln σ(x) − (1−t)·ln(1−σ(x))` and never saturates.
pub fn bce_with_logits(g: &mut Graph, logits: NodeId, targets: NodeId) -> Result<NodeId> {
    same_shape(g, "bce_with_logits", logits, targets)?;
    let (logits, targets) = (f32(g, logits)?, f32(g, targets)?);
    let sp = g.softplus(logits)?;
    let tx = g.mul(targets, logits)?;
    let l = g.sub(sp, tx)?;
    g.mean_all(l)
}

/// Multiclass hinge (SVM) loss of scores `(N, C)` against labels `(N)` with margin Δ:
/// `mean_i Σ_{j≠yᵢ} max(0, s_j − s_{yᵢ} + Δ)` (Weston & Watkins), the CS231n convention. It is
/// `C` times PyTorch's `multi_margin_loss` with `p = 1`; see [`multi_margin`] for PyTorch's.
pub fn multiclass_hinge(g: &mut Graph, scores: NodeId, labels: NodeId, margin: f32) -> Result<NodeId> {
    let per_row = hinge_terms(g, "multiclass_hinge", scores, labels, margin, 1)?;
    let per_row = g.sum(per_row, &[1], false)?;
    g.mean_all(per_row)
}

/// PyTorch's `multi_margin_loss`: `mean_i (1/C) Σ_{j≠yᵢ} max(0, Δ − s_{yᵢ} + s_j)^p` for scores
/// `(N, C)`, labels `(N)`, `p` 1 or 2 and margin Δ (PyTorch's defaults: `p = 1`, `Δ = 1`).
pub fn multi_margin(g: &mut Graph, scores: NodeId, labels: NodeId, p: u32, margin: f32) -> Result<NodeId> {
    if p != 1 && p != 2 {
        return invalid("multi_margin", format!("p must be 1 or 2, got {p}"));
    }
    let terms = hinge_terms(g, "multi_margin", scores, labels, margin, p)?;
    // The mean over both axes is the mean over rows of (1/C)·Σ_j.
    g.mean_all(terms)
}

/// `max(0, s_j − s_y + Δ)^p` for `j ≠ y`, 0 at `j = y`: `(N, C)`.
fn hinge_terms(g: &mut Graph, op: &'static str, scores: NodeId, labels: NodeId, margin: f32, p: u32) -> Result<NodeId> {
    let scores = f32(g, scores)?;
    let dims = g.shape(scores).dims().to_vec();
    if dims.len() != 2 {
        return Err(Error::Shape {
            op,
            node: g.describe(scores),
            shapes: vec![dims],
            reason: "expected scores (N, C)".into(),
        });
    }
    let onehot = g.one_hot(labels, dims[1])?;
    let picked = g.mul(scores, onehot)?;
    let sy = g.sum(picked, &[1], true)?; // (N, 1)
    let d = g.sub(scores, sy)?;
    let d = g.add_scalar(d, margin)?;
    let m = g.relu(d)?;
    let m = if p == 2 { g.square(m)? } else { m };
    let not_y = g.mul_scalar(onehot, -1.0)?;
    let not_y = g.add_scalar(not_y, 1.0)?;
    g.mul(m, not_y)
}

/// Pairwise contrastive loss (Hadsell, Chopra & LeCun 2006) of embeddings `a, b: (N, D)` with
/// `same: (N)` equal to 1 for similar pairs and 0 for dissimilar ones:
/// `mean(same·d²/2 + (1 − same)·max(0, m − d)²/2)` with `d = √(‖a − b‖² + 1e-12)` (the tiny
/// constant keeps the gradient finite when a pair coincides).
pub fn contrastive(g: &mut Graph, a: NodeId, b: NodeId, same: NodeId, margin: f32) -> Result<NodeId> {
    same_shape(g, "contrastive", a, b)?;
    let n = g.shape(a).dims()[0];
    if g.shape(a).rank() != 2 || g.shape(same).dims() != [n] {
        return Err(Error::Shape {
            op: "contrastive",
            node: g.describe(same),
            shapes: vec![g.shape(a).0.clone(), g.shape(same).0.clone()],
            reason: "expected embeddings (N, D) and pair labels (N)".into(),
        });
    }
    let diff = g.sub(a, b)?;
    let sq = g.square(diff)?;
    let d2 = g.sum(sq, &[1], false)?;
    let d2e = g.add_scalar(d2, 1e-12)?;
    let d = g.sqrt(d2e)?;
    let pos = g.mul(same, d2)?;
    let gap = g.neg(d)?;
    let gap = g.add_scalar(gap, margin)?;
    let gap = g.relu(gap)?;
    let gap2 = g.square(gap)?;
    let dissimilar = g.mul_scalar(same, -1.0)?;
    let dissimilar = g.add_scalar(dissimilar, 1.0)?;
    let neg = g.mul(dissimilar, gap2)?;
    let total = g.add(pos, neg)?;
    let total = g.mul_scalar(total, 0.5)?;
    g.mean_all(total)
}

/// `Σ wᵢ·lossᵢ`, for multi-task training.
pub fn weighted_sum(g: &mut Graph, terms: &[(NodeId, f32)]) -> Result<NodeId> {
    let mut acc: Option<NodeId> = None;
    for &(l, w) in terms {
        if g.shape(l).numel() != 1 {
            return Err(Error::Shape {
                op: "weighted_sum",
                node: g.describe(l),
                shapes: vec![g.shape(l).0.clone()],
                reason: "each term must be a scalar loss".into(),
            });
        }
        let t = g.mul_scalar(l, w)?;
        acc = Some(match acc {
            Some(a) => g.add(a, t)?,
            None => t,
        });
    }
    match acc {
        Some(a) => Ok(a),
        None => invalid("weighted_sum", "needs at least one term"),
    }
}

/// The parameters that norm penalties apply to by default: those marked for decay (weights;
/// not biases).
pub fn decayed_params(g: &Graph) -> Vec<NodeId> {
    g.params()
        .iter()
        .filter(|p| p.decay && p.trainable)
        .map(|p| p.node)
        .collect()
}

/// Elastic-net penalty `λ₁·Σ|w| + λ₂·Σw²` over `params` (L1 with `λ₂ = 0`, L2 with `λ₁ = 0`).
pub fn elastic_net(g: &mut Graph, params: &[NodeId], l1: f32, l2: f32) -> Result<NodeId> {
    if !(l1 >= 0.0 && l2 >= 0.0) {
        return invalid(
            "elastic_net",
            format!("penalty weights must be non-negative, got l1 = {l1}, l2 = {l2}"),
        );
    }
    let mut terms = Vec::new();
    for &p in params {
        if l1 > 0.0 {
            let a = g.abs(p)?;
            terms.push((g.sum_all(a)?, l1));
        }
        if l2 > 0.0 {
            let s = g.square(p)?;
            terms.push((g.sum_all(s)?, l2));
        }
    }
    if terms.is_empty() {
        return Ok(g.scalar(0.0));
    }
    weighted_sum(g, &terms)
}

/// L1 penalty `λ·Σ|w|`.
pub fn l1_penalty(g: &mut Graph, params: &[NodeId], lambda: f32) -> Result<NodeId> {
    elastic_net(g, params, lambda, 0.0)
}

/// L2 penalty `λ·Σw²`.
pub fn l2_penalty(g: &mut Graph, params: &[NodeId], lambda: f32) -> Result<NodeId> {
    elastic_net(g, params, 0.0, lambda)
}

/// Fraction of rows of `(N, C)` logits whose argmax equals the label.
pub fn accuracy(logits: &crate::Tensor, labels: &[u32]) -> f32 {
    let pred = logits.argmax_rows();
    let hits = pred.iter().zip(labels).filter(|(p, l)| **p == **l as usize).count();
    hits as f32 / labels.len().max(1) as f32
}
