//! Mixed precision: f16 activations through the layers, f32 master weights, dynamic loss
//! scaling that skips overflowing updates and backs off, grows after clean ones, and a model
//! that learns like its f32 twin while holding fewer bytes.

mod common;

use common::*;
use kiln::shape::DType;
use kiln::train::{FitConfig, Precision, Trainer};
use kiln::{
    backward, backward_scaled, loss, nn, Cpu, Feed, Graph, LossScaling, NodeId, Optimizer, ParamStore, Program,
    Training,
};

/// x (16, 1, 6, 6) cast to f16 → conv → ReLU → maxpool → linear → loss in f32.
fn mixed_cnn() -> (Graph, NodeId, NodeId) {
    let mut g = Graph::new();
    let x = g.input("x", [16, 1, 6, 6]).unwrap();
    let y = g.labels("y", [16], 4).unwrap();
    let xh = g.cast(x, DType::F16).unwrap();
    let h = nn::Conv2d::new(&mut g, "conv", 1, 4, 3, 1, 1)
        .unwrap()
        .forward(&mut g, xh)
        .unwrap();
    assert_eq!(g.dtype(h), DType::F16, "the layer follows its input's precision");
    let h = g.relu(h).unwrap();
    let h = g.max_pool2d(h, [2, 2], [2, 2], [0, 0]).unwrap();
    let h = nn::flatten(&mut g, h).unwrap();
    let logits = nn::Linear::new(&mut g, "fc", 36, 4)
        .unwrap()
        .forward(&mut g, h)
        .unwrap();
    assert_eq!(g.dtype(logits), DType::F16);
    let l = loss::cross_entropy(&mut g, logits, y).unwrap();
    assert_eq!(g.dtype(l), DType::F32, "losses are computed in f32");
    (g, logits, l)
}

fn batch() -> (Vec<f32>, Vec<u32>) {
    (values(3, 16 * 36, -1.0, 1.0), (0..16).map(|i| (i % 4) as u32).collect())
}

#[test]
fn overflowing_updates_are_skipped_and_the_scale_backs_off_then_grows() {
    let (mut g, _, l) = mixed_cnn();
    let grads = backward_scaled(&mut g, l).unwrap();
    assert!(grads.loss_scale.is_some());
    for (pi, gn) in &grads.params {
        assert_eq!(g.dtype(*gn), DType::F32, "gradient of {} is f32", g.params()[*pi].name);
    }
    let mut store = ParamStore::new(&Cpu, &g, 2).unwrap();
    let opt = Optimizer::adam(1e-2);
    // 2^40 overflows f16 (max 65504) in every gradient: the first updates must be skipped.
    let scaling = LossScaling {
        init: (2f32).powi(40),
        factor: 2.0,
        growth_interval: 3,
    };
    let mut p = Program::compile(
        &g,
        &mut store,
        &[l],
        Some(Training::new(&grads, &opt).loss_scaling(scaling)),
    )
    .unwrap();
    let (x, y) = batch();
    let w0 = store.get("conv.w").unwrap().data;
    let mut scales = Vec::new();
    for _ in 0..40 {
        p.run(&[("x", Feed::F32(&x)), ("y", Feed::Labels(&y))])
            .expect("overflow is not an error");
        scales.push(p.loss_scale().unwrap());
        if p.updates() == 0 {
            assert_eq!(store.get("conv.w").unwrap().data, w0, "skipped updates change nothing");
        }
    }
    let skipped = p.skipped_updates();
    assert!(
        skipped >= 20,
        "2^40 needs many halvings before gradients fit f16: {skipped} skipped"
    );
    assert_eq!(p.updates() + skipped, 40);
    assert_ne!(
        store.get("conv.w").unwrap().data,
        w0,
        "updates were applied once the scale fit"
    );
    // Backs off by halves, and after 3 clean updates in a row the scale doubles.
    assert!(scales
        .windows(2)
        .all(|w| w[1] == w[0] / 2.0 || w[1] == w[0] * 2.0 || w[1] == w[0]));
    assert!(
        scales.windows(2).any(|w| w[1] == w[0] * 2.0),
        "the scale grew: {scales:?}"
    );
    let st = store.loss_scale_state().unwrap();
    assert_eq!(st.scale, *scales.last().unwrap());
    assert_eq!(st.skipped, skipped);
}

#[test]
fn non_finite_values_that_no_scale_explains_are_errors() {
    // A NaN pixel behind a ReLU: the loss stays finite (ReLU maps NaN to 0) but the weight
    // gradient is NaN at every scale. Updates are skipped while the scale backs off, and once
    // it passes the floor the run fails; the weights never change.
    let (mut g, _, l) = mixed_cnn();
    let grads = backward_scaled(&mut g, l).unwrap();
    let mut store = ParamStore::new(&Cpu, &g, 2).unwrap();
    let opt = Optimizer::sgd(0.1);
    let scaling = LossScaling {
        init: 1.0 / 1_048_576.0,
        ..LossScaling::default()
    };
    let mut p = Program::compile(
        &g,
        &mut store,
        &[l],
        Some(Training::new(&grads, &opt).loss_scaling(scaling)),
    )
    .unwrap();
    let (mut x, y) = batch();
    x[5] = f32::NAN;
    let w0 = store.get("conv.w").unwrap().data;
    let mut results = Vec::new();
    for _ in 0..6 {
        results.push(p.run(&[("x", Feed::F32(&x)), ("y", Feed::Labels(&y))]).map(|_| ()));
    }
    assert!(results[..4].iter().all(|r| r.is_ok()), "{results:?}");
    assert!(matches!(results[4], Err(kiln::Error::NonFinite(_))), "{results:?}");
    assert_eq!(store.get("conv.w").unwrap().data, w0);
    assert_eq!(p.updates(), 0);

    // A NaN that reaches the loss is an error at once.
    let mut g = Graph::new();
    let x = g.input("x", [4, 3]).unwrap();
    let y = g.labels("y", [4], 2).unwrap();
    let xh = g.cast(x, DType::F16).unwrap();
    let logits = nn::Linear::new(&mut g, "fc", 3, 2)
        .unwrap()
        .forward(&mut g, xh)
        .unwrap();
    let l = loss::cross_entropy(&mut g, logits, y).unwrap();
    let grads = backward_scaled(&mut g, l).unwrap();
    let mut store = ParamStore::new(&Cpu, &g, 2).unwrap();
    let mut p = Program::compile(&g, &mut store, &[l], Some(Training::new(&grads, &opt))).unwrap();
    let xs = [0.5, f32::NAN, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];
    let e = p
        .run(&[("x", Feed::F32(&xs)), ("y", Feed::Labels(&[0, 1, 0, 1]))])
        .unwrap_err();
    assert!(e.to_string().contains("loss is NaN"), "{e}");
    assert_eq!(p.skipped_updates(), 0);
}

#[test]
fn the_scale_cancels_exactly_for_a_power_of_two() {
    // With f32 activations, scaling by a power of two is exact: one scaled step equals one
    // unscaled step bit for bit (SGD, so the update is linear in the gradient).
    let build = |scaled: bool| {
        let mut g = Graph::new();
        let x = g.input("x", [8, 5]).unwrap();
        let y = g.labels("y", [8], 3).unwrap();
        let h = nn::Linear::new(&mut g, "l1", 5, 7).unwrap().forward(&mut g, x).unwrap();
        let h = g.tanh(h).unwrap();
        let logits = nn::Linear::new(&mut g, "l2", 7, 3).unwrap().forward(&mut g, h).unwrap();
        let l = loss::cross_entropy(&mut g, logits, y).unwrap();
        let grads = if scaled {
            backward_scaled(&mut g, l)
        } else {
            backward(&mut g, l)
        }
        .unwrap();
        (g, l, grads)
    };
    let xs = values(4, 40, -1.0, 1.0);
    let ys = [0, 1, 2, 0, 1, 2, 0, 1];
    let opt = Optimizer::sgd(0.5);
    let mut weights = Vec::new();
    for scaled in [false, true] {
        let (g, l, grads) = build(scaled);
        let mut s = ParamStore::new(&Cpu, &g, 9).unwrap();
        let mut p = Program::compile(&g, &mut s, &[l], Some(Training::new(&grads, &opt))).unwrap();
        for _ in 0..3 {
            p.run(&[("x", Feed::F32(&xs)), ("y", Feed::Labels(&ys))]).unwrap();
        }
        weights.push(s.get("l1.w").unwrap().data);
    }
    assert_eq!(weights[0], weights[1]);
}

#[test]
fn mixed_precision_lenet_learns_like_f32_with_fewer_bytes() {
    let data = kiln::data::load_mnist(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist")))
        .unwrap()
        .0
        .take(1280);
    let (mut train, mut test) = data.split(256, 1).unwrap();
    let (m, sd) = train.stats();
    train.normalize(m, sd);
    test.normalize(m, sd);
    let mut acc = Vec::new();
    let mut peak = Vec::new();
    for precision in [Precision::F32, Precision::Mixed] {
        let opt = Optimizer::adam(1e-3);
        let mut t = Trainer::classifier_with_precision(
            &Cpu,
            &train.sample_shape,
            10,
            32,
            &|g, x, _| nn::lenet5(g, x),
            None,
            &opt,
            1,
            precision,
        )
        .unwrap();
        let cfg = FitConfig {
            epochs: 2,
            seed: 1,
            patience: None,
            progress: false,
            ..Default::default()
        };
        let h = t.fit(&train, None, &cfg).unwrap();
        if precision == Precision::Mixed {
            assert!(h.loss_scale.is_some());
        }
        acc.push(t.evaluate(&test).unwrap().accuracy);
        peak.push(t.peak_bytes());
    }
    assert!(acc[0] > 0.7 && acc[1] > 0.7, "both learn: {acc:?}");
    assert!(
        (acc[0] - acc[1]).abs() < 0.05,
        "mixed within 5 points of f32 on 256 images: {acc:?}"
    );
    assert!(peak[1] < peak[0] * 7 / 10, "f16 activations: {peak:?} bytes");
}

#[test]
fn the_loss_scale_never_grows_past_what_its_seed_holds() {
    // An f32 model and loss: growth every clean update by 2^10 from 2^100 must stop below
    // f32's largest value instead of reaching ∞ (after which every update would be skipped).
    let mut g = Graph::new();
    let x = g.input("x", [4, 3]).unwrap();
    let y = g.labels("y", [4], 2).unwrap();
    let logits = nn::Linear::new(&mut g, "fc", 3, 2).unwrap().forward(&mut g, x).unwrap();
    let l = loss::cross_entropy(&mut g, logits, y).unwrap();
    let grads = backward_scaled(&mut g, l).unwrap();
    let mut store = ParamStore::new(&Cpu, &g, 2).unwrap();
    let opt = Optimizer::sgd(1e-3);
    let scaling = LossScaling {
        init: 2f32.powi(100),
        factor: 1024.0,
        growth_interval: 1,
    };
    let mut p = Program::compile(
        &g,
        &mut store,
        &[l],
        Some(Training::new(&grads, &opt).loss_scaling(scaling)),
    )
    .unwrap();
    let xs = values(6, 12, -1.0, 1.0);
    for _ in 0..6 {
        p.run(&[("x", Feed::F32(&xs)), ("y", Feed::Labels(&[0, 1, 0, 1]))])
            .unwrap();
    }
    let s = p.loss_scale().unwrap();
    assert!(s.is_finite() && s == 2f32.powi(120), "scale {s}");
}
