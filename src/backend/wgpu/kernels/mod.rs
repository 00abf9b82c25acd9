//! The typed Rust↔WGSL contract, one module per kernel family: `kernels/<family>.rs` holds the
//! `#[repr(C)]` parameter structs that `shaders/<family>.wgsl` declares under the same names and
//! field names, the lowering that fills them, and (where a kernel selects an op) the one
//! exhaustive `match` from which the WGSL of every op is generated. A dispatch's parameter block
//! is the struct's bytes (followed, for variable-length tables, by a runtime-sized array), bound
//! read-only at binding 0; the per-step values are [`Step`], bound at binding 1.
//!
//! Nothing here names a wgpu type, so the contract can be read and tested on its own.

pub mod augment;
pub mod conv;
pub mod elementwise;
pub mod fused;
pub mod matmul;
pub mod optim;
pub mod reduce;
pub mod rnn;
pub mod softmax;

use crate::backend::StepUniforms;
use crate::optim::OptimizerKind;
use crate::shape::DType;
use bytemuck::{Pod, Zeroable};

/// Highest tensor rank the strided kernels take.
pub const MAX_RANK: usize = 6;

/// The WGSL source families, one per file in `shaders/` and module here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// elementwise.wgsl
    Elementwise,
    /// reduce.wgsl
    Reduce,
    /// matmul.wgsl
    Matmul,
    /// softmax.wgsl
    Softmax,
    /// conv.wgsl
    Conv,
    /// optim.wgsl
    Optim,
    /// rnn.wgsl
    Rnn,
    /// augment.wgsl
    Augment,
    /// Generated per fused run of element-wise ops ([`fused`]); not in [`Family::ALL`], since
    /// it has no source of its own.
    Fused,
}

impl Family {
    /// Every family, for shader validation.
    pub const ALL: [Family; 8] = [
        Family::Elementwise,
        Family::Reduce,
        Family::Matmul,
        Family::Softmax,
        Family::Conv,
        Family::Optim,
        Family::Rnn,
        Family::Augment,
    ];

    /// The WGSL compiled for f32 (and u32) tensors: [`Family::source_with`] all words.
    pub fn source(self) -> String {
        self.source_with(Storage::default())
    }

    /// The WGSL that is compiled for tensors stored as `st`: the common prelude followed by the
    /// family's file, with the generated parts filled in (the tensor bindings and their
    /// accessors, op cases, update rules).
    pub fn source_with(self, st: Storage) -> String {
        let body = match self {
            Family::Elementwise => elementwise::source(),
            Family::Reduce => include_str!("../../../../shaders/reduce.wgsl").to_string(),
            Family::Matmul => matmul::source(),
            Family::Softmax => include_str!("../../../../shaders/softmax.wgsl").to_string(),
            Family::Conv => include_str!("../../../../shaders/conv.wgsl").to_string(),
            Family::Rnn => include_str!("../../../../shaders/rnn.wgsl").to_string(),
            Family::Augment => include_str!("../../../../shaders/augment.wgsl").to_string(),
            // Each fused dispatch carries its own generated source (`Dispatch::source`).
            Family::Fused => return String::new(),
            Family::Optim => {
                return format!(
                    "{}\n{}",
                    include_str!("../../../../shaders/common.wgsl"),
                    optim::source()
                )
            }
        };
        let body = fill(&body, "STORAGE", &storage_wgsl(self, st));
        let enable = if st.0.contains(&Store::F16) {
            "enable f16;\n"
        } else {
            ""
        };
        format!("{enable}{}\n{body}", include_str!("../../../../shaders/common.wgsl"))
    }
}

/// How one tensor binding is declared and read or written in WGSL. Kernels read through
/// `ld_a(i) -> f32` (and `ld_b`, `ld_c`, `ld_out`) and write through `st_out(i, v: f32)`, so one
/// kernel text computes in f32 whatever the tensors are stored as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Store {
    /// 4-byte words: f32 tensors, and u32 tensors (which kernels read through `bitcast`).
    #[default]
    Word,
    /// f16 through WGSL's `f16` extension (adapters with `SHADER_F16`).
    F16,
    /// f16 packed two to a u32, for adapters without `SHADER_F16`: reads unpack with
    /// `unpack2x16float`; writes replace their half of the word with an atomic and/or, so the
    /// two invocations that own a word's halves never overwrite each other.
    F16Packed,
}

/// The storage of the tensor bindings a, b, c and out (matmul's vec4 views follow a and b).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Storage(pub [Store; 4]);

/// The declarations and accessors of the tensor bindings for `st`.
fn storage_wgsl(family: Family, st: Storage) -> String {
    let mut s = String::new();
    for (k, (name, binding)) in [("a", 2), ("b", 3), ("c", 4)].into_iter().enumerate() {
        let (ty, load) = match st.0[k] {
            Store::Word => ("f32", format!("{name}[i]")),
            Store::F16 => ("f16", format!("f32({name}[i])")),
            Store::F16Packed => ("u32", format!("unpack2x16float({name}[i >> 1u])[i & 1u]")),
        };
        s += &format!(
            "@group(0) @binding({binding}) var<storage, read> {name}: array<{ty}>;\n\
             fn ld_{name}(i: u32) -> f32 {{ return {load}; }}\n"
        );
    }
    s += match st.0[3] {
        Store::Word => {
            "@group(0) @binding(5) var<storage, read_write> out: array<f32>;
fn ld_out(i: u32) -> f32 { return out[i]; }
fn st_out(i: u32, v: f32) { out[i] = v; }
"
        }
        Store::F16 => {
            "@group(0) @binding(5) var<storage, read_write> out: array<f16>;
fn ld_out(i: u32) -> f32 { return f32(out[i]); }
fn st_out(i: u32, v: f32) { out[i] = f16(unpack2x16float(f16_bits(v)).x); }
"
        }
        Store::F16Packed => {
            "@group(0) @binding(5) var<storage, read_write> out: array<atomic<u32>>;
fn ld_out(i: u32) -> f32 { return unpack2x16float(atomicLoad(&out[i >> 1u]))[i & 1u]; }
fn st_out(i: u32, v: f32) {
    let sh = (i & 1u) * 16u;
    atomicAnd(&out[i >> 1u], ~(0xffffu << sh));
    atomicOr(&out[i >> 1u], f16_bits(v) << sh);
}
"
        }
    };
    if st.0[3] != Store::Word {
        // Rounding to f16 made explicit where WGSL leaves it to the implementation: values
        // that round beyond the largest f16 become ±∞ and NaN stays NaN (so an overflowing
        // scaled gradient is seen as one), from the bits, which no fast-math assumption touches.
        s += "fn f16_bits(v: f32) -> u32 {
    let x = bitcast<u32>(v);
    let sign = (x >> 16u) & 0x8000u;
    let mag = x & 0x7fffffffu;
    if (mag > 0x7f800000u) { return sign | 0x7e00u; }
    if (mag >= 0x477ff000u) { return sign | 0x7c00u; }
    return pack2x16float(vec2<f32>(v, 0.0)) & 0xffffu;
}
";
    }
    if family == Family::Conv {
        // pool_argmax's second output, bound only where it is merged with its gather.
        s += "fn st_value(e: u32, i: u32) {}\n";
    }
    if family == Family::Matmul {
        for (k, (name, binding)) in [("a4", 6), ("b4", 7)].into_iter().enumerate() {
            let (ty, load) = match st.0[k] {
                Store::Word => ("vec4<f32>", format!("{name}[i]")),
                Store::F16 => ("vec4<f16>", format!("vec4<f32>({name}[i])")),
                Store::F16Packed => (
                    "vec2<u32>",
                    format!("vec4<f32>(unpack2x16float({name}[i].x), unpack2x16float({name}[i].y))"),
                ),
            };
            s += &format!(
                "@group(0) @binding({binding}) var<storage, read> {name}: array<{ty}>;\n\
                 fn ld_{name}(i: u32) -> vec4<f32> {{ return {load}; }}\n"
            );
        }
    }
    s
}

/// common.wgsl for a kernel generated with its own bindings (`layout: None`): without the
/// per-step binding, which such kernels do not read and whose number they use.
pub(crate) fn generated_prelude() -> Result<String, String> {
    let common = include_str!("../../../../shaders/common.wgsl");
    let per_step = "@group(0) @binding(1) var<storage, read> per_step: Step;";
    if common.matches(per_step).count() != 1 {
        return Err("common.wgsl's per-step binding changed; update kernels::generated_prelude".into());
    }
    Ok(common.replace(per_step, ""))
}

/// How many workgroups to launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grid {
    /// One invocation per element, 256 per workgroup.
    Elements(usize),
    /// One workgroup per item.
    Groups(usize),
    /// Exactly these workgroup counts.
    Fixed([u32; 3]),
}

/// One dispatch: which WGSL family and entry point, its parameter block, which buffers sit in
/// which binding, and the grid. `inputs` fill bindings 2, 3, 4 (standard layout) or grads, norm
/// (update layout); `outputs` fill binding 5 (standard) or params, state0, state1.
#[derive(Clone, Debug, PartialEq)]
pub struct Dispatch {
    /// Source family.
    pub family: Family,
    /// Entry point.
    pub entry: &'static str,
    /// The parameter block: a family's `#[repr(C)]` struct as bytes, then any table.
    pub params: Vec<u8>,
    /// Buffer-table indices read.
    pub inputs: Vec<usize>,
    /// Buffer-table indices written.
    pub outputs: Vec<usize>,
    /// Launch size.
    pub grid: Grid,
    /// Element types of the tensors in bindings a, b, c and out (f32 unless set by the
    /// lowering), which choose how the kernel reads and writes them.
    pub dtypes: [DType; 4],
    /// A generated source of its own (fused kernels), bound as that source declares: the
    /// parameters at 0, then `inputs` (read-only), then `outputs`.
    pub source: Option<std::sync::Arc<str>>,
    /// Values of the entry point's pipeline-overridable constants (tile sizes), by name; empty:
    /// the WGSL defaults. Part of the pipeline cache's key.
    pub constants: Vec<(&'static str, u32)>,
    /// What the dispatch computes and moves, for `KILN_PROFILE`'s roofline.
    pub cost: Cost,
}

/// An honest estimate of one dispatch's work, set by each family's lowering: floating-point
/// operations (a multiply-add is two; a transcendental, a comparison or a select is one), and
/// the elements read through bindings a, b, c and written through out. The bytes are those
/// elements at their bindings' element types ([`Dispatch::bytes`]): the compulsory traffic
/// (every tensor element touched once), so a kernel that rereads through caches moves more and
/// the GB/s the profile prints is a lower bound on what the memory system delivered.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cost {
    /// Floating-point operations.
    pub flops: f64,
    /// Elements read through bindings a, b and c (the update layout counts every read here).
    pub reads: [f64; 3],
    /// Elements written through out (the update layout: every write).
    pub writes: f64,
}

impl Cost {
    /// `flops` operations reading `reads` elements of a, b, c and writing `writes`.
    pub fn new(flops: usize, reads: &[usize], writes: usize) -> Cost {
        let mut r = [0.0; 3];
        for (slot, &x) in r.iter_mut().zip(reads) {
            *slot = x as f64;
        }
        Cost {
            flops: flops as f64,
            reads: r,
            writes: writes as f64,
        }
    }
}

impl Dispatch {
    /// A dispatch whose parameter block is `params`.
    pub fn new<P: Pod>(
        family: Family,
        entry: &'static str,
        params: &P,
        inputs: Vec<usize>,
        outputs: Vec<usize>,
        grid: Grid,
    ) -> Dispatch {
        Dispatch {
            family,
            entry,
            params: bytemuck::bytes_of(params).to_vec(),
            inputs,
            outputs,
            grid,
            dtypes: [DType::F32; 4],
            source: None,
            constants: Vec::new(),
            cost: Cost::default(),
        }
    }

    /// The same dispatch with its [`Cost`] estimate.
    pub fn with_cost(mut self, cost: Cost) -> Dispatch {
        self.cost = cost;
        self
    }

    /// Bytes moved by the cost estimate, at the bindings' element types.
    pub fn bytes(&self) -> f64 {
        let c = &self.cost;
        let size = |d: DType| d.size() as f64;
        c.reads.iter().zip(&self.dtypes).map(|(r, &d)| r * size(d)).sum::<f64>() + c.writes * size(self.dtypes[3])
    }

    /// Append a runtime-sized table after the fixed header. WGSL sizes a runtime array's
    /// binding for at least one element, so an empty table is written as one zeroed element.
    pub fn with_table<T: Pod>(mut self, table: &[T]) -> Dispatch {
        if table.is_empty() {
            self.params.extend(bytemuck::bytes_of(&T::zeroed()));
        }
        self.params.extend(bytemuck::cast_slice(table));
        self
    }
}

/// Values that change from step to step, bound at binding 1 as `per_step` (see common.wgsl).
/// The optimiser coefficients are derived in f64 on the host exactly as for the CPU backend.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct Step {
    /// Learning rate η.
    pub lr: f32,
    /// 1-based update count (low 32 bits).
    pub t: u32,
    /// The micro-batch's position in the run (low 32 bits): keys dropout.
    pub step: u32,
    /// Seed for on-device randomness (low 32 bits).
    pub seed: u32,
    /// β₁ (or μ, or ρ).
    pub b1: f32,
    /// `1 − β₁`.
    pub one_minus_b1: f32,
    /// β₂.
    pub b2: f32,
    /// `1 − β₂`.
    pub one_minus_b2: f32,
    /// ε.
    pub eps: f32,
    /// `1 / (1 − β₁ᵗ)`.
    pub inv_bias1: f32,
    /// `1 / (1 − β₂ᵗ)`.
    pub inv_bias2: f32,
    /// Multiplies every gradient in the update: `1/(k·S)` for `k` accumulated micro-batches
    /// and loss scale `S`.
    pub grad_scale: f32,
}

impl Step {
    /// This step's values for a program whose update rule (if any) is `rule`.
    pub fn new(u: &StepUniforms, rule: Option<OptimizerKind>) -> Step {
        let c = rule.map(|r| r.coefficients(u.lr, u.t)).unwrap_or_default();
        Step {
            lr: u.lr,
            t: u.t as u32,
            step: u.step as u32,
            seed: u.seed as u32,
            b1: c.b1,
            one_minus_b1: c.one_minus_b1,
            b2: c.b2,
            one_minus_b2: c.one_minus_b2,
            eps: c.eps,
            inv_bias1: c.inv_bias1,
            inv_bias2: c.inv_bias2,
            grad_scale: u.grad_scale,
        }
    }
}

/// One parameter struct as its WGSL mirror must lay it out: the struct's name (the same on both
/// sides), size and fields (name, byte offset, byte size), and for a header followed by a
/// runtime-sized table, the table's member name and element struct. `tests/shaders.rs` checks
/// every mirror against the struct naga parses from the generated WGSL.
#[derive(Clone, Debug, PartialEq)]
pub struct Mirror {
    /// The family whose source declares the WGSL struct.
    pub family: Family,
    /// The struct's name.
    pub name: &'static str,
    /// `size_of` the Rust struct.
    pub size: usize,
    /// (name, offset, size, WGSL type) of each field, in declaration order.
    pub fields: Vec<(&'static str, usize, usize, &'static str)>,
    /// The runtime-sized array after the header: (member name, element struct name).
    pub table: Option<(&'static str, &'static str)>,
}

/// A Rust field type and the WGSL type that mirrors it.
pub trait WgslType {
    /// The WGSL spelling.
    const WGSL: &'static str;
}

impl WgslType for u32 {
    const WGSL: &'static str = "u32";
}

impl WgslType for f32 {
    const WGSL: &'static str = "f32";
}

impl WgslType for [u32; MAX_RANK] {
    const WGSL: &'static str = "array<u32, 6>";
}

fn wgsl_type<T: WgslType>(_: &T) -> &'static str {
    T::WGSL
}

/// `mirror!(Family, Type { field, ... })`: a [`Mirror`] of `Type` listing those fields.
macro_rules! mirror {
    ($family:expr, $t:ident { $($f:ident),* $(,)? } $(, table: $m:literal of $e:ident)?) => {{
        let z = <$t as Zeroable>::zeroed();
        #[allow(unused_mut, unused_assignments)]
        let mut table = None;
        $(table = Some(($m, stringify!($e)));)?
        Mirror {
            family: $family,
            name: stringify!($t),
            size: std::mem::size_of::<$t>(),
            fields: vec![$((
                stringify!($f),
                std::mem::offset_of!($t, $f),
                std::mem::size_of_val(&z.$f),
                wgsl_type(&z.$f),
            )),*],
            table,
        }
    }};
}

/// Every parameter struct of the contract, for the layout check.
#[rustfmt::skip] // one struct per line reads as the table it is
pub fn mirrors() -> Vec<Mirror> {
    use augment::Augment;
    use conv::Conv;
    use elementwise::{AddInto, Bernoulli, Convert, CopyIfFinite, Dropout, Fill, OneHot, Strided, Unary};
    use matmul::Matmul;
    use optim::{Segment, Update};
    use reduce::{GradStats, Norm, Reduce, Span};
    use rnn::Rnn;
    use softmax::Softmax;
    let (ew, re, mm, sm, cv, op, rn) =
        (Family::Elementwise, Family::Reduce, Family::Matmul, Family::Softmax, Family::Conv, Family::Optim, Family::Rnn);
    vec![
        mirror!(ew, Step { lr, t, step, seed, b1, one_minus_b1, b2, one_minus_b2, eps, inv_bias1, inv_bias2, grad_scale }),
        mirror!(ew, Unary { n, op, a_off, b_off, out_off, p0, p1 }),
        mirror!(ew, Strided { n, rank, op, a_off, b_off, c_off, out_off, dims, sa, sb, sc, sout }),
        mirror!(ew, Fill { n, out_off, value }),
        mirror!(ew, OneHot { n, classes, a_off, out_off }),
        mirror!(ew, Dropout { n, out_off, p, key }),
        mirror!(ew, Bernoulli { n, a_off, out_off, key }),
        mirror!(ew, Convert { n, mode, a_off, out_off }),
        mirror!(ew, AddInto { n, a_off, out_off }),
        mirror!(ew, CopyIfFinite { n, a_off, out_off, stats_off }),
        mirror!(re, Reduce { n, r, a_off, out_off, is_max, mean, nk, nr, kdims, kstr, rdims, rstr }),
        mirror!(re, GradStats { nseg, out_off, nsum, accumulate }, table: "views" of Span),
        mirror!(re, Span { off, len }),
        mirror!(re, Norm { n, c, s, eps, a_off, b_off, c_off, out_off }),
        mirror!(mm, Matmul { m, n, k, a_off, b_off, c_off, rsa, csa, rsb, csb, a_batch, b_batch, batch, vec_a, vec_b }),
        mirror!(sm, Softmax { rows, classes, a_off, b_off, c_off, out_off, smoothing }),
        mirror!(cv, Conv { invocations, n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, a_off, out_off, b_off }),
        mirror!(Family::Augment, Augment { invocations, c, h, w, a_off, out_off, shift, flip, key, rotate, brightness, contrast, noise, fill, center }),
        mirror!(op, Update { nseg, clip_on, clip, norm_on, max_norm, weight_decay, stats_off, n }, table: "segments" of Segment),
        mirror!(op, Segment { offset, len, decay }),
        mirror!(rn, Rnn { invocations, n, h, v, a_off, b_off, c_off, out_off }),
    ]
}

/// An element count or offset as the u32 the kernels index with.
pub(crate) fn u(x: usize) -> u32 {
    x as u32
}

/// Dims or strides of rank ≤ [`MAX_RANK`], padded with `fill`.
pub(crate) fn padded(v: &[usize], fill: u32) -> [u32; MAX_RANK] {
    let mut out = [fill; MAX_RANK];
    for (o, &x) in out.iter_mut().zip(v) {
        *o = x as u32;
    }
    out
}

/// Replace the one `{{key}}` placeholder of a WGSL template. A missing placeholder is a broken
/// invariant between a shader file and its generator.
pub(crate) fn fill(template: &str, key: &str, text: &str) -> String {
    let mark = format!("{{{{{key}}}}}");
    assert!(
        template.matches(&mark).count() == 1,
        "shader template must hold `{mark}` exactly once"
    );
    template.replace(&mark, text)
}

/// The variant name of an op's `Debug` text (`LeakyRelu(0.0)` → `LeakyRelu`), for comments
/// in generated WGSL.
pub(crate) fn variant_name(debug: String) -> String {
    debug.split(['(', ' ', '{']).next().unwrap_or_default().to_string()
}

pub(crate) use crate::shape::coalesce;

#[cfg(test)]
mod tests {
    use super::coalesce;

    #[test]
    fn coalesce_merges_only_axes_every_operand_steps_over_as_one() {
        // Contiguous (2, 3, 4) plus a (1, 3, 1) bias broadcast: nothing merges across the bias axis.
        let (d, [a, b]) = coalesce(&[2, 3, 4], [&[12, 4, 1], &[0, 1, 0]]);
        assert_eq!((d, a, b), (vec![2, 3, 4], vec![12, 4, 1], vec![0, 1, 0]));
        // Both contiguous: one axis.
        let (d, [a, b]) = coalesce(&[2, 3, 4], [&[12, 4, 1], &[12, 4, 1]]);
        assert_eq!((d, a, b), (vec![24], vec![1], vec![1]));
        // A row broadcast over the leading axes: those merge, the last stays.
        let (d, [a, b]) = coalesce(&[2, 3, 4], [&[12, 4, 1], &[0, 0, 1]]);
        assert_eq!((d, a, b), (vec![6, 4], vec![4, 1], vec![0, 1]));
        // A transposed operand merges nothing; size-1 axes vanish.
        let (d, [a]) = coalesce(&[3, 1, 4], [&[1, 99, 3]]);
        assert_eq!((d, a), (vec![3, 4], vec![1, 3]));
        // All size 1: one axis of size 1.
        let (d, [a]) = coalesce(&[1, 1], [&[5, 1]]);
        assert_eq!((d, a), (vec![1], vec![0]));
    }
}
