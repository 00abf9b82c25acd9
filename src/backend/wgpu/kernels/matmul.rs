//! matmul.wgsl's parameter struct, its variants and lowering: batched `C = op(A) · op(B)`,
//! transposes expressed as strides; a tiled kernel for large products and a register-blocked
//! one for skinny ones, each with tile sizes set through pipeline-overridable constants. The
//! lowering picks today's default variant by shape; `super::super::autotune` may replace it
//! with the fastest of [`Variant::ALL`] on the adapter at hand.

use super::{u, Cost, Dispatch, Family, Grid};
use crate::backend::{Fused, View};
use crate::shape::{DType, Shape};
use bytemuck::{Pod, Zeroable};
use std::sync::Arc;

/// `matmul` and `matmul_small`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Matmul {
    /// Rows of C.
    pub m: u32,
    /// Columns of C.
    pub n: u32,
    /// The contracted dimension.
    pub k: u32,
    /// Offset of A.
    pub a_off: u32,
    /// Offset of B.
    pub b_off: u32,
    /// Offset of C.
    pub c_off: u32,
    /// Row stride of op(A).
    pub rsa: u32,
    /// Column stride of op(A).
    pub csa: u32,
    /// Row stride of op(B).
    pub rsb: u32,
    /// Column stride of op(B).
    pub csb: u32,
    /// Elements between batches of A (0: shared).
    pub a_batch: u32,
    /// Elements between batches of B (0: shared).
    pub b_batch: u32,
    /// Batches.
    pub batch: u32,
    /// 1: A may be read through its vec4 view (row-major, K, offset and batch stride multiples
    /// of 4). The shader reads it as the pipeline constant `VA`, set from here by [`dispatch`].
    pub vec_a: u32,
    /// 1: B may be read through its vec4 view; the pipeline constant `VB`.
    pub vec_b: u32,
}

/// One way to compute a product: an entry point of matmul.wgsl and its override constants.
/// Every variant accumulates each element of C in the same order (k = 0, 1, ...; see the
/// shader's header), so all give the same bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// `matmul`: a `tm`×`tn` tile of C per workgroup of (tn/rn)×(tm/rm) invocations, K in
    /// steps of `tk` through workgroup memory, an `rm`×`rn` register block per invocation.
    Tiled {
        /// Rows of the tile.
        tm: u32,
        /// Columns of the tile.
        tn: u32,
        /// K step.
        tk: u32,
        /// Rows per invocation.
        rm: u32,
        /// Columns per invocation.
        rn: u32,
    },
    /// `matmul_small`: an `sm`×`sn` block of C per invocation, no workgroup memory.
    Small {
        /// Rows per invocation.
        sm: u32,
        /// Columns per invocation.
        sn: u32,
    },
    /// `matmul_vec4`: `vm` rows × `vn` groups of four consecutive columns of C per invocation,
    /// B read as vec4 where its layout allows, no workgroup memory.
    Vec4 {
        /// Rows per invocation.
        vm: u32,
        /// vec4 column groups per invocation.
        vn: u32,
        /// Row blocks per workgroup tile (0: the 1-D order; see matmul.wgsl's `WR`).
        wr: u32,
    },
}

const fn tiled(tm: u32, tn: u32, tk: u32, rm: u32, rn: u32) -> Variant {
    Variant::Tiled { tm, tn, tk, rm, rn }
}

impl Variant {
    /// Today's tiled kernel: 64×64×16, 4×4 per invocation, 16×16 invocations.
    pub const TILED: Variant = tiled(64, 64, 16, 4, 4);
    /// Today's skinny kernel: 4×4 per invocation.
    pub const SMALL: Variant = Variant::Small { sm: 4, sn: 4 };

    /// The candidates the autotuner times, defaults first (a tie keeps the default), then the
    /// rest roughly from the most to the least often fastest (on llvmpipe), since a shape's
    /// time budget may run out before the last are timed.
    pub const ALL: [Variant; 16] = [
        Variant::TILED,
        Variant::SMALL,
        Variant::Vec4 { vm: 8, vn: 2, wr: 0 },
        Variant::Small { sm: 8, sn: 4 },
        Variant::Vec4 { vm: 8, vn: 4, wr: 0 },
        Variant::Vec4 { vm: 8, vn: 1, wr: 0 },
        Variant::Vec4 { vm: 4, vn: 2, wr: 0 },
        Variant::Vec4 { vm: 8, vn: 8, wr: 16 },
        Variant::Vec4 { vm: 8, vn: 4, wr: 32 },
        Variant::Vec4 { vm: 8, vn: 4, wr: 16 },
        Variant::Vec4 { vm: 8, vn: 2, wr: 16 },
        tiled(128, 128, 8, 8, 8),
        Variant::Vec4 { vm: 4, vn: 1, wr: 0 },
        Variant::Small { sm: 2, sn: 4 },
        tiled(32, 32, 16, 2, 2),
        Variant::Small { sm: 1, sn: 4 },
    ];

    /// The entry point.
    pub fn entry(self) -> &'static str {
        match self {
            Variant::Tiled { .. } => "matmul",
            Variant::Small { .. } => "matmul_small",
            Variant::Vec4 { .. } => "matmul_vec4",
        }
    }

    /// The override constants that select it.
    pub fn constants(self) -> Vec<(&'static str, u32)> {
        match self {
            Variant::Tiled { tm, tn, tk, rm, rn } => vec![("TM", tm), ("TN", tn), ("TK", tk), ("RM", rm), ("RN", rn)],
            Variant::Small { sm, sn } => vec![("SM", sm), ("SN", sn)],
            Variant::Vec4 { vm, vn, wr } => vec![("VM", vm), ("VN", vn), ("WR", wr)],
        }
    }

    /// Invocations per workgroup.
    pub fn invocations(self) -> u32 {
        match self {
            Variant::Tiled { tm, tn, rm, rn, .. } => (tm / rm) * (tn / rn),
            Variant::Small { .. } | Variant::Vec4 { .. } => 256,
        }
    }

    /// Workgroup memory, bytes.
    pub fn workgroup_bytes(self) -> u32 {
        match self {
            Variant::Tiled { tm, tn, tk, .. } => 4 * tk * (tm + 1 + tn),
            Variant::Small { .. } | Variant::Vec4 { .. } => 0,
        }
    }

    /// Its name in the autotune cache and the profile: `tiled 64x64x16 r4x4`, `small r4x4`.
    pub fn name(self) -> String {
        match self {
            Variant::Tiled { tm, tn, tk, rm, rn } => format!("tiled {tm}x{tn}x{tk} r{rm}x{rn}"),
            Variant::Small { sm, sn } => format!("small r{sm}x{sn}"),
            Variant::Vec4 { vm, vn, wr: 0 } => format!("vec4 r{vm}x{}", 4 * vn),
            Variant::Vec4 { vm, vn, wr } => format!("vec4 r{vm}x{} t{wr}", 4 * vn),
        }
    }

    /// The variant of [`Variant::ALL`] called `name`.
    pub fn parse(name: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.name() == name)
    }

    /// Today's choice by shape: skinny products waste most of a 64×64 tile, and a short K
    /// never repays staging tiles through workgroup memory.
    pub fn default_for(m: usize, n: usize, k: usize) -> Variant {
        if m < 64 || n < 64 || k < 32 {
            Variant::SMALL
        } else {
            Variant::TILED
        }
    }
}

/// `out = op(a) · op(b)` for operand shapes `sa`, `sb` and output shape `os`, in the default
/// variant for its shape.
#[allow(clippy::too_many_arguments)] // the two operands, their transposes and shapes, the output
pub fn matmul(
    ta: bool,
    tb: bool,
    a: View,
    b: View,
    sa: &Shape,
    sb: &Shape,
    out: View,
    os: &Shape,
) -> Result<Dispatch, String> {
    let (ra, rb, rc) = (sa.rank(), sb.rank(), os.rank());
    let (m, nn) = (os.dims()[rc - 2], os.dims()[rc - 1]);
    let kk = if ta { sa.dims()[ra - 2] } else { sa.dims()[ra - 1] };
    let batch: usize = os.dims()[..rc - 2].iter().product();
    let (rsa, csa) = if ta { (1, m) } else { (kk, 1) };
    let (rsb, csb) = if tb { (1, kk) } else { (nn, 1) };
    let ab = if ra == 2 { 0 } else { m * kk };
    let bb = if rb == 2 { 0 } else { kk * nn };
    // vec4 staging (the tiled kernel) needs the contiguous dimension, offsets and batch strides
    // 4-aligned; `matmul_small` ignores the flags.
    let vec_a = !ta && kk.is_multiple_of(4) && a.offset.is_multiple_of(4) && ab.is_multiple_of(4);
    let vec_b = !tb && nn.is_multiple_of(4) && b.offset.is_multiple_of(4) && bb.is_multiple_of(4);
    let p = Matmul {
        m: u(m),
        n: u(nn),
        k: u(kk),
        a_off: u(a.offset),
        b_off: u(b.offset),
        c_off: u(out.offset),
        rsa: u(rsa),
        csa: u(csa),
        rsb: u(rsb),
        csb: u(csb),
        a_batch: u(ab),
        b_batch: u(bb),
        batch: u(batch),
        vec_a: vec_a as u32,
        vec_b: vec_b as u32,
    };
    dispatch(&p, a.buf, b.buf, out.buf, Variant::default_for(m, nn, kk))
}

/// The dispatch computing `p` in variant `v`.
pub fn dispatch(p: &Matmul, a: usize, b: usize, out: usize, v: Variant) -> Result<Dispatch, String> {
    let (m, n, k, batch) = (p.m as usize, p.n as usize, p.k as usize, p.batch as usize);
    let grid = match v {
        Variant::Small { sm, sn } => Grid::Elements(batch * m.div_ceil(sm as usize) * n.div_ceil(sn as usize)),
        Variant::Vec4 { vm, vn, wr: 0 } => {
            Grid::Elements(batch * m.div_ceil(vm as usize) * n.div_ceil(4).div_ceil(vn as usize))
        }
        Variant::Vec4 { vm, vn, wr } => {
            let (wr, wc) = (wr as usize, 256 / wr as usize);
            let tiles_r = m.div_ceil(vm as usize).div_ceil(wr);
            let tiles_c = n.div_ceil(4).div_ceil(wc * vn as usize);
            Grid::Elements(batch * tiles_r * tiles_c * 256)
        }
        Variant::Tiled { tm, tn, .. } => {
            let g = [n.div_ceil(tn as usize), m.div_ceil(tm as usize), batch];
            if g.iter().any(|&x| x > 65535) {
                return Err(format!(
                    "matmul of {batch}×{m}×{n} needs more than 65535 workgroups in one dimension"
                ));
            }
            Grid::Fixed(g.map(|x| x as u32))
        }
    };
    // A and B once each (or once per batch when not shared), C once.
    let a_elems = m * k * if p.a_batch == 0 { 1 } else { batch };
    let b_elems = k * n * if p.b_batch == 0 { 1 } else { batch };
    let cost = Cost::new(2 * m * n * k * batch, &[a_elems, b_elems], m * n * batch);
    let mut d = Dispatch::new(Family::Matmul, v.entry(), p, vec![a, b], vec![out], grid).with_cost(cost);
    d.constants = v.constants();
    // The vec4 paths' switches; `matmul_small` has none, and a constant it ignores would only
    // make more pipelines of the same code.
    if !matches!(v, Variant::Small { .. }) {
        d.constants.extend([("VA", p.vec_a), ("VB", p.vec_b)]);
    }
    Ok(d)
}

/// The parameter block of a matmul dispatch.
pub fn params(d: &Dispatch) -> Matmul {
    bytemuck::pod_read_unaligned(&d.params[..std::mem::size_of::<Matmul>()])
}

/// `d` (a matmul dispatch) recomputed in variant `v`, its buffers, types and parameters kept.
pub fn with_variant(d: &Dispatch, v: Variant) -> Result<Dispatch, String> {
    let mut out = dispatch(&params(d), d.inputs[0], d.inputs[1], d.outputs[0], v)?;
    out.dtypes = d.dtypes;
    Ok(out)
}

/// Which variant `d` (a matmul dispatch) is.
pub fn variant_of(d: &Dispatch) -> Option<Variant> {
    Variant::ALL
        .into_iter()
        .find(|v| v.entry() == d.entry && d.constants.starts_with(&v.constants()))
}

/// The largest block of C per invocation that the generated entry points unroll to: rows and
/// columns of `matmul_small`, rows and vec4 column groups of `matmul_vec4`.
pub const MAX_SM: u32 = 8;
/// See [`MAX_SM`].
pub const MAX_SN: u32 = 4;
/// See [`MAX_SM`].
pub const MAX_VM: u32 = 8;
/// See [`MAX_SM`].
pub const MAX_VN: u32 = 8;

/// matmul.wgsl with its generated entry points filled in.
pub fn source() -> String {
    let body = include_str!("../../../../shaders/matmul.wgsl");
    super::fill(&super::fill(body, "SMALL", &small_source()), "VEC4", &vec4_source())
}

/// `matmul_small`, unrolled to a `MAX_SM`×`MAX_SN` block: accumulator `acc{i}_{j}` holds row
/// r0 + i, column cb + j·NB, and every row or column past the override constants SM and SN is
/// behind a test that compiles away.
fn small_source() -> String {
    let (rows, cols) = (0..MAX_SM, 0..MAX_SN);
    let mut s = String::from(
        "@compute @workgroup_size(256)
fn matmul_small(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = gid(wid, nwg, lid);
    let M = p.m;
    let N = p.n;
    let K = p.k;
    let MB = (M + SM - 1u) / SM;
    let NB = (N + SN - 1u) / SN;
    if (e >= p.batch * MB * NB) { return; }
    let cb = e % NB;
    let rest = e / NB;
    let r0 = (rest % MB) * SM;
    let z = rest / MB;
    let a0 = p.a_off + z * p.a_batch;
    let b0 = p.b_off + z * p.b_batch;
",
    );
    for i in rows.clone() {
        s += &format!("    let pa{i} = a0 + min(r0 + {i}u, M - 1u) * p.rsa;\n");
    }
    for j in cols.clone() {
        s += &format!("    let pb{j} = b0 + min(cb + {j}u * NB, N - 1u) * p.csb;\n");
    }
    for i in rows.clone() {
        let accs: Vec<String> = cols.clone().map(|j| format!("var acc{i}_{j} = 0.0;")).collect();
        s += &format!("    {}\n", accs.join(" "));
    }
    s += "    for (var k = 0u; k < K; k++) {\n";
    for j in cols.clone() {
        s += &format!("        var b{j} = 0.0; if ({j}u < SN) {{ b{j} = ld_b(pb{j} + k * p.rsb); }}\n");
    }
    for i in rows.clone() {
        s += &format!("        if ({i}u < SM) {{\n            let a = ld_a(pa{i} + k * p.csa);\n");
        for j in cols.clone() {
            s += &format!("            if ({j}u < SN) {{ acc{i}_{j} = fma(a, b{j}, acc{i}_{j}); }}\n");
        }
        s += "        }\n";
    }
    s += "    }\n    let c0 = p.c_off + z * M * N;\n";
    for i in rows {
        s += &format!("    if ({i}u < SM && r0 + {i}u < M) {{\n        let row = c0 + (r0 + {i}u) * N;\n");
        for j in cols.clone() {
            s += &format!(
                "        if ({j}u < SN && cb + {j}u * NB < N) {{ st_out(row + cb + {j}u * NB, acc{i}_{j}); }}\n"
            );
        }
        s += "    }\n";
    }
    s + "}\n"
}

/// `matmul_vec4`, unrolled to a `MAX_VM`×`MAX_VN` block: accumulator `acc{i}_{j}` holds row
/// r0 + i, columns 4·(g0 + j·gs) .. + 3; rows and groups past VM and VN compile away, and so
/// does the vec4 path for A when VA = 0 (then every step reads A one element per row).
fn vec4_source() -> String {
    let (rows, groups) = (0..MAX_VM, 0..MAX_VN);
    let mut s = String::from(
        "@compute @workgroup_size(256)
fn matmul_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let M = p.m;
    let N = p.n;
    let K = p.k;
    let NV = (N + 3u) / 4u;
    let blk = vec4_block(gid(wid, nwg, lid), (M + VM - 1u) / VM, NV);
    if (!blk.ok) { return; }
    let r0 = blk.rb * VM;
    let a0 = p.a_off + blk.z * p.a_batch;
    let b0 = p.b_off + blk.z * p.b_batch;
",
    );
    for i in rows.clone() {
        s += &format!("    let pa{i} = a0 + min(r0 + {i}u, M - 1u) * p.rsa;\n");
    }
    // First column of each group, clamped for loads (stores check the true column).
    for j in groups.clone() {
        s += &format!("    let col{j} = min(blk.g0 + {j}u * blk.gs, NV - 1u) * 4u;\n");
    }
    for i in rows.clone() {
        let accs: Vec<String> = groups
            .clone()
            .map(|j| format!("var acc{i}_{j} = vec4<f32>(0.0);"))
            .collect();
        s += &format!("    {}\n", accs.join(" "));
    }
    // One step k of the product: B's row k for every group, then row i's `a(i)` times each.
    let step = |s: &mut String, indent: &str, k: &str, a: &dyn Fn(u32) -> String| {
        *s += &format!("{indent}let brow = b0 + ({k}) * p.rsb;\n");
        for j in groups.clone() {
            *s += &format!("{indent}var b{j} = vec4<f32>(0.0); if ({j}u < VN) {{ b{j} = b_row4(brow, col{j}); }}\n");
        }
        for i in rows.clone() {
            *s += &format!("{indent}if ({i}u < VM) {{\n{indent}    let a = vec4<f32>({});\n", a(i));
            for j in groups.clone() {
                *s += &format!("{indent}    if ({j}u < VN) {{ acc{i}_{j} = fma(a, b{j}, acc{i}_{j}); }}\n");
            }
            *s += &format!("{indent}}}\n");
        }
    };
    // A row-major with 4-aligned K, offset and batch stride: four steps per vec4 load of each
    // row, taken in order (the same fma sequence as one step at a time).
    s += "    var k = 0u;\n    if (VA != 0u) {\n        for (; k < K; k += 4u) {\n";
    for i in rows.clone() {
        s += &format!("            var a{i} = vec4<f32>(0.0); if ({i}u < VM) {{ a{i} = ld_a4((pa{i} + k) / 4u); }}\n");
    }
    for t in 0..4 {
        s += "            {\n";
        step(&mut s, "                ", &format!("k + {t}u"), &|i| {
            format!("a{i}[{t}]")
        });
        s += "            }\n";
    }
    s += "        }\n    }\n    for (; k < K; k++) {\n";
    step(&mut s, "        ", "k", &|i| format!("ld_a(pa{i} + k * p.csa)"));
    s += "    }\n    let c0 = p.c_off + blk.z * M * N;\n";
    for i in rows {
        s += &format!("    if ({i}u < VM && r0 + {i}u < M) {{\n        let row = c0 + (r0 + {i}u) * N;\n");
        for j in groups.clone() {
            s += &format!("        if ({j}u < VN) {{\n            let c = (blk.g0 + {j}u * blk.gs) * 4u;\n");
            for (t, lane) in ["x", "y", "z", "w"].iter().enumerate() {
                s += &format!("            if (c + {t}u < N) {{ st_out(row + c + {t}u, acc{i}_{j}.{lane}); }}\n");
            }
            s += "        }\n";
        }
        s += "    }\n";
    }
    s + "}\n"
}

/// `mm` (a matmul dispatch of f32 tensors, in its final variant) with the fused element-wise
/// kernel `f` as its epilogue, in one generated dispatch: each invocation hands every element
/// of C it computes to `f`'s body (operand `head` of `f` is C, read as `f`'s index space) instead
/// of storing it, so C itself is never written. `None` when it cannot be one dispatch: `f`
/// writes a buffer the product reads (its bindings are read-only), or more than
/// `max_bindings` storage bindings would be needed.
///
/// The product's bits are the variant's (the same entry point and constants), and `f`'s ops
/// are the fused kernel's functions, so the result is bit-identical to the two dispatches.
pub fn with_epilogue(mm: &Dispatch, f: &Fused, head: usize, max_bindings: u32) -> Result<Option<Dispatch>, String> {
    let p = params(mm);
    let (a, b) = (mm.inputs[0], mm.inputs[1]);
    if f.outputs.iter().any(|(_, v)| v.buf == a || v.buf == b) || mm.dtypes.iter().any(|&t| t != DType::F32) {
        return Ok(None);
    }
    // Bindings: 0 the parameters, 1 a, 2 b, then the vec4 views the variant reads, then f's.
    let mut inputs = vec![a, b];
    let mut storage = String::from(
        "@group(0) @binding(1) var<storage, read> a: array<f32>;
fn ld_a(i: u32) -> f32 { return a[i]; }
@group(0) @binding(2) var<storage, read> b: array<f32>;
fn ld_b(i: u32) -> f32 { return b[i]; }
",
    );
    // `matmul_small` reads no vec4 view (an unused binding is not in the derived layout).
    let vec4 = mm.entry != Variant::SMALL.entry();
    for (name, on, buf) in [("a4", p.vec_a, a), ("b4", p.vec_b, b)] {
        if on != 0 && vec4 {
            inputs.push(buf);
            storage += &format!(
                "@group(0) @binding({0}) var<storage, read> {name}: array<vec4<f32>>;\n\
                 fn ld_{name}(i: u32) -> vec4<f32> {{ return {name}[i]; }}\n",
                inputs.len()
            );
        } else {
            // Compiled out with its path (VA or VB = 0) or never read, but the text names it.
            storage += &format!("fn ld_{name}(i: u32) -> vec4<f32> {{ return vec4<f32>(0.0); }}\n");
        }
    }
    let (read, written, ep) = super::fused::epilogue(f, head, inputs.len() + 1)?;
    if 1 + inputs.len() + read.len() + written.len() > max_bindings as usize {
        return Ok(None);
    }
    storage += &ep;
    storage += "fn st_out(i: u32, v: f32) { epilogue(i - p.c_off, v); }\n";
    let body = super::fill(&source(), "STORAGE", &storage);
    let src = format!("{}\n{body}", super::generated_prelude()?);
    inputs.extend(read);
    let n = f.len();
    let mut d = Dispatch {
        inputs,
        outputs: written,
        source: Some(Arc::from(src)),
        ..mm.clone()
    };
    // The product's work and operands, plus the epilogue's ops and operands, less C's store.
    let operand_reads: usize = f
        .inputs
        .iter()
        .enumerate()
        .filter(|&(k, _)| k != head)
        .map(|(_, (v, _))| v.len)
        .sum();
    d.cost.flops += (n * f.body.len()) as f64;
    d.cost.reads[2] += operand_reads as f64;
    d.cost.writes = (n * f.outputs.len()) as f64;
    Ok(Some(d))
}
