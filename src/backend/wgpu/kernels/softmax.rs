//! softmax.wgsl's parameter struct and lowering: softmax, log-softmax and the fused softmax
//! cross-entropy (forward and gradient) over rows of the last axis.

use super::{u, Cost, Dispatch, Family, Grid};
use crate::backend::View;
use bytemuck::{Pod, Zeroable};

/// `softmax`, `log_softmax`, `sce` and `sce_grad`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Softmax {
    /// Rows.
    pub rows: u32,
    /// Row length (classes).
    pub classes: u32,
    /// Offset of the logits.
    pub a_off: u32,
    /// Offset of the labels (`sce`, `sce_grad`).
    pub b_off: u32,
    /// Offset of dy per row (`sce_grad`).
    pub c_off: u32,
    /// Offset of the output.
    pub out_off: u32,
    /// Label smoothing ε (`sce`, `sce_grad`).
    pub smoothing: f32,
}

/// Which row kernel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rows {
    /// Softmax.
    Softmax,
    /// Log-softmax.
    LogSoftmax,
    /// Cross-entropy with smoothing ε.
    Sce(f32),
    /// Its gradient.
    SceGrad(f32),
}

/// One workgroup per row of `classes` elements; `x` are the operands in the op's order.
pub fn rows(kind: Rows, rows: usize, classes: usize, x: &[View], out: View) -> Dispatch {
    let (entry, smoothing) = match kind {
        Rows::Softmax => ("softmax", 0.0),
        Rows::LogSoftmax => ("log_softmax", 0.0),
        Rows::Sce(e) => ("sce", e),
        Rows::SceGrad(e) => ("sce_grad", e),
    };
    let off = |i: usize| x.get(i).map_or(0, |v| u(v.offset));
    let p = Softmax {
        rows: u(rows),
        classes: u(classes),
        a_off: off(0),
        b_off: off(1),
        c_off: off(2),
        out_off: u(out.offset),
        smoothing,
    };
    // Per element: the max, the subtraction, exp, the sum and the scaling (five operations,
    // the transcendental counted as one); the logits read, the labels or targets per row, and
    // per element (or per row, for the loss) written.
    let n = rows * classes;
    let (second, written) = match kind {
        Rows::Softmax | Rows::LogSoftmax => (0, n),
        Rows::Sce(_) => (rows, rows),
        Rows::SceGrad(_) => (rows, n),
    };
    let cost = Cost::new(5 * n, &[n, second, (x.len() > 2) as usize * rows], written);
    Dispatch::new(
        Family::Softmax,
        entry,
        &p,
        x.iter().map(|v| v.buf).collect(),
        vec![out.buf],
        Grid::Groups(rows),
    )
    .with_cost(cost)
}
