// reduce.wgsl — sum / mean / max over any set of axes, and the sum of squares behind global
// gradient-norm clipping.
//
// Bindings: a input, out output. One 256-invocation workgroup computes one output element:
// each invocation accumulates a strided share of the reduced elements, then the workgroup
// combines them by a tree in workgroup memory. The order is fixed, so results are
// deterministic (no atomics).

@group(0) @binding(2) var<storage, read> a: array<f32>;
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
//      kdims @7, kstr @13, rdims @19, rstr @25]
@compute @workgroup_size(256)
fn reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let o = group_index(wid, nwg);
    if (o >= kp[0]) { return; }
    let op = kp[1];
    let is_max = op == 2u;
    // Base offset of this output's kept index.
    var rem = o;
    var base = kp[2];
    let nk = kp[5];
    for (var k = 0u; k < nk; k++) {
        let ax = nk - 1u - k;
        base += (rem % kp[7u + ax]) * kp[13u + ax];
        rem = rem / kp[7u + ax];
    }
    let total = kp[4];
    let nr = kp[6];
    var acc = select(0.0, -3.4028235e38, is_max);
    for (var r = lid; r < total; r += 256u) {
        var rr = r;
        var off = base;
        for (var k = 0u; k < nr; k++) {
            let ax = nr - 1u - k;
            off += (rr % kp[19u + ax]) * kp[25u + ax];
            rr = rr / kp[19u + ax];
        }
        let v = a[off];
        acc = select(acc + v, max(acc, v), is_max);
    }
    sh[lid] = acc;
    tree(lid, is_max);
    if (lid == 0u) {
        out[kp[3] + o] = select(sh[0], sh[0] / f32(total), op == 1u);
    }
}

// out[out_off] = Σ over segments of a[i]². kp: [nseg, out_off, (off, len) × nseg]
@compute @workgroup_size(256)
fn sum_squares(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    let nseg = kp[0];
    for (var s = 0u; s < nseg; s++) {
        let off = kp[2u + 2u * s];
        let len = kp[3u + 2u * s];
        for (var i = lid; i < len; i += 256u) {
            let v = a[off + i];
            acc += v * v;
        }
    }
    sh[lid] = acc;
    tree(lid, false);
    if (lid == 0u) {
        out[kp[1]] = sh[0];
    }
}
