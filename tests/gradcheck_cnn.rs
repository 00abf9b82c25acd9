//! Finite-difference checks of the convolutional ops and layers on awkward shapes: odd spatial
//! sizes, stride 2 with padding, dilation, channel counts that are not multiples of 4, batch 1.
//! Tolerances: see `common::TOL`.

mod common;

use common::*;
use kiln::{nn, Feed, Graph, NodeId};

#[test]
fn conv2d_geometries() {
    // (N, C, H, W, O, k, stride, pad, dilation)
    let cases = [
        (1, 1, 5, 5, 2, 3, 1, 0, 1),
        (2, 3, 7, 6, 5, 3, 2, 1, 1),
        (1, 2, 6, 7, 3, 3, 1, 2, 2),
        (2, 3, 5, 5, 2, 1, 1, 0, 1), // 1x1: the matmul-only path
        (1, 3, 7, 7, 2, 1, 2, 0, 1), // 1x1 with stride 2: a projection shortcut
        (1, 1, 4, 4, 1, 4, 1, 0, 1), // kernel as large as the image
        (1, 2, 5, 5, 3, 5, 1, 2, 1), // "same" padding, LeNet's first layer shape
    ];
    for (i, &(n, c, h, w, o, k, s, p, d)) in cases.iter().enumerate() {
        gradcheck(
            &|g: &mut Graph, v: &[NodeId]| g.conv2d(v[0], v[1], [s, s], [p, p], [d, d]),
            &[
                arg("x", &[n, c, h, w], away_from_zero(100 + i as u64, n * c * h * w)),
                arg("w", &[o, c, k, k], away_from_zero(200 + i as u64, o * c * k * k)),
            ],
            &[],
        );
    }
}

#[test]
fn grouped_and_depthwise_conv2d() {
    // (N, C, H, W, O, k, stride, pad, groups)
    let cases = [
        (2, 6, 5, 6, 9, 3, 1, 1, 3), // 3 groups of 2 → 3 channels
        (1, 4, 7, 5, 4, 3, 2, 1, 4), // depthwise, stride 2 with padding
        (2, 6, 5, 5, 4, 1, 1, 0, 2), // grouped 1x1
    ];
    for (i, &(n, c, h, w, o, k, s, p, groups)) in cases.iter().enumerate() {
        let wc = c / groups;
        gradcheck(
            &|g: &mut Graph, v: &[NodeId]| g.conv2d_grouped(v[0], v[1], [s, s], [p, p], [1, 1], groups),
            &[
                arg("x", &[n, c, h, w], away_from_zero(110 + i as u64, n * c * h * w)),
                arg("w", &[o, wc, k, k], away_from_zero(210 + i as u64, o * wc * k * k)),
            ],
            &[],
        );
    }
}

#[test]
fn grouped_conv2d_layer() {
    let mut g = Graph::new();
    let x = g.input("x", [2, 4, 6, 6]).unwrap();
    let dw = nn::Conv2d::grouped(&mut g, "dw", 4, 8, 3, 1, 1, 4).unwrap();
    assert_eq!(g.shape(dw.w).dims(), &[8, 1, 3, 3]);
    let y = dw.forward(&mut g, x).unwrap();
    assert_eq!(g.shape(y).dims(), &[2, 8, 6, 6]);
    let e = nn::Conv2d::grouped(&mut g, "bad", 4, 8, 3, 1, 1, 3)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad") && e.contains("3 groups must divide"), "{e}");
}

#[test]
fn grouped_conv2d_is_per_group_convolution() {
    // Two groups equal two separate convolutions over the channel halves, concatenated.
    let (n, c, h, w, o, k) = (2, 4, 5, 6, 6, 3);
    let xs = away_from_zero(1, n * c * h * w);
    let ws = away_from_zero(2, o * (c / 2) * k * k);
    let mut g = Graph::new();
    let x = g.input("x", [n, c, h, w]).unwrap();
    let wt = g.input("w", [o, c / 2, k, k]).unwrap();
    let grouped = g.conv2d_grouped(x, wt, [1, 1], [1, 1], [1, 1], 2).unwrap();
    let x0 = g.slice(x, 1, 0, 2).unwrap();
    let x1 = g.slice(x, 1, 2, 4).unwrap();
    let w0 = g.slice(wt, 0, 0, 3).unwrap();
    let w1 = g.slice(wt, 0, 3, 6).unwrap();
    let y0 = g.conv2d(x0, w0, [1, 1], [1, 1], [1, 1]).unwrap();
    let y1 = g.conv2d(x1, w1, [1, 1], [1, 1], [1, 1]).unwrap();
    let split = g.concat(&[y0, y1], 1).unwrap();
    let mut store = kiln::ParamStore::new(&kiln::Cpu, &g, 0).unwrap();
    let mut p = kiln::Program::compile(&g, &mut store, &[grouped, split], None).unwrap();
    let out = p.run(&[("x", Feed::F32(&xs)), ("w", Feed::F32(&ws))]).unwrap();
    let (a, b) = (&out.get(grouped).unwrap().data, &out.get(split).unwrap().data);
    check_close(a, b, 1e-5, 1e-5).unwrap();
}

#[test]
fn conv2d_rejects_impossible_geometry() {
    let mut g = Graph::new();
    let x = g.input("x", [1, 3, 4, 4]).unwrap();
    let w = g.param("w", [2, 3, 7, 7], kiln::Init::Zeros).unwrap();
    let e = g.conv2d(x, w, [1, 1], [0, 0], [1, 1]).unwrap_err().to_string();
    assert!(
        e.contains("conv2d") && e.contains("does not fit") && e.contains("[1, 3, 4, 4]"),
        "{e}"
    );
    let w2 = g.param("w2", [2, 4, 3, 3], kiln::Init::Zeros).unwrap();
    assert!(g
        .conv2d(x, w2, [1, 1], [0, 0], [1, 1])
        .unwrap_err()
        .to_string()
        .contains("channels"));
    // Groups must divide both channel counts, and the weights hold C/groups input channels.
    let w3 = g.param("w3", [4, 1, 3, 3], kiln::Init::Zeros).unwrap();
    let e = g
        .conv2d_grouped(x, w3, [1, 1], [0, 0], [1, 1], 2)
        .unwrap_err()
        .to_string();
    assert!(e.contains("2 groups must divide"), "{e}");
    let w4 = g.param("w4", [3, 3, 3, 3], kiln::Init::Zeros).unwrap();
    let e = g
        .conv2d_grouped(x, w4, [1, 1], [0, 0], [1, 1], 3)
        .unwrap_err()
        .to_string();
    assert!(e.contains("1 per group in 3 groups") && e.contains("expect 3"), "{e}");
    assert!(g.conv2d_grouped(x, w4, [1, 1], [0, 0], [1, 1], 0).is_err());
    assert!(
        g.max_pool2d(x, [2, 2], [2, 2], [2, 2]).is_err(),
        "padding larger than half the window"
    );
}

#[test]
fn pooling() {
    for (i, &(n, c, h, w, k, s, p)) in [
        (1, 1, 4, 4, 2, 2, 0),
        (2, 3, 7, 5, 3, 2, 1),
        (1, 2, 5, 5, 3, 1, 1),
        (2, 1, 6, 6, 2, 1, 0),
    ]
    .iter()
    .enumerate()
    {
        // Distinct, well-separated values: no ties for the max to break.
        let x = distinct(300 + i as u64, n * c * h * w);
        gradcheck(
            &|g: &mut Graph, v: &[NodeId]| g.max_pool2d(v[0], [k, k], [s, s], [p, p]),
            &[arg("x", &[n, c, h, w], x.clone())],
            &[],
        );
        gradcheck(
            &|g: &mut Graph, v: &[NodeId]| g.avg_pool2d(v[0], [k, k], [s, s], [p, p]),
            &[arg("x", &[n, c, h, w], x)],
            &[],
        );
    }
    gradcheck(
        &|g: &mut Graph, v: &[NodeId]| g.global_avg_pool(v[0]),
        &[arg("x", &[2, 3, 3, 5], away_from_zero(310, 90))],
        &[],
    );
}

#[test]
fn max_pool_forward_matches_a_hand_computation() {
    let mut g = Graph::new();
    let x = g.input("x", [1, 1, 3, 3]).unwrap();
    let y = g.max_pool2d(x, [2, 2], [2, 2], [1, 1]).unwrap();
    let a = g.avg_pool2d(x, [2, 2], [2, 2], [1, 1]).unwrap();
    let mut store = kiln::ParamStore::new(&kiln::Cpu, &g, 0).unwrap();
    let mut p = kiln::Program::compile(&g, &mut store, &[y, a], None).unwrap();
    let xs = [1., -2., 3., -4., 5., -6., 7., -8., 9.];
    let out = p.run(&[("x", Feed::F32(&xs))]).unwrap();
    // Windows (padding 1, stride 2): {1}, {-2, 3}, {-4, 7}, {5, -6, -8, 9}.
    assert_eq!(out.get(y).unwrap().data, vec![1., 3., 7., 9.]);
    // Padding counts in the divisor, as PyTorch's count_include_pad=True.
    assert_eq!(out.get(a).unwrap().data, vec![0.25, 0.25, 0.75, 0.0]);
}

#[test]
fn batch_norm_ops_reject_wrong_shapes() {
    let mut g = Graph::new();
    let x = g.input("x", [4, 3, 5]).unwrap();
    let flat = g.input("flat", [7]).unwrap();
    let e = g.channel_moments(flat).unwrap_err().to_string();
    assert!(
        e.contains("channel_moments") && e.contains("[7]") && e.contains("channels on axis 1"),
        "{e}"
    );
    let m = g.channel_moments(x).unwrap();
    let aff = g.param("affine", [2, 3], kiln::Init::Zeros).unwrap();
    let wrong = g.param("wrong", [2, 4], kiln::Init::Zeros).unwrap();
    let e = g.batch_norm(x, m, wrong, 1e-5).unwrap_err().to_string();
    assert!(
        e.contains("batch_norm") && e.contains("(2, 3) for 3 channels") && e.contains("[2, 4]"),
        "{e}"
    );
    let e = g.batch_norm(x, wrong, aff, 1e-5).unwrap_err().to_string();
    assert!(e.contains("(2, 3) for 3 channels"), "{e}");
    let e = g.batch_norm(x, m, aff, -1.0).unwrap_err().to_string();
    assert!(e.contains("eps must be finite and non-negative, got -1"), "{e}");
    assert!(g.batch_norm(x, m, aff, f32::NAN).is_err());
    assert!(g.batch_norm(x, m, aff, 0.0).is_ok());
}

#[test]
fn batch_norm_ops_each_alone() {
    // The statistics alone (a 3-d and a 2-d input): both rows of the output matter.
    gradcheck(
        &|g: &mut Graph, v: &[NodeId]| {
            let m = g.channel_moments(v[0])?;
            g.mul(m, v[1])
        },
        &[
            arg("x", &[3, 4, 5], away_from_zero(410, 60)),
            arg("w", &[2, 4], away_from_zero(411, 8)),
        ],
        &[],
    );
    gradcheck(
        &|g: &mut Graph, v: &[NodeId]| g.channel_moments(v[0]),
        &[arg("x", &[6, 2], away_from_zero(412, 12))],
        &[],
    );
    // The normalisation with statistics that are not the batch's own (as at evaluation): the
    // gradients reaching the means and variances are checked on their own.
    gradcheck(
        &|g: &mut Graph, v: &[NodeId]| g.batch_norm(v[0], v[1], v[2], 0.1),
        &[
            arg("x", &[2, 3, 5], away_from_zero(413, 30)),
            arg(
                "moments",
                &[2, 3],
                vec![0.3, -0.4, 0.1, 0.8, 1.5, 0.6], // means, then positive variances
            ),
            arg("affine", &[2, 3], away_from_zero(414, 6)),
        ],
        &[],
    );
}

#[test]
fn batch_norm_in_training_mode() {
    // Gradients flow through the batch mean and variance, not just the affine part.
    gradcheck(
        &|g: &mut Graph, v: &[NodeId]| {
            let bn = nn::BatchNorm::new(g, "bn", 3)?;
            let y = bn.forward(g, v[0], true)?;
            let gm = g.reshape(bn.gamma, [1, 3, 1, 1])?;
            // Make γ matter non-trivially as well.
            g.mul(y, gm)
        },
        &[arg("x", &[2, 3, 3, 2], away_from_zero(400, 36))],
        &[],
    );
    gradcheck(
        &|g: &mut Graph, v: &[NodeId]| {
            let bn = nn::BatchNorm::new(g, "bn1d", 5)?;
            bn.forward(g, v[0], true)
        },
        &[arg("x", &[4, 5], away_from_zero(401, 20))],
        &[],
    );
}

#[test]
fn dropout_mask_is_fixed_within_a_step() {
    gradcheck(
        &|g: &mut Graph, v: &[NodeId]| g.dropout(v[0], 0.3),
        &[arg("x", &[3, 7], away_from_zero(500, 21))],
        &[],
    );
}

#[test]
fn residual_blocks() {
    // The block ends in ReLUs of batch-normalised values, so some pre-activations sit near 0;
    // a ±eps step that crosses such a kink measures a secant, not a derivative. Inputs are kept
    // small (3×3 planes) so that no ReLU input lies within reach of the perturbation, as for the
    // plain ReLU checks. (With 5×5 planes one element crosses a kink at eps = 1e-2 and agrees
    // with the analytic value to 3 digits at eps = 3e-3.)
    for (name, (c_in, c_out, s)) in [("identity", (3, 3, 1)), ("projection", (2, 3, 2))] {
        gradcheck(
            &|g: &mut Graph, v: &[NodeId]| nn::ResidualBlock::new(g, name, c_in, c_out, s)?.forward(g, v[0], true),
            &[arg("x", &[2, c_in, 3, 3], away_from_zero(600, 2 * c_in * 9))],
            &[],
        );
    }
}
