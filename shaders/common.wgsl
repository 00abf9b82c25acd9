// common.wgsl — prepended to every kernel family.
//
// Bindings shared by all families (one explicit layout, so entry points may leave some unused):
//   0 kp   : per-kernel parameters (sizes, offsets, strides, op codes, f32 bit patterns)
//   1 su   : per-step values written before each submission: [lr, step, seed, b1, 1-b1, b2, 1-b2,
//            eps, 1/(1-b1^t), 1/(1-b2^t), grad_scale] (f32 as bits where fractional; `step`
//            counts forward passes and keys dropout, t counts updates)
//   2 a, 3 b, 4 c : read-only inputs;  5 out : the output;  6, 7 : inputs a and b again, viewed
//   as vec4 (only matmul reads them; other dispatches bind a placeholder).
// Element-wise dispatches are 1-D over 256-invocation workgroups, folded into 2-D when more
// than 65535 workgroups are needed; `gid` recovers the linear index.

@group(0) @binding(0) var<storage, read> kp: array<u32>;
@group(0) @binding(1) var<storage, read> su: array<u32>;

const WG: u32 = 256u;

fn gid(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid;
}

fn group_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}

fn kf(i: u32) -> f32 {
    return bitcast<f32>(kp[i]);
}

fn suf(i: u32) -> f32 {
    return bitcast<f32>(su[i]);
}

// Wellons' lowbias32; the CPU backend's rng::hash32 is the same function.
fn hash32(x0: u32) -> u32 {
    var x = x0;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    x ^= x >> 16u;
    return x;
}
