//! f16 tensors on wgpu, in both storages — WGSL's `f16` (adapters with `SHADER_F16`, lavapipe
//! among them) and u32 words packed with `pack2x16float` (every other adapter) — against the
//! CPU reference, which rounds to f16 wherever a GPU stores f16.

mod common;

use common::*;
use half::f16;
use kiln::shape::DType;
use kiln::{backward_scaled, loss, nn, Backend, Cpu, Feed, Gpu, Graph, Optimizer, ParamStore, Program, Training};

/// The GPU as the tests open it, and the same adapter forced to packed f16.
fn gpus() -> Option<[Gpu; 2]> {
    let native = gpu()?;
    let packed = Gpu::new_packed_f16(std::env::var("KILN_ADAPTER").ok().as_deref()).unwrap();
    assert!(!packed.native_f16());
    Some([native, packed])
}

/// f32 → f16 → f32 on `b`, and f16 → u32.
fn round_trip<B: Backend>(b: &B, xs: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut g = Graph::new();
    let x = g.input("x", [xs.len()]).unwrap();
    let h = g.cast(x, DType::F16).unwrap();
    let twice = g.add(h, h).unwrap();
    let back = g.cast(h, DType::F32).unwrap();
    let mut s = ParamStore::new(b, &g, 0).unwrap();
    let out = Program::compile(&g, &mut s, &[back, twice], None)
        .unwrap()
        .run(&[("x", Feed::F32(xs))])
        .unwrap();
    (
        out.get(back).unwrap().data.clone(),
        out.get(twice).unwrap().data.clone(),
    )
}

#[test]
fn f16_rounding_overflow_and_nan_match_the_cpu_in_both_storages() {
    // Ties, subnormals, the largest f16, values that round to ∞, ∞, NaN; an odd length so the
    // packed storage's last word is half used.
    let xs = [
        0.0,
        -0.0,
        1.0,
        1.0009766,
        1.0004883,
        -2.5,
        65504.0,
        65519.0,
        65520.0,
        1e6,
        -1e6,
        6.0e-8,
        3.0e-5,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        0.1,
        0.2,
        0.3,
    ];
    let want: Vec<f32> = xs.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
    let (cpu, cpu2) = round_trip(&Cpu, &xs);
    let same = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
    };
    assert!(same(&cpu, &want), "CPU {cpu:?}\nwant {want:?}");
    let Some(gpus) = gpus() else { return };
    for g in &gpus {
        let (dev, dev2) = round_trip(g, &xs);
        assert!(same(&dev, &want), "native {}: {dev:?}\nwant {want:?}", g.native_f16());
        assert!(same(&dev2, &cpu2), "native {}: {dev2:?}\nCPU {cpu2:?}", g.native_f16());
    }
}

/// Losses of 8 Adam steps of a mixed-precision CNN (conv, ReLU, max pool, linear; f16
/// activations and gradients, dynamic loss scaling), the skipped updates, and the weights.
fn mixed_run<B: Backend>(b: &B) -> (Vec<f32>, u64, Vec<f32>) {
    let mut g = Graph::new();
    let x = g.input("x", [9, 2, 7, 7]).unwrap();
    let y = g.labels("y", [9], 5).unwrap();
    let xh = g.cast(x, DType::F16).unwrap();
    let h = nn::Conv2d::new(&mut g, "conv", 2, 5, 3, 1, 1)
        .unwrap()
        .forward(&mut g, xh)
        .unwrap();
    let h = g.relu(h).unwrap();
    let h = g.max_pool2d(h, [2, 2], [2, 2], [0, 0]).unwrap();
    let h = nn::flatten(&mut g, h).unwrap();
    let logits = nn::Linear::new(&mut g, "fc", 45, 5)
        .unwrap()
        .forward(&mut g, h)
        .unwrap();
    let l = loss::cross_entropy(&mut g, logits, y).unwrap();
    let grads = backward_scaled(&mut g, l).unwrap();
    let mut s = ParamStore::new(b, &g, 4).unwrap();
    let opt = Optimizer::adam(1e-2);
    let mut p = Program::compile(&g, &mut s, &[l], Some(Training::new(&grads, &opt))).unwrap();
    let xs = values(8, 9 * 98, -1.0, 1.0);
    let ys: Vec<u32> = (0..9).map(|i| (i * 2 % 5) as u32).collect();
    let losses = (0..8)
        .map(|_| {
            p.run(&[("x", Feed::F32(&xs)), ("y", Feed::Labels(&ys))])
                .unwrap()
                .scalar(l)
                .unwrap()
        })
        .collect();
    (losses, p.skipped_updates(), s.get("conv.w").unwrap().data)
}

#[test]
fn mixed_precision_training_follows_the_cpu_in_both_storages() {
    let (cpu, cpu_skipped, cpu_w) = mixed_run(&Cpu);
    assert!(cpu[7] < cpu[0], "it learns: {cpu:?}");
    let Some(gpus) = gpus() else { return };
    for g in &gpus {
        let (dev, skipped, w) = mixed_run(g);
        // f16 rounds the activations to 11 bits; the two backends sum in different orders, so a
        // value can land on either side of a rounding boundary: agreement to f16 resolution.
        assert_close(&dev, &cpu, 2e-3, 2e-3);
        assert_eq!(skipped, cpu_skipped, "the same updates overflow");
        assert_close(&w, &cpu_w, 2e-3, 1e-2);
    }
}
