//! Layers and activations. A layer owns the parameter nodes it created and adds its ops to a
//! graph when called; building a model twice on one graph (say, for training and evaluation)
//! reuses the same parameters, because parameters are found by name.
//!
//! Mixed precision: a layer computes in its input's float type. Given f16 activations it casts
//! its f32 parameters to f16 for the product (their gradients come back through the cast as
//! f32), so casting a model's input to f16 makes the whole model f16 while the master weights
//! and the optimiser stay f32. Batch norm's statistics are always taken in f32.

mod activation;
mod autoencoder;
mod conv;
mod rbm;
mod rnn;

pub use autoencoder::DenseAutoencoder;
pub use conv::{AvgPool2d, BatchNorm, Conv2d, Dropout, MaxPool2d, ResidualBlock};
pub use rbm::{ContrastiveDivergence, GibbsStep, Rbm};
pub use rnn::{Cell, Embedding, Gru, Lstm, Recurrent, RecurrentOutput, Rnn};

use crate::error::Result;
use crate::graph::{Graph, NodeId};
use crate::init::Init;

/// A fully connected layer: `y = x @ W + b`, with `W: (in, out)` and `b: (out)`.
#[derive(Clone, Copy, Debug)]
pub struct Linear {
    /// The weight, `(in, out)`.
    pub w: NodeId,
    /// The bias, `(out)`, if any.
    pub b: Option<NodeId>,
}

impl Linear {
    /// A layer with Xavier-uniform weights and zero bias, parameters `{name}.w` and `{name}.b`.
    pub fn new(g: &mut Graph, name: &str, inputs: usize, outputs: usize) -> Result<Self> {
        Self::with_init(g, name, inputs, outputs, Init::XavierUniform(1.0), true)
    }

    /// A layer with a chosen weight initialiser, with or without (zero) bias.
    pub fn with_init(g: &mut Graph, name: &str, inputs: usize, outputs: usize, init: Init, bias: bool) -> Result<Self> {
        Self::with_inits(g, name, inputs, outputs, init, bias.then_some(Init::Zeros))
    }

    /// A layer with chosen weight and bias initialisers (`None`: no bias).
    pub fn with_inits(
        g: &mut Graph,
        name: &str,
        inputs: usize,
        outputs: usize,
        w_init: Init,
        b_init: Option<Init>,
    ) -> Result<Self> {
        let w = g.param(&format!("{name}.w"), [inputs, outputs], w_init)?;
        let b = match b_init {
            Some(i) => Some(g.param(&format!("{name}.b"), [outputs], i)?),
            None => None,
        };
        Ok(Linear { w, b })
    }

    /// `x: (..., in) → (..., out)`.
    pub fn forward(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let w = g.cast_like(self.w, x)?;
        let y = g.matmul(x, w)?;
        match self.b {
            Some(b) => {
                let b = g.cast_like(b, x)?;
                g.add(y, b)
            }
            None => Ok(y),
        }
    }
}

/// PReLU (He et al. 2015): `max(0, x) + α·min(0, x)` with α learned, as PyTorch's
/// `nn.PReLU(num_parameters)`: one slope shared by every element (`num_parameters` = 1), or one
/// per channel, the channel being axis 1 (`(N, C)`, `(N, C, L)`, `(N, C, H, W)`). α starts at 0.25.
#[derive(Clone, Copy, Debug)]
pub struct PRelu {
    /// The slopes, `(num_parameters)`.
    pub alpha: NodeId,
}

impl PRelu {
    /// A PReLU with parameter `{name}.alpha` of `num_parameters` slopes (1, or the channels).
    pub fn new(g: &mut Graph, name: &str, num_parameters: usize) -> Result<Self> {
        let alpha = g.param(&format!("{name}.alpha"), [num_parameters], Init::Constant(0.25))?;
        Ok(PRelu { alpha })
    }

    /// Apply it; with one slope per channel, `x` must have them on axis 1.
    pub fn forward(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let c = g.shape(self.alpha).dims()[0];
        if c == 1 {
            return g.prelu(x, self.alpha);
        }
        let d = g.shape(x).dims().to_vec();
        if d.len() < 2 || d[1] != c {
            return Err(crate::error::Error::Shape {
                op: "prelu",
                node: g.describe(x),
                shapes: vec![d, vec![c]],
                reason: format!("{c} slopes need {c} channels on axis 1 of the input"),
            });
        }
        let mut shape = vec![1; d.len()];
        shape[1] = c;
        let alpha = g.reshape(self.alpha, shape)?;
        g.prelu(x, alpha)
    }
}

/// Maxout (Goodfellow et al. 2013): `k` linear pieces per output unit, keep the largest.
#[derive(Clone, Copy, Debug)]
pub struct Maxout {
    linear: Linear,
    units: usize,
    pieces: usize,
}

impl Maxout {
    /// `inputs → units`, each unit the max of `pieces` affine functions.
    pub fn new(g: &mut Graph, name: &str, inputs: usize, units: usize, pieces: usize) -> Result<Self> {
        if pieces == 0 || units == 0 {
            return crate::error::invalid("maxout", "needs at least one unit and one piece");
        }
        Ok(Maxout {
            linear: Linear::new(g, name, inputs, units * pieces)?,
            units,
            pieces,
        })
    }

    /// `x: (N, inputs) → (N, units)`.
    pub fn forward(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let z = self.linear.forward(g, x)?; // (N, units·pieces)
        let n = g.shape(z).dims()[0];
        let z = g.reshape(z, [n, self.units, self.pieces])?;
        g.max(z, &[-1], false)
    }
}

/// `(N, ...)` → `(N, product of the rest)`.
pub fn flatten(g: &mut Graph, x: NodeId) -> Result<NodeId> {
    let d = g.shape(x).dims().to_vec();
    if d.is_empty() {
        return crate::error::invalid("flatten", "cannot flatten a scalar");
    }
    g.reshape(x, [d[0], d[1..].iter().product()])
}

/// How [`lenet5`]'s parameters are named in PyTorch's LeNet-5 (`tools/torch_lenet_mnist.py`:
/// `c1`, `c2` convolutions, `f1`, `f2`, `f3` linear layers): `(PyTorch name, Kiln name,
/// transposed?)`, for [`crate::checkpoint::import`]. Convolution weights share PyTorch's
/// `(O, C, KH, KW)` layout; linear weights are `(out, in)` there and `(in, out)` here.
pub const LENET5_TORCH_NAMES: &[(&str, &str, bool)] = &[
    ("c1.weight", "conv1.w", false),
    ("c1.bias", "conv1.b", false),
    ("c2.weight", "conv2.w", false),
    ("c2.bias", "conv2.b", false),
    ("f1.weight", "fc1.w", true),
    ("f1.bias", "fc1.b", false),
    ("f2.weight", "fc2.w", true),
    ("f2.bias", "fc2.b", false),
    ("f3.weight", "fc3.w", true),
    ("f3.bias", "fc3.b", false),
];

/// LeNet-5 for `(N, 1, 28, 28)` images: conv 5×5×6 pad 2 → ReLU → maxpool 2 → conv 5×5×16 →
/// ReLU → maxpool 2 → FC 120 → ReLU → FC 84 → ReLU → FC 10, initialised as mainstream frameworks
/// do by default (weights and biases U(±1/√fan_in)). Returns logits `(N, 10)`; parameters are
/// named `conv1`, `conv2`, `fc1`, `fc2`, `fc3`.
pub fn lenet5(g: &mut Graph, x: NodeId) -> Result<NodeId> {
    lenet5_for(g, x, 10)
}

/// [`lenet5`] for `(N, C, H, W)` images of any size from 12×12 and `classes` classes: the first
/// convolution takes `C` channels and the first dense layer the `16·⌊(⌊H/2⌋−4)/2⌋·⌊(⌊W/2⌋−4)/2⌋`
/// features the convolutions leave (400 for 28×28).
pub fn lenet5_for(g: &mut Graph, x: NodeId, classes: usize) -> Result<NodeId> {
    let d = g.shape(x).dims().to_vec();
    let side = |n: usize| (n / 2).checked_sub(4).map(|v| v / 2).filter(|&v| v > 0);
    let (c, fh, fw) = match (
        d.len(),
        d.get(2).and_then(|&h| side(h)),
        d.get(3).and_then(|&w| side(w)),
    ) {
        (4, Some(fh), Some(fw)) if classes > 0 => (d[1], fh, fw),
        _ => {
            return Err(crate::error::Error::Shape {
                op: "lenet5",
                node: g.describe(x),
                shapes: vec![d],
                reason: format!(
                    "LeNet-5 needs images (N, C, H, W) of at least 12×12 and at least one class (got {classes})"
                ),
            })
        }
    };
    let conv = |g: &mut Graph, name: &str, i: usize, o: usize, pad: usize| {
        Conv2d::with_init(
            g,
            name,
            i,
            o,
            5,
            1,
            pad,
            Init::torch_default(),
            Init::bias_for_fan_in(i * 25),
        )
    };
    let fc = |g: &mut Graph, name: &str, i: usize, o: usize| {
        Linear::with_inits(g, name, i, o, Init::torch_default(), Some(Init::bias_for_fan_in(i)))
    };
    let c1 = conv(g, "conv1", c, 6, 2)?;
    let c2 = conv(g, "conv2", 6, 16, 0)?;
    let f1 = fc(g, "fc1", 16 * fh * fw, 120)?;
    let f2 = fc(g, "fc2", 120, 84)?;
    let f3 = fc(g, "fc3", 84, classes)?;
    let h = c1.forward(g, x)?; // (N, 6, 28, 28)
    let h = g.relu(h)?;
    let h = g.max_pool2d(h, [2, 2], [2, 2], [0, 0])?; // (N, 6, 14, 14)
    let h = c2.forward(g, h)?; // (N, 16, 10, 10)
    let h = g.relu(h)?;
    let h = g.max_pool2d(h, [2, 2], [2, 2], [0, 0])?; // (N, 16, 5, 5)
    let h = flatten(g, h)?; // (N, 400)
    let h = f1.forward(g, h)?;
    let h = g.relu(h)?;
    let h = f2.forward(g, h)?;
    let h = g.relu(h)?;
    f3.forward(g, h)
}

// ----- data augmentation (issue 11, part 2) -----

/// `model` with its input augmented in training only: the returned model function (the shape
/// [`crate::train::Trainer`] takes) calls `model(g, g.augment(x, aug), true)` when `train` is
/// set and `model(g, x, false)` otherwise, so evaluation sees the data as it is.
pub fn augmented<'a, F>(
    model: F,
    aug: crate::graph::Augment,
) -> impl Fn(&mut Graph, NodeId, bool) -> Result<NodeId> + 'a
where
    F: Fn(&mut Graph, NodeId, bool) -> Result<NodeId> + 'a,
{
    move |g: &mut Graph, x: NodeId, train: bool| {
        let x = if train { g.augment(x, aug)? } else { x };
        model(g, x, train)
    }
}

// ----- end of data augmentation -----
