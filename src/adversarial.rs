//! Adversarial examples and adversarial training with the fast gradient sign method (FGSM,
//! Goodfellow, Shlens & Szegedy 2015), built inside the graph: the gradient of the loss with
//! respect to the input is computed by the same program that uses it, so an adversarial
//! training step is one program run, with no round trip through the host.
//!
//! ```text
//! x_adv = clamp(x + ε · sign(stop_gradient(∂L(x)/∂x)), lo, hi)
//! L_train = α · L(x) + (1 − α) · L(x_adv)
//! ```
//!
//! The perturbation goes through [`Graph::stop_gradient`]: to the training loss it is data, as
//! in the paper. Without the stop, autodiff would differentiate the perturbation with respect to
//! the weights — a second derivative through `sign` (zero almost everywhere) and through the
//! gradient ops, which have no gradient rules.

use crate::autodiff::gradients;
use crate::error::{invalid, Error, Result};
use crate::graph::{Graph, NodeId};

/// `x_adv = clamp(x + eps · sign(stop_gradient(∂loss/∂x)), range.0, range.1)`: the FGSM
/// perturbation of the input `x` that increases the scalar `loss` most to first order within an
/// L∞ ball of radius `eps`, kept inside the valid input range (`(0, 1)` for pixel intensities).
///
/// `x` is usually an input; the gradient nodes this appends compute `∂loss/∂x` in the program
/// that fetches `x_adv` (an evaluation program can fetch it too: no training is needed).
pub fn fgsm(g: &mut Graph, x: NodeId, loss: NodeId, eps: f32, range: (f32, f32)) -> Result<NodeId> {
    g.check_ids("fgsm", &[x, loss])?;
    if !(eps.is_finite() && eps >= 0.0) {
        return invalid("fgsm", format!("ε must be a finite number ≥ 0, got {eps}"));
    }
    let (lo, hi) = range;
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return invalid(
            "fgsm",
            format!("the input range ({lo}, {hi}) must be finite and not empty"),
        );
    }
    let dx = gradients(g, loss, &[x])?[0].ok_or_else(|| {
        Error::NotDifferentiable(format!(
            "fgsm: the loss {} does not depend on the input {}",
            g.describe(loss),
            g.describe(x)
        ))
    })?;
    let dx = g.stop_gradient(dx)?;
    let step = g.sign(dx)?;
    let step = g.mul_scalar(step, eps)?;
    let moved = g.add(x, step)?;
    g.clamp(moved, lo, hi)
}

/// The nodes of an adversarial training objective (see [`fgsm_training_loss`]).
#[derive(Clone, Copy, Debug)]
pub struct Adversarial {
    /// The loss on the clean input, `L(x)`.
    pub clean: NodeId,
    /// The FGSM input, `x_adv`.
    pub x_adv: NodeId,
    /// The loss on the adversarial input, `L(x_adv)`.
    pub adversarial: NodeId,
    /// `α · L(x) + (1 − α) · L(x_adv)`: what to differentiate and train on.
    pub total: NodeId,
}

/// Adversarial training with FGSM: builds the model's loss on `x` with `loss_of`, the FGSM input
/// `x_adv` from it, the same loss on `x_adv` (`loss_of` called again: a model built from named
/// parameters shares them), and the weighted objective `α·L(x) + (1 − α)·L(x_adv)` (the paper
/// uses α = 0.5). Train on [`Adversarial::total`] with [`crate::backward`].
pub fn fgsm_training_loss(
    g: &mut Graph,
    x: NodeId,
    eps: f32,
    range: (f32, f32),
    alpha: f32,
    loss_of: &mut dyn FnMut(&mut Graph, NodeId) -> Result<NodeId>,
) -> Result<Adversarial> {
    if !(0.0..=1.0).contains(&alpha) {
        return invalid("fgsm_training_loss", format!("α must be in [0, 1], got {alpha}"));
    }
    let clean = loss_of(g, x)?;
    let x_adv = fgsm(g, x, clean, eps, range)?;
    let adversarial = loss_of(g, x_adv)?;
    let a = g.mul_scalar(clean, alpha)?;
    let b = g.mul_scalar(adversarial, 1.0 - alpha)?;
    let total = g.add(a, b)?;
    Ok(Adversarial {
        clean,
        x_adv,
        adversarial,
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{backward, loss, nn, Cpu, Feed, Optimizer, ParamStore, Program, Training};

    /// A linear classifier `(4, 3) → 2`, its loss and the FGSM input at ε = 0.25 in (0, 1).
    fn model(g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let y = g.labels("y", [4], 2)?;
        let logits = nn::Linear::new(g, "l", 3, 2)?.forward(g, x)?;
        loss::cross_entropy(g, logits, y)
    }

    #[test]
    fn fgsm_moves_each_input_by_eps_against_the_gradient_and_stays_in_range() {
        let mut g = Graph::new();
        let x = g.input("x", [4, 3]).unwrap();
        let l = model(&mut g, x).unwrap();
        let dx = gradients(&mut g, l, &[x]).unwrap()[0].unwrap();
        let adv = fgsm(&mut g, x, l, 0.25, (0.0, 1.0)).unwrap();
        let mut store = ParamStore::new(&Cpu, &g, 3).unwrap();
        let mut p = Program::compile(&g, &mut store, &[dx, adv], None).unwrap();
        let xs = [0.1, 0.5, 0.9, 0.0, 1.0, 0.3, 0.6, 0.2, 0.8, 0.95, 0.05, 0.5];
        let out = p
            .run(&[("x", Feed::F32(&xs)), ("y", Feed::Labels(&[0, 1, 1, 0]))])
            .unwrap();
        let (d, a) = (&out.get(dx).unwrap().data, &out.get(adv).unwrap().data);
        for i in 0..12 {
            let want = (xs[i] + 0.25 * d[i].signum()).clamp(0.0, 1.0);
            assert_eq!(a[i], want, "element {i}: x {} gradient {}", xs[i], d[i]);
        }
    }

    #[test]
    fn adversarial_training_differentiates_through_the_model_not_the_perturbation() {
        let mut g = Graph::new();
        let x = g.input("x", [4, 3]).unwrap();
        let adv = fgsm_training_loss(&mut g, x, 0.1, (0.0, 1.0), 0.5, &mut model).unwrap();
        let grads = backward(&mut g, adv.total).unwrap();
        assert_eq!(grads.params.len(), 2, "both parameters get a gradient");
        let mut store = ParamStore::new(&Cpu, &g, 3).unwrap();
        let opt = Optimizer::sgd(0.1);
        let mut p = Program::compile(&g, &mut store, &[adv.total], Some(Training::new(&grads, &opt))).unwrap();
        let mut r = crate::rng::Rng::new(1);
        let xs: Vec<f32> = (0..12).map(|_| r.uniform()).collect();
        p.run(&[("x", Feed::F32(&xs)), ("y", Feed::Labels(&[0, 1, 1, 0]))])
            .unwrap();

        // Without the stop, backward reaches the gradient ops of ∂L/∂x, which have no rule.
        let mut g = Graph::new();
        let x = g.input("x", [4, 3]).unwrap();
        let l = model(&mut g, x).unwrap();
        let dx = gradients(&mut g, l, &[x]).unwrap()[0].unwrap();
        let s = g.sign(dx).unwrap();
        let moved = g.add(x, s).unwrap();
        let l2 = model(&mut g, moved).unwrap();
        let total = g.add(l, l2).unwrap();
        assert!(matches!(backward(&mut g, total), Err(Error::NotDifferentiable(_))));
    }

    #[test]
    fn bad_arguments_are_errors() {
        let mut g = Graph::new();
        let x = g.input("x", [4, 3]).unwrap();
        let l = model(&mut g, x).unwrap();
        assert!(fgsm(&mut g, x, l, -0.1, (0.0, 1.0)).is_err());
        assert!(fgsm(&mut g, x, l, f32::NAN, (0.0, 1.0)).is_err());
        assert!(fgsm(&mut g, x, l, 0.1, (1.0, 0.0)).is_err());
        let other = g.input("z", [4, 3]).unwrap();
        assert!(matches!(
            fgsm(&mut g, other, l, 0.1, (0.0, 1.0)),
            Err(Error::NotDifferentiable(_))
        ));
        assert!(fgsm_training_loss(&mut g, x, 0.1, (0.0, 1.0), 1.5, &mut model).is_err());
    }
}
