//! GPU kernels against the CPU reference, forward and backward, on awkward shapes: 1, 7, 33,
//! 65, 129, 257, non-square, batch 1.
//!
//! Tolerance: atol 1e-4 + rtol 1e-3 unless stated. The GPU sums in a different order (tiles,
//! trees) than the reference, and WGSL allows exp/log/pow a few ULP of error; for the O(1)
//! values and sums of up to ~10⁴ terms here that is well under 1e-4 relative, while any
//! indexing or formula mistake shows up as O(1) errors.

mod common;

use common::*;
use kiln::{loss, nn, Feed, Graph, NodeId, UnaryOp};

const ATOL: f32 = 1e-4;
const RTOL: f32 = 1e-3;

#[test]
fn unary_ops() {
    let mixed = away_from_zero(1, 33 * 7);
    let pos = values(2, 33 * 7, 0.3, 3.0);
    for op in [
        UnaryOp::Neg,
        UnaryOp::Exp,
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
        UnaryOp::Clamp(-1.0, 1.0),
        UnaryOp::AddScalar(2.5),
        UnaryOp::MulScalar(-1.5),
    ] {
        parity(
            &|g: &mut Graph, x: &[NodeId]| g.unary(op, x[0]),
            &[arg("x", &[33, 7], mixed.clone())],
            &[],
            ATOL,
            RTOL,
        );
    }
    for op in [
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::PowScalar(2.5),
        UnaryOp::PowScalar(-0.5),
    ] {
        parity(
            &|g: &mut Graph, x: &[NodeId]| g.unary(op, x[0]),
            &[arg("x", &[33, 7], pos.clone())],
            &[],
            ATOL,
            RTOL,
        );
    }
}

#[test]
fn binary_ops_with_broadcasting() {
    let cases: [(&[usize], &[usize]); 5] = [
        (&[65, 7], &[65, 7]),
        (&[7, 33], &[33]),
        (&[5, 1, 33], &[7, 1]),
        (&[1], &[129]),
        (&[1, 1], &[1, 1]),
    ];
    for (sa, sb) in cases {
        let na: usize = sa.iter().product();
        let nb: usize = sb.iter().product();
        for f in [
            kiln::BinaryOp::Add,
            kiln::BinaryOp::Sub,
            kiln::BinaryOp::Mul,
            kiln::BinaryOp::Div,
            kiln::BinaryOp::Max,
            kiln::BinaryOp::Min,
            kiln::BinaryOp::Greater,
            kiln::BinaryOp::Equal,
        ] {
            let a = away_from_zero(10, na);
            let b = away_from_zero(20, nb);
            parity(
                &|g: &mut Graph, x: &[NodeId]| g.binary(f, x[0], x[1]),
                &[arg("a", sa, a), arg("b", sb, b)],
                &[],
                ATOL,
                RTOL,
            );
        }
        parity(
            &|g: &mut Graph, x: &[NodeId]| g.pow(x[0], x[1]),
            &[
                arg("a", sa, values(3, na, 0.5, 2.0)),
                arg("b", sb, values(4, nb, -1.5, 1.5)),
            ],
            &[],
            ATOL,
            RTOL,
        );
    }
    let cond: Vec<f32> = (0..7 * 33).map(|i| (i % 3 == 0) as u8 as f32).collect();
    parity(
        &|g: &mut Graph, x: &[NodeId]| {
            let c = g.input("c", [7, 33])?;
            g.where_(c, x[0], x[1])
        },
        &[
            arg("a", &[7, 33], away_from_zero(5, 231)),
            arg("b", &[33], away_from_zero(6, 33)),
        ],
        &[("c", Feed::F32(&cond))],
        ATOL,
        RTOL,
    );
}

#[test]
fn reductions() {
    let x = distinct(7, 7 * 33 * 5);
    for keepdim in [false, true] {
        for axes in [&[0isize][..], &[1], &[2], &[0, 2], &[0, 1, 2]] {
            for op in [kiln::ReduceOp::Sum, kiln::ReduceOp::Mean, kiln::ReduceOp::Max] {
                parity(
                    &|g: &mut Graph, v: &[NodeId]| g.reduce(op, v[0], axes, keepdim),
                    &[arg("x", &[7, 33, 5], x.clone())],
                    &[],
                    ATOL,
                    RTOL,
                );
            }
        }
    }
    // Reduced and kept axes that cannot be merged: two reduced axes (short: one invocation per
    // output; long: a workgroup per output), and three.
    for (shape, axes) in [
        (&[9usize, 5, 7, 6][..], &[0isize, 2][..]),
        (&[40, 3, 9][..], &[0, 2][..]),
        (&[3, 2, 5, 2, 7][..], &[0, 2, 4][..]),
    ] {
        let n = shape.iter().product();
        for op in [kiln::ReduceOp::Sum, kiln::ReduceOp::Mean, kiln::ReduceOp::Max] {
            parity(
                &|g: &mut Graph, v: &[NodeId]| g.reduce(op, v[0], axes, false),
                &[arg("x", shape, distinct(9, n))],
                &[],
                ATOL,
                RTOL,
            );
        }
    }
    // A long reduction (257 × 129 = 33153 terms) and a single-element one.
    parity(
        &|g: &mut Graph, v: &[NodeId]| g.sum_all(v[0]),
        &[arg("x", &[257, 129], values(8, 257 * 129, -1.0, 1.0))],
        &[],
        1e-3,
        RTOL,
    );
    parity(
        &|g: &mut Graph, v: &[NodeId]| g.mean(v[0], &[0], false),
        &[arg("x", &[1], vec![0.7])],
        &[],
        ATOL,
        RTOL,
    );
}

#[test]
fn layout_ops() {
    let x = away_from_zero(8, 7 * 33 * 5);
    let a = || arg("x", &[7, 33, 5], x.clone());
    parity(
        &|g: &mut Graph, v: &[NodeId]| g.reshape(v[0], [33, 35]),
        &[a()],
        &[],
        ATOL,
        RTOL,
    );
    parity(
        &|g: &mut Graph, v: &[NodeId]| g.permute(v[0], &[2, 0, 1]),
        &[a()],
        &[],
        ATOL,
        RTOL,
    );
    parity(
        &|g: &mut Graph, v: &[NodeId]| g.transpose(v[0]),
        &[a()],
        &[],
        ATOL,
        RTOL,
    );
    parity(
        &|g: &mut Graph, v: &[NodeId]| g.broadcast_to(v[0], [7, 33, 5]),
        &[arg("x", &[33, 1], away_from_zero(9, 33))],
        &[],
        ATOL,
        RTOL,
    );
    parity(
        &|g: &mut Graph, v: &[NodeId]| g.slice(v[0], 1, 3, 30),
        &[a()],
        &[],
        ATOL,
        RTOL,
    );
    parity(
        &|g: &mut Graph, v: &[NodeId]| g.concat(&[v[0], v[1], v[0]], 1),
        &[a(), arg("b", &[7, 1, 5], away_from_zero(10, 35))],
        &[],
        ATOL,
        RTOL,
    );
}

#[test]
fn matmul_in_every_layout() {
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        for (m, k, n) in [(65, 33, 129), (1, 7, 1), (7, 257, 33), (70, 16, 129)] {
            let sa = if ta { vec![k, m] } else { vec![m, k] };
            let sb = if tb { vec![n, k] } else { vec![k, n] };
            parity(
                &|g: &mut Graph, v: &[NodeId]| g.matmul_t(v[0], v[1], ta, tb),
                &[
                    arg("a", &sa, values(11, m * k, -1.0, 1.0)),
                    arg("b", &sb, values(12, k * n, -1.0, 1.0)),
                ],
                &[],
                ATOL,
                RTOL,
            );
        }
        // Batched, and with each operand shared across the batch.
        let (m, k, n) = (33, 7, 65);
        let sa = if ta { vec![3, k, m] } else { vec![3, m, k] };
        let sb = if tb { vec![3, n, k] } else { vec![3, k, n] };
        parity(
            &|g: &mut Graph, v: &[NodeId]| g.matmul_t(v[0], v[1], ta, tb),
            &[
                arg("a", &sa, values(13, 3 * m * k, -1.0, 1.0)),
                arg("b", &sb, values(14, 3 * k * n, -1.0, 1.0)),
            ],
            &[],
            ATOL,
            RTOL,
        );
        parity(
            &|g: &mut Graph, v: &[NodeId]| g.matmul_t(v[0], v[1], ta, tb),
            &[
                arg("a", &sa, values(15, 3 * m * k, -1.0, 1.0)),
                arg("b", &sb[1..], values(16, k * n, -1.0, 1.0)),
            ],
            &[],
            ATOL,
            RTOL,
        );
        parity(
            &|g: &mut Graph, v: &[NodeId]| g.matmul_t(v[0], v[1], ta, tb),
            &[
                arg("a", &sa[1..], values(17, m * k, -1.0, 1.0)),
                arg("b", &sb, values(18, 3 * k * n, -1.0, 1.0)),
            ],
            &[],
            ATOL,
            RTOL,
        );
    }
}

#[test]
fn softmax_family() {
    for (rows, c) in [(33, 257), (1, 7), (65, 10)] {
        let x = values(17, rows * c, -4.0, 4.0);
        parity(
            &|g: &mut Graph, v: &[NodeId]| g.softmax(v[0]),
            &[arg("x", &[rows, c], x.clone())],
            &[],
            ATOL,
            RTOL,
        );
        parity(
            &|g: &mut Graph, v: &[NodeId]| g.log_softmax(v[0]),
            &[arg("x", &[rows, c], x.clone())],
            &[],
            ATOL,
            RTOL,
        );
        let labels: Vec<u32> = (0..rows as u32).map(|i| (i * 7) % c as u32).collect();
        for eps in [0.0, 0.1] {
            parity(
                &|g: &mut Graph, v: &[NodeId]| {
                    let y = g.labels("y", [rows], c)?;
                    g.softmax_cross_entropy(v[0], y, eps)
                },
                &[arg("x", &[rows, c], x.clone())],
                &[("y", Feed::Labels(&labels))],
                ATOL,
                RTOL,
            );
        }
    }
    // Large logits: no overflow on the device either.
    parity(
        &|g: &mut Graph, v: &[NodeId]| {
            let y = g.labels("y", [2], 3)?;
            g.softmax_cross_entropy(v[0], y, 0.0)
        },
        &[arg("x", &[2, 3], vec![1000.0, -1000.0, 0.0, 999.0, 1000.0, -1000.0])],
        &[("y", Feed::Labels(&[1, 0]))],
        ATOL,
        RTOL,
    );
}

#[test]
fn losses() {
    let labels: Vec<u32> = (0..33).map(|i| i % 7).collect();
    let p = away_from_zero(20, 33 * 7);
    let t = values(21, 33 * 7, 0.0, 1.0);
    parity(
        &|g: &mut Graph, v: &[NodeId]| {
            let t = g.input("t", [33, 7])?;
            loss::mse(g, v[0], t)
        },
        &[arg("p", &[33, 7], p.clone())],
        &[("t", Feed::F32(&t))],
        ATOL,
        RTOL,
    );
    parity(
        &|g: &mut Graph, v: &[NodeId]| {
            let t = g.input("t", [33, 7])?;
            loss::bce_with_logits(g, v[0], t)
        },
        &[arg("p", &[33, 7], p.clone())],
        &[("t", Feed::F32(&t))],
        ATOL,
        RTOL,
    );
    parity(
        &|g: &mut Graph, v: &[NodeId]| {
            let y = g.labels("y", [33], 7)?;
            loss::multiclass_hinge(g, v[0], y, 1.0)
        },
        &[arg("p", &[33, 7], p.clone())],
        &[("y", Feed::Labels(&labels))],
        ATOL,
        RTOL,
    );
}

#[test]
fn convolution_and_pooling() {
    // (N, C, H, W, O, k, stride, pad, dilation)
    for (i, &(n, c, h, w, o, k, s, p, d)) in [
        (1, 1, 7, 7, 2, 3, 1, 0, 1),
        (2, 3, 9, 7, 5, 3, 2, 1, 1),
        (1, 2, 7, 9, 3, 3, 1, 2, 2),
        (3, 5, 5, 5, 7, 1, 1, 0, 1),
        (2, 1, 28, 28, 6, 5, 1, 2, 1),
        // One-pixel images under a "same" window (taps wholly in the padding), and padding
        // beyond the kernel's reach with stride and dilation.
        (3, 4, 1, 1, 5, 3, 1, 1, 1),
        (2, 3, 2, 5, 4, 3, 3, 4, 2),
    ]
    .iter()
    .enumerate()
    {
        parity(
            &|g: &mut Graph, v: &[NodeId]| g.conv2d(v[0], v[1], [s, s], [p, p], [d, d]),
            &[
                arg("x", &[n, c, h, w], away_from_zero(100 + i as u64, n * c * h * w)),
                arg("w", &[o, c, k, k], away_from_zero(200 + i as u64, o * c * k * k)),
            ],
            &[],
            ATOL,
            RTOL,
        );
    }
    // Grouped and depthwise: (N, C, H, W, O, k, stride, pad, groups).
    for (i, &(n, c, h, w, o, k, s, p, groups)) in [(2, 6, 9, 7, 9, 3, 1, 1, 3), (1, 5, 7, 7, 5, 3, 2, 1, 5)]
        .iter()
        .enumerate()
    {
        let wc = c / groups;
        parity(
            &|g: &mut Graph, v: &[NodeId]| g.conv2d_grouped(v[0], v[1], [s, s], [p, p], [1, 1], groups),
            &[
                arg("x", &[n, c, h, w], away_from_zero(150 + i as u64, n * c * h * w)),
                arg("w", &[o, wc, k, k], away_from_zero(250 + i as u64, o * wc * k * k)),
            ],
            &[],
            ATOL,
            RTOL,
        );
    }
    for (i, &(n, c, h, w, k, s, p)) in [
        (1, 1, 4, 4, 2, 2, 0),
        (2, 3, 7, 5, 3, 2, 1),
        (1, 2, 33, 7, 3, 1, 1),
        (2, 6, 28, 28, 2, 2, 0),
    ]
    .iter()
    .enumerate()
    {
        let x = distinct(300 + i as u64, n * c * h * w);
        parity(
            &|g: &mut Graph, v: &[NodeId]| g.max_pool2d(v[0], [k, k], [s, s], [p, p]),
            &[arg("x", &[n, c, h, w], x.clone())],
            &[],
            ATOL,
            RTOL,
        );
        parity(
            &|g: &mut Graph, v: &[NodeId]| g.avg_pool2d(v[0], [k, k], [s, s], [p, p]),
            &[arg("x", &[n, c, h, w], x)],
            &[],
            ATOL,
            RTOL,
        );
    }
}

#[test]
fn normalisation_dropout_and_residual_blocks() {
    parity(
        &|g: &mut Graph, v: &[NodeId]| nn::BatchNorm::new(g, "bn", 3)?.forward(g, v[0], true),
        &[arg("x", &[2, 3, 7, 5], away_from_zero(400, 210))],
        &[],
        ATOL,
        RTOL,
    );
    // 429 elements per channel: the channel kernels' strided shares wrap around the 256
    // invocations unevenly, and a plane is not a multiple of anything.
    parity(
        &|g: &mut Graph, v: &[NodeId]| nn::BatchNorm::new(g, "bn", 5)?.forward(g, v[0], true),
        &[arg("x", &[3, 5, 11, 13], away_from_zero(402, 2145))],
        &[],
        ATOL,
        RTOL,
    );
    parity(
        &|g: &mut Graph, v: &[NodeId]| nn::BatchNorm::new(g, "bn", 33)?.forward(g, v[0], true),
        &[arg("x", &[7, 33], away_from_zero(401, 231))],
        &[],
        ATOL,
        RTOL,
    );
    // The dropout mask is the same integer hash on both devices: identical masks.
    parity(
        &|g: &mut Graph, v: &[NodeId]| g.dropout(v[0], 0.3),
        &[arg("x", &[65, 33], away_from_zero(500, 65 * 33))],
        &[],
        0.0,
        0.0,
    );
    parity(
        &|g: &mut Graph, v: &[NodeId]| nn::ResidualBlock::new(g, "rb", 2, 3, 2)?.forward(g, v[0], true),
        &[arg("x", &[2, 2, 7, 7], away_from_zero(600, 196))],
        &[],
        ATOL,
        RTOL,
    );
}

#[test]
fn bernoulli_samples_and_stop_gradient_are_identical() {
    // The samples are the same integer hash compared with the same probabilities on both
    // devices: identical, including probabilities at and beyond 0 and 1.
    let mut p = values(700, 65 * 33, 0.0, 1.0);
    for (i, v) in [0.0, 1.0, -0.25, 1.25, 0.5].into_iter().enumerate() {
        p[i * 7] = v;
    }
    parity(
        &|g: &mut Graph, v: &[NodeId]| {
            let s = g.bernoulli(v[0])?;
            g.mul(s, v[0])
        },
        &[arg("p", &[65, 33], p)],
        &[],
        0.0,
        0.0,
    );
    parity(
        &|g: &mut Graph, v: &[NodeId]| {
            let s = g.stop_gradient(v[0])?;
            let t = g.tanh(s)?;
            g.mul(t, v[0])
        },
        &[arg("x", &[7, 129], away_from_zero(701, 7 * 129))],
        &[],
        ATOL,
        RTOL,
    );
}
