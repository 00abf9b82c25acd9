//! Convolutional layers: convolution, pooling, batch norm, dropout and the residual block.
//! Layers whose behaviour differs between training and evaluation take `train: bool`.

use crate::error::{invalid, Result};
use crate::graph::{Graph, NodeId};
use crate::init::Init;

/// 2-D convolution with weights `(O, C/groups, KH, KW)` (He-uniform) and an optional bias `(O)`.
#[derive(Clone, Copy, Debug)]
pub struct Conv2d {
    /// Weights `(out, in, kh, kw)`.
    pub w: NodeId,
    /// Bias `(out)`.
    pub b: Option<NodeId>,
    /// Stride.
    pub stride: [usize; 2],
    /// Zero padding.
    pub pad: [usize; 2],
    /// Dilation.
    pub dilation: [usize; 2],
    /// Channel groups (1: every output sees every input).
    pub groups: usize,
}

impl Conv2d {
    /// A `k×k` convolution `in → out` channels with stride and padding, He-uniform weights and
    /// zero bias, parameters `{name}.w` and `{name}.b`.
    pub fn new(
        g: &mut Graph,
        name: &str,
        inputs: usize,
        outputs: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Result<Self> {
        Self::with_init(g, name, inputs, outputs, k, stride, pad, Init::HeUniform, Init::Zeros)
    }

    /// Like [`Conv2d::new`] with chosen weight and bias initialisers.
    #[allow(clippy::too_many_arguments)]
    pub fn with_init(
        g: &mut Graph,
        name: &str,
        inputs: usize,
        outputs: usize,
        k: usize,
        stride: usize,
        pad: usize,
        w_init: Init,
        b_init: Init,
    ) -> Result<Self> {
        let w = g.param(&format!("{name}.w"), [outputs, inputs, k, k], w_init)?;
        let b = Some(g.param(&format!("{name}.b"), [outputs], b_init)?);
        Ok(Conv2d {
            w,
            b,
            stride: [stride; 2],
            pad: [pad; 2],
            dilation: [1, 1],
            groups: 1,
        })
    }

    /// A grouped `k×k` convolution: `groups` divides `inputs` and `outputs`, and output group
    /// `i` sees only input group `i`; weights `(out, in/groups, k, k)`, He-uniform over their
    /// fan-in. `groups = inputs = outputs` is a depthwise convolution.
    #[allow(clippy::too_many_arguments)]
    pub fn grouped(
        g: &mut Graph,
        name: &str,
        inputs: usize,
        outputs: usize,
        k: usize,
        stride: usize,
        pad: usize,
        groups: usize,
    ) -> Result<Self> {
        if groups == 0 || !inputs.is_multiple_of(groups) || !outputs.is_multiple_of(groups) {
            return invalid(
                "conv2d",
                format!("{name}: {groups} groups must divide both {inputs} inputs and {outputs} outputs"),
            );
        }
        let mut c = Self::with_init(
            g,
            name,
            inputs / groups,
            outputs,
            k,
            stride,
            pad,
            Init::HeUniform,
            Init::Zeros,
        )?;
        c.groups = groups;
        Ok(c)
    }

    /// "Same" padding for an odd kernel at stride 1: the output keeps the input's size.
    pub fn same(g: &mut Graph, name: &str, inputs: usize, outputs: usize, k: usize) -> Result<Self> {
        if k.is_multiple_of(2) {
            return invalid("conv2d", format!("'same' padding needs an odd kernel, got {k}"));
        }
        Self::new(g, name, inputs, outputs, k, 1, k / 2)
    }

    /// Without bias (when batch norm follows).
    pub fn no_bias(mut self) -> Self {
        self.b = None;
        self
    }

    /// With dilation `d`.
    pub fn dilated(mut self, d: usize) -> Self {
        self.dilation = [d, d];
        self
    }

    /// `(N, C, H, W)` → `(N, O, OH, OW)`.
    pub fn forward(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let w = g.cast_like(self.w, x)?;
        let y = g.conv2d_grouped(x, w, self.stride, self.pad, self.dilation, self.groups)?;
        match self.b {
            Some(b) => {
                let o = g.shape(b).dims()[0];
                let b = g.cast_like(b, x)?;
                let b4 = g.reshape(b, [1, o, 1, 1])?;
                g.add(y, b4)
            }
            None => Ok(y),
        }
    }
}

/// Max pooling.
#[derive(Clone, Copy, Debug)]
pub struct MaxPool2d {
    /// Kernel size.
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Padding.
    pub pad: usize,
}

impl MaxPool2d {
    /// `(N, C, H, W)` → `(N, C, OH, OW)`.
    pub fn forward(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        g.max_pool2d(x, [self.k; 2], [self.stride; 2], [self.pad; 2])
    }
}

/// Average pooling.
#[derive(Clone, Copy, Debug)]
pub struct AvgPool2d {
    /// Kernel size.
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Padding.
    pub pad: usize,
}

impl AvgPool2d {
    /// `(N, C, H, W)` → `(N, C, OH, OW)`.
    pub fn forward(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        g.avg_pool2d(x, [self.k; 2], [self.stride; 2], [self.pad; 2])
    }
}

/// Inverted dropout: identity at evaluation.
#[derive(Clone, Copy, Debug)]
pub struct Dropout {
    /// Drop probability.
    pub p: f32,
}

impl Dropout {
    /// Apply it.
    pub fn forward(&self, g: &mut Graph, x: NodeId, train: bool) -> Result<NodeId> {
        if train {
            g.dropout(x, self.p)
        } else {
            Ok(x)
        }
    }
}

/// Batch normalisation (Ioffe & Szegedy 2015) over `(N, F)` or `(N, C, H, W)`: batch statistics
/// in training, running averages (momentum 0.1, unbiased variance, as PyTorch) at evaluation;
/// learnable scale γ and shift β.
#[derive(Clone, Copy, Debug)]
pub struct BatchNorm {
    /// γ, `(C)`.
    pub gamma: NodeId,
    /// β, `(C)`.
    pub beta: NodeId,
    /// Running mean, `(C)` (frozen; updated by assignment).
    pub running_mean: NodeId,
    /// Running variance, `(C)`.
    pub running_var: NodeId,
    /// ε added to the variance.
    pub eps: f32,
    /// Weight of the newest batch in the running averages.
    pub momentum: f32,
}

impl BatchNorm {
    /// Batch norm over `channels` features or channels, parameters `{name}.gamma`, `.beta`,
    /// `.running_mean`, `.running_var`.
    pub fn new(g: &mut Graph, name: &str, channels: usize) -> Result<Self> {
        let gamma = g.param(&format!("{name}.gamma"), [channels], Init::Constant(1.0))?;
        let beta = g.param(&format!("{name}.beta"), [channels], Init::Zeros)?;
        let rm = format!("{name}.running_mean");
        let rv = format!("{name}.running_var");
        let running_mean = g.param(&rm, [channels], Init::Zeros)?;
        let running_var = g.param(&rv, [channels], Init::Constant(1.0))?;
        g.set_trainable(&rm, false)?;
        g.set_trainable(&rv, false)?;
        Ok(BatchNorm {
            gamma,
            beta,
            running_mean,
            running_var,
            eps: 1e-5,
            momentum: 0.1,
        })
    }

    /// Normalise `x: (N, C)` or `(N, C, H, W)` per channel. Statistics and normalisation are
    /// computed in f32 whatever `x`'s float type; the result has `x`'s type.
    pub fn forward(&self, g: &mut Graph, x: NodeId, train: bool) -> Result<NodeId> {
        let dtype = g.dtype(x);
        let x = g.cast(x, crate::shape::DType::F32)?;
        let y = self.forward_f32(g, x, train)?;
        g.cast(y, dtype)
    }

    fn forward_f32(&self, g: &mut Graph, x: NodeId, train: bool) -> Result<NodeId> {
        let d = g.shape(x).dims().to_vec();
        let c = g.shape(self.gamma).dims()[0];
        if d.len() != 2 && d.len() != 4 {
            return invalid("batch_norm", format!("expected (N, C) or (N, C, H, W), got {d:?}"));
        }
        if d[1] != c {
            return invalid("batch_norm", format!("input has {} channels, the layer {c}", d[1]));
        }
        // Elements per channel: every axis but the channels'.
        let count: usize = d[0] * d[2..].iter().product::<usize>();
        let row = |g: &mut Graph, t: NodeId| g.reshape(t, [1, c]);
        let moments = if train {
            let moments = g.channel_moments(x)?;
            // Running averages: (1 − m)·running + m·batch, with the unbiased batch variance.
            let m = self.momentum;
            let unbias = count as f32 / (count.max(2) - 1) as f32;
            for (run, r, scale) in [(self.running_mean, 0, 1.0), (self.running_var, 1, unbias)] {
                let s = g.slice(moments, 0, r, r + 1)?;
                let s = g.reshape(s, [c])?;
                let s = g.mul_scalar(s, m * scale)?;
                let r = g.mul_scalar(run, 1.0 - m)?;
                let new = g.add(r, s)?;
                g.assign(run, new)?;
            }
            moments
        } else {
            let (mean, var) = (row(g, self.running_mean)?, row(g, self.running_var)?);
            g.concat(&[mean, var], 0)?
        };
        let (gamma, beta) = (row(g, self.gamma)?, row(g, self.beta)?);
        let affine = g.concat(&[gamma, beta], 0)?;
        g.batch_norm(x, moments, affine, self.eps)
    }
}

/// A basic residual block (He et al. 2016): two 3×3 convolutions with batch norm, and an
/// identity shortcut, or a 1×1 projection with batch norm when the shape changes.
#[derive(Clone, Copy, Debug)]
pub struct ResidualBlock {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    projection: Option<(Conv2d, BatchNorm)>,
}

impl ResidualBlock {
    /// `in → out` channels; `stride` 2 halves the spatial size.
    pub fn new(g: &mut Graph, name: &str, inputs: usize, outputs: usize, stride: usize) -> Result<Self> {
        let conv1 = Conv2d::new(g, &format!("{name}.conv1"), inputs, outputs, 3, stride, 1)?.no_bias();
        let bn1 = BatchNorm::new(g, &format!("{name}.bn1"), outputs)?;
        let conv2 = Conv2d::new(g, &format!("{name}.conv2"), outputs, outputs, 3, 1, 1)?.no_bias();
        let bn2 = BatchNorm::new(g, &format!("{name}.bn2"), outputs)?;
        let projection = if stride != 1 || inputs != outputs {
            Some((
                Conv2d::new(g, &format!("{name}.proj"), inputs, outputs, 1, stride, 0)?.no_bias(),
                BatchNorm::new(g, &format!("{name}.proj_bn"), outputs)?,
            ))
        } else {
            None
        };
        Ok(ResidualBlock {
            conv1,
            bn1,
            conv2,
            bn2,
            projection,
        })
    }

    /// `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`.
    pub fn forward(&self, g: &mut Graph, x: NodeId, train: bool) -> Result<NodeId> {
        let h = self.conv1.forward(g, x)?;
        let h = self.bn1.forward(g, h, train)?;
        let h = g.relu(h)?;
        let h = self.conv2.forward(g, h)?;
        let h = self.bn2.forward(g, h, train)?;
        let s = match &self.projection {
            Some((c, bn)) => {
                let s = c.forward(g, x)?;
                bn.forward(g, s, train)?
            }
            None => x,
        };
        let y = g.add(h, s)?;
        g.relu(y)
    }
}
