// elementwise.wgsl — unary, unary-gradient, broadcasting binary, where, strided copy (reshape,
// broadcast, permute, slice, pad, concat), fill, one-hot and dropout masks.
//
// Bindings: a, b, c read-only inputs; out written. One invocation computes one output element.
// Shapes of rank ≤ 6 are passed as dims and element strides (0 on broadcast axes).

@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read> c: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

const PI: f32 = 3.14159265358979;

// Abramowitz & Stegun 7.1.26, |error| < 1.5e-7, as the CPU backend.
fn erf_(x: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.3275911 * abs(x));
    let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * exp(-x * x);
    return select(-y, y, x >= 0.0);
}

fn sigmoid_(x: f32) -> f32 {
    if (x >= 0.0) {
        return 1.0 / (1.0 + exp(-x));
    }
    let e = exp(x);
    return e / (1.0 + e);
}

fn sign_(x: f32) -> f32 {
    return select(select(0.0, -1.0, x < 0.0), 1.0, x > 0.0);
}

// Op codes follow the Rust enum UnaryOp (see backend/wgpu/kernels.rs).
fn unary_f(op: u32, x: f32, p0: f32, p1: f32) -> f32 {
    switch op {
        case 0u: { return -x; }
        case 1u: { return exp(x); }
        case 2u: { return log(x); }
        case 3u: { return sqrt(x); }
        case 4u: { return x * x; }
        case 5u: { return abs(x); }
        case 6u: { return sign_(x); }
        case 7u: { return 1.0 / x; }
        case 8u: { return select(0.0, 1.0, x > 0.0); }
        case 9u: { return sigmoid_(x); }
        case 10u: { return tanh(x); }
        case 11u: { return max(x, 0.0); }
        case 12u: { return select(p0 * x, x, x > 0.0); }
        case 13u: { return select(p0 * (exp(x) - 1.0), x, x > 0.0); }
        case 14u: { return max(x, 0.0) + log(1.0 + exp(-abs(x))); }
        case 15u: { return 0.5 * x * (1.0 + erf_(x * 0.70710678118654752)); }
        case 16u: { return min(max(x, p0), p1); }
        case 17u: { return pow(x, p0); }
        case 18u: { return x + p0; }
        default: { return p0 * x; }
    }
}

fn unary_d(op: u32, x: f32, p0: f32, p1: f32) -> f32 {
    switch op {
        case 0u: { return -1.0; }
        case 1u: { return exp(x); }
        case 2u: { return 1.0 / x; }
        case 3u: { return 0.5 / sqrt(x); }
        case 4u: { return 2.0 * x; }
        case 5u: { return sign_(x); }
        case 6u, 8u: { return 0.0; }
        case 7u: { return -1.0 / (x * x); }
        case 9u: { let s = sigmoid_(x); return s * (1.0 - s); }
        case 10u: { let t = tanh(x); return 1.0 - t * t; }
        case 11u: { return select(0.0, 1.0, x > 0.0); }
        case 12u: { return select(p0, 1.0, x > 0.0); }
        case 13u: { return select(p0 * exp(x), 1.0, x > 0.0); }
        case 14u: { return sigmoid_(x); }
        case 15u: {
            let cdf = 0.5 * (1.0 + erf_(x * 0.70710678118654752));
            return cdf + x * exp(-0.5 * x * x) / sqrt(2.0 * PI);
        }
        case 16u: { return select(0.0, 1.0, x >= p0 && x <= p1); }
        case 17u: { return p0 * pow(x, p0 - 1.0); }
        case 18u: { return 1.0; }
        default: { return p0; }
    }
}

// kp: [n, op, a_off, out_off, p0, p1, b_off]
@compute @workgroup_size(256)
fn unary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= kp[0]) { return; }
    out[kp[3] + i] = unary_f(kp[1], a[kp[2] + i], kf(4u), kf(5u));
}

// dy · f'(x): x in a, dy in b.
@compute @workgroup_size(256)
fn unary_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= kp[0]) { return; }
    out[kp[3] + i] = b[kp[6] + i] * unary_d(kp[1], a[kp[2] + i], kf(4u), kf(5u));
}

fn binary_f(op: u32, x: f32, y: f32) -> f32 {
    switch op {
        case 0u: { return x + y; }
        case 1u: { return x - y; }
        case 2u: { return x * y; }
        case 3u: { return x / y; }
        case 4u: { return max(x, y); }
        case 5u: { return min(x, y); }
        case 6u: { return pow(x, y); }
        case 7u: { return select(0.0, 1.0, x > y); }
        case 8u: { return select(0.0, 1.0, x >= y); }
        default: { return select(0.0, 1.0, x == y); }
    }
}

// Offsets of linear index i into `count` (≤ 3) operands whose strides sit at kp[s..s+rank],
// kp[s+6..] and kp[s+12..], over dims at kp[d..]. The index is split into coordinates once for
// all operands (integer division is the expensive part of these kernels), and the lowering has
// already merged contiguous axes, so rank is usually 1 to 3.
fn offsets(i: u32, rank: u32, d: u32, s: u32, count: u32) -> vec3<u32> {
    var rem = i;
    var off = vec3<u32>(0u);
    for (var k = 0u; k < rank; k++) {
        let ax = rank - 1u - k;
        let dim = kp[d + ax];
        let q = rem / dim;
        let idx = rem - q * dim;
        rem = q;
        off.x += idx * kp[s + ax];
        off.y += idx * kp[s + 6u + ax];
        if (count > 2u) {
            off.z += idx * kp[s + 12u + ax];
        }
    }
    return off;
}

// kp: [n, op, rank, a_off, b_off, out_off, dims[6] @6, sa[6] @12, sb[6] @18]
@compute @workgroup_size(256)
fn binary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= kp[0]) { return; }
    let o = offsets(i, kp[2], 6u, 12u, 2u);
    let x = a[kp[3] + o.x];
    let y = b[kp[4] + o.y];
    out[kp[5] + i] = binary_f(kp[1], x, y);
}

// kp: [n, rank, c_off, a_off, b_off, out_off, dims @6, sc @12, sa @18, sb @24]; cond in a.
@compute @workgroup_size(256)
fn where3(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= kp[0]) { return; }
    let o = offsets(i, kp[1], 6u, 12u, 3u);
    let cond = a[kp[2] + o.x];
    let x = b[kp[3] + o.y];
    let y = c[kp[4] + o.z];
    out[kp[5] + i] = select(y, x, cond != 0.0);
}

// out[dst_off + Σ idx·ds] = a[src_off + Σ idx·ss] over the index space dims.
// kp: [n, rank, src_off, dst_off, dims @4, ss @10, ds @16]
@compute @workgroup_size(256)
fn strided_copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= kp[0]) { return; }
    let o = offsets(i, kp[1], 4u, 10u, 2u);
    out[kp[3] + o.y] = a[kp[2] + o.x];
}

// kp: [n, out_off, value]
@compute @workgroup_size(256)
fn fill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= kp[0]) { return; }
    out[kp[1] + i] = kf(2u);
}

// Element type conversion between f32 and u32 (u32 tensors are bound as f32 and read through
// bitcast). f32 → u32 rounds toward zero, saturating; NaN gives 0. kp: [n, mode, a_off, out_off],
// mode 1: f32 → u32, 2: u32 → f32.
@compute @workgroup_size(256)
fn convert(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= kp[0]) { return; }
    let x = a[kp[2] + i];
    if (kp[1] == 1u) {
        let bits = bitcast<u32>(x);
        let nan = (bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0u;
        out[kp[3] + i] = bitcast<f32>(select(u32(max(x, 0.0)), 0u, nan));
    } else {
        out[kp[3] + i] = f32(bitcast<u32>(x));
    }
}

// out[out_off + i] += a[a_off + i] (gradient accumulation). kp: [n, a_off, out_off]
@compute @workgroup_size(256)
fn add_into(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= kp[0]) { return; }
    let o = kp[2] + i;
    out[o] = out[o] + a[kp[1] + i];
}

// kp: [n = N·C, C, a_off, out_off]; u32 labels in a.
@compute @workgroup_size(256)
fn one_hot(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= kp[0]) { return; }
    let cls = kp[1];
    let y = bitcast<u32>(a[kp[2] + i / cls]);
    out[kp[3] + i] = select(0.0, 1.0, y == i % cls);
}

// Inverted dropout mask, the same stream as rng::dropout_uniform. kp: [n, out_off, p, key]
@compute @workgroup_size(256)
fn dropout_mask(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= kp[0]) { return; }
    let p = kf(2u);
    let k = hash32(kp[3] + hash32(su[1] + hash32(su[2])));
    let u = f32(hash32(i ^ k) >> 8u) * (1.0 / 16777216.0);
    out[kp[1] + i] = select(0.0, 1.0 / (1.0 - p), u >= p);
}
