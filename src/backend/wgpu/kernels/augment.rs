//! augment.wgsl's parameter struct and lowering: random augmentation of image batches
//! (issue 11, part 2; see [`crate::graph::Op::Augment`] for what is drawn).

use super::{u, Cost, Dispatch, Family, Grid};
use crate::backend::View;
use crate::graph::Augment as Aug;
use crate::shape::Shape;
use bytemuck::{Pod, Zeroable};

/// `augment`: images `(N, C, H, W)` → augmented images of the same shape.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Augment {
    /// Elements, N·C·H·W: one invocation each.
    pub invocations: u32,
    /// Channels.
    pub c: u32,
    /// Image height.
    pub h: u32,
    /// Image width.
    pub w: u32,
    /// Offset of the images.
    pub a_off: u32,
    /// Offset of the output.
    pub out_off: u32,
    /// Largest translation, pixels.
    pub shift: u32,
    /// 1: flip half of the images.
    pub flip: u32,
    /// Distinguishes augmentations within one step.
    pub key: u32,
    /// Largest rotation, radians (0: none).
    pub rotate: f32,
    /// Largest brightness offset.
    pub brightness: f32,
    /// Largest relative contrast change.
    pub contrast: f32,
    /// Noise standard deviation.
    pub noise: f32,
    /// Value outside the image.
    pub fill: f32,
    /// Value contrast scales around.
    pub center: f32,
}

/// The augmentation `a` keyed by `key` of images `img` from `x` into `out`.
pub fn augment(a: &Aug, key: u32, img: &Shape, x: View, out: View) -> Dispatch {
    let d = img.dims();
    let n = img.numel();
    let p = Augment {
        invocations: u(n),
        c: u(d[1]),
        h: u(d[2]),
        w: u(d[3]),
        a_off: u(x.offset),
        out_off: u(out.offset),
        shift: u(a.shift),
        flip: a.flip as u32,
        key,
        rotate: a.rotate_radians(),
        brightness: a.brightness,
        contrast: a.contrast,
        noise: a.noise,
        fill: a.fill,
        center: a.center,
    };
    // Per output pixel: the inverse transform and bilinear sample (about 40 operations), four
    // taps read (counted once: neighbours share them), one written.
    Dispatch::new(
        Family::Augment,
        "augment",
        &p,
        vec![x.buf],
        vec![out.buf],
        Grid::Elements(n),
    )
    .with_cost(Cost::new(40 * n, &[n], n))
}
