// reduce.wgsl — sum / mean / max over any set of axes, and the gradient statistics the update
// reads (the sum of squares behind global-norm clipping, and the count of non-finite values).
//
// Bindings: a input, out output. Two strategies, both in a fixed order, so results are
// deterministic (no atomics):
// - `reduce`: one 256-invocation workgroup per output element, for long reductions: each
//   invocation accumulates a strided share of the reduced elements, then the workgroup combines
//   them by a tree in workgroup memory.
// - `reduce_serial`: one invocation per output element, a plain loop, for short reductions
//   (a weight gradient summed over a batch of 64, say), where a workgroup per output would
//   leave most of its invocations idle and pay for the tree's barriers.

// Parameter blocks (binding 0), mirrored by src/backend/wgpu/kernels/reduce.rs: `p: Reduce`
// for `reduce` and `reduce_serial`, `sq: GradStats` for `grad_stats`. Contiguous axes are
// merged by the lowering, so nk and nr are usually 1 or 2.

struct Reduce {
    n: u32,
    r: u32,
    a_off: u32,
    out_off: u32,
    is_max: u32,
    mean: u32,
    nk: u32,
    nr: u32,
    kdims: array<u32, 6>,
    kstr: array<u32, 6>,
    rdims: array<u32, 6>,
    rstr: array<u32, 6>,
}

struct Span {
    off: u32,
    len: u32,
}

struct GradStats {
    nseg: u32,
    out_off: u32,
    nsum: u32,
    accumulate: u32,
    views: array<Span>,
}

@group(0) @binding(0) var<storage, read> p: Reduce;
@group(0) @binding(0) var<storage, read> sq: GradStats;
{{STORAGE}}

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

// Offset in `a` of output o, over the kept axes.
fn kept_offset(o: u32) -> u32 {
    var rem = o;
    var off = 0u;
    for (var k = 0u; k < p.nk; k++) {
        let ax = p.nk - 1u - k;
        let q = rem / p.kdims[ax];
        off += (rem - q * p.kdims[ax]) * p.kstr[ax];
        rem = q;
    }
    return off;
}

// Offset in `a` of reduced element r, over the reduced axes.
fn reduced_offset(r: u32) -> u32 {
    var rem = r;
    var off = 0u;
    for (var k = 0u; k < p.nr; k++) {
        let ax = p.nr - 1u - k;
        let q = rem / p.rdims[ax];
        off += (rem - q * p.rdims[ax]) * p.rstr[ax];
        rem = q;
    }
    return off;
}

fn finish(acc: f32, o: u32) {
    st_out(p.out_off + o, select(acc, acc / f32(p.r), p.mean != 0u));
}

@compute @workgroup_size(256)
fn reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let o = group_index(wid, nwg);
    if (o >= p.n) { return; }
    let is_max = p.is_max != 0u;
    let base = p.a_off + kept_offset(o);
    let total = p.r;
    let nr = p.nr;
    var acc = select(0.0, -3.4028235e38, is_max);
    for (var r = lid; r < total; r += 256u) {
        // One reduced axis (the usual case) needs no division.
        var off = r * p.rstr[0];
        if (nr != 1u) {
            off = reduced_offset(r);
        }
        let v = ld_a(base + off);
        acc = select(acc + v, max(acc, v), is_max);
    }
    sh[lid] = acc;
    tree(lid, is_max);
    if (lid == 0u) {
        finish(sh[0], o);
    }
}

// Dispatched 1-D over the outputs. The reduced index advances as an odometer over at most two
// axes (the lowering merges the rest or sends the reduction to `reduce`).
@compute @workgroup_size(256)
fn reduce_serial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let o = gid(wid, nwg, lid);
    if (o >= p.n) { return; }
    let is_max = p.is_max != 0u;
    let base = p.a_off + kept_offset(o);
    // Reduced axes as (outer, inner); a single axis is (1, R).
    let two = p.nr == 2u;
    let n_in = select(p.rdims[0], p.rdims[1], two);
    let s_in = select(p.rstr[0], p.rstr[1], two);
    let n_out = select(1u, p.rdims[0], two);
    let s_out = select(0u, p.rstr[0], two);
    var acc = select(0.0, -3.4028235e38, is_max);
    for (var q = 0u; q < n_out; q++) {
        var off = base + q * s_out;
        for (var j = 0u; j < n_in; j++) {
            let v = ld_a(off);
            acc = select(acc + v, max(acc, v), is_max);
            off += s_in;
        }
    }
    finish(acc, o);
}

// out[out_off] = Σ a[i]² over the first `nsum` views (the gradients, in a); out[out_off + 1] =
// how many elements of all views (the gradients, then the checked values such as the loss, in
// b) are NaN or ±∞, found from the exponent bits, since WGSL lets a compiler assume that floats
// are finite.
fn not_finite(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7f800000u) == 0x7f800000u;
}

@compute @workgroup_size(256)
fn grad_stats(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    var bad = 0.0;
    for (var s = 0u; s < sq.nseg; s++) {
        let off = sq.views[s].off;
        let len = sq.views[s].len;
        let summed = s < sq.nsum;
        for (var i = lid; i < len; i += 256u) {
            var v: f32;
            if (summed) {
                v = ld_a(off + i);
                acc += v * v;
            } else {
                v = ld_b(off + i);
            }
            bad += select(0.0, 1.0, not_finite(v));
        }
    }
    // With `accumulate`, a further buffer's checked values add to the first dispatch's counts
    // (a select, not a multiply: the previous step may have left ∞ there).
    let more = sq.accumulate != 0u;
    sh[lid] = acc;
    tree(lid, false);
    if (lid == 0u) {
        st_out(sq.out_off, select(sh[0], ld_out(sq.out_off) + sh[0], more));
    }
    workgroupBarrier();
    sh[lid] = bad;
    tree(lid, false);
    if (lid == 0u) {
        st_out(sq.out_off + 1u, select(sh[0], ld_out(sq.out_off + 1u) + sh[0], more));
    }
}

// ----- batch normalisation -----
//
// `channel_moments` (a x → out [means; variances]) and `batch_norm_sums` (a x, b moments,
// c dy → out [Σ dy; Σ dy·(x − mean)]) reduce each channel of a channel-first x (N, C, S) in one
// 256-invocation workgroup, by strided shares and a tree, as `reduce`; the variance is taken
// about the mean in a second pass over the channel. `batch_norm` (a x, b moments, c affine
// [γ; β] → out) is element-wise, one invocation per element.

struct Norm {
    n: u32,
    c: u32,
    s: u32,
    eps: f32,
    a_off: u32,
    b_off: u32,
    c_off: u32,
    out_off: u32,
}

@group(0) @binding(0) var<storage, read> nm: Norm;

var<workgroup> sh2: array<f32, 256>;

// Offset of element r (of the N·S) of channel ch.
fn chan_at(ch: u32, r: u32) -> u32 {
    let i = udiv(r, nm.s);
    return (i * nm.c + ch) * nm.s + (r - i * nm.s);
}

// `tree` over sh and sh2 at once (sums).
fn tree2(lid: u32) {
    for (var s = 128u; s > 0u; s = s >> 1u) {
        workgroupBarrier();
        if (lid < s) {
            sh[lid] += sh[lid + s];
            sh2[lid] += sh2[lid + s];
        }
    }
    workgroupBarrier();
}

@compute @workgroup_size(256)
fn channel_moments(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ch = group_index(wid, nwg);
    if (ch >= nm.c) { return; }
    let total = nm.n * nm.s;
    var acc = 0.0;
    for (var r = lid; r < total; r += 256u) {
        acc += ld_a(nm.a_off + chan_at(ch, r));
    }
    sh[lid] = acc;
    tree(lid, false);
    let mean = sh[0] / f32(total);
    workgroupBarrier();
    var sq = 0.0;
    for (var r = lid; r < total; r += 256u) {
        let d = ld_a(nm.a_off + chan_at(ch, r)) - mean;
        sq += d * d;
    }
    sh[lid] = sq;
    tree(lid, false);
    if (lid == 0u) {
        st_out(nm.out_off + ch, mean);
        st_out(nm.out_off + nm.c + ch, sh[0] / f32(total));
    }
}

@compute @workgroup_size(256)
fn batch_norm_sums(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ch = group_index(wid, nwg);
    if (ch >= nm.c) { return; }
    let total = nm.n * nm.s;
    let mean = ld_b(nm.b_off + ch);
    var s0 = 0.0;
    var s1 = 0.0;
    for (var r = lid; r < total; r += 256u) {
        let o = chan_at(ch, r);
        let d = ld_c(nm.c_off + o);
        s0 += d;
        s1 += d * (ld_a(nm.a_off + o) - mean);
    }
    sh[lid] = s0;
    sh2[lid] = s1;
    tree2(lid);
    if (lid == 0u) {
        st_out(nm.out_off + ch, sh[0]);
        st_out(nm.out_off + nm.c + ch, sh2[0]);
    }
}

@compute @workgroup_size(256)
fn batch_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= nm.n * nm.c * nm.s) { return; }
    let ch = udiv(i, nm.s) % nm.c;
    let r = 1.0 / sqrt(ld_b(nm.b_off + nm.c + ch) + nm.eps);
    let a = ld_c(nm.c_off + ch) * r;
    st_out(nm.out_off + i, (ld_a(nm.a_off + i) - ld_b(nm.b_off + ch)) * a + ld_c(nm.c_off + nm.c + ch));
}
