//! Parameter initialisers. Every one is seeded and reproducible: the values of a parameter are a
//! pure function of (store seed, parameter name, element index).
//!
//! Fan-in and fan-out follow the layouts Kiln's layers use: a rank-2 weight is `(in, out)`
//! (`y = x @ W`); a rank-4 convolution weight is `(out_c, in_c, kh, kw)`, whose fan-in is
//! `in_c·kh·kw` and fan-out `out_c·kh·kw`.

use crate::error::{invalid, Result};
use crate::rng;
use crate::shape::Shape;

/// How a parameter's initial values are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// All zeros.
    Zeros,
    /// All `c`.
    Constant(f32),
    /// Uniform in `[lo, hi)`.
    Uniform(f32, f32),
    /// Normal with mean and standard deviation.
    Normal(f32, f32),
    /// Glorot & Bengio (2010): U(±gain·√(6/(fan_in+fan_out))).
    XavierUniform(f32),
    /// Glorot & Bengio (2010): N(0, gain·√(2/(fan_in+fan_out))).
    XavierNormal(f32),
    /// He et al. (2015), for ReLU: U(±√(6/fan_in)).
    HeUniform,
    /// He et al. (2015), for ReLU: N(0, √(2/fan_in)).
    HeNormal,
    /// Kaiming-uniform for a leaky-ReLU slope `a`: U(±√(6/((1+a²)·fan_in))). `a = 0` is
    /// [`Init::HeUniform`]; `a = √5` gives U(±1/√fan_in), PyTorch's default for linear and
    /// convolution weights.
    KaimingUniform(f32),
}

impl Init {
    /// PyTorch's default weight initialiser, U(±1/√fan_in).
    pub fn torch_default() -> Init {
        Init::KaimingUniform(5f32.sqrt())
    }

    /// U(±1/√fan_in): PyTorch's default for a bias whose weight has this fan-in.
    pub fn bias_for_fan_in(fan_in: usize) -> Init {
        let b = 1.0 / (fan_in.max(1) as f32).sqrt();
        Init::Uniform(-b, b)
    }
}

/// `(fan_in, fan_out)` of a parameter of this shape (see the module documentation).
pub fn fans(shape: &Shape) -> (usize, usize) {
    let d = shape.dims();
    match d.len() {
        0 => (1, 1),
        1 => (d[0], d[0]),
        2 => (d[0], d[1]),
        _ => {
            let rf: usize = d[2..].iter().product();
            (d[1] * rf, d[0] * rf)
        }
    }
}

impl Init {
    pub(crate) fn validate(&self, name: &str) -> Result<()> {
        let ok = match *self {
            Init::Zeros | Init::HeUniform | Init::HeNormal => true,
            Init::KaimingUniform(a) => a.is_finite(),
            Init::Constant(c) => c.is_finite(),
            Init::Uniform(lo, hi) => lo.is_finite() && hi.is_finite() && lo <= hi,
            Init::Normal(m, s) => m.is_finite() && s.is_finite() && s >= 0.0,
            Init::XavierUniform(g) | Init::XavierNormal(g) => g.is_finite() && g >= 0.0,
        };
        if ok {
            Ok(())
        } else {
            invalid(
                "param",
                format!("initialiser {self:?} for `{name}` has invalid arguments"),
            )
        }
    }

    /// The initial values of a parameter named `name` with this shape, for a store seeded `seed`.
    pub fn values(&self, seed: u64, name: &str, shape: &Shape) -> Vec<f32> {
        let n = shape.numel();
        let k = rng::key(seed, name);
        let (fi, fo) = fans(shape);
        let (fi, fo) = (fi as f32, fo as f32);
        let uni = |a: f32, b: f32| -> Vec<f32> { (0..n as u64).map(|i| a + (b - a) * rng::uniform(k, i)).collect() };
        let nor = |m: f32, s: f32| -> Vec<f32> { (0..n as u64).map(|i| m + s * rng::normal(k, i)).collect() };
        match *self {
            Init::Zeros => vec![0.0; n],
            Init::Constant(c) => vec![c; n],
            Init::Uniform(lo, hi) => uni(lo, hi),
            Init::Normal(m, s) => nor(m, s),
            Init::XavierUniform(g) => {
                let a = g * (6.0 / (fi + fo)).sqrt();
                uni(-a, a)
            }
            Init::XavierNormal(g) => nor(0.0, g * (2.0 / (fi + fo)).sqrt()),
            Init::HeUniform => {
                let a = (6.0 / fi).sqrt();
                uni(-a, a)
            }
            Init::HeNormal => nor(0.0, (2.0 / fi).sqrt()),
            Init::KaimingUniform(a) => {
                let b = (6.0 / ((1.0 + a * a) * fi)).sqrt();
                uni(-b, b)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn std_of(v: &[f32]) -> f32 {
        let m = v.iter().sum::<f32>() / v.len() as f32;
        (v.iter().map(|x| (x - m) * (x - m)).sum::<f32>() / v.len() as f32).sqrt()
    }

    #[test]
    fn initialisers_have_their_published_scale() {
        let s = Shape::from([300, 500]);
        let xu = Init::XavierUniform(1.0).values(1, "w", &s);
        let bound = (6.0f32 / 800.0).sqrt();
        assert!(xu.iter().all(|x| x.abs() <= bound));
        assert!((std_of(&xu) - bound / 3f32.sqrt()).abs() < 0.01 * bound);
        let hn = Init::HeNormal.values(1, "w", &s);
        assert!((std_of(&hn) - (2.0f32 / 300.0).sqrt()).abs() < 0.01 * (2.0f32 / 300.0).sqrt());
        let conv = Shape::from([16, 6, 5, 5]);
        assert_eq!(fans(&conv), (150, 400));
        let tu = Init::torch_default().values(1, "c", &conv);
        let bound = 1.0 / 150f32.sqrt();
        assert!(tu.iter().all(|x| x.abs() <= bound * (1.0 + 1e-6)) && tu.iter().any(|x| x.abs() > 0.9 * bound));
        // Reproducible and keyed by name and seed.
        assert_eq!(hn, Init::HeNormal.values(1, "w", &s));
        assert_ne!(hn, Init::HeNormal.values(2, "w", &s));
    }
}
