// conv.wgsl — im2col / col2im for convolution, and max / average pooling with their gradients,
// on (N, C, H, W) planes.
//
// Bindings: a, b read-only inputs; out written. One invocation computes one output element,
// except im2col, where one invocation writes the KH·KW taps of one output pixel.
// Adjoint kernels (col2im, scatter_planes, avg_pool_grad) are written as gathers: each input
// pixel sums the windows that cover it, in a fixed order, so no atomics are needed.
//
// Parameter block (binding 0), mirrored by src/backend/wgpu/kernels/conv.rs.

struct Conv {
    invocations: u32,
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    ph: u32,
    pw: u32,
    dh: u32,
    dw: u32,
    oh: u32,
    ow: u32,
    a_off: u32,
    out_off: u32,
    b_off: u32,
}

@group(0) @binding(0) var<storage, read> p: Conv;

// The window's size and stride, also set as override constants by the host (the same values as
// p.kh, p.kw, p.sh, p.sw): the tap loops then have constant trip counts, which compilers unroll,
// and the divisions by the stride are by constants.
override KH: u32 = 1u;
override KW: u32 = 1u;
override SH: u32 = 1u;
override SW: u32 = 1u;

{{STORAGE}}

// Input position (or -1) read by tap (i, j) of output (oy, ox).
fn tap(oy: u32, ox: u32, i: u32, j: u32) -> i32 {
    let iy = i32(oy * SH + i * p.dh) - i32(p.ph);
    let ix = i32(ox * SW + j * p.dw) - i32(p.pw);
    if (iy < 0 || ix < 0 || iy >= i32(p.h) || ix >= i32(p.w)) {
        return -1;
    }
    return iy * i32(p.w) + ix;
}

// The output index along one axis whose tap k covers input position p, or -1.
fn covering(p: u32, k: u32, s: u32, pad: u32, d: u32, on: u32) -> i32 {
    let num = i32(p + pad) - i32(k * d);
    if (num < 0) {
        return -1;
    }
    var o = num;
    if (s != 1u) { // uniform: stride-1 windows need no division
        o = i32(udiv(u32(num), s));
        if (o * i32(s) != num) {
            return -1;
        }
    }
    return select(-1, o, o < i32(on));
}

// (plane, row, column) of element e of a stack of rows×cols planes, with two divisions.
fn coords(e: u32, rows: u32, cols: u32) -> vec3<u32> {
    let q = udiv(e, cols);
    let plane = udiv(q, rows);
    return vec3<u32>(plane, q - plane * rows, e - q * cols);
}

// cols (N, C·KH·KW, OH·OW) from x (N, C, H, W). One invocation per (image, channel, output
// pixel) writes that pixel's KH·KW taps (p.invocations counts invocations): its index is split into
// coordinates once rather than once per element, and neighbouring invocations write
// neighbouring columns.
@compute @workgroup_size(256)
fn im2col(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = gid(wid, nwg, lid);
    if (e >= p.invocations) { return; }
    let H = i32(p.h);
    let W = i32(p.w);
    let L = p.oh * p.ow;
    let plane = udiv(e, L); // n·C + c
    let l = e - plane * L;
    let oy = udiv(l, p.ow);
    let ox = l - oy * p.ow;
    let src = p.a_off + plane * p.h * p.w;
    var dst = p.out_off + plane * KH * KW * L + l;
    let y0 = i32(oy * SH) - i32(p.ph);
    let x0 = i32(ox * SW) - i32(p.pw);
    for (var i = 0u; i < KH; i++) {
        let iy = y0 + i32(i * p.dh);
        let row_in = iy >= 0 && iy < H;
        for (var j = 0u; j < KW; j++) {
            let ix = x0 + i32(j * p.dw);
            var v = 0.0;
            if (row_in && ix >= 0 && ix < W) {
                v = ld_a(src + u32(iy * W + ix));
            }
            st_out(dst, v);
            dst += L;
        }
    }
}

// x (N, C, H, W) += cols, gathered per pixel over taps (i, j) in order.
@compute @workgroup_size(256)
fn col2im(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = gid(wid, nwg, lid);
    if (e >= p.invocations) { return; }
    let co = coords(e, p.h, p.w);
    let plane = co.x;
    let y = co.y;
    let x = co.z;
    let L = p.oh * p.ow;
    var s = 0.0;
    for (var i = 0u; i < KH; i++) {
        let oy = covering(y, i, SH, p.ph, p.dh, p.oh);
        if (oy < 0) { continue; }
        for (var j = 0u; j < KW; j++) {
            let ox = covering(x, j, SW, p.pw, p.dw, p.ow);
            if (ox < 0) { continue; }
            let row = (plane * KH + i) * KW + j;
            s += ld_a(p.a_off + row * L + u32(oy) * p.ow + u32(ox));
        }
    }
    st_out(p.out_off + e, s);
}

// Index of the first maximum of each window (padding never wins); NaN wins.
@compute @workgroup_size(256)
fn pool_argmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = gid(wid, nwg, lid);
    if (e >= p.invocations) { return; }
    let co = coords(e, p.oh, p.ow);
    let plane = co.x;
    let oy = co.y;
    let ox = co.z;
    let base = p.a_off + plane * p.h * p.w;
    var best = -1;
    var bv = 0.0;
    for (var i = 0u; i < KH; i++) {
        for (var j = 0u; j < KW; j++) {
            let pos = tap(oy, ox, i, j);
            if (pos < 0) { continue; }
            let v = ld_a(base + u32(pos));
            let v_nan = v != v;
            let b_nan = bv != bv;
            if (best < 0 || v > bv || (v_nan && !b_nan)) {
                best = pos;
                bv = v;
            }
        }
    }
    st_out(p.out_off + e, bitcast<f32>(best)); // a u32 index, stored as its bits
    // Merged with the gather_planes that reads the index (kernels::conv::pool_with_values), the
    // window's maximum too, read at the same index as that gather: a no-op otherwise.
    st_value(e, base + bitcast<u32>(best));
}

// Average over the window, padding counted in the divisor.
@compute @workgroup_size(256)
fn avg_pool(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = gid(wid, nwg, lid);
    if (e >= p.invocations) { return; }
    let co = coords(e, p.oh, p.ow);
    let plane = co.x;
    let oy = co.y;
    let ox = co.z;
    let base = p.a_off + plane * p.h * p.w;
    var s = 0.0;
    for (var i = 0u; i < KH; i++) {
        for (var j = 0u; j < KW; j++) {
            let pos = tap(oy, ox, i, j);
            if (pos >= 0) {
                s += ld_a(base + u32(pos));
            }
        }
    }
    st_out(p.out_off + e, s / f32(KH * KW));
}

// dx pixel = Σ over covering windows of dy / (KH·KW); a = dy (N, C, OH, OW).
@compute @workgroup_size(256)
fn avg_pool_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = gid(wid, nwg, lid);
    if (e >= p.invocations) { return; }
    let co = coords(e, p.h, p.w);
    let plane = co.x;
    let y = co.y;
    let x = co.z;
    let L = p.oh * p.ow;
    let area = f32(KH * KW);
    var s = 0.0;
    for (var i = 0u; i < KH; i++) {
        let oy = covering(y, i, SH, p.ph, p.dh, p.oh);
        if (oy < 0) { continue; }
        for (var j = 0u; j < KW; j++) {
            let ox = covering(x, j, SW, p.pw, p.dw, p.ow);
            if (ox < 0) { continue; }
            s += ld_a(p.a_off + plane * L + u32(oy) * p.ow + u32(ox)) / area;
        }
    }
    st_out(p.out_off + e, s);
}

// y = x[plane, idx]: a = x (N, C, H, W), b = idx (N, C, OH, OW).
@compute @workgroup_size(256)
fn gather_planes(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = gid(wid, nwg, lid);
    if (e >= p.invocations) { return; }
    let L = p.oh * p.ow;
    let plane = udiv(e, L);
    st_out(p.out_off + e, ld_a(p.a_off + plane * p.h * p.w + bitcast<u32>(ld_b(p.b_off + e))));
}

// dx pixel = Σ dy of the windows (covering it, in row-major order) whose argmax it is:
// a = dy (N, C, OH, OW), b = idx.
@compute @workgroup_size(256)
fn scatter_planes(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = gid(wid, nwg, lid);
    if (e >= p.invocations) { return; }
    let co = coords(e, p.h, p.w);
    let plane = co.x;
    let y = co.y;
    let x = co.z;
    let pix = y * p.w + x;
    let L = p.oh * p.ow;
    // Windows covering (y, x): oy with oy·S − P ≤ y < oy·S − P + K.
    let oy_lo = select(0u, udiv(y + p.ph + 1u - KH + SH - 1u, SH), y + p.ph + 1u > KH);
    let oy_hi = min(udiv(y + p.ph, SH) + 1u, p.oh);
    let ox_lo = select(0u, udiv(x + p.pw + 1u - KW + SW - 1u, SW), x + p.pw + 1u > KW);
    let ox_hi = min(udiv(x + p.pw, SW) + 1u, p.ow);
    var s = 0.0;
    for (var oy = oy_lo; oy < oy_hi; oy++) {
        for (var ox = ox_lo; ox < ox_hi; ox++) {
            let o = plane * L + oy * p.ow + ox;
            if (bitcast<u32>(ld_b(p.b_off + o)) == pix) {
                s += ld_a(p.a_off + o);
            }
        }
    }
    st_out(p.out_off + e, s);
}
