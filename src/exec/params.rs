//! The ParamStore: every parameter of a model, its gradient and its optimiser state, each in
//! one flat device buffer, shared by every program compiled against the store.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::shape::{DType, Shape};
use crate::tensor::Tensor;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Parameters are f32. They start at multiples of this many elements (256 bytes), the strictest storage
/// offset alignment wgpu adapters ask for, so a GPU can bind a single parameter directly.
pub const ALIGN: usize = 64;

/// Dynamic loss scaling's position: the scale, the clean updates since it last changed, and
/// the updates skipped for non-finite gradients.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossScaleState {
    /// The current loss scale `S`.
    pub scale: f32,
    /// Consecutive updates applied since the scale last changed.
    pub clean: u64,
    /// Updates skipped so far because a gradient was not finite.
    pub skipped: u64,
}

/// Where one parameter lives in the flat buffers.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamEntry {
    /// Its name.
    pub name: String,
    /// Its shape.
    pub shape: Shape,
    /// First element in the flat buffers.
    pub offset: usize,
}

/// Parameters, gradients and optimiser state of a model, resident on one backend, with the
/// count of updates applied: everything a checkpoint needs to resume a run exactly.
pub struct ParamStore<B: Backend> {
    pub(crate) backend: B,
    entries: Vec<ParamEntry>,
    by_name: HashMap<String, usize>,
    total: usize,
    pub(crate) params: B::Buffer,
    pub(crate) grads: B::Buffer,
    pub(crate) state: Vec<B::Buffer>,
    /// Updates applied so far, shared with every program compiled against the store.
    pub(crate) updates: Arc<AtomicU64>,
    /// Dynamic loss scaling, once a mixed-precision program has started it.
    pub(crate) scaling: Arc<Mutex<Option<LossScaleState>>>,
}

impl<B: Backend> ParamStore<B> {
    /// Allocate and initialise every parameter of `graph` on `backend`. Initial values are a
    /// function of `seed` and each parameter's name only.
    pub fn new(backend: &B, graph: &Graph, seed: u64) -> Result<Self> {
        let mut entries = Vec::new();
        let mut by_name = HashMap::new();
        let mut total = 0;
        for p in graph.params() {
            by_name.insert(p.name.clone(), entries.len());
            entries.push(ParamEntry {
                name: p.name.clone(),
                shape: p.shape.clone(),
                offset: total,
            });
            total += p.shape.numel().div_ceil(ALIGN) * ALIGN;
        }
        let total = total.max(ALIGN);
        let params = backend.alloc(DType::F32.bytes(total), "params")?;
        let grads = backend.alloc(DType::F32.bytes(total), "grads")?;
        let mut host = vec![0f32; total];
        for (p, e) in graph.params().iter().zip(&entries) {
            let v = p.init.values(seed, &p.name, &p.shape);
            host[e.offset..e.offset + v.len()].copy_from_slice(&v);
        }
        backend.write(&params, 0, bytemuck::cast_slice(&host))?;
        Ok(ParamStore {
            backend: backend.clone(),
            entries,
            by_name,
            total,
            params,
            grads,
            state: Vec::new(),
            updates: Arc::default(),
            scaling: Arc::default(),
        })
    }

    /// The backend the store lives on.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Every parameter's placement, in creation order.
    pub fn entries(&self) -> &[ParamEntry] {
        &self.entries
    }

    /// The placement of parameter `name`.
    pub fn entry(&self, name: &str) -> Result<&ParamEntry> {
        self.by_name
            .get(name)
            .map(|&i| &self.entries[i])
            .ok_or_else(|| Error::UnknownNode(format!("the ParamStore has no parameter `{name}`")))
    }

    /// Elements in each flat buffer (parameters plus alignment padding).
    pub fn len(&self) -> usize {
        self.total
    }

    /// Whether the store holds no parameters.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Device bytes held: parameters, gradients and optimiser state.
    pub fn bytes(&self) -> usize {
        DType::F32.bytes(self.total) * (2 + self.state.len())
    }

    /// Copy a parameter to the host.
    pub fn get(&self, name: &str) -> Result<Tensor> {
        let e = self.entry(name)?;
        let data = self.read_f32(&self.params, e.offset, e.shape.numel())?;
        Tensor::new(e.shape.clone(), data)
    }

    /// Overwrite a parameter from the host.
    pub fn set(&self, name: &str, data: &[f32]) -> Result<()> {
        let e = self.entry(name)?;
        if data.len() != e.shape.numel() {
            return Err(Error::Shape {
                op: "ParamStore::set",
                node: format!("`{name}`"),
                shapes: vec![e.shape.0.clone()],
                reason: format!("{} values given", data.len()),
            });
        }
        self.write_f32(&self.params, e.offset, data)
    }

    /// Copy a parameter's gradient (as last computed by a training program) to the host.
    pub fn gradient(&self, name: &str) -> Result<Tensor> {
        let e = self.entry(name)?;
        let data = self.read_f32(&self.grads, e.offset, e.shape.numel())?;
        Tensor::new(e.shape.clone(), data)
    }

    /// Optimiser updates applied so far (the position of the learning-rate schedule, and the
    /// `t` of Adam's bias correction).
    pub fn updates(&self) -> u64 {
        self.updates.load(Ordering::Relaxed)
    }

    /// Set the update counter, e.g. when restoring a checkpoint.
    pub fn set_updates(&self, t: u64) {
        self.updates.store(t, Ordering::Relaxed);
    }

    /// Dynamic loss scaling's state, if a mixed-precision program has used this store.
    pub fn loss_scale_state(&self) -> Option<LossScaleState> {
        self.scaling.lock().ok().and_then(|s| *s)
    }

    /// Restore dynamic loss scaling's state (from a checkpoint).
    pub fn set_loss_scale_state(&self, state: LossScaleState) -> Result<()> {
        if !(state.scale.is_finite() && state.scale > 0.0) {
            return crate::error::invalid(
                "set_loss_scale_state",
                format!("scale {} must be positive", state.scale),
            );
        }
        *self
            .scaling
            .lock()
            .map_err(|_| Error::Backend("loss scale lock poisoned".into()))? = Some(state);
        Ok(())
    }

    /// Optimiser state buffers held (0 until a training program needs them: 1 for momentum,
    /// AdaGrad and RMSProp, 2 for Adam).
    pub fn state_slots(&self) -> usize {
        self.state.len()
    }

    /// The whole flat state buffer `slot` (same layout as the parameters: see [`Self::entries`]).
    pub fn read_state(&self, slot: usize) -> Result<Vec<f32>> {
        let b = self.state_buf(slot)?;
        self.read_f32(b, 0, self.total)
    }

    /// One parameter's part of state buffer `slot` (e.g. Adam's first moment for slot 0).
    pub fn state_of(&self, slot: usize, name: &str) -> Result<Tensor> {
        let e = self.entry(name)?;
        let data = self.read_f32(self.state_buf(slot)?, e.offset, e.shape.numel())?;
        Tensor::new(e.shape.clone(), data)
    }

    /// Overwrite the flat state buffer `slot`, creating the state buffers up to it if needed
    /// (restoring a checkpoint before any program is compiled).
    pub fn write_state(&mut self, slot: usize, data: &[f32]) -> Result<()> {
        if data.len() != self.total {
            return Err(Error::Shape {
                op: "ParamStore::write_state",
                node: format!("state {slot}"),
                shapes: vec![vec![self.total]],
                reason: format!("{} values given", data.len()),
            });
        }
        self.ensure_state(slot + 1)?;
        self.write_f32(&self.state[slot], 0, data)
    }

    fn state_buf(&self, slot: usize) -> Result<&B::Buffer> {
        self.state.get(slot).ok_or_else(|| Error::Invalid {
            op: "ParamStore",
            reason: format!("state slot {slot} does not exist ({} held)", self.state.len()),
        })
    }

    fn read_f32(&self, buf: &B::Buffer, first: usize, len: usize) -> Result<Vec<f32>> {
        let bytes = self.backend.read(buf, DType::F32.bytes(first), DType::F32.bytes(len))?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    fn write_f32(&self, buf: &B::Buffer, first: usize, data: &[f32]) -> Result<()> {
        self.backend
            .write(buf, DType::F32.bytes(first), bytemuck::cast_slice(data))
    }

    /// Make sure `slots` optimiser state buffers exist (zeroed when created).
    pub(crate) fn ensure_state(&mut self, slots: usize) -> Result<()> {
        while self.state.len() < slots {
            let b = self.backend.alloc(DType::F32.bytes(self.total), "optimizer state")?;
            self.state.push(b);
        }
        Ok(())
    }

    /// Zero the optimiser state (e.g. before fine-tuning with a fresh optimiser).
    pub fn reset_state(&self) -> Result<()> {
        let zeros = vec![0f32; self.total];
        for s in &self.state {
            self.write_f32(s, 0, &zeros)?;
        }
        Ok(())
    }
}
