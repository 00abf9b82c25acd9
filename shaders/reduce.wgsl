// reduce.wgsl — sum / mean / max over any set of axes, and the sum of squares behind global
// gradient-norm clipping.
//
// Bindings: a input, out output. Two strategies, both in a fixed order, so results are
// deterministic (no atomics):
// - `reduce`: one 256-invocation workgroup per output element, for long reductions: each
//   invocation accumulates a strided share of the reduced elements, then the workgroup combines
//   them by a tree in workgroup memory.
// - `reduce_serial`: one invocation per output element, a plain loop, for short reductions
//   (a weight gradient summed over a batch of 64, say), where a workgroup per output would
//   leave most of its invocations idle and pay for the tree's barriers.

@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

var<workgroup> sh: array<f32, 256>;

fn tree(lid: u32, is_max: bool) {
    for (var s = 128u; s > 0u; s = s >> 1u) {
        workgroupBarrier();
        if (lid < s) {
            let o = sh[lid + s];
            sh[lid] = select(sh[lid] + o, max(sh[lid], o), is_max);
        }
    }
    workgroupBarrier();
}

// kp: [n_out, op (0 sum, 1 mean, 2 max), a_off, out_off, R, nk, nr,
//      kdims @7, kstr @13, rdims @19, rstr @25]. Contiguous axes are merged by the lowering,
// so nk and nr are usually 1 or 2.

// Offset in `a` of index i over the nd axes with dims at kp[d..] and strides at kp[s..].
fn offset_of(i: u32, nd: u32, d: u32, s: u32) -> u32 {
    var rem = i;
    var off = 0u;
    for (var k = 0u; k < nd; k++) {
        let ax = nd - 1u - k;
        let q = rem / kp[d + ax];
        off += (rem - q * kp[d + ax]) * kp[s + ax];
        rem = q;
    }
    return off;
}

fn finish(acc: f32, o: u32) {
    out[kp[3] + o] = select(acc, acc / f32(kp[4]), kp[1] == 1u);
}

@compute @workgroup_size(256)
fn reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let o = group_index(wid, nwg);
    if (o >= kp[0]) { return; }
    let is_max = kp[1] == 2u;
    let base = kp[2] + offset_of(o, kp[5], 7u, 13u);
    let total = kp[4];
    let nr = kp[6];
    var acc = select(0.0, -3.4028235e38, is_max);
    for (var r = lid; r < total; r += 256u) {
        // One reduced axis (the usual case) needs no division.
        var off = r * kp[25];
        if (nr != 1u) {
            off = offset_of(r, nr, 19u, 25u);
        }
        let v = a[base + off];
        acc = select(acc + v, max(acc, v), is_max);
    }
    sh[lid] = acc;
    tree(lid, is_max);
    if (lid == 0u) {
        finish(sh[0], o);
    }
}

// kp as `reduce`; dispatched 1-D over the outputs. The reduced index advances as an odometer
// over at most two axes (the lowering merges the rest or sends the reduction to `reduce`).
@compute @workgroup_size(256)
fn reduce_serial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let o = gid(wid, nwg, lid);
    if (o >= kp[0]) { return; }
    let is_max = kp[1] == 2u;
    let base = kp[2] + offset_of(o, kp[5], 7u, 13u);
    // Reduced axes as (outer, inner); a single axis is (1, R).
    let two = kp[6] == 2u;
    let n_in = select(kp[19], kp[20], two);
    let s_in = select(kp[25], kp[26], two);
    let n_out = select(1u, kp[19], two);
    let s_out = select(0u, kp[25], two);
    var acc = select(0.0, -3.4028235e38, is_max);
    for (var p = 0u; p < n_out; p++) {
        var off = base + p * s_out;
        for (var q = 0u; q < n_in; q++) {
            let v = a[off];
            acc = select(acc + v, max(acc, v), is_max);
            off += s_in;
        }
    }
    finish(acc, o);
}

// Gradient statistics for the update: out[out_off] = Σ a[i]² over the first `nsum` segments
// (the gradients, in a), out[out_off + 1] = how many elements of all segments (the gradients, and
// after them the checked values such as the loss, in b) are NaN or ±∞, found from the exponent bits, since WGSL lets a compiler assume floats are finite.
// kp: [nseg, out_off, nsum, (off, len) × nseg @3]
fn not_finite(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7f800000u) == 0x7f800000u;
}

@compute @workgroup_size(256)
fn grad_stats(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    var bad = 0.0;
    let nseg = kp[0];
    for (var s = 0u; s < nseg; s++) {
        let off = kp[3u + 2u * s];
        let len = kp[4u + 2u * s];
        let summed = s < kp[2];
        for (var i = lid; i < len; i += 256u) {
            var v: f32;
            if (summed) {
                v = a[off + i];
                acc += v * v;
            } else {
                v = b[off + i];
            }
            bad += select(0.0, 1.0, not_finite(v));
        }
    }
    sh[lid] = acc;
    tree(lid, false);
    if (lid == 0u) {
        out[kp[1]] = sh[0];
    }
    workgroupBarrier();
    sh[lid] = bad;
    tree(lid, false);
    if (lid == 0u) {
        out[kp[1] + 1u] = sh[0];
    }
}
