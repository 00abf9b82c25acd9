//! Every op of the contract runs on both backends and agrees: each `Op`, `UnaryOp`, `BinaryOp`,
//! `ReduceOp` and `OptimizerKind` variant is named by a `match` without a wildcard, so a new
//! variant does not compile until it has a case here, and its case gives it an ordinal that the
//! coverage checks below require to be in the list that runs. A case builds a small graph on
//! shapes that divide no tile (1, 5, 7, 33, 65, 129 ...), with a backward pass where the op is
//! reached through autodiff (`UnaryGrad`, `Pad`, `Col2Im`, `ScatterPlanes`, ...); the test
//! asserts that the op really is among the graph's nodes, fetches every node, and compares the
//! GPU with the CPU reference node by node.
//!
//! Tolerance: atol 1e-4 + rtol 1e-3, as tests/parity.rs and for the same reasons (different
//! summation orders, WGSL's few-ULP exp/log/pow, O(1) values); the dropout mask, Bernoulli
//! samples and argmax indices agree exactly at that tolerance because they are integer
//! computations (on probabilities both backends compute exactly alike).

mod common;

use common::*;
use kiln::graph::Window;
use kiln::DType;
use kiln::{
    gradients, Backend, BinaryOp, Cpu, Feed, Graph, Init, NodeId, Op, Optimizer, OptimizerKind, ParamStore, Program,
    ReduceOp, Training, UnaryOp,
};
use std::collections::BTreeSet;
use std::mem::discriminant;

const ATOL: f32 = 1e-4;
const RTOL: f32 = 1e-3;

/// The values fed to every parameter and f32 input of a case.
#[derive(Clone, Copy, Debug)]
enum Domain {
    /// Magnitudes in [0.2, 2), either sign: away from the kinks at 0.
    Mixed,
    /// In [0.3, 3): for log, sqrt, fractional powers.
    Positive,
    /// Distinct values 0.1 apart: no ties for max or argmax.
    Distinct,
}

fn data(d: Domain, seed: u64, n: usize) -> Vec<f32> {
    match d {
        Domain::Mixed => away_from_zero(seed, n),
        Domain::Positive => values(seed, n, 0.3, 3.0),
        Domain::Distinct => distinct(seed, n),
    }
}

type Build = Box<dyn Fn(&mut Graph) -> kiln::Result<Vec<NodeId>>>;

/// One graph to run on both backends. `build` returns the outputs to differentiate (every
/// parameter gets the gradient of `Σ w ⊙ out` with fixed random weights `w`); every node of the
/// finished graph is fetched and compared.
struct Case {
    ordinal: usize,
    domain: Domain,
    build: Build,
}

fn case(ordinal: usize, domain: Domain, build: impl Fn(&mut Graph) -> kiln::Result<Vec<NodeId>> + 'static) -> Case {
    Case {
        ordinal,
        domain,
        build: Box::new(build),
    }
}

const WIN: Window = Window {
    k: [3, 3],
    stride: [2, 2],
    pad: [1, 1],
    dilation: [1, 1],
};

/// How many `Op` variants there are; [`op_case`] numbers them `0..OP_VARIANTS`.
const OP_VARIANTS: usize = 41;

/// The case that exercises `op`'s variant (for unary, binary, reduce and matmul ops, `op`'s
/// own attributes). No wildcard: a new `Op` variant does not compile until it has a case.
fn op_case(op: &Op) -> Case {
    let x = |g: &mut Graph, shape: &[usize]| g.param("x", shape.to_vec(), Init::Zeros);
    let pool = |g: &mut Graph, max: bool| {
        let x = g.param("x", [2, 3, 7, 5], Init::Zeros)?;
        Ok(vec![if max {
            g.max_pool2d(x, [3, 3], [2, 2], [1, 1])?
        } else {
            g.avg_pool2d(x, [3, 3], [2, 2], [1, 1])?
        }])
    };
    let im2col = move |g: &mut Graph| {
        let x = g.param("x", [2, 3, 9, 7], Init::Zeros)?;
        Ok(vec![g.im2col(x, WIN)?])
    };
    let sce = |g: &mut Graph, smoothing: f32| {
        let logits = g.param("logits", [33, 7], Init::Zeros)?;
        let y = g.labels("y", [33], 7)?;
        Ok(vec![g.softmax_cross_entropy(logits, y, smoothing)?])
    };
    let slice = move |g: &mut Graph| {
        let v = x(g, &[7, 33, 5])?;
        Ok(vec![g.slice(v, 1, 3, 30)?])
    };
    match *op {
        Op::Input { .. } => case(0, Domain::Mixed, |g| {
            let v = g.input("v", [7, 33])?;
            let y = g.labels("y", [33], 5)?;
            let h = g.one_hot(y, 5)?;
            let s = g.add_scalar(v, 1.0)?;
            Ok(vec![h, s])
        }),
        Op::Param { .. } => case(1, Domain::Mixed, move |g| {
            let w = x(g, &[33])?;
            Ok(vec![g.mul_scalar(w, 2.0)?])
        }),
        Op::Const { .. } => case(2, Domain::Mixed, move |g| {
            let c = g.constant(1.5, [7, 33]);
            let v = x(g, &[7, 33])?;
            Ok(vec![g.add(v, c)?])
        }),
        Op::Unary(u) => case(3, unary_domain(u).1, move |g| {
            let v = x(g, &[33, 7])?;
            Ok(vec![g.unary(u, v)?])
        }),
        Op::UnaryGrad(u) => case(4, unary_domain(u).1, move |g| {
            let v = x(g, &[65, 1])?;
            Ok(vec![g.unary(u, v)?])
        }),
        Op::Binary(b) => case(5, binary_domain(b).1, move |g| {
            // Broadcasting both ways: (7, 1, 33) ∘ (5, 1) → (7, 5, 33).
            let a = g.param("a", [7, 1, 33], Init::Zeros)?;
            let c = g.param("b", [5, 1], Init::Zeros)?;
            Ok(vec![g.binary(b, a, c)?])
        }),
        Op::Where => case(6, Domain::Mixed, |g| {
            let c = g.input("c", [7, 33])?;
            let zero = g.scalar(0.0);
            let cond = g.greater(c, zero)?;
            let a = g.param("a", [7, 33], Init::Zeros)?;
            let b = g.param("b", [33], Init::Zeros)?;
            Ok(vec![g.where_(cond, a, b)?])
        }),
        Op::Reduce { op, .. } => case(7, reduce_domain(op).1, move |g| {
            // Short (one invocation per output) and long (a workgroup per output) reductions,
            // over axes that cannot be merged, and with kept dims.
            let a = x(g, &[7, 33, 5])?;
            let b = g.param("b", [3, 129, 5], Init::Zeros)?;
            Ok(vec![g.reduce(op, a, &[0, 2], false)?, g.reduce(op, b, &[1, 2], true)?])
        }),
        Op::BroadcastTo => case(8, Domain::Mixed, move |g| {
            let v = x(g, &[33, 1])?;
            Ok(vec![g.broadcast_to(v, [7, 33, 5])?])
        }),
        Op::Reshape => case(9, Domain::Mixed, move |g| {
            let v = x(g, &[7, 33, 5])?;
            let r = g.reshape(v, [33, 35])?;
            Ok(vec![g.mul_scalar(r, 3.0)?])
        }),
        Op::Permute { .. } => case(10, Domain::Mixed, move |g| {
            let v = x(g, &[7, 33, 5])?;
            Ok(vec![g.permute(v, &[2, 0, 1])?])
        }),
        Op::Concat { .. } => case(11, Domain::Mixed, move |g| {
            let a = x(g, &[7, 33, 5])?;
            let b = g.param("b", [7, 1, 5], Init::Zeros)?;
            Ok(vec![g.concat(&[a, b, a], 1)?])
        }),
        Op::Slice { .. } => case(12, Domain::Mixed, slice),
        Op::Pad { .. } => case(13, Domain::Mixed, slice),
        Op::MatMul { ta, tb } => case(14, Domain::Mixed, move |g| {
            // A skinny product (matmul_small) and a tiled one, batched with a shared operand.
            let mut outs = vec![];
            for (i, (batch, m, k, n)) in [(0, 7, 33, 1), (3, 65, 33, 129)].into_iter().enumerate() {
                let mut sa = if ta { vec![k, m] } else { vec![m, k] };
                let sb = if tb { vec![n, k] } else { vec![k, n] };
                if batch > 0 {
                    sa.insert(0, batch);
                }
                let a = g.param(&format!("a{i}"), sa, Init::Zeros)?;
                let b = g.param(&format!("b{i}"), sb, Init::Zeros)?;
                outs.push(g.matmul_t(a, b, ta, tb)?);
            }
            Ok(outs)
        }),
        Op::Softmax => case(15, Domain::Mixed, move |g| {
            let v = x(g, &[7, 33])?;
            Ok(vec![g.softmax(v)?])
        }),
        Op::LogSoftmax => case(16, Domain::Mixed, move |g| {
            let v = x(g, &[7, 257])?;
            Ok(vec![g.log_softmax(v)?])
        }),
        Op::SoftmaxCrossEntropy { smoothing } => case(17, Domain::Mixed, move |g| sce(g, smoothing)),
        Op::SoftmaxCrossEntropyGrad { smoothing } => case(18, Domain::Mixed, move |g| sce(g, smoothing)),
        Op::OneHot { classes } => case(19, Domain::Mixed, move |g| {
            let y = g.labels("y", [33], classes)?;
            Ok(vec![g.one_hot(y, classes)?])
        }),
        Op::Im2Col(_) => case(20, Domain::Mixed, im2col),
        Op::Col2Im(_) => case(21, Domain::Mixed, im2col),
        Op::MaxPoolArgmax(_) => case(22, Domain::Distinct, move |g| pool(g, true)),
        Op::GatherPlanes => case(23, Domain::Distinct, move |g| pool(g, true)),
        Op::ScatterPlanes(_) => case(24, Domain::Distinct, move |g| pool(g, true)),
        Op::AvgPool(_) => case(25, Domain::Mixed, move |g| pool(g, false)),
        Op::AvgPoolGrad(_) => case(26, Domain::Mixed, move |g| pool(g, false)),
        Op::DropoutMask { p, .. } => case(27, Domain::Mixed, move |g| {
            let v = x(g, &[65, 33])?;
            Ok(vec![g.dropout(v, p)?])
        }),
        Op::GatherRows => case(29, Domain::Mixed, gather),
        Op::ScatterAddRows => case(30, Domain::Mixed, gather),
        Op::LstmCell => case(31, Domain::Mixed, lstm),
        Op::LstmCellGrad => case(32, Domain::Mixed, lstm),
        Op::ChannelMoments => case(38, Domain::Mixed, batch_norm),
        Op::BatchNorm { .. } => case(39, Domain::Mixed, batch_norm),
        Op::BatchNormSums => case(40, Domain::Mixed, batch_norm),
        Op::GruCell => case(33, Domain::Mixed, gru),
        Op::GruCellGrad => case(34, Domain::Mixed, gru),
        // x ⊙ stop(x): the gradient reaches x through the first factor only.
        Op::StopGradient => case(35, Domain::Mixed, move |g| {
            let v = x(g, &[7, 33])?;
            let s = g.stop_gradient(v)?;
            Ok(vec![g.mul(v, s)?])
        }),
        // Probabilities in [0.09, 0.9) made by one exact multiply, so both backends compare the
        // same uniforms with the same probabilities and the samples agree exactly.
        Op::Bernoulli { .. } => case(36, Domain::Positive, move |g| {
            let v = x(g, &[65, 33])?;
            let p = g.mul_scalar(v, 0.3)?;
            let s = g.bernoulli(p)?;
            Ok(vec![g.mul(s, v)?])
        }),
        // Every augmentation at once on fed images (it has no gradient; the product with a
        // parameter gives the case a backward pass that does not cross it). Without rotation
        // the kernels agree exactly; `augment_is_exact_across_backends` in tests/augment.rs
        // checks that.
        Op::Augment { .. } => case(37, Domain::Mixed, move |g| {
            let v = g.input("images", [5, 3, 9, 7])?;
            let aug = kiln::graph::Augment {
                shift: 2,
                flip: true,
                rotate: 30.0,
                brightness: 0.2,
                contrast: 0.3,
                noise: 0.1,
                fill: -0.5,
                center: 0.25,
            };
            let a = g.augment(v, aug)?;
            let w = x(g, &[5, 3, 9, 7])?;
            Ok(vec![g.mul(a, w)?])
        }),
        // f32 → u32 (truncating; negatives give 0) → f32. f16 has no wgpu kernels yet, so the
        // f16 conversions are checked on the CPU in tests/dtypes.rs.
        Op::Cast(_) => case(28, Domain::Mixed, move |g| {
            let v = x(g, &[7, 33])?;
            let v = g.mul_scalar(v, 10.0)?;
            let u = g.cast(v, DType::U32)?;
            Ok(vec![g.cast(u, DType::F32)?])
        }),
    }
}

/// An embedding table of 7 rows of 33 looked up by (5, 13) ids, repeats included.
fn gather(g: &mut Graph) -> kiln::Result<Vec<NodeId>> {
    let t = g.param("table", [7, 33], Init::Zeros)?;
    let ids = g.labels("ids", [5, 13], 7)?;
    Ok(vec![g.gather_rows(t, ids)?])
}

/// An LSTM cell, N = 5, H = 33, both outputs used.
fn lstm(g: &mut Graph) -> kiln::Result<Vec<NodeId>> {
    let gates = g.param("gates", [5, 132], Init::Zeros)?;
    let c = g.param("c", [5, 33], Init::Zeros)?;
    let cell = g.lstm_cell(gates, c)?;
    Ok(vec![g.cell_part(cell, 0)?, g.cell_part(cell, 1)?])
}

/// Batch normalisation in training of (5, 33, 7) and, through its own statistics, of (7, 3)
/// with variances of 1 and 0.5 (γ and β are parameters too, so all three gradients run).
fn batch_norm(g: &mut Graph) -> kiln::Result<Vec<NodeId>> {
    let x = g.param("x", [5, 33, 7], Init::Zeros)?;
    let m = g.channel_moments(x)?;
    let aff = g.param("affine", [2, 33], Init::Zeros)?;
    let y = g.batch_norm(x, m, aff, 1e-5)?;
    let x2 = g.param("x2", [7, 3], Init::Zeros)?;
    let m2 = g.channel_moments(x2)?;
    let aff2 = g.param("affine2", [2, 3], Init::Zeros)?;
    let y2 = g.batch_norm(x2, m2, aff2, 0.5)?;
    Ok(vec![y, m, y2])
}

/// A GRU cell, N = 5, H = 33, its whole output (state and saved activations) used.
fn gru(g: &mut Graph) -> kiln::Result<Vec<NodeId>> {
    let xw = g.param("xw", [5, 99], Init::Zeros)?;
    let hw = g.param("hw", [5, 99], Init::Zeros)?;
    let h = g.param("h", [5, 33], Init::Zeros)?;
    Ok(vec![g.gru_cell(xw, hw, h)?])
}

/// How many `UnaryOp` variants there are, numbered by [`unary_domain`].
const UNARY_VARIANTS: usize = 20;

/// Each unary op's ordinal and the inputs it is defined on. No wildcard.
fn unary_domain(op: UnaryOp) -> (usize, Domain) {
    match op {
        UnaryOp::Neg => (0, Domain::Mixed),
        UnaryOp::Exp => (1, Domain::Mixed),
        UnaryOp::Log => (2, Domain::Positive),
        UnaryOp::Sqrt => (3, Domain::Positive),
        UnaryOp::Square => (4, Domain::Mixed),
        UnaryOp::Abs => (5, Domain::Mixed),
        UnaryOp::Sign => (6, Domain::Mixed),
        UnaryOp::Recip => (7, Domain::Mixed),
        UnaryOp::Step => (8, Domain::Mixed),
        UnaryOp::Sigmoid => (9, Domain::Mixed),
        UnaryOp::Tanh => (10, Domain::Mixed),
        UnaryOp::Relu => (11, Domain::Mixed),
        UnaryOp::LeakyRelu(_) => (12, Domain::Mixed),
        UnaryOp::Elu(_) => (13, Domain::Mixed),
        UnaryOp::Softplus => (14, Domain::Mixed),
        UnaryOp::Gelu => (15, Domain::Mixed),
        UnaryOp::Clamp(..) => (16, Domain::Mixed),
        UnaryOp::PowScalar(_) => (17, Domain::Positive),
        UnaryOp::AddScalar(_) => (18, Domain::Mixed),
        UnaryOp::MulScalar(_) => (19, Domain::Mixed),
    }
}

/// How many `BinaryOp` variants there are, numbered by [`binary_domain`].
const BINARY_VARIANTS: usize = 10;

/// Each binary op's ordinal and the inputs it is defined on. No wildcard.
fn binary_domain(op: BinaryOp) -> (usize, Domain) {
    match op {
        BinaryOp::Add => (0, Domain::Mixed),
        BinaryOp::Sub => (1, Domain::Mixed),
        BinaryOp::Mul => (2, Domain::Mixed),
        BinaryOp::Div => (3, Domain::Mixed),
        BinaryOp::Max => (4, Domain::Distinct),
        BinaryOp::Min => (5, Domain::Distinct),
        BinaryOp::Pow => (6, Domain::Positive),
        BinaryOp::Greater => (7, Domain::Distinct),
        BinaryOp::GreaterEqual => (8, Domain::Distinct),
        BinaryOp::Equal => (9, Domain::Mixed),
    }
}

/// How many `ReduceOp` variants there are, numbered by [`reduce_domain`].
const REDUCE_VARIANTS: usize = 3;

/// Each reduction's ordinal and inputs. No wildcard.
fn reduce_domain(op: ReduceOp) -> (usize, Domain) {
    match op {
        ReduceOp::Sum => (0, Domain::Mixed),
        ReduceOp::Mean => (1, Domain::Mixed),
        ReduceOp::Max => (2, Domain::Distinct),
    }
}

const UNARY: [UnaryOp; UNARY_VARIANTS] = [
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
    UnaryOp::LeakyRelu(0.1),
    UnaryOp::Elu(1.3),
    UnaryOp::Softplus,
    UnaryOp::Gelu,
    UnaryOp::Clamp(-1.0, 0.5),
    UnaryOp::PowScalar(-0.5),
    UnaryOp::AddScalar(2.5),
    UnaryOp::MulScalar(-1.5),
];

const BINARY: [BinaryOp; BINARY_VARIANTS] = [
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

const REDUCE: [ReduceOp; REDUCE_VARIANTS] = [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max];

/// The ops that run: every variant at least once, every unary / binary / reduce op as its own
/// case, and matmul in every transpose layout.
fn samples() -> Vec<Op> {
    let mut v = vec![
        Op::Input {
            name: String::new(),
            classes: None,
        },
        Op::Param { index: 0 },
        Op::Const { value: 0.0 },
        Op::UnaryGrad(UnaryOp::Tanh),
        Op::Where,
        Op::BroadcastTo,
        Op::Reshape,
        Op::Permute { perm: vec![] },
        Op::Concat { axis: 0 },
        Op::Slice {
            axis: 0,
            start: 0,
            end: 0,
        },
        Op::Pad {
            axis: 0,
            before: 0,
            after: 0,
        },
        Op::Softmax,
        Op::LogSoftmax,
        Op::SoftmaxCrossEntropy { smoothing: 0.0 },
        Op::SoftmaxCrossEntropyGrad { smoothing: 0.1 },
        Op::OneHot { classes: 7 },
        Op::Im2Col(WIN),
        Op::Col2Im(WIN),
        Op::MaxPoolArgmax(WIN),
        Op::GatherPlanes,
        Op::ScatterPlanes(WIN),
        Op::AvgPool(WIN),
        Op::AvgPoolGrad(WIN),
        Op::DropoutMask { p: 0.3, key: 0 },
        Op::StopGradient,
        Op::Bernoulli { key: 0 },
        Op::Augment {
            aug: kiln::graph::Augment::default(),
            key: 0,
        },
        Op::Cast(DType::U32),
        Op::GatherRows,
        Op::ScatterAddRows,
        Op::LstmCell,
        Op::LstmCellGrad,
        Op::ChannelMoments,
        Op::BatchNorm { eps: 1e-5 },
        Op::BatchNormSums,
        Op::GruCell,
        Op::GruCellGrad,
    ];
    v.extend(UNARY.map(Op::Unary));
    v.extend(BINARY.map(Op::Binary));
    v.extend(REDUCE.map(|op| Op::Reduce {
        op,
        axes: vec![],
        keepdim: false,
    }));
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        v.push(Op::MatMul { ta, tb });
    }
    v
}

/// Build `c`, check that `op` is among its nodes, run it on `dev` and return every node's value.
fn run_case<B: Backend>(dev: &B, op: &Op, c: &Case) -> Vec<(String, Vec<f32>)> {
    let mut g = Graph::new();
    let outs = (c.build)(&mut g).unwrap_or_else(|e| panic!("building the case of {op:?}: {e}"));
    // Every node that counts is fetched: the sinks (outputs, loss, gradients) and everything
    // they read.
    let mut ids: BTreeSet<NodeId> = outs.iter().copied().collect();
    let mut loss = None;
    for (i, &o) in outs.iter().enumerate() {
        let w = g.input(&format!("__w{i}"), g.shape(o).clone()).unwrap();
        let t = g.mul(o, w).unwrap();
        let s = g.sum_all(t).unwrap();
        loss = Some(match loss {
            None => s,
            Some(l) => g.add(l, s).unwrap(),
        });
    }
    if let Some(l) = loss {
        ids.insert(l);
        let params: Vec<NodeId> = g.params().iter().map(|p| p.node).collect();
        ids.extend(gradients(&mut g, l, &params).unwrap().into_iter().flatten());
    }
    for n in g.nodes() {
        ids.extend(&n.inputs);
    }
    // The op's variant is built and fetched (and, for ops with attributes that select the
    // kernel's formula or layout, this very op).
    let built = |n: &Op| match (n, op) {
        (Op::Reduce { op: a, .. }, Op::Reduce { op: b, .. }) => a == b,
        (Op::Unary(_) | Op::UnaryGrad(_) | Op::Binary(_) | Op::MatMul { .. }, _) => n == op,
        _ => discriminant(n) == discriminant(op),
    };
    assert!(
        ids.iter().any(|&id| built(&g.node(id).op)),
        "the case of {op:?} never builds it"
    );
    let mut store = ParamStore::new(dev, &g, 0).unwrap();
    for (i, p) in g.params().iter().enumerate() {
        store
            .set(&p.name, &data(c.domain, 100 + i as u64, p.shape.numel()))
            .unwrap();
    }
    let mut f32_feeds: Vec<(String, Vec<f32>)> = vec![];
    let mut label_feeds: Vec<(String, Vec<u32>)> = vec![];
    for (i, n) in g.nodes().iter().enumerate() {
        if let Op::Input { name, classes } = &n.op {
            let len = n.shape.numel();
            match classes {
                Some(k) => label_feeds.push((name.clone(), (0..len).map(|j| ((j * 7 + 3) % k) as u32).collect())),
                None if name.starts_with("__w") => f32_feeds.push((name.clone(), values(99 + i as u64, len, 0.5, 1.5))),
                None => f32_feeds.push((name.clone(), data(c.domain, 200 + i as u64, len))),
            }
        }
    }
    let mut feeds: Vec<(&str, Feed<'_>)> = f32_feeds.iter().map(|(n, v)| (n.as_str(), Feed::F32(v))).collect();
    feeds.extend(label_feeds.iter().map(|(n, v)| (n.as_str(), Feed::Labels(v))));
    let fetch: Vec<NodeId> = ids.into_iter().collect();
    let mut prog = Program::compile(&g, &mut store, &fetch, None).unwrap_or_else(|e| panic!("compiling {op:?}: {e}"));
    let res = prog.run(&feeds).unwrap_or_else(|e| panic!("running {op:?}: {e}"));
    fetch
        .iter()
        .map(|&id| {
            let v = match g.dtype(id) {
                DType::U32 => res.get_u32(id).unwrap().iter().map(|&i| i as f32).collect(),
                _ => res.get(id).unwrap().data.clone(),
            };
            (g.describe(id), v)
        })
        .collect()
}

#[test]
fn every_op_runs_on_both_backends_and_agrees() {
    let gpu = gpu();
    let mut seen = BTreeSet::new();
    let (mut unary, mut binary, mut reduce) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for op in samples() {
        let c = op_case(&op);
        assert!(c.ordinal < OP_VARIANTS, "{op:?}: ordinal {} ≥ OP_VARIANTS", c.ordinal);
        seen.insert(c.ordinal);
        match &op {
            Op::Unary(u) => assert!(unary.insert(unary_domain(*u).0)),
            Op::Binary(b) => assert!(binary.insert(binary_domain(*b).0)),
            Op::Reduce { op: r, .. } => assert!(reduce.insert(reduce_domain(*r).0)),
            _ => {}
        }
        let cpu = run_case(&Cpu, &op, &c);
        let Some(gpu) = &gpu else { continue };
        let dev = run_case(gpu, &op, &c);
        for ((name, e), (_, a)) in cpu.iter().zip(&dev) {
            if let Err(err) = check_close(a, e, ATOL, RTOL) {
                panic!("{op:?}, node {name}: GPU vs CPU: {err}");
            }
        }
    }
    let all = |n: usize| (0..n).collect::<BTreeSet<usize>>();
    assert_eq!(seen, all(OP_VARIANTS), "Op variants without a running case");
    assert_eq!(unary, all(UNARY_VARIANTS), "UnaryOp variants without a running case");
    assert_eq!(binary, all(BINARY_VARIANTS), "BinaryOp variants without a running case");
    assert_eq!(reduce, all(REDUCE_VARIANTS), "ReduceOp variants without a running case");
}

/// How many `OptimizerKind` variants there are, numbered by [`rule_case`].
const RULE_VARIANTS: usize = 7;

/// Each rule's ordinal and an optimiser using it with the clipping and decay options spread
/// over the rules. No wildcard.
fn rule_case(kind: &OptimizerKind) -> (usize, Optimizer) {
    match kind {
        OptimizerKind::Sgd => (0, Optimizer::sgd(0.1).weight_decay(0.01)),
        OptimizerKind::Momentum { .. } => (1, Optimizer::momentum(0.05, 0.9).clip_value(0.05)),
        OptimizerKind::Nesterov { .. } => (2, Optimizer::nesterov(0.05, 0.9).weight_decay(0.02)),
        OptimizerKind::AdaGrad { .. } => (3, Optimizer::adagrad(0.05).clip_norm(0.5)),
        OptimizerKind::RmsProp { momentum, centered, .. } => (
            4,
            Optimizer::rmsprop_with(0.01, 0.99, 1e-8, *momentum, *centered).clip_norm(0.5),
        ),
        OptimizerKind::Adam { .. } => (5, Optimizer::adam(0.01).weight_decay(0.01).clip_value(0.1)),
        OptimizerKind::AdamW { .. } => (6, Optimizer::adamw(0.01, 0.05)),
    }
}

/// Parameters after each of three steps of `opt` on a linear classifier (7 → 5, with a
/// decayed weight and an undecayed bias).
fn rule_trajectory<B: Backend>(dev: &B, opt: &Optimizer) -> Vec<Vec<f32>> {
    let mut g = Graph::new();
    let x = g.input("x", [33, 7]).unwrap();
    let y = g.labels("y", [33], 5).unwrap();
    let l = kiln::nn::Linear::new(&mut g, "l", 7, 5).unwrap();
    let logits = l.forward(&mut g, x).unwrap();
    let loss = kiln::loss::cross_entropy(&mut g, logits, y).unwrap();
    let grads = kiln::backward(&mut g, loss).unwrap();
    let mut store = ParamStore::new(dev, &g, 3).unwrap();
    let mut p = Program::compile(&g, &mut store, &[loss], Some(Training::new(&grads, opt))).unwrap();
    let xs = values(1, 33 * 7, -2.0, 2.0);
    let ys: Vec<u32> = (0..33).map(|i| (i * 3 % 5) as u32).collect();
    (0..3)
        .map(|_| {
            p.run(&[("x", Feed::F32(&xs)), ("y", Feed::Labels(&ys))]).unwrap();
            let mut v = store.get("l.w").unwrap().data;
            v.extend(store.get("l.b").unwrap().data);
            v
        })
        .collect()
}

#[test]
fn every_optimiser_rule_runs_on_both_backends_and_agrees() {
    let rules = [
        OptimizerKind::Sgd,
        OptimizerKind::Momentum { momentum: 0.9 },
        OptimizerKind::Nesterov { momentum: 0.9 },
        OptimizerKind::AdaGrad { eps: 1e-10 },
        // RMSProp's options select different kernels: every combination runs.
        OptimizerKind::RmsProp {
            rho: 0.99,
            eps: 1e-8,
            momentum: 0.0,
            centered: false,
        },
        OptimizerKind::RmsProp {
            rho: 0.99,
            eps: 1e-8,
            momentum: 0.9,
            centered: false,
        },
        OptimizerKind::RmsProp {
            rho: 0.99,
            eps: 1e-8,
            momentum: 0.0,
            centered: true,
        },
        OptimizerKind::RmsProp {
            rho: 0.99,
            eps: 1e-8,
            momentum: 0.9,
            centered: true,
        },
        OptimizerKind::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
        OptimizerKind::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
    ];
    let gpu = gpu();
    let mut seen = BTreeSet::new();
    for kind in &rules {
        let (ordinal, opt) = rule_case(kind);
        assert_eq!(
            discriminant(&opt.kind),
            discriminant(kind),
            "{kind:?}'s case uses another rule"
        );
        assert!(
            ordinal < RULE_VARIANTS && (seen.insert(ordinal) || matches!(kind, OptimizerKind::RmsProp { .. })),
            "{kind:?}: ordinal {ordinal}"
        );
        assert_eq!(opt.kind, *kind, "the case runs the very options listed");
        let cpu = rule_trajectory(&Cpu, &opt);
        assert_ne!(cpu[0], cpu[2], "{kind:?} moves the parameters");
        let Some(gpu) = &gpu else { continue };
        let dev = rule_trajectory(gpu, &opt);
        for (step, (a, e)) in dev.iter().zip(&cpu).enumerate() {
            if let Err(err) = check_close(a, e, ATOL, RTOL) {
                panic!("{kind:?}, step {}: GPU vs CPU: {err}", step + 1);
            }
        }
    }
    assert_eq!(
        seen.len(),
        RULE_VARIANTS,
        "OptimizerKind variants without a running case"
    );
}
