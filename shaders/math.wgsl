// math.wgsl — helpers of the unary ops' WGSL formulas (`unary_wgsl` in
// src/backend/wgpu/kernels/elementwise.rs), shared by elementwise.wgsl and the generated fused
// kernels.

const PI: f32 = 3.14159265358979;

// Abramowitz & Stegun 7.1.26, |error| < 1.5e-7, as the CPU backend.
fn erf_(x: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.3275911 * abs(x));
    let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * exp(-x * x);
    return select(-y, y, x >= 0.0);
}

fn sigmoid_(x: f32) -> f32 {
    if (x >= 0.0) {
        return 1.0 / (1.0 + exp(-x));
    }
    let e = exp(x);
    return e / (1.0 + e);
}

fn sign_(x: f32) -> f32 {
    return select(select(0.0, -1.0, x < 0.0), 1.0, x > 0.0);
}
