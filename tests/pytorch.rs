//! Kiln against PyTorch's float64 reference values (`tests/fixtures/pytorch.json`, written by
//! `tools/torch_reference.py`): every activation, the row ops, maximum/minimum with ties, PReLU
//! per channel, every loss and every optimiser, including inputs exactly at kinks and bounds,
//! on the CPU and on wgpu. A convention that differs from PyTorch's fails here.

mod common;

use common::*;
use kiln::{
    gradients, loss, nn, Backend, Cpu, Feed, Graph, Init, NodeId, Optimizer, OptimizerKind, ParamStore, Program,
    Schedule, Training, UnaryOp,
};
use serde_json::Value;

fn fixture() -> Value {
    let text = include_str!("fixtures/pytorch.json");
    serde_json::from_str(text).expect("tests/fixtures/pytorch.json parses")
}

fn vec_f32(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_f64().expect("a number") as f32)
        .collect()
}

fn dims(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_u64().expect("a size") as usize)
        .collect()
}

fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("parameter `{key}`"))
}

/// f32 results against float64 references, on both backends: a few f32 ulps (values here are
/// at most ~20, where an ulp is 2e-6), far below any convention difference (a gradient of 0
/// against 1 at a bound, half a tie, a factor of C).
#[derive(Clone, Copy)]
struct Tol {
    atol: f32,
    rtol: f32,
}

const TOL: Tol = Tol { atol: 1e-6, rtol: 1e-5 };

fn check(what: &str, actual: &[f32], expected: &[f32], t: Tol) {
    if let Err(e) = check_close(actual, expected, t.atol, t.rtol) {
        panic!("{what}: {e}\n  actual:   {actual:?}\n  expected: {expected:?}");
    }
}

/// Run `build` (params named `p0`, `p1`, ... set from `args`) and return the outputs' values and
/// the gradient of `Σ dys[i] ⊙ outs[i]` with respect to each parameter.
fn run<B: Backend>(
    b: &B,
    args: &[(Vec<usize>, Vec<f32>)],
    dys: &[Vec<f32>],
    feeds: &[(&str, Feed<'_>)],
    build: &dyn Fn(&mut Graph, &[NodeId]) -> Vec<NodeId>,
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let mut g = Graph::new();
    let ps: Vec<NodeId> = args
        .iter()
        .enumerate()
        .map(|(i, (s, _))| g.param(&format!("p{i}"), s.clone(), Init::Zeros).unwrap())
        .collect();
    let outs = build(&mut g, &ps);
    let mut total = None;
    for (i, (&o, dy)) in outs.iter().zip(dys).enumerate() {
        let w = g.input(&format!("dy{i}"), g.shape(o).clone()).unwrap();
        assert_eq!(g.shape(o).numel(), dy.len());
        let t = g.mul(o, w).unwrap();
        let s = g.sum_all(t).unwrap();
        total = Some(match total {
            None => s,
            Some(t) => g.add(t, s).unwrap(),
        });
    }
    let grads: Vec<NodeId> = gradients(&mut g, total.unwrap(), &ps)
        .unwrap()
        .into_iter()
        .map(|x| x.expect("every argument reaches the outputs"))
        .collect();
    let mut store = ParamStore::new(b, &g, 0).unwrap();
    for (i, (_, v)) in args.iter().enumerate() {
        store.set(&format!("p{i}"), v).unwrap();
    }
    let fetch: Vec<NodeId> = outs.iter().chain(&grads).copied().collect();
    let names: Vec<String> = (0..dys.len()).map(|i| format!("dy{i}")).collect();
    let mut all: Vec<(&str, Feed<'_>)> = feeds.to_vec();
    all.extend(names.iter().zip(dys).map(|(n, d)| (n.as_str(), Feed::F32(d))));
    let out = Program::compile(&g, &mut store, &fetch, None)
        .unwrap()
        .run(&all)
        .unwrap();
    let get = |n: &NodeId| out.get(*n).unwrap().data.clone();
    (outs.iter().map(get).collect(), grads.iter().map(get).collect())
}

fn unary_op(name: &str, p: &Value) -> UnaryOp {
    match name {
        "sigmoid" => UnaryOp::Sigmoid,
        "tanh" => UnaryOp::Tanh,
        "relu" => UnaryOp::Relu,
        "leaky_relu" => UnaryOp::LeakyRelu(num(p, "negative_slope") as f32),
        "elu" => UnaryOp::Elu(num(p, "alpha") as f32),
        "softplus" => UnaryOp::Softplus,
        "hardtanh" | "clamp" => UnaryOp::Clamp(num(p, "min") as f32, num(p, "max") as f32),
        "gelu" => UnaryOp::Gelu,
        "abs" => UnaryOp::Abs,
        "sign" => UnaryOp::Sign,
        "exp" => UnaryOp::Exp,
        "log" => UnaryOp::Log,
        "sqrt" => UnaryOp::Sqrt,
        "square" => UnaryOp::Square,
        "reciprocal" => UnaryOp::Recip,
        "neg" => UnaryOp::Neg,
        other => panic!("the fixture has an activation Kiln does not map: {other}"),
    }
}

fn activations<B: Backend>(b: &B, t: Tol) {
    let f = fixture();
    for e in f["unary"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        let op = unary_op(name, &e["params"]);
        let x = vec_f32(&e["x"]);
        let what = format!("{name} {}", e["params"]);
        let (y, dx) = run(b, &[(vec![x.len()], x.clone())], &[vec_f32(&e["dy"])], &[], &|g, p| {
            vec![if name == "hardtanh" {
                g.hardtanh(p[0]).unwrap()
            } else {
                g.unary(op, p[0]).unwrap()
            }]
        });
        check(&format!("{what}: value"), &y[0], &vec_f32(&e["y"]), t);
        check(&format!("{what}: gradient"), &dx[0], &vec_f32(&e["dx"]), t);
    }
    for e in f["rows"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        let shape = dims(&e["shape"]);
        let (y, dx) = run(b, &[(shape, vec_f32(&e["x"]))], &[vec_f32(&e["dy"])], &[], &|g, p| {
            vec![match name {
                "softmax" => g.softmax(p[0]).unwrap(),
                _ => g.log_softmax(p[0]).unwrap(),
            }]
        });
        check(&format!("{name}: value"), &y[0], &vec_f32(&e["y"]), t);
        check(&format!("{name}: gradient"), &dx[0], &vec_f32(&e["dx"]), t);
    }
    for e in f["binary"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        let (a, bb) = (vec_f32(&e["a"]), vec_f32(&e["b"]));
        let n = a.len();
        let (y, d) = run(b, &[(vec![n], a), (vec![n], bb)], &[vec_f32(&e["dy"])], &[], &|g, p| {
            vec![match name {
                "maximum" => g.maximum(p[0], p[1]).unwrap(),
                _ => g.minimum(p[0], p[1]).unwrap(),
            }]
        });
        check(&format!("{name}: value"), &y[0], &vec_f32(&e["y"]), t);
        check(
            &format!("{name}: gradient of a (ties split)"),
            &d[0],
            &vec_f32(&e["da"]),
            t,
        );
        check(
            &format!("{name}: gradient of b (ties split)"),
            &d[1],
            &vec_f32(&e["db"]),
            t,
        );
    }
    for e in f["prelu"].as_array().unwrap() {
        let shape = dims(&e["x_shape"]);
        let w = vec_f32(&e["weight"]);
        let (y, d) = run(
            b,
            &[(shape, vec_f32(&e["x"])), (vec![w.len()], w.clone())],
            &[vec_f32(&e["dy"])],
            &[],
            &|g, p| {
                // nn::PRelu's own slope parameter is replaced by p1 so the check sets it.
                let layer = nn::PRelu { alpha: p[1] };
                vec![layer.forward(g, p[0]).unwrap()]
            },
        );
        let what = format!("prelu {:?} with {} slopes", e["x_shape"], w.len());
        check(&format!("{what}: value"), &y[0], &vec_f32(&e["y"]), t);
        check(&format!("{what}: gradient of x"), &d[0], &vec_f32(&e["dx"]), t);
        check(
            &format!("{what}: gradient of the slopes"),
            &d[1],
            &vec_f32(&e["dweight"]),
            t,
        );
    }
}

fn losses<B: Backend>(b: &B, t: Tol) {
    let f = fixture();
    for e in f["losses"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap().to_string();
        let p = e["params"].clone();
        let shape = dims(&e["shape"]);
        let target = vec_f32(&e["target"]);
        let labels: Vec<u32> = target.iter().map(|&v| v as u32).collect();
        let classed = matches!(name.as_str(), "cross_entropy" | "multi_margin" | "weston_watkins");
        let feeds: Vec<(&str, Feed<'_>)> = if classed {
            vec![("t", Feed::Labels(&labels))]
        } else {
            vec![("t", Feed::F32(&target))]
        };
        let (v, d) = run(
            b,
            &[(shape.clone(), vec_f32(&e["input"]))],
            &[vec![1.0]],
            &feeds,
            &|g, x| {
                let x = x[0];
                let l = if classed {
                    let y = g.labels("t", [shape[0]], shape[1]).unwrap();
                    match name.as_str() {
                        "cross_entropy" => loss::cross_entropy_smoothed(g, x, y, num(&p, "label_smoothing") as f32),
                        "multi_margin" => loss::multi_margin(g, x, y, num(&p, "p") as u32, num(&p, "margin") as f32),
                        _ => loss::multiclass_hinge(g, x, y, num(&p, "margin") as f32),
                    }
                } else {
                    let y = g.input("t", shape.clone()).unwrap();
                    match name.as_str() {
                        "mse" => loss::mse(g, x, y),
                        "l1" => loss::l1(g, x, y),
                        "bce_with_logits" => loss::bce_with_logits(g, x, y),
                        other => panic!("the fixture has a loss Kiln does not map: {other}"),
                    }
                };
                vec![l.unwrap()]
            },
        );
        let what = format!("{name} {p}");
        check(&format!("{what}: value"), &v[0], &[num(e, "value") as f32], t);
        check(&format!("{what}: gradient"), &d[0], &vec_f32(&e["dinput"]), t);
    }
}

/// The optimiser PyTorch's constructor arguments describe.
fn optimizer(name: &str, p: &Value) -> Optimizer {
    let lr = num(p, "lr") as f32;
    let wd = p["weight_decay"].as_f64().unwrap_or(0.0) as f32;
    let betas = |p: &Value| {
        let b = p["betas"]
            .as_array()
            .map(|b| (b[0].as_f64().unwrap(), b[1].as_f64().unwrap()));
        b.unwrap_or((0.9, 0.999))
    };
    let kind = match name {
        "sgd" | "sgd_wd" => OptimizerKind::Sgd,
        "momentum" => OptimizerKind::Momentum {
            momentum: num(p, "momentum"),
        },
        "nesterov" => OptimizerKind::Nesterov {
            momentum: num(p, "momentum"),
        },
        "adagrad" => OptimizerKind::AdaGrad { eps: num(p, "eps") },
        n if n.starts_with("rmsprop") => OptimizerKind::RmsProp {
            rho: num(p, "alpha"),
            eps: num(p, "eps"),
            momentum: p["momentum"].as_f64().unwrap_or(0.0),
            centered: p["centered"].as_bool().unwrap_or(false),
        },
        "adam" | "adam_wd" => OptimizerKind::Adam {
            beta1: betas(p).0,
            beta2: betas(p).1,
            eps: p["eps"].as_f64().unwrap_or(1e-8),
        },
        "adamw" => OptimizerKind::AdamW {
            beta1: betas(p).0,
            beta2: betas(p).1,
            eps: p["eps"].as_f64().unwrap_or(1e-8),
        },
        other => panic!("the fixture has an optimiser Kiln does not map: {other}"),
    };
    Optimizer {
        kind,
        schedule: Schedule::Constant(lr),
        weight_decay: wd,
        clip: vec![],
    }
}

fn optimizers<B: Backend>(b: &B, t: Tol) {
    let f = fixture();
    for e in f["optimizers"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        let opt = optimizer(name, &e["params"]);
        let shape = dims(&e["shape"]);
        // loss = Σ p ⊙ g makes the gradient exactly the fed g.
        let mut g = Graph::new();
        let w = g.param("w", shape.clone(), Init::Zeros).unwrap();
        let gin = g.input("g", shape).unwrap();
        let prod = g.mul(w, gin).unwrap();
        let l = g.sum_all(prod).unwrap();
        let grads = kiln::backward(&mut g, l).unwrap();
        let mut store = ParamStore::new(b, &g, 0).unwrap();
        store.set("w", &vec_f32(&e["p0"])).unwrap();
        let mut prog = Program::compile(&g, &mut store, &[l], Some(Training::new(&grads, &opt))).unwrap();
        for (k, (gk, after)) in e["grads"]
            .as_array()
            .unwrap()
            .iter()
            .zip(e["after"].as_array().unwrap())
            .enumerate()
        {
            prog.run(&[("g", Feed::F32(&vec_f32(gk)))]).unwrap();
            let got = store.get("w").unwrap().data;
            check(
                &format!("{name} {} after step {}", e["params"], k + 1),
                &got,
                &vec_f32(after),
                t,
            );
        }
    }
}

#[test]
fn activations_match_pytorch_cpu() {
    activations(&Cpu, TOL);
}

#[test]
fn activations_match_pytorch_gpu() {
    let Some(gpu) = gpu() else { return };
    activations(&gpu, TOL);
}

#[test]
fn losses_match_pytorch_cpu() {
    losses(&Cpu, TOL);
}

#[test]
fn losses_match_pytorch_gpu() {
    let Some(gpu) = gpu() else { return };
    losses(&gpu, TOL);
}

#[test]
fn optimisers_match_pytorch_cpu() {
    optimizers(&Cpu, TOL);
}

#[test]
fn optimisers_match_pytorch_gpu() {
    let Some(gpu) = gpu() else { return };
    optimizers(&gpu, TOL);
}
