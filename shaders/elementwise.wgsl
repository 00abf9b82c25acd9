// elementwise.wgsl — unary, unary-gradient, broadcasting binary, where, strided copy (reshape,
// broadcast, permute, slice, pad, concat), fill, one-hot, dropout masks and Bernoulli samples.
//
// Bindings: a, b, c read-only inputs; out written. One invocation computes one output element.
// Parameter blocks (binding 0; one struct per group of entry points, mirrored field for field
// by src/backend/wgpu/kernels/elementwise.rs): `pu: Unary`, `ps: Strided`, `pf: Fill`,
// `po: OneHot`, `pd: Dropout`, `pb: Bernoulli`, `pc: Convert`, `pa: AddInto`,
// `pg: CopyIfFinite`. u32 tensors (labels) are bound as 4-byte words and read through `bitcast`.
// Shapes of rank ≤ 6 are passed as dims and element strides (0 on broadcast axes).
//
// The op `switch`es below are generated: each placeholder line becomes one `case` per op, from
// the exhaustive Rust matches `unary_wgsl` and `binary_wgsl`, numbered by the op tables that
// also number the `op` field, so every code the lowering can write has its case.

struct Unary {
    n: u32,
    op: u32,
    a_off: u32,
    b_off: u32,
    out_off: u32,
    p0: f32,
    p1: f32,
}

struct Strided {
    n: u32,
    rank: u32,
    op: u32,
    a_off: u32,
    b_off: u32,
    c_off: u32,
    out_off: u32,
    dims: array<u32, 6>,
    sa: array<u32, 6>,
    sb: array<u32, 6>,
    sc: array<u32, 6>,
    sout: array<u32, 6>,
}

struct Fill {
    n: u32,
    out_off: u32,
    value: f32,
}

struct OneHot {
    n: u32,
    classes: u32,
    a_off: u32,
    out_off: u32,
}

struct Dropout {
    n: u32,
    out_off: u32,
    p: f32,
    key: u32,
}

struct Bernoulli {
    n: u32,
    a_off: u32,
    out_off: u32,
    key: u32,
}

struct Convert {
    n: u32,
    mode: u32,
    a_off: u32,
    out_off: u32,
}

struct CopyIfFinite {
    n: u32,
    a_off: u32,
    out_off: u32,
    stats_off: u32,
}

struct AddInto {
    n: u32,
    a_off: u32,
    out_off: u32,
}

@group(0) @binding(0) var<storage, read> pu: Unary;
@group(0) @binding(0) var<storage, read> ps: Strided;
@group(0) @binding(0) var<storage, read> pf: Fill;
@group(0) @binding(0) var<storage, read> po: OneHot;
@group(0) @binding(0) var<storage, read> pd: Dropout;
@group(0) @binding(0) var<storage, read> pb: Bernoulli;
@group(0) @binding(0) var<storage, read> pc: Convert;
@group(0) @binding(0) var<storage, read> pa: AddInto;
@group(0) @binding(0) var<storage, read> pg: CopyIfFinite;

{{STORAGE}}

// PI, erf_, sigmoid_ and sign_ are in math.wgsl, appended by the generator (the fused
// kernels use them too).

// The op of `unary`, `unary_grad` and `binary`, set by the host for each pipeline (the same
// code as the parameter block's `op`), so the switch below is on a constant.
override OP: u32 = 0xffffffffu;

fn unary_f(op: u32, x: f32, p0: f32, p1: f32) -> f32 {
    switch op {
{{UNARY_F}}
        default: { return nan_for(op); }
    }
}

fn unary_d(op: u32, x: f32, p0: f32, p1: f32) -> f32 {
    switch op {
{{UNARY_D}}
        default: { return nan_for(op); }
    }
}

@compute @workgroup_size(256)
fn unary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu.n) { return; }
    st_out(pu.out_off + i, unary_f(OP, ld_a(pu.a_off + i), pu.p0, pu.p1));
}

// dy · f'(x): x in a, dy in b.
@compute @workgroup_size(256)
fn unary_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu.n) { return; }
    st_out(pu.out_off + i, ld_b(pu.b_off + i) * unary_d(OP, ld_a(pu.a_off + i), pu.p0, pu.p1));
}

fn binary_f(op: u32, x: f32, y: f32) -> f32 {
    switch op {
{{BINARY}}
        default: { return nan_for(op); }
    }
}

// Offsets of linear index i into `count` (≤ 3) operands (strides sa, sb, sc) and, with
// `with_out`, the output (strides sout), over ps.dims. The index is split into coordinates
// once for all operands (integer division is the expensive part of these kernels), and the
// lowering has already merged contiguous axes, so rank is usually 1 to 3.
fn offsets(i: u32, count: u32, with_out: bool) -> vec4<u32> {
    var rem = i;
    var off = vec4<u32>(0u);
    let rank = ps.rank;
    for (var k = 0u; k < rank; k++) {
        let ax = rank - 1u - k;
        let dim = ps.dims[ax];
        let q = rem / dim;
        let idx = rem - q * dim;
        rem = q;
        off.x += idx * ps.sa[ax];
        if (count > 1u) {
            off.y += idx * ps.sb[ax];
        }
        if (count > 2u) {
            off.z += idx * ps.sc[ax];
        }
        if (with_out) {
            off.w += idx * ps.sout[ax];
        }
    }
    return off;
}

@compute @workgroup_size(256)
fn binary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= ps.n) { return; }
    let o = offsets(i, 2u, false);
    let x = ld_a(ps.a_off + o.x);
    let y = ld_b(ps.b_off + o.y);
    st_out(ps.out_off + i, binary_f(OP, x, y));
}

// out = cond ≠ 0 ? b : c, with cond in a.
@compute @workgroup_size(256)
fn where3(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= ps.n) { return; }
    let o = offsets(i, 3u, false);
    let cond = ld_a(ps.a_off + o.x);
    let x = ld_b(ps.b_off + o.y);
    let y = ld_c(ps.c_off + o.z);
    st_out(ps.out_off + i, select(y, x, cond != 0.0));
}

// out[out_off + Σ idx·sout] = a[a_off + Σ idx·sa] over the index space dims.
@compute @workgroup_size(256)
fn strided_copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= ps.n) { return; }
    let o = offsets(i, 1u, true);
    st_out(ps.out_off + o.w, ld_a(ps.a_off + o.x));
}

@compute @workgroup_size(256)
fn fill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pf.n) { return; }
    st_out(pf.out_off + i, pf.value);
}

// n = N·classes; u32 labels in a.
@compute @workgroup_size(256)
fn one_hot(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= po.n) { return; }
    let cls = po.classes;
    let y = bitcast<u32>(ld_a(po.a_off + i / cls));
    st_out(po.out_off + i, select(0.0, 1.0, y == i % cls));
}

// Element i of stream `key` this step: rng::dropout_uniform, 24 bits in [0, 1), exact in f32.
fn step_uniform(key: u32, i: u32) -> f32 {
    let k = hash32(key + hash32(per_step.step + hash32(per_step.seed)));
    return f32(hash32(i ^ k) >> 8u) * (1.0 / 16777216.0);
}

// Inverted dropout mask.
@compute @workgroup_size(256)
fn dropout_mask(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pd.n) { return; }
    let p = pd.p;
    st_out(pd.out_off + i, select(0.0, 1.0 / (1.0 - p), step_uniform(pd.key, i) >= p));
}

// Bernoulli samples: 1 where the uniform falls below the probability in a (NaN gives 0).
@compute @workgroup_size(256)
fn bernoulli(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pb.n) { return; }
    st_out(pb.out_off + i, select(0.0, 1.0, step_uniform(pb.key, i) < ld_a(pb.a_off + i)));
}

// Float → float (mode 0; the accessors convert), float → u32 toward zero, saturating, NaN → 0
// (mode 1), u32 → float (mode 2).
@compute @workgroup_size(256)
fn convert(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pc.n) { return; }
    let x = ld_a(pc.a_off + i);
    if (pc.mode == 0u) {
        st_out(pc.out_off + i, x);
    } else if (pc.mode == 1u) {
        let bits = bitcast<u32>(x);
        let nan = (bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0u;
        st_out(pc.out_off + i, bitcast<f32>(select(u32(max(x, 0.0)), 0u, nan)));
    } else {
        st_out(pc.out_off + i, f32(bitcast<u32>(x)));
    }
}

// out[out_off + i] += a[a_off + i]: one micro-batch's gradients into the accumulated ones.
@compute @workgroup_size(256)
fn add_into(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pa.n) { return; }
    let o = pa.out_off + i;
    st_out(o, ld_out(o) + ld_a(pa.a_off + i));
}

// out[out_off + i] = a[a_off + i] unless the gradient statistics in b count a non-finite value:
// state updates (batch norm's running statistics) are skipped with the optimiser's update.
@compute @workgroup_size(256)
fn copy_if_finite(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pg.n) { return; }
    if (ld_b(pg.stats_off + 1u) != 0.0) { return; }
    st_out(pg.out_off + i, ld_a(pg.a_off + i));
}
