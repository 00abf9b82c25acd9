//! Element types: labels and pooling indices are u32 end to end, casts convert (and carry
//! gradients back), mixed float types are refused when the graph is built, feeds and fetches
//! are typed, and f16 tensors hold exactly what f16 rounding gives.

mod common;

use common::*;
use half::f16;
use kiln::shape::DType;
use kiln::{
    backward, gradients, loss, Backend, Cpu, Error, Feed, Graph, Init, Optimizer, ParamStore, Program, Training,
};

#[test]
fn labels_and_pooling_indices_are_u32() {
    let mut g = Graph::new();
    let x = g.input("x", [2, 1, 4, 4]).unwrap();
    let y = g.labels("y", [2], 3).unwrap();
    assert_eq!(g.dtype(x), DType::F32);
    assert_eq!(g.dtype(y), DType::U32);
    let p = g.max_pool2d(x, [2, 2], [2, 2], [0, 0]).unwrap();
    let idx = g.node(p).inputs[1];
    assert_eq!(g.dtype(idx), DType::U32, "argmax indices");
    assert_eq!(g.dtype(p), DType::F32);
    let oh = g.one_hot(y, 3).unwrap();
    assert_eq!(g.dtype(oh), DType::F32);
}

#[test]
fn mixed_float_types_are_refused_when_building() {
    let mut g = Graph::new();
    let a = g.input("a", [3]).unwrap();
    let b = g.input_typed("b", [3], DType::F16).unwrap();
    let e = g.add(a, b).expect_err("f32 + f16");
    assert!(matches!(e, Error::DType { op: "binary", .. }), "{e}");
    assert!(e.to_string().contains("cast"), "{e}");
    // A where-condition must be a float (u32 words are not compared as numbers on a GPU).
    let m = g.input_typed("m", [3], DType::U32).unwrap();
    assert!(matches!(g.where_(m, a, a), Err(Error::DType { .. })));
    // Arithmetic on integers is refused; labels must be u32.
    let ids = g.input_typed("ids", [3], DType::U32).unwrap();
    assert!(matches!(g.exp(ids), Err(Error::DType { .. })));
    let logits = g.input("logits", [3, 4]).unwrap();
    let e = g.softmax_cross_entropy(logits, a, 0.0).expect_err("f32 labels");
    assert!(matches!(e, Error::Shape { .. } | Error::DType { .. }), "{e}");
    // An existing input asked for with another type.
    assert!(matches!(g.input_typed("b", [3], DType::F32), Err(Error::DType { .. })));
    // Cast to the same type is the identity; to another, a new node.
    assert_eq!(g.cast(a, DType::F32).unwrap(), a);
    let c = g.cast(a, DType::F16).unwrap();
    assert_eq!(g.dtype(c), DType::F16);
    let sum = g.add(c, b).unwrap();
    assert_eq!(g.dtype(sum), DType::F16);
}

/// u32 ↔ f32 conversions and u32 feeds/fetches, on `b`.
fn u32_round_trip<B: Backend>(b: &B) {
    let mut g = Graph::new();
    let ids = g.input_typed("ids", [7], DType::U32).unwrap();
    let x = g.input("x", [7]).unwrap();
    let as_f = g.cast(ids, DType::F32).unwrap();
    let as_u = g.cast(x, DType::U32).unwrap();
    let back = g.reshape(as_u, [7, 1]).unwrap();
    // Data movement keeps u32 bits exactly, beyond f32's 2^24 too.
    let big = g.slice(ids, 0, 4, 7).unwrap();
    let mut store = ParamStore::new(b, &g, 0).unwrap();
    let mut p = Program::compile(&g, &mut store, &[as_f, as_u, back, ids, big], None).unwrap();
    let idv = [0u32, 1, 7, 255, 16_777_217, u32::MAX, 16_777_215];
    let xv = [0.0f32, 0.9, 1.5, 7.99, -3.0, f32::NAN, 1e6];
    let out = p.run(&[("ids", Feed::U32(&idv)), ("x", Feed::F32(&xv))]).unwrap();
    let want_f: Vec<f32> = idv.iter().map(|&v| v as f32).collect();
    assert_eq!(out.get_u32(big).unwrap(), &idv[4..7]);
    assert_eq!(out.get(as_f).unwrap().data, want_f);
    // Toward zero; negative and NaN give 0.
    assert_eq!(out.get_u32(as_u).unwrap(), &[0, 0, 1, 7, 0, 0, 1_000_000]);
    assert_eq!(out.get_u32(back).unwrap(), out.get_u32(as_u).unwrap());
    assert_eq!(out.get_u32(ids).unwrap(), &idv);
    assert!(out.get(as_u).is_err(), "u32 fetches are not f32 tensors");
    // u32 inputs take u32 feeds only.
    assert!(matches!(
        p.run(&[("ids", Feed::F32(&xv)), ("x", Feed::F32(&xv))]),
        Err(Error::Invalid { .. })
    ));
}

#[test]
fn u32_round_trip_cpu() {
    u32_round_trip(&Cpu);
}

#[test]
fn u32_round_trip_gpu() {
    let Some(gpu) = gpu() else { return };
    u32_round_trip(&gpu);
}

#[test]
fn max_pool_indices_are_fetched_as_u32_on_both_backends() {
    let build = || {
        let mut g = Graph::new();
        let x = g.input("x", [1, 2, 5, 5]).unwrap();
        let p = g.max_pool2d(x, [2, 2], [2, 2], [1, 1]).unwrap();
        let idx = g.node(p).inputs[1];
        (g, p, idx)
    };
    let xs = distinct(3, 50);
    /// Pooled values and indices on one backend.
    fn pool<B: kiln::Backend>(
        b: &B,
        xs: &[f32],
        build: &dyn Fn() -> (Graph, kiln::NodeId, kiln::NodeId),
    ) -> (Vec<f32>, Vec<u32>) {
        let (g, p, idx) = build();
        let mut s = ParamStore::new(b, &g, 0).unwrap();
        let out = Program::compile(&g, &mut s, &[p, idx], None)
            .unwrap()
            .run(&[("x", Feed::F32(xs))])
            .unwrap();
        (out.get(p).unwrap().data.clone(), out.get_u32(idx).unwrap().to_vec())
    }
    let cpu = pool(&Cpu, &xs, &build);
    // Every index points at its window's maximum in the 5×5 plane.
    for (i, &ix) in cpu.1.iter().enumerate() {
        let plane = i / 9;
        assert!(ix < 25);
        assert_eq!(cpu.0[i], xs[plane * 25 + ix as usize]);
    }
    let Some(gpu) = gpu() else { return };
    let dev = pool(&gpu, &xs, &build);
    assert_eq!(dev, cpu);
}

#[test]
fn cast_gradient_flows_back_through_the_conversion() {
    // loss = Σ w ⊙ f32(f16(x)): ∂loss/∂x = f32(f16(w)) exactly, since the gradient of the
    // f16 → f32 cast is a cast to f16 and that of the f32 → f16 cast a cast to f32.
    let mut g = Graph::new();
    let x = g.param("x", [5], Init::Zeros).unwrap();
    let w = g.input("w", [5]).unwrap();
    let h = g.cast(x, DType::F16).unwrap();
    let back = g.cast(h, DType::F32).unwrap();
    let prod = g.mul(back, w).unwrap();
    let l = g.sum_all(prod).unwrap();
    let gx = gradients(&mut g, l, &[x]).unwrap()[0].unwrap();
    assert_eq!(g.dtype(gx), DType::F32);
    let mut s = ParamStore::new(&Cpu, &g, 0).unwrap();
    let xv = [1.0f32, 1.0009766, -2.0, std::f32::consts::PI, 65504.0];
    s.set("x", &xv).unwrap();
    let wv = [1.0f32, 0.33333334, 1e-4, -7.77, 2.0];
    let out = Program::compile(&g, &mut s, &[l, gx, back], None)
        .unwrap()
        .run(&[("w", Feed::F32(&wv))])
        .unwrap();
    let rounded: Vec<f32> = xv.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
    assert_eq!(out.get(back).unwrap().data, rounded, "f16 rounding to nearest even");
    let want: Vec<f32> = wv.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
    assert_eq!(out.get(gx).unwrap().data, want);
}

#[test]
fn an_f16_model_trains_on_the_cpu_and_keeps_f32_master_weights() {
    // An MLP whose activations are f16 (weights cast from the f32 parameters), loss in f32.
    let mut g = Graph::new();
    let x = g.input_typed("x", [8, 5], DType::F16).unwrap();
    let y = g.labels("y", [8], 3).unwrap();
    let w1 = g.param("w1", [5, 16], Init::XavierUniform(1.0)).unwrap();
    let w2 = g.param("w2", [16, 3], Init::XavierUniform(1.0)).unwrap();
    let w1h = g.cast(w1, DType::F16).unwrap();
    let w2h = g.cast(w2, DType::F16).unwrap();
    let h = g.matmul(x, w1h).unwrap();
    let h = g.relu(h).unwrap();
    let logits = g.matmul(h, w2h).unwrap();
    assert_eq!(g.dtype(logits), DType::F16);
    let logits = g.cast(logits, DType::F32).unwrap();
    let l = loss::cross_entropy(&mut g, logits, y).unwrap();
    let grads = backward(&mut g, l).unwrap();
    let mut s = ParamStore::new(&Cpu, &g, 1).unwrap();
    let opt = Optimizer::adam(0.02);
    let mut p = Program::compile(&g, &mut s, &[l], Some(Training::new(&grads, &opt))).unwrap();
    let xs = values(1, 40, -1.0, 1.0);
    let ys = [0, 1, 2, 0, 1, 2, 0, 1];
    let first = p
        .run(&[("x", Feed::F32(&xs)), ("y", Feed::Labels(&ys))])
        .unwrap()
        .scalar(l)
        .unwrap();
    let mut last = first;
    for _ in 0..60 {
        last = p
            .run(&[("x", Feed::F32(&xs)), ("y", Feed::Labels(&ys))])
            .unwrap()
            .scalar(l)
            .unwrap();
    }
    assert!(last < 0.5 * first, "f16 training learns: {first} → {last}");
    // Master weights are f32 and move by amounts below f16 resolution too.
    let w = s.get("w1").unwrap().data;
    assert!(
        w.iter().any(|&v| f16::from_f32(v).to_f32() != v),
        "w1 is not f16-rounded"
    );
    // Feeding f16 directly is the same as feeding f32 that rounds to it.
    let xh: Vec<f16> = xs.iter().map(|&v| f16::from_f32(v)).collect();
    let mut e = Program::compile(&g, &mut s, &[l], None).unwrap();
    let a = e
        .run(&[("x", Feed::F32(&xs)), ("y", Feed::Labels(&ys))])
        .unwrap()
        .scalar(l)
        .unwrap();
    let b = e
        .run(&[("x", Feed::F16(&xh)), ("y", Feed::Labels(&ys))])
        .unwrap()
        .scalar(l)
        .unwrap();
    assert_eq!(a.to_bits(), b.to_bits());
}
