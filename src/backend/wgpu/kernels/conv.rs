//! conv.wgsl's parameter struct and lowering: im2col / col2im, max and average pooling with
//! their gradients, on (N, C, H, W) planes.

use super::{u, Cost, Dispatch, Family, Grid};
use crate::backend::View;
use crate::graph::Window;
use crate::shape::Shape;
use bytemuck::{Pod, Zeroable};

/// Every conv.wgsl entry point: an image stack, a window, the output grid and three offsets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Conv {
    /// Invocations launched (one per output element; per output pixel for im2col).
    pub invocations: u32,
    /// Images.
    pub n: u32,
    /// Channels.
    pub c: u32,
    /// Image height.
    pub h: u32,
    /// Image width.
    pub w: u32,
    /// Kernel height.
    pub kh: u32,
    /// Kernel width.
    pub kw: u32,
    /// Vertical stride.
    pub sh: u32,
    /// Horizontal stride.
    pub sw: u32,
    /// Vertical padding.
    pub ph: u32,
    /// Horizontal padding.
    pub pw: u32,
    /// Vertical dilation.
    pub dh: u32,
    /// Horizontal dilation.
    pub dw: u32,
    /// Output height.
    pub oh: u32,
    /// Output width.
    pub ow: u32,
    /// Offset of input a.
    pub a_off: u32,
    /// Offset of the output.
    pub out_off: u32,
    /// Offset of input b (the argmax indices of gather / scatter).
    pub b_off: u32,
}

/// Which conv.wgsl entry point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// x → cols.
    Im2Col,
    /// cols → x.
    Col2Im,
    /// x → argmax per window.
    PoolArgmax,
    /// x → window averages.
    AvgPool,
    /// dy → dx of average pooling.
    AvgPoolGrad,
    /// (x, idx) → x at idx.
    GatherPlanes,
    /// (dy, idx) → dx of max pooling.
    ScatterPlanes,
}

impl Entry {
    fn name(self) -> &'static str {
        match self {
            Entry::Im2Col => "im2col",
            Entry::Col2Im => "col2im",
            Entry::PoolArgmax => "pool_argmax",
            Entry::AvgPool => "avg_pool",
            Entry::AvgPoolGrad => "avg_pool_grad",
            Entry::GatherPlanes => "gather_planes",
            Entry::ScatterPlanes => "scatter_planes",
        }
    }
}

/// `invocations` invocations of `entry` over images `img` (N, C, H, W) and window `w` with
/// output grid `(oh, ow)`; `x` is the operands in the op's order.
pub fn conv(
    entry: Entry,
    invocations: usize,
    img: &Shape,
    w: &Window,
    (oh, ow): (usize, usize),
    x: &[View],
    out: View,
) -> Dispatch {
    let d = img.dims();
    let p = Conv {
        invocations: u(invocations),
        n: u(d[0]),
        c: u(d[1]),
        h: u(d[2]),
        w: u(d[3]),
        kh: u(w.k[0]),
        kw: u(w.k[1]),
        sh: u(w.stride[0]),
        sw: u(w.stride[1]),
        ph: u(w.pad[0]),
        pw: u(w.pad[1]),
        dh: u(w.dilation[0]),
        dw: u(w.dilation[1]),
        oh: u(oh),
        ow: u(ow),
        a_off: u(x[0].offset),
        out_off: u(out.offset),
        b_off: x.get(1).map_or(0, |v| u(v.offset)),
    };
    // Images of n·c planes of h×w, outputs of n·c planes of oh×ow, windows of kh·kw taps.
    let (planes, taps) = (d[0] * d[1], w.k[0] * w.k[1]);
    let (img_px, out_px) = (planes * d[2] * d[3], planes * oh * ow);
    let cost = match entry {
        // Pure data movement: the image read once, every (pixel, tap) column element written.
        Entry::Im2Col => Cost::new(0, &[img_px], out_px * taps),
        // Each image pixel sums the columns that hold it: one add per column element.
        Entry::Col2Im => Cost::new(out_px * taps, &[out_px * taps], img_px),
        // Max pooling: a comparison per tap; value and index written.
        Entry::PoolArgmax => Cost::new(out_px * taps, &[img_px], 2 * out_px),
        Entry::AvgPool => Cost::new(out_px * taps, &[img_px], out_px),
        Entry::AvgPoolGrad => Cost::new(out_px * taps, &[out_px], img_px),
        Entry::GatherPlanes => Cost::new(0, &[invocations, invocations], invocations),
        Entry::ScatterPlanes => Cost::new(invocations, &[out_px, out_px], invocations),
    };
    let mut dispatch = Dispatch::new(
        Family::Conv,
        entry.name(),
        &p,
        x.iter().map(|v| v.buf).collect(),
        vec![out.buf],
        Grid::Elements(invocations),
    )
    .with_cost(cost);
    // The window as override constants too (conv.wgsl): constant loop bounds and divisors.
    dispatch.constants = vec![("KH", p.kh), ("KW", p.kw), ("SH", p.sh), ("SW", p.sw)];
    dispatch
}
