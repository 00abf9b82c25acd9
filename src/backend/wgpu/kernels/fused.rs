//! Generated kernels for the executor's fused runs of element-wise ops ([`Fused`]).
//!
//! Each run becomes one WGSL source: one invocation per element of the index space loads the
//! external operands it needs, computes every op of the run in registers with the same formulas
//! as the element-wise family ([`unary_wgsl`], [`binary_wgsl`]), and stores the values the rest
//! of the program reads. The source depends on the run's structure (its ops and their
//! constants, how each operand is addressed, which buffers are bound) and, for operands
//! addressed through strides, on the coalesced sizes and strides, which are literals (integer
//! division by a constant is a multiply and a shift); offsets and the element count are in the
//! parameter words, so runs of the same structure and shape share one pipeline.
//!
//! Parameter words (`p`, binding 0): `[n, rank, dims[6]]`, then for each external operand
//! `[offset, strides[6]]`, then one offset per stored value — all in elements (the generated
//! code reads the counts and offsets; the sizes and strides are kept there for inspection).
//! Bindings: 0 the parameters, then each distinct buffer once (read-only unless a value is
//! stored in it), so a run may read and write different tensors of one pooled buffer.

use super::elementwise::{binary_wgsl, unary_wgsl};
use super::{Dispatch, Family, Grid, MAX_RANK};
use crate::backend::Fused;
use crate::graph::Op;
use crate::shape::coalesce_dyn;
use std::fmt::Write;
use std::sync::Arc;

/// How an external operand is addressed at element `e`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Addr {
    /// `offset + e`: the operand has the index space's layout.
    Contiguous,
    /// `offset`: one value broadcast everywhere.
    Scalar,
    /// `offset + Σ coordinate · stride`.
    Strided,
}

/// Words of the header: n, rank, dims.
const HEADER: usize = 2 + MAX_RANK;
/// Words per external operand: offset, strides.
const PER_INPUT: usize = 1 + MAX_RANK;

/// A float as an exact WGSL expression.
fn lit(x: f32) -> String {
    format!("bitcast<f32>({:#010x}u)", x.to_bits())
}

/// The index space of `f` coalesced with every operand's strides and the output's contiguous
/// ones, and how each operand is addressed.
struct Layout {
    dims: Vec<usize>,
    strides: Vec<Vec<usize>>,
    addr: Vec<Addr>,
}

fn layout(f: &Fused) -> Result<Layout, String> {
    let out_strides = crate::shape::Shape(f.shape.0.clone()).strides();
    let mut lists: Vec<&[usize]> = f.inputs.iter().map(|(_, s)| s.as_slice()).collect();
    lists.push(&out_strides);
    let (dims, strides) = coalesce_dyn(f.shape.dims(), &lists);
    if dims.len() > MAX_RANK {
        return Err(format!("a fused kernel over rank {} (at most {MAX_RANK})", dims.len()));
    }
    let contiguous = &strides[strides.len() - 1];
    let addr: Vec<Addr> = strides[..f.inputs.len()]
        .iter()
        .map(|s| {
            if s == contiguous {
                Addr::Contiguous
            } else if s.iter().all(|&x| x == 0) {
                Addr::Scalar
            } else {
                Addr::Strided
            }
        })
        .collect();
    Ok(Layout { dims, strides, addr })
}

/// The WGSL of `f` at element `e` of its index space: module-scope functions (each strided
/// operand's offset, each op) and the statements that load the operands, compute the ops and
/// store the values. `t{binding(buf)}` names a buffer's binding; `input_off(k)` and
/// `output_off(o)` are WGSL expressions for the offsets of operand k and stored value o; operand
/// `given`, if any, is not loaded but is the WGSL value `c` (a producer's result in a register).
fn body_wgsl(
    f: &Fused,
    l: &Layout,
    binding: &dyn Fn(usize) -> usize,
    input_off: &dyn Fn(usize) -> String,
    output_off: &dyn Fn(usize) -> String,
    given: Option<usize>,
) -> Result<(String, String), String> {
    let mut funcs = String::new();
    // The offset of a strided operand at element e, with the sizes and strides written into
    // the source: a division by a constant compiles to a multiply and a shift, where one by a
    // run-time value is a long sequence on most GPUs (and scalar code per lane on llvmpipe).
    for (k, a) in l.addr.iter().enumerate() {
        if *a != Addr::Strided || given == Some(k) {
            continue;
        }
        let _ = writeln!(
            funcs,
            "\nfn at{k}(e: u32) -> u32 {{\n    var rem = e;\n    var idx = {};",
            input_off(k)
        );
        let s = &l.strides[k];
        for ax in (1..l.dims.len()).rev() {
            let _ = writeln!(funcs, "    {{\n        let q = rem / {}u;", l.dims[ax]);
            if s[ax] != 0 {
                let _ = writeln!(funcs, "        idx += (rem - q * {}u) * {}u;", l.dims[ax], s[ax]);
            }
            let _ = writeln!(funcs, "        rem = q;\n    }}");
        }
        // The outermost coordinate is what remains (e < n).
        if s[0] != 0 {
            let _ = writeln!(funcs, "    idx += rem * {}u;", s[0]);
        }
        let _ = writeln!(funcs, "    return idx;\n}}");
    }
    // One function per op, with its constants as exact literals.
    for (j, (op, _)) in f.body.iter().enumerate() {
        let (params, body) = op_wgsl(op)?;
        let _ = writeln!(funcs, "\nfn op{j}({params}) -> f32 {{\n{body}\n}}");
    }
    let mut stmts = String::new();
    for (k, ((v, _), a)) in f.inputs.iter().zip(&l.addr).enumerate() {
        if given == Some(k) {
            let _ = writeln!(stmts, "    let v{k} = c;");
            continue;
        }
        let index = match a {
            Addr::Contiguous => format!("{} + e", input_off(k)),
            Addr::Scalar => input_off(k),
            Addr::Strided => format!("at{k}(e)"),
        };
        let _ = writeln!(stmts, "    let v{k} = t{}[{index}];", binding(v.buf));
    }
    let n_in = f.inputs.len();
    for (j, (_, args)) in f.body.iter().enumerate() {
        let args: Vec<String> = args.iter().map(|a| format!("v{a}")).collect();
        let _ = writeln!(stmts, "    let v{} = op{j}({});", n_in + j, args.join(", "));
    }
    for (o, (value, v)) in f.outputs.iter().enumerate() {
        let _ = writeln!(stmts, "    t{}[{} + e] = v{value};", binding(v.buf), output_off(o));
    }
    Ok((funcs, stmts))
}

/// The buffers of `f`'s bindings: read-only ones (not counting `skip`, an operand's buffer that
/// is not read) first, then the written ones, each once.
fn buffers(f: &Fused, skip: Option<usize>) -> (Vec<usize>, Vec<usize>) {
    let written: Vec<usize> = dedup(f.outputs.iter().map(|(_, v)| v.buf));
    let read: Vec<usize> = dedup(
        f.inputs
            .iter()
            .enumerate()
            .filter(|&(k, _)| Some(k) != skip)
            .map(|(_, (v, _))| v.buf)
            .filter(|b| !written.contains(b)),
    );
    (read, written)
}

/// The dispatch of `f` (views already in elements), its WGSL generated.
pub fn lower(f: &Fused) -> Result<Dispatch, String> {
    let n = f.len();
    let l = layout(f)?;
    // Distinct buffers: read-only ones first, then the written ones.
    let (read, written) = buffers(f, None);
    let binding = |buf: usize| -> usize {
        1 + read
            .iter()
            .chain(&written)
            .position(|&b| b == buf)
            .expect("every buffer is bound")
    };

    let mut words: Vec<u32> = vec![n as u32, l.dims.len() as u32];
    words.extend(super::padded(&l.dims, 1));
    for ((v, _), s) in f.inputs.iter().zip(&l.strides) {
        words.push(v.offset as u32);
        words.extend(super::padded(s, 0));
    }
    let out_base = words.len();
    words.extend(f.outputs.iter().map(|(_, v)| v.offset as u32));

    let mut src = String::new();
    let nodes: Vec<String> = f.nodes.iter().map(|n| format!("#{}", n.index())).collect();
    let _ = writeln!(
        src,
        "// Fused element-wise kernel of nodes {} (generated).",
        nodes.join(", ")
    );
    let _ = writeln!(src, "@group(0) @binding(0) var<storage, read> p: array<u32>;");
    for &b in read.iter().chain(&written) {
        let access = if written.contains(&b) { "read_write" } else { "read" };
        let _ = writeln!(
            src,
            "@group(0) @binding({0}) var<storage, {access}> t{0}: array<f32>;",
            binding(b)
        );
    }
    src.push_str(include_str!("../../../../shaders/math.wgsl"));
    let (funcs, stmts) = body_wgsl(
        f,
        &l,
        &binding,
        &|k| format!("p[{}u]", HEADER + k * PER_INPUT),
        &|o| format!("p[{}u]", out_base + o),
        None,
    )?;
    src.push_str(&funcs);
    src.push_str(
        "
@compute @workgroup_size(256)
fn fused(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = (wid.y * nwg.x + wid.x) * 256u + lid;
    if (e >= p[0]) { return; }
",
    );
    src.push_str(&stmts);
    src.push_str("}\n");

    let mut d = Dispatch::new(Family::Fused, "fused", &0u32, read, written, Grid::Elements(n));
    d.params = bytemuck::cast_slice(&words).to_vec();
    d.source = Some(Arc::from(src));
    // One operation per op and element; every operand read and every stored value written once
    // (a broadcast operand is counted at its own size).
    let operand_reads: usize = f.inputs.iter().map(|(v, _)| v.len).sum();
    d.cost = super::Cost::new(n * f.body.len(), &[operand_reads], n * f.outputs.len());
    Ok(d)
}

/// What a matmul with `f` as its epilogue binds and computes: `f`'s operand `head` (read
/// contiguously over the whole index space, which is the product's output) is the product's
/// value in a register instead of a load. Returns the buffers `f` reads (other than through
/// `head`) and writes, the WGSL that declares their bindings (numbered from `first`, read-only
/// ones first, in the returned order) and the functions `f` needs, including
/// `fn epilogue(e: u32, c: f32)`, which computes and stores `f`'s values at element `e` given
/// the product's element `c`. Offsets are literals.
pub fn epilogue(f: &Fused, head: usize, first: usize) -> Result<(Vec<usize>, Vec<usize>, String), String> {
    let l = layout(f)?;
    if l.addr.get(head) != Some(&Addr::Contiguous) {
        return Err("the product must be read as the fused kernel's index space".into());
    }
    let (read, written, mut src, stmts) = attached(f, &l, Some(head), first)?;
    let _ = write!(src, "\nfn epilogue(e: u32, c: f32) {{\n{stmts}}}\n");
    Ok((read, written, src))
}

/// What a reduction of `f`'s stored value `value` (an index into `f.outputs`) binds and
/// computes when it runs `f` itself: as [`epilogue`], with `fn prologue(e: u32) -> f32`, which
/// computes and stores all of `f`'s values at element `e` and returns that one.
pub fn prologue(f: &Fused, value: usize, first: usize) -> Result<(Vec<usize>, Vec<usize>, String), String> {
    let l = layout(f)?;
    let Some(&(v, _)) = f.outputs.get(value) else {
        return Err(format!("a fused kernel has no stored value {value}"));
    };
    let (read, written, mut src, stmts) = attached(f, &l, None, first)?;
    let _ = write!(src, "\nfn prologue(e: u32) -> f32 {{\n{stmts}    return v{v};\n}}\n");
    Ok((read, written, src))
}

/// `f` as part of another kernel's source: the buffers it reads (but not through operand
/// `given`) and writes, the declarations of their bindings (numbered from `first`) with the
/// functions `f` needs, and the statements at element `e` (offsets as literals).
fn attached(
    f: &Fused,
    l: &Layout,
    given: Option<usize>,
    first: usize,
) -> Result<(Vec<usize>, Vec<usize>, String, String), String> {
    let (read, written) = buffers(f, given);
    let binding = |buf: usize| -> usize {
        first
            + read
                .iter()
                .chain(&written)
                .position(|&b| b == buf)
                .expect("every buffer is bound")
    };
    let mut src = String::new();
    for &b in read.iter().chain(&written) {
        let access = if written.contains(&b) { "read_write" } else { "read" };
        let _ = writeln!(
            src,
            "@group(0) @binding({0}) var<storage, {access}> t{0}: array<f32>;",
            binding(b)
        );
    }
    src.push_str(include_str!("../../../../shaders/math.wgsl"));
    let (funcs, stmts) = body_wgsl(
        f,
        l,
        &binding,
        &|k| format!("{}u", f.inputs[k].0.offset),
        &|o| format!("{}u", f.outputs[o].1.offset),
        given,
    )?;
    src.push_str(&funcs);
    Ok((read, written, src, stmts))
}

/// The parameters and body of an op's WGSL function.
fn op_wgsl(op: &Op) -> Result<(&'static str, String), String> {
    let consts = |p: [f32; 2]| format!("    let p0 = {};\n    let p1 = {};\n", lit(p[0]), lit(p[1]));
    Ok(match op {
        Op::Unary(u) => {
            let w = unary_wgsl(*u);
            ("x: f32", format!("{}    return {};", consts(w.p), w.f))
        }
        // As the unary_grad kernel: dy · f'(x).
        Op::UnaryGrad(u) => {
            let w = unary_wgsl(*u);
            ("x: f32, dy: f32", format!("{}    return dy * ({});", consts(w.p), w.d))
        }
        Op::Binary(b) => ("x: f32, y: f32", format!("    return {};", binary_wgsl(*b))),
        Op::Where => ("c: f32, x: f32, y: f32", "    return select(y, x, c != 0.0);".into()),
        Op::BroadcastTo => ("x: f32", "    return x;".into()),
        other => return Err(format!("{} cannot be fused", other.name())),
    })
}

fn dedup(it: impl Iterator<Item = usize>) -> Vec<usize> {
    let mut v: Vec<usize> = Vec::new();
    for b in it {
        if !v.contains(&b) {
            v.push(b);
        }
    }
    v
}
