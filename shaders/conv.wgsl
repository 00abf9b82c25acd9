// conv.wgsl — im2col / col2im for convolution, and max / average pooling with their gradients,
// on (N, C, H, W) planes.
//
// Bindings: a, b read-only inputs; out written. One invocation computes one output element,
// except im2col, where one invocation writes the KH·KW taps of one output pixel.
// Adjoint kernels (col2im, scatter_planes, avg_pool_grad) are written as gathers: each input
// pixel sums the windows that cover it, in a fixed order, so no atomics are needed.
//
// kp: [invocations, N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, a_off, out_off, b_off]

@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

// Input position (or -1) read by tap (i, j) of output (oy, ox).
fn tap(oy: u32, ox: u32, i: u32, j: u32) -> i32 {
    let iy = i32(oy * kp[7] + i * kp[11]) - i32(kp[9]);
    let ix = i32(ox * kp[8] + j * kp[12]) - i32(kp[10]);
    if (iy < 0 || ix < 0 || iy >= i32(kp[3]) || ix >= i32(kp[4])) {
        return -1;
    }
    return iy * i32(kp[4]) + ix;
}

// The output index along one axis whose tap k covers input position p, or -1.
fn covering(p: u32, k: u32, s: u32, pad: u32, d: u32, on: u32) -> i32 {
    let num = i32(p + pad) - i32(k * d);
    if (num < 0) {
        return -1;
    }
    var o = num;
    if (s != 1u) { // uniform: stride-1 windows need no division
        o = num / i32(s);
        if (o * i32(s) != num) {
            return -1;
        }
    }
    return select(-1, o, o < i32(on));
}

// (plane, row, column) of element e of a stack of rows×cols planes, with two divisions.
fn coords(e: u32, rows: u32, cols: u32) -> vec3<u32> {
    let q = e / cols;
    let plane = q / rows;
    return vec3<u32>(plane, q - plane * rows, e - q * cols);
}

// cols (N, C·KH·KW, OH·OW) from x (N, C, H, W). One invocation per (image, channel, output
// pixel) writes that pixel's KH·KW taps (kp[0] counts invocations): its index is split into
// coordinates once rather than once per element, and neighbouring invocations write
// neighbouring columns.
@compute @workgroup_size(256)
fn im2col(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = gid(wid, nwg, lid);
    if (e >= kp[0]) { return; }
    let H = i32(kp[3]);
    let W = i32(kp[4]);
    let L = kp[13] * kp[14];
    let plane = e / L; // n·C + c
    let l = e - plane * L;
    let oy = l / kp[14];
    let ox = l - oy * kp[14];
    let src = kp[15] + plane * kp[3] * kp[4];
    var dst = kp[16] + plane * kp[5] * kp[6] * L + l;
    let y0 = i32(oy * kp[7]) - i32(kp[9]);
    let x0 = i32(ox * kp[8]) - i32(kp[10]);
    for (var i = 0u; i < kp[5]; i++) {
        let iy = y0 + i32(i * kp[11]);
        let row_in = iy >= 0 && iy < H;
        for (var j = 0u; j < kp[6]; j++) {
            let ix = x0 + i32(j * kp[12]);
            var v = 0.0;
            if (row_in && ix >= 0 && ix < W) {
                v = a[src + u32(iy * W + ix)];
            }
            out[dst] = v;
            dst += L;
        }
    }
}

// x (N, C, H, W) += cols, gathered per pixel over taps (i, j) in order.
@compute @workgroup_size(256)
fn col2im(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = gid(wid, nwg, lid);
    if (e >= kp[0]) { return; }
    let co = coords(e, kp[3], kp[4]);
    let plane = co.x;
    let y = co.y;
    let x = co.z;
    let L = kp[13] * kp[14];
    var s = 0.0;
    for (var i = 0u; i < kp[5]; i++) {
        let oy = covering(y, i, kp[7], kp[9], kp[11], kp[13]);
        if (oy < 0) { continue; }
        for (var j = 0u; j < kp[6]; j++) {
            let ox = covering(x, j, kp[8], kp[10], kp[12], kp[14]);
            if (ox < 0) { continue; }
            let row = (plane * kp[5] + i) * kp[6] + j;
            s += a[kp[15] + row * L + u32(oy) * kp[14] + u32(ox)];
        }
    }
    out[kp[16] + e] = s;
}

// Index of the first maximum of each window (padding never wins); NaN wins.
@compute @workgroup_size(256)
fn pool_argmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = gid(wid, nwg, lid);
    if (e >= kp[0]) { return; }
    let co = coords(e, kp[13], kp[14]);
    let plane = co.x;
    let oy = co.y;
    let ox = co.z;
    let base = kp[15] + plane * kp[3] * kp[4];
    var best = -1;
    var bv = 0.0;
    for (var i = 0u; i < kp[5]; i++) {
        for (var j = 0u; j < kp[6]; j++) {
            let p = tap(oy, ox, i, j);
            if (p < 0) { continue; }
            let v = a[base + u32(p)];
            let v_nan = v != v;
            let b_nan = bv != bv;
            if (best < 0 || v > bv || (v_nan && !b_nan)) {
                best = p;
                bv = v;
            }
        }
    }
    out[kp[16] + e] = bitcast<f32>(best); // a u32 index, stored as its bits
}

// Average over the window, padding counted in the divisor.
@compute @workgroup_size(256)
fn avg_pool(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = gid(wid, nwg, lid);
    if (e >= kp[0]) { return; }
    let co = coords(e, kp[13], kp[14]);
    let plane = co.x;
    let oy = co.y;
    let ox = co.z;
    let base = kp[15] + plane * kp[3] * kp[4];
    var s = 0.0;
    for (var i = 0u; i < kp[5]; i++) {
        for (var j = 0u; j < kp[6]; j++) {
            let p = tap(oy, ox, i, j);
            if (p >= 0) {
                s += a[base + u32(p)];
            }
        }
    }
    out[kp[16] + e] = s / f32(kp[5] * kp[6]);
}

// dx pixel = Σ over covering windows of dy / (KH·KW); a = dy (N, C, OH, OW).
@compute @workgroup_size(256)
fn avg_pool_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = gid(wid, nwg, lid);
    if (e >= kp[0]) { return; }
    let co = coords(e, kp[3], kp[4]);
    let plane = co.x;
    let y = co.y;
    let x = co.z;
    let L = kp[13] * kp[14];
    let area = f32(kp[5] * kp[6]);
    var s = 0.0;
    for (var i = 0u; i < kp[5]; i++) {
        let oy = covering(y, i, kp[7], kp[9], kp[11], kp[13]);
        if (oy < 0) { continue; }
        for (var j = 0u; j < kp[6]; j++) {
            let ox = covering(x, j, kp[8], kp[10], kp[12], kp[14]);
            if (ox < 0) { continue; }
            s += a[kp[15] + plane * L + u32(oy) * kp[14] + u32(ox)] / area;
        }
    }
    out[kp[16] + e] = s;
}

// y = x[plane, idx]: a = x (N, C, H, W), b = idx (N, C, OH, OW), u32 bits.
@compute @workgroup_size(256)
fn gather_planes(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = gid(wid, nwg, lid);
    if (e >= kp[0]) { return; }
    let L = kp[13] * kp[14];
    let plane = e / L;
    out[kp[16] + e] = a[kp[15] + plane * kp[3] * kp[4] + bitcast<u32>(b[kp[17] + e])];
}

// dx pixel = Σ dy of the windows (covering it, in row-major order) whose argmax it is:
// a = dy (N, C, OH, OW), b = idx.
@compute @workgroup_size(256)
fn scatter_planes(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = gid(wid, nwg, lid);
    if (e >= kp[0]) { return; }
    let co = coords(e, kp[3], kp[4]);
    let plane = co.x;
    let y = co.y;
    let x = co.z;
    let pix = y * kp[4] + x;
    let L = kp[13] * kp[14];
    // Windows covering (y, x): oy with oy·S − P ≤ y < oy·S − P + K.
    let oy_lo = select(0u, (y + kp[9] + 1u - kp[5] + kp[7] - 1u) / kp[7], y + kp[9] + 1u > kp[5]);
    let oy_hi = min((y + kp[9]) / kp[7] + 1u, kp[13]);
    let ox_lo = select(0u, (x + kp[10] + 1u - kp[6] + kp[8] - 1u) / kp[8], x + kp[10] + 1u > kp[6]);
    let ox_hi = min((x + kp[10]) / kp[8] + 1u, kp[14]);
    var s = 0.0;
    for (var oy = oy_lo; oy < oy_hi; oy++) {
        for (var ox = ox_lo; ox < ox_hi; ox++) {
            let o = plane * L + oy * kp[14] + ox;
            if (bitcast<u32>(b[kp[17] + o]) == pix) {
                s += a[kp[15] + o];
            }
        }
    }
    out[kp[16] + e] = s;
}
