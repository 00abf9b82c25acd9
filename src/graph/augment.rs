//! Data augmentation as an op: random translations (a random crop of the image padded by the
//! shift), horizontal flips, small rotations, brightness and contrast jitter and noise, applied
//! to a batch of images `(N, C, H, W)` inside the training program. Each image's choices come
//! from the counter-based hash that dropout uses, keyed by (seed, step, node), so a run is
//! reproducible, every step sees fresh augmentations, and both backends draw the same ones.

use super::{shape_err, Graph, NodeId, Op};
use crate::error::{invalid, Result};

/// What [`Graph::augment`] does to each image; every field at its default (zero, `false`) does
/// nothing. All images of a batch get independent draws; all channels of an image the same.
///
/// In the order applied (the exact arithmetic is that of [`Op::Augment`]):
/// 1. **translation** by `dx, dy` drawn uniformly from `−shift..=shift` pixels, revealed pixels
///    set to `fill` — the same as padding the image by `shift` on every side and cropping an
///    `H×W` window at a random position;
/// 2. **rotation** about the image centre by an angle uniform in `±rotate` degrees (bilinear
///    sampling, `fill` outside the image); at most 45°;
/// 3. **horizontal flip** with probability ½ when `flip` is set (not for digits or text);
/// 4. **contrast** `c` uniform in `1 ± contrast` and **brightness** `b` uniform in
///    `±brightness`: `v ← c·(v − center) + center + b`, where `center` is the value contrast
///    scales around (0 for standardised inputs, the data's mean otherwise);
/// 5. **noise**: `v ← v + noise·z` with `z` an independent, approximately standard normal value
///    per element (the sum of twelve uniforms minus 6: mean 0, variance 1, within ±6).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Augment {
    /// Largest translation, pixels, on each axis (the padding of a random crop).
    pub shift: usize,
    /// Flip half of the images left to right.
    pub flip: bool,
    /// Largest rotation, degrees, in `[0, 45]`.
    pub rotate: f32,
    /// Largest brightness offset (added), `≥ 0`.
    pub brightness: f32,
    /// Largest relative contrast change, in `[0, 1]`.
    pub contrast: f32,
    /// Standard deviation of the added noise, `≥ 0`.
    pub noise: f32,
    /// The value of pixels translated or rotated in from outside the image (the background:
    /// 0 for images in `[0, 1]`, `−mean/std` after standardisation).
    pub fill: f32,
    /// The value contrast scales around.
    pub center: f32,
}

impl Augment {
    /// Whether it leaves every image as it is.
    pub fn is_identity(&self) -> bool {
        self.shift == 0
            && !self.flip
            && self.rotate == 0.0
            && self.brightness == 0.0
            && self.contrast == 0.0
            && self.noise == 0.0
    }

    /// The largest rotation in radians, as both backends use it (computed once, on the host).
    pub fn rotate_radians(&self) -> f32 {
        self.rotate * (std::f32::consts::PI / 180.0)
    }

    /// Every field in range for images of `h × w` pixels, or an error naming the field.
    pub fn check(&self, h: usize, w: usize) -> Result<()> {
        let op = "augment";
        if self.shift >= h.min(w) {
            return invalid(op, format!("shift {} must be below the image size {h}×{w}", self.shift));
        }
        let ranges = [
            ("rotate", self.rotate, 0.0, 45.0),
            ("brightness", self.brightness, 0.0, f32::MAX),
            ("contrast", self.contrast, 0.0, 1.0),
            ("noise", self.noise, 0.0, f32::MAX),
        ];
        for (name, v, lo, hi) in ranges {
            if !(v >= lo && v <= hi) {
                let range = if hi == f32::MAX {
                    format!("a finite number ≥ {lo}")
                } else {
                    format!("in [{lo}, {hi}]")
                };
                return invalid(op, format!("{name} must be {range}, got {v}"));
            }
        }
        for (name, v) in [("fill", self.fill), ("center", self.center)] {
            if !v.is_finite() {
                return invalid(op, format!("{name} must be finite, got {v}"));
            }
        }
        Ok(())
    }
}

impl Graph {
    /// Augment a batch of images `x: (N, C, H, W)` (see [`Augment`]), with fresh random choices
    /// every training step. Use it on the data, in training graphs only: it has no gradient, so
    /// a loss that needs one through it (an augmented hidden layer) is an error at `backward`.
    /// An identity `aug` returns `x`.
    pub fn augment(&mut self, x: NodeId, aug: Augment) -> Result<NodeId> {
        self.check_ids("augment", &[x])?;
        let [_, _, h, w] = match *self.shape(x).dims() {
            [n, c, h, w] => [n, c, h, w],
            _ => {
                return Err(shape_err(
                    "augment",
                    self.describe_new(&[x]),
                    vec![self.shape(x)],
                    "expected images (N, C, H, W)",
                ))
            }
        };
        aug.check(h, w)?;
        if aug.is_identity() {
            return Ok(x);
        }
        let key = self.nodes().len() as u32;
        let shape = self.shape(x).clone();
        self.push(Op::Augment { aug, key }, vec![x], shape)
    }
}
