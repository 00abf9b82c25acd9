// matmul.wgsl — batched C = op(A) · op(B), transposes expressed as strides.
//
// Bindings: a = A, b = B, out = C. Dispatch (⌈N/64⌉, ⌈M/64⌉, batch). A 16×16 workgroup computes
// a 64×64 tile of C; each invocation accumulates a 4×4 register block. K advances in steps of
// 16 through tiles of A and B staged in workgroup memory; loads outside the matrix read zero,
// so any M, N, K works.
//
// When A is row-major with K, its offset and batch stride multiples of 4 (p.vec_a = 1), each
// invocation stages its share of the A tile as one vec4 load through `a4`, the same buffer
// viewed as vec4; likewise B through `b4` when B is row-major and N, offset and batch stride are
// multiples of 4 (p.vec_b = 1). Otherwise it makes four scalar (coalesced) loads.
//
// Parameter block (binding 0), mirrored by src/backend/wgpu/kernels/matmul.rs: rsa/csa and
// rsb/csb are the row and column strides of op(A) and op(B); a_batch, b_batch the elements
// between batches (0: shared by every batch).

struct Matmul {
    m: u32,
    n: u32,
    k: u32,
    a_off: u32,
    b_off: u32,
    c_off: u32,
    rsa: u32,
    csa: u32,
    rsb: u32,
    csb: u32,
    a_batch: u32,
    b_batch: u32,
    batch: u32,
    vec_a: u32,
    vec_b: u32,
}

@group(0) @binding(0) var<storage, read> p: Matmul;

{{STORAGE}}

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;

var<workgroup> As: array<array<f32, 65>, 16>; // [k][m], padded against bank conflicts
var<workgroup> Bs: array<array<f32, 64>, 16>; // [k][n]

@compute @workgroup_size(16, 16)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let M = p.m;
    let N = p.n;
    let K = p.k;
    let a0 = p.a_off + wid.z * p.a_batch;
    let b0 = p.b_off + wid.z * p.b_batch;
    let c0 = p.c_off + wid.z * M * N;
    let rsa = p.rsa;
    let csa = p.csa;
    let rsb = p.rsb;
    let csb = p.csb;
    let tx = lid3.x;
    let ty = lid3.y;
    let t = ty * 16u + tx;
    let row0 = wid.y * TM;
    let col0 = wid.x * TN;
    var acc: array<array<f32, 4>, 4>;
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            acc[i][j] = 0.0;
        }
    }
    for (var k0 = 0u; k0 < K; k0 += TK) {
        // Stage a 64×16 tile of A and a 16×64 tile of B: 4 elements of each per invocation.
        if (p.vec_a != 0u) {
            let am = t / 4u;
            let ak = (t % 4u) * 4u;
            let gm = row0 + am;
            let gk = k0 + ak;
            var v = vec4<f32>(0.0);
            if (gm < M && gk < K) {
                v = ld_a4((a0 + gm * rsa + gk) / 4u);
            }
            As[ak][am] = v.x;
            As[ak + 1u][am] = v.y;
            As[ak + 2u][am] = v.z;
            As[ak + 3u][am] = v.w;
        } else {
            for (var l = 0u; l < 4u; l++) {
                let e = t + l * 256u;
                let am = e / TK;
                let ak = e % TK;
                let gm = row0 + am;
                let gk = k0 + ak;
                As[ak][am] = select(0.0, ld_a(a0 + gm * rsa + gk * csa), gm < M && gk < K);
            }
        }
        if (p.vec_b != 0u) {
            let bk = t / 16u;
            let bn = (t % 16u) * 4u;
            let gk = k0 + bk;
            let gn = col0 + bn;
            var v = vec4<f32>(0.0);
            if (gk < K && gn < N) {
                v = ld_b4((b0 + gk * rsb + gn) / 4u);
            }
            Bs[bk][bn] = v.x;
            Bs[bk][bn + 1u] = v.y;
            Bs[bk][bn + 2u] = v.z;
            Bs[bk][bn + 3u] = v.w;
        } else {
            for (var l = 0u; l < 4u; l++) {
                let e = t + l * 256u;
                let bk = e / TN;
                let bn = e % TN;
                let gk2 = k0 + bk;
                let gn = col0 + bn;
                Bs[bk][bn] = select(0.0, ld_b(b0 + gk2 * rsb + gn * csb), gk2 < K && gn < N);
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var av: array<f32, 4>;
            var bv: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                av[i] = As[kk][ty + 16u * i];
                bv[i] = Bs[kk][tx + 16u * i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i][j] = fma(av[i], bv[j], acc[i][j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let r = row0 + ty + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let cidx = col0 + tx + 16u * j;
            if (r < M && cidx < N) {
                st_out(c0 + r * N + cidx, acc[i][j]);
            }
        }
    }
}

// The same product for skinny shapes (M or N below one tile, or a short K): no workgroup
// memory or barriers; each invocation accumulates a 4×4 block of C in registers, reading 8
// elements per 16 multiply-adds. Its rows are 4 consecutive rows of C; its columns are
// cb, cb + NB, cb + 2·NB, cb + 3·NB (NB = ⌈N/4⌉), so neighbouring invocations read and write
// neighbouring columns. Indices past the edge are clamped for loads and skipped for stores.
// Dispatched 1-D over batch·⌈M/4⌉·NB; parameters as above (vec_a and vec_b unused).
@compute @workgroup_size(256)
fn matmul_small(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = gid(wid, nwg, lid);
    let M = p.m;
    let N = p.n;
    let K = p.k;
    let MB = (M + 3u) / 4u;
    let NB = (N + 3u) / 4u;
    if (e >= p.batch * MB * NB) { return; }
    let cb = e % NB;
    let rest = e / NB;
    let r0 = (rest % MB) * 4u;
    let z = rest / MB;
    let rows = vec4<u32>(r0, r0 + 1u, r0 + 2u, r0 + 3u);
    let cols = vec4<u32>(cb, cb + NB, cb + 2u * NB, cb + 3u * NB);
    var pa = p.a_off + z * p.a_batch + min(rows, vec4<u32>(M - 1u)) * p.rsa;
    var pb = p.b_off + z * p.b_batch + min(cols, vec4<u32>(N - 1u)) * p.csb;
    let sa = p.csa;
    let sb = p.rsb;
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    for (var k = 0u; k < K; k++) {
        let av = vec4<f32>(ld_a(pa.x), ld_a(pa.y), ld_a(pa.z), ld_a(pa.w));
        let bv = vec4<f32>(ld_b(pb.x), ld_b(pb.y), ld_b(pb.z), ld_b(pb.w));
        c0 = fma(vec4<f32>(av.x), bv, c0);
        c1 = fma(vec4<f32>(av.y), bv, c1);
        c2 = fma(vec4<f32>(av.z), bv, c2);
        c3 = fma(vec4<f32>(av.w), bv, c3);
        pa += vec4<u32>(sa);
        pb += vec4<u32>(sb);
    }
    let base = p.c_off + z * M * N;
    let acc = array<vec4<f32>, 4>(c0, c1, c2, c3);
    for (var i = 0u; i < 4u; i++) {
        if (rows[i] >= M) { break; }
        for (var j = 0u; j < 4u; j++) {
            if (cols[j] < N) {
                st_out(base + rows[i] * N + cols[j], acc[i][j]);
            }
        }
    }
}
