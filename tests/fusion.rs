//! The fusion pass: runs of element-wise kernels fused into one change no bit on the CPU
//! reference, match the CPU on wgpu, rerun bit-identically, and cut LeNet's kernels per step.

mod common;

use common::*;
use kiln::{
    backward, loss, nn, Backend, CompileOptions, Cpu, Feed, Graph, NodeId, Op, Optimizer, ParamStore, Program, Training,
};

/// A network whose training step holds every kind of fusable run: bias adds followed by
/// activations (each with its own constants), their derivatives times the incoming gradient,
/// dropout's mask product, a `where`, a residual add, broadcasts over inner axes of a 4-D
/// tensor (strided addressing), and the loss's scaling. Sizes are not multiples of 256.
fn model(n: usize) -> (Graph, NodeId) {
    let mut g = Graph::new();
    let x = g.input("x", [n, 7]).unwrap();
    let y = g.labels("y", [n], 5).unwrap();
    let h = nn::Linear::new(&mut g, "l1", 7, 33)
        .unwrap()
        .forward(&mut g, x)
        .unwrap();
    let h = g.gelu(h).unwrap();
    let h2 = nn::Linear::new(&mut g, "l2", 33, 33)
        .unwrap()
        .forward(&mut g, h)
        .unwrap();
    let h2 = g.leaky_relu(h2, 0.07).unwrap();
    let h2 = g.dropout(h2, 0.25).unwrap();
    let h = g.add(h, h2).unwrap(); // residual
    let h = g.tanh(h).unwrap();
    // (n, 3, 11) with a per-channel scale (1, 3, 1) and a per-position shift (11): strided reads.
    let t = g.reshape(h, [n, 3, 11]).unwrap();
    let scale = g.param("scale", [1, 3, 1], kiln::Init::Constant(0.8)).unwrap();
    let shift = g.param("shift", [11], kiln::Init::Constant(0.1)).unwrap();
    let t = g.mul(t, scale).unwrap();
    let t = g.add(t, shift).unwrap();
    let t = g.elu(t, 1.3).unwrap();
    let zero = g.scalar(0.0);
    let pos = g.greater(t, zero).unwrap();
    let soft = g.softplus(t).unwrap();
    let t = g.where_(pos, t, soft).unwrap();
    let t = g.sigmoid(t).unwrap();
    let h = g.reshape(t, [n, 33]).unwrap();
    let logits = nn::Linear::new(&mut g, "out", 33, 5)
        .unwrap()
        .forward(&mut g, h)
        .unwrap();
    let l = loss::cross_entropy(&mut g, logits, y).unwrap();
    (g, l)
}

/// Losses and final weights after `steps` Adam steps, with fusion on or off.
fn train<B: Backend>(b: &B, fusion: bool, n: usize, steps: usize) -> (Vec<f32>, Vec<Vec<f32>>, usize) {
    let (mut g, l) = model(n);
    let grads = backward(&mut g, l).unwrap();
    let mut store = ParamStore::new(b, &g, 7).unwrap();
    let opt = Optimizer::adam(1e-2);
    let mut p = Program::compile_with(
        &g,
        &mut store,
        &[l],
        Some(Training::new(&grads, &opt)),
        &CompileOptions {
            fusion: Some(fusion),
            ..Default::default()
        },
    )
    .unwrap();
    let mut losses = Vec::new();
    for s in 0..steps {
        let x = values(s as u64 + 1, n * 7, -2.0, 2.0);
        let y: Vec<u32> = (0..n).map(|i| ((i * 3 + s) % 5) as u32).collect();
        let out = p.run(&[("x", Feed::F32(&x)), ("y", Feed::Labels(&y))]).unwrap();
        losses.push(out.get(l).unwrap().data[0]);
    }
    let w = store
        .entries()
        .iter()
        .map(|e| store.get(&e.name).unwrap().data)
        .collect();
    (losses, w, p.kernel_count())
}

#[test]
fn fusion_changes_no_bit_on_the_cpu() {
    for n in [1, 13] {
        let (l0, w0, k0) = train(&Cpu, false, n, 4);
        let (l1, w1, k1) = train(&Cpu, true, n, 4);
        assert!(k1 < k0, "batch {n}: fusion left {k1} of {k0} kernels");
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&l1), bits(&l0), "batch {n}: losses");
        for (a, b) in w1.iter().zip(&w0) {
            assert_eq!(bits(a), bits(b), "batch {n}: weights");
        }
    }
}

#[test]
fn fused_kernels_match_the_cpu_on_the_gpu_and_rerun_identically() {
    let Some(gpu) = gpu() else { return };
    for n in [1, 13] {
        let (lc, wc, _) = train(&Cpu, false, n, 3);
        let (lg, wg, k) = train(&gpu, true, n, 3);
        let (lg2, wg2, _) = train(&gpu, true, n, 3);
        let (_, _, k0) = train(&gpu, false, n, 1);
        assert!(k < k0, "batch {n}: fusion left {k} of {k0} kernels");
        assert_close(&lg, &lc, 1e-4, 1e-3);
        for (a, b) in wg.iter().zip(&wc) {
            assert_close(a, b, 1e-4, 1e-3);
        }
        assert_eq!(lg, lg2, "batch {n}: a rerun changed the losses");
        assert_eq!(wg, wg2, "batch {n}: a rerun changed the weights");
    }
}

/// LeNet-5's training step at batch 64: the bias add and ReLU of every layer are one kernel,
/// the loss's scale and broadcast are one, and the convolutions' weight gradients are reduced
/// straight into their slots.
#[test]
fn lenet_training_step_fuses() {
    let count = |fusion: bool| {
        let mut g = Graph::new();
        let x = g.input("x", [64, 1, 28, 28]).unwrap();
        let y = g.labels("y", [64], 10).unwrap();
        let logits = nn::lenet5(&mut g, x).unwrap();
        let l = loss::cross_entropy(&mut g, logits, y).unwrap();
        let grads = backward(&mut g, l).unwrap();
        let mut store = ParamStore::new(&Cpu, &g, 1).unwrap();
        let opt = Optimizer::adam(1e-3);
        let p = Program::compile_with(
            &g,
            &mut store,
            &[l],
            Some(Training::new(&grads, &opt)),
            &CompileOptions {
                fusion: Some(fusion),
                ..Default::default()
            },
        )
        .unwrap();
        let fused = p
            .plan()
            .steps
            .iter()
            .filter(|s| p.plan().steps.iter().filter(|t| t.kernel == s.kernel).count() > 1);
        (p.kernel_count(), fused.count())
    };
    let (unfused, none) = count(false);
    let (fused, members) = count(true);
    assert_eq!(none, 0);
    // Four bias + ReLU pairs (the loss's scale and broadcast of its seed are a constant).
    assert_eq!(members, 8, "fused ops");
    assert_eq!(fused, unfused - 4);
    assert!(fused <= 44, "{fused} kernels per LeNet step");
}

/// A constant's scaling, shift, negation, reshape and small broadcast are constants (no
/// kernel), with the value the kernels would compute; a large broadcast stays a kernel.
#[test]
fn constant_arithmetic_folds() {
    let mut g = Graph::new();
    let one = g.constant(1.0, [1]);
    let scaled = g.mul_scalar(one, 1.0 / 64.0).unwrap();
    let shifted = g.add_scalar(scaled, 0.5).unwrap();
    let negated = g.neg(shifted).unwrap();
    let reshaped = g.reshape(negated, Vec::<usize>::new()).unwrap();
    let wide = g.broadcast_to(scaled, [64]).unwrap();
    let huge = g.broadcast_to(one, [1 << 17]).unwrap();
    let value = |g: &Graph, id: NodeId| match g.node(id).op {
        Op::Const { value } => Some(value),
        _ => None,
    };
    assert_eq!(value(&g, scaled), Some(1.0f32 / 64.0));
    assert_eq!(value(&g, shifted), Some(1.0f32 / 64.0 + 0.5));
    assert_eq!(value(&g, negated), Some(-(1.0f32 / 64.0 + 0.5)));
    assert_eq!(value(&g, reshaped), value(&g, negated));
    assert_eq!(g.shape(reshaped).dims(), &[] as &[usize]);
    assert_eq!(
        (value(&g, wide), g.shape(wide).dims()),
        (Some(1.0 / 64.0), &[64usize][..])
    );
    assert_eq!(value(&g, huge), None, "a broadcast of 2^17 elements stays a kernel");
    // An activation of a constant is left to the kernels (whose formulas the graph does not
    // evaluate).
    let e = g.exp(one).unwrap();
    assert_eq!(value(&g, e), None);
}
