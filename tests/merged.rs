//! Pairs of GPU dispatches merged into one: a product or a pooling or convolution gradient whose
//! only reader is the fused element-wise kernel after it (a bias add and activation, an
//! activation's derivative) hands each element to that epilogue instead of storing it
//! (`matmul::with_epilogue`, `conv::with_epilogue`); a max pooling's argmax writes the pooled
//! values too (`conv::pool_with_values`); a short reduction of a fused kernel's value (a bias
//! gradient) computes that kernel's elements as it loads them (`reduce::with_prologue`). Training gives the same bits as the pairs
//! (`KILN_MERGE=off`) and matches the CPU; a program that fetches the product itself gets it
//! (the pair runs instead); every variant of the product merges and keeps its bits.
//!
//! One test function: `KILN_MERGE` is read by every prepare in the process.

mod common;

use common::*;
use kiln::backend::wgpu::autotune::Mode;
use kiln::backend::wgpu::kernels::matmul::Variant;
use kiln::{backward, loss, nn, Backend, Cpu, Feed, Graph, Init, NodeId, Optimizer, ParamStore, Program, Training};

/// Two convolutions (batched products with a per-row bias), an average pooling and a max
/// pooling (9×9 planes in 2×2 windows: the last row and column in none), then two linear layers
/// (per-column bias), with activations and without; sizes not multiples of any tile, the first
/// linear layer's A and the last one's B read through vec4 views where a variant can. The
/// backward pass has each kind of pair: the max pooling's, the average pooling's and the second
/// convolution's input gradients (scatter, average, col2im) each followed by an activation's
/// derivative, and the first linear layer's derivative followed by its bias gradient (a short
/// reduction). Returns the graph, the loss and the first linear layer's product (before its
/// bias).
fn model(n: usize) -> (Graph, NodeId, NodeId) {
    let mut g = Graph::new();
    let x = g.input("x", [n, 4, 9, 9]).unwrap();
    let y = g.labels("y", [n], 4).unwrap();
    let conv = nn::Conv2d::with_init(&mut g, "conv", 4, 4, 3, 1, 1, Init::HeUniform, Init::Uniform(-0.5, 0.5)).unwrap();
    let h = conv.forward(&mut g, x).unwrap();
    let h = g.relu(h).unwrap();
    let conv2 = nn::Conv2d::with_init(
        &mut g,
        "conv2",
        4,
        4,
        3,
        1,
        1,
        Init::HeUniform,
        Init::Uniform(-0.5, 0.5),
    )
    .unwrap();
    let h = conv2.forward(&mut g, h).unwrap();
    let h = g.relu(h).unwrap();
    let h = g.avg_pool2d(h, [3, 3], [1, 1], [1, 1]).unwrap();
    let h = g.tanh(h).unwrap();
    let h = g.max_pool2d(h, [2, 2], [2, 2], [0, 0]).unwrap();
    let h = g.reshape(h, [n, 64]).unwrap();
    let w = g.param("w1", [64, 13], Init::Uniform(-0.1, 0.1)).unwrap();
    let b = g.param("b1", [13], Init::Uniform(-0.5, 0.5)).unwrap();
    let z = g.matmul(h, w).unwrap();
    let h = g.add(z, b).unwrap();
    let h = g.tanh(h).unwrap();
    let logits = nn::Linear::new(&mut g, "out", 13, 4)
        .unwrap()
        .forward(&mut g, h)
        .unwrap();
    let l = loss::cross_entropy(&mut g, logits, y).unwrap();
    (g, l, z)
}

/// Losses, final weights and the fetched values of `extra` after `steps` Adam steps.
fn train<B: Backend>(b: &B, n: usize, steps: usize, fetch_product: bool) -> (Vec<f32>, Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let (mut g, l, z) = model(n);
    let grads = backward(&mut g, l).unwrap();
    let mut store = ParamStore::new(b, &g, 3).unwrap();
    let opt = Optimizer::adam(1e-2);
    let outs: Vec<NodeId> = if fetch_product { vec![l, z] } else { vec![l] };
    let mut p = Program::compile(&g, &mut store, &outs, Some(Training::new(&grads, &opt))).unwrap();
    let (mut losses, mut fetched) = (Vec::new(), Vec::new());
    for s in 0..steps {
        let x = values(s as u64 + 11, n * 4 * 81, -1.0, 1.0);
        let y: Vec<u32> = (0..n).map(|i| ((i + s) % 4) as u32).collect();
        let out = p.run(&[("x", Feed::F32(&x)), ("y", Feed::Labels(&y))]).unwrap();
        losses.push(out.get(l).unwrap().data[0]);
        if fetch_product {
            fetched.push(out.get(z).unwrap().data.clone());
        }
    }
    let w = store
        .entries()
        .iter()
        .map(|e| store.get(&e.name).unwrap().data)
        .collect();
    (losses, w, fetched)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn merged_dispatches_keep_every_bit() {
    let Some(gpu) = gpu() else { return };
    for n in [3, 13] {
        let (lc, wc, zc) = train(&Cpu, n, 3, true);
        let merged = train(&gpu, n, 3, false);
        let fetched = train(&gpu, n, 3, true);
        std::env::set_var("KILN_MERGE", "off");
        let pair = train(&gpu, n, 3, false);
        let pair_fetched = train(&gpu, n, 3, true);
        std::env::remove_var("KILN_MERGE");
        assert_eq!(
            bits(&merged.0),
            bits(&pair.0),
            "batch {n}: losses, merged vs two dispatches"
        );
        for (a, b) in merged.1.iter().zip(&pair.1) {
            assert_eq!(bits(a), bits(b), "batch {n}: weights, merged vs two dispatches");
        }
        // Fetching the product runs the pair: the product is there, and nothing else changes.
        assert_eq!(
            bits(&fetched.0),
            bits(&merged.0),
            "batch {n}: losses when the product is fetched"
        );
        for (a, b) in fetched.2.iter().zip(&pair_fetched.2) {
            assert_eq!(bits(a), bits(b), "batch {n}: the fetched product");
        }
        for (a, b) in fetched.2.iter().zip(&zc) {
            assert_close(a, b, 1e-4, 1e-3);
        }
        assert_close(&merged.0, &lc, 1e-4, 1e-3);
        for (a, b) in merged.1.iter().zip(&wc) {
            assert_close(a, b, 1e-4, 1e-3);
        }
    }
    // Every variant of the product carries the epilogue, with the default variant's bits.
    let reference = train(&gpu_with(Mode::Off), 13, 2, false);
    for v in Variant::ALL {
        let got = train(&gpu_with(Mode::Fixed(v)), 13, 2, false);
        assert_eq!(bits(&got.0), bits(&reference.0), "{}: losses", v.name());
        for (a, b) in got.1.iter().zip(&reference.1) {
            assert_eq!(bits(a), bits(b), "{}: weights", v.name());
        }
    }
}

fn gpu_with(mode: Mode) -> kiln::Gpu {
    kiln::Gpu::with_autotune(std::env::var("KILN_ADAPTER").ok().as_deref(), mode).unwrap()
}
