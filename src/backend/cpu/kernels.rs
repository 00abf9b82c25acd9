//! Every op of the op set, on host slices. Written to be read: one function per op family,
//! shapes in comments, no cleverness beyond a broadcast odometer and the SGEMM call.

use crate::backend::{Fused, StepUniforms, UpdateKernel};
use crate::graph::{BinaryOp, Op, ReduceOp, UnaryOp, Window};
use crate::optim::OptimizerKind;
use crate::shape::{broadcast_strides, Shape};
use std::cell::Cell;
use std::sync::MutexGuard;

type KResult = std::result::Result<(), String>;

/// The error function, Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), in f64.
pub fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t + 0.254_829_592)
            * t
            * (-x * x).exp();
    if x >= 0.0 {
        y
    } else {
        -y
    }
}

fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// tanh through one f64 exponential: `(1 − e^{−2|x|}) / (1 + e^{−2|x|})` with the sign of `x`,
/// and `x` itself below 1e-4 (where `x − x³/3` rounds to `x` in f32). Correctly rounded to f32
/// almost everywhere, and several times faster than the C library's `tanhf` (which goes through
/// `expm1f` and was a third of an LSTM training step on this backend).
pub fn tanh(x: f32) -> f32 {
    let a = x.abs() as f64;
    if a < 1e-4 || x.is_nan() {
        return x;
    }
    let t = (-2.0 * a).exp();
    (((1.0 - t) / (1.0 + t)) as f32).copysign(x)
}

/// `f(x)` for each unary op.
#[inline(always)]
pub fn unary(op: UnaryOp, x: f32) -> f32 {
    match op {
        UnaryOp::Neg => -x,
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Square => x * x,
        UnaryOp::Abs => x.abs(),
        UnaryOp::Sign => {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                0.0
            }
        }
        UnaryOp::Recip => 1.0 / x,
        UnaryOp::Step => (x > 0.0) as u8 as f32,
        UnaryOp::Sigmoid => sigmoid(x),
        UnaryOp::Tanh => tanh(x),
        UnaryOp::Relu => x.max(0.0),
        UnaryOp::LeakyRelu(a) => {
            if x > 0.0 {
                x
            } else {
                a * x
            }
        }
        UnaryOp::Elu(a) => {
            if x > 0.0 {
                x
            } else {
                a * x.exp_m1()
            }
        }
        // max(x, 0) + ln(1 + e^−|x|): no overflow for large |x|.
        UnaryOp::Softplus => x.max(0.0) + (-x.abs()).exp().ln_1p(),
        UnaryOp::Gelu => (0.5 * x as f64 * (1.0 + erf(x as f64 / std::f64::consts::SQRT_2))) as f32,
        UnaryOp::Clamp(lo, hi) => x.max(lo).min(hi),
        UnaryOp::PowScalar(p) => x.powf(p),
        UnaryOp::AddScalar(c) => x + c,
        UnaryOp::MulScalar(c) => c * x,
    }
}

/// `f'(x)` for each unary op.
#[inline(always)]
pub fn unary_deriv(op: UnaryOp, x: f32) -> f32 {
    match op {
        UnaryOp::Neg => -1.0,
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => 1.0 / x,
        UnaryOp::Sqrt => 0.5 / x.sqrt(),
        UnaryOp::Square => 2.0 * x,
        UnaryOp::Abs => unary(UnaryOp::Sign, x),
        UnaryOp::Sign | UnaryOp::Step => 0.0,
        UnaryOp::Recip => -1.0 / (x * x),
        UnaryOp::Sigmoid => {
            let s = sigmoid(x);
            s * (1.0 - s)
        }
        UnaryOp::Tanh => {
            let t = tanh(x);
            1.0 - t * t
        }
        UnaryOp::Relu => (x > 0.0) as u8 as f32,
        UnaryOp::LeakyRelu(a) => {
            if x > 0.0 {
                1.0
            } else {
                a
            }
        }
        UnaryOp::Elu(a) => {
            if x > 0.0 {
                1.0
            } else {
                a * x.exp()
            }
        }
        UnaryOp::Softplus => sigmoid(x),
        UnaryOp::Gelu => {
            let xd = x as f64;
            let cdf = 0.5 * (1.0 + erf(xd / std::f64::consts::SQRT_2));
            let pdf = (-0.5 * xd * xd).exp() / (2.0 * std::f64::consts::PI).sqrt();
            (cdf + xd * pdf) as f32
        }
        // 0 at the bounds themselves, as PyTorch's clamp and hardtanh.
        UnaryOp::Clamp(lo, hi) => (x > lo && x < hi) as u8 as f32,
        UnaryOp::PowScalar(p) => p * x.powf(p - 1.0),
        UnaryOp::AddScalar(_) => 1.0,
        UnaryOp::MulScalar(c) => c,
    }
}

#[inline(always)]
fn binary(op: BinaryOp, a: f32, b: f32) -> f32 {
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        BinaryOp::Max => a.max(b),
        BinaryOp::Min => a.min(b),
        BinaryOp::Pow => a.powf(b),
        BinaryOp::Greater => (a > b) as u8 as f32,
        BinaryOp::GreaterEqual => (a >= b) as u8 as f32,
        BinaryOp::Equal => (a == b) as u8 as f32,
    }
}

/// Run [`multiversion!`] kernels in their baseline build even where the CPU has AVX2 (for the
/// test that both builds give the same bits).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
static BASELINE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A kernel function built twice from one body: for the baseline x86-64 the crate targets
/// (SSE2: loops four lanes wide) and with AVX2 (eight), the second picked at run time where the
/// CPU has it. Closures written in the body inherit the features, so loops inside them (the
/// per-channel and per-chunk tasks handed to the thread pool) widen too; a loop in another,
/// non-inlined function does not, and a closure that such a loop calls per element must not
/// be written here (it could no longer be inlined into it). Same operations in the same order,
/// so the same bits: Rust never contracts a multiply and an add into an FMA.
macro_rules! multiversion {
    ($(#[$m:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) $body
                if !BASELINE.load(std::sync::atomic::Ordering::Relaxed) && std::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2 (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            fn base($($arg: $ty),*) $body
            base($($arg),*)
        }
    };
}

/// `$body` with `$op` bound to the unary op `$u`: a `const` for the common activations, so
/// that a loop calling [`unary`] or [`unary_deriv`] loses its per-element `match` (and
/// vectorises) even inside a closure handed to the thread pool (a `let` binding would be a
/// captured value there, and the match a jump per element); the scalar affine ops as a value
/// whose variant is visible where the loop is not behind a closure. The definitions stay in
/// those two functions.
macro_rules! with_unary {
    ($u:expr, |$op:ident| $body:expr) => {
        match $u {
            UnaryOp::Relu => {
                #[allow(non_upper_case_globals)]
                const $op: UnaryOp = UnaryOp::Relu;
                $body
            }
            UnaryOp::Step => {
                #[allow(non_upper_case_globals)]
                const $op: UnaryOp = UnaryOp::Step;
                $body
            }
            UnaryOp::Sigmoid => {
                #[allow(non_upper_case_globals)]
                const $op: UnaryOp = UnaryOp::Sigmoid;
                $body
            }
            UnaryOp::Tanh => {
                #[allow(non_upper_case_globals)]
                const $op: UnaryOp = UnaryOp::Tanh;
                $body
            }
            UnaryOp::Neg => {
                #[allow(non_upper_case_globals)]
                const $op: UnaryOp = UnaryOp::Neg;
                $body
            }
            UnaryOp::Square => {
                #[allow(non_upper_case_globals)]
                const $op: UnaryOp = UnaryOp::Square;
                $body
            }
            UnaryOp::Recip => {
                #[allow(non_upper_case_globals)]
                const $op: UnaryOp = UnaryOp::Recip;
                $body
            }
            // The scalar is loop-invariant and the variant a constant: the match still goes.
            UnaryOp::MulScalar(c) => {
                let $op = UnaryOp::MulScalar(c);
                $body
            }
            UnaryOp::AddScalar(c) => {
                let $op = UnaryOp::AddScalar(c);
                $body
            }
            other => {
                let $op = other;
                $body
            }
        }
    };
}

/// The same for binary ops: the arithmetic ones become constants.
macro_rules! with_binary {
    ($b:expr, |$op:ident| $body:expr) => {
        match $b {
            BinaryOp::Add => {
                #[allow(non_upper_case_globals)]
                const $op: BinaryOp = BinaryOp::Add;
                $body
            }
            BinaryOp::Sub => {
                #[allow(non_upper_case_globals)]
                const $op: BinaryOp = BinaryOp::Sub;
                $body
            }
            BinaryOp::Mul => {
                #[allow(non_upper_case_globals)]
                const $op: BinaryOp = BinaryOp::Mul;
                $body
            }
            BinaryOp::Div => {
                #[allow(non_upper_case_globals)]
                const $op: BinaryOp = BinaryOp::Div;
                $body
            }
            other => {
                let $op = other;
                $body
            }
        }
    };
}

/// Elements below which an element-wise kernel stays on the calling thread: a fork-join costs
/// a few microseconds, what about 16K elements of a simple op take.
const PAR_MIN: usize = 1 << 15;
/// Elements per parallel task of an element-wise kernel.
const PAR_CHUNK: usize = 1 << 13;

/// `out[i] = f(a[i])`, across the cores when large.
fn map1(out: &mut [f32], a: &[f32], f: impl Fn(f32) -> f32 + Sync) {
    use rayon::prelude::*;
    let run = |o: &mut [f32], a: &[f32]| {
        for (o, &v) in o.iter_mut().zip(a) {
            *o = f(v);
        }
    };
    if out.len() < PAR_MIN {
        run(out, a);
    } else {
        out.par_chunks_mut(PAR_CHUNK)
            .zip(a.par_chunks(PAR_CHUNK))
            .for_each(|(o, a)| run(o, a));
    }
}

/// `out[i] = f(a[i], b[i])`, across the cores when large.
fn map2(out: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) {
    use rayon::prelude::*;
    let run = |o: &mut [f32], a: &[f32], b: &[f32]| {
        for ((o, &p), &q) in o.iter_mut().zip(a).zip(b) {
            *o = f(p, q);
        }
    };
    if out.len() < PAR_MIN {
        run(out, a, b);
    } else {
        out.par_chunks_mut(PAR_CHUNK)
            .zip(a.par_chunks(PAR_CHUNK).zip(b.par_chunks(PAR_CHUNK)))
            .for_each(|(o, (a, b))| run(o, a, b));
    }
}

/// Walk every index of `dims` in row-major order, calling `f(linear, [offset in operand k])`
/// where operand `k` is read with `strides[k]` (0 on broadcast axes).
fn for_each_index<const N: usize>(dims: &[usize], strides: [&[usize]; N], mut f: impl FnMut(usize, [usize; N])) {
    for_each_row(dims, strides, |lin, base, step, len| {
        for j in 0..len {
            f(lin + j, std::array::from_fn(|k| base[k] + j * step[k]));
        }
    });
}

/// The walk of [`for_each_index`] one innermost row at a time: `f(first linear index, each
/// operand's offset of the row's first element, each operand's stride along the row, length)`,
/// so a kernel can run a tight loop over a row (contiguous, or broadcast with stride 0).
fn for_each_row<const N: usize>(
    dims: &[usize],
    strides: [&[usize]; N],
    mut f: impl FnMut(usize, [usize; N], [usize; N], usize),
) {
    // The same walk over fewer, longer axes.
    let (dims, strides) = crate::shape::coalesce(dims, strides);
    let r = dims.len();
    let inner = dims[r - 1];
    let step: [usize; N] = std::array::from_fn(|k| strides[k][r - 1]);
    let outer: usize = dims[..r - 1].iter().product();
    let mut idx = vec![0usize; r - 1];
    let mut base = [0usize; N];
    let mut lin = 0;
    for _ in 0..outer {
        f(lin, base, step, inner);
        lin += inner;
        // Advance the odometer over the outer axes.
        for ax in (0..r - 1).rev() {
            idx[ax] += 1;
            for k in 0..N {
                base[k] += strides[k][ax];
            }
            if idx[ax] < dims[ax] {
                break;
            }
            for k in 0..N {
                base[k] -= strides[k][ax] * dims[ax];
            }
            idx[ax] = 0;
        }
    }
}

/// [`for_each_row`] for a number of operands known only at run time, over the linear indices
/// `span` only (a row cut by the span's ends is passed as its part inside).
fn for_each_row_dyn(
    dims: &[usize],
    strides: &[&[usize]],
    span: std::ops::Range<usize>,
    mut f: impl FnMut(usize, &[usize], &[usize], usize),
) {
    let (d, s) = crate::shape::coalesce_dyn(dims, strides);
    let r = d.len();
    let inner = d[r - 1];
    if inner == 0 || span.is_empty() {
        return;
    }
    let step: Vec<usize> = s.iter().map(|sk| sk[r - 1]).collect();
    // The odometer over the outer axes, started at the span's first row.
    let mut idx = vec![0usize; r - 1];
    let mut rest = span.start / inner;
    for ax in (0..r - 1).rev() {
        idx[ax] = rest % d[ax];
        rest /= d[ax];
    }
    let mut base: Vec<usize> = s
        .iter()
        .map(|sk| idx.iter().zip(sk).map(|(i, st)| i * st).sum())
        .collect();
    let mut at = base.clone();
    let (mut lin, mut col) = (span.start, span.start % inner);
    while lin < span.end {
        let len = (inner - col).min(span.end - lin);
        for ((a, b), st) in at.iter_mut().zip(&base).zip(&step) {
            *a = b + col * st;
        }
        f(lin, &at, &step, len);
        lin += len;
        col = 0;
        for ax in (0..r - 1).rev() {
            idx[ax] += 1;
            for (b, sk) in base.iter_mut().zip(&s) {
                *b += sk[ax];
            }
            if idx[ax] < d[ax] {
                break;
            }
            for (b, sk) in base.iter_mut().zip(&s) {
                *b -= sk[ax] * d[ax];
            }
            idx[ax] = 0;
        }
    }
}

/// Elements a fused kernel computes at a time: each value of the run is one chunk-sized array.
const CHUNK: usize = 256;

/// A fused run of element-wise ops (see [`Fused`]), row by row over the index space and in
/// chunks of [`CHUNK`] elements: the external operands of a chunk are loaded, then each op runs
/// over the chunk with the same scalar function as its own kernel (so the bits are those of
/// the unfused ops), then the stored values are written. `bufs` is the buffer table as cells:
/// a run may store a value over the operand it was computed from (the memory plan reuses the
/// storage an operand frees), which is sound because a chunk's operands are loaded before any
/// of its values are stored, and each element is stored only where it was read.
pub fn fused(f: &Fused, bufs: &[&[Cell<f32>]]) {
    let total = f.shape.numel();
    if total < PAR_MIN {
        return fused_span(f, bufs, 0..total);
    }
    /// The buffer table, shared by the tasks of one fused kernel.
    struct Shared<'a>(&'a [&'a [Cell<f32>]]);
    // SAFETY: the tasks below run disjoint spans of the index space. Each stores only the
    // output elements of its own span, and reads either storage that no output of the run
    // covers or, in place, the very elements of its span that it then overwrites (the fusion
    // pass's hazard rule): no element is touched by two tasks.
    unsafe impl Sync for Shared<'_> {}
    let shared = Shared(bufs);
    use rayon::prelude::*;
    (0..total.div_ceil(PAR_CHUNK)).into_par_iter().for_each(|t| {
        let shared = &shared;
        fused_span(f, shared.0, t * PAR_CHUNK..((t + 1) * PAR_CHUNK).min(total));
    });
}

/// [`fused`] over the linear indices `span`, with this thread's chunk values.
fn fused_span(f: &Fused, bufs: &[&[Cell<f32>]], span: std::ops::Range<usize>) {
    thread_local! {
        /// The chunk-sized values, kept between kernels so a step allocates nothing here.
        static VALS: std::cell::RefCell<Vec<[f32; CHUNK]>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    VALS.with_borrow_mut(|vals| {
        vals.resize(f.inputs.len() + f.body.len(), [0.0; CHUNK]);
        fused_with(f, bufs, vals, span);
    })
}

multiversion! {
    fn fused_with(f: &Fused, bufs: &[&[Cell<f32>]], vals: &mut [[f32; CHUNK]], span: std::ops::Range<usize>) {
        let n_in = f.inputs.len();
        let strides: Vec<&[usize]> = f.inputs.iter().map(|(_, s)| s.as_slice()).collect();
        for_each_row_dyn(&f.shape.0, &strides, span, |lin, base, step, len| {
            let mut at = 0;
            while at < len {
                let c = (len - at).min(CHUNK);
                for (k, (v, (view, _))) in vals[..n_in].iter_mut().zip(&f.inputs).enumerate() {
                    let x = &bufs[view.buf][view.first()..view.first() + view.len];
                    let (b, st, v) = (base[k] + at * step[k], step[k], &mut v[..c]);
                    match st {
                        0 => v.fill(x[b].get()),
                        1 => {
                            for (o, x) in v.iter_mut().zip(&x[b..b + c]) {
                                *o = x.get();
                            }
                        }
                        _ => {
                            for (j, o) in v.iter_mut().enumerate() {
                                *o = x[b + j * st].get();
                            }
                        }
                    }
                }
                for (j, (op, args)) in f.body.iter().enumerate() {
                    let (done, rest) = vals.split_at_mut(n_in + j);
                    let o = &mut rest[0][..c];
                    let a = |i: usize| &done[args[i]][..c];
                    match op {
                        Op::Unary(u) => with_unary!(*u, |u| {
                            for (o, &v) in o.iter_mut().zip(a(0)) {
                                *o = unary(u, v);
                            }
                        }),
                        Op::UnaryGrad(u) => with_unary!(*u, |u| {
                            for ((o, &v), &d) in o.iter_mut().zip(a(0)).zip(a(1)) {
                                *o = d * unary_deriv(u, v);
                            }
                        }),
                        Op::Binary(b) => with_binary!(*b, |b| {
                            for ((o, &p), &q) in o.iter_mut().zip(a(0)).zip(a(1)) {
                                *o = binary(b, p, q);
                            }
                        }),
                        Op::Where => {
                            for (((o, &w), &p), &q) in o.iter_mut().zip(a(0)).zip(a(1)).zip(a(2)) {
                                *o = if w != 0.0 { p } else { q };
                            }
                        }
                        Op::BroadcastTo => o.copy_from_slice(a(0)),
                        other => unreachable!("the fusion pass fuses element-wise ops only, not {}", other.name()),
                    }
                }
                for &(v, view) in &f.outputs {
                    let out = &bufs[view.buf][view.first() + lin + at..view.first() + lin + at + c];
                    for (o, &x) in out.iter().zip(&vals[v][..c]) {
                        o.set(x);
                    }
                }
                at += c;
            }
        });
    }
}

/// Σ x² in f64, in eight interleaved partial sums (which vectorise) added pairwise at the end.
pub fn sum_squares(x: &[f32]) -> f64 {
    lane_sum(x, |v| (v as f64) * (v as f64))
}

/// Σ f(x) in f64 over eight interleaved partial sums, added pairwise at the end; the summation
/// order is fixed by the length alone, so results are reproducible.
#[inline(always)] // inlined into multiversioned kernels, whose closures it calls per element
fn lane_sum(x: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    let mut lanes = [0f64; 8];
    let mut blocks = x.chunks_exact(8);
    for b in &mut blocks {
        for (l, &v) in lanes.iter_mut().zip(b) {
            *l += f(v);
        }
    }
    let tail: f64 = blocks.remainder().iter().map(|&v| f(v)).sum();
    let [a, b, c, d, e, g, h, i] = lanes;
    (((a + b) + (c + d)) + ((e + g) + (h + i))) + tail
}

/// Σ f(a, b) over two slices of one length, in the eight f64 lanes of [`lane_sum`].
#[inline(always)] // as lane_sum
fn lane_sum2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f64) -> f64 {
    let mut lanes = [0f64; 8];
    let (mut ba, mut bb) = (a.chunks_exact(8), b.chunks_exact(8));
    for (x, y) in (&mut ba).zip(&mut bb) {
        for ((l, &p), &q) in lanes.iter_mut().zip(x).zip(y) {
            *l += f(p, q);
        }
    }
    let tail: f64 = ba.remainder().iter().zip(bb.remainder()).map(|(&p, &q)| f(p, q)).sum();
    let [a, b, c, d, e, g, h, i] = lanes;
    (((a + b) + (c + d)) + ((e + g) + (h + i))) + tail
}

/// `(N, C, S)` of a channel-first shape: `S` the product of the axes after the channels.
fn ncs(s: &Shape) -> (usize, usize, usize) {
    (s.0[0], s.0[1], s.0[2..].iter().product())
}

/// `f(channel)` for every channel, in order, across the cores when the tensor is large.
fn per_channel(c: usize, numel: usize, f: impl Fn(usize) -> [f32; 2] + Sync) -> Vec<[f32; 2]> {
    use rayon::prelude::*;
    if numel < PAR_MIN {
        (0..c).map(f).collect()
    } else {
        (0..c).into_par_iter().map(&f).collect()
    }
}

multiversion! {
    /// [`Op::ChannelMoments`]: x `(N, C, S)` → `[means; variances]`, each channel's sums over its
    /// N planes in f64 lanes, the variance from the mean in a second pass.
    fn channel_moments(x: &[f32], xs: &Shape, out: &mut [f32]) {
        let (n, c, s) = ncs(xs);
        let count = (n * s) as f64;
        let m = per_channel(c, x.len(), |ch| {
            let plane = |i: usize| &x[(i * c + ch) * s..(i * c + ch + 1) * s];
            let mean = (0..n).map(|i| lane_sum(plane(i), |v| v as f64)).sum::<f64>() / count;
            let var = (0..n)
                .map(|i| {
                    lane_sum(plane(i), |v| {
                        let d = v as f64 - mean;
                        d * d
                    })
                })
                .sum::<f64>()
                / count;
            [mean as f32, var as f32]
        });
        for (ch, [mean, var]) in m.into_iter().enumerate() {
            out[ch] = mean;
            out[c + ch] = var;
        }
    }
}

multiversion! {
    /// [`Op::BatchNorm`]: `y = (x − mean)·(γ·r) + β`, `r = 1/√(var + ε)`, one sample at a time
    /// across the cores.
    fn batch_norm(x: &[f32], m: &[f32], affine: &[f32], xs: &Shape, eps: f32, out: &mut [f32]) {
        use rayon::prelude::*;
        let (_, c, s) = ncs(xs);
        let a: Vec<f32> = (0..c).map(|ch| affine[ch] * (1.0 / (m[c + ch] + eps).sqrt())).collect();
        let run = |o: &mut [f32], x: &[f32]| {
            for (ch, (o, x)) in o.chunks_mut(s).zip(x.chunks(s)).enumerate() {
                let (mean, a, b) = (m[ch], a[ch], affine[c + ch]);
                for (o, &v) in o.iter_mut().zip(x) {
                    *o = (v - mean) * a + b;
                }
            }
        };
        if out.len() < PAR_MIN {
            for (o, x) in out.chunks_mut(c * s).zip(x.chunks(c * s)) {
                run(o, x);
            }
        } else {
            out.par_chunks_mut(c * s)
                .zip(x.par_chunks(c * s))
                .for_each(|(o, x)| run(o, x));
        }
    }
}

multiversion! {
    /// [`Op::BatchNormSums`]: `[Σ dy; Σ dy·(x − mean)]` per channel, in f64 lanes.
    fn batch_norm_sums(x: &[f32], m: &[f32], dy: &[f32], xs: &Shape, out: &mut [f32]) {
        let (n, c, s) = ncs(xs);
        let sums = per_channel(c, x.len(), |ch| {
            let mean = m[ch] as f64;
            let (mut s0, mut s1) = (0.0, 0.0);
            for i in 0..n {
                let r = (i * c + ch) * s..(i * c + ch + 1) * s;
                s0 += lane_sum(&dy[r.clone()], |d| d as f64);
                s1 += lane_sum2(&x[r.clone()], &dy[r], |v, d| d as f64 * (v as f64 - mean));
            }
            [s0 as f32, s1 as f32]
        });
        for (ch, [s0, s1]) in sums.into_iter().enumerate() {
            out[ch] = s0;
            out[c + ch] = s1;
        }
    }
}

/// `(outer, n, inner)` around `axis`.
fn split3(s: &Shape, axis: usize) -> (usize, usize, usize) {
    (
        s.0[..axis].iter().product(),
        s.0[axis],
        s.0[axis + 1..].iter().product(),
    )
}

/// Run one graph op. `x` are the operand slices, `out` the output slice.
pub fn op(op: &Op, x: &[&[f32]], xs: &[Shape], out: &mut [f32], os: &Shape, u: &StepUniforms) -> KResult {
    match op {
        Op::Input { .. } | Op::Param { .. } => return Err("leaves are not kernels".into()),
        // Operands arrive widened to f32 and the result is narrowed to the output's type by the
        // caller, so a conversion is a copy here.
        Op::Cast(_) => out.copy_from_slice(x[0]),
        Op::Const { value } => out.fill(*value),
        Op::Unary(u) => with_unary!(*u, |u| map1(out, x[0], |v| unary(u, v))),
        Op::UnaryGrad(u) => with_unary!(*u, |u| map2(out, x[0], x[1], |v, d| d * unary_deriv(u, v))),
        Op::Binary(b) => {
            if xs[0] == *os && xs[1] == *os {
                with_binary!(*b, |b| map2(out, x[0], x[1], |p, q| binary(b, p, q)));
            } else {
                let (sa, sb) = (broadcast_strides(&xs[0], os), broadcast_strides(&xs[1], os));
                // Row by row, with the common layouts (contiguous, or one side broadcast along
                // the row) as plain slice loops.
                let (p, q) = (x[0], x[1]);
                with_binary!(*b, |b| for_each_row(&os.0, [&sa, &sb], |i, [ia, ib], [ja, jb], len| {
                    let o = &mut out[i..i + len];
                    match (ja, jb) {
                        (1, 1) => {
                            for ((o, &u), &v) in o.iter_mut().zip(&p[ia..ia + len]).zip(&q[ib..ib + len]) {
                                *o = binary(b, u, v);
                            }
                        }
                        (1, 0) => {
                            let v = q[ib];
                            for (o, &u) in o.iter_mut().zip(&p[ia..ia + len]) {
                                *o = binary(b, u, v);
                            }
                        }
                        (0, 1) => {
                            let u = p[ia];
                            for (o, &v) in o.iter_mut().zip(&q[ib..ib + len]) {
                                *o = binary(b, u, v);
                            }
                        }
                        _ => {
                            for (j, o) in o.iter_mut().enumerate() {
                                *o = binary(b, p[ia + j * ja], q[ib + j * jb]);
                            }
                        }
                    }
                }));
            }
        }
        Op::Where => {
            let s: Vec<Vec<usize>> = xs.iter().map(|s| broadcast_strides(s, os)).collect();
            for_each_index(&os.0, [&s[0], &s[1], &s[2]], |i, [c, a, b]| {
                out[i] = if x[0][c] != 0.0 { x[1][a] } else { x[2][b] };
            });
        }
        Op::Reduce { op, axes, .. } => reduce(*op, axes, x[0], &xs[0], out),
        Op::BroadcastTo => {
            let s = broadcast_strides(&xs[0], os);
            for_each_index(&os.0, [&s], |i, [a]| out[i] = x[0][a]);
        }
        Op::Reshape => out.copy_from_slice(x[0]),
        Op::Permute { perm } => {
            let st = xs[0].strides();
            let s: Vec<usize> = perm.iter().map(|&p| st[p]).collect();
            for_each_index(&os.0, [&s], |i, [a]| out[i] = x[0][a]);
        }
        Op::Concat { axis } => {
            let (outer, n_out, inner) = split3(os, *axis);
            let mut start = 0;
            for (xi, si) in x.iter().zip(xs) {
                let n = si.0[*axis];
                for o in 0..outer {
                    let dst = (o * n_out + start) * inner;
                    out[dst..dst + n * inner].copy_from_slice(&xi[o * n * inner..(o + 1) * n * inner]);
                }
                start += n;
            }
        }
        Op::Slice { axis, start, end } => {
            let (outer, n_in, inner) = split3(&xs[0], *axis);
            let n = end - start;
            for o in 0..outer {
                let src = (o * n_in + start) * inner;
                out[o * n * inner..(o + 1) * n * inner].copy_from_slice(&x[0][src..src + n * inner]);
            }
        }
        Op::Pad { axis, before, .. } => {
            let (outer, n_in, inner) = split3(&xs[0], *axis);
            let n_out = os.0[*axis];
            out.fill(0.0);
            for o in 0..outer {
                let dst = (o * n_out + before) * inner;
                out[dst..dst + n_in * inner].copy_from_slice(&x[0][o * n_in * inner..(o + 1) * n_in * inner]);
            }
        }
        Op::MatMul { ta, tb } => matmul(*ta, *tb, x[0], &xs[0], x[1], &xs[1], out, os)?,
        Op::Softmax | Op::LogSoftmax => {
            let c = *os.0.last().unwrap_or(&1);
            for (row, o) in x[0].chunks(c).zip(out.chunks_mut(c)) {
                let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                let sum: f64 = row.iter().map(|&v| ((v - m) as f64).exp()).sum();
                if matches!(op, Op::Softmax) {
                    for (o, &v) in o.iter_mut().zip(row) {
                        *o = (((v - m) as f64).exp() / sum) as f32;
                    }
                } else {
                    let lse = m as f64 + sum.ln();
                    for (o, &v) in o.iter_mut().zip(row) {
                        *o = (v as f64 - lse) as f32;
                    }
                }
            }
        }
        Op::SoftmaxCrossEntropy { smoothing } => {
            // logits (N, C), labels (N) → loss (N) = lse − (1−ε)·x_y − (ε/C)·Σx
            let c = xs[0].0[1];
            for (i, row) in x[0].chunks(c).enumerate() {
                let y = x[1][i] as usize;
                let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
                let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
                let mean = row.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
                let e = *smoothing as f64;
                out[i] = (lse - (1.0 - e) * row[y] as f64 - e * mean) as f32;
            }
        }
        Op::SoftmaxCrossEntropyGrad { smoothing } => {
            // dlogits (N, C) = dy · (softmax − ((1−ε)·onehot + ε/C))
            let c = xs[0].0[1];
            for (i, (row, o)) in x[0].chunks(c).zip(out.chunks_mut(c)).enumerate() {
                let y = x[1][i] as usize;
                let d = x[2][i] as f64;
                let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
                let sum: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
                let e = *smoothing as f64;
                for (j, (o, &v)) in o.iter_mut().zip(row).enumerate() {
                    let q = e / c as f64 + if j == y { 1.0 - e } else { 0.0 };
                    *o = (d * ((v as f64 - m).exp() / sum - q)) as f32;
                }
            }
        }
        Op::OneHot { classes } => {
            out.fill(0.0);
            for (i, &y) in x[0].iter().enumerate() {
                out[i * classes + y as usize] = 1.0;
            }
        }
        Op::GatherRows => {
            // table (V, E), ids (…) → (…, E)
            let (v, e) = (xs[0].0[0], xs[0].0[1]);
            for (o, &id) in out.chunks_mut(e).zip(x[1]) {
                let r = id as usize;
                if r >= v {
                    return Err(format!("id {r} is outside the table's {v} rows"));
                }
                o.copy_from_slice(&x[0][r * e..(r + 1) * e]);
            }
        }
        Op::ScatterAddRows => {
            // dy (…, E), ids (…) → (V, E), summed in index order
            let (v, e) = (os.0[0], os.0[1]);
            out.fill(0.0);
            for (d, &id) in x[0].chunks(e).zip(x[1]) {
                let r = id as usize;
                if r >= v {
                    return Err(format!("id {r} is outside the table's {v} rows"));
                }
                for (o, &d) in out[r * e..(r + 1) * e].iter_mut().zip(d) {
                    *o += d;
                }
            }
        }
        Op::ChannelMoments => channel_moments(x[0], &xs[0], out),
        Op::BatchNorm { eps } => batch_norm(x[0], x[1], x[2], &xs[0], *eps, out),
        Op::BatchNormSums => batch_norm_sums(x[0], x[1], x[2], &xs[0], out),
        Op::LstmCell => lstm_cell(x[0], x[1], &xs[1], out),
        Op::LstmCellGrad => lstm_cell_grad(x[0], x[1], x[2], &xs[1], out),
        Op::GruCell => gru_cell(x[0], x[1], x[2], &xs[2], out),
        Op::GruCellGrad => gru_cell_grad(x[0], x[1], x[2], &xs[1], out),
        Op::Im2Col(w) => im2col(w, x[0], &xs[0], out, false)?,
        Op::Col2Im(w) => {
            out.fill(0.0);
            im2col(w, x[0], os, out, true)?
        }
        Op::MaxPoolArgmax(w) => pool(w, x[0], &xs[0], out, os, PoolKind::Argmax)?,
        Op::AvgPool(w) => pool(w, x[0], &xs[0], out, os, PoolKind::Avg)?,
        Op::AvgPoolGrad(w) => {
            out.fill(0.0);
            pool(w, x[0], &xs[0], out, os, PoolKind::AvgGrad)?
        }
        Op::Augment { aug, key } => augment(aug, *key, x[0], &xs[0], out, u),
        Op::GatherPlanes => {
            // x (N, C, H, W), idx (N, C, OH, OW) → out (N, C, OH, OW); planes across the cores.
            use rayon::prelude::*;
            let (plane_in, plane_out) = (xs[0].0[2] * xs[0].0[3], os.0[2] * os.0[3]);
            if plane_in > 0 && plane_out > 0 {
                out.par_chunks_mut(plane_out)
                    .zip(x[1].par_chunks(plane_out).zip(x[0].par_chunks(plane_in)))
                    .for_each(|(o, (idx, plane))| {
                        for (o, &i) in o.iter_mut().zip(idx) {
                            *o = plane[i as usize];
                        }
                    });
            }
        }
        Op::ScatterPlanes(_) => {
            // dy (N, C, OH, OW), idx (N, C, OH, OW) → out (N, C, H, W), summed in index order.
            use rayon::prelude::*;
            let (plane_in, plane_out) = (os.0[2] * os.0[3], xs[0].0[2] * xs[0].0[3]);
            if plane_in > 0 && plane_out > 0 {
                out.par_chunks_mut(plane_in)
                    .zip(x[0].par_chunks(plane_out).zip(x[1].par_chunks(plane_out)))
                    .for_each(|(o, (dy, idx))| {
                        o.fill(0.0);
                        for (&d, &i) in dy.iter().zip(idx) {
                            o[i as usize] += d;
                        }
                    });
            }
        }
        Op::DropoutMask { p, key } => {
            let scale = 1.0 / (1.0 - p);
            for (i, o) in out.iter_mut().enumerate() {
                let r = crate::rng::dropout_uniform(u.seed as u32, u.step as u32, *key, i as u32);
                *o = if r >= *p { scale } else { 0.0 };
            }
        }
        // The schedule aliases a stop-gradient to its operand; run as a kernel it is a copy.
        Op::StopGradient => out.copy_from_slice(x[0]),
        // 1 where the uniform falls below the probability: P(1) = p for p in [0, 1] (the
        // uniforms are multiples of 2⁻²⁴ in [0, 1)); NaN compares false and gives 0.
        Op::Bernoulli { key } => {
            for (i, (o, &p)) in out.iter_mut().zip(x[0]).enumerate() {
                let r = crate::rng::dropout_uniform(u.seed as u32, u.step as u32, *key, i as u32);
                *o = if r < p { 1.0 } else { 0.0 };
            }
        }
    }
    Ok(())
}

/// The input position `(iy, ix)` that kernel tap `(i, j)` of output `(oy, ox)` reads, if it is
/// inside the image (not padding).
#[cfg(test)]
fn tap(w: &Window, h: usize, wd: usize, oy: usize, ox: usize, i: usize, j: usize) -> Option<usize> {
    let iy = (oy * w.stride[0] + i * w.dilation[0]) as isize - w.pad[0] as isize;
    let ix = (ox * w.stride[1] + j * w.dilation[1]) as isize - w.pad[1] as isize;
    (iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd).then(|| iy as usize * wd + ix as usize)
}

/// The output columns `ox` in `lo..hi` whose input column `ox·stride + off` lies in `0..wd`.
#[inline]
fn inside(off: isize, stride: usize, wd: usize, ow: usize) -> (usize, usize) {
    let s = stride as isize;
    // Smallest ox with ox·s + off ≥ 0, and smallest with ox·s + off ≥ wd.
    let first = |bound: isize| -> usize { ((bound - off).max(0) + s - 1).div_euclid(s) as usize };
    let lo = first(0).min(ow);
    (lo, first(wd as isize).clamp(lo, ow))
}

/// x `(N, C, H, W)` ↔ cols `(N, C·KH·KW, OH·OW)`; `fold` sums cols back into x. One output row
/// at a time: the row's valid input range is computed once, so the inner loop is a strided (for
/// stride 1, contiguous) copy with no per-element bounds test.
fn im2col(w: &Window, x: &[f32], xs: &Shape, cols: &mut [f32], fold: bool) -> KResult {
    use rayon::prelude::*;
    let [n, c, h, wd] = [xs.0[0], xs.0[1], xs.0[2], xs.0[3]];
    let (oh, ow) = w.output(h, wd).ok_or("window does not fit")?;
    let (image, unfolded) = (c * h * wd, c * w.k[0] * w.k[1] * oh * ow);
    if n == 0 || unfolded == 0 {
        return Ok(());
    }
    if image == 0 {
        // An empty image under padding: every tap is padding (folding writes nothing).
        if !fold {
            cols[..n * unfolded].fill(0.0);
        }
        return Ok(());
    }
    // Images are independent: one task each, across the cores.
    if fold {
        // `x` is the cols input and `cols` the image output.
        cols.par_chunks_mut(image)
            .zip(x.par_chunks(unfolded))
            .for_each(|(img, col)| unfold_image(w, col, img, [c, h, wd], (oh, ow), true));
    } else {
        cols.par_chunks_mut(unfolded)
            .zip(x.par_chunks(image))
            .for_each(|(col, img)| unfold_image(w, img, col, [c, h, wd], (oh, ow), false));
    }
    debug_assert_eq!(x.len() / if fold { unfolded } else { image }, n);
    Ok(())
}

/// im2col (or, with `fold`, col2im adding into `dst`) of one `(C, H, W)` image.
fn unfold_image(
    w: &Window,
    src: &[f32],
    dst: &mut [f32],
    [c, h, wd]: [usize; 3],
    (oh, ow): (usize, usize),
    fold: bool,
) {
    let (kh, kw, l) = (w.k[0], w.k[1], oh * ow);
    let (sh, sw) = (w.stride[0], w.stride[1]);
    // Stride 1 with output rows as long as the input's ("same" padding): a tap's whole output
    // row is one contiguous run of the plane, shifted. Unfolding copies it at once and zeroes
    // what the padding covers (the edge columns of each row, the rows above and below the
    // image); folding adds it at once, each column in the padding masked to +0 (it would land
    // on the neighbouring row's edge, where adding +0 changes nothing: the sums start at +0, so
    // are never −0). Each element still receives its taps in the same order: the same bits.
    let shifted = sh == 1 && sw == 1 && ow == wd;
    thread_local! {
        /// Folding's masks, per tap column over the output positions, kept between images.
        static MASKS: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    MASKS.with_borrow_mut(|masks| {
        masks.clear();
        if shifted && fold {
            masks.extend((0..kw).flat_map(|j| {
                let off = (j * w.dilation[1]) as isize - w.pad[1] as isize;
                let (lo, hi) = inside(off, sw, wd, ow);
                let row = (0..ow).map(move |ox| if (lo..hi).contains(&ox) { !0u32 } else { 0 });
                std::iter::repeat_n(row, oh).flatten()
            }));
        }
        for ch in 0..c {
            let plane = ch * h * wd;
            for i in 0..kh {
                for j in 0..kw {
                    let row = (ch * kh + i) * kw + j;
                    let off = (j * w.dilation[1]) as isize - w.pad[1] as isize;
                    let (lo, hi) = inside(off, sw, wd, ow);
                    if shifted {
                        let dy = (i * w.dilation[0]) as isize - w.pad[0] as isize;
                        // Output position t is plane position t + shift, for t in t0..t1.
                        let shift = dy * wd as isize + off;
                        let t0 = (-shift).clamp(0, l as isize) as usize;
                        let t1 = ((h * wd) as isize - shift).clamp(t0 as isize, l as isize) as usize;
                        // A tap wholly outside the plane (t0 == t1) touches nothing of it; `t0 +
                        // shift` is only a position in the plane when something is touched.
                        let at = (t0 < t1).then(|| plane + (t0 as isize + shift) as usize);
                        if fold {
                            if let Some(to) = at {
                                let d = &mut dst[to..to + (t1 - t0)];
                                let v = &src[row * l + t0..row * l + t1];
                                let m = &masks[j * l + t0..j * l + t1];
                                for ((d, &v), &m) in d.iter_mut().zip(v).zip(m) {
                                    *d += f32::from_bits(v.to_bits() & m);
                                }
                            }
                            continue;
                        }
                        let out = &mut dst[row * l..(row + 1) * l];
                        out[..t0].fill(0.0);
                        out[t1..].fill(0.0);
                        if let Some(from) = at {
                            out[t0..t1].copy_from_slice(&src[from..from + (t1 - t0)]);
                        }
                        // Output rows r0..r1 read rows of the image; the others are padding.
                        let r0 = (-dy).clamp(0, oh as isize) as usize;
                        let r1 = (h as isize - dy).clamp(r0 as isize, oh as isize) as usize;
                        out[..r0 * ow].fill(0.0);
                        out[r1 * ow..].fill(0.0);
                        // The edge columns in the padding, column by column down the rows: a strided
                        // store each (a fill per row would be a library call for one element).
                        for col in (0..lo).chain(hi..ow) {
                            for v in out[r0 * ow..r1 * ow].iter_mut().skip(col).step_by(ow) {
                                *v = 0.0;
                            }
                        }
                        continue;
                    }
                    for oy in 0..oh {
                        let col = row * l + oy * ow;
                        let iy = (oy * sh + i * w.dilation[0]) as isize - w.pad[0] as isize;
                        // A row in the padding, or a tap whose every column is (then `lo == hi`
                        // and `ix0` below would not be a column of the image).
                        if iy < 0 || iy as usize >= h || lo == hi {
                            if !fold {
                                dst[col..col + ow].fill(0.0);
                            }
                            continue;
                        }
                        let base = plane + iy as usize * wd;
                        // Input column of output column ox: ox·sw + off (≥ 0 for ox ≥ lo).
                        let ix0 = (lo as isize * sw as isize + off) as usize;
                        if fold && sw == 1 {
                            // Contiguous on both sides: a loop that vectorises.
                            let d = &mut dst[base + ix0..base + ix0 + (hi - lo)];
                            for (d, &v) in d.iter_mut().zip(&src[col + lo..col + hi]) {
                                *d += v;
                            }
                        } else if fold {
                            let d = dst[base + ix0..].iter_mut().step_by(sw);
                            for (d, &v) in d.zip(&src[col + lo..col + hi]) {
                                *d += v;
                            }
                        } else {
                            dst[col..col + lo].fill(0.0);
                            dst[col + hi..col + ow].fill(0.0);
                            let out = &mut dst[col + lo..col + hi];
                            if sw == 1 {
                                out.copy_from_slice(&src[base + ix0..base + ix0 + (hi - lo)]);
                            } else {
                                for (o, &v) in out.iter_mut().zip(src[base + ix0..].iter().step_by(sw)) {
                                    *o = v;
                                }
                            }
                        }
                    }
                }
            }
        }
    });
}

enum PoolKind {
    Argmax,
    Avg,
    AvgGrad,
}

/// Pooling over `(N, C, H, W)` planes. For `AvgGrad`, `x` is `dy (N, C, OH, OW)` and `out` the
/// zeroed `(N, C, H, W)` gradient.
fn pool(w: &Window, x: &[f32], xs: &Shape, out: &mut [f32], os: &Shape, kind: PoolKind) -> KResult {
    let (img, small) = if matches!(kind, PoolKind::AvgGrad) {
        (os, xs)
    } else {
        (xs, os)
    };
    let (h, wd) = (img.0[2], img.0[3]);
    let (oh, ow) = (small.0[2], small.0[3]);
    let area = (w.k[0] * w.k[1]) as f32;
    // The input rows of each output row's window and the input columns of each output column's
    // window that fall inside the image, computed once: a window's taps are their products, in
    // row-major window order.
    let along = |n: usize, out: usize, k: usize, s: usize, pad: usize, d: usize| -> Vec<Vec<usize>> {
        (0..out)
            .map(|o| {
                (0..k)
                    .filter_map(|i| {
                        let v = (o * s + i * d) as isize - pad as isize;
                        (v >= 0 && (v as usize) < n).then_some(v as usize)
                    })
                    .collect()
            })
            .collect()
    };
    let rows = along(h, oh, w.k[0], w.stride[0], w.pad[0], w.dilation[0]);
    let cols = along(wd, ow, w.k[1], w.stride[1], w.pad[1], w.dilation[1]);
    let full = rows.iter().all(|r| r.len() == w.k[0]) && cols.iter().all(|c| c.len() == w.k[1]);
    use rayon::prelude::*;
    let (img_plane, small_plane) = (h * wd, oh * ow);
    if img_plane == 0 || small_plane == 0 {
        return Ok(());
    }
    let (in_plane, out_plane) = match kind {
        PoolKind::AvgGrad => (small_plane, img_plane),
        PoolKind::Argmax | PoolKind::Avg => (img_plane, small_plane),
    };
    // Planes are independent: one task each, across the cores.
    out.par_chunks_mut(out_plane)
        .zip(x.par_chunks(in_plane))
        .try_for_each(|(out, x)| -> KResult {
            if full && matches!(kind, PoolKind::Argmax) && w.k == [2, 2] && w.stride == [2, 2] && w.dilation == [1, 1] {
                // 2×2 windows at stride 2 inside the image (the usual pooling): the rule below
                // written out over the two input rows of each output row.
                let take = |t: f32, b: f32| (t > b) | (t.is_nan() & !b.is_nan());
                for (oy, o) in out.chunks_mut(ow).enumerate() {
                    let (top, bottom) = (2 * oy * wd, (2 * oy + 1) * wd);
                    let (r0, r1) = (&x[top..top + 2 * ow], &x[bottom..bottom + 2 * ow]);
                    for (ox, o) in o.iter_mut().enumerate() {
                        let (mut bi, mut bv) = (top + 2 * ox, r0[2 * ox]);
                        for (i, t) in [
                            (top + 2 * ox + 1, r0[2 * ox + 1]),
                            (bottom + 2 * ox, r1[2 * ox]),
                            (bottom + 2 * ox + 1, r1[2 * ox + 1]),
                        ] {
                            if take(t, bv) {
                                (bi, bv) = (i, t);
                            }
                        }
                        *o = bi as f32;
                    }
                }
                return Ok(());
            }
            if full && matches!(kind, PoolKind::Argmax) {
                // Every window inside the image (the usual unpadded pooling): the taps of output
                // column `ox` are `first(ox) + i·DH·W + j·DW`. The same rule as below, with the
                // window loops outside a loop over a block of output columns, so the block's
                // running maxima are independent (no compare-select chain per window).
                const B: usize = 64;
                let (kh, kw, dy, dx) = (w.k[0], w.k[1], w.dilation[0] * wd, w.dilation[1]);
                // Indices inside a plane as u32 (a plane's index is exact in f32, so < 2²⁴).
                let mut first = [0u32; B];
                let (mut bi, mut bv, mut tv) = ([0u32; B], [0f32; B], [0f32; B]);
                for (oy, ry) in rows.iter().enumerate() {
                    for ox0 in (0..ow).step_by(B) {
                        let cs = &cols[ox0..(ox0 + B).min(ow)];
                        let n = cs.len();
                        let (first, bi, bv, tv) = (&mut first[..n], &mut bi[..n], &mut bv[..n], &mut tv[..n]);
                        for (((f, i), v), cx) in first.iter_mut().zip(bi.iter_mut()).zip(bv.iter_mut()).zip(cs) {
                            *f = (ry[0] * wd + cx[0]) as u32;
                            (*i, *v) = (*f, x[*f as usize]);
                        }
                        for ti in 0..kh {
                            for tj in 0..kw {
                                let off = ti * dy + tj * dx;
                                if off == 0 {
                                    continue;
                                }
                                // Gather the tap, then compare and select over contiguous
                                // arrays: a loop that vectorises (a branch per comparison
                                // would mispredict on real data).
                                for (t, &f) in tv.iter_mut().zip(first.iter()) {
                                    *t = x[f as usize + off];
                                }
                                let off = off as u32;
                                for (((i, b), &t), &f) in
                                    bi.iter_mut().zip(bv.iter_mut()).zip(tv.iter()).zip(first.iter())
                                {
                                    let take = (t > *b) | (t.is_nan() & !b.is_nan());
                                    *i = if take { f + off } else { *i };
                                    *b = if take { t } else { *b };
                                }
                            }
                        }
                        for (o, &i) in out[oy * ow + ox0..].iter_mut().zip(bi.iter()) {
                            *o = i as f32;
                        }
                    }
                }
                return Ok(());
            }
            for (oy, ry) in rows.iter().enumerate() {
                for (ox, cx) in cols.iter().enumerate() {
                    let o = oy * ow + ox;
                    match kind {
                        PoolKind::Argmax => {
                            // The first maximum in row-major window order wins; NaN wins (propagates).
                            let (Some(&y0), Some(&x0)) = (ry.first(), cx.first()) else {
                                return Err("a pooling window lies entirely in the padding".into());
                            };
                            let (mut best, mut bv) = (y0 * wd + x0, x[y0 * wd + x0]);
                            for &iy in ry {
                                let row = &x[iy * wd..(iy + 1) * wd];
                                for &ix in cx {
                                    let v = row[ix];
                                    // Non-short-circuit `|`, `&`: a select, not a branch.
                                    if (v > bv) | (v.is_nan() & !bv.is_nan()) {
                                        (best, bv) = (iy * wd + ix, v);
                                    }
                                }
                            }
                            out[o] = best as f32;
                        }
                        PoolKind::Avg => {
                            let mut sum = 0.0f32;
                            for &iy in ry {
                                for &ix in cx {
                                    sum += x[iy * wd + ix];
                                }
                            }
                            out[o] = sum / area;
                        }
                        PoolKind::AvgGrad => {
                            for &iy in ry {
                                for &ix in cx {
                                    out[iy * wd + ix] += x[o] / area;
                                }
                            }
                        }
                    }
                }
            }
            Ok(())
        })
}

fn reduce(op: ReduceOp, axes: &[usize], x: &[f32], xs: &Shape, out: &mut [f32]) {
    // Map each input index to its output index: the kept axes keep their (keepdim) strides.
    let kept = Shape(
        xs.0.iter()
            .enumerate()
            .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
            .collect(),
    );
    let ks = kept.strides();
    let to_out: Vec<usize> = (0..xs.rank())
        .map(|i| if axes.contains(&i) { 0 } else { ks[i] })
        .collect();
    let ins = xs.strides();
    match op {
        ReduceOp::Sum | ReduceOp::Mean => {
            let scale = if op == ReduceOp::Mean {
                (out.len() as f64) / (x.len() as f64)
            } else {
                1.0
            };
            // Leading axes reduced, trailing kept (a weight gradient summed over the batch):
            // x is (R, M) and out (M). Blocks of columns go across the cores, each column summed
            // down its rows in order, as the general loop below does: the same bits.
            let lead = axes.len();
            if (0..lead).all(|a| axes.contains(&a)) && lead < xs.rank() && x.len() >= 1 << 16 && out.len() >= 2 {
                use rayon::prelude::*;
                const COLS: usize = 256;
                let m = out.len();
                out.par_chunks_mut(COLS).enumerate().for_each(|(b, o)| {
                    let mut acc = [0f64; COLS];
                    let acc = &mut acc[..o.len()];
                    for row in x.chunks_exact(m) {
                        for (a, &v) in acc.iter_mut().zip(&row[b * COLS..b * COLS + o.len()]) {
                            *a += v as f64;
                        }
                    }
                    for (o, a) in o.iter_mut().zip(acc.iter()) {
                        *o = (a * scale) as f32;
                    }
                });
                return;
            }
            let mut acc = vec![0f64; out.len()];
            for_each_row(&xs.0, [&ins, &to_out], |_, [i, o], [ji, jo], len| {
                if jo == 0 && ji == 1 {
                    // The whole row sums into one output (a reduced innermost axis).
                    acc[o] += lane_sum(&x[i..i + len], |v| v as f64);
                } else if jo == 0 {
                    acc[o] += (0..len).map(|j| x[i + j * ji] as f64).sum::<f64>();
                } else {
                    for j in 0..len {
                        acc[o + j * jo] += x[i + j * ji] as f64;
                    }
                }
            });
            for (o, a) in out.iter_mut().zip(acc) {
                *o = (a * scale) as f32;
            }
        }
        ReduceOp::Max => {
            out.fill(f32::NEG_INFINITY);
            for_each_index(&xs.0, [&ins, &to_out], |_, [i, o]| {
                // NaN propagates, as in PyTorch.
                if x[i] > out[o] || x[i].is_nan() {
                    out[o] = x[i];
                }
            });
        }
    }
}

/// `c (M×N, row-major) = A·B` for A and B given by pointer and (row, column) strides.
///
/// # Safety
/// `a` must be valid for reads at every `i·rsa + p·csa` (i < M, p < K), `b` at every
/// `p·rsb + j·csb` (p < K, j < N), and `c` must not overlap either.
#[allow(clippy::too_many_arguments)]
unsafe fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    c: &mut [f32],
    par: gemm::Parallelism,
) {
    debug_assert!(c.len() >= m * n);
    // With `read_dst` false the destination is only written: C = 1·A·B.
    gemm::gemm(
        m,
        n,
        k,
        c.as_mut_ptr(),
        1,
        n as isize,
        false,
        a,
        csa,
        rsa,
        b,
        csb,
        rsb,
        0.0f32,
        1.0f32,
        false,
        false,
        false,
        par,
    );
}

/// Whether `matmul` runs the products of a batch as one task each (small products), each
/// single-threaded: the case [`conv_pair`] reproduces image by image.
pub fn batch_tasks(batch: usize, m: usize, k: usize, n: usize) -> bool {
    batch > 1 && m * k + k * n < 1 << 15
}

/// Which adjacent pair of kernels [`conv_pair`] runs image by image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvPair {
    /// `cols = im2col(x)`, then `y = W·cols`: each image's columns are still in cache when
    /// its product reads them.
    Forward,
    /// `dcols = Wᵀ·dy`, then `dx = col2im(dcols)`: each image's columns are folded while in cache.
    Backward,
}

/// Two kernels of a convolution, interleaved per image: image `n`'s unfold (or product) and
/// then its product (or fold), images across the cores. Each image computes exactly what the
/// two kernels compute for it one after the other (the same unfold, the same single-threaded
/// product), so the results are the same bits; the columns of an image are read back from
/// cache instead of memory. Forward: `x (N, C, H, W)`, `w (O, CKK)` → `cols (N, CKK, L)` and
/// `y (N, O, L)`; backward: `x` = `dy (N, O, L)`, `w (O, CKK)` → `cols` and `dx (N, C, H, W)`.
/// With `cols` `None` (backward only, when nothing reads the columns afterwards) each image's
/// columns live in a per-thread buffer and are not stored.
///
/// # Safety
/// `x` must be valid for reads of N images (of its kind), `out` for writes of N outputs, `w`
/// and `cols` must not overlap either or each other, and `out` must either not overlap `x` or
/// lie exactly on it with images of one size (the memory plan puts a result in the storage its
/// operand frees): image `n` of `out` is written only after image `n` of `x` was read, and
/// the images of one task touch no other task's.
#[allow(clippy::too_many_arguments)]
pub unsafe fn conv_pair(
    kind: ConvPair,
    win: &Window,
    image: [usize; 4],
    o: usize,
    x: *const f32,
    w: &[f32],
    cols: Option<&mut [f32]>,
    out: *mut f32,
) -> KResult {
    use rayon::prelude::*;
    let [n, c, h, wd] = image;
    let (oh, ow) = win.output(h, wd).ok_or("window does not fit")?;
    let (ckk, l) = (c * win.k[0] * win.k[1], oh * ow);
    let (img, unfolded) = (c * h * wd, ckk * l);
    let (per_in, per_out) = match kind {
        ConvPair::Forward => (img, o * l),
        ConvPair::Backward => (o * l, img),
    };
    if w.len() < o * ckk || cols.as_ref().is_some_and(|c| c.len() < n * unfolded) {
        return Err(format!("operand buffers too small for a convolution over {image:?}"));
    }
    if cols.is_none() && kind == ConvPair::Forward {
        return Err("a forward convolution pair keeps its columns".into());
    }
    if n == 0 {
        return Ok(());
    }
    if unfolded == 0 {
        // No columns (no input channels, or an empty grid): the product over an empty inner
        // dimension is zero, as is the fold of nothing; `x` is not read.
        // SAFETY: `out` is valid for N outputs (the contract above).
        unsafe { std::slice::from_raw_parts_mut(out, n * per_out) }.fill(0.0);
        return Ok(());
    }
    /// The two image pointers, shared by the tasks (see the safety contract above).
    struct Images(*const f32, *mut f32);
    // SAFETY: each task dereferences only its own image of either (the contract above).
    unsafe impl Sync for Images {}
    let images = Images(x, out);
    let one = |i: usize, cn: &mut [f32]| {
        let images = &images;
        // SAFETY: image i of x, read before image i of out is written (they may coincide).
        let xn = unsafe { std::slice::from_raw_parts(images.0.add(i * per_in), per_in) };
        match kind {
            ConvPair::Forward => {
                unfold_image(win, xn, cn, [c, h, wd], (oh, ow), false);
                if per_out == 0 {
                    return;
                }
                let on = unsafe { std::slice::from_raw_parts_mut(images.1.add(i * per_out), per_out) };
                // SAFETY: `w` holds O·CKK and `cn` CKK·L elements, as the strides reach.
                unsafe {
                    sgemm(
                        o,
                        l,
                        ckk,
                        w.as_ptr(),
                        ckk as isize,
                        1,
                        cn.as_ptr(),
                        l as isize,
                        1,
                        on,
                        gemm::Parallelism::None,
                    )
                }
            }
            ConvPair::Backward => {
                if o == 0 {
                    cn.fill(0.0);
                } else {
                    // SAFETY: as above, with `w` transposed (CKK × O) and `xn` (dy) O·L.
                    unsafe {
                        sgemm(
                            ckk,
                            l,
                            o,
                            w.as_ptr(),
                            1,
                            ckk as isize,
                            xn.as_ptr(),
                            l as isize,
                            1,
                            cn,
                            gemm::Parallelism::None,
                        )
                    }
                }
                let on = unsafe { std::slice::from_raw_parts_mut(images.1.add(i * per_out), per_out) };
                on.fill(0.0);
                unfold_image(win, cn, on, [c, h, wd], (oh, ow), true);
            }
        }
    };
    match cols {
        Some(cols) => cols[..n * unfolded]
            .par_chunks_mut(unfolded)
            .enumerate()
            .for_each(|(i, cn)| one(i, cn)),
        None => {
            thread_local! {
                /// One image's columns, kept between calls.
                static COLS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
            }
            (0..n).into_par_iter().for_each(|i| {
                COLS.with_borrow_mut(|cn| {
                    cn.resize(unfolded, 0.0);
                    one(i, cn)
                })
            });
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn matmul(ta: bool, tb: bool, a: &[f32], sa: &Shape, b: &[f32], sb: &Shape, c: &mut [f32], sc: &Shape) -> KResult {
    // a: (..., M, K) or (..., K, M) when ta;  b: (..., K, N) or (..., N, K) when tb; either may
    // be a shared rank-2 matrix.
    let (ra, rb, rc) = (sa.rank(), sb.rank(), sc.rank());
    let (m, n) = (sc.0[rc - 2], sc.0[rc - 1]);
    let k = if ta { sa.0[ra - 2] } else { sa.0[ra - 1] };
    let batch: usize = sc.0[..rc - 2].iter().product();
    // Strides of the logical (M, K) and (K, N) matrices inside their storage.
    let (rsa, csa) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (rsb, csb) = if tb { (1, k as isize) } else { (n as isize, 1) };
    let a_step = if ra == 2 { 0 } else { m * k };
    let b_step = if rb == 2 { 0 } else { k * n };
    if a.len() < batch.saturating_sub(1) * a_step + m * k
        || b.len() < batch.saturating_sub(1) * b_step + k * n
        || c.len() < batch * m * n
    {
        return Err(format!(
            "operand buffers too small for a {batch}×({m}×{k})·({k}×{n}) product"
        ));
    }
    // Small products of a batch (a convolution's images) run one task each across the cores.
    let batch_tasks = batch_tasks(batch, m, k, n);
    let one = |i: usize, cp: &mut [f32]| {
        let (ap, bp) = (&a[i * a_step..], &b[i * b_step..]);
        if k == 0 {
            cp.fill(0.0);
            return;
        }
        // Products of a batch run one per task across the cores (below); a lone product (or a
        // batch of large ones) is split by the GEMM itself over rayon's pool.
        let par = if batch_tasks {
            gemm::Parallelism::None
        } else {
            gemm::Parallelism::Rayon(0)
        };
        // SAFETY: the check above guarantees `ap` holds M·K, `bp` K·N and `cp` M·N elements,
        // which is exactly what these strides reach; `cp` is a unique borrow disjoint from both.
        unsafe { sgemm(m, n, k, ap.as_ptr(), rsa, csa, bp.as_ptr(), rsb, csb, cp, par) }
    };
    let c = &mut c[..batch * m * n];
    if batch_tasks && m * n > 0 {
        use rayon::prelude::*;
        c.par_chunks_mut(m * n).enumerate().for_each(|(i, cp)| one(i, cp));
    } else if m * n > 0 {
        for (i, cp) in c.chunks_mut(m * n).enumerate() {
            one(i, cp);
        }
    }
    Ok(())
}

/// The fused optimiser step over every segment.
pub fn update(up: &UpdateKernel, bufs: &mut [MutexGuard<'_, Vec<f32>>], u: &StepUniforms) -> crate::error::Result<()> {
    let at = up.stats.first();
    let (sum_sq, bad) = (bufs[up.stats.buf][at], bufs[up.stats.buf][at + 1]);
    if bad != 0.0 {
        // A non-finite gradient or loss: the step is skipped, nothing changes.
        return Ok(());
    }
    // ‖g‖ of the scaled gradients, from Σ g² of the raw ones.
    let norm = (sum_sq as f64).sqrt() * u.grad_scale as f64;
    let mut w = std::mem::take(&mut *bufs[up.params]);
    let mut st: Vec<Vec<f32>> = up.state.iter().map(|&s| std::mem::take(&mut *bufs[s])).collect();
    let g = &bufs[up.grads];
    let scale = u.grad_scale
        * match up.max_norm {
            Some(max_norm) => (max_norm as f64 / (norm + 1e-6)).min(1.0) as f32,
            None => 1.0,
        };
    let k = up.rule.coefficients(u.lr, u.t);
    let lr = k.lr;
    for seg in &up.segments {
        let wd = if seg.decay { up.weight_decay } else { 0.0 };
        for i in seg.offset..seg.offset + seg.len {
            let mut gi = g[i] * scale;
            if let Some(c) = up.clip_value {
                gi = gi.clamp(-c, c);
            }
            if !matches!(up.rule, OptimizerKind::AdamW { .. }) {
                gi += wd * w[i];
            }
            match up.rule {
                OptimizerKind::Sgd => w[i] -= lr * gi,
                OptimizerKind::Momentum { .. } => {
                    st[0][i] = k.b1 * st[0][i] + gi;
                    w[i] -= lr * st[0][i];
                }
                OptimizerKind::Nesterov { .. } => {
                    st[0][i] = k.b1 * st[0][i] + gi;
                    w[i] -= lr * (gi + k.b1 * st[0][i]);
                }
                OptimizerKind::AdaGrad { .. } => {
                    st[0][i] += gi * gi;
                    w[i] -= lr * gi / (st[0][i].sqrt() + k.eps);
                }
                OptimizerKind::RmsProp { momentum, centered, .. } => {
                    st[0][i] = k.b1 * st[0][i] + k.one_minus_b1 * gi * gi;
                    let mut v = st[0][i];
                    if centered {
                        st[2][i] = k.b1 * st[2][i] + k.one_minus_b1 * gi;
                        v -= st[2][i] * st[2][i];
                    }
                    let d = v.sqrt() + k.eps;
                    if momentum > 0.0 {
                        st[1][i] = k.b2 * st[1][i] + gi / d;
                        w[i] -= lr * st[1][i];
                    } else {
                        w[i] -= lr * gi / d;
                    }
                }
                OptimizerKind::Adam { .. } | OptimizerKind::AdamW { .. } => {
                    if matches!(up.rule, OptimizerKind::AdamW { .. }) {
                        w[i] -= lr * wd * w[i];
                    }
                    st[0][i] = k.b1 * st[0][i] + k.one_minus_b1 * gi;
                    st[1][i] = k.b2 * st[1][i] + k.one_minus_b2 * gi * gi;
                    let mh = st[0][i] * k.inv_bias1;
                    let vh = st[1][i] * k.inv_bias2;
                    w[i] -= lr * mh / (vh.sqrt() + k.eps);
                }
            }
        }
    }
    *bufs[up.params] = w;
    for (&s, v) in up.state.iter().zip(st) {
        *bufs[s] = v;
    }
    Ok(())
}

/// The activated gates (i, f, g, o) of unit `j` of one row of pre-activations `a` (4H).
fn lstm_gates(a: &[f32], h: usize, j: usize) -> (f32, f32, f32, f32) {
    (
        sigmoid(a[j]),
        sigmoid(a[h + j]),
        tanh(a[2 * h + j]),
        sigmoid(a[3 * h + j]),
    )
}

/// LSTM step: gates (N, 4H) in order i, f, g, o; c (N, H) → out (2, N, H) = [h', c'].
fn lstm_cell(gates: &[f32], c: &[f32], cs: &Shape, out: &mut [f32]) {
    let (n, h) = (cs.0[0], cs.0[1]);
    let (hs, cn) = out.split_at_mut(n * h);
    for r in 0..n {
        let a = &gates[r * 4 * h..(r + 1) * 4 * h];
        for j in 0..h {
            let (i, f, g, o) = lstm_gates(a, h, j);
            let c2 = f * c[r * h + j] + i * g;
            cn[r * h + j] = c2;
            hs[r * h + j] = o * tanh(c2);
        }
    }
}

/// The LSTM step's adjoint: gates, c, dy (2, N, H) → [d gates (N, 4H); d c (N, H)].
fn lstm_cell_grad(gates: &[f32], c: &[f32], dy: &[f32], cs: &Shape, out: &mut [f32]) {
    let (n, h) = (cs.0[0], cs.0[1]);
    let (dg, dc) = out.split_at_mut(4 * n * h);
    for r in 0..n {
        let a = &gates[r * 4 * h..(r + 1) * 4 * h];
        let d = &mut dg[r * 4 * h..(r + 1) * 4 * h];
        for j in 0..h {
            let k = r * h + j;
            let (i, f, g, o) = lstm_gates(a, h, j);
            let c2 = f * c[k] + i * g;
            let tc = tanh(c2);
            let (dh, dcn) = (dy[k], dy[n * h + k]);
            let dct = dcn + dh * o * (1.0 - tc * tc);
            d[j] = dct * g * i * (1.0 - i);
            d[h + j] = dct * c[k] * f * (1.0 - f);
            d[2 * h + j] = dct * i * (1.0 - g * g);
            d[3 * h + j] = dh * tc * o * (1.0 - o);
            dc[k] = dct * f;
        }
    }
}

/// GRU step: xw, hw (N, 3H) in order r, z, n; h (N, H) → out (5, N, H) = [h', r, z, n, hn].
fn gru_cell(xw: &[f32], hw: &[f32], hp: &[f32], hs: &Shape, out: &mut [f32]) {
    let (n, h) = (hs.0[0], hs.0[1]);
    let nh = n * h;
    for r in 0..n {
        for j in 0..h {
            let (b, k) = (r * 3 * h, r * h + j);
            let rg = sigmoid(xw[b + j] + hw[b + j]);
            let z = sigmoid(xw[b + h + j] + hw[b + h + j]);
            let hn = hw[b + 2 * h + j];
            let nn = tanh(xw[b + 2 * h + j] + rg * hn);
            out[k] = (1.0 - z) * nn + z * hp[k];
            out[nh + k] = rg;
            out[2 * nh + k] = z;
            out[3 * nh + k] = nn;
            out[4 * nh + k] = hn;
        }
    }
}

/// The GRU step's adjoint: cell (5, N, H), h (N, H), dy (5, N, H) → [d xw (N, 3H); d hw (N, 3H);
/// d h (N, H)]. The gradients arriving at the saved activations (rows 1–4) are added to theirs.
fn gru_cell_grad(cell: &[f32], hp: &[f32], dy: &[f32], hs: &Shape, out: &mut [f32]) {
    let (n, h) = (hs.0[0], hs.0[1]);
    let nh = n * h;
    let (dx, rest) = out.split_at_mut(3 * nh);
    let (dhw, dh) = rest.split_at_mut(3 * nh);
    for r in 0..n {
        for j in 0..h {
            let (b, k) = (r * 3 * h, r * h + j);
            let (rg, z, nn, hn) = (cell[nh + k], cell[2 * nh + k], cell[3 * nh + k], cell[4 * nh + k]);
            let d = dy[k];
            let dn = d * (1.0 - z) + dy[3 * nh + k];
            let dz = d * (hp[k] - nn) + dy[2 * nh + k];
            let dan = dn * (1.0 - nn * nn);
            let dr = dan * hn + dy[nh + k];
            let dar = dr * rg * (1.0 - rg);
            let daz = dz * z * (1.0 - z);
            dx[b + j] = dar;
            dx[b + h + j] = daz;
            dx[b + 2 * h + j] = dan;
            dhw[b + j] = dar;
            dhw[b + h + j] = daz;
            dhw[b + 2 * h + j] = dan * rg + dy[4 * nh + k];
            dh[k] = d * z;
        }
    }
}

// ----- data augmentation (issue 11, part 2) -----

/// `sin θ` and `cos θ` for `|θ| ≤ π/4` by their Taylor polynomials to θ¹¹ and θ¹⁰ (error below
/// 1e-8), in Horner form: only products and sums, so shaders/augment.wgsl, which evaluates the
/// same polynomials, gets the same values (WGSL's `sin` and `cos` may be off by 2⁻¹¹).
pub fn sin_cos_small(t: f32) -> (f32, f32) {
    let t2 = t * t;
    let s = t
        * (1.0
            + t2 * (-0.16666667
                + t2 * (0.008333334 + t2 * (-0.0001984127 + t2 * (2.7557319e-6 + t2 * -2.5052108e-8)))));
    let c = 1.0 + t2 * (-0.5 + t2 * (0.041666668 + t2 * (-0.0013888889 + t2 * (2.4801587e-5 + t2 * -2.755732e-7))));
    (s, c)
}

/// One image's draw of [`Op::Augment`].
struct Draw {
    dx: isize,
    dy: isize,
    flip: bool,
    sin: f32,
    cos: f32,
    brightness: f32,
    contrast: f32,
}

fn draw(a: &crate::graph::Augment, k: u32, img: usize) -> Draw {
    use crate::rng::{hash32, unit24};
    let h = |j: u32| hash32((8u32.wrapping_mul(img as u32)).wrapping_add(j) ^ k);
    let span = 2 * a.shift as u32 + 1;
    let theta = a.rotate_radians() * (2.0 * unit24(h(3)) - 1.0);
    let (sin, cos) = sin_cos_small(theta);
    Draw {
        dx: (h(0) % span) as isize - a.shift as isize,
        dy: (h(1) % span) as isize - a.shift as isize,
        flip: a.flip && h(2) & 1 == 1,
        sin,
        cos,
        brightness: a.brightness * (2.0 * unit24(h(4)) - 1.0),
        contrast: 1.0 + a.contrast * (2.0 * unit24(h(5)) - 1.0),
    }
}

/// Twelve 16-bit uniforms summed, scaled and centred: mean 0, variance 1, computed exactly (the
/// sum is an integer below 2²⁰), so both backends add the same noise.
fn noise_z(kn: u32, e: usize) -> f32 {
    let mut s = 0u32;
    for m in 0..6u32 {
        let h = crate::rng::hash32(6u32.wrapping_mul(e as u32).wrapping_add(m) ^ kn);
        s += (h & 0xffff) + (h >> 16);
    }
    s as f32 * (1.0 / 65536.0) - 6.0
}

/// x `(N, C, H, W)` → augmented `(N, C, H, W)`; see [`Op::Augment`] for the draws.
fn augment(a: &crate::graph::Augment, key: u32, x: &[f32], xs: &Shape, out: &mut [f32], u: &StepUniforms) {
    let [n, c, h, w] = [xs.0[0], xs.0[1], xs.0[2], xs.0[3]];
    let k = crate::rng::step_key(u.seed as u32, u.step as u32, key);
    let kn = crate::rng::hash32(k ^ 0x9e37_79b9);
    let (cx, cy) = ((w - 1) as f32 * 0.5, (h - 1) as f32 * 0.5);
    for img in 0..n {
        let d = draw(a, k, img);
        for ch in 0..c {
            let plane = img * c + ch;
            let src = &x[plane * h * w..(plane + 1) * h * w];
            let pixel = |y: isize, x: isize| -> f32 {
                if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
                    a.fill
                } else {
                    src[y as usize * w + x as usize]
                }
            };
            for oy in 0..h {
                for ox in 0..w {
                    let xf = (if d.flip { w - 1 - ox } else { ox }) as isize;
                    let (xsrc, ysrc) = (xf - d.dx, oy as isize - d.dy);
                    let v = if a.rotate > 0.0 {
                        let (du, dv) = (xsrc as f32 - cx, ysrc as f32 - cy);
                        let sx = cx + d.cos * du + d.sin * dv;
                        let sy = cy - d.sin * du + d.cos * dv;
                        let (x0, y0) = (sx.floor(), sy.floor());
                        let (fx, fy) = (sx - x0, sy - y0);
                        let (ix, iy) = (x0 as isize, y0 as isize);
                        let top = (1.0 - fx) * pixel(iy, ix) + fx * pixel(iy, ix + 1);
                        let bottom = (1.0 - fx) * pixel(iy + 1, ix) + fx * pixel(iy + 1, ix + 1);
                        (1.0 - fy) * top + fy * bottom
                    } else {
                        pixel(ysrc, xsrc)
                    };
                    let e = (plane * h + oy) * w + ox;
                    let mut o = d.contrast * (v - a.center) + a.center + d.brightness;
                    if a.noise > 0.0 {
                        o += a.noise * noise_z(kn, e);
                    }
                    out[e] = o;
                }
            }
        }
    }
}

#[cfg(test)]
mod augment_tests {
    #[test]
    fn small_angle_sine_and_cosine_are_accurate_to_f32() {
        for i in -1000..=1000 {
            let t = i as f32 / 1000.0 * std::f32::consts::FRAC_PI_4;
            let (s, c) = super::sin_cos_small(t);
            let (es, ec) = (t as f64).sin_cos();
            assert!(
                (s as f64 - es).abs() < 2e-7 && (c as f64 - ec).abs() < 2e-7,
                "θ = {t}: {s}, {c}"
            );
        }
    }
}

// ----- end of data augmentation -----

#[cfg(test)]
mod tests {
    use super::*;

    /// im2col and col2im of `w` over a (2, 3, h, wd) batch against their definition (`tap` per
    /// element); the folded columns are nonzero in the padding's places too, which folding must
    /// skip. Returns whether the window fits.
    fn check_im2col(w: &Window, h: usize, wd: usize) -> bool {
        let xs = Shape(vec![2, 3, h, wd]);
        let x: Vec<f32> = (0..xs.numel()).map(|v| v as f32 * 0.5 - 3.0).collect();
        let Some((oh, ow)) = w.output(h, wd) else { return false };
        let (kh, kw, l) = (w.k[0], w.k[1], oh * ow);
        let mut cols = vec![f32::NAN; 2 * 3 * kh * kw * l];
        im2col(w, &x, &xs, &mut cols, false).unwrap();
        let g: Vec<f32> = (0..cols.len()).map(|v| (v % 13) as f32 - 6.5).collect();
        let mut want = vec![0f32; cols.len()];
        let mut folded_want = vec![0f32; x.len()];
        for plane in 0..6 {
            for i in 0..kh {
                for j in 0..kw {
                    let row = (plane * kh + i) * kw + j;
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let at = tap(w, h, wd, oy, ox, i, j);
                            let e = row * l + oy * ow + ox;
                            want[e] = at.map_or(0.0, |q| x[plane * h * wd + q]);
                            if let Some(q) = at {
                                folded_want[plane * h * wd + q] += g[e];
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(cols, want, "unfold {w:?} on {h}×{wd}");
        let mut folded = vec![0f32; x.len()];
        im2col(w, &g, &xs, &mut folded, true).unwrap();
        assert_eq!(folded, folded_want, "fold {w:?} on {h}×{wd}");
        true
    }

    /// im2col against its definition on chosen windows with stride, padding and dilation,
    /// including ones whose padding exceeds the kernel's reach, square and not (square stride-1
    /// "same" windows take the shifted-copy path), on images down to one pixel.
    #[test]
    fn im2col_matches_its_definition() {
        let mut shifted = 0;
        for (h, wd) in [(7, 9), (1, 1), (1, 9), (4, 1)] {
            for (k, s, p, d) in [
                (3, 1, 1, 1),
                (3, 2, 1, 1),
                (5, 2, 2, 1),
                (5, 1, 2, 1),
                (3, 3, 4, 2),
                (1, 1, 0, 1),
                (2, 3, 0, 2),
            ] {
                for square in [false, true] {
                    let w = Window {
                        k: [k, if square { k } else { k + 1 }],
                        stride: [s, if square { s } else { s + 1 }],
                        pad: [p, p],
                        dilation: [d, d],
                    };
                    if check_im2col(&w, h, wd) && w.stride == [1, 1] && w.output(h, wd).unwrap().1 == wd {
                        shifted += 1;
                    }
                }
            }
        }
        assert!(shifted >= 8, "the shifted-copy path ran ({shifted} windows)");
    }

    /// An image with no rows under padding unfolds to all padding: zeros, every column.
    #[test]
    fn im2col_of_an_empty_image_is_zero() {
        let w = Window {
            k: [1, 3],
            stride: [1, 1],
            pad: [1, 1],
            dilation: [1, 1],
        };
        let xs = Shape(vec![2, 3, 0, 4]);
        let (oh, ow) = w.output(0, 4).unwrap();
        let mut cols = vec![f32::NAN; 2 * 3 * 3 * oh * ow];
        im2col(&w, &[], &xs, &mut cols, false).unwrap();
        assert!(cols.iter().all(|&v| v == 0.0), "{cols:?}");
    }

    /// im2col against its definition on 400 pseudo-random windows (each axis its own kernel
    /// size, stride, padding up to twice the kernel and dilation) over images of 1 to 9 pixels
    /// a side.
    #[test]
    fn im2col_matches_its_definition_on_random_windows() {
        let mut state = 0x2545f491u32;
        let mut next = |n: u32| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state % n) as usize
        };
        let mut fitted = 0;
        for _ in 0..400 {
            let k = [1 + next(5), 1 + next(5)];
            let w = Window {
                k,
                stride: [1 + next(3), 1 + next(3)],
                pad: [next(2 * k[0] as u32 + 1), next(2 * k[1] as u32 + 1)],
                dilation: [1 + next(3), 1 + next(3)],
            };
            fitted += usize::from(check_im2col(&w, 1 + next(9), 1 + next(9)));
        }
        assert!(fitted >= 200, "only {fitted} of the windows fit their images");
    }

    /// Max pooling's argmax against its definition (the first maximum in row-major window
    /// order; NaN wins), on windows that fit the image (the blocked path, including rows wider
    /// than its 64-column block) and windows that overlap the padding, with ties and NaNs.
    #[test]
    fn max_pool_argmax_matches_its_definition() {
        for (h, wd) in [(7, 9), (6, 150)] {
            let xs = Shape(vec![2, 3, h, wd]);
            // Few distinct values (ties), and a NaN every 17 elements.
            let x: Vec<f32> = (0..xs.numel())
                .map(|v| if v % 17 == 5 { f32::NAN } else { ((v * 7919) % 5) as f32 })
                .collect();
            for (k, s, p, d, rect) in [
                (2, 2, 0, 1, 1),
                (2, 2, 0, 1, 0),
                (3, 1, 1, 1, 1),
                (3, 2, 0, 2, 1),
                (2, 1, 1, 1, 1),
                (3, 3, 0, 1, 1),
            ] {
                let w = Window {
                    k: [k, k + rect],
                    stride: [s, s],
                    pad: [p, p],
                    dilation: [d, d],
                };
                let Some((oh, ow)) = w.output(h, wd) else { continue };
                let os = Shape(vec![2, 3, oh, ow]);
                let mut out = vec![-1f32; os.numel()];
                pool(&w, &x, &xs, &mut out, &os, PoolKind::Argmax).unwrap();
                for plane in 0..6 {
                    let x = &x[plane * h * wd..(plane + 1) * h * wd];
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let mut best: Option<usize> = None;
                            for i in 0..k {
                                for j in 0..k + rect {
                                    if let Some(t) = tap(&w, h, wd, oy, ox, i, j) {
                                        let better =
                                            best.is_none_or(|b| x[t] > x[b] || (x[t].is_nan() && !x[b].is_nan()));
                                        if better {
                                            best = Some(t);
                                        }
                                    }
                                }
                            }
                            let got = out[(plane * oh + oy) * ow + ox];
                            assert_eq!(
                                got,
                                best.unwrap() as f32,
                                "{w:?} on {h}×{wd}, plane {plane}, ({oy}, {ox})"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Sums and means over leading axes (the batch sum of a weight gradient, which goes across
    /// the cores in blocks of columns) against their definition: each column summed down its
    /// rows in order in f64, rounded once, on column counts that are not multiples of a block.
    #[test]
    fn leading_axis_sums_match_their_definition() {
        for (dims, axes) in [
            (vec![300, 517], vec![0]),
            (vec![3, 100, 517], vec![0, 1]),
            (vec![260, 2, 129], vec![0]),
        ] {
            let xs = Shape(dims.clone());
            let x: Vec<f32> = (0..xs.numel())
                .map(|v| ((v * 7919) % 1013) as f32 / 97.0 - 5.0)
                .collect();
            let m: usize = dims[axes.len()..].iter().product();
            for op in [ReduceOp::Sum, ReduceOp::Mean] {
                let mut out = vec![f32::NAN; m];
                reduce(op, &axes, &x, &xs, &mut out);
                let rows = x.len() / m;
                let want: Vec<f32> = (0..m)
                    .map(|j| {
                        let sum: f64 = (0..rows).map(|r| x[r * m + j] as f64).sum();
                        (if op == ReduceOp::Mean {
                            sum * m as f64 / x.len() as f64
                        } else {
                            sum
                        }) as f32
                    })
                    .collect();
                assert_eq!(out, want, "{op:?} over {axes:?} of {dims:?}");
            }
        }
    }

    /// The batch-norm kernels give the same bits in their AVX2 and baseline builds, on planes
    /// whose size is not a multiple of any vector width.
    #[test]
    fn batch_norm_kernels_are_the_same_bits_in_either_build() {
        use std::sync::atomic::Ordering;
        let xs = Shape(vec![5, 3, 7, 11]);
        let x: Vec<f32> = (0..xs.numel())
            .map(|v| ((v * 7919) % 1013) as f32 / 97.0 - 5.0)
            .collect();
        let dy: Vec<f32> = (0..xs.numel())
            .map(|v| ((v * 104729) % 997) as f32 / 101.0 - 4.0)
            .collect();
        let affine = [0.5f32, -1.25, 2.0, 0.1, -0.3, 0.7];
        let run = || {
            let mut m = vec![0f32; 6];
            channel_moments(&x, &xs, &mut m);
            let mut y = vec![0f32; x.len()];
            batch_norm(&x, &m, &affine, &xs, 1e-5, &mut y);
            let mut sums = vec![0f32; 6];
            batch_norm_sums(&x, &m, &dy, &xs, &mut sums);
            [m, y, sums].map(|v| v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>())
        };
        let wide = run();
        BASELINE.store(true, Ordering::Relaxed);
        let narrow = run();
        BASELINE.store(false, Ordering::Relaxed);
        assert_eq!(wide, narrow);
    }

    #[test]
    fn tanh_is_within_an_ulp_of_the_exact_value() {
        // Against tanh in f64 rounded once: the f32 library function is no better than that.
        let mut worst = 0f64;
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4 * if i % 3 == 0 { 0.001 } else { 1.0 };
            let exact = (x as f64).tanh();
            let ulp = f64::from(f32::EPSILON) * exact.abs().max(f64::from(f32::MIN_POSITIVE));
            worst = worst.max((super::tanh(x) as f64 - exact).abs() / ulp);
        }
        assert!(worst <= 1.0, "worst error {worst} ulp");
        assert_eq!(super::tanh(40.0), 1.0);
        assert_eq!(super::tanh(-40.0), -1.0);
        assert!(super::tanh(f32::NAN).is_nan());
        assert_eq!(super::tanh(f32::INFINITY), 1.0);
    }
}

#[cfg(test)]
mod conv_pair_tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| ((i.wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 250.0 - 2.0)
            .collect()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Interleaving a convolution's unfold and product (and product and fold) per image gives
    /// the bits of the two kernels run one after the other, on awkward windows, and so does
    /// the result written over its operand when their images are of one size.
    #[test]
    fn conv_pairs_match_their_two_kernels_exactly() {
        let mut in_place = 0;
        // (N, C, H, W, O, k, stride, pad, dilation)
        for (n, c, h, wd, o, k, s, p, d) in [
            (3, 2, 7, 9, 5, 3, 1, 1, 1),
            (2, 3, 9, 7, 4, 3, 2, 1, 1),
            (1, 1, 5, 5, 1, 5, 1, 2, 1),
            (2, 2, 8, 6, 3, 3, 1, 2, 2),
            (4, 1, 28, 28, 6, 5, 1, 2, 1),
            // C·H·W = O·OH·OW (as in the third case): in place too.
            (2, 3, 5, 5, 3, 3, 1, 1, 1),
            (3, 4, 6, 6, 4, 3, 1, 1, 1),
            // One-pixel images under a 3×3 "same" window (taps wholly in the padding), and no
            // input channels (empty columns: the product is zero).
            (2, 2, 1, 1, 3, 3, 1, 1, 1),
            (2, 0, 5, 5, 3, 3, 1, 1, 1),
        ] {
            let win = Window {
                k: [k, k],
                stride: [s, s],
                pad: [p, p],
                dilation: [d, d],
            };
            let (oh, ow) = win.output(h, wd).unwrap();
            let (ckk, l) = (c * k * k, oh * ow);
            let xs = Shape(vec![n, c, h, wd]);
            let (x, w, dy) = (data(n * c * h * wd, 1), data(o * ckk, 2), data(n * o * l, 3));
            let (wsh, csh, ysh) = (Shape(vec![o, ckk]), Shape(vec![n, ckk, l]), Shape(vec![n, o, l]));
            let image = [n, c, h, wd];
            // The pair over `x` into `out` (which may be `x` itself), columns in `cols` or scratch.
            let pair = |kind, x: *const f32, cols: Option<&mut [f32]>, out: *mut f32| {
                // SAFETY: `x` and `out` hold N images of their kinds, `cols` N columns.
                unsafe { conv_pair(kind, &win, image, o, x, &w, cols, out) }.unwrap()
            };
            let (fwd, bwd) = (ConvPair::Forward, ConvPair::Backward);
            // Forward: im2col, then W·cols.
            let mut cols = vec![0.0; n * ckk * l];
            im2col(&win, &x, &xs, &mut cols, false).unwrap();
            let mut y = vec![0.0; n * o * l];
            matmul(false, false, &w, &wsh, &cols, &csh, &mut y, &ysh).unwrap();
            let (mut cols2, mut y2) = (vec![f32::NAN; cols.len()], vec![f32::NAN; y.len()]);
            pair(fwd, x.as_ptr(), Some(&mut cols2), y2.as_mut_ptr());
            assert_eq!((bits(&cols), bits(&y)), (bits(&cols2), bits(&y2)));
            // Backward: Wᵀ·dy, then col2im.
            let mut dcols = vec![0.0; n * ckk * l];
            matmul(true, false, &w, &wsh, &dy, &ysh, &mut dcols, &csh).unwrap();
            let mut dx = vec![0.0; n * c * h * wd];
            im2col(&win, &dcols, &xs, &mut dx, true).unwrap();
            let (mut dcols2, mut dx2) = (vec![f32::NAN; dcols.len()], vec![f32::NAN; dx.len()]);
            pair(bwd, dy.as_ptr(), Some(&mut dcols2), dx2.as_mut_ptr());
            assert_eq!((bits(&dcols), bits(&dx)), (bits(&dcols2), bits(&dx2)));
            // The columns in per-thread scratch instead: the same input gradient.
            let mut dx3 = vec![f32::NAN; dx.len()];
            pair(bwd, dy.as_ptr(), None, dx3.as_mut_ptr());
            assert_eq!(bits(&dx), bits(&dx3));
            if c * h * wd == o * l {
                let mut buf = x.clone();
                pair(fwd, buf.as_ptr(), Some(&mut cols2), buf.as_mut_ptr());
                assert_eq!(bits(&y), bits(&buf));
                let mut buf = dy.clone();
                pair(bwd, buf.as_ptr(), Some(&mut dcols2), buf.as_mut_ptr());
                assert_eq!(bits(&dx), bits(&buf));
                let mut buf = dy.clone();
                pair(bwd, buf.as_ptr(), None, buf.as_mut_ptr());
                assert_eq!(bits(&dx), bits(&buf));
                in_place += 1;
            }
        }
        assert_eq!(in_place, 3, "the in-place cases ran");
    }
}
