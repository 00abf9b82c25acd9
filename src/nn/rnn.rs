//! Sequence layers: [`Embedding`], and the recurrent [`Rnn`], [`Lstm`] and [`Gru`], time-major
//! `(T, N, features)` like PyTorch's default, multi-layer, with an optional initial state.
//!
//! Parameters use PyTorch's names and layouts (`{name}.weight_ih_l{k}` `(G·H, I)`,
//! `{name}.weight_hh_l{k}` `(G·H, H)`, `{name}.bias_ih_l{k}`, `{name}.bias_hh_l{k}` with the gates
//! in PyTorch's order: i, f, g, o for the LSTM, r, z, n for the GRU), and PyTorch's default
//! initialisation U(±1/√H), so a PyTorch `state_dict` maps onto them one to one.
//!
//! A layer unrolls over the `T` steps of the graph it is built on: the input projection of every
//! step is one matrix product, then each step is a product with `W_hh` and one fused cell
//! kernel. For truncated backpropagation through time, feed the initial state as an input and
//! carry the final state into it between runs ([`crate::Program::carry`]): no gradient crosses
//! the window boundary, because an input is a leaf.

use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId};
use crate::init::Init;
use crate::shape::Shape;

/// A lookup table of `V` vectors of size `E`: ids `(…)` → `(…, E)`. Initialised N(0, 1), as
/// PyTorch's `nn.Embedding`; its parameter is `{name}.weight` `(V, E)`.
#[derive(Clone, Copy, Debug)]
pub struct Embedding {
    /// The table, `(V, E)`.
    pub weight: NodeId,
}

impl Embedding {
    /// A table of `vocab` rows of `dim` values.
    pub fn new(g: &mut Graph, name: &str, vocab: usize, dim: usize) -> Result<Self> {
        if vocab == 0 || dim == 0 {
            return crate::error::invalid(
                "Embedding",
                format!("needs a vocabulary and a dimension, got {vocab}×{dim}"),
            );
        }
        let weight = g.param(&format!("{name}.weight"), [vocab, dim], Init::Normal(0.0, 1.0))?;
        Ok(Embedding { weight })
    }

    /// Look up `ids` (`u32`; a labels input with `V` classes has each fed id checked).
    pub fn forward(&self, g: &mut Graph, ids: NodeId) -> Result<NodeId> {
        g.gather_rows(self.weight, ids)
    }
}

/// Which recurrence a [`Recurrent`] layer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell {
    /// Elman RNN: `h' = tanh(x·W_ihᵀ + b_ih + h·W_hhᵀ + b_hh)`.
    Tanh,
    /// Elman RNN with ReLU instead of tanh.
    Relu,
    /// LSTM (Hochreiter & Schmidhuber 1997, with forget gate), gates i, f, g, o.
    Lstm,
    /// GRU (Cho et al. 2014), gates r, z, n.
    Gru,
}

impl Cell {
    /// Gate blocks per step: 1, 4 or 3.
    pub fn gates(self) -> usize {
        match self {
            Cell::Tanh | Cell::Relu => 1,
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }

    /// Whether the state includes an LSTM cell state `c` besides `h`.
    pub fn has_cell_state(self) -> bool {
        self == Cell::Lstm
    }
}

/// The weights of one layer.
#[derive(Clone, Copy, Debug)]
struct Layer {
    w_ih: NodeId,
    w_hh: NodeId,
    b_ih: NodeId,
    b_hh: NodeId,
}

/// A multi-layer recurrent network over `(T, N, input)` sequences. [`Rnn`], [`Lstm`] and [`Gru`]
/// are this with a fixed [`Cell`].
#[derive(Clone, Debug)]
pub struct Recurrent {
    cell: Cell,
    input: usize,
    hidden: usize,
    layers: Vec<Layer>,
}

/// An Elman RNN (tanh or ReLU).
pub type Rnn = Recurrent;
/// An LSTM.
pub type Lstm = Recurrent;
/// A GRU.
pub type Gru = Recurrent;

/// What a recurrent layer returns.
#[derive(Clone, Copy, Debug)]
pub struct RecurrentOutput {
    /// The last layer's `h` at every step, `(T, N, H)`.
    pub output: NodeId,
    /// Every layer's final `h`, `(L, N, H)`.
    pub h: NodeId,
    /// Every layer's final `c`, `(L, N, H)` (LSTM only).
    pub c: Option<NodeId>,
}

impl Recurrent {
    /// `layers` stacked layers of `cell`, `input → hidden`, parameters named after `name`.
    pub fn new(g: &mut Graph, name: &str, cell: Cell, input: usize, hidden: usize, layers: usize) -> Result<Self> {
        if input == 0 || hidden == 0 || layers == 0 {
            return crate::error::invalid(
                "Recurrent",
                format!("needs input, hidden size and layers of at least 1, got {input}, {hidden}, {layers}"),
            );
        }
        let gh = cell.gates() * hidden;
        let k = 1.0 / (hidden as f32).sqrt();
        let init = Init::Uniform(-k, k);
        let mut ls = Vec::with_capacity(layers);
        for l in 0..layers {
            let i = if l == 0 { input } else { hidden };
            ls.push(Layer {
                w_ih: g.param(&format!("{name}.weight_ih_l{l}"), [gh, i], init)?,
                w_hh: g.param(&format!("{name}.weight_hh_l{l}"), [gh, hidden], init)?,
                b_ih: g.param(&format!("{name}.bias_ih_l{l}"), [gh], init)?,
                b_hh: g.param(&format!("{name}.bias_hh_l{l}"), [gh], init)?,
            });
        }
        Ok(Recurrent {
            cell,
            input,
            hidden,
            layers: ls,
        })
    }

    /// An LSTM.
    pub fn lstm(g: &mut Graph, name: &str, input: usize, hidden: usize, layers: usize) -> Result<Self> {
        Self::new(g, name, Cell::Lstm, input, hidden, layers)
    }

    /// A GRU.
    pub fn gru(g: &mut Graph, name: &str, input: usize, hidden: usize, layers: usize) -> Result<Self> {
        Self::new(g, name, Cell::Gru, input, hidden, layers)
    }

    /// An Elman RNN with tanh.
    pub fn rnn(g: &mut Graph, name: &str, input: usize, hidden: usize, layers: usize) -> Result<Self> {
        Self::new(g, name, Cell::Tanh, input, hidden, layers)
    }

    /// The recurrence.
    pub fn cell(&self) -> Cell {
        self.cell
    }

    /// Hidden size H.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// Number of stacked layers L.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The shape of the state for a batch of `n`: `(L, N, H)`.
    pub fn state_shape(&self, n: usize) -> Shape {
        Shape(vec![self.layers.len(), n, self.hidden])
    }

    /// Run over `x: (T, N, input)` from the initial state `h0` (and `c0` for an LSTM), each
    /// `(L, N, H)`, or from zeros when `None`.
    pub fn forward(&self, g: &mut Graph, x: NodeId, h0: Option<NodeId>, c0: Option<NodeId>) -> Result<RecurrentOutput> {
        g.check_ids("recurrent", &[x])?;
        let d = g.shape(x).dims().to_vec();
        let (t, n) = match d[..] {
            [t, n, i] if i == self.input => (t, n),
            _ => {
                return Err(Error::Shape {
                    op: "recurrent",
                    node: g.describe(x),
                    shapes: vec![d],
                    reason: format!("expected a time-major sequence (T, N, {})", self.input),
                })
            }
        };
        let want = self.state_shape(n);
        for (s, what) in [(h0, "h0"), (c0, "c0")] {
            if let Some(s) = s {
                g.check_ids("recurrent", &[s])?;
                if *g.shape(s) != want {
                    return Err(Error::Shape {
                        op: "recurrent",
                        node: g.describe(s),
                        shapes: vec![g.shape(s).0.clone(), want.0.clone()],
                        reason: format!("the initial state {what} must be (layers, batch, hidden)"),
                    });
                }
            }
        }
        if c0.is_some() && !self.cell.has_cell_state() {
            return crate::error::invalid("recurrent", "only an LSTM has a cell state c0");
        }
        let h = self.hidden;
        let mut seq = x;
        let (mut hs, mut cs) = (Vec::new(), Vec::new());
        for (l, w) in self.layers.iter().enumerate() {
            let layer_state = |g: &mut Graph, s: Option<NodeId>| -> Result<Option<NodeId>> {
                match s {
                    Some(s) => {
                        let p = g.slice(s, 0, l, l + 1)?;
                        let p = g.reshape(p, [n, h])?;
                        Ok(Some(g.cast_like(p, x)?))
                    }
                    None => Ok(None),
                }
            };
            let h_init = layer_state(g, h0)?;
            let c_init = layer_state(g, c0)?;
            let (out, hl, cl) = self.layer(g, w, seq, t, n, h_init, c_init)?;
            seq = out;
            hs.push(g.reshape(hl, [1, n, h])?);
            if let Some(c) = cl {
                cs.push(g.reshape(c, [1, n, h])?);
            }
        }
        let h_n = g.concat(&hs, 0)?;
        let c_n = if cs.is_empty() { None } else { Some(g.concat(&cs, 0)?) };
        Ok(RecurrentOutput {
            output: seq,
            h: h_n,
            c: c_n,
        })
    }

    /// One layer over the whole sequence: `(T, N, I)` → `((T, N, H), h_T, c_T)`.
    #[allow(clippy::too_many_arguments)]
    fn layer(
        &self,
        g: &mut Graph,
        w: &Layer,
        x: NodeId,
        t: usize,
        n: usize,
        h0: Option<NodeId>,
        c0: Option<NodeId>,
    ) -> Result<(NodeId, NodeId, Option<NodeId>)> {
        let h = self.hidden;
        let gh = self.cell.gates() * h;
        let i = g.shape(x).dims()[2];
        let w_ih = g.cast_like(w.w_ih, x)?;
        let w_hh = g.cast_like(w.w_hh, x)?;
        let b_ih = g.cast_like(w.b_ih, x)?;
        let b_hh = g.cast_like(w.b_hh, x)?;
        // Every step's input projection in one product: (T·N, I) @ W_ihᵀ → (T, N, G·H). The GRU
        // keeps b_hh apart (it sits inside r ⊙ (h·W_hnᵀ + b_hn)); the others fold both biases in.
        let flat = g.reshape(x, [t * n, i])?;
        let xp = g.matmul_t(flat, w_ih, false, true)?;
        let bias = if self.cell == Cell::Gru {
            b_ih
        } else {
            g.add(b_ih, b_hh)?
        };
        let xp = g.add(xp, bias)?;
        let xp = g.reshape(xp, [t, n, gh])?;
        let (mut hp, mut cp) = (h0, c0);
        let mut outs = Vec::with_capacity(t);
        for s in 0..t {
            let xs = g.slice(xp, 0, s, s + 1)?; // a view of step s
            let xs = g.reshape(xs, [n, gh])?;
            let hw = match hp {
                Some(hp) => Some(g.matmul_t(hp, w_hh, false, true)?),
                None => None,
            };
            let h_next = match self.cell {
                Cell::Tanh | Cell::Relu => {
                    let a = match hw {
                        Some(hw) => g.add(xs, hw)?,
                        None => xs,
                    };
                    if self.cell == Cell::Tanh {
                        g.tanh(a)?
                    } else {
                        g.relu(a)?
                    }
                }
                Cell::Lstm => {
                    let gates = match hw {
                        Some(hw) => g.add(xs, hw)?,
                        None => xs,
                    };
                    let c = match cp {
                        Some(c) => c,
                        None => g.constant_typed(0.0, [n, h], g.dtype(x)),
                    };
                    let cell = g.lstm_cell(gates, c)?;
                    cp = Some(g.cell_part(cell, 1)?);
                    g.cell_part(cell, 0)?
                }
                Cell::Gru => {
                    let hw = match hw {
                        Some(hw) => g.add(hw, b_hh)?,
                        None => g.broadcast_to(b_hh, [n, gh])?,
                    };
                    let hprev = match hp {
                        Some(hp) => hp,
                        None => g.constant_typed(0.0, [n, h], g.dtype(x)),
                    };
                    let cell = g.gru_cell(xs, hw, hprev)?;
                    g.cell_part(cell, 0)?
                }
            };
            outs.push(g.reshape(h_next, [1, n, h])?);
            hp = Some(h_next);
        }
        let out = g.concat(&outs, 0)?;
        let last = hp.expect("a sequence has at least one step");
        Ok((out, last, cp))
    }
}
