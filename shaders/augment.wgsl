// augment.wgsl — random augmentation of a batch of images (N, C, H, W): translation (a random
// crop of the padded image), rotation, horizontal flip, contrast and brightness jitter, noise.
//
// Bindings: a the images; out the augmented images (the same shape). One invocation computes one
// output element. Parameter block `pm: Augment`, mirrored field for field by
// src/backend/wgpu/kernels/augment.rs. Each image's choices are hashes of (seed, step, key,
// image) — dropout's key chain, `per_step.seed` and `per_step.step` — and the arithmetic is the
// CPU reference's (`augment` in src/backend/cpu/kernels.rs) operation for operation: integer
// choices are identical, sine and cosine are the same polynomial (WGSL's `sin`/`cos` may be off
// by 2⁻¹¹), and the noise is an exact sum of twelve 16-bit uniforms.

struct Augment {
    invocations: u32,
    c: u32,
    h: u32,
    w: u32,
    a_off: u32,
    out_off: u32,
    shift: u32,
    flip: u32,
    key: u32,
    rotate: f32,
    brightness: f32,
    contrast: f32,
    noise: f32,
    fill: f32,
    center: f32,
}

@group(0) @binding(0) var<storage, read> pm: Augment;

{{STORAGE}}

// The top 24 bits of a hash as a uniform in [0, 1), exact in f32 (rng::unit24).
fn unit24(h: u32) -> f32 {
    return f32(h >> 8u) * (1.0 / 16777216.0);
}

// Image pixel (y, x) of the plane starting at `base`, or the fill value outside the image.
fn pixel(base: u32, y: i32, x: i32) -> f32 {
    if (y < 0 || x < 0 || y >= i32(pm.h) || x >= i32(pm.w)) {
        return pm.fill;
    }
    return ld_a(base + u32(y) * pm.w + u32(x));
}

@compute @workgroup_size(256)
fn augment(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = gid(wid, nwg, lid);
    if (e >= pm.invocations) { return; }
    let ox = e % pm.w;
    let oy = (e / pm.w) % pm.h;
    let plane = e / (pm.w * pm.h);
    let img = plane / pm.c;
    let k = hash32(pm.key + hash32(per_step.step + hash32(per_step.seed)));
    let h0 = 8u * img;
    let span = 2u * pm.shift + 1u;
    let dx = i32(hash32(h0 ^ k) % span) - i32(pm.shift);
    let dy = i32(hash32((h0 + 1u) ^ k) % span) - i32(pm.shift);
    let flip = pm.flip != 0u && (hash32((h0 + 2u) ^ k) & 1u) == 1u;
    let xf = select(i32(ox), i32(pm.w) - 1 - i32(ox), flip);
    let xs = xf - dx;
    let ys = i32(oy) - dy;
    let base = pm.a_off + plane * pm.h * pm.w;
    var v: f32;
    if (pm.rotate > 0.0) {
        let t = pm.rotate * (2.0 * unit24(hash32((h0 + 3u) ^ k)) - 1.0);
        let t2 = t * t;
        let sn = t * (1.0 + t2 * (-0.16666667 + t2 * (0.008333334 + t2 * (-0.0001984127 + t2 * (2.7557319e-6 + t2 * -2.5052108e-8)))));
        let cs = 1.0 + t2 * (-0.5 + t2 * (0.041666668 + t2 * (-0.0013888889 + t2 * (2.4801587e-5 + t2 * -2.755732e-7))));
        let cx = f32(pm.w - 1u) * 0.5;
        let cy = f32(pm.h - 1u) * 0.5;
        let du = f32(xs) - cx;
        let dv = f32(ys) - cy;
        let sx = cx + cs * du + sn * dv;
        let sy = cy - sn * du + cs * dv;
        let x0 = floor(sx);
        let y0 = floor(sy);
        let fx = sx - x0;
        let fy = sy - y0;
        let ix = i32(x0);
        let iy = i32(y0);
        let top = (1.0 - fx) * pixel(base, iy, ix) + fx * pixel(base, iy, ix + 1);
        let bottom = (1.0 - fx) * pixel(base, iy + 1, ix) + fx * pixel(base, iy + 1, ix + 1);
        v = (1.0 - fy) * top + fy * bottom;
    } else {
        v = pixel(base, ys, xs);
    }
    let brightness = pm.brightness * (2.0 * unit24(hash32((h0 + 4u) ^ k)) - 1.0);
    let contrast = 1.0 + pm.contrast * (2.0 * unit24(hash32((h0 + 5u) ^ k)) - 1.0);
    var o = contrast * (v - pm.center) + pm.center + brightness;
    if (pm.noise > 0.0) {
        let kn = hash32(k ^ 0x9e3779b9u);
        var s = 0u;
        for (var m = 0u; m < 6u; m++) {
            let h = hash32((6u * e + m) ^ kn);
            s += (h & 0xffffu) + (h >> 16u);
        }
        o += pm.noise * (f32(s) * (1.0 / 65536.0) - 6.0);
    }
    st_out(pm.out_off + e, o);
}
