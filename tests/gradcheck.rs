//! Every differentiable op and loss, checked against central finite differences on the CPU
//! reference backend. Tolerances: see `common::TOL`.

mod common;

use common::*;
use kiln::{loss, nn, Feed, Graph, NodeId, UnaryOp};

fn unary_case(op: UnaryOp, data: Vec<f32>) {
    let n = data.len();
    gradcheck(
        &|g: &mut Graph, x: &[NodeId]| g.unary(op, x[0]),
        &[arg("x", &[n / 3, 3], data)],
        &[],
    );
}

#[test]
fn unary_ops() {
    let mixed = away_from_zero(1, 12);
    let positive: Vec<f32> = values(2, 12, 0.3, 3.0);
    for op in [
        UnaryOp::Neg,
        UnaryOp::Exp,
        UnaryOp::Square,
        UnaryOp::Abs,
        UnaryOp::Sigmoid,
        UnaryOp::Tanh,
        UnaryOp::Relu,
        UnaryOp::LeakyRelu(0.1),
        UnaryOp::Elu(1.3),
        UnaryOp::Softplus,
        UnaryOp::Gelu,
        UnaryOp::AddScalar(2.5),
        UnaryOp::MulScalar(-1.5),
        UnaryOp::Recip,
        UnaryOp::Sign,
        UnaryOp::Step,
    ] {
        unary_case(op, mixed.clone());
    }
    for op in [
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::PowScalar(2.5),
        UnaryOp::PowScalar(-0.5),
    ] {
        unary_case(op, positive.clone());
    }
    // Clamp / hardtanh: values on both sides of the bounds but not within eps of them.
    let c: Vec<f32> = mixed
        .iter()
        .map(|v| if (v.abs() - 1.0).abs() < 0.05 { v * 1.2 } else { *v })
        .collect();
    unary_case(UnaryOp::Clamp(-1.0, 1.0), c);
}

#[test]
fn softplus_and_sigmoid_are_stable_for_large_inputs() {
    // Far outside the range where a naive ln(1+e^x) overflows.
    unary_case(UnaryOp::Softplus, vec![-90.0, -30.0, 30.0, 90.0, 0.5, -0.5]);
    unary_case(UnaryOp::Sigmoid, vec![-90.0, -30.0, 30.0, 90.0, 0.5, -0.5]);
}

#[test]
fn binary_ops_with_broadcasting() {
    let cases: [(&[usize], &[usize]); 4] = [
        (&[2, 3], &[2, 3]),
        (&[2, 3], &[3]),
        (&[4, 1, 3], &[2, 1]),
        (&[1], &[2, 2]),
    ];
    for (sa, sb) in cases {
        let na: usize = sa.iter().product();
        let nb: usize = sb.iter().product();
        for (k, f) in [
            kiln::BinaryOp::Add,
            kiln::BinaryOp::Sub,
            kiln::BinaryOp::Mul,
            kiln::BinaryOp::Div,
            kiln::BinaryOp::Max,
            kiln::BinaryOp::Min,
        ]
        .into_iter()
        .enumerate()
        {
            // Max/min: a and b drawn from disjoint interleaved grids so they never tie.
            let a: Vec<f32> = away_from_zero(10 + k as u64, na)
                .iter()
                .map(|v| (v * 10.0).round() / 10.0 + 0.05)
                .collect();
            let b: Vec<f32> = away_from_zero(20 + k as u64, nb)
                .iter()
                .map(|v| (v * 10.0).round() / 10.0)
                .collect();
            gradcheck(
                &|g: &mut Graph, x: &[NodeId]| g.binary(f, x[0], x[1]),
                &[arg("a", sa, a), arg("b", sb, b)],
                &[],
            );
        }
        let a = values(3, na, 0.5, 2.0);
        let b = values(4, nb, -1.5, 1.5);
        gradcheck(
            &|g: &mut Graph, x: &[NodeId]| g.pow(x[0], x[1]),
            &[arg("a", sa, a), arg("b", sb, b)],
            &[],
        );
    }
}

#[test]
fn where_routes_gradients() {
    let cond = vec![1.0, 0.0, 1.0, 0.0, 0.0, 1.0];
    gradcheck(
        &|g: &mut Graph, x: &[NodeId]| {
            let c = g.input("c", [2, 3])?;
            g.where_(c, x[0], x[1])
        },
        &[
            arg("a", &[2, 3], away_from_zero(5, 6)),
            arg("b", &[3], away_from_zero(6, 3)),
        ],
        &[("c", Feed::F32(&cond))],
    );
}

#[test]
fn reductions() {
    let x = distinct(7, 24);
    for keepdim in [false, true] {
        for axes in [&[0isize][..], &[1], &[2], &[0, 2], &[-1, 0, 1]] {
            gradcheck(
                &|g: &mut Graph, v: &[NodeId]| g.sum(v[0], axes, keepdim),
                &[arg("x", &[2, 3, 4], x.clone())],
                &[],
            );
            gradcheck(
                &|g: &mut Graph, v: &[NodeId]| g.mean(v[0], axes, keepdim),
                &[arg("x", &[2, 3, 4], x.clone())],
                &[],
            );
            gradcheck(
                &|g: &mut Graph, v: &[NodeId]| g.max(v[0], axes, keepdim),
                &[arg("x", &[2, 3, 4], x.clone())],
                &[],
            );
        }
    }
}

#[test]
fn layout_ops() {
    let x = away_from_zero(8, 24);
    let a = arg("x", &[2, 3, 4], x.clone());
    gradcheck(
        &|g: &mut Graph, v: &[NodeId]| g.reshape(v[0], [6, 4]),
        &[arg("x", &[2, 3, 4], x.clone())],
        &[],
    );
    gradcheck(&|g: &mut Graph, v: &[NodeId]| g.permute(v[0], &[2, 0, 1]), &[a], &[]);
    gradcheck(
        &|g: &mut Graph, v: &[NodeId]| g.transpose(v[0]),
        &[arg("x", &[2, 3, 4], x.clone())],
        &[],
    );
    gradcheck(
        &|g: &mut Graph, v: &[NodeId]| g.broadcast_to(v[0], [2, 3, 4]),
        &[arg("x", &[3, 1], away_from_zero(9, 3))],
        &[],
    );
    gradcheck(
        &|g: &mut Graph, v: &[NodeId]| g.slice(v[0], 1, 1, 3),
        &[arg("x", &[2, 3, 4], x.clone())],
        &[],
    );
    gradcheck(
        &|g: &mut Graph, v: &[NodeId]| g.concat(&[v[0], v[1], v[0]], 1),
        &[
            arg("a", &[2, 3, 4], x.clone()),
            arg("b", &[2, 1, 4], away_from_zero(10, 8)),
        ],
        &[],
    );
}

#[test]
fn matmul_in_every_layout() {
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let sa: &[usize] = if ta { &[4, 3] } else { &[3, 4] };
        let sb: &[usize] = if tb { &[5, 4] } else { &[4, 5] };
        gradcheck(
            &|g: &mut Graph, v: &[NodeId]| g.matmul_t(v[0], v[1], ta, tb),
            &[
                arg("a", sa, away_from_zero(11, 12)),
                arg("b", sb, away_from_zero(12, 20)),
            ],
            &[],
        );
        // Batched, and batched against a shared rank-2 right operand.
        let sa3: Vec<usize> = [&[2][..], sa].concat();
        let sb3: Vec<usize> = [&[2][..], sb].concat();
        gradcheck(
            &|g: &mut Graph, v: &[NodeId]| g.matmul_t(v[0], v[1], ta, tb),
            &[
                arg("a", &sa3, away_from_zero(13, 24)),
                arg("b", &sb3, away_from_zero(14, 40)),
            ],
            &[],
        );
        gradcheck(
            &|g: &mut Graph, v: &[NodeId]| g.matmul_t(v[0], v[1], ta, tb),
            &[
                arg("a", &sa3, away_from_zero(15, 24)),
                arg("b", sb, away_from_zero(16, 20)),
            ],
            &[],
        );
    }
}

#[test]
fn softmax_family() {
    let x = away_from_zero(17, 12);
    gradcheck(
        &|g: &mut Graph, v: &[NodeId]| g.softmax(v[0]),
        &[arg("x", &[3, 4], x.clone())],
        &[],
    );
    gradcheck(
        &|g: &mut Graph, v: &[NodeId]| g.log_softmax(v[0]),
        &[arg("x", &[3, 4], x.clone())],
        &[],
    );
    let labels = [2u32, 0, 3];
    for eps in [0.0, 0.1] {
        gradcheck(
            &|g: &mut Graph, v: &[NodeId]| {
                let y = g.labels("y", [3], 4)?;
                g.softmax_cross_entropy(v[0], y, eps)
            },
            &[arg("x", &[3, 4], x.clone())],
            &[("y", Feed::Labels(&labels))],
        );
    }
}

#[test]
fn fused_cross_entropy_is_stable_for_large_logits() {
    // Logits of ±1000 overflow a naive exp; the fused op stays exact and finite.
    let x = vec![1000.0, -1000.0, 0.0, 999.0, 1000.0, -1000.0];
    gradcheck(
        &|g: &mut Graph, v: &[NodeId]| {
            let y = g.labels("y", [2], 3)?;
            g.softmax_cross_entropy(v[0], y, 0.0)
        },
        &[arg("x", &[2, 3], x)],
        &[("y", Feed::Labels(&[1, 0]))],
    );
}

#[test]
fn activations_and_layers() {
    gradcheck(
        &|g: &mut Graph, v: &[NodeId]| g.prelu(v[0], v[1]),
        &[
            arg("x", &[4, 3], away_from_zero(18, 12)),
            arg("alpha", &[3], vec![0.25, 0.1, -0.2]),
        ],
        &[],
    );
    gradcheck(
        &|g: &mut Graph, v: &[NodeId]| {
            let m = nn::Maxout::new(g, "mo", 3, 2, 3)?;
            let h = m.forward(g, v[0])?;
            let w = g.param_node("mo.w").expect("maxout weight");
            // Differentiate through the layer's own weight as well.
            let s = g.sum_all(w)?;
            g.add(h, s)
        },
        &[arg("x", &[4, 3], away_from_zero(19, 12))],
        &[],
    );
}

#[test]
fn losses() {
    let p = away_from_zero(20, 12);
    let t = values(21, 12, -1.0, 1.0);
    let t01 = values(22, 12, 0.0, 1.0);
    let labels = [1u32, 0, 3];
    gradcheck(
        &|g: &mut Graph, v: &[NodeId]| {
            let t = g.input("t", [3, 4])?;
            loss::mse(g, v[0], t)
        },
        &[arg("p", &[3, 4], p.clone())],
        &[("t", Feed::F32(&t))],
    );
    gradcheck(
        &|g: &mut Graph, v: &[NodeId]| {
            let t = g.input("t", [3, 4])?;
            loss::l1(g, v[0], t)
        },
        &[arg("p", &[3, 4], p.clone())],
        &[("t", Feed::F32(&t))],
    );
    gradcheck(
        &|g: &mut Graph, v: &[NodeId]| {
            let t = g.input("t", [3, 4])?;
            loss::bce_with_logits(g, v[0], t)
        },
        &[arg("p", &[3, 4], p.clone())],
        &[("t", Feed::F32(&t01))],
    );
    gradcheck(
        &|g: &mut Graph, v: &[NodeId]| {
            let y = g.labels("y", [3], 4)?;
            loss::multiclass_hinge(g, v[0], y, 1.0)
        },
        &[arg(
            "p",
            &[3, 4],
            distinct(23, 12).iter().map(|v| v * 3.0 + 0.013).collect(),
        )],
        &[("y", Feed::Labels(&labels))],
    );
    gradcheck(
        &|g: &mut Graph, v: &[NodeId]| {
            let y = g.labels("y", [3], 4)?;
            loss::cross_entropy_smoothed(g, v[0], y, 0.2)
        },
        &[arg("p", &[3, 4], p.clone())],
        &[("y", Feed::Labels(&labels))],
    );
    // Contrastive: one similar pair, two dissimilar ones (one inside the margin, one outside).
    let same = [1.0, 0.0, 0.0];
    gradcheck(
        &|g: &mut Graph, v: &[NodeId]| {
            let s = g.input("same", [3])?;
            loss::contrastive(g, v[0], v[1], s, 2.0)
        },
        &[
            arg("a", &[3, 2], vec![0.3, -0.2, 0.5, 0.1, 2.0, 1.0]),
            arg("b", &[3, 2], vec![0.1, 0.4, -0.2, 0.6, -1.0, -1.5]),
        ],
        &[("same", Feed::F32(&same))],
    );
    gradcheck(
        &|g: &mut Graph, v: &[NodeId]| {
            let t = g.input("t", [3, 4])?;
            let a = loss::mse(g, v[0], t)?;
            let b = loss::l1(g, v[0], t)?;
            let pen = loss::elastic_net(g, &[v[1]], 0.01, 0.1)?;
            loss::weighted_sum(g, &[(a, 0.7), (b, 0.3), (pen, 1.0)])
        },
        &[arg("p", &[3, 4], p.clone()), arg("w", &[2, 2], away_from_zero(24, 4))],
        &[("t", Feed::F32(&t))],
    );
}

#[test]
fn shared_subexpressions_sum_their_contributions() {
    // x feeds three consumers; its gradient is the sum of all three paths.
    gradcheck(
        &|g: &mut Graph, v: &[NodeId]| {
            let a = g.mul(v[0], v[0])?;
            let b = g.tanh(v[0])?;
            let c = g.matmul(v[0], v[1])?;
            let ab = g.add(a, b)?;
            let s = g.sum(c, &[1], true)?;
            g.mul(ab, s)
        },
        &[
            arg("x", &[2, 2], away_from_zero(25, 4)),
            arg("w", &[2, 3], away_from_zero(26, 6)),
        ],
        &[],
    );
}

#[test]
fn gradcheck_catches_a_wrong_gradient() {
    // A rule that is 5% off: compare d/dx x² from autodiff with finite differences of 1.05·x².
    let x = away_from_zero(27, 6);
    let right = gradients_of(
        &|g: &mut Graph, v: &[NodeId]| g.square(v[0]),
        &[arg("x", &[6], x.clone())],
        &[],
        TOL.eps,
    );
    let off = gradients_of(
        &|g: &mut Graph, v: &[NodeId]| {
            let s = g.square(v[0])?;
            g.mul_scalar(s, 1.05)
        },
        &[arg("x", &[6], x.clone())],
        &[],
        TOL.eps,
    );
    let (analytic_right, _) = &right[0];
    let (_, numeric_off) = &off[0];
    assert!(
        check_close(analytic_right, numeric_off, TOL.atol, TOL.rtol).is_err(),
        "a 5% error must fail the check"
    );
    assert!(check_close(analytic_right, &right[0].1, TOL.atol, TOL.rtol).is_ok());
    // And a step that is too small for f32 makes the numeric side unusable: the check must fail.
    let tiny = Tol { eps: 1e-6, ..TOL };
    let r = gradcheck_with(
        &|g: &mut Graph, v: &[NodeId]| g.tanh(v[0]),
        &[arg("x", &[3, 4], distinct(28, 12).iter().map(|v| v + 0.03).collect())],
        &[],
        tiny,
    );
    assert!(r.is_err(), "eps = 1e-6 in f32 should not pass: {r:?}");
}

/// The public checker passes a correct graph, restores the weights, and reports an element
/// whose secant and derivative disagree (ReLU at exactly 0: derivative 0, secant 1/2).
#[test]
fn the_public_gradcheck_passes_good_gradients_and_reports_bad_checks() {
    use kiln::gradcheck::{check, Config};
    use kiln::{Cpu, Init, ParamStore};
    let mut g = Graph::new();
    let w = g.param("w", [2, 3], Init::Uniform(-1.0, 1.0)).unwrap();
    let x = g.input("x", [3, 2]).unwrap();
    let m = g.matmul(w, x).unwrap();
    let t = g.sigmoid(m).unwrap();
    let l = g.mean_all(t).unwrap();
    let mut store = ParamStore::new(&Cpu, &g, 5).unwrap();
    let before = store.get("w").unwrap().data;
    let xs = [0.3, -1.2, 2.0, 0.7, -0.4, 1.1];
    let feeds = [("x", Feed::F32(&xs))];
    let ok = check(&g, &mut store, l, &feeds, Config::default()).unwrap();
    assert!(ok.passed(), "{ok}");
    assert_eq!(ok.checked, 6);
    assert_eq!(store.get("w").unwrap().data, before, "the weights are restored");
    // A kink inside the step: relu at exactly 0 is reported, naming the element.
    let mut g = Graph::new();
    let v = g.param("v", [3], Init::Zeros).unwrap();
    let r = g.relu(v).unwrap();
    let l = g.sum_all(r).unwrap();
    let mut s = ParamStore::new(&Cpu, &g, 0).unwrap();
    s.set("v", &[-1.0, 0.0, 1.0]).unwrap();
    let bad = check(&g, &mut s, l, &[], Config::default()).unwrap();
    assert_eq!(bad.mismatches.len(), 1, "{bad}");
    assert_eq!((bad.mismatches[0].param.as_str(), bad.mismatches[0].index), ("v", 1));
    assert!((bad.mismatches[0].numeric - 0.5).abs() < 1e-5, "{bad}");
}

#[test]
fn stop_gradient_treats_its_operand_as_data() {
    // f(x) = tanh(x) ⊙ stop(x). Its gradient must be that of tanh(x) ⊙ c with c a constant equal
    // to x — checked against finite differences of that expression — and not the derivative of
    // the whole function, which finite differences of f itself measure.
    let x = away_from_zero(30, 12);
    let stopped = gradients_of(
        &|g: &mut Graph, v: &[NodeId]| {
            let s = g.stop_gradient(v[0])?;
            let t = g.tanh(v[0])?;
            g.mul(t, s)
        },
        &[arg("x", &[4, 3], x.clone())],
        &[],
        TOL.eps,
    );
    let frozen = gradients_of(
        &|g: &mut Graph, v: &[NodeId]| {
            let c = g.input("c", [4, 3])?;
            let t = g.tanh(v[0])?;
            g.mul(t, c)
        },
        &[arg("x", &[4, 3], x.clone())],
        &[("c", Feed::F32(&x))],
        TOL.eps,
    );
    let (analytic, numeric_through_stop) = &stopped[0];
    let (_, numeric_frozen) = &frozen[0];
    assert_close(analytic, numeric_frozen, TOL.atol, TOL.rtol);
    assert!(
        check_close(analytic, numeric_through_stop, TOL.atol, TOL.rtol).is_err(),
        "the stopped path carries a real derivative that must be missing from the gradient"
    );
    // Only through the stop: no gradient at all.
    let mut g = Graph::new();
    let p = g.param("p", [3], kiln::Init::Zeros).unwrap();
    let s = g.stop_gradient(p).unwrap();
    let l = g.sum_all(s).unwrap();
    assert!(kiln::gradients(&mut g, l, &[p]).unwrap()[0].is_none());
}
