//! elementwise.wgsl's parameter structs and lowering: unary ops and their gradients (the WGSL
//! of every [`UnaryOp`] and [`BinaryOp`] generated from one exhaustive match each), broadcasting
//! binary ops, where, strided copies (reshape, broadcast, permute, slice, pad, concat), fill,
//! one-hot, dropout masks and Bernoulli samples.

use super::{fill, padded, u, variant_name, Cost, Dispatch, Family, Grid, MAX_RANK};
use crate::backend::View;
use crate::graph::{BinaryOp, UnaryOp};
use crate::shape::DType;
use bytemuck::{Pod, Zeroable};

/// `unary` and `unary_grad`: `out = f(a)` or `out = b · f'(a)`, `f` chosen by `op`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Unary {
    /// Elements.
    pub n: u32,
    /// Position of the op in [`UNARY_OPS`], the generated `switch`'s case.
    pub op: u32,
    /// Offset of x.
    pub a_off: u32,
    /// Offset of dy (`unary_grad` only).
    pub b_off: u32,
    /// Offset of the output.
    pub out_off: u32,
    /// The op's first parameter (α, lo, p, c), or 0.
    pub p0: f32,
    /// The op's second parameter (hi), or 0.
    pub p1: f32,
}

/// `binary`, `where3` and `strided_copy`: an index space of rank ≤ 6 and each operand's
/// element strides over it (0 on broadcast axes), after [`super::coalesce`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Strided {
    /// Elements of the index space.
    pub n: u32,
    /// Axes used in `dims` and the strides.
    pub rank: u32,
    /// Position of the op in [`BINARY_OPS`] (`binary` only).
    pub op: u32,
    /// Offset of operand a.
    pub a_off: u32,
    /// Offset of operand b.
    pub b_off: u32,
    /// Offset of operand c.
    pub c_off: u32,
    /// Offset of the output.
    pub out_off: u32,
    /// The index space, padded with 1.
    pub dims: [u32; MAX_RANK],
    /// Strides of a.
    pub sa: [u32; MAX_RANK],
    /// Strides of b.
    pub sb: [u32; MAX_RANK],
    /// Strides of c.
    pub sc: [u32; MAX_RANK],
    /// Strides of the output (`strided_copy` only; the others write contiguously).
    pub sout: [u32; MAX_RANK],
}

/// `fill`: `out[i] = value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Fill {
    /// Elements.
    pub n: u32,
    /// Offset of the output.
    pub out_off: u32,
    /// The value.
    pub value: f32,
}

/// `one_hot`: labels (N) → (N, classes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct OneHot {
    /// Elements of the output, N·classes.
    pub n: u32,
    /// Classes.
    pub classes: u32,
    /// Offset of the labels.
    pub a_off: u32,
    /// Offset of the output.
    pub out_off: u32,
}

/// `dropout_mask`: an inverted-dropout mask keyed by (seed, step, key).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Dropout {
    /// Elements.
    pub n: u32,
    /// Offset of the output.
    pub out_off: u32,
    /// Drop probability.
    pub p: f32,
    /// Distinguishes masks within one step.
    pub key: u32,
}

/// `bernoulli`: 0/1 samples with the probabilities in a, keyed by (seed, step, key).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Bernoulli {
    /// Elements.
    pub n: u32,
    /// Offset of the probabilities.
    pub a_off: u32,
    /// Offset of the output.
    pub out_off: u32,
    /// Distinguishes samples within one step.
    pub key: u32,
}

/// `convert`: element type conversion (u32 tensors are bound as 4-byte words and read through
/// `bitcast`; floats convert through the bindings' f32 accessors).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Convert {
    /// Elements.
    pub n: u32,
    /// 0: float → float; 1: float → u32 (toward zero, saturating, NaN → 0); 2: u32 → float.
    pub mode: u32,
    /// Offset of the input.
    pub a_off: u32,
    /// Offset of the output.
    pub out_off: u32,
}

/// `copy_if_finite`: `out[i] = a[i]` unless the gradient statistics in b count a non-finite
/// value (state updates follow the optimiser's skip).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct CopyIfFinite {
    /// Elements.
    pub n: u32,
    /// Offset of the source.
    pub a_off: u32,
    /// Offset of the destination.
    pub out_off: u32,
    /// Offset of the statistics (Σg², non-finite count).
    pub stats_off: u32,
}

/// `add_into`: `out[i] += a[i]` (gradient accumulation).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct AddInto {
    /// Elements.
    pub n: u32,
    /// Offset of the addend.
    pub a_off: u32,
    /// Offset of the accumulator.
    pub out_off: u32,
}

/// Every unary op once, in the order that numbers the generated `switch` cases. Parameters
/// here are placeholders: a case reads its op's parameters from [`Unary`].
pub const UNARY_OPS: [UnaryOp; 20] = [
    UnaryOp::Neg,
    UnaryOp::Exp,
    UnaryOp::Log,
    UnaryOp::Sqrt,
    UnaryOp::Square,
    UnaryOp::Abs,
    UnaryOp::Sign,
    UnaryOp::Recip,
    UnaryOp::Step,
    UnaryOp::Sigmoid,
    UnaryOp::Tanh,
    UnaryOp::Relu,
    UnaryOp::LeakyRelu(0.0),
    UnaryOp::Elu(0.0),
    UnaryOp::Softplus,
    UnaryOp::Gelu,
    UnaryOp::Clamp(0.0, 0.0),
    UnaryOp::PowScalar(0.0),
    UnaryOp::AddScalar(0.0),
    UnaryOp::MulScalar(0.0),
];

/// Every binary op once, in the order that numbers the generated `switch` cases.
pub const BINARY_OPS: [BinaryOp; 10] = [
    BinaryOp::Add,
    BinaryOp::Sub,
    BinaryOp::Mul,
    BinaryOp::Div,
    BinaryOp::Max,
    BinaryOp::Min,
    BinaryOp::Pow,
    BinaryOp::Greater,
    BinaryOp::GreaterEqual,
    BinaryOp::Equal,
];

/// A unary op in WGSL: its value `f` and derivative `d` as expressions in `x` and the
/// parameters `p0`, `p1`, and the values of those parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UnaryWgsl {
    /// `f(x)`.
    pub f: &'static str,
    /// `f'(x)`.
    pub d: &'static str,
    /// `[p0, p1]`.
    pub p: [f32; 2],
}

/// The one place a unary op's GPU formula is written. Helpers (`sigmoid_`, `sign_`, `erf_`, `PI`)
/// are defined in elementwise.wgsl; formulas follow the CPU reference backend.
pub fn unary_wgsl(op: UnaryOp) -> UnaryWgsl {
    let (f, d, p) = match op {
        UnaryOp::Neg => ("-x", "-1.0", [0.0, 0.0]),
        UnaryOp::Exp => ("exp(x)", "exp(x)", [0.0, 0.0]),
        UnaryOp::Log => ("log(x)", "1.0 / x", [0.0, 0.0]),
        UnaryOp::Sqrt => ("sqrt(x)", "0.5 / sqrt(x)", [0.0, 0.0]),
        UnaryOp::Square => ("x * x", "2.0 * x", [0.0, 0.0]),
        UnaryOp::Abs => ("abs(x)", "sign_(x)", [0.0, 0.0]),
        UnaryOp::Sign => ("sign_(x)", "0.0", [0.0, 0.0]),
        UnaryOp::Recip => ("1.0 / x", "-1.0 / (x * x)", [0.0, 0.0]),
        UnaryOp::Step => ("select(0.0, 1.0, x > 0.0)", "0.0", [0.0, 0.0]),
        UnaryOp::Sigmoid => ("sigmoid_(x)", "sigmoid_(x) * (1.0 - sigmoid_(x))", [0.0, 0.0]),
        UnaryOp::Tanh => ("tanh(x)", "1.0 - tanh(x) * tanh(x)", [0.0, 0.0]),
        UnaryOp::Relu => ("max(x, 0.0)", "select(0.0, 1.0, x > 0.0)", [0.0, 0.0]),
        UnaryOp::LeakyRelu(a) => ("select(p0 * x, x, x > 0.0)", "select(p0, 1.0, x > 0.0)", [a, 0.0]),
        UnaryOp::Elu(a) => (
            "select(p0 * (exp(x) - 1.0), x, x > 0.0)",
            "select(p0 * exp(x), 1.0, x > 0.0)",
            [a, 0.0],
        ),
        UnaryOp::Softplus => ("max(x, 0.0) + log(1.0 + exp(-abs(x)))", "sigmoid_(x)", [0.0, 0.0]),
        UnaryOp::Gelu => (
            "0.5 * x * (1.0 + erf_(x * 0.70710678118654752))",
            "0.5 * (1.0 + erf_(x * 0.70710678118654752)) + x * exp(-0.5 * x * x) / sqrt(2.0 * PI)",
            [0.0, 0.0],
        ),
        UnaryOp::Clamp(lo, hi) => ("min(max(x, p0), p1)", "select(0.0, 1.0, x > p0 && x < p1)", [lo, hi]),
        UnaryOp::PowScalar(e) => ("pow(x, p0)", "p0 * pow(x, p0 - 1.0)", [e, 0.0]),
        UnaryOp::AddScalar(c) => ("x + p0", "1.0", [c, 0.0]),
        UnaryOp::MulScalar(c) => ("p0 * x", "p0", [c, 0.0]),
    };
    UnaryWgsl { f, d, p }
}

/// The one place a binary op's GPU formula is written: an expression in `x` and `y`.
pub fn binary_wgsl(op: BinaryOp) -> &'static str {
    match op {
        BinaryOp::Add => "x + y",
        BinaryOp::Sub => "x - y",
        BinaryOp::Mul => "x * y",
        BinaryOp::Div => "x / y",
        BinaryOp::Max => "max(x, y)",
        BinaryOp::Min => "min(x, y)",
        BinaryOp::Pow => "pow(x, y)",
        BinaryOp::Greater => "select(0.0, 1.0, x > y)",
        BinaryOp::GreaterEqual => "select(0.0, 1.0, x >= y)",
        BinaryOp::Equal => "select(0.0, 1.0, x == y)",
    }
}

/// The generated case of `op`: its position in `table`, matched by variant (not parameters).
fn code<T: std::fmt::Debug>(table: &[T], op: &T) -> Result<u32, String> {
    let d = std::mem::discriminant(op);
    table
        .iter()
        .position(|t| std::mem::discriminant(t) == d)
        .map(|i| i as u32)
        .ok_or_else(|| format!("{op:?} has no generated WGSL case (add it to the op table)"))
}

/// `case i: { return <expr>; } // Name`, one line for each op of a table.
fn cases<T: std::fmt::Debug>(table: &[T], expr: impl Fn(&T) -> &'static str) -> String {
    let lines: Vec<String> = table
        .iter()
        .enumerate()
        .map(|(i, op)| {
            format!(
                "        case {i}u: {{ return {}; }} // {}",
                expr(op),
                variant_name(format!("{op:?}"))
            )
        })
        .collect();
    lines.join("\n")
}

/// elementwise.wgsl with its op cases generated from [`unary_wgsl`] and [`binary_wgsl`].
pub fn source() -> String {
    let t = include_str!("../../../../shaders/elementwise.wgsl");
    let t = fill(t, "UNARY_F", &cases(&UNARY_OPS, |&op| unary_wgsl(op).f));
    let t = fill(&t, "UNARY_D", &cases(&UNARY_OPS, |&op| unary_wgsl(op).d));
    let t = fill(&t, "BINARY", &cases(&BINARY_OPS, |&op| binary_wgsl(op)));
    format!("{t}\n{}", include_str!("../../../../shaders/math.wgsl"))
}

/// Cost: one operation per element, each operand read once per element (a broadcast operand is
/// counted at the output's size: an upper bound on its traffic), the output written once.
fn ew<P: Pod>(entry: &'static str, p: &P, inputs: Vec<usize>, out: usize, n: usize) -> Dispatch {
    let cost = Cost::new(n, &vec![n; inputs.len()], n);
    Dispatch::new(Family::Elementwise, entry, p, inputs, vec![out], Grid::Elements(n)).with_cost(cost)
}

/// `d` with its op code also as the override constant `OP`: the kernel switches on the
/// constant, so the pipeline keeps only that op's code (a switch on a parameter costs a
/// compare per case; on SIMD-lane adapters such as llvmpipe, where the parameter's value is
/// not known to be uniform, every case may run).
fn with_op(mut d: Dispatch, op: u32) -> Dispatch {
    d.constants = vec![("OP", op)];
    d
}

/// `out = f(x)` over `n` elements.
pub fn unary(op: UnaryOp, n: usize, x: View, out: View) -> Result<Dispatch, String> {
    let w = unary_wgsl(op);
    let p = Unary {
        n: u(n),
        op: code(&UNARY_OPS, &op)?,
        a_off: u(x.offset),
        b_off: 0,
        out_off: u(out.offset),
        p0: w.p[0],
        p1: w.p[1],
    };
    Ok(with_op(ew("unary", &p, vec![x.buf], out.buf, n), p.op))
}

/// `out = dy · f'(x)` over `n` elements.
pub fn unary_grad(op: UnaryOp, n: usize, x: View, dy: View, out: View) -> Result<Dispatch, String> {
    let w = unary_wgsl(op);
    let p = Unary {
        n: u(n),
        op: code(&UNARY_OPS, &op)?,
        a_off: u(x.offset),
        b_off: u(dy.offset),
        out_off: u(out.offset),
        p0: w.p[0],
        p1: w.p[1],
    };
    Ok(with_op(ew("unary_grad", &p, vec![x.buf, dy.buf], out.buf, n), p.op))
}

/// The strided parameter block over `dims` with up to three operand stride lists.
fn strided(n: usize, op: u32, dims: &[usize], offs: [usize; 4], strides: &[&[usize]]) -> Strided {
    let s = |k: usize| strides.get(k).map_or([0; MAX_RANK], |s| padded(s, 0));
    Strided {
        n: u(n),
        rank: u(dims.len()),
        op,
        a_off: u(offs[0]),
        b_off: u(offs[1]),
        c_off: u(offs[2]),
        out_off: u(offs[3]),
        dims: padded(dims, 1),
        sa: s(0),
        sb: s(1),
        sc: s(2),
        sout: [0; MAX_RANK],
    }
}

/// `out = a ∘ b` over coalesced `dims`, with each operand's strides.
pub fn binary(
    op: BinaryOp,
    n: usize,
    [a, b]: [View; 2],
    out: View,
    dims: &[usize],
    [sa, sb]: [&[usize]; 2],
) -> Result<Dispatch, String> {
    let p = strided(
        n,
        code(&BINARY_OPS, &op)?,
        dims,
        [a.offset, b.offset, 0, out.offset],
        &[sa, sb],
    );
    Ok(with_op(ew("binary", &p, vec![a.buf, b.buf], out.buf, n), p.op))
}

/// `out = cond ≠ 0 ? a : b` over coalesced `dims`; `x` is `[cond, a, b]`.
pub fn where3(n: usize, x: [View; 3], out: View, dims: &[usize], strides: [&[usize]; 3]) -> Dispatch {
    let p = strided(
        n,
        0,
        dims,
        [x[0].offset, x[1].offset, x[2].offset, out.offset],
        &strides,
    );
    ew("where3", &p, vec![x[0].buf, x[1].buf, x[2].buf], out.buf, n)
}

/// `dst[dims, dst_strides] = src[dims, src_strides]`.
pub fn strided_copy(src: View, src_strides: &[usize], dst: View, dst_strides: &[usize], dims: &[usize]) -> Dispatch {
    let n: usize = dims.iter().product();
    let (dims, [ss, ds]) = super::coalesce(dims, [src_strides, dst_strides]);
    let mut p = strided(n, 0, &dims, [src.offset, 0, 0, dst.offset], &[&ss]);
    p.sout = padded(&ds, 0);
    ew("strided_copy", &p, vec![src.buf], dst.buf, n)
}

/// `out[..n] = value`.
pub fn fill_value(n: usize, out: View, value: f32) -> Dispatch {
    let p = Fill {
        n: u(n),
        out_off: u(out.offset),
        value,
    };
    ew("fill", &p, vec![], out.buf, n)
}

/// One-hot rows of `classes` from labels.
pub fn one_hot(n: usize, classes: usize, labels: View, out: View) -> Dispatch {
    let p = OneHot {
        n: u(n),
        classes: u(classes),
        a_off: u(labels.offset),
        out_off: u(out.offset),
    };
    ew("one_hot", &p, vec![labels.buf], out.buf, n)
}

/// `out = x` converted between f32 and u32.
pub fn convert(n: usize, x: View, out: View) -> Result<Dispatch, String> {
    // The one place the conversion modes are chosen.
    let mode = match (x.dtype, out.dtype) {
        (DType::F32 | DType::F16, DType::F32 | DType::F16) => 0,
        (DType::F32 | DType::F16, DType::U32) => 1,
        (DType::U32, DType::F32 | DType::F16) => 2,
        (a, b) => return Err(format!("cast from {a} to {b} on wgpu")),
    };
    let p = Convert {
        n: u(n),
        mode,
        a_off: u(x.offset),
        out_off: u(out.offset),
    };
    Ok(ew("convert", &p, vec![x.buf], out.buf, n))
}

/// `dst = src` unless `stats` counts a non-finite value.
pub fn copy_if_finite(src: View, dst: View, stats: View) -> Dispatch {
    let p = CopyIfFinite {
        n: u(src.len),
        a_off: u(src.offset),
        out_off: u(dst.offset),
        stats_off: u(stats.offset),
    };
    ew("copy_if_finite", &p, vec![src.buf, stats.buf], dst.buf, src.len)
}

/// `dst += src`.
pub fn add_into(src: View, dst: View) -> Dispatch {
    let p = AddInto {
        n: u(src.len),
        a_off: u(src.offset),
        out_off: u(dst.offset),
    };
    ew("add_into", &p, vec![src.buf], dst.buf, src.len)
}

/// An inverted-dropout mask of `n` elements.
pub fn dropout_mask(n: usize, out: View, p: f32, key: u32) -> Dispatch {
    let params = Dropout {
        n: u(n),
        out_off: u(out.offset),
        p,
        key,
    };
    ew("dropout_mask", &params, vec![], out.buf, n)
}

/// Bernoulli samples of the `n` probabilities in `p`.
pub fn bernoulli(n: usize, p: View, out: View, key: u32) -> Dispatch {
    let params = Bernoulli {
        n: u(n),
        a_off: u(p.offset),
        out_off: u(out.offset),
        key,
    };
    ew("bernoulli", &params, vec![p.buf], out.buf, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_tables_hold_each_variant_once() {
        for (i, op) in UNARY_OPS.iter().enumerate() {
            assert_eq!(code(&UNARY_OPS, op), Ok(i as u32), "{op:?}");
        }
        for (i, op) in BINARY_OPS.iter().enumerate() {
            assert_eq!(code(&BINARY_OPS, op), Ok(i as u32), "{op:?}");
        }
        // Parameters do not select the case; the variant does.
        assert_eq!(code(&UNARY_OPS, &UnaryOp::Clamp(-1.0, 1.0)), Ok(16));
    }

    /// `f(x)` and `dy · f'(x)` of `op` over `x`, with the unary kernels run directly (autodiff
    /// writes some derivatives with other ops, so graphs alone never reach every `unary_d` case).
    fn unary_and_grad<B: crate::backend::Backend>(dev: &B, op: UnaryOp, x: &[f32]) -> Vec<Vec<f32>> {
        use crate::backend::{Kernel, StepUniforms};
        use crate::graph::{NodeId, Op};
        use crate::shape::Shape;
        let n = x.len();
        let view = |buf| View {
            buf,
            offset: 0,
            len: n,
            dtype: DType::F32,
        };
        let dy: Vec<f32> = (0..n).map(|i| 0.5 + (i % 5) as f32 * 0.25).collect();
        let bufs: Vec<B::Buffer> = (0..4)
            .map(|_| dev.alloc(DType::F32.bytes(n), "test").unwrap())
            .collect();
        dev.write(&bufs[0], 0, bytemuck::cast_slice(x)).unwrap();
        dev.write(&bufs[1], 0, bytemuck::cast_slice(&dy)).unwrap();
        let kernel = |op: Op, inputs: Vec<View>, out| Kernel::Op {
            in_shapes: vec![Shape(vec![n]); inputs.len()],
            op,
            inputs,
            out: view(out),
            out_shape: Shape(vec![n]),
            node: NodeId(0, 0),
        };
        let kernels = vec![
            kernel(Op::Unary(op), vec![view(0)], 2),
            kernel(Op::UnaryGrad(op), vec![view(0), view(1)], 3),
        ];
        let mut prog = dev.prepare(bufs, kernels).unwrap();
        dev.execute(&mut prog, &StepUniforms::default(), &[view(2), view(3)])
            .unwrap()
            .iter()
            .map(|b| bytemuck::pod_collect_to_vec(b))
            .collect()
    }

    #[test]
    fn every_unary_op_and_derivative_matches_the_cpu() {
        let gpu = match crate::Gpu::new(std::env::var("KILN_ADAPTER").ok().as_deref()) {
            Ok(g) => g,
            Err(e) if std::env::var("KILN_REQUIRE_GPU").as_deref() != Ok("1") => {
                eprintln!("skipping GPU test: {e}");
                return;
            }
            Err(e) => panic!("KILN_REQUIRE_GPU=1 but no GPU: {e}"),
        };
        // 65 magnitudes in [0.2, 2) away from every kink, both signs unless the op needs x > 0.
        let mag = |i: usize| 0.2 + 1.8 * ((i * 37) % 65) as f32 / 65.0;
        for op in UNARY_OPS {
            // No wildcard: the parameters each op is tested with, and whether it needs x > 0.
            let (op, positive) = match op {
                UnaryOp::LeakyRelu(_) => (UnaryOp::LeakyRelu(0.1), false),
                UnaryOp::Elu(_) => (UnaryOp::Elu(1.3), false),
                UnaryOp::Clamp(..) => (UnaryOp::Clamp(-1.0, 0.5), false),
                UnaryOp::PowScalar(_) => (UnaryOp::PowScalar(-0.5), true),
                UnaryOp::AddScalar(_) => (UnaryOp::AddScalar(2.5), false),
                UnaryOp::MulScalar(_) => (UnaryOp::MulScalar(-1.5), false),
                UnaryOp::Log | UnaryOp::Sqrt => (op, true),
                UnaryOp::Neg
                | UnaryOp::Exp
                | UnaryOp::Square
                | UnaryOp::Abs
                | UnaryOp::Sign
                | UnaryOp::Recip
                | UnaryOp::Step
                | UnaryOp::Sigmoid
                | UnaryOp::Tanh
                | UnaryOp::Relu
                | UnaryOp::Softplus
                | UnaryOp::Gelu => (op, false),
            };
            let x: Vec<f32> = (0..65)
                .map(|i| if positive || i % 2 == 0 { mag(i) } else { -mag(i) })
                .collect();
            let cpu = unary_and_grad(&crate::Cpu, op, &x);
            let dev = unary_and_grad(&gpu, op, &x);
            for (what, (e, a)) in ["f(x)", "dy·f'(x)"].iter().zip(cpu.iter().zip(&dev)) {
                for (i, (&e, &a)) in e.iter().zip(a).enumerate() {
                    // parity.rs's tolerance: WGSL's few-ULP exp/log/pow on O(1) values.
                    assert!(
                        (a - e).abs() <= 1e-4 + 1e-3 * e.abs(),
                        "{op:?} {what} at x = {}: GPU {a}, CPU {e}",
                        x[i]
                    );
                }
            }
        }
    }
}
