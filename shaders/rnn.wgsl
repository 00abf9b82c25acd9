// rnn.wgsl — sequence kernels: the embedding lookup (gather_rows) and its adjoint
// (scatter_add_rows), and the fused LSTM and GRU cells with their backward kernels.
//
// Bindings: a, b, c inputs in the op's operand order, out. Ids (b of gather / scatter) are u32
// words read through bitcast. Dispatch: 1-D, one invocation per output element of the table for
// scatter_add_rows (each sums its column over every id equal to its row, in index order: no
// atomics, the same sum on every run), per (row, hidden unit) for the cells and per (id, column)
// for gather_rows. Shapes (PyTorch's gate orders):
//   gather_rows       a table (V, E), b ids (N)             → out (N, E)
//   scatter_add_rows  a dy (N, E),    b ids (N)             → out (V, E)
//   lstm_cell         a gates (N, 4H) i f g o, b c (N, H)   → out (2, N, H) = [h', c']
//   lstm_cell_grad    a gates, b c, c dy (2, N, H)          → out [d gates (N, 4H); d c (N, H)]
//   gru_cell          a xw (N, 3H) r z n, b hw, c h (N, H)   → out (5, N, H) = [h', r, z, n, hn]
//   gru_cell_grad     a cell (5, N, H), b h, c dy (5, N, H)  → out [d xw; d hw (N, 3H); d h (N, H)]
//
// Parameter block (binding 0), mirrored by src/backend/wgpu/kernels/rnn.rs.

struct Rnn {
    invocations: u32,
    n: u32,
    h: u32,
    v: u32,
    a_off: u32,
    b_off: u32,
    c_off: u32,
    out_off: u32,
}

@group(0) @binding(0) var<storage, read> p: Rnn;

{{STORAGE}}

fn id_at(i: u32) -> u32 {
    return bitcast<u32>(ld_b(p.b_off + i));
}

fn sigm(x: f32) -> f32 {
    // Never exp of a large positive number: no inf/inf.
    if (x >= 0.0) {
        return 1.0 / (1.0 + exp(-x));
    }
    let e = exp(x);
    return e / (1.0 + e);
}

fn tanh_(x: f32) -> f32 {
    // WGSL's tanh may overflow through exp on some drivers for large |x|; clamp where it is ±1.
    return tanh(clamp(x, -15.0, 15.0));
}

// The activated gates (i, f, g, o) of unit j of a row whose pre-activations start at `g0`.
fn lstm_gates(g0: u32, H: u32) -> vec4<f32> {
    return vec4<f32>(sigm(ld_a(g0)), sigm(ld_a(g0 + H)), tanh_(ld_a(g0 + 2u * H)), sigm(ld_a(g0 + 3u * H)));
}

@compute @workgroup_size(256)
fn gather_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= p.invocations) { return; }
    let row = i / p.h;
    let col = i % p.h;
    let id = id_at(row);
    var v = 0.0;
    if (id < p.v) {
        v = ld_a(p.a_off + id * p.h + col);
    }
    st_out(p.out_off + i, v);
}

@compute @workgroup_size(256)
fn scatter_add_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= p.invocations) { return; }
    let row = i / p.h;
    let col = i % p.h;
    var s = 0.0;
    for (var k = 0u; k < p.n; k++) {
        if (id_at(k) == row) {
            s += ld_a(p.a_off + k * p.h + col);
        }
    }
    st_out(p.out_off + i, s);
}

@compute @workgroup_size(256)
fn lstm_cell(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let k = gid(wid, nwg, lid);
    if (k >= p.invocations) { return; }
    let H = p.h;
    let r = k / H;
    let j = k % H;
    let a = lstm_gates(p.a_off + r * 4u * H + j, H);
    let c2 = a.y * ld_b(p.b_off + k) + a.x * a.z;
    st_out(p.out_off + k, a.w * tanh_(c2));
    st_out(p.out_off + p.invocations + k, c2);
}

@compute @workgroup_size(256)
fn lstm_cell_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let k = gid(wid, nwg, lid);
    if (k >= p.invocations) { return; }
    let H = p.h;
    let NH = p.invocations;
    let r = k / H;
    let j = k % H;
    let a = lstm_gates(p.a_off + r * 4u * H + j, H);
    let ig = a.x;
    let fg = a.y;
    let gg = a.z;
    let og = a.w;
    let c = ld_b(p.b_off + k);
    let c2 = fg * c + ig * gg;
    let tc = tanh_(c2);
    let dh = ld_c(p.c_off + k);
    let dct = ld_c(p.c_off + NH + k) + dh * og * (1.0 - tc * tc);
    let o0 = p.out_off + r * 4u * H + j;
    st_out(o0, dct * gg * ig * (1.0 - ig));
    st_out(o0 + H, dct * c * fg * (1.0 - fg));
    st_out(o0 + 2u * H, dct * ig * (1.0 - gg * gg));
    st_out(o0 + 3u * H, dh * tc * og * (1.0 - og));
    st_out(p.out_off + 4u * NH + k, dct * fg);
}

@compute @workgroup_size(256)
fn gru_cell(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let k = gid(wid, nwg, lid);
    if (k >= p.invocations) { return; }
    let H = p.h;
    let NH = p.invocations;
    let r = k / H;
    let j = k % H;
    let x0 = p.a_off + r * 3u * H + j;
    let h0 = p.b_off + r * 3u * H + j;
    let rg = sigm(ld_a(x0) + ld_b(h0));
    let z = sigm(ld_a(x0 + H) + ld_b(h0 + H));
    let hn = ld_b(h0 + 2u * H);
    let nn = tanh_(ld_a(x0 + 2u * H) + rg * hn);
    let o = p.out_off + k;
    st_out(o, (1.0 - z) * nn + z * ld_c(p.c_off + k));
    st_out(o + NH, rg);
    st_out(o + 2u * NH, z);
    st_out(o + 3u * NH, nn);
    st_out(o + 4u * NH, hn);
}

@compute @workgroup_size(256)
fn gru_cell_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let k = gid(wid, nwg, lid);
    if (k >= p.invocations) { return; }
    let H = p.h;
    let NH = p.invocations;
    let r = k / H;
    let j = k % H;
    let a = p.a_off + k;
    let rg = ld_a(a + NH);
    let z = ld_a(a + 2u * NH);
    let nn = ld_a(a + 3u * NH);
    let hn = ld_a(a + 4u * NH);
    let c = p.c_off + k;
    let d = ld_c(c);
    let dn = d * (1.0 - z) + ld_c(c + 3u * NH);
    let dz = d * (ld_b(p.b_off + k) - nn) + ld_c(c + 2u * NH);
    let dan = dn * (1.0 - nn * nn);
    let dr = dan * hn + ld_c(c + NH);
    let dar = dr * rg * (1.0 - rg);
    let daz = dz * z * (1.0 - z);
    let ox = p.out_off + r * 3u * H + j;
    let oh = ox + 3u * NH;
    st_out(ox, dar);
    st_out(ox + H, daz);
    st_out(ox + 2u * H, dan);
    st_out(oh, dar);
    st_out(oh + H, daz);
    st_out(oh + 2u * H, dan * rg + ld_c(c + 4u * NH));
    st_out(p.out_off + 6u * NH + k, d * z);
}
