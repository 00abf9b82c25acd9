//! The training step's contracts, on the CPU and on wgpu: gradients and update as separate
//! steps (accumulation equals one larger batch), nothing non-finite ever reaches the weights,
//! ids from another graph are errors, the memory plan refuses what cannot fit before
//! allocating, the plan prints, and a run resumes exactly from the ParamStore's state.

mod common;

use common::*;
use kiln::{
    backward, loss, nn, Backend, CompileOptions, Cpu, Error, Feed, Graph, NodeId, Optimizer, ParamStore, Program,
    Training,
};

/// A small CNN: x (n, 1, 6, 6) → conv 3×3 (3 ch) → ReLU → [dropout] → flatten → linear 5.
fn cnn(n: usize, dropout: f32) -> (Graph, NodeId, NodeId) {
    let mut g = Graph::new();
    let x = g.input("x", [n, 1, 6, 6]).unwrap();
    let y = g.labels("y", [n], 5).unwrap();
    let h = nn::Conv2d::new(&mut g, "conv1", 1, 3, 3, 1, 0)
        .unwrap()
        .forward(&mut g, x)
        .unwrap();
    let h = g.relu(h).unwrap();
    let h = if dropout > 0.0 {
        g.dropout(h, dropout).unwrap()
    } else {
        h
    };
    let h = nn::flatten(&mut g, h).unwrap();
    let logits = nn::Linear::new(&mut g, "fc", 48, 5)
        .unwrap()
        .forward(&mut g, h)
        .unwrap();
    let l = loss::cross_entropy(&mut g, logits, y).unwrap();
    (g, logits, l)
}

fn data(n: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let x = values(seed, n * 36, -1.0, 1.0);
    let y = (0..n).map(|i| ((i * 7 + seed as usize) % 5) as u32).collect();
    (x, y)
}

/// Every parameter's values, in store order.
fn weights<B: Backend>(s: &ParamStore<B>) -> Vec<Vec<f32>> {
    s.entries().iter().map(|e| s.get(&e.name).unwrap().data).collect()
}

fn nan_gradient_skips_the_update<B: Backend>(b: &B) {
    let (mut g, _, l) = cnn(4, 0.0);
    let grads = backward(&mut g, l).unwrap();
    let mut store = ParamStore::new(b, &g, 3).unwrap();
    let opt = Optimizer::adam(1e-2);
    let mut p = Program::compile(&g, &mut store, &[l], Some(Training::new(&grads, &opt))).unwrap();
    let (x, y) = data(4, 1);
    for _ in 0..2 {
        p.run(&[("x", Feed::F32(&x)), ("y", Feed::Labels(&y))]).unwrap();
    }
    let (w, m, v) = (
        weights(&store),
        store.read_state(0).unwrap(),
        store.read_state(1).unwrap(),
    );
    // One NaN pixel behind a ReLU: without the check every conv1 weight would become NaN.
    let mut bad = x.clone();
    bad[7] = f32::NAN;
    let err = p
        .run(&[("x", Feed::F32(&bad)), ("y", Feed::Labels(&y))])
        .expect_err("a NaN gradient must be an error");
    let msg = err.to_string();
    assert!(matches!(err, Error::NonFinite(_)), "{msg}");
    assert!(msg.contains("update 3") && msg.contains("conv1.w"), "{msg}");
    assert_eq!(weights(&store), w, "weights unchanged");
    assert_eq!(store.read_state(0).unwrap(), m, "first moment unchanged");
    assert_eq!(store.read_state(1).unwrap(), v, "second moment unchanged");
    assert_eq!(store.updates(), 2, "the skipped update is not counted");
    // An infinite input is refused the same way.
    let mut inf = x.clone();
    inf[0] = f32::INFINITY;
    assert!(matches!(
        p.run(&[("x", Feed::F32(&inf)), ("y", Feed::Labels(&y))]),
        Err(Error::NonFinite(_))
    ));
    assert_eq!(weights(&store), w);
    // The next clean step is the one a run that never saw the NaN would take.
    p.run(&[("x", Feed::F32(&x)), ("y", Feed::Labels(&y))]).unwrap();
    let (mut g2, _, l2) = cnn(4, 0.0);
    let grads2 = backward(&mut g2, l2).unwrap();
    let mut clean = ParamStore::new(b, &g2, 3).unwrap();
    let mut q = Program::compile(&g2, &mut clean, &[l2], Some(Training::new(&grads2, &opt))).unwrap();
    for _ in 0..3 {
        q.run(&[("x", Feed::F32(&x)), ("y", Feed::Labels(&y))]).unwrap();
    }
    assert_eq!(
        weights(&store),
        weights(&clean),
        "bit-identical to a run without the NaN step"
    );
}

#[test]
fn nan_gradient_skips_the_update_cpu() {
    nan_gradient_skips_the_update(&Cpu);
}

#[test]
fn nan_gradient_skips_the_update_gpu() {
    let Some(gpu) = gpu() else { return };
    nan_gradient_skips_the_update(&gpu);
}

/// `k` micro-batches of `n` with `accumulate(k)` against one batch of `k·n`, over two updates.
fn accumulation_equals_a_larger_batch<B: Backend>(b: &B) {
    let (n, k) = (5, 4);
    let (x, y) = data(n * k, 2);
    let opt = Optimizer::momentum(0.1, 0.9);
    let (mut g, _, l) = cnn(n * k, 0.0);
    let grads = backward(&mut g, l).unwrap();
    let mut big = ParamStore::new(b, &g, 4).unwrap();
    let mut p = Program::compile(&g, &mut big, &[l], Some(Training::new(&grads, &opt))).unwrap();
    for _ in 0..2 {
        p.run(&[("x", Feed::F32(&x)), ("y", Feed::Labels(&y))]).unwrap();
    }
    let (mut g2, _, l2) = cnn(n, 0.0);
    let grads2 = backward(&mut g2, l2).unwrap();
    let mut small = ParamStore::new(b, &g2, 4).unwrap();
    let w0 = weights(&small);
    let mut q = Program::compile(&g2, &mut small, &[l2], Some(Training::new(&grads2, &opt).accumulate(k))).unwrap();
    for update in 0..2 {
        for i in 0..k {
            let xs = &x[i * n * 36..(i + 1) * n * 36];
            let ys = &y[i * n..(i + 1) * n];
            q.run(&[("x", Feed::F32(xs)), ("y", Feed::Labels(ys))]).unwrap();
            let done = update * k + i + 1;
            assert_eq!(small.updates() as usize, done / k, "an update every {k} runs");
            if update == 0 && i + 1 < k {
                assert_eq!(weights(&small), w0, "no update before the {k}th micro-batch");
            }
        }
    }
    for (a, e) in weights(&small).iter().zip(weights(&big)) {
        assert_close(a, &e, 1e-6, 1e-5);
    }
    for (a, e) in small.read_state(0).unwrap().iter().zip(big.read_state(0).unwrap()) {
        assert!((a - e).abs() <= 1e-6 + 1e-5 * e.abs(), "momentum {a} vs {e}");
    }
}

#[test]
fn accumulation_equals_a_larger_batch_cpu() {
    accumulation_equals_a_larger_batch(&Cpu);
}

#[test]
fn accumulation_equals_a_larger_batch_gpu() {
    let Some(gpu) = gpu() else { return };
    accumulation_equals_a_larger_batch(&gpu);
}

/// `compute_gradients` then `apply_update` is exactly `run`; the gradients are readable between.
fn gradients_without_update<B: Backend>(b: &B) {
    let opt = Optimizer::adam(1e-2);
    let (x, y) = data(4, 5);
    let feeds = [("x", Feed::F32(&x)), ("y", Feed::Labels(&y))];
    let build = || {
        let (mut g, _, l) = cnn(4, 0.3);
        let grads = backward(&mut g, l).unwrap();
        (g, l, grads)
    };
    let (g, l, grads) = build();
    let mut s1 = ParamStore::new(b, &g, 6).unwrap();
    let mut p1 = Program::compile(&g, &mut s1, &[l], Some(Training::new(&grads, &opt))).unwrap();
    p1.set_seed(11);
    let (g2, l2, grads2) = build();
    let mut s2 = ParamStore::new(b, &g2, 6).unwrap();
    let mut p2 = Program::compile(&g2, &mut s2, &[l2], Some(Training::new(&grads2, &opt))).unwrap();
    p2.set_seed(11);
    assert!(
        matches!(p2.apply_update(), Err(Error::Invalid { .. })),
        "nothing to apply yet"
    );
    for _ in 0..3 {
        let a = p1.run(&feeds).unwrap().scalar(l).unwrap();
        let w = weights(&s2);
        let b2 = p2.compute_gradients(&feeds).unwrap().scalar(l2).unwrap();
        assert_eq!(a.to_bits(), b2.to_bits());
        assert_eq!(weights(&s2), w, "compute_gradients applies nothing");
        assert!(s2.gradient("conv1.w").unwrap().data.iter().any(|&v| v != 0.0));
        p2.apply_update().unwrap();
        assert_eq!(weights(&s1), weights(&s2));
    }
    assert_eq!(s2.updates(), 3);
}

#[test]
fn gradients_without_update_cpu() {
    gradients_without_update(&Cpu);
}

#[test]
fn gradients_without_update_gpu() {
    let Some(gpu) = gpu() else { return };
    gradients_without_update(&gpu);
}

/// Train 4 steps straight, or 2 steps, copy everything the store exposes into a fresh store,
/// and 2 more steps there: the weights are bit-identical (dropout included).
fn resume_from_store_state<B: Backend>(b: &B) {
    let opt = Optimizer::adam(1e-2);
    let batches: Vec<(Vec<f32>, Vec<u32>)> = (0..4).map(|i| data(4, 10 + i)).collect();
    let build = |seed: u64| {
        let (mut g, _, l) = cnn(4, 0.25);
        let grads = backward(&mut g, l).unwrap();
        let mut s = ParamStore::new(b, &g, seed).unwrap();
        let mut p = Program::compile(&g, &mut s, &[l], Some(Training::new(&grads, &opt))).unwrap();
        p.set_seed(21);
        (s, p)
    };
    let step = |p: &mut Program<B>, i: usize| {
        let (x, y) = &batches[i];
        p.run(&[("x", Feed::F32(x)), ("y", Feed::Labels(y))]).unwrap();
    };
    let (straight, mut p) = build(8);
    for i in 0..4 {
        step(&mut p, i);
    }
    let (first, mut p) = build(8);
    step(&mut p, 0);
    step(&mut p, 1);
    // A fresh store with other initial weights, restored from `first`.
    let (mut second, _) = build(99);
    for e in first.entries() {
        second.set(&e.name, &first.get(&e.name).unwrap().data).unwrap();
    }
    for slot in 0..first.state_slots() {
        second.write_state(slot, &first.read_state(slot).unwrap()).unwrap();
    }
    second.set_updates(first.updates());
    let (mut g, _, l) = cnn(4, 0.25);
    let grads = backward(&mut g, l).unwrap();
    let mut p = Program::compile(&g, &mut second, &[l], Some(Training::new(&grads, &opt))).unwrap();
    p.set_seed(21);
    step(&mut p, 2);
    step(&mut p, 3);
    assert_eq!(weights(&second), weights(&straight));
    assert_eq!(second.read_state(1).unwrap(), straight.read_state(1).unwrap());
}

#[test]
fn resume_from_store_state_cpu() {
    resume_from_store_state(&Cpu);
}

#[test]
fn resume_from_store_state_gpu() {
    let Some(gpu) = gpu() else { return };
    resume_from_store_state(&gpu);
}

#[test]
fn ids_from_another_graph_are_errors() {
    let (mut g, logits, l) = cnn(2, 0.0);
    let (mut other, other_logits, other_l) = cnn(2, 0.0);
    assert_eq!(logits.index(), other_logits.index(), "same position in both graphs");
    // Builders.
    assert!(matches!(g.relu(other_logits), Err(Error::UnknownNode(_))));
    // Backward.
    assert!(matches!(backward(&mut g, other_l), Err(Error::UnknownNode(_))));
    let grads = backward(&mut g, l).unwrap();
    let other_grads = backward(&mut other, other_l).unwrap();
    let mut store = ParamStore::new(&Cpu, &g, 1).unwrap();
    // A fetch.
    let e = Program::compile(&g, &mut store, &[other_logits], None)
        .err()
        .expect("foreign fetch");
    assert!(matches!(e, Error::UnknownNode(_)), "{e}");
    // Gradients.
    let opt = Optimizer::sgd(0.1);
    let e = Program::compile(&g, &mut store, &[l], Some(Training::new(&other_grads, &opt)))
        .err()
        .expect("foreign gradients");
    assert!(e.to_string().contains("another graph"), "{e}");
    // Outputs: a foreign id is not what this program fetched, whatever its position.
    let mut p = Program::compile(&g, &mut store, &[logits], Some(Training::new(&grads, &opt))).unwrap();
    let (x, y) = data(2, 1);
    let out = p.run(&[("x", Feed::F32(&x)), ("y", Feed::Labels(&y))]).unwrap();
    assert!(out.get(logits).is_ok());
    assert!(matches!(out.get(other_logits), Err(Error::UnknownNode(_))));
    // A clone keeps the identity: its ids stay valid.
    let clone = g.clone();
    assert!(clone.contains(logits) && !clone.contains(other_logits));
}

#[test]
fn a_loss_without_trainable_parameters_is_an_error_at_compile() {
    let (mut g, _, l) = cnn(2, 0.0);
    for p in ["conv1.w", "conv1.b", "fc.w", "fc.b"] {
        g.set_trainable(p, false).unwrap();
    }
    let grads = backward(&mut g, l).unwrap();
    let mut store = ParamStore::new(&Cpu, &g, 1).unwrap();
    let opt = Optimizer::sgd(0.1);
    let e = Program::compile(&g, &mut store, &[l], Some(Training::new(&grads, &opt)))
        .err()
        .expect("nothing to train");
    assert!(e.to_string().contains("no trainable parameter"), "{e}");
    let e = Program::compile(&g, &mut store, &[l], Some(Training::new(&grads, &opt).accumulate(0)))
        .err()
        .expect("accumulate 0");
    assert!(matches!(e, Error::Invalid { .. }), "{e}");
}

/// An oversized program fails at compile, before allocating, naming its largest tensors.
fn oversized_plan_is_refused<B: Backend>(b: &B, batch: usize, budget: Option<usize>) {
    let (mut g, _, l) = cnn(batch, 0.0);
    let grads = backward(&mut g, l).unwrap();
    let mut store = ParamStore::new(b, &g, 1).unwrap();
    let w = weights(&store);
    let opt = Optimizer::sgd(0.1);
    let t = std::time::Instant::now();
    let e = Program::compile_with(
        &g,
        &mut store,
        &[l],
        Some(Training::new(&grads, &opt)),
        &CompileOptions {
            memory_budget: budget,
            ..Default::default()
        },
    )
    .err()
    .expect("the plan does not fit");
    let msg = e.to_string();
    assert!(matches!(e, Error::OutOfMemory(_)), "{msg}");
    assert!(
        msg.contains(&format!("[{batch}, 3, 4, 4]")) || msg.contains(&format!("[{batch}, 1, 6, 6]")),
        "{msg}"
    );
    assert!(msg.contains("smaller batch"), "{msg}");
    eprintln!("refused in {:?}: {msg}", t.elapsed());
    assert_eq!(weights(&store), w, "the store is untouched");
}

#[test]
fn oversized_plan_is_refused_cpu() {
    // 64 samples need about 30 KB of activations: a 16 KB budget is too small.
    oversized_plan_is_refused(&Cpu, 64, Some(16 * 1024));
}

#[test]
fn oversized_plan_is_refused_gpu() {
    let Some(gpu) = gpu() else { return };
    // 4M samples of 6×6 are 576 MB per input buffer: over every adapter's binding limit
    // (lavapipe's is 128 MiB), refused by the plan rather than by a failed allocation.
    oversized_plan_is_refused(&gpu, 4 << 20, None);
}

#[test]
fn the_plan_prints_every_kernel_and_the_peak() {
    let (mut g, logits, l) = cnn(4, 0.0);
    let grads = backward(&mut g, l).unwrap();
    let mut store = ParamStore::new(&Cpu, &g, 1).unwrap();
    let opt = Optimizer::adam(1e-3);
    let train = Program::compile(&g, &mut store, &[l], Some(Training::new(&grads, &opt).accumulate(2))).unwrap();
    let eval = Program::compile(&g, &mut store, &[logits], None).unwrap();
    let plan = train.plan();
    assert_eq!(plan.kernel_count(), train.kernel_count());
    assert_eq!(plan.peak_bytes(), train.peak_bytes());
    assert_eq!(plan.accumulate, 2);
    let text = plan.to_string();
    for want in [
        "im2col",
        "matmul",
        "softmax_cross_entropy",
        "grad_stats",
        "adam",
        "add_into",
        "per update",
        "`conv1.w`",
        "[4, 1, 6, 6]",
    ] {
        assert!(text.contains(want), "plan lacks `{want}`:\n{text}");
    }
    assert!(eval.plan().steps.len() < plan.steps.len());
    assert!(!eval.plan().to_string().contains("per update"));
    assert!(eval.peak_bytes() < train.peak_bytes());
}

#[test]
#[should_panic(expected = "belongs to graph")]
fn graph_accessors_refuse_ids_from_another_graph() {
    let (g, _, _) = cnn(2, 0.0);
    let (_, other_logits, _) = cnn(2, 0.0);
    // The same position exists in `g`; answering with its shape would be silently wrong.
    let _ = g.shape(other_logits);
}

/// An accumulation window starts from zero even when another program on the same store left
/// its gradients in the store's gradient buffer.
fn accumulation_ignores_other_programs_gradients<B: Backend>(b: &B) {
    let opt = Optimizer::sgd(0.1);
    let (x0, y0) = data(4, 30);
    let (x1, y1) = data(4, 31);
    let (x2, y2) = data(4, 32);
    let build = |store_seed: u64| {
        let (mut g, _, l) = cnn(4, 0.0);
        let grads = backward(&mut g, l).unwrap();
        let s = ParamStore::new(b, &g, store_seed).unwrap();
        (g, l, grads, s)
    };
    let (g, l, grads, mut shared) = build(7);
    let mut a = Program::compile(&g, &mut shared, &[l], Some(Training::new(&grads, &opt))).unwrap();
    a.compute_gradients(&[("x", Feed::F32(&x0)), ("y", Feed::Labels(&y0))])
        .unwrap();
    let mut bprog = Program::compile(&g, &mut shared, &[l], Some(Training::new(&grads, &opt).accumulate(2))).unwrap();
    let (g2, l2, grads2, mut fresh) = build(7);
    let mut c = Program::compile(&g2, &mut fresh, &[l2], Some(Training::new(&grads2, &opt).accumulate(2))).unwrap();
    for (x, y) in [(&x1, &y1), (&x2, &y2)] {
        bprog.run(&[("x", Feed::F32(x)), ("y", Feed::Labels(y))]).unwrap();
        c.run(&[("x", Feed::F32(x)), ("y", Feed::Labels(y))]).unwrap();
    }
    assert_eq!(weights(&shared), weights(&fresh));
}

#[test]
fn accumulation_ignores_other_programs_gradients_cpu() {
    accumulation_ignores_other_programs_gradients(&Cpu);
}

#[test]
fn accumulation_ignores_other_programs_gradients_gpu() {
    let Some(gpu) = gpu() else { return };
    accumulation_ignores_other_programs_gradients(&gpu);
}

/// A skipped update leaves batch norm's running statistics alone too.
fn skipped_update_keeps_batch_norm_statistics<B: Backend>(b: &B) {
    let mut g = Graph::new();
    let x = g.input("x", [6, 4]).unwrap();
    let y = g.labels("y", [6], 3).unwrap();
    let h = nn::Linear::new(&mut g, "l1", 4, 5).unwrap().forward(&mut g, x).unwrap();
    let h = nn::BatchNorm::new(&mut g, "bn", 5)
        .unwrap()
        .forward(&mut g, h, true)
        .unwrap();
    let logits = nn::Linear::new(&mut g, "l2", 5, 3).unwrap().forward(&mut g, h).unwrap();
    let l = loss::cross_entropy(&mut g, logits, y).unwrap();
    let grads = backward(&mut g, l).unwrap();
    let mut s = ParamStore::new(b, &g, 2).unwrap();
    let opt = Optimizer::sgd(0.1);
    let mut p = Program::compile(&g, &mut s, &[l], Some(Training::new(&grads, &opt))).unwrap();
    let mut xs = values(5, 24, -1.0, 1.0);
    let ys = [0, 1, 2, 0, 1, 2];
    p.run(&[("x", Feed::F32(&xs)), ("y", Feed::Labels(&ys))]).unwrap();
    let before = weights(&s);
    xs[3] = f32::NAN;
    let e = p.run(&[("x", Feed::F32(&xs)), ("y", Feed::Labels(&ys))]).unwrap_err();
    assert!(matches!(e, Error::NonFinite(_)), "{e}");
    assert_eq!(weights(&s), before, "weights and running statistics unchanged");
    assert!(s.get("bn.running_mean").unwrap().data.iter().all(|v| v.is_finite()));
}

#[test]
fn skipped_update_keeps_batch_norm_statistics_cpu() {
    skipped_update_keeps_batch_norm_statistics(&Cpu);
}

#[test]
fn skipped_update_keeps_batch_norm_statistics_gpu() {
    let Some(gpu) = gpu() else { return };
    skipped_update_keeps_batch_norm_statistics(&gpu);
}

#[test]
fn the_graph_writes_itself_as_dot() {
    let (mut g, logits, l) = cnn(2, 0.0);
    let forward = g.to_dot_of(&[l]);
    let grads = backward(&mut g, l).unwrap();
    let all = g.to_dot();
    assert!(forward.starts_with("digraph kiln {") && forward.trim_end().ends_with('}'));
    assert!(forward.contains("conv1.w (param)") && forward.contains("[2, 1, 6, 6] f32"));
    assert!(forward.contains("->"));
    // The backward nodes appear only in the whole graph, and the logits' own subgraph is smaller.
    let grad = grads.params[0].1;
    assert!(!forward.contains(&format!("n{} ", grad.index())));
    assert!(all.contains(&format!("n{} ", grad.index())));
    assert!(g.to_dot_of(&[logits]).len() < forward.len());
}
