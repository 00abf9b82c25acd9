//! Lowering: each executor [`Kernel`] becomes one or more [`Dispatch`]es. This file only routes
//! ops to their kernel family; each family's parameter structs and the filling of them live in
//! [`super::kernels`]. Pure data, no wgpu types, so it can be read (and tested) on its own.

pub use super::kernels::{Dispatch, Family, Grid, MAX_RANK};

use super::kernels::conv::{self, Entry};
use super::kernels::rnn::{self, Entry as RnnEntry};
use super::kernels::{coalesce, elementwise as ew, matmul, optim, reduce, softmax};
use crate::backend::{Kernel, View};
use crate::graph::{Op, Window};
use crate::shape::broadcast_strides;

/// Lower one kernel, each dispatch knowing the element types of its tensor bindings (a, b, c
/// from the kernel's operands in order, out from its output). Errors name what the kernels
/// cannot take (rank above 6, ...).
pub fn lower(k: &Kernel) -> Result<Vec<Dispatch>, String> {
    if let Kernel::Fused(f) = k {
        return Ok(vec![super::kernels::fused::lower(f)?]);
    }
    let (ins, out): (Vec<View>, Option<View>) = match k {
        Kernel::Op { inputs, out, .. } => (inputs.clone(), Some(*out)),
        Kernel::Copy { src, dst } => (vec![*src], Some(*dst)),
        Kernel::GradStats { src, check, out } => (
            src.first().into_iter().chain(check.first()).copied().collect(),
            Some(*out),
        ),
        Kernel::AddInto { src, dst } => (vec![*src], Some(*dst)),
        Kernel::Fill { dst, .. } => (vec![], Some(*dst)),
        Kernel::CopyIfFinite { src, dst, stats } => (vec![*src, *stats], Some(*dst)),
        Kernel::Update(_) | Kernel::Fused(_) => (vec![], None),
    };
    let mut ds = lower_untyped(k)?;
    for d in &mut ds {
        for (t, v) in d.dtypes.iter_mut().zip(&ins) {
            *t = v.dtype;
        }
        if let Some(o) = out {
            d.dtypes[3] = o.dtype;
        }
    }
    Ok(ds)
}

fn lower_untyped(k: &Kernel) -> Result<Vec<Dispatch>, String> {
    let (op, x, xs, out, os) = match k {
        Kernel::Op {
            op,
            inputs,
            in_shapes,
            out,
            out_shape,
            ..
        } => (op, inputs, in_shapes, *out, out_shape),
        Kernel::Copy { src, dst } => return Ok(vec![ew::strided_copy(*src, &[1], *dst, &[1], &[src.len])]),
        Kernel::GradStats { src, check, out } => return reduce::grad_stats(src, check, *out),
        Kernel::AddInto { src, dst } => return Ok(vec![ew::add_into(*src, *dst)]),
        Kernel::Fill { dst, value } => return Ok(vec![ew::fill_value(dst.len, *dst, *value)]),
        Kernel::CopyIfFinite { src, dst, stats } => return Ok(vec![ew::copy_if_finite(*src, *dst, *stats)]),
        Kernel::Update(up) => return Ok(optim::update(up).into_iter().collect()),
        Kernel::Fused(f) => return Ok(vec![super::kernels::fused::lower(f)?]),
    };
    if os.rank() > MAX_RANK || xs.iter().any(|s| s.rank() > MAX_RANK) {
        return Err(format!("{} on rank above {MAX_RANK}", op.name()));
    }
    let n = os.numel();
    let d = match op {
        Op::Input { .. } | Op::Param { .. } => return Err("leaves are not kernels".into()),
        Op::Const { value } => ew::fill_value(n, out, *value),
        Op::Unary(uo) => ew::unary(*uo, n, x[0], out)?,
        Op::UnaryGrad(uo) => ew::unary_grad(*uo, n, x[0], x[1], out)?,
        Op::Binary(bo) => {
            let (sa, sb) = (broadcast_strides(&xs[0], os), broadcast_strides(&xs[1], os));
            let (dims, [sa, sb]) = coalesce(os.dims(), [&sa, &sb]);
            ew::binary(*bo, n, [x[0], x[1]], out, &dims, [&sa, &sb])?
        }
        Op::Where => {
            let st: Vec<Vec<usize>> = xs.iter().map(|s| broadcast_strides(s, os)).collect();
            let (dims, [s0, s1, s2]) = coalesce(os.dims(), [&st[0], &st[1], &st[2]]);
            ew::where3(n, [x[0], x[1], x[2]], out, &dims, [&s0, &s1, &s2])
        }
        Op::Reduce { op, axes, .. } => reduce::reduce(*op, axes, &xs[0], n, x[0], out),
        Op::BroadcastTo => ew::strided_copy(x[0], &broadcast_strides(&xs[0], os), out, &os.strides(), os.dims()),
        // Both alias their operand in a compiled program; as kernels they are copies.
        Op::Reshape | Op::StopGradient => ew::strided_copy(x[0], &[1], out, &[1], &[n]),
        Op::Permute { perm } => {
            let st = xs[0].strides();
            let src: Vec<usize> = perm.iter().map(|&p| st[p]).collect();
            ew::strided_copy(x[0], &src, out, &os.strides(), os.dims())
        }
        Op::Slice { axis, start, .. } => {
            let st = xs[0].strides();
            let src = View {
                offset: x[0].offset + start * st[*axis],
                ..x[0]
            };
            ew::strided_copy(src, &st, out, &os.strides(), os.dims())
        }
        Op::Pad { axis, before, .. } => {
            let ost = os.strides();
            let dst = View {
                offset: out.offset + before * ost[*axis],
                ..out
            };
            return Ok(vec![
                ew::fill_value(n, out, 0.0),
                ew::strided_copy(x[0], &xs[0].strides(), dst, &ost, xs[0].dims()),
            ]);
        }
        Op::Concat { axis } => {
            let ost = os.strides();
            let mut start = 0;
            let mut v = Vec::new();
            for (xi, si) in x.iter().zip(xs) {
                let dst = View {
                    offset: out.offset + start * ost[*axis],
                    ..out
                };
                v.push(ew::strided_copy(*xi, &si.strides(), dst, &ost, si.dims()));
                start += si.dims()[*axis];
            }
            return Ok(v);
        }
        Op::MatMul { ta, tb } => matmul::matmul(*ta, *tb, x[0], x[1], &xs[0], &xs[1], out, os)?,
        Op::Softmax | Op::LogSoftmax | Op::SoftmaxCrossEntropy { .. } | Op::SoftmaxCrossEntropyGrad { .. } => {
            let c = *xs[0].dims().last().unwrap_or(&1);
            let rows = xs[0].numel() / c.max(1);
            let kind = match op {
                Op::Softmax => softmax::Rows::Softmax,
                Op::LogSoftmax => softmax::Rows::LogSoftmax,
                Op::SoftmaxCrossEntropy { smoothing } => softmax::Rows::Sce(*smoothing),
                Op::SoftmaxCrossEntropyGrad { smoothing } => softmax::Rows::SceGrad(*smoothing),
                _ => unreachable!("matched above"),
            };
            softmax::rows(kind, rows, c, x, out)
        }
        Op::GatherRows => {
            let e = xs[0].dims()[1];
            rnn::rnn(RnnEntry::GatherRows, xs[1].numel(), e, xs[0].dims()[0], x, out)
        }
        Op::ScatterAddRows => {
            let e = os.dims()[1];
            rnn::rnn(RnnEntry::ScatterAddRows, xs[1].numel(), e, os.dims()[0], x, out)
        }
        Op::ChannelMoments => reduce::norm(reduce::NormEntry::Moments, &xs[0], x, out),
        Op::BatchNorm { eps } => reduce::norm(reduce::NormEntry::Apply(*eps), &xs[0], x, out),
        Op::BatchNormSums => reduce::norm(reduce::NormEntry::Sums, &xs[0], x, out),
        Op::LstmCell => rnn::rnn(RnnEntry::LstmCell, xs[1].dims()[0], xs[1].dims()[1], 0, x, out),
        Op::LstmCellGrad => rnn::rnn(RnnEntry::LstmCellGrad, xs[1].dims()[0], xs[1].dims()[1], 0, x, out),
        Op::GruCell => rnn::rnn(RnnEntry::GruCell, xs[2].dims()[0], xs[2].dims()[1], 0, x, out),
        Op::GruCellGrad => rnn::rnn(RnnEntry::GruCellGrad, xs[1].dims()[0], xs[1].dims()[1], 0, x, out),
        Op::Cast(_) => ew::convert(n, x[0], out)?,
        Op::OneHot { classes } => ew::one_hot(n, *classes, x[0], out),
        Op::DropoutMask { p, key } => ew::dropout_mask(n, out, *p, *key),
        Op::Bernoulli { key } => ew::bernoulli(n, x[0], out, *key),
        Op::Im2Col(w) => {
            let grid = w
                .output(xs[0].dims()[2], xs[0].dims()[3])
                .ok_or("window does not fit")?;
            // One invocation per (image, channel, output pixel), writing its KH·KW taps.
            let pixels = n / (w.k[0] * w.k[1]);
            conv::conv(Entry::Im2Col, pixels, &xs[0], w, grid, x, out)
        }
        Op::Col2Im(w) => {
            let grid = w.output(os.dims()[2], os.dims()[3]).ok_or("window does not fit")?;
            conv::conv(Entry::Col2Im, n, os, w, grid, x, out)
        }
        Op::MaxPoolArgmax(w) => conv::conv(Entry::PoolArgmax, n, &xs[0], w, (os.dims()[2], os.dims()[3]), x, out),
        Op::AvgPool(w) => conv::conv(Entry::AvgPool, n, &xs[0], w, (os.dims()[2], os.dims()[3]), x, out),
        Op::AvgPoolGrad(w) => conv::conv(Entry::AvgPoolGrad, n, os, w, (xs[0].dims()[2], xs[0].dims()[3]), x, out),
        Op::Augment { aug, key } => super::kernels::augment::augment(aug, *key, &xs[0], x[0], out),
        Op::GatherPlanes => {
            let w = Window {
                k: [1, 1],
                stride: [1, 1],
                pad: [0, 0],
                dilation: [1, 1],
            };
            conv::conv(Entry::GatherPlanes, n, &xs[0], &w, (os.dims()[2], os.dims()[3]), x, out)
        }
        Op::ScatterPlanes(w) => conv::conv(
            Entry::ScatterPlanes,
            n,
            os,
            w,
            (xs[0].dims()[2], xs[0].dims()[3]),
            x,
            out,
        ),
    };
    Ok(vec![d])
}
