//! GPU backend contracts beyond per-op parity: whole training trajectories match the CPU,
//! identical runs are bit-identical, every optimiser's fused update matches, dispatches larger
//! than one grid dimension work, oversized tensors are refused, and LeNet learns MNIST.

mod common;

use common::*;
use kiln::{backward, loss, nn, Backend, Cpu, Feed, Graph, Init, NodeId, Optimizer, ParamStore, Program, Training};

/// Loss after each of `steps` steps of an MLP (with dropout and batch norm) trained by `opt`.
fn mlp_trajectory<B: Backend>(b: &B, opt: &Optimizer, steps: usize) -> Vec<f32> {
    let mut g = Graph::new();
    let x = g.input("x", [33, 7]).unwrap();
    let y = g.labels("y", [33], 5).unwrap();
    let h = nn::Linear::new(&mut g, "l1", 7, 65)
        .unwrap()
        .forward(&mut g, x)
        .unwrap();
    let h = nn::BatchNorm::new(&mut g, "bn", 65)
        .unwrap()
        .forward(&mut g, h, true)
        .unwrap();
    let h = g.relu(h).unwrap();
    let h = g.dropout(h, 0.2).unwrap();
    let logits = nn::Linear::new(&mut g, "l2", 65, 5)
        .unwrap()
        .forward(&mut g, h)
        .unwrap();
    let l = loss::cross_entropy(&mut g, logits, y).unwrap();
    let grads = backward(&mut g, l).unwrap();
    let mut store = ParamStore::new(b, &g, 5).unwrap();
    let mut p = Program::compile(&g, &mut store, &[l], Some(Training::new(&grads, opt))).unwrap();
    p.set_seed(9);
    let xs = values(1, 33 * 7, -2.0, 2.0);
    let ys: Vec<u32> = (0..33).map(|i| (i * 3 % 5) as u32).collect();
    (0..steps)
        .map(|_| {
            p.run(&[("x", Feed::F32(&xs)), ("y", Feed::Labels(&ys))])
                .unwrap()
                .scalar(l)
                .unwrap()
        })
        .collect()
}

#[test]
fn twenty_adam_steps_follow_the_cpu_trajectory() {
    let Some(gpu) = gpu() else { return };
    let opt = Optimizer::adam(1e-2);
    let cpu = mlp_trajectory(&Cpu, &opt, 20);
    let dev = mlp_trajectory(&gpu, &opt, 20);
    assert!(cpu[19] < cpu[0] * 0.7, "the model learns: {cpu:?}");
    // Rounding differences compound over steps; 1e-3 relative still separates any real bug.
    assert_close(&dev, &cpu, 1e-4, 1e-3);
}

#[test]
fn identical_runs_are_bit_identical_on_the_gpu() {
    let Some(gpu) = gpu() else { return };
    let opt = Optimizer::adam(1e-2).clip_norm(1.0);
    let a = mlp_trajectory(&gpu, &opt, 10);
    let b = mlp_trajectory(&gpu, &opt, 10);
    assert_eq!(
        a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn every_optimiser_matches_the_cpu() {
    let Some(gpu) = gpu() else { return };
    for opt in [
        Optimizer::sgd(0.1).weight_decay(0.01),
        Optimizer::momentum(0.05, 0.9).clip_value(0.5),
        Optimizer::nesterov(0.05, 0.9),
        Optimizer::adagrad(0.05),
        Optimizer::rmsprop(0.01).clip_norm(0.5),
        Optimizer::adam(0.01).weight_decay(0.01),
        Optimizer::adamw(0.01, 0.05),
    ] {
        let cpu = mlp_trajectory(&Cpu, &opt, 5);
        let dev = mlp_trajectory(&gpu, &opt, 5);
        if let Err(e) = check_close(&dev, &cpu, 1e-4, 1e-3) {
            panic!("{opt:?}: {e}");
        }
    }
}

#[test]
fn tiled_matmul_batched_and_shared() {
    for (ta, tb) in [(false, false), (true, true)] {
        let (m, k, n) = (65, 33, 129);
        let sa = if ta { vec![2, k, m] } else { vec![2, m, k] };
        let sb = if tb { vec![2, n, k] } else { vec![2, k, n] };
        parity(
            &|g: &mut Graph, v: &[NodeId]| g.matmul_t(v[0], v[1], ta, tb),
            &[
                arg("a", &sa, values(1, 2 * m * k, -1.0, 1.0)),
                arg("b", &sb, values(2, 2 * k * n, -1.0, 1.0)),
            ],
            &[],
            1e-4,
            1e-3,
        );
        parity(
            &|g: &mut Graph, v: &[NodeId]| g.matmul_t(v[0], v[1], ta, tb),
            &[
                arg("a", &sa[1..], values(3, m * k, -1.0, 1.0)),
                arg("b", &sb, values(4, 2 * k * n, -1.0, 1.0)),
            ],
            &[],
            1e-4,
            1e-3,
        );
    }
}

#[test]
fn tiled_matmul_with_vec4_staging() {
    // K and N multiples of 4 (with M, N ≥ 64): the vec4 loads of A (not transposed) and B (not
    // transposed) are taken; the transposed operands keep the scalar path in the same dispatch.
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        for (batch, m, k, n) in [(1, 65, 64, 132), (3, 130, 36, 68)] {
            let sa = if ta { vec![batch, k, m] } else { vec![batch, m, k] };
            let sb = if tb { vec![batch, n, k] } else { vec![batch, k, n] };
            parity(
                &|g: &mut Graph, v: &[NodeId]| g.matmul_t(v[0], v[1], ta, tb),
                &[
                    arg("a", &sa, values(7, batch * m * k, -1.0, 1.0)),
                    arg("b", &sb, values(8, batch * k * n, -1.0, 1.0)),
                ],
                &[],
                1e-4,
                1e-3,
            );
        }
    }
}

#[test]
fn more_than_65535_workgroups() {
    // 65536·256 + 7 elements need a 2-D grid of element-wise workgroups; 70001 rows need a 2-D
    // grid of reduction workgroups.
    let n = 65536 * 256 + 7;
    parity(
        &|g: &mut Graph, v: &[NodeId]| g.mul_scalar(v[0], 3.0),
        &[arg("x", &[n], values(5, n, -1.0, 1.0))],
        &[],
        0.0,
        0.0,
    );
    parity(
        &|g: &mut Graph, v: &[NodeId]| g.sum(v[0], &[1], false),
        &[arg("x", &[70001, 3], values(6, 210003, -1.0, 1.0))],
        &[],
        1e-5,
        1e-5,
    );
}

#[test]
fn tensors_beyond_the_binding_limit_are_refused() {
    let Some(gpu) = gpu() else { return };
    let mut g = Graph::new();
    // 2³⁰ floats = 4 GiB: beyond any adapter's storage binding limit.
    let x = g.input("x", [1 << 30]).unwrap();
    let y = g.relu(x).unwrap();
    let mut store = ParamStore::new(&gpu, &g, 0).unwrap();
    let e = Program::compile(&g, &mut store, &[y], None)
        .err()
        .expect("must be refused");
    assert!(e.to_string().contains("binds at most"), "{e}");
}

#[test]
fn a_gradient_shared_by_two_parameters_on_the_gpu() {
    // The second parameter's gradient is a copy within the gradient buffer: the aliasing path.
    let Some(gpu) = gpu() else { return };
    let mut g = Graph::new();
    let a = g.param("a", [3], Init::Constant(1.0)).unwrap();
    let b = g.param("b", [3], Init::Constant(2.0)).unwrap();
    let s = g.add(a, b).unwrap();
    let l = g.sum_all(s).unwrap();
    let grads = backward(&mut g, l).unwrap();
    let mut store = ParamStore::new(&gpu, &g, 0).unwrap();
    let opt = Optimizer::sgd(0.5);
    let mut p = Program::compile(&g, &mut store, &[l], Some(Training::new(&grads, &opt))).unwrap();
    p.run(&[]).unwrap();
    assert_eq!(store.get("a").unwrap().data, vec![0.5; 3]);
    assert_eq!(store.get("b").unwrap().data, vec![1.5; 3]);
}

#[test]
fn an_adapter_name_that_matches_nothing_is_an_error_listing_the_adapters() {
    let Some(gpu) = gpu() else { return };
    let e = match kiln::Gpu::new(Some("no-such-adapter-kiln")) {
        Ok(_) => panic!("a name that matches nothing must not open an adapter"),
        Err(e) => e.to_string(),
    };
    let name = gpu.info().adapter;
    let first = name.split(" (").next().unwrap();
    assert!(e.contains("no-such-adapter-kiln") && e.contains(first), "{e}");
}

/// Run as a child process by `no_wayland_complaint_without_a_session`: enumerate the adapters.
#[test]
#[ignore = "a helper process of no_wayland_complaint_without_a_session"]
fn enumerate_adapters_child() {
    if std::env::var_os("KILN_ENUMERATE_CHILD").is_some() {
        println!("{} adapters", kiln::backend::wgpu::adapters().len());
    }
}

/// Without a Wayland session, enumerating adapters prints nothing of libwayland's (Mesa's
/// device-select layer tries to connect while enumerating; see `quiet_wayland` in the wgpu
/// backend). On machines without libwayland or that layer there is nothing to print anyway.
#[test]
#[cfg(target_os = "linux")]
fn no_wayland_complaint_without_a_session() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "enumerate_adapters_child", "--ignored", "--nocapture"])
        .env("KILN_ENUMERATE_CHILD", "1")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("WAYLAND_SOCKET")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains(" adapters"),
        "{stdout}\n{stderr}"
    );
    assert!(!stderr.contains("XDG_RUNTIME_DIR"), "{stderr}");
}
