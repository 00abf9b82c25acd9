// common.wgsl — prepended to every kernel family.
//
// Bindings shared by all families (one explicit layout, so entry points may leave some unused):
//   0 the dispatch's parameter block: a struct declared by each family file, mirrored by the
//     `#[repr(C)]` struct of the same name in src/backend/wgpu/kernels/<family>.rs
//   1 per_step : values written before each submission (`Step` in kernels/mod.rs)
//   2 a, 3 b, 4 c : read-only inputs;  5 out : the output;  6, 7 : inputs a and b again, viewed
//   as vec4 (only matmul reads them; other dispatches bind a placeholder).
// Element-wise dispatches are 1-D over 256-invocation workgroups, folded into 2-D when more
// than 65535 workgroups are needed; `gid` recovers the linear index.

struct Step {
    lr: f32,
    t: u32,
    step: u32,
    seed: u32,
    b1: f32,
    one_minus_b1: f32,
    b2: f32,
    one_minus_b2: f32,
    eps: f32,
    inv_bias1: f32,
    inv_bias2: f32,
    grad_scale: f32,
}

@group(0) @binding(1) var<storage, read> per_step: Step;

const WG: u32 = 256u;

fn gid(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid;
}

// n / d for d > 0, exactly, through an f32 quotient corrected to the integer one. A division
// by a run-time value is a long instruction sequence on GPUs, and on llvmpipe scalar code for
// each lane; a float division vectorises. For n < 2^22 the conversion keeps n exact (and d
// where d ≤ n; a larger d gives 0 either way), and the f32 quotient (WGSL allows 2.5 ULP, an
// ULP being at most 0.25 below 2^22) lies within 0.625 of n/d, so after truncation it is off
// by at most one either way, which the steps below undo (one spare); larger n take the
// integer division. No product below overflows: q·d ≤ n + d.
fn udiv(n: u32, d: u32) -> u32 {
    if (n >= 0x400000u) {
        return n / d;
    }
    var q = u32(f32(n) / f32(d));
    if (q * d > n) { q -= 1u; }
    if ((q + 1u) * d <= n) { q += 1u; }
    if ((q + 1u) * d <= n) { q += 1u; }
    return q;
}

fn group_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}

// A quiet NaN, for the `default:` of a generated op `switch`: unreachable by construction (the
// cases are generated from the same table that numbers the ops), and never a plausible value if
// it were reached. Built from `code` so it is not a constant expression (WGSL refuses a NaN
// constant); the exponent bits are already all ones, so it is a NaN whatever `code` is.
fn nan_for(code: u32) -> f32 {
    return bitcast<f32>(0x7fc00000u | code);
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
