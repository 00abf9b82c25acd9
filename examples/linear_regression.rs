//! Linear regression three ways, printed side by side: the closed-form normal equations
//! `w = (XᵀX)⁻¹Xᵀy`, gradient descent on the mean squared error, and a single Newton step
//! `w₁ = w₀ − H⁻¹∇L`, which for a quadratic loss lands on the minimum at once. Kiln computes the
//! gradient and the Hessian `H = 2XᵀX/n` as graph nodes; the host solves the small systems.
//!
//! cargo run --release --example linear_regression

use kiln::{backward, loss, nn, rng::Rng, Cpu, Feed, Graph, Init, Optimizer, ParamStore, Program, Training};

/// Solve `A x = b` (Gaussian elimination with partial pivoting, f64). Index loops read like the
/// textbook algorithm.
#[allow(clippy::needless_range_loop)]
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for c in 0..n {
        let p = (c..n)
            .max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))
            .unwrap_or(c);
        a.swap(c, p);
        b.swap(c, p);
        for r in c + 1..n {
            let f = a[r][c] / a[c][c];
            for k in c..n {
                a[r][k] -= f * a[c][k];
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        x[r] = (b[r] - (r + 1..n).map(|k| a[r][k] * x[k]).sum::<f64>()) / a[r][r];
    }
    x
}

fn main() -> kiln::Result<()> {
    let (n, d) = (200, 3);
    let true_w = [2.0f32, -3.0, 0.5];
    let true_b = 1.0f32;
    // Features with a bias column of ones, so the intercept is just another weight.
    let mut rng = Rng::new(7);
    let mut xs = Vec::with_capacity(n * (d + 1));
    let mut ys = Vec::with_capacity(n);
    for _ in 0..n {
        let f: Vec<f32> = (0..d).map(|_| rng.normal()).collect();
        ys.push(f.iter().zip(true_w).map(|(a, b)| a * b).sum::<f32>() + true_b + 0.1 * rng.normal());
        xs.extend(f);
        xs.push(1.0);
    }

    let mut g = Graph::new();
    let x = g.input("x", [n, d + 1])?;
    let y = g.input("y", [n, 1])?;
    let lin = nn::Linear::with_init(&mut g, "w", d + 1, 1, Init::Zeros, false)?;
    let pred = lin.forward(&mut g, x)?;
    let mse = loss::mse(&mut g, pred, y)?;
    let grads = backward(&mut g, mse)?;
    let grad_w = grads.of(&g, lin.w).expect("the loss depends on w");
    // H = 2XᵀX/n and Xᵀy, as graph nodes.
    let xtx = g.matmul_t(x, x, true, false)?;
    let hess = g.mul_scalar(xtx, 2.0 / n as f32)?;
    let xty = g.matmul_t(x, y, true, false)?;

    let mut store = ParamStore::new(&Cpu, &g, 0)?;
    let feeds = [("x", Feed::F32(&xs)), ("y", Feed::F32(&ys))];
    let mut stats = Program::compile(&g, &mut store, &[xtx, xty, hess, grad_w, mse], None)?;
    let out = stats.run(&feeds)?;
    let to_rows = |t: &kiln::Tensor| -> Vec<Vec<f64>> {
        t.data
            .chunks(d + 1)
            .map(|r| r.iter().map(|&v| v as f64).collect())
            .collect()
    };
    let to_vec = |t: &kiln::Tensor| -> Vec<f64> { t.data.iter().map(|&v| v as f64).collect() };

    // 1. Closed form.
    let closed = solve(to_rows(out.get(xtx)?), to_vec(out.get(xty)?));
    // 2. One Newton step from w₀ = 0: w₁ = −H⁻¹∇L(0).
    let step = solve(to_rows(out.get(hess)?), to_vec(out.get(grad_w)?));
    let newton: Vec<f64> = step.iter().map(|s| -s).collect();
    // 3. Gradient descent.
    let opt = Optimizer::sgd(0.1);
    let mut train = Program::compile(&g, &mut store, &[mse], Some(Training::new(&grads, &opt)))?;
    let mut last = 0.0;
    for _ in 0..500 {
        last = train.run(&feeds)?.scalar(mse)?;
    }
    let gd = store.get("w.w")?.data;

    println!(
        "{:>10} {:>10} {:>12} {:>14} {:>12}",
        "", "true", "closed form", "grad. descent", "Newton (1)"
    );
    let names = ["w1", "w2", "w3", "bias"];
    let truth: Vec<f32> = true_w.iter().copied().chain([true_b]).collect();
    for i in 0..=d {
        println!(
            "{:>10} {:>10.4} {:>12.6} {:>14.6} {:>12.6}",
            names[i], truth[i], closed[i], gd[i], newton[i]
        );
    }
    let gap = closed
        .iter()
        .zip(&gd)
        .map(|(c, g)| (c - *g as f64).abs())
        .fold(0.0, f64::max);
    println!("\ngradient descent: 500 SGD steps at lr 0.1, final MSE {last:.6}, max |w − closed form| = {gap:.2e}");
    println!("Newton: one step from zero reaches the minimum of a quadratic loss.");
    Ok(())
}
