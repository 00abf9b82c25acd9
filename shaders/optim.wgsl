// optim.wgsl — the fused optimiser step: one dispatch updates every trainable parameter in the
// flat parameter buffer.
//
// Bindings (the update layout; state2 at 7 for centered RMSProp): 2 grads (read), 3 gradient statistics (read: Σg² at stats_off,
// then the count of non-finite gradients and loss), 4 params, 5 state0, 6 state1 (read-write).
// When that count is not zero the step is skipped: nothing is written. Gradients are first
// multiplied by per_step.grad_scale (1/(k·S) for k accumulated micro-batches and loss scale S).
// One invocation updates one element; a binary search over
// the sorted segment table finds its parameter (elements outside every segment — padding,
// frozen parameters — are left alone). Per-step coefficients come from `per_step`, derived in
// f64 on the host exactly as for the CPU backend.
//
// Parameter block (binding 0), mirrored by src/backend/wgpu/kernels/optim.rs: the `Update`
// header, then one `Segment` per parameter, sorted by offset.
//
// Entry points: one per update rule, `update_<rule>`, generated in place of the placeholder at
// the end of this file from the exhaustive Rust match `rule_wgsl` (kernels/optim.rs). Each
// calls `element` below, then runs its rule's statements; there is no rule `switch`, so no
// rule can fall through to another's formula.

struct Segment {
    offset: u32,
    len: u32,
    decay: u32,
}

struct Update {
    nseg: u32,
    clip_on: u32,
    clip: f32,
    norm_on: u32,
    max_norm: f32,
    weight_decay: f32,
    stats_off: u32,
    n: u32,
    segments: array<Segment>,
}

@group(0) @binding(0) var<storage, read> p: Update;
@group(0) @binding(2) var<storage, read> grads: array<f32>;
@group(0) @binding(3) var<storage, read> stats: array<f32>;
@group(0) @binding(4) var<storage, read_write> params: array<f32>;
@group(0) @binding(5) var<storage, read_write> state0: array<f32>;
@group(0) @binding(6) var<storage, read_write> state1: array<f32>;
@group(0) @binding(7) var<storage, read_write> state2: array<f32>;

// Element i's gradient after norm and value clipping, plus λ·w unless weight decay is
// decoupled, and its segment's λ (0 where decay does not apply). `live` is false outside every
// segment.
struct Element {
    live: bool,
    g: f32,
    wd: f32,
}

fn element(i: u32, decoupled: bool) -> Element {
    var e = Element(false, 0.0, 0.0);
    if (i >= p.n) { return e; }
    // Last segment whose offset ≤ i.
    var lo = 0u;
    var hi = p.nseg;
    while (hi - lo > 1u) {
        let mid = (lo + hi) / 2u;
        if (p.segments[mid].offset <= i) { lo = mid; } else { hi = mid; }
    }
    let seg = p.segments[lo];
    if (i < seg.offset || i >= seg.offset + seg.len) { return e; }
    // A non-finite gradient or loss somewhere: skip the whole update.
    if (stats[p.stats_off + 1u] != 0.0) { return e; }
    e.live = true;
    e.wd = select(0.0, p.weight_decay, seg.decay != 0u);
    let gs = per_step.grad_scale;
    var scale = gs;
    if (p.norm_on != 0u) {
        // ‖g‖ of the scaled gradients, from Σg² of the raw ones.
        scale = gs * min(p.max_norm / (sqrt(stats[p.stats_off]) * gs + 1e-6), 1.0);
    }
    var g = grads[i] * scale;
    if (p.clip_on != 0u) {
        g = clamp(g, -p.clip, p.clip);
    }
    if (!decoupled) {
        g += e.wd * params[i];
    }
    e.g = g;
    return e;
}

{{RULES}}
