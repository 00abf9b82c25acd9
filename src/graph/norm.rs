//! Builders for batch normalisation's kernels: the per-channel statistics of a batch, the
//! normalisation itself, and the two sums its gradient needs. Composed of primitive ops, batch
//! norm costs about twenty passes over the activations per training step (a mean, a centring,
//! a square, another mean, then as many in the backward pass); these three ops make it two
//! reads forward plus one read and write, and one read of two tensors backward before the
//! element-wise gradient, which the fusion pass folds into one kernel.

use super::{shape_err, Graph, NodeId, Op};
use crate::error::Result;
use crate::shape::Shape;

impl Graph {
    /// `(N, C, S)` of a channel-first shape of rank ≥ 2 (`S` the product of the axes after the
    /// channels), checking that every channel has at least one element.
    pub(crate) fn channel_dims(&self, op: &'static str, x: NodeId) -> Result<(usize, usize, usize)> {
        let d = self.shape(x).dims();
        if d.len() < 2 || d.contains(&0) {
            return Err(shape_err(
                op,
                self.describe_new(&[x]),
                vec![self.shape(x)],
                "expected a non-empty (N, C, …) tensor, channels on axis 1",
            ));
        }
        Ok((d[0], d[1], d[2..].iter().product()))
    }

    /// Each channel's mean and biased variance over every axis but axis 1 of `x (N, C, …)`:
    /// `(2, C)`, row 0 the means, row 1 the variances `Σ(x − mean)²/count` (a batch norm
    /// layer's batch statistics). Differentiable.
    pub fn channel_moments(&mut self, x: NodeId) -> Result<NodeId> {
        self.check_ids("channel_moments", &[x])?;
        let (_, c, _) = self.channel_dims("channel_moments", x)?;
        self.push(Op::ChannelMoments, vec![x], Shape(vec![2, c]))
    }

    /// Batch normalisation of `x (N, C, …)` with the per-channel statistics `moments (2, C)`
    /// (means, then variances: [`Graph::channel_moments`] in training, running averages in
    /// evaluation) and `affine (2, C)` (γ, then β): `y = (x − mean)·γ/√(var + eps) + β`.
    /// Differentiable in all three; the gradient reaching `moments` flows on into `x` through
    /// [`Graph::channel_moments`] when they are the batch's own.
    pub fn batch_norm(&mut self, x: NodeId, moments: NodeId, affine: NodeId, eps: f32) -> Result<NodeId> {
        self.check_ids("batch_norm", &[x, moments, affine])?;
        let (_, c, _) = self.channel_dims("batch_norm", x)?;
        for t in [moments, affine] {
            if self.shape(t).dims() != [2, c] {
                return Err(shape_err(
                    "batch_norm",
                    self.describe_new(&[x, moments, affine]),
                    vec![self.shape(x), self.shape(moments), self.shape(affine)],
                    format!("moments and affine must be (2, {c}) for {c} channels"),
                ));
            }
        }
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(shape_err(
                "batch_norm",
                self.describe_new(&[x, moments, affine]),
                vec![self.shape(x)],
                format!("eps must be finite and non-negative, got {eps}"),
            ));
        }
        let s = self.shape(x).clone();
        self.push(Op::BatchNorm { eps }, vec![x, moments, affine], s)
    }

    /// Σ dy and Σ dy·(x − mean) per channel, `(2, C)`: what [`Op::BatchNorm`]'s gradient reads
    /// of the whole batch.
    pub(crate) fn batch_norm_sums(&mut self, x: NodeId, moments: NodeId, dy: NodeId) -> Result<NodeId> {
        let (_, c, _) = self.channel_dims("batch_norm_sums", x)?;
        self.push(Op::BatchNormSums, vec![x, moments, dy], Shape(vec![2, c]))
    }
}
