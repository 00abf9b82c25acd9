//! Sequence ops and layers: gradients against central finite differences (CPU, f32, see
//! `common::TOL`), the GPU against the CPU on awkward sizes (H = 1, 7, 33; batch 1; T = 1 and
//! T = 17), the slice-gradient join, and state carried between runs.

mod common;

use common::*;
use kiln::nn::{Cell, Embedding, Recurrent};
use kiln::{Cpu, Feed, Graph, Init, NodeId, Op, ParamStore, Program};

/// Parameter names of layer `l` of a recurrent layer called `r`, as `Recurrent` creates them.
fn layer_args(cell: Cell, l: usize, input: usize, hidden: usize, seed: u64) -> Vec<Arg> {
    let gh = cell.gates() * hidden;
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    vec![
        arg(
            leak(format!("r.weight_ih_l{l}")),
            &[gh, input],
            away_from_zero(seed, gh * input),
        ),
        arg(
            leak(format!("r.weight_hh_l{l}")),
            &[gh, hidden],
            away_from_zero(seed + 1, gh * hidden),
        ),
        arg(leak(format!("r.bias_ih_l{l}")), &[gh], away_from_zero(seed + 2, gh)),
        arg(leak(format!("r.bias_hh_l{l}")), &[gh], away_from_zero(seed + 3, gh)),
    ]
}

/// Scale every weight so activations stay in the cells' sensitive range.
fn scaled(mut args: Vec<Arg>, s: f32) -> Vec<Arg> {
    for a in &mut args {
        for v in &mut a.data {
            *v *= s;
        }
    }
    args
}

/// `x (T, N, I)`, every layer's weights, and (optionally) `h0`, `c0`, as arguments; the checked
/// output is `[output; h_T; c_T]` along the time axis.
fn recurrent_case(
    cell: Cell,
    t: usize,
    n: usize,
    input: usize,
    hidden: usize,
    layers: usize,
    with_state: bool,
) -> (Vec<Arg>, impl Fn(&mut Graph, &[NodeId]) -> kiln::Result<NodeId>) {
    let mut args = vec![arg("x", &[t, n, input], away_from_zero(1, t * n * input))];
    for l in 0..layers {
        let i = if l == 0 { input } else { hidden };
        args.extend(scaled(layer_args(cell, l, i, hidden, 10 + 4 * l as u64), 0.5));
    }
    let s = layers * n * hidden;
    if with_state {
        args.push(arg("h0", &[layers, n, hidden], scaled_vals(away_from_zero(50, s), 0.5)));
        if cell.has_cell_state() {
            args.push(arg("c0", &[layers, n, hidden], away_from_zero(51, s)));
        }
    }
    let nargs = args.len();
    let build = move |g: &mut Graph, v: &[NodeId]| {
        let r = Recurrent::new(g, "r", cell, input, hidden, layers)?;
        let (h0, c0) = if with_state {
            (
                Some(v[nargs - 1 - cell.has_cell_state() as usize]),
                cell.has_cell_state().then(|| v[nargs - 1]),
            )
        } else {
            (None, None)
        };
        let o = r.forward(g, v[0], h0, c0)?;
        let mut parts = vec![o.output, o.h];
        parts.extend(o.c);
        g.concat(&parts, 0)
    };
    (args, build)
}

fn scaled_vals(mut v: Vec<f32>, s: f32) -> Vec<f32> {
    for x in &mut v {
        *x *= s;
    }
    v
}

#[test]
fn cells_match_finite_differences() {
    // LSTM cell: gates spread over the sigmoid/tanh range, both outputs used.
    gradcheck(
        &|g: &mut Graph, v: &[NodeId]| g.lstm_cell(v[0], v[1]),
        &[
            arg("gates", &[3, 8], scaled_vals(away_from_zero(1, 24), 1.5)),
            arg("c", &[3, 2], away_from_zero(2, 6)),
        ],
        &[],
    );
    // GRU cell: every row of its output (h' and the saved activations) carries weight.
    gradcheck(
        &|g: &mut Graph, v: &[NodeId]| g.gru_cell(v[0], v[1], v[2]),
        &[
            arg("xw", &[2, 9], away_from_zero(3, 18)),
            arg("hw", &[2, 9], away_from_zero(4, 18)),
            arg("h", &[2, 3], away_from_zero(5, 6)),
        ],
        &[],
    );
}

#[test]
fn embedding_gradient_sums_repeated_ids() {
    let ids = [2u32, 0, 2, 4, 2, 1];
    gradcheck(
        &|g: &mut Graph, v: &[NodeId]| {
            let i = g.labels("ids", [2, 3], 5)?;
            g.gather_rows(v[0], i)
        },
        &[arg("table", &[5, 3], away_from_zero(6, 15))],
        &[("ids", Feed::Labels(&ids))],
    );
    // Through the layer, whose parameter is `{name}.weight`.
    gradcheck(
        &|g: &mut Graph, _v: &[NodeId]| {
            let e = Embedding::new(g, "emb", 5, 3)?;
            let i = g.labels("ids", [6], 5)?;
            let y = e.forward(g, i)?;
            g.tanh(y)
        },
        &[arg("emb.weight", &[5, 3], away_from_zero(7, 15))],
        &[("ids", Feed::Labels(&ids))],
    );
}

#[test]
fn recurrent_layers_match_finite_differences_through_time_and_the_initial_state() {
    for cell in [Cell::Tanh, Cell::Relu, Cell::Lstm, Cell::Gru] {
        for (t, layers, state) in [(4, 1, true), (3, 2, true), (3, 2, false)] {
            let (args, build) = recurrent_case(cell, t, 2, 3, 2, layers, state);
            if let Err(e) = gradcheck_with(&build, &args, &[], TOL) {
                panic!("{cell:?}, T = {t}, {layers} layers, initial state {state}: {e}");
            }
        }
    }
}

#[test]
fn time_steps_join_into_one_concatenation_not_a_sum_of_padded_copies() {
    // Cutting a (T, N, F) tensor into its T steps and using each: the gradient of the whole is
    // one concat of the steps' gradients (no pad), and it is right.
    let build = |g: &mut Graph, v: &[NodeId]| {
        let steps: Vec<NodeId> = (0..5)
            .map(|s| {
                let x = g.slice(v[0], 0, s, s + 1)?;
                g.mul_scalar(x, (s + 1) as f32)
            })
            .collect::<kiln::Result<_>>()?;
        let y = g.concat(&steps, 0)?;
        g.tanh(y)
    };
    gradcheck(&build, &[arg("x", &[5, 2, 3], away_from_zero(8, 30))], &[]);
    let mut g = Graph::new();
    let x = g.param("x", [5, 2, 3], Init::Zeros).unwrap();
    let y = build(&mut g, &[x]).unwrap();
    let l = g.sum_all(y).unwrap();
    let before = g.nodes().len();
    kiln::gradients(&mut g, l, &[x]).unwrap();
    let added = &g.nodes()[before..];
    assert!(
        added.iter().all(|n| !matches!(n.op, Op::Pad { .. })),
        "the join padded a step"
    );
    assert!(added.iter().any(|n| matches!(n.op, Op::Concat { axis: 0 })));
}

#[test]
fn a_weight_used_at_every_step_gets_its_gradient_from_one_product() {
    let mut g = Graph::new();
    let r = Recurrent::lstm(&mut g, "r", 3, 5, 1).unwrap();
    let x = g.input("x", [9, 2, 3]).unwrap();
    let o = r.forward(&mut g, x, None, None).unwrap();
    let l = g.sum_all(o.output).unwrap();
    let grads = kiln::backward(&mut g, l).unwrap();
    let w_hh = g.params().iter().find(|p| p.name == "r.weight_hh_l0").unwrap().node;
    let d = grads.of(&g, w_hh).unwrap();
    // The gradient node is the product itself, over all 8 steps that read W_hh.
    assert!(
        matches!(g.node(d).op, Op::MatMul { ta: true, tb: false }),
        "{:?}",
        g.node(d).op
    );
    let a = g.node(d).inputs[0];
    assert_eq!(g.shape(a).dims(), &[16, 20]);
}

#[test]
fn gpu_matches_cpu_on_awkward_sizes() {
    // (cell, T, N, I, H, layers)
    let shapes = [
        (1, 1, 1, 1),  // T, N, I, H
        (17, 1, 5, 7), // a long sequence, batch 1
        (3, 5, 9, 33), // H not a multiple of anything
    ];
    for cell in [Cell::Tanh, Cell::Lstm, Cell::Gru] {
        for &(t, n, i, h) in &shapes {
            let (args, build) = recurrent_case(cell, t, n, i, h, 2, true);
            parity(&build, &args, &[], 1e-4, 1e-3);
        }
    }
    let ids: Vec<u32> = (0..34).map(|k| (k * 7 % 5) as u32).collect();
    parity(
        &|g: &mut Graph, v: &[NodeId]| {
            let i = g.labels("ids", [2, 17], 5)?;
            g.gather_rows(v[0], i)
        },
        &[arg("table", &[5, 33], away_from_zero(9, 165))],
        &[("ids", Feed::Labels(&ids))],
        1e-5,
        1e-5,
    );
}

#[test]
fn carried_state_continues_a_sequence_across_runs_and_resets() {
    // An LSTM over 6 steps in one run equals two runs of 3 steps with the state carried.
    let (n, i, h) = (2, 3, 4);
    let x = away_from_zero(3, 6 * n * i);
    let run = |t: usize, windows: &[&[f32]]| -> Vec<Vec<f32>> {
        let mut g = Graph::new();
        let r = Recurrent::lstm(&mut g, "r", i, h, 2).unwrap();
        let xi = g.input("x", [t, n, i]).unwrap();
        let h0 = g.input("h0", r.state_shape(n)).unwrap();
        let c0 = g.input("c0", r.state_shape(n)).unwrap();
        let o = r.forward(&mut g, xi, Some(h0), Some(c0)).unwrap();
        let c = o.c.unwrap();
        let mut store = ParamStore::new(&Cpu, &g, 7).unwrap();
        let mut p = Program::compile(&g, &mut store, &[o.output, o.h, c], None).unwrap();
        p.carry(o.h, "h0").unwrap();
        p.carry(c, "c0").unwrap();
        let mut outs = vec![];
        for w in windows {
            outs.push(
                p.run(&[("x", Feed::F32(w))])
                    .unwrap()
                    .get(o.output)
                    .unwrap()
                    .data
                    .clone(),
            );
        }
        // After a reset the first window gives what it gave the first time.
        p.reset_carried().unwrap();
        outs.push(
            p.run(&[("x", Feed::F32(windows[0]))])
                .unwrap()
                .get(o.output)
                .unwrap()
                .data
                .clone(),
        );
        outs
    };
    let whole = run(6, &[&x]);
    let half = n * i * 3;
    let parts = run(3, &[&x[..half], &x[half..]]);
    let joined: Vec<f32> = parts[0].iter().chain(&parts[1]).copied().collect();
    assert_close(&joined, &whole[0], 1e-6, 1e-5);
    assert_eq!(parts[2], parts[0]);
}

#[test]
fn carry_checks_what_it_is_given() {
    let mut g = Graph::new();
    let x = g.input("x", [2, 3]).unwrap();
    let s = g.input("s", [2, 4]).unwrap();
    let y = g.tanh(x).unwrap();
    let mut store = ParamStore::new(&Cpu, &g, 0).unwrap();
    let mut p = Program::compile(&g, &mut store, &[y], None).unwrap();
    let e = p.carry(y, "s").unwrap_err().to_string();
    assert!(e.contains("[2, 3]") && e.contains("[2, 4]"), "{e}");
    let e = p.carry(y, "nope").unwrap_err().to_string();
    assert!(e.contains("nope"), "{e}");
    let _ = s;
    let e = p.carry(x, "x").unwrap_err().to_string();
    assert!(e.contains("not fetched"), "{e}");
}

/// Learn to echo the symbol seen two steps earlier (vocabulary 4, windows of 8): embedding →
/// recurrent layer → linear, 150 Adam steps; accuracy on the steps that have an answer.
fn learns_delayed_echo<B: kiln::Backend>(dev: &B, cell: Cell) -> f32 {
    let (t, n, v, h) = (8, 16, 4, 16);
    let mut g = Graph::new();
    let emb = Embedding::new(&mut g, "emb", v, 8).unwrap();
    let rnn = Recurrent::new(&mut g, "rnn", cell, 8, h, 1).unwrap();
    let head = kiln::nn::Linear::new(&mut g, "head", h, v).unwrap();
    let x = g.labels("x", [t, n], v).unwrap();
    let y = g.labels("y", [t * n], v).unwrap();
    let e = emb.forward(&mut g, x).unwrap();
    let o = rnn.forward(&mut g, e, None, None).unwrap();
    let flat = g.reshape(o.output, [t * n, h]).unwrap();
    let logits = head.forward(&mut g, flat).unwrap();
    let l = kiln::loss::cross_entropy(&mut g, logits, y).unwrap();
    let grads = kiln::backward(&mut g, l).unwrap();
    let mut store = ParamStore::new(dev, &g, 3).unwrap();
    let opt = kiln::Optimizer::adam(1e-2).clip_norm(5.0);
    let mut p = Program::compile(&g, &mut store, &[l, logits], Some(kiln::Training::new(&grads, &opt))).unwrap();
    let mut rng = kiln::rng::Rng::new(11);
    let mut batch = || {
        let xs: Vec<u32> = (0..t * n).map(|_| rng.below(v) as u32).collect();
        // Time-major: step s of lane b is xs[s·n + b]; the answer at s is the input at s − 2.
        let ys: Vec<u32> = (0..t * n).map(|i| if i >= 2 * n { xs[i - 2 * n] } else { 0 }).collect();
        (xs, ys)
    };
    for _ in 0..150 {
        let (xs, ys) = batch();
        p.run(&[("x", Feed::Labels(&xs)), ("y", Feed::Labels(&ys))]).unwrap();
    }
    let (xs, ys) = batch();
    let out = p.run(&[("x", Feed::Labels(&xs)), ("y", Feed::Labels(&ys))]).unwrap();
    let pred = out.get(logits).unwrap().argmax_rows();
    let hits = (2 * n..t * n).filter(|&i| pred[i] == ys[i] as usize).count();
    hits as f32 / ((t - 2) * n) as f32
}

backend_test!(fn every_recurrent_layer_learns_a_delayed_echo(dev) {
    for cell in [Cell::Tanh, Cell::Lstm, Cell::Gru] {
        let acc = learns_delayed_echo(dev, cell);
        assert!(acc > 0.9, "{cell:?} reached {:.0}% on the echo task", 100.0 * acc);
    }
});

/// A tensor of the fixture as (shape, f32 data).
fn tensor(v: &serde_json::Value) -> (Vec<usize>, Vec<f32>) {
    let shape = v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let data = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_f64().unwrap() as f32)
        .collect();
    (shape, data)
}

/// PyTorch's weights (`tools/torch_rnn_reference.py`, float64) loaded by name into Kiln's layers
/// give PyTorch's outputs, final states and gradients: the names, layouts and gate orders match.
fn matches_pytorch<B: kiln::Backend>(dev: &B) {
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/torch_rnn.json")).expect("tests/fixtures/torch_rnn.json parses");
    for (case, c) in fixture["cases"].as_object().unwrap() {
        let mut g = Graph::new();
        let mut feeds: Vec<(String, Vec<f32>)> = vec![];
        let mut checks: Vec<(String, NodeId, Vec<f32>)> = vec![];
        let mut wrt: Vec<(String, NodeId)> = vec![];
        let loss = if c["kind"] == "embedding" {
            let (ws, w) = tensor(&c["params"]["weight"]);
            let e = Embedding::new(&mut g, "emb", ws[0], ws[1]).unwrap();
            let ids: Vec<u32> = c["ids"]["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            let i = g.labels("ids", [2, 4], ws[0]).unwrap();
            let out = e.forward(&mut g, i).unwrap();
            feeds.push(("emb.weight".into(), w));
            feeds.push(("ids".into(), ids.iter().map(|&v| v as f32).collect()));
            wrt.push(("weight".into(), e.weight));
            checks.push(("out".into(), out, tensor(&c["out"]).1));
            let wo = g.input("w_out", g.shape(out).clone()).unwrap();
            feeds.push(("w_out".into(), tensor(&c["w_out"]).1));
            let t = g.mul(out, wo).unwrap();
            g.sum_all(t).unwrap()
        } else {
            let cell = match c["kind"].as_str().unwrap() {
                "lstm" => Cell::Lstm,
                "gru" => Cell::Gru,
                "rnn_tanh" => Cell::Tanh,
                "rnn_relu" => Cell::Relu,
                k => panic!("unknown kind {k}"),
            };
            let n = |k: &str| c[k].as_u64().unwrap() as usize;
            let r = Recurrent::new(&mut g, "r", cell, n("input_size"), n("hidden_size"), n("num_layers")).unwrap();
            for (name, v) in c["params"].as_object().unwrap() {
                feeds.push((format!("r.{name}"), tensor(v).1));
                let node = g
                    .params()
                    .iter()
                    .find(|p| p.name == format!("r.{name}"))
                    .unwrap_or_else(|| panic!("{case}: no parameter r.{name}"))
                    .node;
                assert_eq!(g.shape(node).dims(), &tensor(v).0[..], "{case}: shape of {name}");
                wrt.push((name.clone(), node));
            }
            let mut arg = |g: &mut Graph, k: &str| -> Option<NodeId> {
                if c[k].is_null() {
                    return None;
                }
                let (s, d) = tensor(&c[k]);
                let p = g.param(k, s, Init::Zeros).unwrap();
                feeds.push((k.into(), d));
                wrt.push((k.into(), p));
                Some(p)
            };
            let x = arg(&mut g, "x").unwrap();
            let h0 = arg(&mut g, "h0");
            let c0 = arg(&mut g, "c0");
            let o = r.forward(&mut g, x, h0, c0).unwrap();
            let mut terms = vec![(o.output, "out", "w_out"), (o.h, "h_n", "w_h")];
            if let Some(cn) = o.c {
                terms.push((cn, "c_n", "w_c"));
            }
            let mut loss = None;
            for (node, name, w) in terms {
                checks.push((name.into(), node, tensor(&c[name]).1));
                let wi = g.input(w, g.shape(node).clone()).unwrap();
                feeds.push((w.into(), tensor(&c[w]).1));
                let t = g.mul(node, wi).unwrap();
                let s = g.sum_all(t).unwrap();
                loss = Some(match loss {
                    None => s,
                    Some(l) => g.add(l, s).unwrap(),
                });
            }
            loss.unwrap()
        };
        let nodes: Vec<NodeId> = wrt.iter().map(|w| w.1).collect();
        let grads = kiln::gradients(&mut g, loss, &nodes).unwrap();
        for ((name, _), gr) in wrt.iter().zip(grads) {
            checks.push((format!("d {name}"), gr.unwrap(), tensor(&c["grads"][name.as_str()]).1));
        }
        let mut store = ParamStore::new(dev, &g, 0).unwrap();
        let mut inputs: Vec<(&str, Vec<f32>)> = vec![];
        for (k, v) in &feeds {
            if g.params().iter().any(|p| &p.name == k) {
                store.set(k, v).unwrap();
            } else {
                inputs.push((k.as_str(), v.clone()));
            }
        }
        let fetch: Vec<NodeId> = checks.iter().map(|c| c.1).collect();
        let mut p = Program::compile(&g, &mut store, &fetch, None).unwrap();
        let ids: Vec<Vec<u32>> = inputs
            .iter()
            .map(|(_, v)| v.iter().map(|&x| x as u32).collect())
            .collect();
        let run_feeds: Vec<(&str, Feed<'_>)> = inputs
            .iter()
            .zip(&ids)
            .map(|((k, v), u)| (*k, if *k == "ids" { Feed::Labels(u) } else { Feed::F32(v) }))
            .collect();
        let out = p.run(&run_feeds).unwrap();
        for (what, node, want) in &checks {
            let got = &out.get(*node).unwrap().data;
            if let Err(e) = check_close(got, want, 1e-5, 1e-4) {
                panic!("{case}: {what}: {e}");
            }
        }
    }
}

backend_test!(fn recurrent_layers_load_pytorch_weights_and_match_its_outputs_and_gradients(dev) {
    matches_pytorch(dev);
});
