//! The seam between the executor and the devices that run kernels.
//!
//! The executor lowers a graph to a flat list of [`Kernel`]s over [`View`]s (a buffer of the
//! program's buffer table, a byte offset, a length and an element type), and hands it to a
//! [`Backend`] once,
//! at compile time. A step is then: write the fed inputs, `execute` the prepared program with
//! this step's [`StepUniforms`], read back the fetched views. The CPU reference backend
//! interprets the list; a GPU backend records pipelines and bind groups for it in `prepare` and
//! replays them in one submission per step.

pub mod cpu;
pub mod wgpu;

use crate::error::Result;
use crate::graph::{NodeId, Op};
use crate::optim::OptimizerKind;
use crate::shape::{DType, Shape};

pub use self::wgpu::Gpu;
pub use cpu::Cpu;

/// A window of `len` elements of type `dtype` starting at byte `offset` in buffer `buf` of the
/// program's table. Offsets are multiples of 4 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct View {
    /// Index into the program's buffer table.
    pub buf: usize,
    /// First byte.
    pub offset: usize,
    /// Number of elements.
    pub len: usize,
    /// Element type.
    pub dtype: DType,
}

impl View {
    /// Bytes the elements take.
    pub fn bytes(&self) -> usize {
        self.dtype.bytes(self.len)
    }

    /// Index of the first element, counting in elements of `dtype`.
    pub fn first(&self) -> usize {
        self.offset / self.dtype.size()
    }
}

/// One parameter's range in the flat (f32) parameter, gradient and state buffers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Segment {
    /// First element (f32).
    pub offset: usize,
    /// Number of elements.
    pub len: usize,
    /// Whether weight decay applies.
    pub decay: bool,
}

/// The fused optimiser update: one kernel updates every trainable parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct UpdateKernel {
    /// The update rule and its constant hyperparameters.
    pub rule: OptimizerKind,
    /// L2 weight decay (added to the gradient; decoupled for AdamW).
    pub weight_decay: f32,
    /// Clamp every gradient element to `±c` first.
    pub clip_value: Option<f32>,
    /// Scale gradients by `min(1, max_norm / (‖g‖ + 1e-6))`, with `‖g‖` from `stats`.
    pub max_norm: Option<f32>,
    /// Two elements written by [`Kernel::GradStats`] earlier in the step: `Σ g²` over the raw
    /// gradients, and how many checked values are not finite. When that count is not zero the
    /// update leaves every parameter and state element as it was.
    pub stats: View,
    /// Flat parameter buffer.
    pub params: usize,
    /// Flat gradient buffer (same layout).
    pub grads: usize,
    /// Optimiser state buffers (same layout), as many as the rule needs.
    pub state: Vec<usize>,
    /// The parameters to update.
    pub segments: Vec<Segment>,
}

/// One unit of work of a prepared program.
#[derive(Clone, Debug, PartialEq)]
pub enum Kernel {
    /// A graph op: `out = op(inputs)`.
    Op {
        /// The op.
        op: Op,
        /// Operand views, in the op's operand order.
        inputs: Vec<View>,
        /// Operand shapes.
        in_shapes: Vec<Shape>,
        /// Output view.
        out: View,
        /// Output shape.
        out_shape: Shape,
        /// The node, for messages.
        node: NodeId,
    },
    /// `dst = src` (same length).
    Copy {
        /// Source.
        src: View,
        /// Destination.
        dst: View,
    },
    /// `out[0] = Σ_views Σ_i v[i]²` over `src`, summed in a fixed order, and `out[1]` = the
    /// number of elements of `src` and `check` that are NaN or infinite.
    GradStats {
        /// The gradients.
        src: Vec<View>,
        /// Other values that must be finite for the update to apply (the loss).
        check: Vec<View>,
        /// Two elements.
        out: View,
    },
    /// `dst = src` unless `stats[1]` (the non-finite count of [`Kernel::GradStats`]) is not zero:
    /// how state updates such as batch norm's running statistics follow the optimiser's skip.
    CopyIfFinite {
        /// Source.
        src: View,
        /// Destination.
        dst: View,
        /// The gradient statistics (two elements).
        stats: View,
    },
    /// `dst += src` (same length): accumulates one micro-batch's gradients.
    AddInto {
        /// Added.
        src: View,
        /// Accumulated into.
        dst: View,
    },
    /// `dst = value` everywhere.
    Fill {
        /// Filled.
        dst: View,
        /// The value.
        value: f32,
    },
    /// The optimiser step.
    Update(UpdateKernel),
    /// A chain of element-wise ops computed in one pass (see [`Fused`]).
    Fused(Fused),
}

/// Element-wise graph ops fused into one kernel by the executor's fusion pass: at every index
/// `e` of `shape`, each op of `body` computes one value from earlier values, and the values
/// listed in `outputs` are stored at `e` (contiguously). Values `0..inputs.len()` are the
/// external operands, read at `e` through their strides; value `inputs.len() + j` is op `j`'s
/// result. An op whose own shape is smaller than `shape` (it broadcasts to it) is evaluated at
/// the projection of `e`, so its value is simply recomputed where it is needed. Everything is
/// f32, so each op rounds exactly as it does on its own: a fused program computes the same bits
/// as the unfused one on the CPU.
#[derive(Clone, Debug, PartialEq)]
pub struct Fused {
    /// The index space: the shape of the largest member.
    pub shape: Shape,
    /// External operands, each with its element strides over `shape` (0 on broadcast axes).
    pub inputs: Vec<(View, Vec<usize>)>,
    /// The ops, in order: an element-wise [`Op`] (unary, unary gradient, binary, where,
    /// broadcast) and the values it reads, in the op's operand order.
    pub body: Vec<(Op, Vec<usize>)>,
    /// `(value, view)`: the values stored, each over all of `shape`.
    pub outputs: Vec<(usize, View)>,
    /// The member nodes, for messages.
    pub nodes: Vec<NodeId>,
}

impl Fused {
    /// Elements of the index space.
    pub fn len(&self) -> usize {
        self.shape.numel()
    }

    /// Whether the index space is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Values that change from step to step without recompiling.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepUniforms {
    /// The learning rate for this step.
    pub lr: f32,
    /// 1-based count of optimiser updates including this one (Adam's bias correction).
    pub t: u64,
    /// 1-based position of this micro-batch in the run (`updates · k + i` for the `i`-th of `k`
    /// accumulated micro-batches): keys on-device randomness, so every micro-batch draws fresh
    /// dropout masks while a rerun or a resumed run draws the same ones.
    pub step: u64,
    /// Seed for on-device randomness (dropout), combined with the step and node.
    pub seed: u64,
    /// The update multiplies every gradient by this first: `1/k` to average `k` accumulated
    /// micro-batches (and, with loss scaling, to undo the scale).
    pub grad_scale: f32,
}

/// How much memory a backend can give a program: checked by the memory plan before anything
/// is allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryLimits {
    /// The largest single buffer, bytes.
    pub max_buffer: usize,
    /// All buffers together, bytes, when the backend knows it.
    pub total: Option<usize>,
}

/// What a device says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// `cpu` or `wgpu`.
    pub backend: String,
    /// The adapter or processor name.
    pub adapter: String,
}

/// A device that runs Kiln kernels. See the module documentation.
pub trait Backend: Clone {
    /// A device buffer of bytes; cloning shares the buffer.
    type Buffer: Clone;
    /// A kernel list prepared for repeated execution.
    type Program;

    /// Describe the device.
    fn info(&self) -> DeviceInfo;
    /// The memory limits programs are planned against.
    fn memory_limits(&self) -> MemoryLimits;
    /// A zeroed buffer of at least `bytes` bytes (rounded up to a multiple of 4).
    fn alloc(&self, bytes: usize, label: &str) -> Result<Self::Buffer>;
    /// Write `data` at byte `offset` (a multiple of 4); visible to the next `execute`.
    fn write(&self, buf: &Self::Buffer, offset: usize, data: &[u8]) -> Result<()>;
    /// Read `bytes` bytes at byte `offset` (a multiple of 4).
    fn read(&self, buf: &Self::Buffer, offset: usize, bytes: usize) -> Result<Vec<u8>>;
    /// Prepare `kernels`, whose views index into `buffers`, for repeated execution.
    fn prepare(&self, buffers: Vec<Self::Buffer>, kernels: Vec<Kernel>) -> Result<Self::Program>;
    /// Run every kernel once, in order, then return the bytes of each `fetch` view.
    fn execute(&self, program: &mut Self::Program, uniforms: &StepUniforms, fetch: &[View]) -> Result<Vec<Vec<u8>>>;
}

/// Whether two views share a byte.
pub(crate) fn overlap(a: &View, b: &View) -> bool {
    a.buf == b.buf && a.offset < b.offset + b.bytes() && b.offset < a.offset + a.bytes()
}

/// Whether nothing reads what `v` holds once kernel `last` has run: walking the kernels after it
/// (and round to the start of the next run), every byte of `v` is overwritten before a kernel
/// reads it. An update, which touches its whole buffers, counts as a read of them; so does
/// reaching `last` again.
pub(crate) fn dead_after(kernels: &[Kernel], last: usize, v: &View) -> bool {
    // The byte ranges of `v` not yet overwritten.
    let mut live = vec![(v.offset, v.offset + v.bytes())];
    let touches = |x: &View, live: &[(usize, usize)]| {
        x.buf == v.buf && live.iter().any(|&(a, b)| x.offset < b && a < x.offset + x.bytes())
    };
    for j in (last + 1..kernels.len()).chain(0..=last) {
        if j == last {
            return false;
        }
        if let Kernel::Update(u) = &kernels[j] {
            if v.buf == u.params || v.buf == u.grads || u.state.contains(&v.buf) {
                return false;
            }
        }
        let (ins, outs) = kernel_views(&kernels[j]);
        if ins.iter().any(|x| touches(x, &live)) {
            return false;
        }
        for o in outs.iter().filter(|o| o.buf == v.buf) {
            let (lo, hi) = (o.offset, o.offset + o.bytes());
            live = live
                .into_iter()
                .flat_map(|(a, b)| [(a, b.min(lo)), (a.max(hi), b)])
                .filter(|&(a, b)| a < b)
                .collect();
        }
        if live.is_empty() {
            return true;
        }
    }
    false
}

/// The views a kernel reads, and the ones it writes.
pub(crate) fn kernel_views(k: &Kernel) -> (Vec<View>, Vec<View>) {
    match k {
        Kernel::Op { inputs, out, .. } => (inputs.clone(), vec![*out]),
        Kernel::Copy { src, dst } => (vec![*src], vec![*dst]),
        Kernel::GradStats { src, check, out } => (src.iter().chain(check).copied().collect(), vec![*out]),
        Kernel::AddInto { src, dst } => (vec![*src, *dst], vec![*dst]),
        Kernel::CopyIfFinite { src, dst, stats } => (vec![*src, *stats], vec![*dst]),
        Kernel::Fill { dst, .. } => (vec![], vec![*dst]),
        Kernel::Update(u) => (vec![u.stats], vec![]),
        Kernel::Fused(f) => (
            f.inputs.iter().map(|(v, _)| *v).collect(),
            f.outputs.iter().map(|(_, v)| *v).collect(),
        ),
    }
}
