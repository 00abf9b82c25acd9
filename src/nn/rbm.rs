//! A restricted Boltzmann machine with binary visible and hidden units, trained by contrastive
//! divergence (CD-k, Hinton 2002) with block Gibbs sampling on the device.
//!
//! Energy `E(v, h) = −v·b − h·c − vᵀWh`, so both conditionals factorise:
//! `p(h = 1 | v) = σ(vW + c)` and `p(v = 1 | h) = σ(hWᵀ + b)`, and a Gibbs step samples all
//! hidden units, then all visible units, with [`Graph::bernoulli`].
//!
//! **The CD-k update as a surrogate loss.** The CD statistic is not the gradient of any loss
//! the graph computes, but it is the gradient of the free-energy difference
//! `F(v₀) − F(stop_gradient(v_k))`, where `F(v) = −v·b − Σⱼ softplus((vW + c)ⱼ)` and `v_k` ends a
//! k-step Gibbs chain started at the data `v₀`: since `∂F/∂W = −vᵀσ(vW + c)`,
//! `∂/∂W [F(v₀) − F(v_k)] = −(v₀ᵀ p(h|v₀) − v_kᵀ p(h|v_k))`, `∂/∂b = −(v₀ − v_k)`,
//! `∂/∂c = −(p(h|v₀) − p(h|v_k))` — the negative of CD-k's positive-minus-negative statistics,
//! with the hidden probabilities in both phases, as Hinton's guide recommends. Minimising the
//! surrogate with any optimiser therefore applies the CD-k update, the gradients come from the
//! ordinary autodiff table, and the sampling chain needs no gradient rule: `stop_gradient` makes
//! `v_k` data (the samples carry no gradient anyway; the stop also covers a chain that ends in
//! probabilities). The surrogate's value is not the log-likelihood and may go up or down; watch
//! the reconstruction error instead.

use crate::error::{invalid, Result};
use crate::graph::{Graph, NodeId};
use crate::init::Init;

/// An RBM's parameters: `{name}.w (V, H)`, visible bias `{name}.b (V)`, hidden bias
/// `{name}.c (H)`.
#[derive(Clone, Copy, Debug)]
pub struct Rbm {
    /// Weights `(V, H)`.
    pub w: NodeId,
    /// Visible bias `(V)`.
    pub b: NodeId,
    /// Hidden bias `(H)`.
    pub c: NodeId,
}

/// One block Gibbs step `v → h → v'`.
#[derive(Clone, Copy, Debug)]
pub struct GibbsStep {
    /// `p(h = 1 | v)`, `(N, H)`.
    pub h_probs: NodeId,
    /// A sample of `h`.
    pub h: NodeId,
    /// `p(v' = 1 | h)`, `(N, V)`.
    pub v_probs: NodeId,
    /// A sample of `v'`.
    pub v: NodeId,
}

/// The CD-k objective (see the module documentation).
#[derive(Clone, Copy, Debug)]
pub struct ContrastiveDivergence {
    /// `mean F(v₀) − mean F(stop_gradient(v_k))`: differentiate this.
    pub loss: NodeId,
    /// The chain's last visible sample `v_k`, `(N, V)`.
    pub v_model: NodeId,
    /// The mean-field reconstruction of the data, [`Rbm::reconstruct`]`(v₀)` (computed only when
    /// fetched).
    pub reconstruction: NodeId,
}

impl Rbm {
    /// An RBM of `visible` × `hidden` binary units: weights from N(0, 0.01²), biases 0.
    pub fn new(g: &mut Graph, name: &str, visible: usize, hidden: usize) -> Result<Self> {
        if visible == 0 || hidden == 0 {
            return invalid(
                "Rbm",
                format!("needs visible and hidden units, got {visible} × {hidden}"),
            );
        }
        Ok(Rbm {
            w: g.param(&format!("{name}.w"), [visible, hidden], Init::Normal(0.0, 0.01))?,
            b: g.param(&format!("{name}.b"), [visible], Init::Zeros)?,
            c: g.param(&format!("{name}.c"), [hidden], Init::Zeros)?,
        })
    }

    /// `vW + c`, `(N, H)`.
    fn hidden_input(&self, g: &mut Graph, v: NodeId) -> Result<NodeId> {
        let a = g.matmul(v, self.w)?;
        g.add(a, self.c)
    }

    /// `p(h = 1 | v) = σ(vW + c)`: `(N, V) → (N, H)`.
    pub fn hidden_probs(&self, g: &mut Graph, v: NodeId) -> Result<NodeId> {
        let a = self.hidden_input(g, v)?;
        g.sigmoid(a)
    }

    /// `p(v = 1 | h) = σ(hWᵀ + b)`: `(N, H) → (N, V)`.
    pub fn visible_probs(&self, g: &mut Graph, h: NodeId) -> Result<NodeId> {
        let a = g.matmul_t(h, self.w, false, true)?;
        let a = g.add(a, self.b)?;
        g.sigmoid(a)
    }

    /// One block Gibbs step from the visible state `v`: sample every hidden unit given `v`,
    /// then every visible unit given those.
    pub fn gibbs(&self, g: &mut Graph, v: NodeId) -> Result<GibbsStep> {
        let h_probs = self.hidden_probs(g, v)?;
        let h = g.bernoulli(h_probs)?;
        let v_probs = self.visible_probs(g, h)?;
        let v = g.bernoulli(v_probs)?;
        Ok(GibbsStep { h_probs, h, v_probs, v })
    }

    /// The free energy `F(v) = −v·b − Σⱼ softplus((vW + c)ⱼ)` of each row: `(N, V) → (N)`.
    pub fn free_energy(&self, g: &mut Graph, v: NodeId) -> Result<NodeId> {
        let vb = g.mul(v, self.b)?;
        let vb = g.sum(vb, &[1], false)?;
        let a = self.hidden_input(g, v)?;
        let sp = g.softplus(a)?;
        let sp = g.sum(sp, &[1], false)?;
        let f = g.add(vb, sp)?;
        g.neg(f)
    }

    /// The mean-field reconstruction `σ(σ(vW + c)Wᵀ + b)`: deterministic, for measuring how
    /// well the model rebuilds its input.
    pub fn reconstruct(&self, g: &mut Graph, v: NodeId) -> Result<NodeId> {
        let h = self.hidden_probs(g, v)?;
        self.visible_probs(g, h)
    }

    /// CD-k on the data `v0` `(N, V)`: a k-step block Gibbs chain from `v0` on the device and
    /// the surrogate loss whose gradient is the CD-k statistic (see the module documentation).
    pub fn contrastive_divergence(&self, g: &mut Graph, v0: NodeId, k: usize) -> Result<ContrastiveDivergence> {
        self.cd_from(g, v0, v0, k, "contrastive_divergence")
    }

    /// Persistent contrastive divergence (PCD, Tieleman 2008): as [`Rbm::contrastive_divergence`],
    /// but the k-step chain starts from `chain` `(N, V)` — the state the previous step's chains
    /// ended in — instead of restarting at the data, so the negative samples explore the model's
    /// own distribution rather than staying near the batch. Make `chain` an input and carry the
    /// returned `v_model` into it after every step with [`crate::Program::carry`] (feed it the
    /// first batch, or anything, on the first step).
    pub fn persistent_contrastive_divergence(
        &self,
        g: &mut Graph,
        v0: NodeId,
        chain: NodeId,
        k: usize,
    ) -> Result<ContrastiveDivergence> {
        self.cd_from(g, v0, chain, k, "persistent_contrastive_divergence")
    }

    fn cd_from(
        &self,
        g: &mut Graph,
        v0: NodeId,
        start: NodeId,
        k: usize,
        op: &'static str,
    ) -> Result<ContrastiveDivergence> {
        g.check_ids(op, &[v0, start])?;
        if k == 0 {
            return invalid(op, "k must be at least 1 Gibbs step");
        }
        if g.shape(v0) != g.shape(start) {
            return invalid(
                op,
                format!(
                    "the chains {:?} must have the data's shape {:?}",
                    g.shape(start).dims(),
                    g.shape(v0).dims()
                ),
            );
        }
        let mut v = start;
        for _ in 0..k {
            v = self.gibbs(g, v)?.v;
        }
        let v_model = g.stop_gradient(v)?;
        let f_data = self.free_energy(g, v0)?;
        let f_data = g.mean_all(f_data)?;
        let f_model = self.free_energy(g, v_model)?;
        let f_model = g.mean_all(f_model)?;
        let loss = g.sub(f_data, f_model)?;
        let reconstruction = self.reconstruct(g, v0)?;
        Ok(ContrastiveDivergence {
            loss,
            v_model: v,
            reconstruction,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cpu, Feed, ParamStore, Program};

    /// Whether `target` is among the nodes `from` is computed from.
    fn reaches(g: &Graph, from: NodeId, target: NodeId) -> bool {
        from == target || g.node(from).inputs.iter().any(|&x| reaches(g, x, target))
    }

    /// The surrogate's gradients are exactly the CD statistics computed by hand from the chain's
    /// own samples (fetched from the same run), for CD-2 from the data and for persistent CD-2
    /// from other chains.
    fn check_cd_statistic(persistent: bool) {
        let (n, vis, hid) = (6, 5, 3);
        let mut g = Graph::new();
        let v0 = g.input("v", [n, vis]).unwrap();
        let rbm = Rbm::new(&mut g, "rbm", vis, hid).unwrap();
        let chain = g.input("chain", [n, vis]).unwrap();
        let cd = if persistent {
            rbm.persistent_contrastive_divergence(&mut g, v0, chain, 2).unwrap()
        } else {
            rbm.contrastive_divergence(&mut g, v0, 2).unwrap()
        };
        // The negative chain starts from the persistent state, or from the data.
        let start = if persistent { chain } else { v0 };
        let other = if persistent { v0 } else { chain };
        assert!(reaches(&g, cd.v_model, start) && !reaches(&g, cd.v_model, other));
        let grads = crate::gradients(&mut g, cd.loss, &[rbm.w, rbm.b, rbm.c]).unwrap();
        let grads: Vec<NodeId> = grads.into_iter().map(|x| x.unwrap()).collect();
        let mut store = ParamStore::new(&Cpu, &g, 5).unwrap();
        let w0 = Init::Normal(0.0, 1.0).values(1, "w", &crate::shape::Shape(vec![vis, hid]));
        store.set("rbm.w", &w0).unwrap();
        let mut fetch = vec![cd.v_model];
        fetch.extend(&grads);
        let mut p = Program::compile(&g, &mut store, &fetch, None).unwrap();
        let data: Vec<f32> = (0..n * vis).map(|i| ((i * 7 + 3) % 3 == 0) as u8 as f32).collect();
        let chain: Vec<f32> = data.iter().map(|v| 1.0 - v).collect();
        let mut feeds = vec![("v", Feed::F32(&data))];
        if persistent {
            feeds.push(("chain", Feed::F32(&chain)));
        }
        let out = p.run(&feeds).unwrap();
        let vk = out.get(cd.v_model).unwrap().data.clone();
        assert!(
            vk.iter().all(|&x| x == 0.0 || x == 1.0),
            "the chain ends in a binary sample"
        );
        let w = store.get("rbm.w").unwrap().data;
        let c = store.get("rbm.c").unwrap().data;
        let ph = |v: &[f32]| -> Vec<f32> {
            (0..n * hid)
                .map(|k| {
                    let (r, j) = (k / hid, k % hid);
                    let a: f32 = (0..vis).map(|i| v[r * vis + i] * w[i * hid + j]).sum::<f32>() + c[j];
                    1.0 / (1.0 + (-a).exp())
                })
                .collect()
        };
        let (h0, hk) = (ph(&data), ph(&vk));
        let gw: Vec<f32> = (0..vis * hid)
            .map(|k| {
                let (i, j) = (k / hid, k % hid);
                let s: f32 = (0..n)
                    .map(|r| vk[r * vis + i] * hk[r * hid + j] - data[r * vis + i] * h0[r * hid + j])
                    .sum();
                s / n as f32
            })
            .collect();
        let gb: Vec<f32> = (0..vis)
            .map(|i| (0..n).map(|r| vk[r * vis + i] - data[r * vis + i]).sum::<f32>() / n as f32)
            .collect();
        let gc: Vec<f32> = (0..hid)
            .map(|j| (0..n).map(|r| hk[r * hid + j] - h0[r * hid + j]).sum::<f32>() / n as f32)
            .collect();
        for (name, (node, want)) in ["w", "b", "c"].iter().zip(grads.iter().zip([gw, gb, gc])) {
            let got = &out.get(*node).unwrap().data;
            for (a, e) in got.iter().zip(&want) {
                assert!(
                    (a - e).abs() <= 1e-5 + 1e-4 * e.abs(),
                    "∂/∂{name}: {got:?} vs CD {want:?}"
                );
            }
        }
    }

    #[test]
    fn the_surrogate_gradient_is_the_cd_statistic() {
        check_cd_statistic(false);
        check_cd_statistic(true);
    }

    #[test]
    fn chains_must_match_the_data_and_k_must_be_positive() {
        let mut g = Graph::new();
        let v0 = g.input("v", [4, 5]).unwrap();
        let chain = g.input("chain", [3, 5]).unwrap();
        let rbm = Rbm::new(&mut g, "rbm", 5, 2).unwrap();
        assert!(rbm.persistent_contrastive_divergence(&mut g, v0, chain, 1).is_err());
        assert!(rbm.contrastive_divergence(&mut g, v0, 0).is_err());
        assert!(Rbm::new(&mut g, "empty", 5, 0).is_err());
    }
}
