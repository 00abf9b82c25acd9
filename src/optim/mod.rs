//! Optimisers, learning-rate schedules and gradient clipping.
//!
//! An [`Optimizer`] is configuration: the executor turns it into one fused update kernel over
//! the ParamStore's flat parameter, gradient and state buffers, so a training step updates every
//! parameter with one dispatch. The learning rate is evaluated on the host each step from the
//! [`Schedule`] and passed to the device as a per-step uniform.
//!
//! Update rules follow PyTorch's published equations (with `g` the clipped gradient plus `λw`
//! when L2 weight decay applies):
//! - SGD: `w −= η g`
//! - Momentum: `v = μ v + g; w −= η v`
//! - Nesterov: `v = μ v + g; w −= η (g + μ v)`
//! - AdaGrad: `s += g²; w −= η g / (√s + ε)`
//! - RMSProp: `s = ρ s + (1−ρ) g²; d = √s + ε`, or centered `ḡ = ρ ḡ + (1−ρ) g;
//!   d = √(s − ḡ²) + ε`; then `w −= η g / d`, or with momentum `b = μ b + g / d; w −= η b`
//! - Adam: `m = β₁m + (1−β₁)g; v = β₂v + (1−β₂)g²; w −= η m̂ / (√v̂ + ε)` with
//!   `m̂ = m/(1−β₁ᵗ)`, `v̂ = v/(1−β₂ᵗ)`
//! - AdamW: `w −= η λ w` (decoupled, instead of adding `λw` to `g`), then the Adam step.

mod schedule;

pub use schedule::Schedule;

use crate::error::{invalid, Result};

/// An update rule with its constant hyperparameters. They are held in f64, as PyTorch holds
/// them, so that derived coefficients such as `1 − β₂ = 0.001` are exact before they are
/// rounded to f32 once (in f32, `1 − 0.999` is off by 1.3e-5 relative).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimizerKind {
    /// Plain stochastic gradient descent.
    Sgd,
    /// Heavy-ball momentum.
    Momentum {
        /// μ
        momentum: f64,
    },
    /// Nesterov momentum.
    Nesterov {
        /// μ
        momentum: f64,
    },
    /// AdaGrad.
    AdaGrad {
        /// ε
        eps: f64,
    },
    /// RMSProp, optionally with momentum and centered (as PyTorch's `RMSprop`).
    RmsProp {
        /// ρ (PyTorch's `alpha`)
        rho: f64,
        /// ε
        eps: f64,
        /// μ; 0 for none
        momentum: f64,
        /// Normalise by the variance estimate `s − ḡ²` instead of `s`
        centered: bool,
    },
    /// Adam with bias correction.
    Adam {
        /// β₁
        beta1: f64,
        /// β₂
        beta2: f64,
        /// ε
        eps: f64,
    },
    /// Adam with decoupled weight decay (the optimizer's `weight_decay` is the decoupled λ).
    AdamW {
        /// β₁
        beta1: f64,
        /// β₂
        beta2: f64,
        /// ε
        eps: f64,
    },
}

impl OptimizerKind {
    /// How many state buffers (each the size of all parameters) the rule keeps.
    pub fn state_slots(&self) -> usize {
        match self {
            OptimizerKind::Sgd => 0,
            OptimizerKind::Momentum { .. }
            | OptimizerKind::Nesterov { .. }
            | OptimizerKind::AdaGrad { .. }
            | OptimizerKind::RmsProp {
                momentum: 0.0,
                centered: false,
                ..
            } => 1,
            // Slots: 0 the mean square, 1 the momentum buffer, 2 the mean gradient.
            OptimizerKind::RmsProp { centered: false, .. } => 2,
            OptimizerKind::RmsProp { centered: true, .. } => 3,
            OptimizerKind::Adam { .. } | OptimizerKind::AdamW { .. } => 2,
        }
    }

    /// A short name.
    pub fn name(&self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Momentum { .. } => "momentum",
            OptimizerKind::Nesterov { .. } => "nesterov",
            OptimizerKind::AdaGrad { .. } => "adagrad",
            OptimizerKind::RmsProp { .. } => "rmsprop",
            OptimizerKind::Adam { .. } => "adam",
            OptimizerKind::AdamW { .. } => "adamw",
        }
    }
}

/// The per-step coefficients of an update, derived in f64 on the host and rounded to f32 once;
/// every backend's update kernel uses exactly these.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Coefficients {
    /// Learning rate η.
    pub lr: f32,
    /// β₁ (or μ, or ρ).
    pub b1: f32,
    /// `1 − β₁` (or `1 − ρ`).
    pub one_minus_b1: f32,
    /// β₂.
    pub b2: f32,
    /// `1 − β₂`.
    pub one_minus_b2: f32,
    /// ε.
    pub eps: f32,
    /// `1 / (1 − β₁ᵗ)`.
    pub inv_bias1: f32,
    /// `1 / (1 − β₂ᵗ)`.
    pub inv_bias2: f32,
}

impl OptimizerKind {
    /// The coefficients of update number `t` (1-based) at learning rate `lr`.
    pub fn coefficients(&self, lr: f32, t: u64) -> Coefficients {
        let t = t.max(1) as i32;
        let mut c = Coefficients {
            lr,
            ..Default::default()
        };
        match *self {
            OptimizerKind::Sgd => {}
            OptimizerKind::Momentum { momentum } | OptimizerKind::Nesterov { momentum } => c.b1 = momentum as f32,
            OptimizerKind::AdaGrad { eps } => c.eps = eps as f32,
            OptimizerKind::RmsProp { rho, eps, momentum, .. } => {
                c.b1 = rho as f32;
                c.one_minus_b1 = (1.0 - rho) as f32;
                c.b2 = momentum as f32;
                c.eps = eps as f32;
            }
            OptimizerKind::Adam { beta1, beta2, eps } | OptimizerKind::AdamW { beta1, beta2, eps } => {
                c.b1 = beta1 as f32;
                c.one_minus_b1 = (1.0 - beta1) as f32;
                c.b2 = beta2 as f32;
                c.one_minus_b2 = (1.0 - beta2) as f32;
                c.eps = eps as f32;
                c.inv_bias1 = (1.0 / (1.0 - beta1.powi(t))) as f32;
                c.inv_bias2 = (1.0 / (1.0 - beta2.powi(t))) as f32;
            }
        }
        c
    }
}

/// Gradient clipping applied before the update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Clip {
    /// Clamp every gradient element to `±c`.
    Value(f32),
    /// Scale all gradients together so their global L2 norm is at most `max_norm`.
    Norm(f32),
}

/// An optimiser: rule, learning-rate schedule, weight decay and clipping.
#[derive(Clone, Debug, PartialEq)]
pub struct Optimizer {
    /// The update rule.
    pub kind: OptimizerKind,
    /// The learning rate as a function of the update step.
    pub schedule: Schedule,
    /// L2 weight decay λ on parameters marked for decay (decoupled for AdamW).
    pub weight_decay: f32,
    /// Gradient clipping, applied in order.
    pub clip: Vec<Clip>,
}

impl Optimizer {
    fn with(kind: OptimizerKind, lr: f32) -> Self {
        Optimizer {
            kind,
            schedule: Schedule::Constant(lr),
            weight_decay: 0.0,
            clip: Vec::new(),
        }
    }
    /// SGD with learning rate `lr`.
    pub fn sgd(lr: f32) -> Self {
        Self::with(OptimizerKind::Sgd, lr)
    }
    /// SGD with heavy-ball momentum.
    pub fn momentum(lr: f32, momentum: f64) -> Self {
        Self::with(OptimizerKind::Momentum { momentum }, lr)
    }
    /// SGD with Nesterov momentum.
    pub fn nesterov(lr: f32, momentum: f64) -> Self {
        Self::with(OptimizerKind::Nesterov { momentum }, lr)
    }
    /// AdaGrad (ε = 1e-10, as PyTorch).
    pub fn adagrad(lr: f32) -> Self {
        Self::with(OptimizerKind::AdaGrad { eps: 1e-10 }, lr)
    }
    /// RMSProp (ρ = 0.99, ε = 1e-8, as PyTorch).
    pub fn rmsprop(lr: f32) -> Self {
        Self::rmsprop_with(lr, 0.99, 1e-8, 0.0, false)
    }
    /// RMSProp with every option of PyTorch's `RMSprop(lr, alpha=rho, eps, momentum, centered)`.
    pub fn rmsprop_with(lr: f32, rho: f64, eps: f64, momentum: f64, centered: bool) -> Self {
        Self::with(
            OptimizerKind::RmsProp {
                rho,
                eps,
                momentum,
                centered,
            },
            lr,
        )
    }
    /// Adam (β = (0.9, 0.999), ε = 1e-8).
    pub fn adam(lr: f32) -> Self {
        Self::with(
            OptimizerKind::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            lr,
        )
    }
    /// AdamW (β = (0.9, 0.999), ε = 1e-8) with decoupled weight decay λ.
    pub fn adamw(lr: f32, weight_decay: f32) -> Self {
        Self::with(
            OptimizerKind::AdamW {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            lr,
        )
        .weight_decay(weight_decay)
    }

    /// Set L2 weight decay.
    pub fn weight_decay(mut self, wd: f32) -> Self {
        self.weight_decay = wd;
        self
    }
    /// Set the learning-rate schedule.
    pub fn schedule(mut self, s: Schedule) -> Self {
        self.schedule = s;
        self
    }
    /// Clip gradients by global norm.
    pub fn clip_norm(mut self, max_norm: f32) -> Self {
        self.clip.push(Clip::Norm(max_norm));
        self
    }
    /// Clip gradients element-wise.
    pub fn clip_value(mut self, c: f32) -> Self {
        self.clip.push(Clip::Value(c));
        self
    }

    /// Check hyperparameters, naming the bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, v: f64| {
            invalid(
                "optimizer",
                format!("{} {what} = {v} is out of range", self.kind.name()),
            )
        };
        let unit = |v: f64| (0.0..1.0).contains(&v);
        // NaN is neither positive nor non-negative, so these reject it too.
        let positive = |v: f64| v > 0.0;
        match self.kind {
            OptimizerKind::Sgd => {}
            OptimizerKind::Momentum { momentum } | OptimizerKind::Nesterov { momentum } => {
                if !unit(momentum) {
                    return bad("momentum", momentum);
                }
            }
            OptimizerKind::AdaGrad { eps } => {
                if !positive(eps) {
                    return bad("eps", eps);
                }
            }
            OptimizerKind::RmsProp { rho, eps, momentum, .. } => {
                if !unit(rho) {
                    return bad("rho", rho);
                }
                if !unit(momentum) {
                    return bad("momentum", momentum);
                }
                if !positive(eps) {
                    return bad("eps", eps);
                }
            }
            OptimizerKind::Adam { beta1, beta2, eps } | OptimizerKind::AdamW { beta1, beta2, eps } => {
                if !unit(beta1) {
                    return bad("beta1", beta1);
                }
                if !unit(beta2) {
                    return bad("beta2", beta2);
                }
                if !positive(eps) {
                    return bad("eps", eps);
                }
            }
        }
        if self.weight_decay.is_nan() || self.weight_decay < 0.0 {
            return bad("weight_decay", self.weight_decay as f64);
        }
        for c in &self.clip {
            match *c {
                Clip::Value(v) | Clip::Norm(v) if !positive(v as f64) => return bad("clip", v as f64),
                _ => {}
            }
        }
        self.schedule.validate()
    }
}
