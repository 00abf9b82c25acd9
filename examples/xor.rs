//! XOR: the classic demonstration that a linear model cannot separate classes that a network
//! with one hidden layer can. Trains both on the four XOR points and prints what each learned.
//!
//! cargo run --release --example xor

use kiln::{backward, loss, nn, Cpu, Feed, Graph, Init, NodeId, Optimizer, ParamStore, Program, Training};

const XS: [f32; 8] = [0., 0., 0., 1., 1., 0., 1., 1.];
const YS: [u32; 4] = [0, 1, 1, 0];

/// Train `model` (which maps x (4, 2) to logits (4, 2)) for `steps` Adam steps and return its
/// predictions and final loss.
fn train(name: &str, model: impl Fn(&mut Graph, NodeId) -> kiln::Result<NodeId>, steps: usize) -> kiln::Result<()> {
    let mut g = Graph::new();
    let x = g.input("x", [4, 2])?;
    let y = g.labels("y", [4], 2)?;
    let logits = model(&mut g, x)?;
    let loss = loss::cross_entropy(&mut g, logits, y)?;
    let grads = backward(&mut g, loss)?;
    let mut store = ParamStore::new(&Cpu, &g, 3)?;
    let opt = Optimizer::adam(0.03);
    let mut step = Program::compile(&g, &mut store, &[loss], Some(Training::new(&grads, &opt)))?;
    let mut eval = Program::compile(&g, &mut store, &[logits, loss], None)?;
    let feeds = [("x", Feed::F32(&XS)), ("y", Feed::Labels(&YS))];
    for _ in 0..steps {
        step.run(&feeds)?;
    }
    let out = eval.run(&feeds)?;
    let logits_t = out.get(logits)?;
    let pred = logits_t.argmax_rows();
    println!(
        "{name:<28} loss {:.4}  accuracy {:>5.1}%  predictions {:?} (targets {:?})",
        out.scalar(loss)?,
        100.0 * loss::accuracy(logits_t, &YS),
        pred,
        YS
    );
    Ok(())
}

fn main() -> kiln::Result<()> {
    println!("XOR on four points, 400 Adam steps each:");
    train(
        "linear model (2 → 2)",
        |g, x| nn::Linear::new(g, "lin", 2, 2)?.forward(g, x),
        400,
    )?;
    train(
        "MLP (2 → 16 ReLU → 2)",
        |g, x| {
            let h = nn::Linear::with_init(g, "l1", 2, 16, Init::HeUniform, true)?.forward(g, x)?;
            let h = g.relu(h)?;
            nn::Linear::new(g, "l2", 16, 2)?.forward(g, h)
        },
        400,
    )?;
    println!("A linear decision boundary gets at most 3 of the 4 points; one hidden layer gets all 4.");
    Ok(())
}
