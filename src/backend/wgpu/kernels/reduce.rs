//! reduce.wgsl's parameter structs and lowering: sum / mean / max over any set of axes, and the
//! gradient statistics the update reads (Σg² and the count of non-finite values).

use super::{coalesce, padded, u, Cost, Dispatch, Family, Grid, MAX_RANK};
use crate::backend::{Fused, View};
use crate::graph::ReduceOp;
use crate::shape::{DType, Shape};
use bytemuck::{Pod, Zeroable};

/// Reductions over at most this many elements run one invocation per output (`reduce_serial`).
const SERIAL_REDUCE: usize = 256;

/// `reduce` and `reduce_serial`: outputs over the kept axes, each reducing `r` elements over the
/// reduced axes (both coalesced by the lowering).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Reduce {
    /// Outputs.
    pub n: u32,
    /// Elements reduced per output.
    pub r: u32,
    /// Offset of the input.
    pub a_off: u32,
    /// Offset of the output.
    pub out_off: u32,
    /// 1: combine by max (from −f32::MAX), else by sum (from 0).
    pub is_max: u32,
    /// 1: divide the result by `r`.
    pub mean: u32,
    /// Kept axes.
    pub nk: u32,
    /// Reduced axes.
    pub nr: u32,
    /// Kept dims, padded with 1.
    pub kdims: [u32; MAX_RANK],
    /// Input strides of the kept axes.
    pub kstr: [u32; MAX_RANK],
    /// Reduced dims, padded with 1.
    pub rdims: [u32; MAX_RANK],
    /// Input strides of the reduced axes.
    pub rstr: [u32; MAX_RANK],
}

/// `grad_stats`' header; the views follow as a table of [`Span`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct GradStats {
    /// Views in the table.
    pub nseg: u32,
    /// Offset of the two output elements.
    pub out_off: u32,
    /// The first `nsum` views are gradients (in binding a, summed and checked); the rest are
    /// only checked (in binding b).
    pub nsum: u32,
    /// 1: add to the two outputs instead of writing them (the checked values of a second
    /// buffer, in a dispatch of their own).
    pub accumulate: u32,
}

/// One view read by `grad_stats`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Span {
    /// First element.
    pub off: u32,
    /// Elements.
    pub len: u32,
}

/// The batch normalisation entries (`channel_moments`, `batch_norm_sums`, `batch_norm`) over a
/// channel-first `(N, C, S)` tensor.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Norm {
    /// Batch N.
    pub n: u32,
    /// Channels C.
    pub c: u32,
    /// Elements per (sample, channel) plane S.
    pub s: u32,
    /// ε of `batch_norm`.
    pub eps: f32,
    /// Offset of x.
    pub a_off: u32,
    /// Offset of the moments (`batch_norm`, `batch_norm_sums`).
    pub b_off: u32,
    /// Offset of the affine parameters (`batch_norm`) or of dy (`batch_norm_sums`).
    pub c_off: u32,
    /// Offset of the output.
    pub out_off: u32,
}

/// Which batch normalisation kernel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NormEntry {
    /// x → [means; variances].
    Moments,
    /// x, moments, [γ; β] → y, with ε.
    Apply(f32),
    /// x, moments, dy → [Σ dy; Σ dy·(x − mean)].
    Sums,
}

/// `entry` over `x` shaped `xs` (channel-first, rank ≥ 2); `x` are the operand views.
pub fn norm(entry: NormEntry, xs: &Shape, x: &[View], out: View) -> Dispatch {
    let d = xs.dims();
    let (n, c, s) = (d[0], d[1], d[2..].iter().product::<usize>());
    let off = |i: usize| x.get(i).map_or(0, |v| u(v.offset));
    let p = Norm {
        n: u(n),
        c: u(c),
        s: u(s),
        eps: if let NormEntry::Apply(e) = entry { e } else { 0.0 },
        a_off: off(0),
        b_off: off(1),
        c_off: off(2),
        out_off: u(out.offset),
    };
    let t = n * c * s;
    // Two passes of a subtraction and a fused multiply-add per element (moments); one centring
    // and two sums (sums); a subtraction and a multiply-add (apply).
    let (name, grid, cost) = match entry {
        NormEntry::Moments => ("channel_moments", Grid::Groups(c), Cost::new(4 * t, &[2 * t], 2 * c)),
        NormEntry::Sums => (
            "batch_norm_sums",
            Grid::Groups(c),
            Cost::new(4 * t, &[t, 2 * c, t], 2 * c),
        ),
        NormEntry::Apply(_) => ("batch_norm", Grid::Elements(t), Cost::new(3 * t, &[t, 2 * c, 2 * c], t)),
    };
    Dispatch::new(
        Family::Reduce,
        name,
        &p,
        x.iter().map(|v| v.buf).collect(),
        vec![out.buf],
        grid,
    )
    .with_cost(cost)
}

/// The one place a reduction's combining rule is chosen: `(is_max, mean)`.
fn rule(op: ReduceOp) -> (bool, bool) {
    match op {
        ReduceOp::Sum => (false, false),
        ReduceOp::Mean => (false, true),
        ReduceOp::Max => (true, false),
    }
}

/// `out = op(x)` over `axes` of `shape`, `n` outputs.
pub fn reduce(op: ReduceOp, axes: &[usize], shape: &Shape, n: usize, x: View, out: View) -> Dispatch {
    let st = shape.strides();
    let (mut kd, mut ks, mut rd, mut rs) = (vec![], vec![], vec![], vec![]);
    for (i, (&dim, &stride)) in shape.dims().iter().zip(&st).enumerate() {
        let (d, t) = if axes.contains(&i) {
            (&mut rd, &mut rs)
        } else {
            (&mut kd, &mut ks)
        };
        d.push(dim);
        t.push(stride);
    }
    let r: usize = rd.iter().product();
    let (kd, [ks]) = coalesce(&kd, [&ks]);
    let (rd, [rs]) = coalesce(&rd, [&rs]);
    // Short reductions: one invocation per output; long ones: a workgroup per output.
    let serial = r <= SERIAL_REDUCE && rd.len() <= 2;
    let (is_max, mean) = rule(op);
    let p = Reduce {
        n: u(n),
        r: u(r),
        a_off: u(x.offset),
        out_off: u(out.offset),
        is_max: is_max as u32,
        mean: mean as u32,
        nk: u(kd.len()),
        nr: u(rd.len()),
        kdims: padded(&kd, 1),
        kstr: padded(&ks, 0),
        rdims: padded(&rd, 1),
        rstr: padded(&rs, 0),
    };
    let (entry, grid) = if serial {
        ("reduce_serial", Grid::Elements(n))
    } else {
        ("reduce", Grid::Groups(n))
    };
    // One operation per input element (the mean's division is noise), each read once.
    let cost = Cost::new(n * r, &[n * r], n);
    Dispatch::new(Family::Reduce, entry, &p, vec![x.buf], vec![out.buf], grid).with_cost(cost)
}

/// A reduction `red` of the value `value` that the fused kernel `f` stores (views in
/// elements), with `f` run inside it: each element the reduction loads is computed there, and
/// all of `f`'s values at it are stored as `f` alone would store them, so the two kernels'
/// results and bits are the separate ones', in one dispatch. Every element of `f`'s index space
/// is loaded by exactly one invocation exactly once (a reduction covers its whole input), so it
/// is computed once. `None` unless `red` reduces exactly that value in f32 and its output lies
/// outside every buffer `f` reads and is no more bindings than the adapter allows. The caller
/// checks that the reduction's output overlaps nothing `f` reads or writes (`f` is then done
/// with the storage before anything after `red` needs it).
pub fn with_prologue(red: &Dispatch, f: &Fused, value: usize, max_bindings: u32) -> Result<Option<Dispatch>, String> {
    // Only the short reductions (an invocation per output): a long one runs a workgroup per
    // output, often a handful of them (a bias gradient over a batch of images), and `f`'s
    // elements would be computed by as few invocations, each in a long loop, where alone they
    // run one per invocation; measured on llvmpipe, that cost more than the dispatch it saves.
    if red.entry != "reduce_serial" || red.dtypes != [DType::F32; 4] {
        return Ok(None);
    }
    let p: Reduce = bytemuck::pod_read_unaligned(&red.params[..std::mem::size_of::<Reduce>()]);
    let Some(&(_, v)) = f.outputs.get(value) else {
        return Ok(None);
    };
    if red.inputs != [v.buf] || p.a_off as usize != v.offset || v.len != f.len() {
        return Ok(None);
    }
    let (read, mut written, mut storage) = super::fused::prologue(f, value, 1)?;
    let out = red.outputs[0];
    if read.contains(&out) {
        return Ok(None);
    }
    // The output's binding: f's, if f writes the same buffer, else one more.
    let t = match written.iter().position(|&b| b == out) {
        Some(k) => format!("t{}", 1 + read.len() + k),
        None => {
            written.push(out);
            let b = read.len() + written.len();
            storage += &format!("@group(0) @binding({b}) var<storage, read_write> t{b}: array<f32>;\n");
            format!("t{b}")
        }
    };
    if 1 + read.len() + written.len() > max_bindings as usize {
        return Ok(None);
    }
    storage += &format!(
        "fn ld_a(i: u32) -> f32 {{ return prologue(i - {}u); }}
fn ld_b(i: u32) -> f32 {{ return 0.0; }} // read by other entry points only
fn ld_c(i: u32) -> f32 {{ return 0.0; }}
fn ld_out(i: u32) -> f32 {{ return {t}[i]; }}
fn st_out(i: u32, v: f32) {{ {t}[i] = v; }}
",
        v.offset
    );
    let body = super::fill(include_str!("../../../../shaders/reduce.wgsl"), "STORAGE", &storage);
    let src = format!("{}\n{body}", super::generated_prelude()?);
    let mut d = Dispatch {
        inputs: read,
        outputs: written,
        source: Some(std::sync::Arc::from(src)),
        ..red.clone()
    };
    // The reduction's work, plus f's ops, operands and stores, less the reduction's loads.
    let n = f.len();
    let operand_reads: usize = f.inputs.iter().map(|(v, _)| v.len).sum();
    d.cost.flops += (n * f.body.len()) as f64;
    d.cost.reads[0] = operand_reads as f64;
    d.cost.writes += (n * f.outputs.len()) as f64;
    Ok(Some(d))
}

/// `out[0] = Σ_src Σ_i v[i]²` and `out[1]` = the non-finite elements of `src` and `check`, each
/// dispatch in one workgroup: the gradients (one buffer) with the checked values of the first
/// buffer they sit in, then one accumulating dispatch per further buffer of checked values.
pub fn grad_stats(src: &[View], check: &[View], out: View) -> Result<Vec<Dispatch>, String> {
    let buf = src.first().map_or(out.buf, |v| v.buf);
    if src.iter().any(|v| v.buf != buf) {
        return Err("gradient statistics over several gradient buffers".into());
    }
    let span = |v: &View| Span {
        off: u(v.offset),
        len: u(v.len),
    };
    let mut cbufs: Vec<usize> = check.iter().map(|v| v.buf).collect();
    cbufs.dedup();
    let mut seen = std::collections::BTreeSet::new();
    cbufs.retain(|b| seen.insert(*b));
    if cbufs.is_empty() {
        cbufs.push(buf);
    }
    let mut out_ds = Vec::new();
    for (i, &cbuf) in cbufs.iter().enumerate() {
        let grads: &[View] = if i == 0 { src } else { &[] };
        let checked: Vec<&View> = check.iter().filter(|v| v.buf == cbuf).collect();
        let p = GradStats {
            nseg: u(grads.len() + checked.len()),
            out_off: u(out.offset),
            nsum: u(grads.len()),
            accumulate: (i > 0) as u32,
        };
        // Σg²: two operations per gradient; the finiteness test: one per checked value.
        let (g, c): (usize, usize) = (grads.iter().map(|v| v.len).sum(), checked.iter().map(|v| v.len).sum());
        let spans: Vec<Span> = grads.iter().chain(checked).map(span).collect();
        out_ds.push(
            Dispatch::new(
                Family::Reduce,
                "grad_stats",
                &p,
                vec![buf, cbuf],
                vec![out.buf],
                Grid::Fixed([1, 1, 1]),
            )
            .with_table(&spans)
            .with_cost(Cost::new(2 * g + c, &[g, c], 2)),
        );
    }
    Ok(out_ds)
}
