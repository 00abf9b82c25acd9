//! optim.wgsl's parameter structs and lowering: the fused optimiser step, one dispatch over
//! every trainable parameter. Each update rule is one generated entry point, `update_<rule>`,
//! whose body comes from [`rule_wgsl`]'s exhaustive match; a program compiles only its own
//! rule's pipeline.

use super::{fill, u, Cost, Dispatch, Family, Grid};
use crate::backend::UpdateKernel;
use crate::optim::OptimizerKind;
use bytemuck::{Pod, Zeroable};

/// The update's header; the parameters' segments follow as a table of [`Segment`], sorted by
/// offset.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Update {
    /// Segments in the table.
    pub nseg: u32,
    /// 1: clamp each gradient element to `±clip`.
    pub clip_on: u32,
    /// The clamp.
    pub clip: f32,
    /// 1: scale gradients by `min(1, max_norm / (‖g‖ + 1e-6))`, ‖g‖² read at `stats_off`.
    pub norm_on: u32,
    /// The largest global norm.
    pub max_norm: f32,
    /// λ, for segments marked for decay.
    pub weight_decay: f32,
    /// Offset of the gradient statistics (Σg², then the non-finite count): a non-zero count
    /// skips the update.
    pub stats_off: u32,
    /// Elements covered (end of the last segment).
    pub n: u32,
}

/// One parameter's range in the flat buffers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Segment {
    /// First element.
    pub offset: u32,
    /// Elements.
    pub len: u32,
    /// 1: weight decay applies.
    pub decay: u32,
}

/// Every rule once, in the order their entry points are generated. Hyperparameters here are
/// placeholders: the kernels read per-step coefficients from `per_step` (RMSProp's momentum μ
/// in `b2`); only RMSProp's options choose among its four entry points.
pub const RULES: [OptimizerKind; 10] = [
    OptimizerKind::Sgd,
    OptimizerKind::Momentum { momentum: 0.0 },
    OptimizerKind::Nesterov { momentum: 0.0 },
    OptimizerKind::AdaGrad { eps: 0.0 },
    OptimizerKind::RmsProp {
        rho: 0.0,
        eps: 0.0,
        momentum: 0.0,
        centered: false,
    },
    OptimizerKind::RmsProp {
        rho: 0.0,
        eps: 0.0,
        momentum: 0.5,
        centered: false,
    },
    OptimizerKind::RmsProp {
        rho: 0.0,
        eps: 0.0,
        momentum: 0.0,
        centered: true,
    },
    OptimizerKind::RmsProp {
        rho: 0.0,
        eps: 0.0,
        momentum: 0.5,
        centered: true,
    },
    OptimizerKind::Adam {
        beta1: 0.0,
        beta2: 0.0,
        eps: 0.0,
    },
    OptimizerKind::AdamW {
        beta1: 0.0,
        beta2: 0.0,
        eps: 0.0,
    },
];

/// An update rule in WGSL.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RuleWgsl {
    /// The entry point.
    pub entry: &'static str,
    /// Whether weight decay is decoupled (applied to `w`, not added to `g`).
    pub decoupled: bool,
    /// Statements updating element `i` from the clipped (and, unless decoupled, decayed)
    /// gradient `g`, the segment's decay `wd` and the coefficients in `per_step` (`lr`, `b1`,
    /// `omb1` = 1 − β₁, `b2`, `omb2`, `eps` are bound as locals).
    pub body: &'static str,
}

/// The one place an update rule's GPU formula is written (the equations in `crate::optim`).
pub fn rule_wgsl(kind: &OptimizerKind) -> RuleWgsl {
    let (entry, decoupled, body) = match kind {
        OptimizerKind::Sgd => ("update_sgd", false, "params[i] -= lr * g;"),
        OptimizerKind::Momentum { .. } => (
            "update_momentum",
            false,
            "let v = b1 * state0[i] + g;
    state0[i] = v;
    params[i] -= lr * v;",
        ),
        OptimizerKind::Nesterov { .. } => (
            "update_nesterov",
            false,
            "let v = b1 * state0[i] + g;
    state0[i] = v;
    params[i] -= lr * (g + b1 * v);",
        ),
        OptimizerKind::AdaGrad { .. } => (
            "update_adagrad",
            false,
            "let s = state0[i] + g * g;
    state0[i] = s;
    params[i] -= lr * g / (sqrt(s) + eps);",
        ),
        OptimizerKind::RmsProp { momentum, centered, .. } => match (*momentum > 0.0, *centered) {
            (false, false) => ("update_rmsprop", false, RMSPROP),
            (true, false) => ("update_rmsprop_momentum", false, RMSPROP_MOMENTUM),
            (false, true) => ("update_rmsprop_centered", false, RMSPROP_CENTERED),
            (true, true) => ("update_rmsprop_centered_momentum", false, RMSPROP_CENTERED_MOMENTUM),
        },
        OptimizerKind::Adam { .. } => ("update_adam", false, ADAM),
        OptimizerKind::AdamW { .. } => ("update_adamw", true, ADAMW),
    };
    RuleWgsl { entry, decoupled, body }
}

const RMSPROP: &str = "let s = b1 * state0[i] + omb1 * g * g;
    state0[i] = s;
    params[i] -= lr * g / (sqrt(s) + eps);";

// Momentum μ arrives in b2; the buffer is state1.
const RMSPROP_MOMENTUM: &str = "let s = b1 * state0[i] + omb1 * g * g;
    state0[i] = s;
    let m = b2 * state1[i] + g / (sqrt(s) + eps);
    state1[i] = m;
    params[i] -= lr * m;";

// The mean gradient is state2; the variance estimate s − ḡ² replaces s.
const RMSPROP_CENTERED: &str = "let s = b1 * state0[i] + omb1 * g * g;
    state0[i] = s;
    let gm = b1 * state2[i] + omb1 * g;
    state2[i] = gm;
    params[i] -= lr * g / (sqrt(s - gm * gm) + eps);";

const RMSPROP_CENTERED_MOMENTUM: &str = "let s = b1 * state0[i] + omb1 * g * g;
    state0[i] = s;
    let gm = b1 * state2[i] + omb1 * g;
    state2[i] = gm;
    let m = b2 * state1[i] + g / (sqrt(s - gm * gm) + eps);
    state1[i] = m;
    params[i] -= lr * m;";

const ADAM: &str = "let m = b1 * state0[i] + omb1 * g;
    let v = b2 * state1[i] + omb2 * g * g;
    state0[i] = m;
    state1[i] = v;
    let mh = m * per_step.inv_bias1;
    let vh = v * per_step.inv_bias2;
    params[i] = params[i] - lr * mh / (sqrt(vh) + eps);";

const ADAMW: &str = "var w = params[i];
    w -= lr * wd * w;
    let m = b1 * state0[i] + omb1 * g;
    let v = b2 * state1[i] + omb2 * g * g;
    state0[i] = m;
    state1[i] = v;
    let mh = m * per_step.inv_bias1;
    let vh = v * per_step.inv_bias2;
    params[i] = w - lr * mh / (sqrt(vh) + eps);";

/// One generated entry point.
const ENTRY: &str = "
@compute @workgroup_size(256)
fn {{ENTRY}}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    let e = element(i, {{DECOUPLED}});
    if (!e.live) { return; }
    let g = e.g;
    let wd = e.wd;
    let lr = per_step.lr;
    let b1 = per_step.b1;
    let omb1 = per_step.one_minus_b1;
    let b2 = per_step.b2;
    let omb2 = per_step.one_minus_b2;
    let eps = per_step.eps;
    {{BODY}}
}
";

/// optim.wgsl with one entry point per rule generated from [`rule_wgsl`].
pub fn source() -> String {
    let entries: String = RULES
        .iter()
        .map(|k| {
            let r = rule_wgsl(k);
            let e = fill(ENTRY, "ENTRY", r.entry);
            let e = fill(&e, "DECOUPLED", if r.decoupled { "true" } else { "false" });
            fill(&e, "BODY", r.body)
        })
        .collect();
    fill(include_str!("../../../../shaders/optim.wgsl"), "RULES", &entries)
}

/// The fused update, or nothing when no parameter is trained.
pub fn update(up: &UpdateKernel) -> Option<Dispatch> {
    if up.segments.is_empty() {
        return None;
    }
    let n = up.segments.iter().map(|s| s.offset + s.len).max().unwrap_or(0);
    let p = Update {
        nseg: u(up.segments.len()),
        clip_on: up.clip_value.is_some() as u32,
        clip: up.clip_value.unwrap_or(0.0),
        norm_on: up.max_norm.is_some() as u32,
        max_norm: up.max_norm.unwrap_or(0.0),
        weight_decay: up.weight_decay,
        stats_off: u(up.stats.offset),
        n: u(n),
    };
    let segs: Vec<Segment> = up
        .segments
        .iter()
        .map(|s| Segment {
            offset: u(s.offset),
            len: u(s.len),
            decay: s.decay as u32,
        })
        .collect();
    let inputs = vec![up.grads, up.stats.buf];
    let mut outputs = vec![up.params];
    outputs.extend(&up.state);
    let entry = rule_wgsl(&up.rule).entry;
    // Per trained element: the gradient, the parameter and each state slot read, the parameter
    // and each state slot written; about ten operations (Adam's moments, bias corrections,
    // square root, division, decay and clipping), fewer for SGD: an estimate, not a count.
    let trained: usize = up.segments.iter().map(|s| s.len).sum();
    let slots = 1 + up.state.len();
    let cost = Cost::new(10 * trained, &[trained * (1 + slots)], trained * slots);
    Some(
        Dispatch::new(Family::Optim, entry, &p, inputs, outputs, Grid::Elements(n))
            .with_table(&segs)
            .with_cost(cost),
    )
}
