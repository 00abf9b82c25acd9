//! Kernel benchmarks: matmul and convolution throughput (criterion reports elements/s, where
//! one element is one floating-point operation: read "Gelem/s" as GFLOP/s), and the executor's
//! CPU overhead per dispatched kernel on a graph of many tiny ops.
//!
//! cargo bench --bench kernels

mod common;

use common::each_backend;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kiln::{gradients, Graph, Init};
use std::time::Duration;

fn matmul(c: &mut Criterion) {
    let mut group = c.benchmark_group("matmul");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    each_backend(|name, with| {
        for n in [256usize, 512, 1024, 2048] {
            let mut g = Graph::new();
            let a = g.input("a", [n, n]).unwrap();
            let b = g.input("b", [n, n]).unwrap();
            let p = g.matmul(a, b).unwrap();
            // Fetch one row so the timing includes the device finishing, not just submission.
            let row = g.slice(p, 0, 0, 1).unwrap();
            let data: Vec<f32> = (0..n * n).map(|i| (i % 17) as f32 * 0.01).collect();
            group.throughput(Throughput::Elements((2 * n * n * n) as u64));
            with(&mut |bk| {
                let mut run = bk.runner(
                    &g,
                    &[row],
                    None,
                    vec![("a".into(), data.clone()), ("b".into(), data.clone())],
                    vec![],
                );
                group.bench_function(BenchmarkId::new(name, n), |bch| bch.iter(&mut run));
            });
        }
    });
    group.finish();
}

fn conv2d(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv2d_fwd_bwd");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    // (label, N, C, H, W, O, k, pad): LeNet's second convolution and a ResNet stage-2 3×3.
    for (label, n, ch, h, w, o, k, pad) in [
        ("lenet_conv2", 64, 6, 14, 14, 16, 5, 0),
        ("resnet_3x3", 32, 16, 14, 14, 32, 3, 1),
    ] {
        let mut g = Graph::new();
        let x = g.param("x", [n, ch, h, w], Init::Uniform(-1.0, 1.0)).unwrap();
        let wt = g.param("w", [o, ch, k, k], Init::HeUniform).unwrap();
        let y = g.conv2d(x, wt, [1, 1], [pad, pad], [1, 1]).unwrap();
        let l = g.sum_all(y).unwrap();
        let gr = gradients(&mut g, l, &[x, wt]).unwrap();
        // Fetch dW and one image of dX so the timing includes the device finishing.
        let dw = gr[1].unwrap();
        let dx0 = g.slice(gr[0].unwrap(), 0, 0, 1).unwrap();
        let (oh, ow) = (h + 2 * pad - k + 1, w + 2 * pad - k + 1);
        // Forward, input gradient and weight gradient: three products of 2·N·O·C·K²·OH·OW.
        group.throughput(Throughput::Elements((3 * 2 * n * o * ch * k * k * oh * ow) as u64));
        each_backend(|name, with| {
            with(&mut |bk| {
                let mut run = bk.runner(&g, &[dw, dx0], None, vec![], vec![]);
                group.bench_function(BenchmarkId::new(name, label), |bch| bch.iter(&mut run));
            });
        });
    }
    group.finish();
}

fn executor_overhead(c: &mut Criterion) {
    // 200 element-wise kernels on 16 elements: the time is almost all per-kernel overhead.
    const OPS: usize = 200;
    let mut group = c.benchmark_group("executor_overhead_200_tiny_kernels");
    group.sample_size(20).measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements(OPS as u64));
    let mut g = Graph::new();
    let x = g.input("x", [16]).unwrap();
    let mut h = x;
    for i in 0..OPS {
        h = if i % 2 == 0 {
            g.tanh(h).unwrap()
        } else {
            g.mul_scalar(h, 1.5).unwrap()
        };
    }
    each_backend(|name, with| {
        with(&mut |bk| {
            let mut run = bk.runner(&g, &[h], None, vec![("x".into(), vec![0.1; 16])], vec![]);
            group.bench_function(name, |bch| bch.iter(&mut run));
        });
    });
    group.finish();
}

criterion_group!(benches, matmul, conv2d, executor_overhead);
criterion_main!(benches);
