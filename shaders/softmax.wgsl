// softmax.wgsl — softmax, log-softmax and the fused softmax cross-entropy (forward and
// gradient) over rows of length C.
//
// Bindings: a = logits, b = labels (u32 class indices, bound as words and read through bitcast), c = dy (per row), out. One
// 256-invocation workgroup per row: the row maximum and Σexp(x − max) are combined by trees in
// workgroup memory, so large logits never overflow and results are deterministic.
//
// Parameter block (binding 0), mirrored by src/backend/wgpu/kernels/softmax.rs.

struct Softmax {
    rows: u32,
    classes: u32,
    a_off: u32,
    b_off: u32,
    c_off: u32,
    out_off: u32,
    smoothing: f32,
}

@group(0) @binding(0) var<storage, read> p: Softmax;

{{STORAGE}}

var<workgroup> sh: array<f32, 256>;

fn reduce_sum(lid: u32, v: f32) -> f32 {
    sh[lid] = v;
    for (var s = 128u; s > 0u; s = s >> 1u) {
        workgroupBarrier();
        if (lid < s) {
            sh[lid] += sh[lid + s];
        }
    }
    workgroupBarrier();
    let r = sh[0];
    workgroupBarrier();
    return r;
}

fn reduce_max(lid: u32, v: f32) -> f32 {
    sh[lid] = v;
    for (var s = 128u; s > 0u; s = s >> 1u) {
        workgroupBarrier();
        if (lid < s) {
            sh[lid] = max(sh[lid], sh[lid + s]);
        }
    }
    workgroupBarrier();
    let r = sh[0];
    workgroupBarrier();
    return r;
}

struct RowStats {
    m: f32,
    sum: f32,
}

fn row_stats(lid: u32, base: u32, C: u32) -> RowStats {
    var m = -3.4028235e38;
    for (var j = lid; j < C; j += 256u) {
        m = max(m, ld_a(base + j));
    }
    m = reduce_max(lid, m);
    var s = 0.0;
    for (var j = lid; j < C; j += 256u) {
        s += exp(ld_a(base + j) - m);
    }
    s = reduce_sum(lid, s);
    return RowStats(m, s);
}

@compute @workgroup_size(256)
fn softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = group_index(wid, nwg);
    if (row >= p.rows) { return; }
    let C = p.classes;
    let base = p.a_off + row * C;
    let st = row_stats(lid, base, C);
    for (var j = lid; j < C; j += 256u) {
        st_out(p.out_off + row * C + j, exp(ld_a(base + j) - st.m) / st.sum);
    }
}

@compute @workgroup_size(256)
fn log_softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = group_index(wid, nwg);
    if (row >= p.rows) { return; }
    let C = p.classes;
    let base = p.a_off + row * C;
    let st = row_stats(lid, base, C);
    let lse = st.m + log(st.sum);
    for (var j = lid; j < C; j += 256u) {
        st_out(p.out_off + row * C + j, ld_a(base + j) - lse);
    }
}

// loss[row] = lse − (1−ε)·x_y − (ε/C)·Σx
@compute @workgroup_size(256)
fn sce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = group_index(wid, nwg);
    if (row >= p.rows) { return; }
    let C = p.classes;
    let base = p.a_off + row * C;
    let st = row_stats(lid, base, C);
    var sx = 0.0;
    for (var j = lid; j < C; j += 256u) {
        sx += ld_a(base + j);
    }
    sx = reduce_sum(lid, sx);
    if (lid == 0u) {
        let e = p.smoothing;
        let y = bitcast<u32>(ld_b(p.b_off + row));
        st_out(p.out_off + row, st.m + log(st.sum) - (1.0 - e) * ld_a(base + y) - e * sx / f32(C));
    }
}

// dlogits[row, j] = dy[row] · (softmax_j − ((1−ε)·[j = y] + ε/C))
@compute @workgroup_size(256)
fn sce_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = group_index(wid, nwg);
    if (row >= p.rows) { return; }
    let C = p.classes;
    let base = p.a_off + row * C;
    let st = row_stats(lid, base, C);
    let e = p.smoothing;
    let y = bitcast<u32>(ld_b(p.b_off + row));
    let d = ld_c(p.c_off + row);
    for (var j = lid; j < C; j += 256u) {
        let q = e / f32(C) + select(0.0, 1.0 - e, j == y);
        st_out(p.out_off + row * C + j, d * (exp(ld_a(base + j) - st.m) / st.sum - q));
    }
}
