//! Reverse-mode automatic differentiation as a graph-to-graph pass.
//!
//! [`gradients`] walks the graph backwards from a scalar loss and appends, for every node on a
//! path from a requested node to the loss, the nodes that compute its adjoint — written in
//! ordinary ops, so the executor and the backends never know that a node is a gradient. Where a
//! node feeds several consumers, their contributions are summed. Every rule is in [`rule`]:
//! read it top to bottom next to `graph/op.rs`.

use crate::error::{Error, Result};
use crate::graph::{BinaryOp, Graph, NodeId, Op, ReduceOp, UnaryOp};
use crate::shape::Shape;

/// The gradient of a loss with respect to each trainable parameter it depends on.
#[derive(Clone, Debug, Default)]
pub struct Gradients {
    /// `(parameter index in Graph::params, gradient node)`, in parameter order.
    pub params: Vec<(usize, NodeId)>,
    /// The loss these are gradients of.
    pub loss: Option<NodeId>,
    /// With [`backward_scaled`]: the scalar input the backward pass starts from instead of 1,
    /// which a training program sets to its current loss scale every step.
    pub loss_scale: Option<NodeId>,
}

/// The name of the input [`backward_scaled`] adds.
pub const LOSS_SCALE_INPUT: &str = "kiln.loss_scale";

impl Gradients {
    /// The gradient node of the parameter node `param`, if the loss depends on it.
    pub fn of(&self, g: &Graph, param: NodeId) -> Option<NodeId> {
        self.params
            .iter()
            .find(|(i, _)| g.params()[*i].node == param)
            .map(|&(_, n)| n)
    }
}

/// Append the gradient of scalar `loss` with respect to every trainable parameter.
/// Parameters the loss does not depend on, and frozen ones, get no gradient.
pub fn backward(g: &mut Graph, loss: NodeId) -> Result<Gradients> {
    backward_impl(g, loss, None)
}

/// Like [`backward`], for mixed-precision training with dynamic loss scaling: the backward pass
/// starts from a scalar input ([`LOSS_SCALE_INPUT`]) instead of 1, so every gradient is
/// multiplied by the loss scale `S` — small f16 gradients stay above f16's underflow — and the
/// training program sets `S` each step and divides the update's gradients by it (see
/// [`crate::exec::LossScaling`]).
pub fn backward_scaled(g: &mut Graph, loss: NodeId) -> Result<Gradients> {
    g.check_ids("backward", &[loss])?;
    let shape = g.shape(loss).clone();
    let dtype = g.dtype(loss);
    let seed = g.input_typed(LOSS_SCALE_INPUT, shape, dtype)?;
    backward_impl(g, loss, Some(seed))
}

fn backward_impl(g: &mut Graph, loss: NodeId, seed: Option<NodeId>) -> Result<Gradients> {
    let wrt: Vec<(usize, NodeId)> = g
        .params()
        .iter()
        .enumerate()
        .filter(|(_, p)| p.trainable)
        .map(|(i, p)| (i, p.node))
        .collect();
    let nodes: Vec<NodeId> = wrt.iter().map(|&(_, n)| n).collect();
    let grads = gradients_from(g, loss, &nodes, seed)?;
    let params = wrt
        .iter()
        .zip(grads)
        .filter_map(|(&(i, _), gr)| gr.map(|gr| (i, gr)))
        .collect();
    Ok(Gradients {
        params,
        loss: Some(loss),
        loss_scale: seed,
    })
}

/// Append `∂loss/∂n` for each `n` in `wrt` (any nodes: parameters, inputs for adversarial
/// examples, intermediates). `None` where the loss does not depend on `n`.
pub fn gradients(g: &mut Graph, loss: NodeId, wrt: &[NodeId]) -> Result<Vec<Option<NodeId>>> {
    gradients_from(g, loss, wrt, None)
}

/// [`gradients`] starting from `seed` (a node of the loss's shape) instead of ones.
fn gradients_from(g: &mut Graph, loss: NodeId, wrt: &[NodeId], seed: Option<NodeId>) -> Result<Vec<Option<NodeId>>> {
    let n_nodes = g.nodes().len();
    g.check_ids("backward", &[loss])?;
    g.check_ids("backward", wrt)?;
    if g.shape(loss).numel() != 1 {
        return Err(Error::Shape {
            op: "backward",
            node: g.describe(loss),
            shapes: vec![g.shape(loss).0.clone()],
            reason: "the loss must be a scalar (one element); reduce it with mean or sum first".into(),
        });
    }
    // Which nodes depend on a requested node (forward), and feed the loss (backward).
    let mut depends = vec![false; n_nodes];
    for &w in wrt {
        depends[w.0] = true;
    }
    for i in 0..=loss.0 {
        if !depends[i] && g.nodes()[i].inputs.iter().any(|x| depends[x.0]) {
            depends[i] = true;
        }
    }
    let mut feeds_loss = vec![false; n_nodes];
    feeds_loss[loss.0] = true;
    for i in (0..=loss.0).rev() {
        if feeds_loss[i] {
            for x in g.nodes()[i].inputs.clone() {
                feeds_loss[x.0] = true;
            }
        }
    }
    let active = |i: usize| depends[i] && feeds_loss[i];

    let mut contribs: Vec<Vec<NodeId>> = vec![Vec::new(); n_nodes];
    let seed = match seed {
        Some(s) => s,
        None => g.constant_typed(1.0, g.shape(loss).clone(), g.dtype(loss)),
    };
    contribs[loss.0].push(seed);
    // Gradients arriving through slices, kept apart: when the slices of a node tile one axis
    // (a sequence cut into time steps) their gradients are concatenated, one node, instead of
    // each being zero-padded to the full shape and summed (quadratic in the number of pieces).
    let mut sliced: Vec<Vec<(usize, usize, usize, NodeId)>> = vec![Vec::new(); n_nodes];
    let mut adjoint: Vec<Option<NodeId>> = vec![None; n_nodes];
    for i in (0..=loss.0).rev() {
        if !active(i) {
            continue;
        }
        let pieces = std::mem::take(&mut sliced[i]);
        if !pieces.is_empty() {
            let joined = join_slices(g, NodeId(i, loss.1), pieces)?;
            contribs[i].extend(joined);
        }
        if contribs[i].is_empty() {
            continue;
        }
        let parts = merge_outer_products(g, std::mem::take(&mut contribs[i]))?;
        let mut dy = parts[0];
        for &p in &parts[1..] {
            dy = g.add(dy, p)?;
        }
        adjoint[i] = Some(dy);
        let node = g.nodes()[i].clone();
        let wanted: Vec<bool> = node.inputs.iter().map(|x| active(x.0)).collect();
        if !wanted.iter().any(|&w| w) {
            continue;
        }
        if let Op::Slice { axis, start, end } = node.op {
            sliced[node.inputs[0].0].push((axis, start, end, dy));
            continue;
        }
        let grads = rule(g, NodeId(i, loss.1), dy, &wanted)?;
        for ((x, gx), w) in node.inputs.iter().zip(grads).zip(wanted) {
            if let (Some(gx), true) = (gx, w) {
                contribs[x.0].push(gx);
            }
        }
    }
    Ok(wrt.iter().map(|w| adjoint[w.0]).collect())
}

/// The gradient contributions to `x` from slices of it, `(axis, start, end, gradient)`: for each
/// axis whose slices do not overlap, one concatenation of their gradients in order with zeros in
/// the gaps; every other slice's gradient zero-padded to `x`'s shape (the rule of [`Op::Slice`]).
fn join_slices(g: &mut Graph, x: NodeId, mut pieces: Vec<(usize, usize, usize, NodeId)>) -> Result<Vec<NodeId>> {
    pieces.sort_by_key(|p| (p.0, p.1, p.2));
    let mut out = Vec::new();
    let mut rest = Vec::new();
    let mut i = 0;
    while i < pieces.len() {
        let axis = pieces[i].0;
        let j = i + pieces[i..].iter().take_while(|p| p.0 == axis).count();
        let group = &pieces[i..j];
        let full = g.shape(x).0[axis];
        let disjoint = group.windows(2).all(|w| w[0].2 <= w[1].1);
        if disjoint && group.len() > 1 {
            // The pieces in order, zeros in the gaps between them.
            let mut parts = Vec::new();
            let mut at = 0;
            for &(_, start, end, d) in group {
                if start > at {
                    parts.push(zeros_like_along(g, d, axis, start - at));
                }
                parts.push(d);
                at = end;
            }
            if at < full {
                parts.push(zeros_like_along(g, group[0].3, axis, full - at));
            }
            out.push(g.concat(&parts, axis)?);
        } else {
            rest.extend_from_slice(group);
        }
        i = j;
    }
    for (axis, start, end, d) in rest {
        let full = g.shape(x).0[axis];
        out.push(g.pad(d, axis, start, full - end)?);
    }
    Ok(out)
}

/// Contributions `A_kᵀ·B_k` of the same shape (a weight used at every step of an unrolled
/// sequence gets one per step) summed as one product `[A_1; …; A_T]ᵀ·[B_1; …; B_T]`: one GEMM
/// over concatenated operands instead of T small ones and T − 1 additions of the full weight.
fn merge_outer_products(g: &mut Graph, parts: Vec<NodeId>) -> Result<Vec<NodeId>> {
    let outer = |g: &Graph, p: NodeId| -> Option<(usize, usize)> {
        let n = g.node(p);
        let ok = matches!(n.op, Op::MatMul { ta: true, tb: false })
            && n.inputs.iter().all(|&x| g.shape(x).rank() == 2)
            && g.shape(n.inputs[0]).0[0] == g.shape(n.inputs[1]).0[0];
        ok.then(|| (n.shape.0[0], n.shape.0[1]))
    };
    let mut rest = Vec::new();
    let mut groups: Vec<((usize, usize), Vec<NodeId>)> = Vec::new();
    for p in parts {
        match outer(g, p) {
            Some(k) => match groups
                .iter_mut()
                .find(|(key, ps)| *key == k && g.dtype(ps[0]) == g.dtype(p))
            {
                Some((_, ps)) => ps.push(p),
                None => groups.push((k, vec![p])),
            },
            None => rest.push(p),
        }
    }
    for (_, ps) in groups {
        if ps.len() == 1 {
            rest.push(ps[0]);
            continue;
        }
        let a: Vec<NodeId> = ps.iter().map(|&p| g.node(p).inputs[0]).collect();
        let b: Vec<NodeId> = ps.iter().map(|&p| g.node(p).inputs[1]).collect();
        let a = g.concat(&a, 0)?;
        let b = g.concat(&b, 0)?;
        rest.push(g.matmul_t(a, b, true, false)?);
    }
    Ok(rest)
}

/// Zeros shaped like `d` except `len` long along `axis`.
fn zeros_like_along(g: &mut Graph, d: NodeId, axis: usize, len: usize) -> NodeId {
    let mut s = g.shape(d).clone();
    s.0[axis] = len;
    g.constant_typed(0.0, s, g.dtype(d))
}

/// `(1, C, 1, …)`: a per-channel value's shape broadcast against channel-first `x (N, C, …)`.
fn channel_shape(g: &Graph, x: NodeId) -> Shape {
    let d = g.shape(x).dims();
    let mut s = vec![1; d.len()];
    s[1] = d[1];
    Shape(s)
}

/// The gradient rule of node `y` given its adjoint `dy`: one entry per operand, `None` for
/// operands that need none (`wanted[i]` false) or that the op is not differentiable in.
fn rule(g: &mut Graph, y: NodeId, dy: NodeId, wanted: &[bool]) -> Result<Vec<Option<NodeId>>> {
    let node = g.node(y).clone();
    let x = &node.inputs;
    let shape = |g: &Graph, n: NodeId| -> Shape { g.shape(n).clone() };
    Ok(match &node.op {
        Op::Input { .. } | Op::Param { .. } | Op::Const { .. } => vec![],

        Op::Unary(UnaryOp::AddScalar(_)) => vec![Some(dy)],
        Op::Unary(UnaryOp::MulScalar(c)) => vec![Some(g.mul_scalar(dy, *c)?)],
        Op::Unary(UnaryOp::Neg) => vec![Some(g.neg(dy)?)],
        Op::Unary(UnaryOp::Exp) => vec![Some(g.mul(dy, y)?)],
        Op::Unary(op) => vec![Some(g.unary_grad(*op, x[0], dy)?)],

        Op::Binary(op) => {
            let (a, b) = (x[0], x[1]);
            let (sa, sb) = (shape(g, a), shape(g, b));
            let (da, db) = match op {
                BinaryOp::Add => (Some(dy), Some(dy)),
                BinaryOp::Sub => (Some(dy), if wanted[1] { Some(g.neg(dy)?) } else { None }),
                BinaryOp::Mul => (
                    if wanted[0] { Some(g.mul(dy, b)?) } else { None },
                    if wanted[1] { Some(g.mul(dy, a)?) } else { None },
                ),
                BinaryOp::Div => {
                    // y = a/b: ∂a = dy/b, ∂b = −dy·y/b
                    let da = if wanted[0] { Some(g.div(dy, b)?) } else { None };
                    let db = if wanted[1] {
                        let t = g.mul(dy, y)?;
                        let t = g.div(t, b)?;
                        Some(g.neg(t)?)
                    } else {
                        None
                    };
                    (da, db)
                }
                BinaryOp::Max | BinaryOp::Min => {
                    // The winner takes the gradient; a tie splits it evenly (as PyTorch).
                    let wins = if *op == BinaryOp::Max {
                        g.binary(BinaryOp::Greater, a, b)?
                    } else {
                        g.binary(BinaryOp::Greater, b, a)?
                    };
                    let tie = g.binary(BinaryOp::Equal, a, b)?;
                    let half = g.mul_scalar(tie, 0.5)?;
                    let mask_a = g.add(wins, half)?;
                    let da = g.mul(dy, mask_a)?;
                    let db = if wanted[1] { Some(g.sub(dy, da)?) } else { None };
                    (Some(da), db)
                }
                BinaryOp::Pow => {
                    // y = a^b: ∂a = dy·b·a^(b−1), ∂b = dy·y·ln a
                    let da = if wanted[0] {
                        let bm1 = g.add_scalar(b, -1.0)?;
                        let p = g.pow(a, bm1)?;
                        let t = g.mul(p, b)?;
                        Some(g.mul(t, dy)?)
                    } else {
                        None
                    };
                    let db = if wanted[1] {
                        let la = g.log(a)?;
                        let t = g.mul(y, la)?;
                        Some(g.mul(t, dy)?)
                    } else {
                        None
                    };
                    (da, db)
                }
                // Comparisons are piecewise constant: zero gradient almost everywhere.
                BinaryOp::Greater | BinaryOp::GreaterEqual | BinaryOp::Equal => (None, None),
            };
            let da = match da {
                Some(d) if wanted[0] => Some(g.sum_to(d, &sa)?),
                _ => None,
            };
            let db = match db {
                Some(d) if wanted[1] => Some(g.sum_to(d, &sb)?),
                _ => None,
            };
            vec![da, db]
        }

        Op::Where => {
            let zero = g.constant_typed(0.0, crate::shape::Shape::scalar(), g.dtype(dy));
            let da = if wanted[1] {
                let t = g.where_(x[0], dy, zero)?;
                Some(g.sum_to(t, &shape(g, x[1]))?)
            } else {
                None
            };
            let db = if wanted[2] {
                let t = g.where_(x[0], zero, dy)?;
                Some(g.sum_to(t, &shape(g, x[2]))?)
            } else {
                None
            };
            vec![None, da, db]
        }

        Op::Reduce { op, axes, keepdim } => {
            let sx = shape(g, x[0]);
            let kept = Shape(
                sx.0.iter()
                    .enumerate()
                    .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
                    .collect(),
            );
            let dy_k = if *keepdim { dy } else { g.reshape(dy, kept.clone())? };
            let dx = match op {
                ReduceOp::Sum => g.broadcast_to(dy_k, sx)?,
                ReduceOp::Mean => {
                    let count: usize = axes.iter().map(|&a| sx.0[a]).product();
                    let t = g.mul_scalar(dy_k, 1.0 / count as f32)?;
                    g.broadcast_to(t, sx)?
                }
                ReduceOp::Max => {
                    // Split evenly between tied maxima, as PyTorch's amax does.
                    let y_k = if *keepdim { y } else { g.reshape(y, kept)? };
                    let mask = g.equal(x[0], y_k)?;
                    let ax: Vec<isize> = axes.iter().map(|&a| a as isize).collect();
                    let count = g.sum(mask, &ax, true)?;
                    let share = g.div(dy_k, count)?;
                    g.mul(mask, share)?
                }
            };
            vec![Some(dx)]
        }

        Op::BroadcastTo => vec![Some(g.sum_to(dy, &shape(g, x[0]))?)],
        Op::Reshape => vec![Some(g.reshape(dy, shape(g, x[0]))?)],
        Op::Permute { perm } => {
            let mut inv = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inv[p] = i;
            }
            vec![Some(g.permute(dy, &inv)?)]
        }
        Op::Concat { axis } => {
            let mut start = 0;
            let mut out = Vec::with_capacity(x.len());
            for (i, &xi) in x.iter().enumerate() {
                let len = g.shape(xi).0[*axis];
                out.push(if wanted[i] {
                    Some(g.slice(dy, *axis, start, start + len)?)
                } else {
                    None
                });
                start += len;
            }
            out
        }
        Op::Slice { axis, start, end } => {
            let full = g.shape(x[0]).0[*axis];
            vec![Some(g.pad(dy, *axis, *start, full - end)?)]
        }
        Op::Pad { axis, before, .. } => {
            let len = g.shape(x[0]).0[*axis];
            vec![Some(g.slice(dy, *axis, *before, before + len)?)]
        }

        Op::MatMul { ta, tb } => {
            // y = op(a) @ op(b)
            let (a, b) = (x[0], x[1]);
            let da = if wanted[0] {
                // ∂op(a) = dy @ op(b)ᵀ; when a is stored transposed, transpose that back.
                let t = g.matmul_t(dy, b, false, !tb)?;
                let t = if *ta { g.transpose(t)? } else { t };
                Some(g.sum_to(t, &shape(g, a))?)
            } else {
                None
            };
            let db = if wanted[1] {
                // ∂op(b) = op(a)ᵀ @ dy, summed over the batch when b is shared.
                let t = if *tb {
                    g.matmul_t(dy, a, true, *ta)?
                } else {
                    g.matmul_t(a, dy, !ta, false)?
                };
                Some(g.sum_to(t, &shape(g, b))?)
            } else {
                None
            };
            vec![da, db]
        }

        Op::Softmax => {
            // ∂x = y ⊙ (dy − Σ dy⊙y)
            let t = g.mul(dy, y)?;
            let s = g.sum(t, &[-1], true)?;
            let d = g.sub(dy, s)?;
            vec![Some(g.mul(y, d)?)]
        }
        Op::LogSoftmax => {
            // ∂x = dy − softmax(x) ⊙ Σ dy
            let p = g.exp(y)?;
            let s = g.sum(dy, &[-1], true)?;
            let t = g.mul(p, s)?;
            vec![Some(g.sub(dy, t)?)]
        }
        Op::SoftmaxCrossEntropy { smoothing } => {
            let shape = shape(g, x[0]);
            let d = g.push(
                Op::SoftmaxCrossEntropyGrad { smoothing: *smoothing },
                vec![x[0], x[1], dy],
                shape,
            )?;
            vec![Some(d), None]
        }

        Op::Im2Col(w) => vec![Some(g.push(Op::Col2Im(*w), vec![dy], shape(g, x[0]))?)],
        Op::Col2Im(w) => vec![Some(g.push(Op::Im2Col(*w), vec![dy], shape(g, x[0]))?)],
        Op::GatherPlanes => {
            let w = match g.node(x[1]).op {
                Op::MaxPoolArgmax(w) => w,
                _ => {
                    return Err(Error::NotDifferentiable(format!(
                        "{}: gather indices must come from max_pool_argmax",
                        g.describe(y)
                    )))
                }
            };
            vec![
                Some(g.push(Op::ScatterPlanes(w), vec![dy, x[1]], shape(g, x[0]))?),
                None,
            ]
        }
        Op::ScatterPlanes(_) => vec![Some(g.push(Op::GatherPlanes, vec![dy, x[1]], shape(g, x[0]))?), None],
        Op::AvgPool(w) => vec![Some(g.push(Op::AvgPoolGrad(*w), vec![dy], shape(g, x[0]))?)],
        Op::AvgPoolGrad(w) => vec![Some(g.push(Op::AvgPool(*w), vec![dy], shape(g, x[0]))?)],
        // Augmentation acts on the data; a gradient through its random resampling is never
        // what a model wants, so asking for one is an error rather than a silent zero.
        Op::Augment { .. } => {
            return Err(Error::NotDifferentiable(format!(
                "{} (augment) has no gradient: augment the input data, not a tensor computed from parameters",
                g.describe(y)
            )))
        }
        Op::GatherRows => {
            let rows = g.shape(x[0]).0[0];
            vec![Some(g.scatter_add_rows(dy, x[1], rows)?), None]
        }
        Op::ScatterAddRows => vec![Some(g.gather_rows(dy, x[1])?), None],
        Op::LstmCell => {
            // One kernel computes both gradients into one flat tensor; the pieces are views.
            let (n, h) = (g.shape(x[1]).0[0], g.shape(x[1]).0[1]);
            let d = g.push(Op::LstmCellGrad, vec![x[0], x[1], dy], Shape(vec![5 * n * h]))?;
            let dg = g.slice(d, 0, 0, 4 * n * h)?;
            let dc = g.slice(d, 0, 4 * n * h, 5 * n * h)?;
            vec![Some(g.reshape(dg, [n, 4 * h])?), Some(g.reshape(dc, [n, h])?)]
        }
        Op::GruCell => {
            let (n, h) = (g.shape(x[2]).0[0], g.shape(x[2]).0[1]);
            let d = g.push(Op::GruCellGrad, vec![y, x[2], dy], Shape(vec![7 * n * h]))?;
            let dx = g.slice(d, 0, 0, 3 * n * h)?;
            let dh = g.slice(d, 0, 3 * n * h, 6 * n * h)?;
            let dp = g.slice(d, 0, 6 * n * h, 7 * n * h)?;
            vec![
                Some(g.reshape(dx, [n, 3 * h])?),
                Some(g.reshape(dh, [n, 3 * h])?),
                Some(g.reshape(dp, [n, h])?),
            ]
        }
        Op::ChannelMoments => {
            // mean = Σx/n and var = Σ(x − mean)²/n per channel: ∂x = (dmean + 2·(x − mean)·dvar)/n
            // (the mean's own gradient in var is Σ(x − mean) = 0). All element-wise, one fused kernel.
            let (b, _, s) = g.channel_dims("channel_moments", x[0])?;
            let per = channel_shape(g, x[0]);
            let row = |g: &mut Graph, t: NodeId, r: usize| -> Result<NodeId> {
                let t = g.slice(t, 0, r, r + 1)?;
                g.reshape(t, per.clone())
            };
            let (mean, dmean, dvar) = (row(g, y, 0)?, row(g, dy, 0)?, row(g, dy, 1)?);
            let xc = g.sub(x[0], mean)?;
            let t = g.mul(xc, dvar)?;
            let t = g.mul_scalar(t, 2.0)?;
            let t = g.add(t, dmean)?;
            vec![Some(g.mul_scalar(t, 1.0 / (b * s) as f32)?)]
        }
        Op::BatchNorm { eps } => {
            // y = (x − mean)·a + β with a = γ·r, r = 1/√(var + ε). From the two sums
            // s₀ = Σ dy and s₁ = Σ dy·(x − mean) per channel: ∂β = s₀, ∂γ = r·s₁, ∂mean = −a·s₀,
            // ∂var = −½·a·r²·s₁ (all (1, C)), and the direct ∂x = dy·a; the rest of ∂x comes
            // through the statistics' own rule. The per-channel work comes first, so that the
            // full-size ∂x sits next to the statistics' element-wise gradient for the fusion pass.
            let sums = g.batch_norm_sums(x[0], x[1], dy)?;
            let row = |g: &mut Graph, t: NodeId, r: usize| g.slice(t, 0, r, r + 1);
            let (var, gamma) = (row(g, x[1], 1)?, row(g, x[2], 0)?);
            let (s0, s1) = (row(g, sums, 0)?, row(g, sums, 1)?);
            let r = g.add_scalar(var, *eps)?;
            let r = g.sqrt(r)?;
            let r = g.recip(r)?;
            let a = g.mul(gamma, r)?;
            let dm = if wanted[1] {
                let dmean = g.mul(a, s0)?;
                let dmean = g.neg(dmean)?;
                let r2 = g.mul(r, r)?;
                let dvar = g.mul(a, r2)?;
                let dvar = g.mul(dvar, s1)?;
                let dvar = g.mul_scalar(dvar, -0.5)?;
                Some(g.concat(&[dmean, dvar], 0)?)
            } else {
                None
            };
            let daff = if wanted[2] {
                let dgamma = g.mul(r, s1)?;
                Some(g.concat(&[dgamma, s0], 0)?)
            } else {
                None
            };
            let per = channel_shape(g, x[0]);
            let a = g.reshape(a, per)?;
            vec![Some(g.mul(dy, a)?), dm, daff]
        }
        // The gradient of a conversion is the conversion back; integers carry none.
        Op::Cast(_) => {
            let from = g.dtype(x[0]);
            vec![from.is_float().then(|| g.cast(dy, from)).transpose()?]
        }
        // What a stop-gradient wraps is data to every loss it feeds.
        Op::StopGradient => vec![None],
        // Indices, random masks and samples are piecewise constant in their inputs.
        Op::MaxPoolArgmax(_) | Op::DropoutMask { .. } | Op::Bernoulli { .. } => vec![None; x.len()],

        Op::UnaryGrad(_)
        | Op::SoftmaxCrossEntropyGrad { .. }
        | Op::OneHot { .. }
        | Op::LstmCellGrad
        | Op::GruCellGrad
        | Op::BatchNormSums => {
            return Err(Error::NotDifferentiable(format!(
                "{} ({}) has no gradient rule; second derivatives are not supported",
                g.describe(y),
                node.op.name()
            )))
        }
    })
}
