// matmul.wgsl — batched C = op(A) · op(B), transposes expressed as strides.
//
// Bindings: a = A, b = B, out = C. Three entry points, each in variants chosen by
// pipeline-overridable constants (src/backend/wgpu/kernels/matmul.rs lists the variants, and the
// autotuner picks one per product shape):
//
// `matmul`: dispatch (⌈N/TN⌉, ⌈M/TM⌉, batch). A (TN/RN)×(TM/RM) workgroup computes a TM×TN
// tile of C; each invocation accumulates an RM×RN register block. K advances in steps of TK
// through tiles of A and B staged in workgroup memory; loads outside the matrix read zero, so
// any M, N, K works. Today's default: 64×64×16 tiles, 4×4 blocks, 16×16 invocations.
//
// When A is row-major with K, its offset and batch stride multiples of 4 (VA = 1), the A tile
// is staged in vec4 loads through `a4`, the same buffer viewed as vec4; likewise B through `b4`
// when B is row-major and N, offset and batch stride are multiples of 4 (VB = 1). Otherwise
// scalar (coalesced) loads. Every variant has TK and TN multiples of 4 for this. VA and VB are
// pipeline constants (the host sets them from the parameter block's vec_a and vec_b), so the
// path not taken is compiled out: llvmpipe, like any SIMD-lane compiler that cannot prove a
// branch uniform, would otherwise run both sides under a mask.
//
// `matmul_small` and `matmul_vec4` (below): no workgroup memory; a block of C per invocation,
// held in named registers. Their bodies are generated (src/backend/wgpu/kernels/matmul.rs),
// unrolled up to the largest block with each row and column guarded by a test on the override
// constants that compiles away: loops over an override bound with an array of accumulators
// were left as loops by llvmpipe, whose arrays indexed by a loop counter live in memory and
// cost a gather or scatter per lane for every multiply-add (the 1024³ product ran 2.7× slower).
// (`matmul`'s loops over TK-staged tiles fare no better generated this way: measured, 0.64
// GFLOP/s at 512³ either way, so it stays a loop.)
//
// Every variant accumulates each element of C as fma(a[k], b[k], acc) for k = 0, 1, ..., K − 1
// from acc = 0 (a tile's zero padding adds fma(0, 0, acc) = acc), so all variants give the
// same bits and a tuned program's results do not depend on the choice.
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

// Tile of C (TM×TN), K step (TK) and register block (RM×RN, at most 8×8) of `matmul`. TM/RM and
// TN/RN must divide exactly, and the workgroup (TN/RN)·(TM/RM) fit the adapter's limits.
override TM: u32 = 64u;
override TN: u32 = 64u;
override TK: u32 = 16u;
override RM: u32 = 4u;
override RN: u32 = 4u;
// 1: A (VA), B (VB) read through their vec4 views; see the header.
override VA: u32 = 0u;
override VB: u32 = 0u;
// Derived from the above; never set by the host. WGSL lets an override size a workgroup array
// only at the outer level, so the tiles are flat arrays indexed [k·(TM + 1) + m] and [k·TN + n]
// (A's rows padded by one against bank conflicts).
override WX: u32 = TN / RN;
override WY: u32 = TM / RM;
override A_TILE: u32 = TK * (TM + 1u);
override B_TILE: u32 = TK * TN;

var<workgroup> As: array<f32, A_TILE>;
var<workgroup> Bs: array<f32, B_TILE>;

@compute @workgroup_size(WX, WY)
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
    let t = ty * WX + tx;
    let threads = WX * WY;
    let row0 = wid.y * TM;
    let col0 = wid.x * TN;
    let AP = TM + 1u;
    // Zero-initialised; only the first RM·RN are used (a constant size: function-scope arrays
    // cannot be override-sized; the compiler drops the unused ones once the loops unroll).
    var acc: array<f32, 64>;
    for (var k0 = 0u; k0 < K; k0 += TK) {
        // Stage a TM×TK tile of A and a TK×TN tile of B.
        if (VA != 0u) {
            for (var e = t; e < TM * TK / 4u; e += threads) {
                let am = e / (TK / 4u);
                let ak = (e % (TK / 4u)) * 4u;
                let gm = row0 + am;
                let gk = k0 + ak;
                var v = vec4<f32>(0.0);
                if (gm < M && gk < K) {
                    v = ld_a4((a0 + gm * rsa + gk) / 4u);
                }
                As[ak * AP + am] = v.x;
                As[(ak + 1u) * AP + am] = v.y;
                As[(ak + 2u) * AP + am] = v.z;
                As[(ak + 3u) * AP + am] = v.w;
            }
        } else {
            for (var e = t; e < TM * TK; e += threads) {
                let am = e / TK;
                let ak = e % TK;
                let gm = row0 + am;
                let gk = k0 + ak;
                As[ak * AP + am] = select(0.0, ld_a(a0 + gm * rsa + gk * csa), gm < M && gk < K);
            }
        }
        if (VB != 0u) {
            for (var e = t; e < TK * TN / 4u; e += threads) {
                let bk = e / (TN / 4u);
                let bn = (e % (TN / 4u)) * 4u;
                let gk = k0 + bk;
                let gn = col0 + bn;
                var v = vec4<f32>(0.0);
                if (gk < K && gn < N) {
                    v = ld_b4((b0 + gk * rsb + gn) / 4u);
                }
                Bs[bk * TN + bn] = v.x;
                Bs[bk * TN + bn + 1u] = v.y;
                Bs[bk * TN + bn + 2u] = v.z;
                Bs[bk * TN + bn + 3u] = v.w;
            }
        } else {
            for (var e = t; e < TK * TN; e += threads) {
                let bk = e / TN;
                let bn = e % TN;
                let gk = k0 + bk;
                let gn = col0 + bn;
                Bs[bk * TN + bn] = select(0.0, ld_b(b0 + gk * rsb + gn * csb), gk < K && gn < N);
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var av: array<f32, 8>;
            var bv: array<f32, 8>;
            for (var i = 0u; i < RM; i++) {
                av[i] = As[kk * AP + ty + WY * i];
            }
            for (var j = 0u; j < RN; j++) {
                bv[j] = Bs[kk * TN + tx + WX * j];
            }
            for (var i = 0u; i < RM; i++) {
                for (var j = 0u; j < RN; j++) {
                    acc[i * RN + j] = fma(av[i], bv[j], acc[i * RN + j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < RM; i++) {
        let r = row0 + ty + WY * i;
        for (var j = 0u; j < RN; j++) {
            let cidx = col0 + tx + WX * j;
            if (r < M && cidx < N) {
                st_out(c0 + r * N + cidx, acc[i * RN + j]);
            }
        }
    }
}

// Rows (SM, at most 8) and columns (SN, at most 4) of C per invocation of `matmul_small`.
override SM: u32 = 4u;
override SN: u32 = 4u;

// The same product for skinny shapes (M or N below one tile, or a short K): no workgroup
// memory or barriers; each invocation accumulates an SM×SN block of C in registers, reading
// SM + SN elements per SM·SN multiply-adds. Its rows are SM consecutive rows of C; its columns
// are cb, cb + NB, cb + 2·NB, ... (NB = ⌈N/SN⌉), so neighbouring invocations read and write
// neighbouring columns. Indices past the edge are clamped for loads and skipped for stores.
// Dispatched 1-D over batch·⌈M/SM⌉·NB; parameters as above (VA and VB unused).
{{SMALL}}

// Rows (VM, at most 8) and vec4 column groups (VN, at most 8) of C per invocation of
// `matmul_vec4`.
override VM: u32 = 4u;
override VN: u32 = 1u;
// Row blocks per workgroup of `matmul_vec4`'s 2-D tiles (a power of two up to 256), or 0 for the
// 1-D order (every column group of a row block, then the next row block).
override WR: u32 = 0u;

// The product with B read four columns at a time: each invocation accumulates VM rows × VN
// groups of four consecutive columns of C as vec4 registers, with no workgroup memory. A row of
// op(B) at step k is one vec4 load per group when B is row-major with 4-aligned N, offset and
// batch stride (VB, then through `b4`), else four clamped scalar loads; A is read one element
// per row and step, or, when row-major and aligned (VA), one vec4 per row for four steps. Per
// four steps: VM + 4·VN loads for 16·VM·VN multiply-adds. On adapters that run invocations as
// SIMD lanes (llvmpipe, and GPUs alike) a vec4 load moves four elements per lane where
// `matmul_small` moves one; on llvmpipe every load is a loop over the lanes, so the larger the
// block, the fewer loads per multiply-add. The column groups of an invocation are cb, cb + NB,
// ... (NB = ⌈⌈N/4⌉/VN⌉) in the 1-D order, so neighbouring invocations read neighbouring vec4s.
// Each element of C is still fma(a[k], b[k], acc) over k = 0, 1, ... from 0, as in every variant.

// Four consecutive elements c, c + 1, ... of op(B)'s row starting at `brow`: one vec4 load when
// B is row-major and aligned (VB), else four scalar loads clamped at column N − 1.
fn b_row4(brow: u32, c: u32) -> vec4<f32> {
    if (VB != 0u) {
        return ld_b4((brow + c) / 4u);
    }
    let cs = p.csb;
    let last = p.n - 1u;
    return vec4<f32>(
        ld_b(brow + c * cs),
        ld_b(brow + min(c + 1u, last) * cs),
        ld_b(brow + min(c + 2u, last) * cs),
        ld_b(brow + min(c + 3u, last) * cs),
    );
}

// The invocation's row block `rb`, its first column group `g0`, the step `gs` between its
// groups and its batch `z`, in the order WR selects (see above); `ok` is false past the end.
struct Vec4Block {
    rb: u32,
    g0: u32,
    gs: u32,
    z: u32,
    ok: bool,
}

fn vec4_block(e: u32, MB: u32, NV: u32) -> Vec4Block {
    var b: Vec4Block;
    if (WR == 0u) {
        // Row blocks one after another, NB invocations each.
        let NB = (NV + VN - 1u) / VN;
        b.ok = e < p.batch * MB * NB;
        b.g0 = e % NB;
        b.gs = NB;
        let rest = e / NB;
        b.rb = rest % MB;
        b.z = rest / MB;
    } else {
        // A workgroup takes a tile of WR row blocks × WC·VN column groups, so the rows of A and
        // the columns of B it streams over k stay in cache for the whole tile.
        let R = max(WR, 1u); // WR itself, in a form naga need not prove nonzero
        let WC = 256u / R;
        let TR = (MB + R - 1u) / R;
        let TC = (NV + WC * VN - 1u) / (WC * VN);
        let g = e / 256u;
        let l = e % 256u;
        b.ok = g < p.batch * TR * TC;
        b.g0 = (g % TC) * WC * VN + l % WC;
        b.gs = WC;
        let rest = g / TC;
        b.rb = (rest % TR) * R + l / WC;
        b.z = rest / TR;
    }
    return b;
}

{{VEC4}}
