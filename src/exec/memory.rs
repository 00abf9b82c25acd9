//! The memory plan: a storage view for every tensor a schedule touches, in a buffer table whose
//! sizes are all known before anything is allocated, so a program too large for its device or
//! for the user's budget fails in milliseconds, naming the largest tensors.
//!
//! Parameters live in the ParamStore's flat buffer, gradients straight in their slots of the
//! flat gradient buffer (or of a micro-batch buffer when gradients accumulate), reshapes and
//! contiguous slices alias their operand, constants share one buffer, and every other tensor takes a pooled buffer that
//! is reused as soon as its last reader has run.

use super::schedule::Schedule;
use crate::backend::{MemoryLimits, View};
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, Op};
use crate::shape::DType;
use std::collections::HashMap;

/// The flat parameter buffer's index in every program's buffer table.
pub(crate) const PARAMS: usize = 0;
/// The flat gradient buffer's index.
pub(crate) const GRADS: usize = 1;

/// `bytes` rounded up to whole 4-byte words: every tensor starts word-aligned.
pub(crate) fn words(bytes: usize) -> usize {
    bytes.div_ceil(4) * 4
}

/// An f32 view of the flat (parameter-store layout) buffers.
pub(crate) fn flat(buf: usize, first: usize, len: usize) -> View {
    View {
        buf,
        offset: DType::F32.bytes(first),
        len,
        dtype: DType::F32,
    }
}

/// One buffer of the table, before it exists.
#[derive(Clone, Debug)]
pub(crate) struct BufSpec {
    /// Bytes (a multiple of 4).
    pub bytes: usize,
    /// What it holds, for messages and the printed plan.
    pub label: String,
}

/// What the memory plan needs from the executor.
pub(crate) struct Layout<'a> {
    /// Each graph parameter's offset in the flat buffers.
    pub param_offset: &'a [usize],
    /// Elements in each of the store's flat buffers.
    pub store_len: usize,
    /// Optimiser state buffers the store holds for this program.
    pub state_slots: usize,
    /// Gradient node → the parameters it is the gradient of.
    pub grad_of: &'a HashMap<usize, Vec<usize>>,
    /// Compute gradients into a micro-batch buffer, to be added into the flat gradient buffer.
    pub accumulate: bool,
    /// Reserve the two gradient-statistics elements the update reads.
    pub stats: bool,
}

/// Where everything lives.
pub(crate) struct Memory {
    /// The buffer table: parameters, gradients, optimiser state, then the program's own.
    pub bufs: Vec<BufSpec>,
    /// The first buffer the program owns (the ones before belong to the ParamStore).
    pub owned_from: usize,
    /// Storage of each node the program touches.
    pub view: Vec<Option<View>>,
    /// The contents of the constants buffer, if there is one: `(buffer, bytes)`.
    pub constants: Option<(usize, Vec<u8>)>,
    /// Gradients that could not be computed in place: `(where they are, parameter index)`.
    pub copies: Vec<(View, usize)>,
    /// The buffer gradients are written to: [`GRADS`], or the micro-batch buffer.
    pub grad_target: usize,
    /// Gradient statistics for the update (two elements).
    pub stats: Option<View>,
}

struct Table {
    bufs: Vec<BufSpec>,
    /// Pooled buffers whose tensor is dead: `(capacity, index)`.
    free: Vec<(usize, usize)>,
}

impl Table {
    /// A new buffer of `bytes` (rounded up to words); its index.
    fn alloc(&mut self, bytes: usize, label: &str) -> usize {
        self.bufs.push(BufSpec {
            bytes: words(bytes),
            label: label.into(),
        });
        self.bufs.len() - 1
    }

    /// A whole new buffer for `len` elements of `dtype`.
    fn alloc_view(&mut self, len: usize, dtype: DType, label: &str) -> View {
        View {
            buf: self.alloc(dtype.bytes(len), label),
            offset: 0,
            len,
            dtype,
        }
    }

    /// A pooled buffer for `len` elements of `dtype`: the smallest free one that is large
    /// enough, whatever type it held before, or a new one.
    fn pooled(&mut self, len: usize, dtype: DType) -> View {
        let need = words(dtype.bytes(len));
        let best = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, (cap, _))| *cap >= need)
            .min_by_key(|(_, (cap, _))| *cap)
            .map(|(i, _)| i);
        match best {
            Some(i) => View {
                buf: self.free.swap_remove(i).1,
                offset: 0,
                len,
                dtype,
            },
            None => self.alloc_view(len, dtype, "activations"),
        }
    }

    fn release(&mut self, buf: usize) {
        self.free.push((self.bufs[buf].bytes, buf));
    }
}

/// Place every tensor of `s`. Inputs always get a buffer, so feeding any input of the graph is
/// valid even when this program does not read it.
pub(crate) fn plan(graph: &Graph, s: &Schedule, l: &Layout<'_>) -> Memory {
    let nodes = graph.nodes();
    let mut t = Table {
        bufs: Vec::new(),
        free: Vec::new(),
    };
    let store_bytes = DType::F32.bytes(l.store_len);
    t.alloc(store_bytes, "parameters");
    t.alloc(store_bytes, "gradients");
    for k in 0..l.state_slots {
        t.alloc(store_bytes, &format!("optimizer state {k}"));
    }
    let owned_from = t.bufs.len();
    let grad_target = if l.accumulate {
        t.alloc(store_bytes, "micro-batch gradients")
    } else {
        GRADS
    };
    let stats = l.stats.then(|| t.alloc_view(2, DType::F32, "gradient statistics"));

    // Constants: one buffer, each tensor word-aligned and stored in its own type.
    let mut const_bytes: Vec<u8> = Vec::new();
    let mut const_at = HashMap::new();
    for &i in &s.order {
        if let Op::Const { value } = nodes[i].op {
            let n = &nodes[i];
            const_at.insert(i, const_bytes.len());
            for _ in 0..n.shape.numel() {
                match n.dtype {
                    DType::F32 => const_bytes.extend(value.to_le_bytes()),
                    DType::F16 => const_bytes.extend(half::f16::from_f32(value).to_le_bytes()),
                    DType::U32 => const_bytes.extend((value as u32).to_le_bytes()),
                }
            }
            const_bytes.resize(words(const_bytes.len()), 0);
        }
    }
    let const_buf = (!const_bytes.is_empty()).then(|| t.alloc(const_bytes.len(), "constants"));

    let mut view: Vec<Option<View>> = vec![None; nodes.len()];
    let mut persistent = s.persistent.clone();
    let mut released = vec![false; nodes.len()];
    let mut claimed = vec![false; graph.params().len()];
    let mut copies = Vec::new();
    // A gradient that is a reshape of a computed tensor (a convolution's weight gradient,
    // reduced as a matrix and viewed as the 4-D kernel) is computed straight into the slot:
    // the reshape then aliases the slot and no copy is needed.
    let mut slot_of_root: HashMap<usize, usize> = HashMap::new();
    for (&g, ps) in l.grad_of {
        let mut r = g;
        while let (Some(0), Some(x)) = (super::schedule::alias_of(graph, r), nodes[r].inputs.first()) {
            if nodes[x.index()].shape.numel() != nodes[r].shape.numel() {
                break;
            }
            r = x.index();
        }
        let computed = !nodes[r].op.is_leaf() && super::schedule::alias_of(graph, r).is_none();
        if r != g && computed && nodes[r].dtype == DType::F32 && !l.grad_of.contains_key(&r) {
            if let Some(&pi) = ps.first() {
                slot_of_root.entry(r).or_insert(pi);
            }
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        let len = n.shape.numel();
        if let Op::Input { name, .. } = &n.op {
            let v = t.alloc_view(len, n.dtype, &format!("input `{name}`"));
            view[i] = Some(v);
            // An input can be a gradient (the loss-scale seed, when the loss is a parameter).
            for &pi in l.grad_of.get(&i).into_iter().flatten() {
                if !claimed[pi] {
                    claimed[pi] = true;
                    copies.push((v, pi));
                }
            }
            continue;
        }
        if !s.needed[i] {
            continue;
        }
        let alias = super::schedule::alias_of(graph, i);
        let v = match &n.op {
            // A view of its operand's storage (a reshape, a contiguous slice).
            _ if alias.is_some() => {
                let base = view[n.inputs[0].index()].expect("operands are placed before their readers");
                View {
                    offset: base.offset + n.dtype.bytes(alias.unwrap_or(0)),
                    len,
                    ..base
                }
            }
            Op::Param { index } => flat(PARAMS, l.param_offset[*index], len),
            Op::Const { .. } => View {
                buf: const_buf.expect("constants were collected"),
                offset: const_at[&i],
                len,
                dtype: n.dtype,
            },
            _ => match l
                .grad_of
                .get(&i)
                .and_then(|ps| ps.first())
                .or(slot_of_root.get(&i))
                .copied()
            {
                // A gradient computed straight into its parameter's slot (gradients of the f32
                // parameters are f32: autodiff casts them back from any lower precision).
                Some(pi) if n.dtype == DType::F32 => {
                    claimed[pi] = true;
                    persistent[i] = true;
                    flat(grad_target, l.param_offset[pi], len)
                }
                _ => t.pooled(len, n.dtype),
            },
        };
        view[i] = Some(v);
        // Gradients that could not be written in place (leaves, aliases, shared) are copied.
        if let Some(ps) = l.grad_of.get(&i) {
            for &pi in ps {
                if !claimed[pi] {
                    claimed[pi] = true;
                    persistent[s.root[i]] = true;
                    copies.push((v, pi));
                }
            }
        }
        // Release the operands whose last reader this was.
        for x in n
            .inputs
            .iter()
            .map(|x| s.root[x.index()])
            .chain(std::iter::once(s.root[i]))
        {
            if !nodes[x].op.is_leaf() && !persistent[x] && !released[x] && s.last_use[x] == i {
                released[x] = true;
                t.release(view[x].expect("released tensors were placed").buf);
            }
        }
    }
    Memory {
        bufs: t.bufs,
        owned_from,
        view,
        constants: const_buf.map(|b| (b, const_bytes)),
        copies,
        grad_target,
        stats,
    }
}

impl Memory {
    /// Bytes of the buffers the program owns.
    pub fn owned_bytes(&self) -> usize {
        self.bufs[self.owned_from..].iter().map(|b| b.bytes).sum::<usize>()
    }
}

/// The budget a program is checked against: the user's, else the device's total if known.
pub(crate) fn check(
    graph: &Graph,
    m: &Memory,
    store_bytes: usize,
    allocated: usize,
    limits: MemoryLimits,
    budget: Option<usize>,
) -> Result<()> {
    let largest = |n: usize| -> String {
        let mut t: Vec<(usize, usize)> = m
            .view
            .iter()
            .enumerate()
            .filter(|(i, v)| {
                v.is_some()
                    && super::schedule::alias_of(graph, *i).is_none()
                    && !matches!(graph.nodes()[*i].op, Op::Param { .. })
            })
            .map(|(i, _)| (graph.nodes()[i].dtype.bytes(graph.nodes()[i].shape.numel()), i))
            .collect();
        t.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        t.iter()
            .take(n)
            .map(|&(bytes, i)| {
                format!(
                    "{} {:?} {} {}",
                    graph.describe(NodeId(i, graph.id())),
                    graph.nodes()[i].shape,
                    graph.nodes()[i].dtype,
                    human(bytes)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    for b in &m.bufs[m.owned_from..] {
        if b.bytes > limits.max_buffer {
            return Err(Error::OutOfMemory(format!(
                "the {} buffer needs {} but the device binds at most {} per buffer; the largest \
                 tensors are {}. Use a smaller batch.",
                b.label,
                human(b.bytes),
                human(limits.max_buffer),
                largest(3)
            )));
        }
    }
    let peak = store_bytes + m.owned_bytes();
    let (limit, source) = match (budget, limits.total) {
        (Some(b), _) => (
            b,
            "the memory budget (KILN_MEMORY_BUDGET or CompileOptions::memory_budget)",
        ),
        // The free memory does not count what the store already holds.
        (None, Some(t)) => (t + allocated, "the memory available on the device"),
        (None, None) => return Ok(()),
    };
    if peak > limit {
        return Err(Error::OutOfMemory(format!(
            "the program needs {} at its peak ({} of parameters and optimiser state, {} of its \
             own), more than the {} of {source}; the largest tensors are {}. Use a smaller batch \
             or raise the budget.",
            human(peak),
            human(store_bytes),
            human(m.owned_bytes()),
            human(limit),
            largest(5)
        )));
    }
    Ok(())
}

/// `1.5 GiB`, `12.0 MiB`, `512 B`.
pub(crate) fn human(bytes: usize) -> String {
    let b = bytes as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{bytes} B")
    }
}
