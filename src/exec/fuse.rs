//! The fusion pass: runs of consecutive element-wise kernels become one [`Kernel::Fused`].
//!
//! A bias add followed by an activation, an activation's derivative times the incoming gradient,
//! the scaling inside a loss: each is a kernel that reads and writes a whole tensor for one
//! arithmetic operation, and on a GPU each is a dispatch. Fused, the run reads its external
//! operands once, keeps intermediate values in registers, and stores only the values something
//! outside the run reads.
//!
//! Only kernels that are adjacent in the list are fused, so no other kernel runs between the
//! members and moving all of them to one place changes nothing another kernel can see. What
//! still needs care is the memory plan's reuse of storage: a member's output may occupy the
//! storage of an operand whose last reader was an earlier member. A kernel that joins a run
//! must therefore not write storage that the run reads from outside, nor read from outside
//! storage that the run writes; when it would, the run ends there.
//!
//! Everything fused is f32 (an f16 value stored between two ops is rounded, a register is
//! not), so each op rounds exactly as it would alone and a fused program computes the same bits
//! as the unfused one on the CPU reference.

use super::schedule::{self, Schedule};
use crate::backend::{Fused, Kernel, View};
use crate::graph::{Graph, Op};
use crate::shape::{broadcast_shapes, broadcast_strides, DType, Shape};

/// Most distinct buffers one fused kernel touches: with its parameter block that is 8 storage
/// bindings, the most WebGPU promises every adapter (and as many as the standard layout of
/// the other kernels binds, so no adapter Kiln runs on offers fewer). A batch norm's gradient
/// reads x, dy and four per-channel vectors and writes one result: one kernel with 7, two with 6.
pub(crate) const MAX_BUFFERS: usize = 7;

/// Highest rank the fused index space may have (the GPU kernels' strided addressing).
const MAX_RANK: usize = 6;

/// Whether fusion is on: `KILN_FUSION=off` turns it off unless the options decide.
pub(crate) fn enabled(option: Option<bool>) -> bool {
    option.unwrap_or_else(|| std::env::var("KILN_FUSION").as_deref() != Ok("off"))
}

/// Fuse runs of adjacent element-wise kernels of `kernels` (the lowered list, one
/// [`Kernel::Op`] per computed node plus the gradient copies). `must_write` says which views
/// are read by something the schedule does not see (the parameter store, the update, the
/// micro-batch accumulation). Returns the new list and, for each old kernel, the index of the
/// new kernel that computes it.
pub(crate) fn fuse(
    graph: &Graph,
    s: &Schedule,
    kernels: Vec<Kernel>,
    must_write: impl Fn(&View) -> bool,
) -> (Vec<Kernel>, Vec<usize>) {
    let nodes = graph.nodes();
    // The nodes that read each storage root (aliases are transparent: their readers read the root).
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for &j in &s.order {
        if nodes[j].op.is_leaf() || schedule::alias_of(graph, j).is_some() {
            continue;
        }
        for x in &nodes[j].inputs {
            readers[s.root[x.index()]].push(j);
        }
    }
    let mut out = Vec::with_capacity(kernels.len());
    let mut new_index = Vec::with_capacity(kernels.len());
    let mut run: Vec<Kernel> = Vec::new();
    let mut run_shape = Shape(vec![]);
    let flush = |run: &mut Vec<Kernel>, out: &mut Vec<Kernel>, new_index: &mut Vec<usize>, shape: &Shape| {
        if run.is_empty() {
            return;
        }
        let fused = (run.len() > 1)
            .then(|| build(run, shape, graph, &readers, s, &must_write))
            .flatten();
        match fused {
            Some(f) => {
                new_index.extend(std::iter::repeat_n(out.len(), run.len()));
                out.push(Kernel::Fused(f));
                run.clear();
            }
            None => {
                for k in run.drain(..) {
                    new_index.push(out.len());
                    out.push(k);
                }
            }
        }
    };
    for k in kernels {
        if !fusable(&k) {
            flush(&mut run, &mut out, &mut new_index, &run_shape);
            new_index.push(out.len());
            out.push(k);
            continue;
        }
        match joins(&run, &run_shape, &k, graph) {
            Some(shape) => run_shape = shape,
            None => {
                flush(&mut run, &mut out, &mut new_index, &run_shape);
                run_shape = op_parts(&k).3.clone();
            }
        }
        run.push(k);
    }
    flush(&mut run, &mut out, &mut new_index, &run_shape);
    (out, new_index)
}

/// The parts of a [`Kernel::Op`]: op, operand views, operand shapes, output shape, output view,
/// node index.
fn op_parts(k: &Kernel) -> (&Op, &[View], &[Shape], &Shape, View, usize) {
    match k {
        Kernel::Op {
            op,
            inputs,
            in_shapes,
            out,
            out_shape,
            node,
        } => (op, inputs, in_shapes, out_shape, *out, node.index()),
        _ => unreachable!("only fusable kernels, which are ops, reach here"),
    }
}

/// An element-wise op on f32 tensors of rank ≤ 6.
fn fusable(k: &Kernel) -> bool {
    let Kernel::Op {
        op,
        inputs,
        out,
        out_shape,
        in_shapes,
        ..
    } = k
    else {
        return false;
    };
    matches!(
        op,
        Op::Unary(_) | Op::UnaryGrad(_) | Op::Binary(_) | Op::Where | Op::BroadcastTo
    ) && out.dtype == DType::F32
        && inputs.iter().all(|v| v.dtype == DType::F32)
        && out_shape.rank() <= MAX_RANK
        && in_shapes.iter().all(|s| s.rank() <= MAX_RANK)
}

/// Whether two views share any byte.
fn overlap(a: &View, b: &View) -> bool {
    a.buf == b.buf && a.offset < b.offset + b.bytes() && b.offset < a.offset + a.bytes()
}

/// Whether a run over `space` may read the external operand `ext` and store `out`: they share
/// no storage, or they are the same tensor over the whole index space, so that each element is
/// read by the invocation that overwrites it, before it does (the memory plan puts a result in
/// the storage its operand frees, and an element-wise kernel may work in place).
fn in_place((ev, es): (View, &Shape), (ov, os): (View, &Shape), space: &Shape) -> bool {
    !overlap(&ev, &ov) || (ev == ov && es == space && os == space)
}

/// The index space of `run` with `k` added, if `k` may join it: its shape and the run's must
/// broadcast one to the other, it must read members only as they are (not through a reshape),
/// it must not read storage the run writes or write storage the run reads, and the run must
/// stay within [`MAX_BUFFERS`].
fn joins(run: &[Kernel], shape: &Shape, k: &Kernel, graph: &Graph) -> Option<Shape> {
    if run.is_empty() {
        return None;
    }
    let (_, kin, _, kshape, kout, knode) = op_parts(k);
    let space = if kshape == shape {
        shape.clone()
    } else {
        match broadcast_shapes(kshape, shape) {
            Some(b) if &b == shape || &b == kshape => b,
            _ => return None,
        }
    };
    let members: Vec<usize> = run.iter().map(|m| op_parts(m).5).collect();
    let outs: Vec<(View, &Shape)> = run.iter().map(|m| (op_parts(m).4, op_parts(m).3)).collect();
    let mut external: Vec<(View, &Shape)> = Vec::new();
    for m in run {
        let (_, ins, in_shapes, _, _, node) = op_parts(m);
        for ((x, v), sh) in graph.nodes()[node].inputs.iter().zip(ins).zip(in_shapes) {
            if !members.contains(&x.index()) {
                external.push((*v, sh));
            }
        }
    }
    let (_, _, kin_shapes, _, _, _) = op_parts(k);
    for ((x, v), sh) in graph.nodes()[knode].inputs.iter().zip(kin).zip(kin_shapes) {
        if members.contains(&x.index()) {
            continue;
        }
        // A member read through an alias (a reshape) would need its value at another index.
        if outs.iter().any(|(o, _)| overlap(o, v)) {
            return None;
        }
        external.push((*v, sh));
    }
    // An earlier member's storage reused for this result is dead (nothing outside the run reads
    // it, or the memory plan would not have reused it), so the same tensor may be rewritten in place.
    if !outs
        .iter()
        .chain(&external)
        .all(|e| in_place(*e, (kout, kshape), &space))
    {
        return None;
    }
    let mut bufs: Vec<usize> = external.iter().chain(&outs).map(|(v, _)| v.buf).collect();
    bufs.push(kout.buf);
    bufs.sort_unstable();
    bufs.dedup();
    (bufs.len() <= MAX_BUFFERS).then_some(space)
}

/// The fused kernel of `run` over `shape`, or `None` when a member that must be stored is
/// smaller than the index space (it would be stored many times over).
fn build(
    run: &[Kernel],
    shape: &Shape,
    graph: &Graph,
    readers: &[Vec<usize>],
    s: &Schedule,
    must_write: &impl Fn(&View) -> bool,
) -> Option<Fused> {
    let members: Vec<usize> = run.iter().map(|m| op_parts(m).5).collect();
    let mut inputs: Vec<(View, Vec<usize>)> = Vec::new();
    let mut body = Vec::with_capacity(run.len());
    let mut outputs = Vec::new();
    let mut nodes = Vec::with_capacity(run.len());
    for m in run {
        let (op, ins, in_shapes, out_shape, out, node) = op_parts(m);
        let mut args = Vec::with_capacity(ins.len());
        for ((x, v), sh) in graph.nodes()[node].inputs.iter().zip(ins).zip(in_shapes) {
            // `joins` made sure a member is only ever read as itself.
            match members.iter().position(|&j| j == x.index()) {
                Some(j) => args.push(Value::Member(j)),
                None => {
                    let strides = broadcast_strides(sh, shape);
                    let i = match inputs.iter().position(|(iv, is)| iv == v && *is == strides) {
                        Some(i) => i,
                        None => {
                            inputs.push((*v, strides));
                            inputs.len() - 1
                        }
                    };
                    args.push(Value::Input(i));
                }
            }
        }
        let stored = must_write(&out) || s.persistent[node] || readers[node].iter().any(|r| !members.contains(r));
        if stored {
            if out_shape != shape {
                return None;
            }
            outputs.push((body.len(), out));
        }
        nodes.push(crate::graph::NodeId(node, graph.id()));
        body.push((op.clone(), args));
    }
    if outputs.is_empty() {
        return None;
    }
    // The index space may have grown after a member joined: check in-place reads again.
    for (o, v) in &outputs {
        let os = op_parts(&run[*o]).3;
        for (iv, st) in &inputs {
            let dense = *st == broadcast_strides(shape, shape);
            if overlap(iv, v) && !(iv == v && dense && os == shape) {
                return None;
            }
        }
    }
    let n_in = inputs.len();
    let index = |v: &Value| match *v {
        Value::Input(i) => i,
        Value::Member(j) => n_in + j,
    };
    Some(Fused {
        shape: shape.clone(),
        body: body
            .into_iter()
            .map(|(op, args)| (op, args.iter().map(index).collect()))
            .collect(),
        outputs: outputs.into_iter().map(|(j, v)| (n_in + j, v)).collect(),
        inputs,
        nodes,
    })
}

/// Where an operand of a fused op comes from.
enum Value {
    /// External operand `i`.
    Input(usize),
    /// The result of member `j`.
    Member(usize),
}
