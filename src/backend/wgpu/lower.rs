//! Lowering: each executor [`Kernel`] becomes one or more dispatch specs — which WGSL family and
//! entry point, its parameter words (`kp`), which buffers sit in which binding, and the grid.
//! Pure data, no wgpu types, so it can be read (and tested) on its own.

use crate::backend::{Kernel, View};
use crate::graph::{BinaryOp, Op, ReduceOp, UnaryOp, Window};
use crate::optim::OptimizerKind;
use crate::shape::{broadcast_strides, DType, Shape};

/// Highest tensor rank the strided kernels take.
pub const MAX_RANK: usize = 6;

/// The WGSL source families.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// elementwise.wgsl
    Elementwise,
    /// reduce.wgsl
    Reduce,
    /// matmul.wgsl
    Matmul,
    /// softmax.wgsl
    Softmax,
    /// conv.wgsl
    Conv,
    /// optim.wgsl
    Optim,
}

impl Family {
    /// Every family, for shader validation.
    pub const ALL: [Family; 6] = [
        Family::Elementwise,
        Family::Reduce,
        Family::Matmul,
        Family::Softmax,
        Family::Conv,
        Family::Optim,
    ];

    /// The WGSL source: the common prelude followed by the family's file.
    pub fn source(self) -> String {
        let body = match self {
            Family::Elementwise => include_str!("../../../shaders/elementwise.wgsl"),
            Family::Reduce => include_str!("../../../shaders/reduce.wgsl"),
            Family::Matmul => include_str!("../../../shaders/matmul.wgsl"),
            Family::Softmax => include_str!("../../../shaders/softmax.wgsl"),
            Family::Conv => include_str!("../../../shaders/conv.wgsl"),
            Family::Optim => include_str!("../../../shaders/optim.wgsl"),
        };
        format!("{}\n{}", include_str!("../../../shaders/common.wgsl"), body)
    }
}

/// How many workgroups to launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grid {
    /// One invocation per element, 256 per workgroup.
    Elements(usize),
    /// One workgroup per item.
    Groups(usize),
    /// Exactly these workgroup counts.
    Fixed([u32; 3]),
}

/// Which buffers go in the bindings. `inputs` fill bindings 2, 3, 4 (standard layout) or
/// grads, norm (update layout); `outputs` fill binding 5 (standard) or params, state0, state1.
#[derive(Clone, Debug, PartialEq)]
pub struct Dispatch {
    /// Source family.
    pub family: Family,
    /// Entry point.
    pub entry: &'static str,
    /// Parameter words.
    pub kp: Vec<u32>,
    /// Buffer-table indices read.
    pub inputs: Vec<usize>,
    /// Buffer-table indices written.
    pub outputs: Vec<usize>,
    /// Launch size.
    pub grid: Grid,
}

/// Reductions over at most this many elements run one invocation per output (`reduce_serial`).
const SERIAL_REDUCE: usize = 256;

fn bits(x: f32) -> u32 {
    x.to_bits()
}

fn u(x: usize) -> u32 {
    x as u32
}

fn padded(v: &[usize]) -> Vec<u32> {
    let mut out: Vec<u32> = v.iter().map(|&x| x as u32).collect();
    out.resize(MAX_RANK, 1);
    out
}

fn unary_code(op: UnaryOp) -> (u32, f32, f32) {
    match op {
        UnaryOp::Neg => (0, 0.0, 0.0),
        UnaryOp::Exp => (1, 0.0, 0.0),
        UnaryOp::Log => (2, 0.0, 0.0),
        UnaryOp::Sqrt => (3, 0.0, 0.0),
        UnaryOp::Square => (4, 0.0, 0.0),
        UnaryOp::Abs => (5, 0.0, 0.0),
        UnaryOp::Sign => (6, 0.0, 0.0),
        UnaryOp::Recip => (7, 0.0, 0.0),
        UnaryOp::Step => (8, 0.0, 0.0),
        UnaryOp::Sigmoid => (9, 0.0, 0.0),
        UnaryOp::Tanh => (10, 0.0, 0.0),
        UnaryOp::Relu => (11, 0.0, 0.0),
        UnaryOp::LeakyRelu(a) => (12, a, 0.0),
        UnaryOp::Elu(a) => (13, a, 0.0),
        UnaryOp::Softplus => (14, 0.0, 0.0),
        UnaryOp::Gelu => (15, 0.0, 0.0),
        UnaryOp::Clamp(lo, hi) => (16, lo, hi),
        UnaryOp::PowScalar(p) => (17, p, 0.0),
        UnaryOp::AddScalar(c) => (18, c, 0.0),
        UnaryOp::MulScalar(c) => (19, c, 0.0),
    }
}

fn binary_code(op: BinaryOp) -> u32 {
    match op {
        BinaryOp::Add => 0,
        BinaryOp::Sub => 1,
        BinaryOp::Mul => 2,
        BinaryOp::Div => 3,
        BinaryOp::Max => 4,
        BinaryOp::Min => 5,
        BinaryOp::Pow => 6,
        BinaryOp::Greater => 7,
        BinaryOp::GreaterEqual => 8,
        BinaryOp::Equal => 9,
    }
}

fn rule_code(k: &OptimizerKind) -> u32 {
    match k {
        OptimizerKind::Sgd => 0,
        OptimizerKind::Momentum { .. } => 1,
        OptimizerKind::Nesterov { .. } => 2,
        OptimizerKind::AdaGrad { .. } => 3,
        OptimizerKind::RmsProp { .. } => 4,
        OptimizerKind::Adam { .. } => 5,
        OptimizerKind::AdamW { .. } => 6,
    }
}

fn ew(entry: &'static str, kp: Vec<u32>, inputs: Vec<usize>, out: usize, n: usize) -> Dispatch {
    Dispatch {
        family: Family::Elementwise,
        entry,
        kp,
        inputs,
        outputs: vec![out],
        grid: Grid::Elements(n),
    }
}

/// The same index space with fewer axes: size-1 axes dropped, and each axis merged into the
/// one before it where every operand steps over both as over one (`s[i] = s[i+1]·dims[i+1]`).
/// Returns at least one axis. The kernels split each linear index into coordinates with one
/// integer division per axis, which costs more than the memory access on many devices.
fn coalesce<const K: usize>(dims: &[usize], strides: [&[usize]; K]) -> (Vec<usize>, [Vec<usize>; K]) {
    let mut d: Vec<usize> = Vec::with_capacity(dims.len());
    let mut s: [Vec<usize>; K] = std::array::from_fn(|_| Vec::with_capacity(dims.len()));
    for (ax, &dim) in dims.iter().enumerate() {
        if dim == 1 {
            continue;
        }
        let merges = !d.is_empty() && (0..K).all(|k| s[k][s[k].len() - 1] == strides[k][ax] * dim);
        if merges {
            *d.last_mut().expect("non-empty") *= dim;
            for (sk, st) in s.iter_mut().zip(&strides) {
                *sk.last_mut().expect("non-empty") = st[ax];
            }
        } else {
            d.push(dim);
            for (sk, st) in s.iter_mut().zip(&strides) {
                sk.push(st[ax]);
            }
        }
    }
    if d.is_empty() {
        d.push(1);
        for sk in &mut s {
            sk.push(0);
        }
    }
    (d, s)
}

/// `dst[dims, dst_strides] = src[dims, src_strides]`.
fn strided_copy(src: View, src_strides: &[usize], dst: View, dst_strides: &[usize], dims: &[usize]) -> Dispatch {
    let n: usize = dims.iter().product();
    let (dims, [ss, ds]) = coalesce(dims, [src_strides, dst_strides]);
    let mut kp = vec![u(n), u(dims.len()), u(src.offset), u(dst.offset)];
    kp.extend(padded(&dims));
    kp.extend(padded(&ss));
    kp.extend(padded(&ds));
    ew("strided_copy", kp, vec![src.buf], dst.buf, n)
}

#[allow(clippy::too_many_arguments)] // one argument per parameter word group of the conv kernels
fn window_kp(
    total: usize,
    img: &Shape,
    w: &Window,
    oh: usize,
    ow: usize,
    a_off: usize,
    out_off: usize,
    b_off: usize,
) -> Vec<u32> {
    let d = img.dims();
    [
        total,
        d[0],
        d[1],
        d[2],
        d[3],
        w.k[0],
        w.k[1],
        w.stride[0],
        w.stride[1],
        w.pad[0],
        w.pad[1],
        w.dilation[0],
        w.dilation[1],
        oh,
        ow,
        a_off,
        out_off,
        b_off,
    ]
    .iter()
    .map(|&x| x as u32)
    .collect()
}

fn conv(entry: &'static str, kp: Vec<u32>, inputs: Vec<usize>, out: usize, n: usize) -> Dispatch {
    Dispatch {
        family: Family::Conv,
        entry,
        kp,
        inputs,
        outputs: vec![out],
        grid: Grid::Elements(n),
    }
}

/// Lower one kernel. Errors name what the kernels cannot take (rank above 6, ...).
pub fn lower(k: &Kernel) -> Result<Vec<Dispatch>, String> {
    let (op, x, xs, out, os) = match k {
        Kernel::Op {
            op,
            inputs,
            in_shapes,
            out,
            out_shape,
            ..
        } => (op, inputs, in_shapes, *out, out_shape),
        Kernel::Copy { src, dst } => return Ok(vec![strided_copy(*src, &[1], *dst, &[1], &[src.len])]),
        Kernel::GradStats { src, check, out } => {
            let buf = src.first().map_or(out.buf, |v| v.buf);
            let cbuf = check.first().map_or(buf, |v| v.buf);
            if src.iter().any(|v| v.buf != buf) || check.iter().any(|v| v.buf != cbuf) {
                return Err("gradient statistics over several buffers".into());
            }
            let mut kp = vec![u(src.len() + check.len()), u(out.offset), u(src.len())];
            for v in src.iter().chain(check) {
                kp.extend([u(v.offset), u(v.len)]);
            }
            return Ok(vec![Dispatch {
                family: Family::Reduce,
                entry: "grad_stats",
                kp,
                inputs: vec![buf, cbuf],
                outputs: vec![out.buf],
                grid: Grid::Fixed([1, 1, 1]),
            }]);
        }
        Kernel::AddInto { src, dst } => {
            return Ok(vec![ew(
                "add_into",
                vec![u(src.len), u(src.offset), u(dst.offset)],
                vec![src.buf],
                dst.buf,
                src.len,
            )])
        }
        Kernel::Fill { dst, value } => {
            return Ok(vec![ew(
                "fill",
                vec![u(dst.len), u(dst.offset), bits(*value)],
                vec![],
                dst.buf,
                dst.len,
            )])
        }
        Kernel::Update(up) => {
            let (clip_on, clip) = up.clip_value.map_or((0, 0.0), |c| (1, c));
            let (norm_on, max_norm) = up.max_norm.map_or((0, 0.0), |m| (1, m));
            let n = up.segments.iter().map(|s| s.offset + s.len).max().unwrap_or(0);
            let mut kp = vec![
                rule_code(&up.rule),
                u(up.segments.len()),
                clip_on,
                bits(clip),
                norm_on,
                bits(max_norm),
                bits(up.weight_decay),
                u(up.stats.offset),
                u(n),
            ];
            for s in &up.segments {
                kp.extend([u(s.offset), u(s.len), s.decay as u32]);
            }
            let inputs = vec![up.grads, up.stats.buf];
            let mut outputs = vec![up.params];
            outputs.extend(&up.state);
            if up.segments.is_empty() {
                return Ok(vec![]);
            }
            return Ok(vec![Dispatch {
                family: Family::Optim,
                entry: "update",
                kp,
                inputs,
                outputs,
                grid: Grid::Elements(n),
            }]);
        }
    };
    if os.rank() > MAX_RANK || xs.iter().any(|s| s.rank() > MAX_RANK) {
        return Err(format!("{} on rank above {MAX_RANK}", op.name()));
    }
    let n = os.numel();
    let d = match op {
        Op::Input { .. } | Op::Param { .. } => return Err("leaves are not kernels".into()),
        Op::Const { value } => ew("fill", vec![u(n), u(out.offset), bits(*value)], vec![], out.buf, n),
        Op::Unary(uo) => {
            let (code, p0, p1) = unary_code(*uo);
            ew(
                "unary",
                vec![u(n), code, u(x[0].offset), u(out.offset), bits(p0), bits(p1), 0],
                vec![x[0].buf],
                out.buf,
                n,
            )
        }
        Op::UnaryGrad(uo) => {
            let (code, p0, p1) = unary_code(*uo);
            ew(
                "unary_grad",
                vec![
                    u(n),
                    code,
                    u(x[0].offset),
                    u(out.offset),
                    bits(p0),
                    bits(p1),
                    u(x[1].offset),
                ],
                vec![x[0].buf, x[1].buf],
                out.buf,
                n,
            )
        }
        Op::Binary(bo) => {
            let (sa, sb) = (broadcast_strides(&xs[0], os), broadcast_strides(&xs[1], os));
            let (dims, [sa, sb]) = coalesce(os.dims(), [&sa, &sb]);
            let mut kp = vec![
                u(n),
                binary_code(*bo),
                u(dims.len()),
                u(x[0].offset),
                u(x[1].offset),
                u(out.offset),
            ];
            kp.extend(padded(&dims));
            kp.extend(padded(&sa));
            kp.extend(padded(&sb));
            ew("binary", kp, vec![x[0].buf, x[1].buf], out.buf, n)
        }
        Op::Where => {
            let st: Vec<Vec<usize>> = xs.iter().map(|s| broadcast_strides(s, os)).collect();
            let (dims, strides) = coalesce(os.dims(), [&st[0], &st[1], &st[2]]);
            let mut kp = vec![
                u(n),
                u(dims.len()),
                u(x[0].offset),
                u(x[1].offset),
                u(x[2].offset),
                u(out.offset),
            ];
            kp.extend(padded(&dims));
            for s in &strides {
                kp.extend(padded(s));
            }
            ew("where3", kp, vec![x[0].buf, x[1].buf, x[2].buf], out.buf, n)
        }
        Op::Reduce { op, axes, .. } => {
            let s = &xs[0];
            let st = s.strides();
            let (mut kd, mut ks, mut rd, mut rs) = (vec![], vec![], vec![], vec![]);
            for (i, (&dim, &stride)) in s.dims().iter().zip(&st).enumerate() {
                let (d, t) = if axes.contains(&i) {
                    (&mut rd, &mut rs)
                } else {
                    (&mut kd, &mut ks)
                };
                d.push(dim);
                t.push(stride);
            }
            let code = match op {
                ReduceOp::Sum => 0,
                ReduceOp::Mean => 1,
                ReduceOp::Max => 2,
            };
            let r: usize = rd.iter().product();
            let (kd, [ks]) = coalesce(&kd, [&ks]);
            let (rd, [rs]) = coalesce(&rd, [&rs]);
            // Short reductions: one invocation per output; long ones: a workgroup per output.
            let serial = r <= SERIAL_REDUCE && rd.len() <= 2;
            let mut kp = vec![
                u(n),
                code,
                u(x[0].offset),
                u(out.offset),
                u(r),
                u(kd.len()),
                u(rd.len()),
            ];
            kp.extend(padded(&kd));
            kp.extend(padded(&ks));
            kp.extend(padded(&rd));
            kp.extend(padded(&rs));
            Dispatch {
                family: Family::Reduce,
                entry: if serial { "reduce_serial" } else { "reduce" },
                kp,
                inputs: vec![x[0].buf],
                outputs: vec![out.buf],
                grid: if serial { Grid::Elements(n) } else { Grid::Groups(n) },
            }
        }
        Op::BroadcastTo => strided_copy(x[0], &broadcast_strides(&xs[0], os), out, &os.strides(), os.dims()),
        Op::Reshape => strided_copy(x[0], &[1], out, &[1], &[n]),
        Op::Permute { perm } => {
            let st = xs[0].strides();
            let src: Vec<usize> = perm.iter().map(|&p| st[p]).collect();
            strided_copy(x[0], &src, out, &os.strides(), os.dims())
        }
        Op::Slice { axis, start, .. } => {
            let st = xs[0].strides();
            let src = View {
                offset: x[0].offset + start * st[*axis],
                ..x[0]
            };
            strided_copy(src, &st, out, &os.strides(), os.dims())
        }
        Op::Pad { axis, before, .. } => {
            let ost = os.strides();
            let dst = View {
                offset: out.offset + before * ost[*axis],
                ..out
            };
            let fill = ew("fill", vec![u(n), u(out.offset), 0], vec![], out.buf, n);
            return Ok(vec![
                fill,
                strided_copy(x[0], &xs[0].strides(), dst, &ost, xs[0].dims()),
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
                v.push(strided_copy(*xi, &si.strides(), dst, &ost, si.dims()));
                start += si.dims()[*axis];
            }
            return Ok(v);
        }
        Op::MatMul { ta, tb } => {
            let (sa, sb) = (&xs[0], &xs[1]);
            let (ra, rb, rc) = (sa.rank(), sb.rank(), os.rank());
            let (m, nn) = (os.dims()[rc - 2], os.dims()[rc - 1]);
            let kk = if *ta { sa.dims()[ra - 2] } else { sa.dims()[ra - 1] };
            let batch: usize = os.dims()[..rc - 2].iter().product();
            let (rsa, csa) = if *ta { (1, m) } else { (kk, 1) };
            let (rsb, csb) = if *tb { (1, kk) } else { (nn, 1) };
            let ab = if ra == 2 { 0 } else { m * kk };
            let bb = if rb == 2 { 0 } else { kk * nn };
            let kp = [
                m,
                nn,
                kk,
                x[0].offset,
                x[1].offset,
                out.offset,
                rsa,
                csa,
                rsb,
                csb,
                ab,
                bb,
                batch,
            ]
            .iter()
            .map(|&v| v as u32)
            .collect::<Vec<u32>>();
            if m < 64 || nn < 64 || kk < 32 {
                // Skinny products waste most of a 64×64 tile, and a short K never repays staging
                // tiles through workgroup memory: one invocation per 4×4 block of C instead.
                let inputs = vec![x[0].buf, x[1].buf];
                let grid = Grid::Elements(batch * m.div_ceil(4) * nn.div_ceil(4));
                return Ok(vec![Dispatch {
                    family: Family::Matmul,
                    entry: "matmul_small",
                    kp,
                    inputs,
                    outputs: vec![out.buf],
                    grid,
                }]);
            }
            // vec4 staging needs the contiguous dimension, offsets and batch strides 4-aligned.
            let vec_a = !*ta && kk % 4 == 0 && x[0].offset % 4 == 0 && ab % 4 == 0;
            let vec_b = !*tb && nn % 4 == 0 && x[1].offset % 4 == 0 && bb % 4 == 0;
            let mut kp = kp;
            kp.extend([vec_a as u32, vec_b as u32]);
            let grid = [nn.div_ceil(64) as u32, m.div_ceil(64) as u32, batch as u32];
            if grid.iter().any(|&g| g > 65535) {
                return Err(format!(
                    "matmul of {batch}×{m}×{nn} needs more than 65535 workgroups in one dimension"
                ));
            }
            Dispatch {
                family: Family::Matmul,
                entry: "matmul",
                kp,
                inputs: vec![x[0].buf, x[1].buf],
                outputs: vec![out.buf],
                grid: Grid::Fixed(grid),
            }
        }
        Op::Softmax | Op::LogSoftmax | Op::SoftmaxCrossEntropy { .. } | Op::SoftmaxCrossEntropyGrad { .. } => {
            let c = *xs[0].dims().last().unwrap_or(&1);
            let rows = xs[0].numel() / c.max(1);
            let (entry, eps) = match op {
                Op::Softmax => ("softmax", 0.0),
                Op::LogSoftmax => ("log_softmax", 0.0),
                Op::SoftmaxCrossEntropy { smoothing } => ("sce", *smoothing),
                Op::SoftmaxCrossEntropyGrad { smoothing } => ("sce_grad", *smoothing),
                _ => unreachable!("matched above"),
            };
            let off = |i: usize| x.get(i).map_or(0, |v| u(v.offset));
            let kp = vec![u(rows), u(c), off(0), off(1), off(2), u(out.offset), bits(eps)];
            Dispatch {
                family: Family::Softmax,
                entry,
                kp,
                inputs: x.iter().map(|v| v.buf).collect(),
                outputs: vec![out.buf],
                grid: Grid::Groups(rows),
            }
        }
        Op::Cast(_) => {
            let mode = match (x[0].dtype, out.dtype) {
                (DType::F32, DType::U32) => 1,
                (DType::U32, DType::F32) => 2,
                (a, b) => return Err(format!("cast from {a} to {b}")),
            };
            ew(
                "convert",
                vec![u(n), mode, u(x[0].offset), u(out.offset)],
                vec![x[0].buf],
                out.buf,
                n,
            )
        }
        Op::OneHot { classes } => ew(
            "one_hot",
            vec![u(n), u(*classes), u(x[0].offset), u(out.offset)],
            vec![x[0].buf],
            out.buf,
            n,
        ),
        Op::DropoutMask { p, key } => ew(
            "dropout_mask",
            vec![u(n), u(out.offset), bits(*p), *key],
            vec![],
            out.buf,
            n,
        ),
        Op::Im2Col(w) => {
            let (oh, ow) = w
                .output(xs[0].dims()[2], xs[0].dims()[3])
                .ok_or("window does not fit")?;
            // One invocation per (image, channel, output pixel), writing its KH·KW taps.
            let pixels = n / (w.k[0] * w.k[1]);
            conv(
                "im2col",
                window_kp(pixels, &xs[0], w, oh, ow, x[0].offset, out.offset, 0),
                vec![x[0].buf],
                out.buf,
                pixels,
            )
        }
        Op::Col2Im(w) => {
            let (oh, ow) = w.output(os.dims()[2], os.dims()[3]).ok_or("window does not fit")?;
            conv(
                "col2im",
                window_kp(n, os, w, oh, ow, x[0].offset, out.offset, 0),
                vec![x[0].buf],
                out.buf,
                n,
            )
        }
        Op::MaxPoolArgmax(w) | Op::AvgPool(w) => {
            let entry = if matches!(op, Op::AvgPool(_)) {
                "avg_pool"
            } else {
                "pool_argmax"
            };
            conv(
                entry,
                window_kp(n, &xs[0], w, os.dims()[2], os.dims()[3], x[0].offset, out.offset, 0),
                vec![x[0].buf],
                out.buf,
                n,
            )
        }
        Op::AvgPoolGrad(w) => conv(
            "avg_pool_grad",
            window_kp(n, os, w, xs[0].dims()[2], xs[0].dims()[3], x[0].offset, out.offset, 0),
            vec![x[0].buf],
            out.buf,
            n,
        ),
        Op::GatherPlanes => {
            let w = Window {
                k: [1, 1],
                stride: [1, 1],
                pad: [0, 0],
                dilation: [1, 1],
            };
            conv(
                "gather_planes",
                window_kp(
                    n,
                    &xs[0],
                    &w,
                    os.dims()[2],
                    os.dims()[3],
                    x[0].offset,
                    out.offset,
                    x[1].offset,
                ),
                vec![x[0].buf, x[1].buf],
                out.buf,
                n,
            )
        }
        Op::ScatterPlanes(w) => conv(
            "scatter_planes",
            window_kp(
                n,
                os,
                w,
                xs[0].dims()[2],
                xs[0].dims()[3],
                x[0].offset,
                out.offset,
                x[1].offset,
            ),
            vec![x[0].buf, x[1].buf],
            out.buf,
            n,
        ),
    };
    Ok(vec![d])
}

#[cfg(test)]
mod tests {
    use super::coalesce;

    #[test]
    fn coalesce_merges_only_axes_every_operand_steps_over_as_one() {
        // Contiguous (2, 3, 4) plus a (1, 3, 1) bias broadcast: nothing merges across the bias axis.
        let (d, [a, b]) = coalesce(&[2, 3, 4], [&[12, 4, 1], &[0, 1, 0]]);
        assert_eq!((d, a, b), (vec![2, 3, 4], vec![12, 4, 1], vec![0, 1, 0]));
        // Both contiguous: one axis.
        let (d, [a, b]) = coalesce(&[2, 3, 4], [&[12, 4, 1], &[12, 4, 1]]);
        assert_eq!((d, a, b), (vec![24], vec![1], vec![1]));
        // A row broadcast over the leading axes: those merge, the last stays.
        let (d, [a, b]) = coalesce(&[2, 3, 4], [&[12, 4, 1], &[0, 0, 1]]);
        assert_eq!((d, a, b), (vec![6, 4], vec![4, 1], vec![0, 1]));
        // A transposed operand merges nothing; size-1 axes vanish.
        let (d, [a]) = coalesce(&[3, 1, 4], [&[1, 99, 3]]);
        assert_eq!((d, a), (vec![3, 4], vec![1, 3]));
        // All size 1: one axis of size 1.
        let (d, [a]) = coalesce(&[1, 1], [&[5, 1]]);
        assert_eq!((d, a), (vec![1], vec![0]));
    }
}
