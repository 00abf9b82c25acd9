//! Learning-rate schedules, as functions of the 0-based update step. They compose: a warm-up
//! wraps any other schedule.

use crate::error::{invalid, Result};

/// A learning rate as a function of the update step `t` (0-based).
#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    /// `η`
    Constant(f32),
    /// `η · γ^⌊t / every⌋`
    StepDecay {
        /// Initial rate.
        lr: f32,
        /// Steps between decays.
        every: u64,
        /// Factor per decay.
        gamma: f32,
    },
    /// `η · γ^t`
    Exponential {
        /// Initial rate.
        lr: f32,
        /// Factor per step.
        gamma: f32,
    },
    /// `η_min + (η − η_min)(1 + cos(π t / T))/2`, then `η_min` after `T`.
    Cosine {
        /// Initial rate.
        lr: f32,
        /// Final rate.
        min_lr: f32,
        /// Steps to reach it.
        steps: u64,
    },
    /// Linear warm-up from `inner(0)/steps` to the inner schedule over `steps`, then `inner(t)`.
    Warmup {
        /// Warm-up length.
        steps: u64,
        /// The schedule after (and scaled during) warm-up.
        inner: Box<Schedule>,
    },
}

impl Schedule {
    /// Wrap this schedule in a linear warm-up of `steps` steps.
    pub fn with_warmup(self, steps: u64) -> Schedule {
        Schedule::Warmup {
            steps,
            inner: Box::new(self),
        }
    }

    /// The learning rate at step `t`.
    pub fn at(&self, t: u64) -> f32 {
        match self {
            Schedule::Constant(lr) => *lr,
            Schedule::StepDecay { lr, every, gamma } => lr * gamma.powi((t / (*every).max(1)) as i32),
            Schedule::Exponential { lr, gamma } => lr * (*gamma as f64).powf(t as f64) as f32,
            Schedule::Cosine { lr, min_lr, steps } => {
                if t >= *steps {
                    *min_lr
                } else {
                    let c = (std::f64::consts::PI * t as f64 / *steps as f64).cos();
                    min_lr + (lr - min_lr) * ((1.0 + c) / 2.0) as f32
                }
            }
            Schedule::Warmup { steps, inner } => {
                let base = inner.at(t);
                if t < *steps {
                    base * (t + 1) as f32 / *steps as f32
                } else {
                    base
                }
            }
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let ok = match self {
            Schedule::Constant(lr) => *lr >= 0.0 && lr.is_finite(),
            Schedule::StepDecay { lr, every, gamma } => *lr >= 0.0 && *every > 0 && *gamma > 0.0,
            Schedule::Exponential { lr, gamma } => *lr >= 0.0 && *gamma > 0.0,
            Schedule::Cosine { lr, min_lr, steps } => *lr >= 0.0 && *min_lr >= 0.0 && *steps > 0,
            Schedule::Warmup { steps, inner } => {
                return if *steps > 0 {
                    inner.validate()
                } else {
                    invalid("schedule", "warm-up needs at least one step")
                }
            }
        };
        if ok {
            Ok(())
        } else {
            invalid("schedule", format!("{self:?} has an out-of-range argument"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_follow_their_formulas() {
        assert_eq!(Schedule::Constant(0.1).at(99), 0.1);
        let s = Schedule::StepDecay {
            lr: 1.0,
            every: 10,
            gamma: 0.5,
        };
        assert_eq!((s.at(9), s.at(10), s.at(25)), (1.0, 0.5, 0.25));
        let e = Schedule::Exponential { lr: 2.0, gamma: 0.9 };
        assert!((e.at(2) - 2.0 * 0.81).abs() < 1e-6);
        let c = Schedule::Cosine {
            lr: 1.0,
            min_lr: 0.0,
            steps: 100,
        };
        assert!((c.at(0) - 1.0).abs() < 1e-6 && (c.at(50) - 0.5).abs() < 1e-6 && c.at(100) == 0.0);
        let w = Schedule::Cosine {
            lr: 1.0,
            min_lr: 0.0,
            steps: 100,
        }
        .with_warmup(4);
        assert!((w.at(0) - 0.25).abs() < 1e-6);
        assert!((w.at(3) - c.at(3)).abs() < 1e-6);
        assert_eq!(w.at(50), c.at(50));
    }
}
