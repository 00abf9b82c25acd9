//! The op set: the contract every backend implements.
//!
//! An [`Op`] holds only an operation's attributes; its operands are the node's `inputs`, and its
//! output shape is the node's `shape`. Backends receive the same enum, so adding an op here is
//! what obliges every backend (and the gradient table in `autodiff.rs`) to learn it.

/// Element-wise functions of one tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UnaryOp {
    /// `-x`
    Neg,
    /// `e^x`
    Exp,
    /// natural logarithm
    Log,
    /// `√x`
    Sqrt,
    /// `x²`
    Square,
    /// `|x|`
    Abs,
    /// `-1`, `0` or `1`
    Sign,
    /// `1/x`
    Recip,
    /// `1 if x > 0 else 0` (the derivative of ReLU)
    Step,
    /// `1/(1+e^-x)`
    Sigmoid,
    /// hyperbolic tangent
    Tanh,
    /// `max(x, 0)`
    Relu,
    /// `x if x > 0 else αx`
    LeakyRelu(f32),
    /// `x if x > 0 else α(e^x − 1)`
    Elu(f32),
    /// `ln(1 + e^x)`, computed without overflow
    Softplus,
    /// `x·Φ(x)` with Φ the standard normal CDF (the exact, erf-based GELU)
    Gelu,
    /// `min(max(x, lo), hi)`; derivative 1 strictly inside `(lo, hi)` and 0 at the bounds, as
    /// `torch.clamp` and `F.hardtanh` (hardtanh is `Clamp(-1, 1)`)
    Clamp(f32, f32),
    /// `x^p` for a constant `p`
    PowScalar(f32),
    /// `x + c`
    AddScalar(f32),
    /// `c·x`
    MulScalar(f32),
}

/// Element-wise functions of two tensors, with NumPy broadcasting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `a + b`
    Add,
    /// `a − b`
    Sub,
    /// `a · b`
    Mul,
    /// `a / b`
    Div,
    /// `max(a, b)`
    Max,
    /// `min(a, b)`
    Min,
    /// `a^b`
    Pow,
    /// `1 if a > b else 0`
    Greater,
    /// `1 if a ≥ b else 0`
    GreaterEqual,
    /// `1 if a = b else 0`
    Equal,
}

/// Reductions over a set of axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// Sum.
    Sum,
    /// Arithmetic mean.
    Mean,
    /// Maximum.
    Max,
}

/// The window of a convolution or pooling over the last two axes of `(N, C, H, W)`:
/// output size `(H + 2P − D·(K − 1) − 1) / S + 1` per axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    /// Kernel height and width.
    pub k: [usize; 2],
    /// Stride.
    pub stride: [usize; 2],
    /// Zero padding on each side.
    pub pad: [usize; 2],
    /// Dilation.
    pub dilation: [usize; 2],
}

impl Window {
    /// Output `(OH, OW)` for input `(H, W)`, or `None` if the window does not fit.
    pub fn output(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let one = |n: usize, i: usize| -> Option<usize> {
            let span = self.dilation[i] * (self.k[i] - 1) + 1;
            let padded = n + 2 * self.pad[i];
            if self.k[i] == 0 || self.stride[i] == 0 || self.dilation[i] == 0 || padded < span {
                None
            } else {
                Some((padded - span) / self.stride[i] + 1)
            }
        };
        Some((one(h, 0)?, one(w, 1)?))
    }
}

/// One operation of the graph. See the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// A fed tensor (its element type is the node's), or (with `classes`) a fed vector of `u32`
    /// class labels.
    Input {
        /// The feed name.
        name: String,
        /// `Some(C)` for class labels in `0..C`.
        classes: Option<usize>,
    },
    /// A parameter held by the ParamStore; `index` into [`super::Graph::params`].
    Param {
        /// Position in the graph's parameter list.
        index: usize,
    },
    /// A tensor filled with one value.
    Const {
        /// The value.
        value: f32,
    },
    /// `f(x)`.
    Unary(UnaryOp),
    /// `dy · f'(x)`; inputs `[x, dy]`.
    UnaryGrad(UnaryOp),
    /// `a ∘ b` with broadcasting; inputs `[a, b]`.
    Binary(BinaryOp),
    /// `cond ≠ 0 ? a : b` with broadcasting; inputs `[cond, a, b]`.
    Where,
    /// Reduce over `axes` (sorted, distinct); `keepdim` keeps them as size 1.
    Reduce {
        /// Sum, mean or max.
        op: ReduceOp,
        /// The reduced axes.
        axes: Vec<usize>,
        /// Keep reduced axes as size 1.
        keepdim: bool,
    },
    /// Broadcast the input to the node's shape.
    BroadcastTo,
    /// Same data, new shape.
    Reshape,
    /// Output axis `i` is input axis `perm[i]`.
    Permute {
        /// The permutation.
        perm: Vec<usize>,
    },
    /// Join the inputs along `axis`.
    Concat {
        /// The axis.
        axis: usize,
    },
    /// Elements `start..end` along `axis`.
    Slice {
        /// The axis.
        axis: usize,
        /// First index kept.
        start: usize,
        /// One past the last index kept.
        end: usize,
    },
    /// Zero padding along `axis` (the gradient of [`Op::Slice`]).
    Pad {
        /// The axis.
        axis: usize,
        /// Zeros before.
        before: usize,
        /// Zeros after.
        after: usize,
    },
    /// `op(a) @ op(b)` over the last two axes, where `op` transposes when the flag is set;
    /// leading (batch) axes must be equal, or one operand has rank 2 and is shared by every batch.
    MatMul {
        /// Transpose `a`.
        ta: bool,
        /// Transpose `b`.
        tb: bool,
    },
    /// Softmax over the last axis.
    Softmax,
    /// Log-softmax over the last axis.
    LogSoftmax,
    /// Per-row cross-entropy of softmax(logits) against labels, with label smoothing `ε`:
    /// inputs `[logits (N, C), labels (N)]`, output `(N)`.
    SoftmaxCrossEntropy {
        /// Label smoothing ε ∈ [0, 1).
        smoothing: f32,
    },
    /// Gradient of [`Op::SoftmaxCrossEntropy`]: inputs `[logits, labels, dy (N)]`, output `(N, C)`.
    SoftmaxCrossEntropyGrad {
        /// Label smoothing ε.
        smoothing: f32,
    },
    /// One-hot encoding: input labels `(N)`, output `(N, classes)`.
    OneHot {
        /// Number of classes.
        classes: usize,
    },
    /// Unfold convolution windows: x `(N, C, H, W)` → cols `(N, C·KH·KW, OH·OW)`, zeros where a
    /// window overhangs the padding.
    Im2Col(Window),
    /// Fold columns back, summing overlaps (the adjoint of [`Op::Im2Col`]):
    /// cols `(N, C·KH·KW, OH·OW)` → x `(N, C, H, W)`.
    Col2Im(Window),
    /// Position of the maximum of each pooling window, as a `u32` index into its `(H·W)` plane:
    /// x `(N, C, H, W)` → `(N, C, OH, OW)`. Padding never wins.
    MaxPoolArgmax(Window),
    /// `y[n, c, o] = x[n, c, idx[n, c, o]]`: inputs `[x (N, C, H, W), idx (N, C, OH, OW) u32]`.
    GatherPlanes,
    /// The adjoint of [`Op::GatherPlanes`]: inputs `[dy (N, C, OH, OW), idx]` → `(N, C, H, W)`,
    /// each input position summing the `dy` of the windows whose argmax it is.
    ScatterPlanes(Window),
    /// Each channel's mean and biased variance over every axis but axis 1: x `(N, C, …)` →
    /// `(2, C)`, row 0 the means, row 1 `Σ(x − mean)²/count` (from the mean, in a second pass).
    ChannelMoments,
    /// Batch normalisation with given statistics: inputs `[x (N, C, …), moments (2, C) (means,
    /// variances), affine (2, C) (γ, β)]` → `y = (x − mean)·(γ·r) + β` per channel, with
    /// `r = 1/√(var + ε)`.
    BatchNorm {
        /// ε, added to the variance.
        eps: f32,
    },
    /// What [`Op::BatchNorm`]'s gradient reads of the batch: inputs `[x (N, C, …), moments
    /// (2, C), dy (N, C, …)]` → `(2, C)`, per channel Σ dy and Σ dy·(x − mean).
    BatchNormSums,
    /// Average pooling, padding counted in the divisor (PyTorch's default):
    /// `(N, C, H, W)` → `(N, C, OH, OW)`.
    AvgPool(Window),
    /// The adjoint of [`Op::AvgPool`]: `dy (N, C, OH, OW)` → `(N, C, H, W)`.
    AvgPoolGrad(Window),
    // ----- data augmentation (issue 11, part 2) -----
    /// Random augmentation of images `(N, C, H, W)` → the same shape (see
    /// [`super::Augment`]); no gradient. Image `n` draws `hⱼ = hash32((8n + j) ^ k)` for
    /// `j < 6` with `k = hash32(key + hash32(step + hash32(seed)))` (dropout's key chain), and
    /// takes `dx, dy = h₀, h₁ mod (2·shift + 1) − shift`, flips if `flip` and `h₂` is odd,
    /// rotates by `θ = rotate·π/180·(2u(h₃) − 1)`, and scales contrast by
    /// `1 + contrast·(2u(h₅) − 1)` and offsets brightness by `brightness·(2u(h₄) − 1)`, with
    /// `u(h) = (h >> 8)·2⁻²⁴`. Output pixel `(y, x)` reads input `(y − dy, x' − dx)`, `x'` being
    /// `x` mirrored when flipped, rotated by `θ` about the centre and sampled bilinearly
    /// (`sin θ`, `cos θ` by one polynomial on both backends; without rotation it is a plain
    /// read). Noise element `e` is `Σₘ₍₆₎ (lo16 + hi16 of hash32((6e + m) ^ hash32(k ^
    /// 0x9e3779b9))) / 2¹⁶ − 6`. Integer choices are identical on both backends.
    Augment {
        /// What to draw.
        aug: super::Augment,
        /// Distinguishes augmentations within one step.
        key: u32,
    },
    // ----- end of data augmentation -----
    /// Rows of a table picked by index (an embedding lookup): inputs `[table (V, E), ids (…) u32]`
    /// → `(…, E)`. Ids must be below `V` (feed them as labels with `V` classes to have that
    /// checked): the CPU backend reports one that is not, a GPU writes a row of zeros.
    GatherRows,
    /// The adjoint of [`Op::GatherRows`]: inputs `[dy (…, E), ids (…)]` → `(V, E)`, row `v` the
    /// sum of the `dy` rows whose id is `v`, added in index order (deterministic: no atomics).
    ScatterAddRows,
    /// One LSTM step in PyTorch's gate order (i, f, g, o): inputs `[gates (N, 4H), c (N, H)]`,
    /// the pre-activations `x·W_ihᵀ + b_ih + h·W_hhᵀ + b_hh` and the previous cell state →
    /// `(2, N, H)` holding `h' = o ⊙ tanh(c')` and `c' = f ⊙ c + i ⊙ g`.
    LstmCell,
    /// The adjoint of [`Op::LstmCell`]: inputs `[gates, c, dy (2, N, H)]` → `(N·4H + N·H)`: the
    /// gradient of the gates `(N, 4H)` followed by that of `c` `(N, H)`.
    LstmCellGrad,
    /// One GRU step in PyTorch's gate order (r, z, n): inputs `[xw (N, 3H), hw (N, 3H), h (N, H)]`
    /// with `xw = x·W_ihᵀ + b_ih` and `hw = h·W_hhᵀ + b_hh` → `(5, N, H)` holding
    /// `h' = (1 − z) ⊙ n + z ⊙ h`, then the activations `r`, `z`, `n` and `hn` (the hidden part of
    /// `n`'s pre-activation) that the backward pass reads.
    GruCell,
    /// The adjoint of [`Op::GruCell`]: inputs `[cell (5, N, H), h (N, H), dy (5, N, H)]` →
    /// `(N·3H + N·3H + N·H)`: the gradients of `xw`, `hw` and `h`.
    GruCellGrad,
    /// Convert to another element type: floats round to nearest (even), f32 → u32 truncates
    /// toward zero (negative values and NaN give 0), u32 → float is exact below 2²⁴.
    Cast(crate::shape::DType),
    /// An inverted-dropout mask of the node's shape: each element is `1/(1−p)` with probability
    /// `1 − p`, else 0, drawn from a counter-based generator keyed by (seed, step, `key`).
    DropoutMask {
        /// Drop probability.
        p: f32,
        /// Distinguishes masks within one step.
        key: u32,
    },
    /// The identity forward; autodiff passes no gradient through it, so whatever it wraps is
    /// treated as data by the loss it feeds (FGSM's perturbation, the model samples of
    /// contrastive divergence). The schedule aliases it to its operand: it costs no kernel and
    /// no memory.
    StopGradient,
    /// Samples of independent Bernoulli variables: input `p` (any shape), output of the same
    /// shape and type, element `i` being 1 with probability `clamp(p[i], 0, 1)`, else 0. The
    /// uniforms are those of [`Op::DropoutMask`], keyed by (seed, step, `key`), so both backends
    /// draw the same samples from the same probabilities.
    Bernoulli {
        /// Distinguishes samples within one step.
        key: u32,
    },
}

impl Op {
    /// A short name for messages and plans.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Param { .. } => "param",
            Op::Const { .. } => "const",
            Op::Unary(_) => "unary",
            Op::UnaryGrad(_) => "unary_grad",
            Op::Binary(_) => "binary",
            Op::Where => "where",
            Op::Reduce { .. } => "reduce",
            Op::BroadcastTo => "broadcast_to",
            Op::Reshape => "reshape",
            Op::Permute { .. } => "permute",
            Op::Concat { .. } => "concat",
            Op::Slice { .. } => "slice",
            Op::Pad { .. } => "pad",
            Op::MatMul { .. } => "matmul",
            Op::Softmax => "softmax",
            Op::LogSoftmax => "log_softmax",
            Op::SoftmaxCrossEntropy { .. } => "softmax_cross_entropy",
            Op::SoftmaxCrossEntropyGrad { .. } => "softmax_cross_entropy_grad",
            Op::OneHot { .. } => "one_hot",
            Op::Im2Col(_) => "im2col",
            Op::Col2Im(_) => "col2im",
            Op::MaxPoolArgmax(_) => "max_pool_argmax",
            Op::GatherPlanes => "gather_planes",
            Op::ScatterPlanes(_) => "scatter_planes",
            Op::ChannelMoments => "channel_moments",
            Op::BatchNorm { .. } => "batch_norm",
            Op::BatchNormSums => "batch_norm_sums",
            Op::AvgPool(_) => "avg_pool",
            Op::AvgPoolGrad(_) => "avg_pool_grad",
            Op::Augment { .. } => "augment",
            Op::GatherRows => "gather_rows",
            Op::ScatterAddRows => "scatter_add_rows",
            Op::LstmCell => "lstm_cell",
            Op::LstmCellGrad => "lstm_cell_grad",
            Op::GruCell => "gru_cell",
            Op::GruCellGrad => "gru_cell_grad",
            Op::Cast(_) => "cast",
            Op::DropoutMask { .. } => "dropout_mask",
            Op::StopGradient => "stop_gradient",
            Op::Bernoulli { .. } => "bernoulli",
        }
    }

    /// Leaves hold data the executor provides; every other op is computed by a kernel.
    pub fn is_leaf(&self) -> bool {
        matches!(self, Op::Input { .. } | Op::Param { .. } | Op::Const { .. })
    }
}
