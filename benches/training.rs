//! Whole training steps: LeNet-5 at batch 64 (forward, backward, Adam), samples per second
//! (criterion's "elem/s" is samples/s here).
//!
//! cargo bench --bench training

mod common;

use common::each_backend;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kiln::nn;
use kiln::{backward, loss, Graph, Optimizer};
use std::time::Duration;

fn lenet_step(c: &mut Criterion) {
    let batch = 64;
    let mut g = Graph::new();
    let x = g.input("x", [batch, 1, 28, 28]).unwrap();
    let y = g.labels("y", [batch], 10).unwrap();
    let logits = nn::lenet5(&mut g, x).unwrap();
    let l = loss::cross_entropy(&mut g, logits, y).unwrap();
    let grads = backward(&mut g, l).unwrap();
    let opt = Optimizer::adam(1e-3);
    let xs: Vec<f32> = (0..batch * 784).map(|i| ((i * 7919) % 255) as f32 / 255.0).collect();
    let ys: Vec<u32> = (0..batch as u32).map(|i| i % 10).collect();
    let mut group = c.benchmark_group("lenet_train_step_batch64");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(batch as u64));
    each_backend(|name, with| {
        with(&mut |bk| {
            let mut run = bk.runner(
                &g,
                &[l],
                Some((&grads, &opt)),
                vec![("x".into(), xs.clone())],
                vec![("y".into(), ys.clone())],
            );
            group.bench_function(name, |b| b.iter(&mut run));
        });
    });
    group.finish();
}

criterion_group!(benches, lenet_step);
criterion_main!(benches);
