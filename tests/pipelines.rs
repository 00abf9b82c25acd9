//! Pipeline budget: every distinct pipeline is a shader compile (an LLVM compile on lavapipe),
//! so a LeNet training step must keep the set small for the first step to start in seconds.

mod common;

use kiln::{backward, loss, nn, Feed, Graph, Optimizer, ParamStore, Program, Training};
use std::time::Instant;

#[test]
fn a_lenet_training_step_needs_few_pipelines() {
    let Some(gpu) = common::gpu() else { return };
    let batch = 7;
    let mut g = Graph::new();
    let x = g.input("x", [batch, 1, 28, 28]).unwrap();
    let y = g.labels("y", [batch], 10).unwrap();
    let logits = nn::lenet5(&mut g, x).unwrap();
    let l = loss::cross_entropy(&mut g, logits, y).unwrap();
    let grads = backward(&mut g, l).unwrap();
    let opt = Optimizer::adam(1e-3);
    let t = Instant::now();
    let mut store = ParamStore::new(&gpu, &g, 0).unwrap();
    let mut p = Program::compile(&g, &mut store, &[l], Some(Training::new(&grads, &opt))).unwrap();
    let xs = common::values(1, batch * 784, 0.0, 1.0);
    let ys: Vec<u32> = (0..batch as u32).map(|i| i % 10).collect();
    let loss = p
        .run(&[("x", Feed::F32(&xs)), ("y", Feed::Labels(&ys))])
        .unwrap()
        .scalar(l)
        .unwrap();
    let n = gpu.pipeline_count();
    eprintln!(
        "LeNet training step: {n} pipelines, first step after {:.2}s, loss {loss}",
        t.elapsed().as_secs_f64()
    );
    assert!(loss.is_finite());
    assert!(n <= 20, "{n} pipelines for one LeNet training step");
}
