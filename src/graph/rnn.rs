//! Builders for sequence models: embedding lookups and the fused LSTM and GRU cells. A recurrent
//! layer unrolls into one cell per time step (see `nn::rnn`); each cell is one kernel forward and
//! one backward, with the matrix products around it left to the GEMM.

use super::{shape_err, Graph, NodeId, Op};
use crate::error::Result;
use crate::shape::Shape;

impl Graph {
    fn rows_cols(&self, op: &'static str, x: NodeId) -> Result<(usize, usize)> {
        match *self.shape(x).dims() {
            [n, c] => Ok((n, c)),
            _ => Err(shape_err(
                op,
                self.describe_new(&[x]),
                vec![self.shape(x)],
                "expected a matrix",
            )),
        }
    }

    /// Rows `ids` of `table (V, E)`: `(…ids, E)`, an embedding lookup. `ids` are `u32` (a
    /// [`Graph::labels`] input with `V` classes checks each fed id against the table).
    pub fn gather_rows(&mut self, table: NodeId, ids: NodeId) -> Result<NodeId> {
        self.check_ids("gather_rows", &[table, ids])?;
        let (_, e) = self.rows_cols("gather_rows", table)?;
        let mut out = self.shape(ids).clone();
        out.0.push(e);
        self.push(Op::GatherRows, vec![table, ids], out)
    }

    /// Row `v` of the `(V, E)` result sums the rows of `dy (…ids, E)` whose id is `v` (the
    /// gradient of [`Graph::gather_rows`]).
    pub(crate) fn scatter_add_rows(&mut self, dy: NodeId, ids: NodeId, rows: usize) -> Result<NodeId> {
        let e = *self.shape(dy).dims().last().unwrap_or(&1);
        self.push(Op::ScatterAddRows, vec![dy, ids], Shape(vec![rows, e]))
    }

    /// One LSTM step: `gates (N, 4H)` are the summed pre-activations in PyTorch's order
    /// (i, f, g, o), `c (N, H)` the previous cell state; returns `(2, N, H)` = `[h', c']`
    /// (take them with [`Graph::cell_part`]).
    pub fn lstm_cell(&mut self, gates: NodeId, c: NodeId) -> Result<NodeId> {
        self.check_ids("lstm_cell", &[gates, c])?;
        let (n, g4) = self.rows_cols("lstm_cell", gates)?;
        let (nc, h) = self.rows_cols("lstm_cell", c)?;
        if nc != n || g4 != 4 * h {
            return Err(shape_err(
                "lstm_cell",
                self.describe_new(&[gates, c]),
                vec![self.shape(gates), self.shape(c)],
                "gates must be (N, 4H) for a cell state (N, H)",
            ));
        }
        self.push(Op::LstmCell, vec![gates, c], Shape(vec![2, n, h]))
    }

    /// Part `part` of a cell's `(P, N, H)` output as `(N, H)` (an LSTM's `h'` is part 0 and `c'` part 1; a
    /// GRU's `h'` part 0): a
    /// view, not a copy.
    pub fn cell_part(&mut self, cell: NodeId, part: usize) -> Result<NodeId> {
        self.check_ids("cell_part", &[cell])?;
        let s = self.shape(cell).clone();
        if s.rank() != 3 || s.0[0] < 2 || part >= s.0[0] {
            return Err(shape_err(
                "cell_part",
                self.describe_new(&[cell]),
                vec![&s],
                format!("expected a cell output (P, N, H) and a part below P, got part {part}"),
            ));
        }
        let p = self.slice(cell, 0, part, part + 1)?;
        self.reshape(p, [s.0[1], s.0[2]])
    }

    /// One GRU step: `xw (N, 3H) = x·W_ihᵀ + b_ih` and `hw (N, 3H) = h·W_hhᵀ + b_hh` in PyTorch's
    /// order (r, z, n), `h (N, H)` the previous state; returns `(5, N, H)` whose first row is `h'`
    /// (take it with [`Graph::cell_part`]`(cell, 0)`); the other rows are the activations the
    /// backward pass reads (and they are differentiable too).
    pub fn gru_cell(&mut self, xw: NodeId, hw: NodeId, h: NodeId) -> Result<NodeId> {
        self.check_ids("gru_cell", &[xw, hw, h])?;
        let (n, g3) = self.rows_cols("gru_cell", xw)?;
        let (nh, hid) = self.rows_cols("gru_cell", h)?;
        if self.shape(hw) != self.shape(xw) || nh != n || g3 != 3 * hid {
            return Err(shape_err(
                "gru_cell",
                self.describe_new(&[xw, hw, h]),
                vec![self.shape(xw), self.shape(hw), self.shape(h)],
                "xw and hw must both be (N, 3H) for a state (N, H)",
            ));
        }
        self.push(Op::GruCell, vec![xw, hw, h], Shape(vec![5, n, hid]))
    }
}
