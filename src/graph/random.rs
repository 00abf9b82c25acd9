//! Builders for sampling on the device from the counter-based generator (dropout's masks are
//! built in `conv.rs`): Bernoulli samples and masking noise. Every draw is keyed by (seed, step,
//! node), so a rerun draws the same numbers and every training step fresh ones.

use super::{Graph, NodeId, Op};
use crate::error::{invalid, Result};

impl Graph {
    /// Independent 0/1 samples: element `i` is 1 with probability `p[i]` (values outside
    /// `[0, 1]` act as 0 or 1), of `p`'s shape and float type. No gradient flows through a
    /// sample. A restricted Boltzmann machine's Gibbs step is `bernoulli(sigmoid(v·W + c))`.
    pub fn bernoulli(&mut self, p: NodeId) -> Result<NodeId> {
        self.check_ids("bernoulli", &[p])?;
        // The node's own index keys its stream, as dropout's masks are keyed: distinct per node.
        let key = self.nodes().len() as u32;
        let s = self.shape(p).clone();
        self.push(Op::Bernoulli { key }, vec![p], s)
    }

    /// Masking noise, as denoising autoencoders corrupt their input: each element of `x` is set
    /// to 0 with probability `p` and kept unchanged otherwise (no `1/(1−p)` rescaling, unlike
    /// dropout), with a fresh mask every step. The gradient flows to the kept elements.
    pub fn masking_noise(&mut self, x: NodeId, p: f32) -> Result<NodeId> {
        self.check_ids("masking_noise", &[x])?;
        if !(0.0..1.0).contains(&p) {
            return invalid(
                "masking_noise",
                format!("masking probability must be in [0, 1), got {p}"),
            );
        }
        if p == 0.0 {
            return Ok(x);
        }
        let keep = self.constant_typed(1.0 - p, self.shape(x).clone(), self.dtype(x));
        let mask = self.bernoulli(keep)?;
        self.mul(x, mask)
    }
}
