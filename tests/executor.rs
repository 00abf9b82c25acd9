//! The executor's contract: shared ParamStore, frozen parameters, buffer reuse, determinism,
//! batch-norm statistics, dropout, Bernoulli samples and masking noise, and errors for bad input —
//! each on every backend.

mod common;

use common::backend_test;
use kiln::{backward, loss, nn, Error, Feed, Graph, Init, Optimizer, ParamStore, Program, Training};

/// A small classifier: x (8, 5) → 16 → 3, with cross-entropy against labels.
fn classifier() -> (Graph, kiln::NodeId, kiln::NodeId) {
    let mut g = Graph::new();
    let x = g.input("x", [8, 5]).unwrap();
    let y = g.labels("y", [8], 3).unwrap();
    let l1 = nn::Linear::new(&mut g, "l1", 5, 16).unwrap();
    let l2 = nn::Linear::new(&mut g, "l2", 16, 3).unwrap();
    let h = l1.forward(&mut g, x).unwrap();
    let h = g.relu(h).unwrap();
    let logits = l2.forward(&mut g, h).unwrap();
    let loss = loss::cross_entropy(&mut g, logits, y).unwrap();
    (g, logits, loss)
}

fn batch() -> (Vec<f32>, Vec<u32>) {
    (common::values(1, 40, -1.0, 1.0), vec![0, 1, 2, 0, 1, 2, 0, 1])
}

backend_test!(fn train_and_eval_programs_share_one_param_store(dev) {
    let (mut g, logits, loss) = classifier();
    let grads = backward(&mut g, loss).unwrap();
    let mut store = ParamStore::new(dev, &g, 1).unwrap();
    let opt = Optimizer::adam(0.01);
    let mut train = Program::compile(&g, &mut store, &[loss], Some(Training::new(&grads, &opt))).unwrap();
    let mut eval = Program::compile(&g, &mut store, &[logits, loss], None).unwrap();
    let (x, y) = batch();
    let feeds = [("x", Feed::F32(&x)), ("y", Feed::Labels(&y))];
    let before = eval.run(&feeds).unwrap().scalar(loss).unwrap();
    for _ in 0..20 {
        train.run(&feeds).unwrap();
    }
    let after = eval.run(&feeds).unwrap().scalar(loss).unwrap();
    assert!(
        after < before * 0.8,
        "eval sees the trained weights: {before} → {after}"
    );
    assert_eq!(train.updates(), 20);
    // The eval program only needs x to compute logits... but it also fetches the loss, so y is required.
    assert!(matches!(
        eval.run(&[("x", Feed::F32(&x))]),
        Err(Error::MissingFeed { .. })
    ));
});

backend_test!(fn frozen_parameters_are_not_updated(dev) {
    let (mut g, _, loss) = classifier();
    g.set_trainable("l1.w", false).unwrap();
    g.set_trainable("l1.b", false).unwrap();
    let grads = backward(&mut g, loss).unwrap();
    assert!(grads.of(&g, g.param_node("l1.w").unwrap()).is_none());
    let mut store = ParamStore::new(dev, &g, 1).unwrap();
    let w1 = store.get("l1.w").unwrap();
    let w2 = store.get("l2.w").unwrap();
    let opt = Optimizer::sgd(0.1);
    let mut train = Program::compile(&g, &mut store, &[loss], Some(Training::new(&grads, &opt))).unwrap();
    let (x, y) = batch();
    train.run(&[("x", Feed::F32(&x)), ("y", Feed::Labels(&y))]).unwrap();
    assert_eq!(store.get("l1.w").unwrap(), w1);
    assert_ne!(store.get("l2.w").unwrap(), w2);
});

backend_test!(fn buffers_are_reused_by_liveness(dev) {
    // A chain of 40 element-wise ops on a 1000-element tensor needs two live buffers, not 40.
    let mut g = Graph::new();
    let x = g.input("x", [1000]).unwrap();
    let mut h = x;
    for i in 0..40 {
        h = if i % 2 == 0 {
            g.tanh(h).unwrap()
        } else {
            g.mul_scalar(h, 1.5).unwrap()
        };
    }
    let mut store = ParamStore::new(dev, &g, 0).unwrap();
    let unfused = kiln::CompileOptions { fusion: Some(false), ..Default::default() };
    let mut prog = Program::compile_with(&g, &mut store, &[h], None, &unfused).unwrap();
    assert_eq!(prog.kernel_count(), 40);
    // input + two ping-pong activations
    assert_eq!(prog.plan_bytes(), 3 * 1000 * 4);
    assert!(prog.peak_bytes() >= prog.plan_bytes());
    // Fused, the chain is one kernel computing the same values.
    let mut fused = Program::compile(&g, &mut store, &[h], None).unwrap();
    assert_eq!(fused.kernel_count(), 1);
    let xs: Vec<f32> = (0..1000).map(|i| (i as f32 / 500.0) - 1.0).collect();
    let a = prog.run(&[("x", Feed::F32(&xs))]).unwrap().get(h).unwrap().data.clone();
    let b = fused.run(&[("x", Feed::F32(&xs))]).unwrap().get(h).unwrap().data.clone();
    common::assert_close(&b, &a, 1e-6, 1e-5);
});

backend_test!(fn reshape_is_free_and_correct(dev) {
    let mut g = Graph::new();
    let x = g.input("x", [2, 6]).unwrap();
    let r = g.reshape(x, [3, 4]).unwrap();
    let t = g.transpose(r).unwrap();
    let mut store = ParamStore::new(dev, &g, 0).unwrap();
    let mut prog = Program::compile(&g, &mut store, &[r, t], None).unwrap();
    assert_eq!(prog.kernel_count(), 1, "only the transpose runs");
    let xs: Vec<f32> = (0..12).map(|v| v as f32).collect();
    let out = prog.run(&[("x", Feed::F32(&xs))]).unwrap();
    assert_eq!(out.get(r).unwrap().data, xs);
    assert_eq!(
        out.get(t).unwrap().data,
        vec![0., 4., 8., 1., 5., 9., 2., 6., 10., 3., 7., 11.]
    );
});

backend_test!(fn identical_runs_are_bit_identical(dev) {
    let run = || {
        let (mut g, _, loss) = classifier();
        let grads = backward(&mut g, loss).unwrap();
        let mut store = ParamStore::new(dev, &g, 7).unwrap();
        let opt = Optimizer::adam(0.01).clip_norm(1.0);
        let mut train = Program::compile(&g, &mut store, &[loss], Some(Training::new(&grads, &opt))).unwrap();
        let (x, y) = batch();
        (0..10)
            .map(|_| {
                train
                    .run(&[("x", Feed::F32(&x)), ("y", Feed::Labels(&y))])
                    .unwrap()
                    .scalar(loss)
                    .unwrap()
                    .to_bits()
            })
            .collect::<Vec<u32>>()
    };
    assert_eq!(run(), run());
});

backend_test!(fn gradient_shared_by_two_parameters_reaches_both(dev) {
    // loss = Σ(a + b): both gradients are the same node; the second is copied into its slot.
    let mut g = Graph::new();
    let a = g.param("a", [3], Init::Constant(1.0)).unwrap();
    let b = g.param("b", [3], Init::Constant(2.0)).unwrap();
    let s = g.add(a, b).unwrap();
    let loss = g.sum_all(s).unwrap();
    let grads = backward(&mut g, loss).unwrap();
    let mut store = ParamStore::new(dev, &g, 0).unwrap();
    let opt = Optimizer::sgd(0.5);
    let mut p = Program::compile(&g, &mut store, &[loss], Some(Training::new(&grads, &opt))).unwrap();
    p.run(&[]).unwrap();
    assert_eq!(store.get("a").unwrap().data, vec![0.5; 3]);
    assert_eq!(store.get("b").unwrap().data, vec![1.5; 3]);
});

backend_test!(fn bad_input_is_an_error_not_a_panic(dev) {
    let mut g = Graph::new();
    let x = g.input("x", [4, 3]).unwrap();
    let w = g.param("w", [4, 2], Init::Zeros).unwrap();
    // Shape mismatch: the message names the op, the node and both shapes.
    let e = g.matmul(x, w).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Shape { op: "matmul", .. }));
    assert!(
        msg.contains("matmul")
            && msg.contains("[4, 3]")
            && msg.contains("[4, 2]")
            && msg.contains("`x`")
            && msg.contains("`w`"),
        "{msg}"
    );
    let b = g.input("b", [5]).unwrap();
    assert!(matches!(g.add(x, b), Err(Error::Shape { op: "add", .. })));
    assert!(matches!(g.reshape(x, [5, 2]), Err(Error::Shape { .. })));
    assert!(matches!(g.sum(x, &[2], false), Err(Error::Shape { .. })));
    assert!(matches!(g.permute(x, &[0, 0]), Err(Error::Shape { .. })));
    assert!(matches!(g.slice(x, 0, 3, 9), Err(Error::Shape { .. })));
    assert!(matches!(g.param("w", [3, 3], Init::Zeros), Err(Error::Shape { .. })));
    assert!(matches!(g.clamp(x, 1.0, -1.0), Err(Error::Invalid { .. })));
    // Backward needs a scalar.
    assert!(matches!(
        kiln::backward(&mut g, x),
        Err(Error::Shape { op: "backward", .. })
    ));

    let y = g.labels("y", [4], 3).unwrap();
    let l = kiln::loss::cross_entropy(&mut g, x, y).unwrap();
    let mut store = ParamStore::new(dev, &g, 0).unwrap();
    let mut p = Program::compile(&g, &mut store, &[l], None).unwrap();
    let xs = vec![0.0; 12];
    assert!(matches!(
        p.run(&[("nope", Feed::F32(&xs))]),
        Err(Error::UnknownFeed { .. })
    ));
    assert!(matches!(
        p.run(&[("x", Feed::F32(&xs[..11])), ("y", Feed::Labels(&[0, 1, 2, 0]))]),
        Err(Error::FeedSize { .. })
    ));
    assert!(matches!(
        p.run(&[("x", Feed::F32(&xs))]),
        Err(Error::MissingFeed { .. })
    ));
    assert!(matches!(
        p.run(&[("x", Feed::F32(&xs)), ("y", Feed::Labels(&[0, 1, 3, 0]))]),
        Err(Error::Label { label: 3, .. })
    ));
    assert!(matches!(
        p.run(&[("x", Feed::Labels(&[0; 12])), ("y", Feed::Labels(&[0, 1, 2, 0]))]),
        Err(Error::Invalid { .. })
    ));
    let ok = p
        .run(&[("x", Feed::F32(&xs)), ("y", Feed::Labels(&[0, 1, 2, 0]))])
        .unwrap();
    assert!((ok.scalar(l).unwrap() - 3f32.ln()).abs() < 1e-6);
    assert!(ok.get(x).is_err(), "x was not fetched");
});

backend_test!(fn batch_norm_updates_running_statistics_only_when_training(dev) {
    let mut g = Graph::new();
    let x = g.input("x", [4, 2]).unwrap();
    let bn = nn::BatchNorm::new(&mut g, "bn", 2).unwrap();
    let y_train = bn.forward(&mut g, x, true).unwrap();
    let y_eval = bn.forward(&mut g, x, false).unwrap();
    let loss = g.sum_all(y_train).unwrap();
    let grads = backward(&mut g, loss).unwrap();
    let mut store = ParamStore::new(dev, &g, 0).unwrap();
    let opt = Optimizer::sgd(0.0);
    let mut train = Program::compile(&g, &mut store, &[y_train], Some(Training::new(&grads, &opt))).unwrap();
    let mut eval = Program::compile(&g, &mut store, &[y_eval], None).unwrap();
    // Column 0: 1, 2, 3, 4 (mean 2.5, unbiased var 5/3); column 1: all 10 (var 0).
    let xs = [1., 10., 2., 10., 3., 10., 4., 10.];
    eval.run(&[("x", Feed::F32(&xs))]).unwrap();
    assert_eq!(
        store.get("bn.running_mean").unwrap().data,
        vec![0.0, 0.0],
        "evaluation leaves the statistics alone"
    );
    let out = train.run(&[("x", Feed::F32(&xs))]).unwrap();
    common::assert_close(&store.get("bn.running_mean").unwrap().data, &[0.25, 1.0], 1e-6, 1e-6);
    common::assert_close(
        &store.get("bn.running_var").unwrap().data,
        &[0.9 + 0.1 * 5.0 / 3.0, 0.9],
        1e-6,
        1e-6,
    );
    // Training normalises with the batch statistics (biased variance 1.25 for column 0).
    let col0: Vec<f32> = out.get(y_train).unwrap().data.iter().step_by(2).copied().collect();
    let expect: Vec<f32> = [1., 2., 3., 4.]
        .iter()
        .map(|v: &f32| (v - 2.5) / (1.25f32 + 1e-5).sqrt())
        .collect();
    common::assert_close(&col0, &expect, 1e-5, 1e-5);
    // Evaluation normalises with the running statistics.
    let ev = eval.run(&[("x", Feed::F32(&xs))]).unwrap();
    let v0 = 0.9f32 + 0.1 * 5.0 / 3.0;
    common::assert_close(
        &ev.get(y_eval).unwrap().data[..1],
        &[(1.0 - 0.25) / (v0 + 1e-5).sqrt()],
        1e-5,
        1e-5,
    );
});

backend_test!(fn dropout_drops_the_right_fraction_with_a_fresh_mask_each_step(dev) {
    let n = 20_000;
    let mut g = Graph::new();
    let x = g.input("x", [n]).unwrap();
    let w = g.param("w", [1], kiln::Init::Constant(1.0)).unwrap();
    let xw = g.mul(x, w).unwrap();
    let y = g.dropout(xw, 0.3).unwrap();
    let loss = g.sum_all(y).unwrap();
    let grads = backward(&mut g, loss).unwrap();
    let mut store = ParamStore::new(dev, &g, 0).unwrap();
    let opt = Optimizer::sgd(0.0);
    let mut train = Program::compile(&g, &mut store, &[y], Some(Training::new(&grads, &opt))).unwrap();
    let ones = vec![1.0f32; n];
    let a = train
        .run(&[("x", Feed::F32(&ones))])
        .unwrap()
        .get(y)
        .unwrap()
        .data
        .clone();
    let b = train
        .run(&[("x", Feed::F32(&ones))])
        .unwrap()
        .get(y)
        .unwrap()
        .data
        .clone();
    let dropped = a.iter().filter(|&&v| v == 0.0).count() as f32 / n as f32;
    let mean = a.iter().sum::<f32>() / n as f32;
    // Binomial(20000, 0.3): standard deviation of the fraction is 0.0032; 0.015 is ~5 sigma.
    assert!((dropped - 0.3).abs() < 0.015, "dropped fraction {dropped}");
    assert!((mean - 1.0).abs() < 0.03, "inverted dropout keeps the mean: {mean}");
    assert!(a.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-6));
    assert_ne!(a, b, "each step draws a new mask");
});

backend_test!(fn bernoulli_samples_have_their_probabilities_and_change_with_step_and_seed(dev) {
    // 7 groups of 4000 elements, each group with one probability, two of them outside [0, 1].
    let probs = [0.0f32, 0.1, 0.5, 0.9, 1.0, -0.5, 1.5];
    let per = 4000;
    let p: Vec<f32> = probs.iter().flat_map(|&q| std::iter::repeat_n(q, per)).collect();
    let mut g = Graph::new();
    let pin = g.input("p", [p.len()]).unwrap();
    let w = g.param("w", [1], Init::Constant(1.0)).unwrap();
    let pw = g.mul(pin, w).unwrap();
    let s = g.bernoulli(pw).unwrap();
    let loss = g.sum_all(s).unwrap();
    let mut store = ParamStore::new(dev, &g, 0).unwrap();
    let mut eval = Program::compile(&g, &mut store, &[s, loss], None).unwrap();
    let feeds = [("p", Feed::F32(&p))];
    let a = eval.run(&feeds).unwrap().get(s).unwrap().data.clone();
    assert!(a.iter().all(|&v| v == 0.0 || v == 1.0), "samples are 0 or 1");
    for (k, &q) in probs.iter().enumerate() {
        let mean = a[k * per..(k + 1) * per].iter().sum::<f32>() / per as f32;
        let expect = q.clamp(0.0, 1.0);
        // Binomial(4000, q): sd of the mean ≤ 0.0079; 0.04 is 5 sigma at q = 0.5. The ends are exact.
        assert!((mean - expect).abs() < 0.04, "p = {q}: mean {mean}");
        if expect == 0.0 || expect == 1.0 {
            assert_eq!(mean, expect, "p = {q} is certain");
        }
    }
    // An inference program draws the same samples until the seed changes.
    let again = eval.run(&feeds).unwrap().get(s).unwrap().data.clone();
    assert_eq!(a, again, "same seed, same step: same samples");
    eval.set_seed(1);
    let reseeded = eval.run(&feeds).unwrap().get(s).unwrap().data.clone();
    assert_ne!(a, reseeded, "another seed draws other samples");
    // No gradient flows through a sample: the loss does not depend on w.
    assert!(kiln::gradients(&mut g, loss, &[w]).unwrap()[0].is_none());
});

backend_test!(fn masking_noise_zeroes_the_right_fraction_and_keeps_the_rest(dev) {
    let n = 20_000;
    let mut g = Graph::new();
    let x = g.input("x", [n]).unwrap();
    let w = g.param("w", [1], Init::Constant(1.0)).unwrap();
    let xw = g.mul(x, w).unwrap();
    let y = g.masking_noise(xw, 0.25).unwrap();
    let loss = g.sum_all(y).unwrap();
    let grads = backward(&mut g, loss).unwrap();
    let mut store = ParamStore::new(dev, &g, 0).unwrap();
    let opt = Optimizer::sgd(0.0);
    let mut train = Program::compile(&g, &mut store, &[y], Some(Training::new(&grads, &opt))).unwrap();
    let xs = common::values(3, n, 0.5, 1.5);
    let a = train.run(&[("x", Feed::F32(&xs))]).unwrap().get(y).unwrap().data.clone();
    let b = train.run(&[("x", Feed::F32(&xs))]).unwrap().get(y).unwrap().data.clone();
    let masked = a.iter().filter(|&&v| v == 0.0).count() as f32 / n as f32;
    // Binomial(20000, 0.25): sd 0.0031; 0.015 is ~5 sigma.
    assert!((masked - 0.25).abs() < 0.015, "masked fraction {masked}");
    assert!(
        a.iter().zip(&xs).all(|(&v, &x)| v == 0.0 || v == x),
        "kept elements are unchanged (no rescaling)"
    );
    assert_ne!(a, b, "each step draws a new mask");
    assert!(g.masking_noise(x, 1.0).is_err() && g.masking_noise(x, -0.1).is_err());
});
