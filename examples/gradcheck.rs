//! Gradient checking as a practice: compare autodiff's gradients with central finite
//! differences on a small network, and see the check fail for the two reasons it fails in f32 —
//! a step so small that rounding swamps the difference, and a kink (ReLU at 0) within the step.
//!
//! cargo run --release --example gradcheck

use kiln::gradcheck::{self, Config};
use kiln::{loss, nn, Cpu, Feed, Graph, Init, ParamStore};

fn main() -> kiln::Result<()> {
    // A 3-4-2 network with tanh and a cross-entropy loss.
    let mut g = Graph::new();
    let x = g.input("x", [5, 3])?;
    let y = g.labels("y", [5], 2)?;
    let h = nn::Linear::new(&mut g, "l1", 3, 4)?.forward(&mut g, x)?;
    let h = g.tanh(h)?;
    let logits = nn::Linear::new(&mut g, "l2", 4, 2)?.forward(&mut g, h)?;
    let l = loss::cross_entropy(&mut g, logits, y)?;
    let mut store = ParamStore::new(&Cpu, &g, 3)?;
    let xs: Vec<f32> = (0..15).map(|i| ((i * 7 % 11) as f32 - 5.0) / 4.0).collect();
    let feeds = [("x", Feed::F32(&xs)), ("y", Feed::Labels(&[0, 1, 1, 0, 1]))];

    let ok = gradcheck::check(&g, &mut store, l, &feeds, Config::default())?;
    println!(
        "tanh MLP, eps 1e-2:        {}",
        if ok.passed() { "passes" } else { "FAILS" }
    );
    println!("  {ok}");

    // Too small a step: f32 rounding of the loss (~1e-7 relative) divided by 2·eps dominates.
    let tiny = Config {
        eps: 1e-6,
        ..Config::default()
    };
    let r = gradcheck::check(&g, &mut store, l, &feeds, tiny)?;
    println!(
        "tanh MLP, eps 1e-6:        {}",
        if r.passed() { "passes" } else { "FAILS" }
    );
    println!("  {}", r.to_string().lines().next().unwrap_or_default());

    // A kink within the step: ReLU at exactly 0 has a one-sided derivative the secant misses.
    let mut g = Graph::new();
    let w = g.param("w", [4], Init::Zeros)?;
    let r = g.relu(w)?;
    let l = g.sum_all(r)?;
    let mut store = ParamStore::new(&Cpu, &g, 0)?;
    store.set("w", &[-1.0, 0.0, 0.005, 1.0])?;
    let kink = gradcheck::check(&g, &mut store, l, &[], Config::default())?;
    println!(
        "relu at -1, 0, 0.005, 1:   {}",
        if kink.passed() { "passes" } else { "FAILS" }
    );
    println!("  {kink}");
    Ok(())
}
