// optim.wgsl — the fused optimiser step: one dispatch updates every trainable parameter in the
// flat parameter buffer.
//
// Bindings (the update layout): 2 grads (read), 3 gradient statistics (read: Σg² at norm_off,
// the count of non-finite values after it), 4 params, 5 state0, 6 state1 (read-write). When
// that count is not zero the step is skipped: nothing is written. One invocation updates one element; a binary search over
// the sorted segment table finds its parameter (elements outside every segment — padding,
// frozen parameters — are left alone). Per-step coefficients come from `su`, derived in f64 on
// the host exactly as for the CPU backend; su[10] is the gradient scale (1/k for k accumulated
// micro-batches).
//
// kp: [rule, nseg, clip_value?, clip_value, max_norm?, max_norm, weight_decay, norm_off, n,
//      (offset, len, decay) × nseg @9]
// rule: 0 sgd, 1 momentum, 2 nesterov, 3 adagrad, 4 rmsprop, 5 adam, 6 adamw

@group(0) @binding(2) var<storage, read> grads: array<f32>;
@group(0) @binding(3) var<storage, read> norm: array<f32>;
@group(0) @binding(4) var<storage, read_write> params: array<f32>;
@group(0) @binding(5) var<storage, read_write> state0: array<f32>;
@group(0) @binding(6) var<storage, read_write> state1: array<f32>;

@compute @workgroup_size(256)
fn update(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= kp[8]) { return; }
    // Last segment whose offset ≤ i.
    var lo = 0u;
    var hi = kp[1];
    while (hi - lo > 1u) {
        let mid = (lo + hi) / 2u;
        if (kp[9u + 3u * mid] <= i) { lo = mid; } else { hi = mid; }
    }
    let off = kp[9u + 3u * lo];
    if (i < off || i >= off + kp[10u + 3u * lo]) { return; }
    if (norm[kp[7] + 1u] != 0.0) { return; }
    let gs = suf(10u);
    let wd = select(0.0, kf(6u), kp[11u + 3u * lo] != 0u);
    let rule = kp[0];
    var scale = gs;
    if (kp[4] != 0u) {
        scale = gs * min(kf(5u) / (sqrt(norm[kp[7]]) * gs + 1e-6), 1.0);
    }
    var g = grads[i] * scale;
    if (kp[2] != 0u) {
        g = clamp(g, -kf(3u), kf(3u));
    }
    if (rule != 6u) {
        g += wd * params[i];
    }
    let lr = suf(0u);
    let b1 = suf(3u);
    let omb1 = suf(4u);
    let b2 = suf(5u);
    let omb2 = suf(6u);
    let eps = suf(7u);
    switch rule {
        case 0u: {
            params[i] -= lr * g;
        }
        case 1u: {
            let v = b1 * state0[i] + g;
            state0[i] = v;
            params[i] -= lr * v;
        }
        case 2u: {
            let v = b1 * state0[i] + g;
            state0[i] = v;
            params[i] -= lr * (g + b1 * v);
        }
        case 3u: {
            let s = state0[i] + g * g;
            state0[i] = s;
            params[i] -= lr * g / (sqrt(s) + eps);
        }
        case 4u: {
            let s = b1 * state0[i] + omb1 * g * g;
            state0[i] = s;
            params[i] -= lr * g / (sqrt(s) + eps);
        }
        default: {
            var w = params[i];
            if (rule == 6u) {
                w -= lr * wd * w;
            }
            let m = b1 * state0[i] + omb1 * g;
            let v = b2 * state1[i] + omb2 * g * g;
            state0[i] = m;
            state1[i] = v;
            let mh = m * suf(8u);
            let vh = v * suf(9u);
            params[i] = w - lr * mh / (sqrt(vh) + eps);
        }
    }
}
