//! Helpers shared by the test suites: tolerant comparison and gradient checking.
#![allow(dead_code)]

use kiln::{gradients, Cpu, Feed, Graph, Init, NodeId, ParamStore, Program};

/// `|a − e| ≤ atol + rtol·|e|` for every element, or a message naming the worst element.
pub fn check_close(actual: &[f32], expected: &[f32], atol: f32, rtol: f32) -> Result<(), String> {
    if actual.len() != expected.len() {
        return Err(format!("length {} vs expected {}", actual.len(), expected.len()));
    }
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let ok = (a - e).abs() <= atol + rtol * e.abs();
        if !ok || a.is_nan() != e.is_nan() {
            return Err(format!("element {i}: got {a}, expected {e} (atol {atol}, rtol {rtol})"));
        }
    }
    Ok(())
}

/// Panic unless `actual` is close to `expected` (see [`check_close`]).
#[track_caller]
pub fn assert_close(actual: &[f32], expected: &[f32], atol: f32, rtol: f32) {
    if let Err(e) = check_close(actual, expected, atol, rtol) {
        panic!("{e}\n  actual:   {actual:?}\n  expected: {expected:?}");
    }
}

/// Deterministic pseudo-random values in `[lo, hi)`.
pub fn values(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    let k = kiln::rng::key(seed, "test");
    (0..n as u64)
        .map(|i| lo + (hi - lo) * kiln::rng::uniform(k, i))
        .collect()
}

/// Values with magnitude in `[0.2, 2)` and random sign: safely away from the kinks at 0.
pub fn away_from_zero(seed: u64, n: usize) -> Vec<f32> {
    values(seed, n, -1.8, 1.8)
        .into_iter()
        .map(|v| if v < 0.0 { v - 0.2 } else { v + 0.2 })
        .collect()
}

/// Distinct values spaced 0.1 apart in a shuffled order: no ties, no near-ties for max.
pub fn distinct(seed: u64, n: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..n).map(|i| (i as f32 - n as f32 / 2.0) * 0.1).collect();
    kiln::rng::Rng::new(seed).shuffle(&mut v);
    v
}

/// One tensor the check differentiates with respect to: name, shape, values.
pub struct Arg {
    pub name: &'static str,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

pub fn arg(name: &'static str, shape: &[usize], data: Vec<f32>) -> Arg {
    assert_eq!(shape.iter().product::<usize>(), data.len(), "test argument {name}");
    Arg {
        name,
        shape: shape.to_vec(),
        data,
    }
}

/// Settings of a finite-difference check.
#[derive(Clone, Copy)]
pub struct Tol {
    pub eps: f32,
    pub atol: f32,
    pub rtol: f32,
}

/// Central differences in f32 (the reference backend computes in f32).
/// eps = 1e-2: the truncation error is eps²·|f'''|/6 ≈ 2e-5·|f'''|, and the rounding error of the
/// difference quotient is about ulp(L)/eps ≈ 1.2e-7·|L|/1e-2 ≈ 1e-5·|L| for the O(1) losses
/// below. Comparing with atol 2e-3 and rtol 1e-2 leaves a margin of ~100× over both while still
/// failing a gradient that is 5% off (see `gradcheck_catches_a_wrong_gradient`).
pub const TOL: Tol = Tol {
    eps: 1e-2,
    atol: 2e-3,
    rtol: 1e-2,
};

/// Analytic and numeric gradients of `L = Σ w ⊙ f(args)` with respect to each arg, where `w` is
/// a fixed random weighting so that every output element matters.
pub fn gradients_of(
    build: &dyn Fn(&mut Graph, &[NodeId]) -> kiln::Result<NodeId>,
    args: &[Arg],
    feeds: &[(&str, Feed<'_>)],
    eps: f32,
) -> Vec<(Vec<f32>, Vec<f32>)> {
    let mut g = Graph::new();
    let nodes: Vec<NodeId> = args
        .iter()
        .map(|a| g.param(a.name, a.shape.clone(), Init::Zeros).unwrap())
        .collect();
    let out = build(&mut g, &nodes).expect("building the checked expression");
    let w = g.input("__w", g.shape(out).clone()).unwrap();
    let weighted = g.mul(out, w).unwrap();
    let loss = g.sum_all(weighted).unwrap();
    let grads = gradients(&mut g, loss, &nodes).expect("backward");
    let grads: Vec<NodeId> = grads
        .into_iter()
        .map(|x| x.expect("the output depends on every argument"))
        .collect();
    let mut store = ParamStore::new(&Cpu, &g, 0).unwrap();
    for a in args {
        store.set(a.name, &a.data).unwrap();
    }
    let mut fetch = vec![loss];
    fetch.extend(&grads);
    let mut prog = Program::compile(&g, &mut store, &fetch, None).unwrap();
    let wv = values(99, g.shape(out).numel(), 0.5, 1.5);
    let mut all: Vec<(&str, Feed<'_>)> = feeds.to_vec();
    all.push(("__w", Feed::F32(&wv)));
    let out0 = prog.run(&all).expect("running the checked expression");
    let analytic: Vec<Vec<f32>> = grads.iter().map(|&gn| out0.get(gn).unwrap().data.clone()).collect();
    let mut result = Vec::new();
    for (ai, a) in args.iter().enumerate() {
        let mut numeric = vec![0f32; a.data.len()];
        for j in 0..a.data.len() {
            let mut d = a.data.clone();
            d[j] = a.data[j] + eps;
            store.set(a.name, &d).unwrap();
            let lp = prog.run(&all).unwrap().scalar(loss).unwrap();
            d[j] = a.data[j] - eps;
            store.set(a.name, &d).unwrap();
            let lm = prog.run(&all).unwrap().scalar(loss).unwrap();
            numeric[j] = (lp - lm) / (2.0 * eps);
        }
        store.set(a.name, &a.data).unwrap();
        result.push((analytic[ai].clone(), numeric));
    }
    result
}

/// Check every argument's gradient; `Err` names the argument and element that disagree.
pub fn gradcheck_with(
    build: &dyn Fn(&mut Graph, &[NodeId]) -> kiln::Result<NodeId>,
    args: &[Arg],
    feeds: &[(&str, Feed<'_>)],
    tol: Tol,
) -> Result<(), String> {
    for (a, (an, nu)) in args.iter().zip(gradients_of(build, args, feeds, tol.eps)) {
        check_close(&an, &nu, tol.atol, tol.rtol)
            .map_err(|e| format!("gradient of `{}`: {e}\n  analytic {an:?}\n  numeric  {nu:?}", a.name))?;
    }
    Ok(())
}

/// [`gradcheck_with`] at the standard tolerance, panicking on failure.
#[track_caller]
pub fn gradcheck(
    build: &dyn Fn(&mut Graph, &[NodeId]) -> kiln::Result<NodeId>,
    args: &[Arg],
    feeds: &[(&str, Feed<'_>)],
) {
    if let Err(e) = gradcheck_with(build, args, feeds, TOL) {
        panic!("{e}");
    }
}

/// The GPU for tests: shared per test binary so pipelines compile once. `None` (with a printed
/// line) when there is no adapter, unless `KILN_REQUIRE_GPU=1`, which makes that a failure.
pub fn gpu() -> Option<kiln::Gpu> {
    static GPU: std::sync::OnceLock<Option<kiln::Gpu>> = std::sync::OnceLock::new();
    GPU.get_or_init(|| match kiln::Gpu::new(std::env::var("KILN_ADAPTER").ok().as_deref()) {
        Ok(g) => Some(g),
        Err(e) => {
            if std::env::var("KILN_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("KILN_REQUIRE_GPU=1 but no GPU: {e}");
            }
            eprintln!("skipping GPU tests: {e}");
            None
        }
    })
    .clone()
}

/// Forward value of `f(args)` and the gradients of `Σ w ⊙ f(args)` w.r.t. each arg, on `backend`.
pub fn forward_and_grads<B: kiln::Backend>(
    backend: &B,
    build: &dyn Fn(&mut Graph, &[NodeId]) -> kiln::Result<NodeId>,
    args: &[Arg],
    feeds: &[(&str, Feed<'_>)],
) -> Vec<Vec<f32>> {
    let mut g = Graph::new();
    let nodes: Vec<NodeId> = args
        .iter()
        .map(|a| g.param(a.name, a.shape.clone(), Init::Zeros).unwrap())
        .collect();
    let out = build(&mut g, &nodes).expect("building the expression");
    let w = g.input("__w", g.shape(out).clone()).unwrap();
    let weighted = g.mul(out, w).unwrap();
    let loss = g.sum_all(weighted).unwrap();
    let grads: Vec<NodeId> = gradients(&mut g, loss, &nodes).unwrap().into_iter().flatten().collect();
    let mut store = ParamStore::new(backend, &g, 0).unwrap();
    for a in args {
        store.set(a.name, &a.data).unwrap();
    }
    let mut fetch = vec![out];
    fetch.extend(&grads);
    let mut prog = Program::compile(&g, &mut store, &fetch, None).expect("compiling");
    let wv = values(99, g.shape(out).numel(), 0.5, 1.5);
    let mut all: Vec<(&str, Feed<'_>)> = feeds.to_vec();
    all.push(("__w", Feed::F32(&wv)));
    let res = prog.run(&all).expect("running");
    fetch.iter().map(|&f| res.get(f).unwrap().data.clone()).collect()
}

/// GPU results of `build` match the CPU reference, forward and backward.
#[track_caller]
pub fn parity(
    build: &dyn Fn(&mut Graph, &[NodeId]) -> kiln::Result<NodeId>,
    args: &[Arg],
    feeds: &[(&str, Feed<'_>)],
    atol: f32,
    rtol: f32,
) {
    let Some(gpu) = gpu() else { return };
    let cpu = forward_and_grads(&Cpu, build, args, feeds);
    let dev = forward_and_grads(&gpu, build, args, feeds);
    for (i, (c, d)) in cpu.iter().zip(&dev).enumerate() {
        let what = if i == 0 {
            "forward".to_string()
        } else {
            format!("gradient of `{}`", args[i - 1].name)
        };
        if let Err(e) = check_close(d, c, atol, rtol) {
            panic!("{what}: GPU vs CPU: {e}");
        }
    }
}

/// One test body, run on every backend (Candle's `test_device!`):
///
/// ```ignore
/// backend_test!(fn frozen_parameters_are_not_updated(dev) {
///     let mut store = ParamStore::new(dev, &g, 1).unwrap();
///     ...
/// });
/// ```
///
/// defines `fn frozen_parameters_are_not_updated<B: kiln::Backend>(dev: &B)` and, in a module of
/// the same name, the tests `cpu` (the reference backend) and `gpu` (the shared [`gpu`], which
/// skips with a printed line when there is no adapter unless `KILN_REQUIRE_GPU=1`). Filter
/// with `cargo test ::gpu` or `cargo test ::cpu`.
#[allow(unused_macros)]
macro_rules! backend_test {
    ($(#[$meta:meta])* fn $name:ident($b:ident) $body:block) => {
        $(#[$meta])*
        fn $name<B: kiln::Backend>($b: &B) $body

        mod $name {
            #[test]
            fn cpu() {
                super::$name(&kiln::Cpu);
            }

            #[test]
            fn gpu() {
                if let Some(g) = crate::common::gpu() {
                    super::$name(&g);
                }
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use backend_test;
