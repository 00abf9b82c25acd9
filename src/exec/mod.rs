//! The executor: compiles a graph once into a [`Program`] for a backend, then runs it step after
//! step with named feeds and fetches.
//!
//! Compiling does all the work that must not happen per step: it picks the nodes the fetches
//! (and, when training, the gradients) need, in topological order; gives each a storage view —
//! parameters in the ParamStore's flat buffer, gradients straight into their slots of the flat
//! gradient buffer, reshapes as aliases of their operand, everything else in pooled buffers
//! reused as soon as their last reader has run; lowers every node to a kernel; appends the
//! fused optimiser update; and hands the list to the backend to prepare once.

mod params;

pub use params::{ParamEntry, ParamStore, ALIGN};

use crate::autodiff::Gradients;
use crate::backend::{Backend, Kernel, Segment, StepUniforms, UpdateKernel, View};
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, Op};
use crate::optim::{Clip, Optimizer, Schedule};
use crate::shape::Shape;
use crate::tensor::Tensor;
use std::collections::HashMap;

/// Data fed to one input for one step.
#[derive(Clone, Copy, Debug)]
pub enum Feed<'a> {
    /// Values for an f32 input, row-major.
    F32(&'a [f32]),
    /// Class labels for a labels input.
    Labels(&'a [u32]),
}

/// What a training program adds to the forward computation.
#[derive(Clone, Copy, Debug)]
pub struct Training<'a> {
    /// The gradients to apply (from [`crate::autodiff::backward`]).
    pub grads: &'a Gradients,
    /// How to apply them.
    pub optimizer: &'a Optimizer,
}

/// The fetched values of one step.
#[derive(Clone, Debug, Default)]
pub struct Outputs {
    values: Vec<(NodeId, Tensor)>,
}

impl Outputs {
    /// The value of a fetched node.
    pub fn get(&self, node: NodeId) -> Result<&Tensor> {
        self.values
            .iter()
            .find(|(n, _)| *n == node)
            .map(|(_, t)| t)
            .ok_or_else(|| Error::UnknownNode(format!("node #{} was not fetched by this program", node.index())))
    }

    /// The value of a fetched one-element node.
    pub fn scalar(&self, node: NodeId) -> Result<f32> {
        self.get(node)?.scalar()
    }
}

struct InputSlot<B: Backend> {
    buf: B::Buffer,
    shape: Shape,
    classes: Option<usize>,
    needed: bool,
}

/// A graph compiled for one backend: run it with [`Program::run`].
pub struct Program<B: Backend> {
    backend: B,
    prepared: B::Program,
    inputs: HashMap<String, InputSlot<B>>,
    fetches: Vec<(NodeId, View, Shape)>,
    schedule: Option<Schedule>,
    updates: u64,
    seed: u64,
    kernels: usize,
    plan_bytes: usize,
    store_bytes: usize,
}

const PARAMS: usize = 0;
const GRADS: usize = 1;

/// The program's buffer table, with each buffer's length.
struct Table<B: Backend> {
    bufs: Vec<B::Buffer>,
    lens: Vec<usize>,
    /// Pooled buffers whose tensor is dead: `(capacity, index)`.
    free: Vec<(usize, usize)>,
}

impl<B: Backend> Table<B> {
    fn push(&mut self, buf: B::Buffer, len: usize) -> usize {
        self.bufs.push(buf);
        self.lens.push(len);
        self.bufs.len() - 1
    }

    fn alloc(&mut self, b: &B, len: usize, label: &str) -> Result<View> {
        let buf = b.alloc(len, label)?;
        Ok(View {
            buf: self.push(buf, len),
            offset: 0,
            len,
        })
    }

    /// A pooled buffer for a tensor of `len` elements: the smallest free one that is large
    /// enough, or a new one.
    fn pooled(&mut self, b: &B, len: usize) -> Result<View> {
        let best = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, (cap, _))| *cap >= len)
            .min_by_key(|(_, (cap, _))| *cap)
            .map(|(i, _)| i);
        match best {
            Some(i) => Ok(View {
                buf: self.free.swap_remove(i).1,
                offset: 0,
                len,
            }),
            None => self.alloc(b, len, "activation"),
        }
    }

    fn release(&mut self, buf: usize) {
        self.free.push((self.lens[buf], buf));
    }
}

impl<B: Backend> Program<B> {
    /// Compile `graph` for the store's backend: a program that computes `fetches` and, with
    /// `training`, applies one optimiser update per run.
    pub fn compile(
        graph: &Graph,
        store: &mut ParamStore<B>,
        fetches: &[NodeId],
        training: Option<Training<'_>>,
    ) -> Result<Self> {
        let backend = store.backend.clone();
        let nodes = graph.nodes();
        for &f in fetches {
            if f.index() >= nodes.len() {
                return Err(Error::UnknownNode(format!(
                    "fetch #{} is not a node of this graph",
                    f.index()
                )));
            }
        }
        // Parameter placements, by graph parameter index.
        let mut param_offset = Vec::with_capacity(graph.params().len());
        for p in graph.params() {
            let e = store.entry(&p.name)?;
            if e.shape != p.shape {
                return Err(Error::Shape {
                    op: "compile",
                    node: format!("`{}`", p.name),
                    shapes: vec![e.shape.0.clone(), p.shape.0.clone()],
                    reason: "the ParamStore holds this parameter with another shape".into(),
                });
            }
            param_offset.push(e.offset);
        }

        let mut table = Table::<B> {
            bufs: Vec::new(),
            lens: Vec::new(),
            free: Vec::new(),
        };
        table.push(store.params.clone(), store.len());
        table.push(store.grads.clone(), store.len());
        let mut state_bufs = Vec::new();
        let mut grad_of: HashMap<usize, Vec<usize>> = HashMap::new(); // grad node -> param indices
        if let Some(t) = &training {
            t.optimizer.validate()?;
            for &(pi, gnode) in &t.grads.params {
                if pi >= graph.params().len() || gnode.index() >= nodes.len() {
                    return Err(Error::UnknownNode(
                        "the gradients were computed on another graph".into(),
                    ));
                }
                if graph.params()[pi].trainable {
                    grad_of.entry(gnode.index()).or_default().push(pi);
                }
            }
            store.ensure_state(t.optimizer.kind.state_slots())?;
            for s in &store.state[..t.optimizer.kind.state_slots()] {
                state_bufs.push(table.push(s.clone(), store.len()));
            }
        }

        // Which nodes are needed, and who reads them last.
        let mut needed = vec![false; nodes.len()];
        for &f in fetches {
            needed[f.index()] = true;
        }
        for &g in grad_of.keys() {
            needed[g] = true;
        }
        let close = |needed: &mut Vec<bool>| {
            for i in (0..nodes.len()).rev() {
                if needed[i] {
                    for x in &nodes[i].inputs {
                        needed[x.index()] = true;
                    }
                }
            }
        };
        close(&mut needed);
        // State updates (batch-norm running statistics) of the forward pass a training program
        // runs: those whose value depends on a node this program computes. The update itself is
        // a side branch no fetch depends on, so it is added to the needed set here.
        let mut touches = vec![false; nodes.len()];
        for (i, n) in nodes.iter().enumerate() {
            touches[i] = (needed[i] && !n.op.is_leaf()) || n.inputs.iter().any(|x| touches[x.index()]);
        }
        let assigns: Vec<(usize, NodeId)> = if training.is_some() {
            graph
                .assigns()
                .iter()
                .copied()
                .filter(|(_, v)| touches[v.index()])
                .collect()
        } else {
            Vec::new()
        };
        for (_, v) in &assigns {
            needed[v.index()] = true;
        }
        close(&mut needed);
        // Storage root of each node: reshapes alias their operand.
        let mut root: Vec<usize> = (0..nodes.len()).collect();
        for (i, n) in nodes.iter().enumerate() {
            if matches!(n.op, Op::Reshape) {
                root[i] = root[n.inputs[0].index()];
            }
        }
        let mut persistent = vec![false; nodes.len()];
        for &f in fetches.iter().chain(assigns.iter().map(|(_, v)| v)) {
            persistent[root[f.index()]] = true;
        }
        let mut last_use = vec![0usize; nodes.len()];
        for (i, n) in nodes.iter().enumerate().filter(|(i, _)| needed[*i]) {
            last_use[root[i]] = last_use[root[i]].max(i);
            for x in &n.inputs {
                last_use[root[x.index()]] = last_use[root[x.index()]].max(i);
            }
        }

        // Constants: one buffer, written once.
        let mut const_vals = Vec::new();
        let mut const_at = HashMap::new();
        for (i, n) in nodes.iter().enumerate().filter(|(i, _)| needed[*i]) {
            if let Op::Const { value } = n.op {
                const_at.insert(i, const_vals.len());
                const_vals.extend(std::iter::repeat_n(value, n.shape.numel()));
            }
        }
        let const_buf = if const_vals.is_empty() {
            None
        } else {
            let v = table.alloc(&backend, const_vals.len(), "constants")?;
            backend.write(&table.bufs[v.buf], 0, &const_vals)?;
            Some(v.buf)
        };

        let mut inputs = HashMap::new();
        let mut view: Vec<Option<View>> = vec![None; nodes.len()];
        let mut kernels = Vec::new();
        let mut released = vec![false; nodes.len()];
        let mut claimed = vec![false; graph.params().len()];
        let mut copies = Vec::new(); // (source view, param index): gradients placed elsewhere
        for (i, n) in nodes.iter().enumerate() {
            let len = n.shape.numel();
            if let Op::Input { name, classes } = &n.op {
                // Every input gets a buffer so that feeding it is always valid.
                let v = table.alloc(&backend, len, name)?;
                view[i] = Some(v);
                inputs.insert(
                    name.clone(),
                    InputSlot {
                        buf: table.bufs[v.buf].clone(),
                        shape: n.shape.clone(),
                        classes: *classes,
                        needed: needed[i],
                    },
                );
                continue;
            }
            if !needed[i] {
                continue;
            }
            let v = match &n.op {
                Op::Param { index } => View {
                    buf: PARAMS,
                    offset: param_offset[*index],
                    len,
                },
                Op::Const { .. } => View {
                    buf: const_buf.expect("constants were collected"),
                    offset: const_at[&i],
                    len,
                },
                Op::Reshape => view[n.inputs[0].index()].expect("operands are placed before their readers"),
                _ => {
                    let slot = grad_of.get(&i).and_then(|ps| ps.first()).copied();
                    let out = match slot {
                        Some(pi) => {
                            claimed[pi] = true;
                            persistent[i] = true;
                            View {
                                buf: GRADS,
                                offset: param_offset[pi],
                                len,
                            }
                        }
                        None => table.pooled(&backend, len)?,
                    };
                    let ins: Vec<View> = n
                        .inputs
                        .iter()
                        .map(|x| view[x.index()].expect("operands are placed before their readers"))
                        .collect();
                    let in_shapes = n.inputs.iter().map(|x| graph.shape(*x).clone()).collect();
                    kernels.push(Kernel::Op {
                        op: n.op.clone(),
                        inputs: ins,
                        in_shapes,
                        out,
                        out_shape: n.shape.clone(),
                        node: NodeId(i),
                    });
                    out
                }
            };
            view[i] = Some(v);
            // Gradients that could not be written in place (leaves, aliases, shared) are copied.
            if let Some(ps) = grad_of.get(&i) {
                for &pi in ps {
                    if !claimed[pi] {
                        claimed[pi] = true;
                        persistent[root[i]] = true;
                        copies.push((v, pi));
                    }
                }
            }
            // Release the operands whose last reader this was.
            for x in n.inputs.iter().map(|x| root[x.index()]).chain(std::iter::once(root[i])) {
                if !nodes[x].op.is_leaf() && !persistent[x] && !released[x] && last_use[x] == i {
                    released[x] = true;
                    table.release(view[x].expect("released tensors were placed").buf);
                }
            }
        }
        for (src, pi) in copies {
            kernels.push(Kernel::Copy {
                src,
                dst: View {
                    buf: GRADS,
                    offset: param_offset[pi],
                    len: src.len,
                },
            });
        }
        for &(pi, v) in &assigns {
            let src = view[v.index()].expect("assigned values are placed");
            kernels.push(Kernel::Copy {
                src,
                dst: View {
                    buf: PARAMS,
                    offset: param_offset[pi],
                    len: src.len,
                },
            });
        }

        let mut schedule = None;
        if let Some(t) = &training {
            let opt = t.optimizer;
            let mut segments: Vec<Segment> = grad_of
                .values()
                .flatten()
                .map(|&pi| Segment {
                    offset: param_offset[pi],
                    len: graph.params()[pi].shape.numel(),
                    decay: graph.params()[pi].decay,
                })
                .collect();
            segments.sort_by_key(|s| s.offset);
            let mut max_norm = None;
            let mut clip_value = None;
            for c in &opt.clip {
                match *c {
                    Clip::Value(v) => clip_value = Some(v),
                    Clip::Norm(m) => {
                        let out = table.alloc(&backend, 1, "grad norm")?;
                        let src = segments
                            .iter()
                            .map(|s| View {
                                buf: GRADS,
                                offset: s.offset,
                                len: s.len,
                            })
                            .collect();
                        kernels.push(Kernel::SumSquares { src, out });
                        max_norm = Some((m, out));
                    }
                }
            }
            kernels.push(Kernel::Update(UpdateKernel {
                rule: opt.kind,
                weight_decay: opt.weight_decay,
                clip_value,
                max_norm,
                params: PARAMS,
                grads: GRADS,
                state: state_bufs,
                segments,
            }));
            schedule = Some(opt.schedule.clone());
        }

        let fetch_list = fetches
            .iter()
            .map(|&f| (f, view[f.index()].expect("fetches are placed"), graph.shape(f).clone()))
            .collect();
        let own = 2 + training.map_or(0, |t| t.optimizer.kind.state_slots());
        let plan_bytes = 4 * table.lens[own..].iter().sum::<usize>();
        let store_bytes = store.bytes();
        let n_kernels = kernels.len();
        let prepared = backend.prepare(table.bufs, kernels)?;
        Ok(Program {
            backend,
            prepared,
            inputs,
            fetches: fetch_list,
            schedule,
            updates: 0,
            seed: 0,
            kernels: n_kernels,
            plan_bytes,
            store_bytes,
        })
    }

    /// Run one step: write the feeds, run every kernel (and the update, when training), return
    /// the fetched values. Every input the program needs must be fed; feeding an input of the
    /// graph that this program does not read is allowed (one batch can feed train and eval).
    pub fn run(&mut self, feeds: &[(&str, Feed<'_>)]) -> Result<Outputs> {
        for (name, feed) in feeds {
            let slot = self.inputs.get(*name).ok_or_else(|| {
                let mut known: Vec<String> = self.inputs.keys().cloned().collect();
                known.sort();
                Error::UnknownFeed {
                    name: name.to_string(),
                    known,
                }
            })?;
            let n = match feed {
                Feed::F32(d) => d.len(),
                Feed::Labels(d) => d.len(),
            };
            if n != slot.shape.numel() {
                return Err(Error::FeedSize {
                    name: name.to_string(),
                    shape: slot.shape.0.clone(),
                    got: n,
                });
            }
            match (feed, slot.classes) {
                (Feed::F32(d), None) => self.backend.write(&slot.buf, 0, d)?,
                (Feed::Labels(d), Some(c)) => {
                    if let Some(&bad) = d.iter().find(|&&l| l as usize >= c) {
                        return Err(Error::Label {
                            name: name.to_string(),
                            label: bad as usize,
                            classes: c,
                        });
                    }
                    let v: Vec<f32> = d.iter().map(|&l| l as f32).collect();
                    self.backend.write(&slot.buf, 0, &v)?
                }
                (Feed::F32(_), Some(_)) => {
                    return Err(Error::Invalid {
                        op: "run",
                        reason: format!("input `{name}` takes class labels (Feed::Labels)"),
                    })
                }
                (Feed::Labels(_), None) => {
                    return Err(Error::Invalid {
                        op: "run",
                        reason: format!("input `{name}` takes f32 values (Feed::F32)"),
                    })
                }
            }
        }
        for (name, slot) in &self.inputs {
            if slot.needed && !feeds.iter().any(|(n, _)| n == name) {
                return Err(Error::MissingFeed { name: name.clone() });
            }
        }
        let uniforms = StepUniforms {
            lr: self.schedule.as_ref().map_or(0.0, |s| s.at(self.updates)),
            t: self.updates + 1,
            seed: self.seed,
        };
        let views: Vec<View> = self.fetches.iter().map(|f| f.1).collect();
        let data = self.backend.execute(&mut self.prepared, &uniforms, &views)?;
        if self.schedule.is_some() {
            self.updates += 1;
        }
        let values = self
            .fetches
            .iter()
            .zip(data)
            .map(|((n, _, s), d)| {
                (
                    *n,
                    Tensor {
                        shape: s.clone(),
                        data: d,
                    },
                )
            })
            .collect();
        Ok(Outputs { values })
    }

    /// Optimiser updates applied so far (drives the schedule and Adam's bias correction).
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// Set the update counter, e.g. when resuming from a checkpoint.
    pub fn set_updates(&mut self, t: u64) {
        self.updates = t;
    }

    /// Set the seed of on-device randomness.
    pub fn set_seed(&mut self, seed: u64) {
        self.seed = seed;
    }

    /// The learning rate the next step will use, if this is a training program.
    pub fn learning_rate(&self) -> Option<f32> {
        self.schedule.as_ref().map(|s| s.at(self.updates))
    }

    /// Number of kernels one step runs.
    pub fn kernel_count(&self) -> usize {
        self.kernels
    }

    /// Device bytes this program holds on its own (activations, inputs, constants).
    pub fn plan_bytes(&self) -> usize {
        self.plan_bytes
    }

    /// Peak device bytes while the program runs: its own buffers plus the ParamStore's.
    pub fn peak_bytes(&self) -> usize {
        self.plan_bytes + self.store_bytes
    }
}
