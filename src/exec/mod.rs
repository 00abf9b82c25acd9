//! The executor: compiles a graph once into a [`Program`] for a backend, then runs it step after
//! step with named feeds and fetches.
//!
//! Compiling does all the work that must not happen per step, as named passes:
//! - **select** ([`schedule`]): the nodes the fetches (and, when training, the gradients and
//!   the loss) need, in topological order, with the state updates the forward pass applies;
//! - **memory** ([`memory`]): a storage view for each — parameters in the ParamStore's flat
//!   buffer, gradients straight into their slots of the flat gradient buffer, reshapes as
//!   aliases, everything else in pooled buffers reused once their last reader has run — and the
//!   check of the whole table against the device's limits and the budget, before anything is
//!   allocated;
//! - **lower**: one [`Kernel`] per node, plus gradient copies and state updates;
//! - **update**: gradient statistics (norm and finiteness) and the fused optimiser update, kept
//!   apart so a step can compute gradients without applying them;
//! - then the buffers are allocated and the backend prepares the kernel lists once.
//!
//! The result is printable: [`Program::plan`].

mod fuse;
mod memory;
mod params;
mod plan;
mod schedule;

pub use params::{LossScaleState, ParamEntry, ParamStore, ALIGN};
pub use plan::{Phase, Plan, PlanBuffer, PlanStep};

use crate::autodiff::Gradients;
use crate::backend::{Backend, Kernel, Segment, StepUniforms, UpdateKernel, View};
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, Op};
use crate::optim::{Clip, Optimizer, Schedule};
use crate::shape::DType;
use crate::shape::Shape;
use crate::tensor::Tensor;
use half::f16;
use memory::{flat, GRADS, PARAMS};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Data fed to one input for one step, row-major.
#[derive(Clone, Copy, Debug)]
pub enum Feed<'a> {
    /// Values for a float input (an f16 input rounds them).
    F32(&'a [f32]),
    /// Values for an f16 input.
    F16(&'a [f16]),
    /// Class labels for a labels input (each checked against the class count).
    Labels(&'a [u32]),
    /// Values for a u32 input (token ids, or labels).
    U32(&'a [u32]),
}

/// What a training program adds to the forward computation.
#[derive(Clone, Copy, Debug)]
pub struct Training<'a> {
    /// The gradients to apply (from [`crate::autodiff::backward`]).
    pub grads: &'a Gradients,
    /// How to apply them.
    pub optimizer: &'a Optimizer,
    /// Micro-batches whose gradients are averaged into one update: [`Program::run`] applies
    /// the update on every `accumulate`-th call. 1 updates on every call.
    pub accumulate: usize,
    /// How the loss scale moves, when the gradients come from
    /// [`crate::autodiff::backward_scaled`].
    pub loss_scaling: LossScaling,
}

/// The smallest loss scale: 2⁻²⁴, f16's smallest subnormal. Backing off below it is an error.
pub const MIN_LOSS_SCALE: f32 = 1.0 / 16_777_216.0;

/// The largest loss scale a seed of type `dtype` holds (the scale is written into it).
fn max_scale(dtype: DType) -> f32 {
    match dtype {
        DType::F16 => 65504.0,
        _ => f32::MAX,
    }
}

/// Dynamic loss scaling (as PyTorch's `GradScaler`): the backward pass starts from `S` instead
/// of 1; an update whose gradients are not all finite is skipped and `S` is divided by
/// `factor`; after `growth_interval` clean updates in a row `S` is multiplied by `factor`. The
/// update divides the gradients by `S`, so the weights see the true gradient. A non-finite
/// loss, or a scale backed off below [`MIN_LOSS_SCALE`], is an error as without scaling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossScaling {
    /// The first `S`.
    pub init: f32,
    /// Growth and back-off factor.
    pub factor: f32,
    /// Clean updates before `S` grows.
    pub growth_interval: u64,
}

impl Default for LossScaling {
    fn default() -> Self {
        LossScaling {
            init: 65536.0,
            factor: 2.0,
            growth_interval: 2000,
        }
    }
}

impl<'a> Training<'a> {
    /// Apply `grads` with `optimizer` on every run.
    pub fn new(grads: &'a Gradients, optimizer: &'a Optimizer) -> Self {
        Training {
            grads,
            optimizer,
            accumulate: 1,
            loss_scaling: LossScaling::default(),
        }
    }

    /// Set how the loss scale moves (only used with scaled gradients).
    pub fn loss_scaling(mut self, s: LossScaling) -> Self {
        self.loss_scaling = s;
        self
    }

    /// Average the gradients of `k` runs into each update (the same update as one run over a
    /// `k`-times larger batch, for a loss that is a mean over the batch).
    pub fn accumulate(mut self, k: usize) -> Self {
        self.accumulate = k;
        self
    }
}

/// Settings of [`Program::compile_with`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompileOptions {
    /// Refuse a program whose peak memory (its buffers plus the ParamStore's) exceeds this many
    /// bytes. Default: the `KILN_MEMORY_BUDGET` environment variable (bytes) if set, else the
    /// device's free memory where the backend knows it.
    pub memory_budget: Option<usize>,
    /// Fuse runs of element-wise kernels into one kernel each (see the fusion pass in
    /// `src/exec/fuse.rs`). Default: on, unless the `KILN_FUSION` environment variable is `off`.
    pub fusion: Option<bool>,
}

/// The fetched values of one step.
#[derive(Clone, Debug, Default)]
pub struct Outputs {
    /// Float fetches (f16 widened to f32).
    values: Vec<(NodeId, Tensor)>,
    /// u32 fetches.
    ids: Vec<(NodeId, Vec<u32>)>,
}

impl Outputs {
    /// The value of a fetched float node (f16 values are widened exactly to f32).
    pub fn get(&self, node: NodeId) -> Result<&Tensor> {
        if self.ids.iter().any(|(n, _)| *n == node) {
            return crate::error::invalid("Outputs::get", format!("node #{} is u32: use get_u32", node.index()));
        }
        self.values
            .iter()
            .find(|(n, _)| *n == node)
            .map(|(_, t)| t)
            .ok_or_else(|| Error::UnknownNode(format!("node #{} was not fetched by this program", node.index())))
    }

    /// The value of a fetched u32 node (labels, argmax indices, token ids).
    pub fn get_u32(&self, node: NodeId) -> Result<&[u32]> {
        self.ids
            .iter()
            .find(|(n, _)| *n == node)
            .map(|(_, v)| v.as_slice())
            .ok_or_else(|| Error::UnknownNode(format!("node #{} was not fetched by this program as u32", node.index())))
    }

    /// The value of a fetched one-element node.
    pub fn scalar(&self, node: NodeId) -> Result<f32> {
        self.get(node)?.scalar()
    }
}

struct InputSlot<B: Backend> {
    buf: B::Buffer,
    /// The buffer's index in the program's table.
    index: usize,
    shape: Shape,
    dtype: DType,
    classes: Option<usize>,
    needed: bool,
    /// Written by the program itself at the end of each step (see [`Program::carry`]).
    carried: bool,
}

/// A kernel list, prepared for the backend when first run.
struct Part<B: Backend> {
    kernels: Vec<Kernel>,
    prepared: Option<B::Program>,
}

impl<B: Backend> Part<B> {
    fn new(kernels: Vec<Kernel>) -> Self {
        Part {
            kernels,
            prepared: None,
        }
    }

    fn get(&mut self, b: &B, bufs: &[B::Buffer]) -> Result<&mut B::Program> {
        if self.prepared.is_none() {
            self.prepared = Some(b.prepare(bufs.to_vec(), self.kernels.clone())?);
        }
        Ok(self.prepared.as_mut().expect("prepared above"))
    }
}

/// What a training program keeps beyond the forward computation.
struct Trainable<B: Backend> {
    /// Forward, backward and (when accumulating) the addition into the gradient buffer.
    grads: Part<B>,
    /// Gradient statistics and the optimiser update.
    update: Part<B>,
    /// Zeroes the accumulated gradients after an update (only when accumulating).
    zero: Option<Part<B>>,
    schedule: Schedule,
    accumulate: usize,
    /// Runs whose gradients are in the gradient buffer and not yet applied.
    pending: usize,
    stats: View,
    /// Where the loss is (kept alive for the finiteness check), for messages.
    loss_view: Option<View>,
    /// `(parameter name, offset, len)` of every updated parameter, for messages.
    updated: Vec<(String, usize, usize)>,
    /// With scaled gradients: the seed input the loss scale is written to, and how it moves.
    scaling: Option<(B::Buffer, DType, LossScaling)>,
    scale_state: Arc<std::sync::Mutex<Option<LossScaleState>>>,
    /// The global gradient norm of the last update, before clipping.
    grad_norm: Option<f32>,
}

/// A graph compiled for one backend: run it with [`Program::run`].
pub struct Program<B: Backend> {
    backend: B,
    buffers: Vec<B::Buffer>,
    /// Every kernel in one list: what [`Program::run`] executes when no accumulation is pending.
    fused: Part<B>,
    training: Option<Trainable<B>>,
    inputs: HashMap<String, InputSlot<B>>,
    fetches: Vec<(NodeId, View, Shape)>,
    updates: Arc<AtomicU64>,
    seed: u64,
    plan: Plan,
}

impl<B: Backend> Program<B> {
    /// Compile `graph` for the store's backend: a program that computes `fetches` and, with
    /// `training`, applies optimiser updates. See [`Program::compile_with`].
    pub fn compile(
        graph: &Graph,
        store: &mut ParamStore<B>,
        fetches: &[NodeId],
        training: Option<Training<'_>>,
    ) -> Result<Self> {
        Self::compile_with(graph, store, fetches, training, &CompileOptions::default())
    }

    /// Compile with explicit options. Fails before allocating anything when the program would
    /// not fit the device or the memory budget, naming the largest tensors.
    pub fn compile_with(
        graph: &Graph,
        store: &mut ParamStore<B>,
        fetches: &[NodeId],
        training: Option<Training<'_>>,
        opts: &CompileOptions,
    ) -> Result<Self> {
        let backend = store.backend.clone();
        graph.check_ids("compile: fetch", fetches)?;
        let param_offset = place_params(graph, store)?;

        // Which gradient node feeds which parameter's slot.
        let mut grad_of: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut keep = Vec::new();
        if let Some(t) = &training {
            t.optimizer.validate()?;
            if t.accumulate == 0 {
                return crate::error::invalid("compile", "Training::accumulate must be at least 1");
            }
            let ls = t.loss_scaling;
            if !(ls.init.is_finite()
                && ls.init > 0.0
                && ls.factor.is_finite()
                && ls.factor > 1.0
                && ls.growth_interval > 0)
            {
                return crate::error::invalid(
                    "compile",
                    format!("loss scaling needs init > 0, factor > 1 and growth_interval > 0, got {ls:?}"),
                );
            }
            let ids: Vec<NodeId> = t.grads.params.iter().map(|p| p.1).chain(t.grads.loss).collect();
            graph
                .check_ids("compile: gradients", &ids)
                .map_err(|e| Error::UnknownNode(format!("the gradients were computed on another graph ({e})")))?;
            for &(pi, gnode) in &t.grads.params {
                if pi >= graph.params().len() {
                    return Err(Error::UnknownNode(
                        "the gradients were computed on another graph".into(),
                    ));
                }
                if graph.params()[pi].trainable {
                    grad_of.entry(gnode.index()).or_default().push(pi);
                }
            }
            if grad_of.is_empty() {
                let what = t
                    .grads
                    .loss
                    .map_or("the loss".to_string(), |l| format!("the loss {}", graph.describe(l)));
                return crate::error::invalid(
                    "compile",
                    format!("{what} depends on no trainable parameter, so training would change nothing (frozen parameters get no gradient)"),
                );
            }
            keep.extend(t.grads.loss);
        }
        let state_slots = training.map_or(0, |t| t.optimizer.kind.state_slots());

        // select → memory plan (checked before anything is allocated) → lower → update.
        let sched = schedule::select(graph, fetches, &grad_of, &keep, training.is_some());
        let accumulate = training.is_some_and(|t| t.accumulate > 1);
        let mem = memory::plan(
            graph,
            &sched,
            &memory::Layout {
                param_offset: &param_offset,
                store_len: store.len(),
                state_slots,
                grad_of: &grad_of,
                accumulate,
                stats: training.is_some(),
            },
        );
        let budget = match opts.memory_budget {
            Some(b) => Some(b),
            None => budget_from_env()?,
        };
        let store_bytes = DType::F32.bytes(store.len()) * (2 + state_slots);
        memory::check(graph, &mem, store_bytes, store.bytes(), backend.memory_limits(), budget)?;
        let (mut kernels, mut steps) = lower(graph, &sched, &mem, &param_offset);
        for (i, st) in steps.iter_mut().enumerate() {
            st.kernel = i;
        }
        if fuse::enabled(opts.fusion) {
            let (owned_from, grad_target) = (mem.owned_from, mem.grad_target);
            let (fused, index) = fuse::fuse(graph, &sched, kernels, |v| v.buf < owned_from || v.buf == grad_target);
            kernels = fused;
            for (st, k) in steps.iter_mut().zip(index) {
                st.kernel = k;
            }
        }
        let update = match &training {
            Some(t) => Some(update_pass(graph, t, &sched, &mem, &param_offset, &grad_of)?),
            None => None,
        };

        // Allocate: the store's buffers, then the program's own.
        store.ensure_state(state_slots)?;
        let mut buffers = vec![store.params.clone(), store.grads.clone()];
        buffers.extend(store.state[..state_slots].iter().cloned());
        for b in &mem.bufs[mem.owned_from..] {
            buffers.push(backend.alloc(b.bytes, &b.label)?);
        }
        if let Some((buf, vals)) = &mem.constants {
            backend.write(&buffers[*buf], 0, vals)?;
        }
        let mut inputs = HashMap::new();
        for (i, n) in graph.nodes().iter().enumerate() {
            if let Op::Input { name, classes } = &n.op {
                let v = mem.view[i].expect("inputs are placed");
                inputs.insert(
                    name.clone(),
                    InputSlot {
                        buf: buffers[v.buf].clone(),
                        index: v.buf,
                        shape: n.shape.clone(),
                        dtype: n.dtype,
                        classes: *classes,
                        needed: sched.needed[i],
                        carried: false,
                    },
                );
            }
        }
        let fetch_list = fetches
            .iter()
            .map(|&f| {
                (
                    f,
                    mem.view[f.index()].expect("fetches are placed"),
                    graph.shape(f).clone(),
                )
            })
            .collect();

        let mut plan_buffers: Vec<PlanBuffer> = mem
            .bufs
            .iter()
            .enumerate()
            .map(|(i, b)| PlanBuffer {
                label: b.label.clone(),
                bytes: b.bytes,
                shared: i < mem.owned_from,
            })
            .collect();
        if training.is_none() {
            // An inference program does not touch the gradient buffer.
            plan_buffers[GRADS].bytes = 0;
        }
        if let Some(t) = &training {
            if let Some(seed) = t.grads.loss_scale {
                let max = max_scale(graph.dtype(seed));
                if t.loss_scaling.init > max {
                    return crate::error::invalid(
                        "compile",
                        format!(
                            "the initial loss scale {} does not fit the {} loss (at most {max}); compute the loss in f32 or lower LossScaling::init",
                            t.loss_scaling.init,
                            graph.dtype(seed)
                        ),
                    );
                }
                let mut st = store
                    .scaling
                    .lock()
                    .map_err(|_| Error::Backend("loss scale lock poisoned".into()))?;
                if st.is_none() {
                    *st = Some(LossScaleState {
                        scale: t.loss_scaling.init,
                        clean: 0,
                        skipped: 0,
                    });
                }
            }
        }
        let (training, accumulate_n) = match (training, update) {
            (Some(t), Some((update_kernels, update_steps, zero))) => {
                let first = kernels.len();
                steps.extend(update_steps.into_iter().enumerate().map(|(i, st)| PlanStep {
                    kernel: first + i,
                    ..st
                }));
                let mut all = kernels.clone();
                all.extend(update_kernels.iter().cloned());
                let grads = std::mem::replace(&mut kernels, all);
                (
                    Some(Trainable {
                        grads: Part::new(grads),
                        update: Part::new(update_kernels),
                        zero: zero.map(|z| Part::new(vec![z])),
                        schedule: t.optimizer.schedule.clone(),
                        accumulate: t.accumulate,
                        pending: 0,
                        stats: mem.stats.expect("training programs have statistics"),
                        loss_view: t.grads.loss.and_then(|l| mem.view[l.index()]),
                        updated: updated_params(graph, &grad_of, &param_offset),
                        scaling: t.grads.loss_scale.map(|n| {
                            let v = mem.view[n.index()].expect("inputs are placed");
                            (buffers[v.buf].clone(), v.dtype, t.loss_scaling)
                        }),
                        scale_state: store.scaling.clone(),
                        grad_norm: None,
                    }),
                    t.accumulate,
                )
            }
            _ => (None, 0),
        };
        let plan = Plan {
            steps,
            buffers: plan_buffers,
            accumulate: accumulate_n,
        };
        let mut p = Program {
            backend,
            buffers,
            fused: Part::new(kernels),
            training,
            inputs,
            fetches: fetch_list,
            updates: store.updates.clone(),
            seed: 0,
            plan,
        };
        // Prepare what `run` uses now, so a program's first step costs no more than the rest.
        if p.training.as_ref().is_none_or(|t| t.accumulate == 1) {
            p.fused.get(&p.backend, &p.buffers)?;
        } else if let Some(t) = p.training.as_mut() {
            t.grads.get(&p.backend, &p.buffers)?;
            t.update.get(&p.backend, &p.buffers)?;
        }
        Ok(p)
    }

    /// Write the feeds; every input the program needs must be fed. Feeding an input of the graph
    /// that this program does not read is allowed (one batch can feed train and eval).
    fn write_feeds(&self, feeds: &[(&str, Feed<'_>)]) -> Result<()> {
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
                Feed::F16(d) => d.len(),
                Feed::Labels(d) | Feed::U32(d) => d.len(),
            };
            if n != slot.shape.numel() {
                return Err(Error::FeedSize {
                    name: name.to_string(),
                    shape: slot.shape.0.clone(),
                    got: n,
                });
            }
            let wrong = |takes: &str| {
                Err(Error::Invalid {
                    op: "run",
                    reason: format!("input `{name}` is {} and takes {takes}", slot.dtype),
                })
            };
            match (feed, slot.dtype) {
                (Feed::F32(d), DType::F32) => self.backend.write(&slot.buf, 0, bytemuck::cast_slice(d))?,
                (Feed::F32(d), DType::F16) => {
                    let h: Vec<f16> = d.iter().map(|&v| f16::from_f32(v)).collect();
                    self.backend.write(&slot.buf, 0, bytemuck::cast_slice(&h))?
                }
                (Feed::F16(d), DType::F16) => self.backend.write(&slot.buf, 0, bytemuck::cast_slice(d))?,
                (Feed::Labels(d) | Feed::U32(d), DType::U32) => {
                    if let Some(c) = slot.classes {
                        if let Some(&bad) = d.iter().find(|&&l| l as usize >= c) {
                            return Err(Error::Label {
                                name: name.to_string(),
                                label: bad as usize,
                                classes: c,
                            });
                        }
                    }
                    self.backend.write(&slot.buf, 0, bytemuck::cast_slice(d))?
                }
                (_, DType::U32) if slot.classes.is_some() => return wrong("class labels (Feed::Labels)"),
                (_, DType::U32) => return wrong("Feed::U32"),
                (_, DType::F16) => return wrong("Feed::F16 or Feed::F32"),
                (_, DType::F32) => return wrong("f32 values (Feed::F32)"),
            }
        }
        for (name, slot) in &self.inputs {
            if slot.needed
                && !slot.carried
                && name != crate::autodiff::LOSS_SCALE_INPUT
                && !feeds.iter().any(|(n, _)| n == name)
            {
                return Err(Error::MissingFeed { name: name.clone() });
            }
        }
        // The backward pass of scaled gradients starts from the current loss scale.
        if let Some(t) = &self.training {
            if let Some((buf, dtype, _)) = &t.scaling {
                let s = self.scale().unwrap_or(1.0);
                let bytes = match dtype {
                    DType::F16 => f16::from_f32(s).to_le_bytes().to_vec(),
                    _ => s.to_le_bytes().to_vec(),
                };
                self.backend.write(buf, 0, &bytes)?;
            }
        }
        Ok(())
    }

    /// The loss scale in force, for a program training scaled gradients.
    fn scale(&self) -> Option<f32> {
        let t = self.training.as_ref()?;
        t.scaling.as_ref()?;
        t.scale_state.lock().ok().and_then(|s| s.map(|s| s.scale))
    }

    /// The current loss scale, for a mixed-precision training program.
    pub fn loss_scale(&self) -> Option<f32> {
        self.scale()
    }

    /// Updates skipped so far because a scaled gradient was not finite (0 without scaling).
    pub fn skipped_updates(&self) -> u64 {
        self.training
            .as_ref()
            .and_then(|t| t.scale_state.lock().ok().and_then(|s| s.map(|s| s.skipped)))
            .unwrap_or(0)
    }

    fn uniforms(&self, grad_scale: f32) -> StepUniforms {
        let updates = self.updates.load(Ordering::Relaxed);
        // Randomness is keyed by the micro-batch's position in the run, a function of the
        // store's update counter alone, so a resumed run draws the masks it would have drawn.
        let (k, pending) = self
            .training
            .as_ref()
            .map_or((1, 0), |t| (t.accumulate as u64, t.pending as u64));
        StepUniforms {
            lr: self.training.as_ref().map_or(0.0, |t| t.schedule.at(updates)),
            t: updates + 1,
            step: updates * k + pending % k + 1,
            seed: self.seed,
            grad_scale,
        }
    }

    fn outputs(&self, data: Vec<Vec<u8>>) -> Outputs {
        let mut out = Outputs::default();
        for ((n, v, s), d) in self.fetches.iter().zip(data) {
            match v.dtype {
                DType::U32 => out.ids.push((*n, bytemuck::pod_collect_to_vec(&d))),
                dt => out.values.push((
                    *n,
                    Tensor {
                        shape: s.clone(),
                        data: to_f32(&d, dt),
                    },
                )),
            }
        }
        out
    }

    /// Run one step: write the feeds, run every kernel, return the fetched values. A training
    /// program computes the gradients and, on every `accumulate`-th run, applies the update
    /// to the averaged gradients.
    ///
    /// A non-finite gradient or loss never reaches the weights: the update is skipped and `run`
    /// returns [`Error::NonFinite`] naming the step and the first parameter whose gradient is
    /// not finite, with the weights and optimiser state as they were before the step.
    pub fn run(&mut self, feeds: &[(&str, Feed<'_>)]) -> Result<Outputs> {
        self.write_feeds(feeds)?;
        let mut views: Vec<View> = self.fetches.iter().map(|f| f.1).collect();
        let Some(t) = self.training.as_ref() else {
            let u = self.uniforms(1.0);
            let data = self
                .backend
                .execute(self.fused.get(&self.backend, &self.buffers)?, &u, &views)?;
            return Ok(self.outputs(data));
        };
        if t.accumulate == 1 && t.pending == 0 {
            // The common case: gradients and update in one submission.
            views.push(t.stats);
            let u = self.uniforms(1.0 / self.scale().unwrap_or(1.0));
            let mut data = self
                .backend
                .execute(self.fused.get(&self.backend, &self.buffers)?, &u, &views)?;
            let stats = to_f32(&data.pop().expect("the statistics were fetched"), DType::F32);
            self.finish_update(&stats, 1, u.grad_scale)?;
            return Ok(self.outputs(data));
        }
        let out = self.gradients_only(&views)?;
        let t = self.training.as_ref().expect("a training program");
        if t.pending >= t.accumulate {
            self.apply_update()?;
        }
        Ok(out)
    }

    /// Compute this batch's gradients without applying them: with `accumulate` = 1 they replace
    /// the previous ones, otherwise they add up until [`Program::apply_update`] (or the
    /// `accumulate`-th [`Program::run`]) averages and applies them. Returns the fetches.
    pub fn compute_gradients(&mut self, feeds: &[(&str, Feed<'_>)]) -> Result<Outputs> {
        if self.training.is_none() {
            return crate::error::invalid("compute_gradients", "this program was compiled without Training");
        }
        self.write_feeds(feeds)?;
        let views: Vec<View> = self.fetches.iter().map(|f| f.1).collect();
        self.gradients_only(&views)
    }

    fn gradients_only(&mut self, views: &[View]) -> Result<Outputs> {
        let u = self.uniforms(1.0);
        let t = self.training.as_mut().expect("a training program");
        if t.pending == 0 {
            // A new accumulation window starts from zero, whatever the store's gradient buffer
            // holds (another program's last gradients, or a discarded window).
            if let Some(z) = t.zero.as_mut() {
                self.backend.execute(z.get(&self.backend, &self.buffers)?, &u, &[])?;
            }
        }
        let data = self
            .backend
            .execute(t.grads.get(&self.backend, &self.buffers)?, &u, views)?;
        t.pending = if t.accumulate == 1 { 1 } else { t.pending + 1 };
        Ok(self.outputs(data))
    }

    /// Apply the gradients computed since the last update (their mean, when accumulating).
    /// Fails when there are none, or when one is not finite (then nothing changes and the
    /// gradients are discarded).
    pub fn apply_update(&mut self) -> Result<()> {
        let Some(t) = self.training.as_ref() else {
            return crate::error::invalid("apply_update", "this program was compiled without Training");
        };
        if t.pending == 0 {
            return crate::error::invalid("apply_update", "no gradients were computed since the last update");
        }
        let n = t.pending;
        let mean = if t.accumulate == 1 { 1.0 } else { 1.0 / n as f32 };
        let u = self.uniforms(mean / self.scale().unwrap_or(1.0));
        let t = self.training.as_mut().expect("a training program");
        let stats_view = t.stats;
        let mut data = self
            .backend
            .execute(t.update.get(&self.backend, &self.buffers)?, &u, &[stats_view])?;
        let stats = to_f32(&data.pop().expect("the statistics were fetched"), DType::F32);
        self.finish_update(&stats, n, u.grad_scale)
    }

    /// After an update ran on the device: count it, or explain why it was skipped. `grad_scale`
    /// is what the update multiplied the gradient buffer by.
    fn finish_update(&mut self, stats: &[f32], micro: usize, grad_scale: f32) -> Result<()> {
        let t = self.training.as_mut().expect("a training program");
        t.pending = 0;
        t.grad_norm = Some(stats[0].max(0.0).sqrt() * grad_scale);
        let scaling = t.scaling.as_ref().map(|s| s.2);
        let mut state = t
            .scale_state
            .lock()
            .map_err(|_| Error::Backend("loss scale lock poisoned".into()))?;
        if stats[1] == 0.0 {
            self.updates.fetch_add(1, Ordering::Relaxed);
            if let (Some(cfg), Some(st)) = (scaling, state.as_mut()) {
                st.clean += 1;
                if st.clean >= cfg.growth_interval {
                    // Grow only while the scale stays representable in the seed's type.
                    let max = t.scaling.as_ref().map_or(f32::MAX, |s| max_scale(s.1));
                    if st.scale * cfg.factor <= max {
                        st.scale *= cfg.factor;
                    }
                    st.clean = 0;
                }
            }
            return Ok(());
        }
        drop(state);
        // Find the first parameter whose gradient is not finite (read only on this rare path).
        let grads = &self.buffers[GRADS];
        let mut culprit = None;
        for (name, offset, len) in &t.updated {
            let v = flat(GRADS, *offset, *len);
            let g = to_f32(&self.backend.read(grads, v.offset, v.bytes())?, DType::F32);
            if let Some((i, v)) = g.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                culprit = Some(format!("the gradient of `{name}` is {v} (element {i})"));
                break;
            }
        }
        let loss_value = match t.loss_view {
            Some(v) => {
                let l = to_f32(&self.backend.read(&self.buffers[v.buf], v.offset, v.bytes())?, v.dtype);
                l.first().copied()
            }
            None => None,
        };
        // With loss scaling, overflowing gradients are expected now and then: skip the update
        // and back off. A non-finite loss is not an overflow of the scale, so it stays an error.
        if let Some(cfg) = scaling {
            if loss_value.is_none_or(|l| l.is_finite()) {
                let mut state = t
                    .scale_state
                    .lock()
                    .map_err(|_| Error::Backend("loss scale lock poisoned".into()))?;
                if let Some(st) = state.as_mut() {
                    st.scale /= cfg.factor;
                    st.clean = 0;
                    st.skipped += 1;
                    // Below f16's smallest subnormal no scale can help: the gradients are not
                    // finite whatever the scale (a NaN input, say).
                    if st.scale >= MIN_LOSS_SCALE {
                        return Ok(());
                    }
                    st.scale = MIN_LOSS_SCALE;
                }
            }
        }
        let loss = loss_value.map_or(String::new(), |l| format!("; the loss is {l}"));
        let step = self.updates.load(Ordering::Relaxed) + 1;
        let over = if micro > 1 {
            format!(" (over {micro} micro-batches)")
        } else {
            String::new()
        };
        Err(Error::NonFinite(format!(
            "update {step}{over} was skipped: {}{loss}. The weights, optimiser state and batch-norm \
             statistics are as they were before this step; lower the learning rate, clip gradients \
             or check the inputs for NaN",
            culprit.unwrap_or_else(|| "the loss is not finite".into())
        )))
    }

    /// Optimiser updates applied so far to the program's ParamStore (drives the schedule and
    /// Adam's bias correction); the counter lives in the store, shared by its programs.
    pub fn updates(&self) -> u64 {
        self.updates.load(Ordering::Relaxed)
    }

    /// Set the update counter, e.g. when resuming from a checkpoint (same as
    /// [`ParamStore::set_updates`]).
    pub fn set_updates(&mut self, t: u64) {
        self.updates.store(t, Ordering::Relaxed);
    }

    /// Set the seed of on-device randomness.
    pub fn set_seed(&mut self, seed: u64) {
        self.seed = seed;
    }

    /// The learning rate the next update will use, if this is a training program.
    pub fn learning_rate(&self) -> Option<f32> {
        let t = self.updates.load(Ordering::Relaxed);
        self.training.as_ref().map(|tr| tr.schedule.at(t))
    }

    /// The global L2 norm of the gradients the last update applied (averaged over accumulated
    /// micro-batches, loss scale removed), before any clipping: what `clip_grad_norm_` returns
    /// in PyTorch. `None` before the first update or for an inference program.
    pub fn grad_norm(&self) -> Option<f32> {
        self.training.as_ref().and_then(|t| t.grad_norm)
    }

    /// After every step, copy the value of `from` (a node this program fetches) into the input
    /// `input` (same shape and type), so the next step starts from it without a round trip
    /// through the host: how a recurrent model carries its state from one window of a sequence
    /// to the next (truncated backpropagation through time: an input is a leaf, so no gradient
    /// crosses the boundary). A carried input need not be fed (feeding it overrides the carried
    /// value for that step); it starts at zero and [`Program::reset_carried`] zeroes it again.
    pub fn carry(&mut self, from: NodeId, input: &str) -> Result<()> {
        let Some(&(_, src, ref shape)) = self.fetches.iter().find(|f| f.0 == from) else {
            return crate::error::invalid(
                "carry",
                format!(
                    "node #{} is not fetched by this program; fetch it to carry it",
                    from.index()
                ),
            );
        };
        let slot = self.inputs.get(input).ok_or_else(|| {
            let mut known: Vec<String> = self.inputs.keys().cloned().collect();
            known.sort();
            Error::UnknownFeed {
                name: input.to_string(),
                known,
            }
        })?;
        if slot.shape != *shape || slot.dtype != src.dtype {
            return crate::error::invalid(
                "carry",
                format!(
                    "node #{} is {:?} {} but input `{input}` is {:?} {}",
                    from.index(),
                    shape.0,
                    src.dtype,
                    slot.shape.0,
                    slot.dtype
                ),
            );
        }
        // An input has its own buffer, from offset 0.
        let dst = View {
            buf: slot.index,
            offset: 0,
            len: src.len,
            dtype: src.dtype,
        };
        let copy = Kernel::Copy { src, dst };
        self.fused.kernels.push(copy.clone());
        self.fused.prepared = None;
        if let Some(t) = self.training.as_mut() {
            t.grads.kernels.push(copy);
            t.grads.prepared = None;
        }
        self.inputs.get_mut(input).expect("looked up above").carried = true;
        Ok(())
    }

    /// Zero every carried input (the start of a new sequence).
    pub fn reset_carried(&mut self) -> Result<()> {
        for slot in self.inputs.values().filter(|s| s.carried) {
            let bytes = vec![0u8; slot.dtype.bytes(slot.shape.numel()).div_ceil(4) * 4];
            self.backend.write(&slot.buf, 0, &bytes)?;
        }
        Ok(())
    }

    /// Number of kernels one step runs (gradients and update).
    pub fn kernel_count(&self) -> usize {
        self.fused.kernels.len()
    }

    /// The compiled program as data: print it with `{}`.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Device bytes this program holds on its own (activations, inputs, constants).
    pub fn plan_bytes(&self) -> usize {
        self.plan.program_bytes()
    }

    /// Peak device bytes while the program runs: its own buffers plus the ParamStore's.
    pub fn peak_bytes(&self) -> usize {
        self.plan.peak_bytes()
    }
}

/// Little-endian bytes of `dtype` elements as f32.
pub(crate) fn to_f32(bytes: &[u8], dtype: DType) -> Vec<f32> {
    match dtype {
        DType::F32 => bytemuck::pod_collect_to_vec(bytes),
        DType::F16 => bytemuck::pod_collect_to_vec::<u8, f16>(bytes)
            .iter()
            .map(|h| h.to_f32())
            .collect(),
        DType::U32 => bytemuck::pod_collect_to_vec::<u8, u32>(bytes)
            .iter()
            .map(|&v| v as f32)
            .collect(),
    }
}

/// Each graph parameter's offset in the store, checking that the store holds it as declared.
fn place_params<B: Backend>(graph: &Graph, store: &ParamStore<B>) -> Result<Vec<usize>> {
    graph
        .params()
        .iter()
        .map(|p| {
            let e = store.entry(&p.name)?;
            if e.shape != p.shape {
                return Err(Error::Shape {
                    op: "compile",
                    node: format!("`{}`", p.name),
                    shapes: vec![e.shape.0.clone(), p.shape.0.clone()],
                    reason: "the ParamStore holds this parameter with another shape".into(),
                });
            }
            Ok(e.offset)
        })
        .collect()
}

fn budget_from_env() -> Result<Option<usize>> {
    match std::env::var("KILN_MEMORY_BUDGET") {
        Ok(v) => v.trim().parse().map(Some).map_err(|_| Error::Invalid {
            op: "KILN_MEMORY_BUDGET",
            reason: format!("`{v}` is not a number of bytes"),
        }),
        Err(_) => Ok(None),
    }
}

/// The lower pass: one kernel per computed node, then the gradient copies and (when
/// accumulating) the addition of this micro-batch's gradients into the flat buffer.
fn lower(
    graph: &Graph,
    s: &schedule::Schedule,
    m: &memory::Memory,
    param_offset: &[usize],
) -> (Vec<Kernel>, Vec<PlanStep>) {
    let nodes = graph.nodes();
    let mut kernels = Vec::new();
    let mut steps = Vec::new();
    let step = |what: String, op: &'static str, inputs: Vec<Vec<usize>>, out: View, shape: Vec<usize>| PlanStep {
        what,
        op,
        inputs,
        shape,
        dtype: out.dtype.name(),
        bytes: out.bytes(),
        buf: out.buf,
        offset: out.offset,
        phase: Phase::Gradients,
        kernel: 0,
    };
    for &i in &s.order {
        let n = &nodes[i];
        if n.op.is_leaf() || schedule::alias_of(graph, i).is_some() {
            continue;
        }
        let out = m.view[i].expect("computed nodes are placed");
        let inputs: Vec<View> = n
            .inputs
            .iter()
            .map(|x| m.view[x.index()].expect("operands are placed before their readers"))
            .collect();
        let in_shapes: Vec<Shape> = n.inputs.iter().map(|x| graph.shape(*x).clone()).collect();
        let id = NodeId(i, graph.id());
        // A gradient reduced straight into its parameter's slot says whose it is.
        let slot = (out.buf == m.grad_target)
            .then(|| param_offset.iter().position(|&o| DType::F32.bytes(o) == out.offset))
            .flatten()
            .map_or(String::new(), |pi| format!(" → grad `{}`", graph.params()[pi].name));
        steps.push(step(
            format!("{}{slot}", graph.describe(id)),
            n.op.name(),
            in_shapes.iter().map(|s| s.0.clone()).collect(),
            out,
            n.shape.0.clone(),
        ));
        kernels.push(Kernel::Op {
            op: n.op.clone(),
            inputs,
            in_shapes,
            out,
            out_shape: n.shape.clone(),
            node: id,
        });
    }
    for &(src, pi) in &m.copies {
        let dst = flat(m.grad_target, param_offset[pi], src.len);
        steps.push(step(
            format!("grad `{}`", graph.params()[pi].name),
            "copy",
            vec![vec![src.len]],
            dst,
            vec![src.len],
        ));
        kernels.push(Kernel::Copy { src, dst });
    }
    if m.grad_target != GRADS {
        let len = m.bufs[GRADS].bytes / DType::F32.size();
        let (src, dst) = (flat(m.grad_target, 0, len), flat(GRADS, 0, len));
        steps.push(step(
            "gradients += micro-batch".into(),
            "add_into",
            vec![vec![len]],
            dst,
            vec![len],
        ));
        kernels.push(Kernel::AddInto { src, dst });
    }
    (kernels, steps)
}

type UpdatePass = (Vec<Kernel>, Vec<PlanStep>, Option<Kernel>);

/// The update pass: gradient statistics (Σg² for clipping, the count of non-finite values for
/// the skip), the fused optimiser update, the state updates (`Graph::assign`, skipped with the
/// update), and the zeroing of accumulated gradients.
fn update_pass(
    graph: &Graph,
    t: &Training<'_>,
    s: &schedule::Schedule,
    m: &memory::Memory,
    param_offset: &[usize],
    grad_of: &HashMap<usize, Vec<usize>>,
) -> Result<UpdatePass> {
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
    let stats = m.stats.expect("training programs have statistics");
    let src: Vec<View> = segments.iter().map(|s| flat(GRADS, s.offset, s.len)).collect();
    // The loss and the assigned state must be finite too.
    let assigned: Vec<(usize, View)> = s
        .assigns
        .iter()
        .map(|&(pi, v)| (pi, m.view[v.index()].expect("assigned values are placed")))
        .collect();
    let check: Vec<View> = t
        .grads
        .loss
        .and_then(|l| m.view[l.index()])
        .into_iter()
        .chain(assigned.iter().map(|a| a.1))
        .collect();
    let mut max_norm = None;
    let mut clip_value = None;
    for c in &opt.clip {
        match *c {
            Clip::Value(v) => clip_value = Some(v),
            Clip::Norm(n) => max_norm = Some(n),
        }
    }
    let n_params: usize = segments.iter().map(|s| s.len).sum();
    let kernels = vec![
        Kernel::GradStats { src, check, out: stats },
        Kernel::Update(UpdateKernel {
            rule: opt.kind,
            weight_decay: opt.weight_decay,
            clip_value,
            max_norm,
            stats,
            params: PARAMS,
            grads: GRADS,
            state: (0..opt.kind.state_slots()).map(|k| 2 + k).collect(),
            segments,
        }),
    ];
    let step = |what: &str, op: &'static str, out: View, shape: Vec<usize>| PlanStep {
        what: what.into(),
        op,
        inputs: vec![vec![n_params]],
        shape,
        dtype: out.dtype.name(),
        bytes: out.bytes(),
        buf: out.buf,
        offset: out.offset,
        phase: Phase::Update,
        kernel: 0,
    };
    let all = flat(PARAMS, 0, m.bufs[PARAMS].bytes / DType::F32.size());
    let mut kernels = kernels;
    let mut steps = vec![
        step("Σg², non-finite count", "grad_stats", stats, vec![2]),
        step(opt.kind.name(), "update", all, vec![n_params]),
    ];
    for &(pi, src) in &assigned {
        let dst = flat(PARAMS, param_offset[pi], src.len);
        steps.push(PlanStep {
            inputs: vec![graph.params()[pi].shape.0.clone()],
            shape: graph.params()[pi].shape.0.clone(),
            ..step(&format!("`{}`", graph.params()[pi].name), "assign", dst, vec![])
        });
        kernels.push(Kernel::CopyIfFinite { src, dst, stats });
    }
    let zero = (m.grad_target != GRADS).then_some(Kernel::Fill {
        dst: View { buf: GRADS, ..all },
        value: 0.0,
    });
    Ok((kernels, steps, zero))
}

/// `(name, offset, len)` of every parameter the update changes, in store order.
fn updated_params(
    graph: &Graph,
    grad_of: &HashMap<usize, Vec<usize>>,
    param_offset: &[usize],
) -> Vec<(String, usize, usize)> {
    let mut v: Vec<(String, usize, usize)> = grad_of
        .values()
        .flatten()
        .map(|&pi| {
            let p = &graph.params()[pi];
            (p.name.clone(), param_offset[pi], p.shape.numel())
        })
        .collect();
    v.sort_by_key(|x| x.1);
    v
}
