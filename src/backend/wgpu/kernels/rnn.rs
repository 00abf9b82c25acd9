//! rnn.wgsl's parameter struct and lowering: embedding gather and its deterministic
//! scatter-add, and the fused LSTM and GRU cells (forward and backward).

use super::{u, Cost, Dispatch, Family, Grid};
use crate::backend::View;
use bytemuck::{Pod, Zeroable};

/// Every rnn.wgsl entry point: a row count, a row width, three operand offsets and the output's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Rnn {
    /// Invocations launched.
    pub invocations: u32,
    /// Batch rows N (cells), or ids (gather / scatter).
    pub n: u32,
    /// Hidden size H (cells), or row width E (gather / scatter).
    pub h: u32,
    /// Table rows V (gather / scatter).
    pub v: u32,
    /// Offset of input a.
    pub a_off: u32,
    /// Offset of input b.
    pub b_off: u32,
    /// Offset of input c.
    pub c_off: u32,
    /// Offset of the output.
    pub out_off: u32,
}

/// Which rnn.wgsl entry point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// table, ids → rows.
    GatherRows,
    /// dy, ids → table gradient.
    ScatterAddRows,
    /// gates, c → [h', c'].
    LstmCell,
    /// gates, c, dy → [d gates; d c].
    LstmCellGrad,
    /// xw, hw, h → [h', r, z, n, hn].
    GruCell,
    /// cell, h, dy → [d xw; d hw; d h].
    GruCellGrad,
}

impl Entry {
    fn name(self) -> &'static str {
        match self {
            Entry::GatherRows => "gather_rows",
            Entry::ScatterAddRows => "scatter_add_rows",
            Entry::LstmCell => "lstm_cell",
            Entry::LstmCellGrad => "lstm_cell_grad",
            Entry::GruCell => "gru_cell",
            Entry::GruCellGrad => "gru_cell_grad",
        }
    }
}

/// `entry` over `(n, h)` (cells: batch and hidden size; gather: ids and row width, with `v`
/// table rows), one invocation per output element of the table for scatter, per `(row, unit)`
/// otherwise.
pub fn rnn(entry: Entry, n: usize, h: usize, v: usize, x: &[View], out: View) -> Dispatch {
    let invocations = if entry == Entry::ScatterAddRows { v * h } else { n * h };
    let off = |i: usize| x.get(i).map_or(0, |v| u(v.offset));
    let p = Rnn {
        invocations: u(invocations),
        n: u(n),
        h: u(h),
        v: u(v),
        a_off: off(0),
        b_off: off(1),
        c_off: off(2),
        out_off: u(out.offset),
    };
    // (flops, elements of a, b, c read, written) for n rows of h units (v: vocabulary rows):
    // gathers move rows; the scatter-add scans every id per output; a cell's gates cost about
    // 30 operations per unit forward (four sigmoids or tanhs, products, sums) and 40 backward.
    let nh = n * h;
    let cost = match entry {
        Entry::GatherRows => Cost::new(0, &[nh, n], nh),
        Entry::ScatterAddRows => Cost::new(nh, &[nh, v * n], v * h),
        Entry::LstmCell => Cost::new(30 * nh, &[4 * nh, nh], 2 * nh),
        Entry::LstmCellGrad => Cost::new(40 * nh, &[4 * nh, nh, 2 * nh], 6 * nh),
        Entry::GruCell => Cost::new(30 * nh, &[3 * nh, 3 * nh, nh], nh),
        Entry::GruCellGrad => Cost::new(40 * nh, &[3 * nh, 3 * nh, 2 * nh], 7 * nh),
    };
    Dispatch::new(
        Family::Rnn,
        entry.name(),
        &p,
        x.iter().map(|v| v.buf).collect(),
        vec![out.buf],
        Grid::Elements(invocations),
    )
    .with_cost(cost)
}
