//! conv.wgsl's parameter struct and lowering: im2col / col2im, max and average pooling with
//! their gradients, on (N, C, H, W) planes.

use super::{u, Cost, Dispatch, Family, Grid};
use crate::backend::{Fused, View};
use crate::graph::Window;
use crate::shape::{DType, Shape};
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

/// A max pooling's argmax dispatch `pool` and the `gather` that reads its indices (the pooled
/// values) as one dispatch writing both: the window's maximum is the element at its argmax,
/// read as `gather_planes` reads it, so the bits are the gather's. `None` unless `gather` reads
/// exactly `pool`'s image and indices, f32 words throughout, and the three tensors lie in
/// different buffers (the kernel binds the image read-only and both outputs read-write).
pub fn pool_with_values(pool: &Dispatch, gather: &Dispatch) -> Result<Option<Dispatch>, String> {
    if pool.entry != Entry::PoolArgmax.name() || gather.entry != Entry::GatherPlanes.name() {
        return Ok(None);
    }
    let (pp, gp) = (params(pool), params(gather));
    let (x, idx, vals) = (pool.inputs[0], pool.outputs[0], gather.outputs[0]);
    let same_reads = gather.inputs == [x, idx] && gp.a_off == pp.a_off && gp.b_off == pp.out_off;
    let words = pool.dtypes[0] == DType::F32 && gather.dtypes[0] == DType::F32 && gather.dtypes[3] == DType::F32;
    let apart = x != idx && x != vals && idx != vals;
    if !(same_reads && words && apart && gp.invocations == pp.invocations) {
        return Ok(None);
    }
    let storage = "@group(0) @binding(1) var<storage, read> a: array<f32>;
fn ld_a(i: u32) -> f32 { return a[i]; }
fn ld_b(i: u32) -> f32 { return 0.0; } // the indices of gather and scatter: not read here
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
fn st_out(i: u32, v: f32) { out[i] = v; }
@group(0) @binding(3) var<storage, read_write> vals: array<f32>;
fn st_value(e: u32, i: u32) { vals[p.b_off + e] = ld_a(i); }
";
    let body = super::fill(include_str!("../../../../shaders/conv.wgsl"), "STORAGE", storage);
    let src = format!("{}\n{body}", super::generated_prelude()?);
    // The values' offset goes where pool_argmax reads none: b_off.
    let p = Conv {
        b_off: gp.out_off,
        ..pp
    };
    let d = Dispatch {
        params: bytemuck::bytes_of(&p).to_vec(),
        outputs: vec![idx, vals],
        source: Some(std::sync::Arc::from(src)),
        ..pool.clone()
    };
    // (pool_argmax's cost already counts the value and the index written.)
    Ok(Some(d))
}

/// A conv.wgsl dispatch `d` whose output `f` reads as its operand `head`, over `f`'s whole
/// index space, with `f` as its epilogue: each output element goes to `f` in a register instead
/// of to memory (`fused::epilogue`). `None` for the entry points that write other than one value
/// per output element once (im2col's columns, the argmax's index bits), for tensors other than
/// 4-byte words, where `f` writes a buffer `d` reads, or past the adapter's bindings.
pub fn with_epilogue(d: &Dispatch, f: &Fused, head: usize, max_bindings: u32) -> Result<Option<Dispatch>, String> {
    let per_element = [
        Entry::Col2Im,
        Entry::AvgPool,
        Entry::AvgPoolGrad,
        Entry::GatherPlanes,
        Entry::ScatterPlanes,
    ];
    let words = d.dtypes.iter().all(|t| matches!(t, DType::F32 | DType::U32));
    if !per_element.iter().any(|e| e.name() == d.entry)
        || !words
        || d.dtypes[3] != DType::F32
        || f.outputs.iter().any(|(_, v)| d.inputs.contains(&v.buf))
    {
        return Ok(None);
    }
    let mut storage = String::new();
    for (k, name) in ["a", "b"].into_iter().enumerate() {
        if k < d.inputs.len() {
            storage += &format!(
                "@group(0) @binding({0}) var<storage, read> {name}: array<f32>;\n\
                 fn ld_{name}(i: u32) -> f32 {{ return {name}[i]; }}\n",
                k + 1
            );
        } else {
            storage += &format!("fn ld_{name}(i: u32) -> f32 {{ return 0.0; }} // not an operand here\n");
        }
    }
    let (read, written, ep) = super::fused::epilogue(f, head, d.inputs.len() + 1)?;
    if 1 + d.inputs.len() + read.len() + written.len() > max_bindings as usize {
        return Ok(None);
    }
    storage += &ep;
    storage += &format!(
        "fn st_out(i: u32, v: f32) {{ epilogue(i - {}u, v); }}\nfn st_value(e: u32, i: u32) {{}}\n",
        params(d).out_off
    );
    let body = super::fill(include_str!("../../../../shaders/conv.wgsl"), "STORAGE", &storage);
    let src = format!("{}\n{body}", super::generated_prelude()?);
    let n = f.len();
    let operand_reads: usize = f
        .inputs
        .iter()
        .enumerate()
        .filter(|&(k, _)| k != head)
        .map(|(_, (v, _))| v.len)
        .sum();
    let mut e = Dispatch {
        inputs: d.inputs.iter().copied().chain(read).collect(),
        outputs: written,
        source: Some(std::sync::Arc::from(src)),
        ..d.clone()
    };
    // The kernel's work and operands, plus the epilogue's ops and operands, less its store.
    e.cost.flops += (n * f.body.len()) as f64;
    e.cost.reads[2] += operand_reads as f64;
    e.cost.writes = (n * f.outputs.len()) as f64;
    Ok(Some(e))
}

/// The parameter block of a conv.wgsl dispatch.
fn params(d: &Dispatch) -> Conv {
    bytemuck::pod_read_unaligned(&d.params[..std::mem::size_of::<Conv>()])
}
