//! Numerical gradient checking: compare the gradients Kiln's reverse-mode pass computes for a
//! graph with central finite differences of its loss, element by element. The way to test a new
//! op, layer or loss — and to see, as a course teaches, why analytic gradients can be trusted.
//!
//! ```
//! use kiln::{gradcheck, Cpu, Feed, Graph, Init, ParamStore};
//! # fn main() -> kiln::Result<()> {
//! let mut g = Graph::new();
//! let w = g.param("w", [3], Init::Uniform(-1.0, 1.0))?;
//! let x = g.input("x", [3])?;
//! let t = g.mul(w, x)?;
//! let t = g.tanh(t)?;
//! let loss = g.sum_all(t)?;
//! let mut store = ParamStore::new(&Cpu, &g, 7)?;
//! let report = gradcheck::check(&g, &mut store, loss, &[("x", Feed::F32(&[0.5, -1.0, 2.0]))], gradcheck::Config::default())?;
//! assert!(report.passed(), "{report}");
//! # Ok(())
//! # }
//! ```

use crate::autodiff::gradients;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::exec::{Feed, ParamStore, Program};
use crate::graph::{Graph, NodeId};
use std::fmt;

/// How to difference and how close is close enough.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Config {
    /// The step `ε` of `(L(w + ε) − L(w − ε)) / 2ε`.
    pub eps: f32,
    /// An element passes when `|analytic − numeric| ≤ atol + rtol·|numeric|`.
    pub atol: f32,
    /// See `atol`.
    pub rtol: f32,
}

impl Default for Config {
    /// For f32 losses of order 1: with ε = 1e-2 the truncation error is about ε²·|L'''|/6 ≈
    /// 2e-5·|L'''| and the rounding error of the quotient about 1.2e-7·|L|/ε ≈ 1e-5·|L|, so
    /// 2e-3 + 1e-2·|g| leaves a wide margin while still failing a gradient that is 5% off.
    /// Keep inputs away from kinks (ReLU at 0, clamp bounds) by more than ε.
    fn default() -> Self {
        Config {
            eps: 1e-2,
            atol: 2e-3,
            rtol: 1e-2,
        }
    }
}

/// One element whose analytic and numeric gradients disagree.
#[derive(Clone, Debug, PartialEq)]
pub struct Mismatch {
    /// The parameter.
    pub param: String,
    /// The element (row-major).
    pub index: usize,
    /// From autodiff.
    pub analytic: f32,
    /// From central differences.
    pub numeric: f32,
}

/// The outcome of [`check`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Elements compared.
    pub checked: usize,
    /// Those outside the tolerance.
    pub mismatches: Vec<Mismatch>,
    /// The largest `|analytic − numeric|` seen.
    pub max_abs_error: f32,
}

impl Report {
    /// Whether every element agreed.
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} elements checked, {} mismatched, largest error {:e}",
            self.checked,
            self.mismatches.len(),
            self.max_abs_error
        )?;
        for m in self.mismatches.iter().take(10) {
            write!(
                f,
                "\n  `{}`[{}]: analytic {} vs numeric {}",
                m.param, m.index, m.analytic, m.numeric
            )?;
        }
        Ok(())
    }
}

/// Check the gradient of the scalar `loss` with respect to every trainable parameter of
/// `graph` at the weights in `store`, with `feeds` for its inputs. The store's weights are left
/// as they were. Costs two forward passes per parameter element: meant for small graphs.
pub fn check<B: Backend>(
    graph: &Graph,
    store: &mut ParamStore<B>,
    loss: NodeId,
    feeds: &[(&str, Feed<'_>)],
    cfg: Config,
) -> Result<Report> {
    if !(cfg.eps > 0.0 && cfg.eps.is_finite()) {
        return crate::error::invalid("gradcheck", format!("eps must be positive, got {}", cfg.eps));
    }
    // Gradient nodes go into a copy, so the caller's graph is not changed.
    let mut g = graph.clone();
    g.check_ids("gradcheck", &[loss])?;
    let params: Vec<(String, NodeId)> = g
        .params()
        .iter()
        .filter(|p| p.trainable)
        .map(|p| (p.name.clone(), p.node))
        .collect();
    if params.is_empty() {
        return crate::error::invalid("gradcheck", "the graph has no trainable parameter");
    }
    let nodes: Vec<NodeId> = params.iter().map(|p| p.1).collect();
    let grads = gradients(&mut g, loss, &nodes)?;
    let mut fetch = vec![loss];
    fetch.extend(grads.iter().flatten());
    let mut prog = Program::compile(&g, store, &fetch, None)?;
    let out = prog.run(feeds)?;
    let mut report = Report::default();
    let value = |prog: &mut Program<B>| -> Result<f32> { prog.run(feeds)?.scalar(loss) };
    for ((name, _), grad) in params.iter().zip(&grads) {
        let w = store.get(name)?;
        let analytic = match grad {
            Some(n) => out.get(*n)?.data.clone(),
            // The loss does not depend on this parameter: its gradient is zero.
            None => vec![0.0; w.data.len()],
        };
        let mut probe = w.data.clone();
        for i in 0..probe.len() {
            probe[i] = w.data[i] + cfg.eps;
            store.set(name, &probe)?;
            let up = value(&mut prog)?;
            probe[i] = w.data[i] - cfg.eps;
            store.set(name, &probe)?;
            let down = value(&mut prog)?;
            probe[i] = w.data[i];
            let numeric = (up - down) / (2.0 * cfg.eps);
            let err = (analytic[i] - numeric).abs();
            // NaN compares false: a NaN on either side is a mismatch, and an infinite error.
            let close = err <= cfg.atol + cfg.rtol * numeric.abs();
            report.max_abs_error = if err.is_nan() {
                f32::INFINITY
            } else {
                report.max_abs_error.max(err)
            };
            if !close {
                report.mismatches.push(Mismatch {
                    param: name.clone(),
                    index: i,
                    analytic: analytic[i],
                    numeric,
                });
            }
            report.checked += 1;
        }
        store.set(name, &w.data)?;
    }
    if report.checked == 0 {
        return Err(Error::Invalid {
            op: "gradcheck",
            reason: "no parameter element to check".into(),
        });
    }
    Ok(report)
}
