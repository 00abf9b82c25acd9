//! Activation functions, as graph builder methods.

use crate::error::Result;
use crate::graph::{Graph, NodeId, UnaryOp};

impl Graph {
    /// Logistic sigmoid.
    pub fn sigmoid(&mut self, x: NodeId) -> Result<NodeId> {
        self.unary(UnaryOp::Sigmoid, x)
    }
    /// Hyperbolic tangent.
    pub fn tanh(&mut self, x: NodeId) -> Result<NodeId> {
        self.unary(UnaryOp::Tanh, x)
    }
    /// `max(x, 0)`.
    pub fn relu(&mut self, x: NodeId) -> Result<NodeId> {
        self.unary(UnaryOp::Relu, x)
    }
    /// `x` if positive, else `αx`.
    pub fn leaky_relu(&mut self, x: NodeId, alpha: f32) -> Result<NodeId> {
        self.unary(UnaryOp::LeakyRelu(alpha), x)
    }
    /// `x` if positive, else `α(eˣ − 1)`.
    pub fn elu(&mut self, x: NodeId, alpha: f32) -> Result<NodeId> {
        self.unary(UnaryOp::Elu(alpha), x)
    }
    /// `ln(1 + eˣ)`, stable for large |x|.
    pub fn softplus(&mut self, x: NodeId) -> Result<NodeId> {
        self.unary(UnaryOp::Softplus, x)
    }
    /// `clamp(x, −1, 1)`; like PyTorch's `F.hardtanh`, its gradient is 0 at the bounds.
    pub fn hardtanh(&mut self, x: NodeId) -> Result<NodeId> {
        self.unary(UnaryOp::Clamp(-1.0, 1.0), x)
    }
    /// The exact GELU, `x·Φ(x)`.
    pub fn gelu(&mut self, x: NodeId) -> Result<NodeId> {
        self.unary(UnaryOp::Gelu, x)
    }
    /// PReLU with slopes `alpha` broadcast against `x`: `relu(x) + α·(x − relu(x))`.
    pub fn prelu(&mut self, x: NodeId, alpha: NodeId) -> Result<NodeId> {
        let pos = self.relu(x)?;
        let neg = self.sub(x, pos)?;
        let alpha = self.cast_like(alpha, x)?;
        let scaled = self.mul(neg, alpha)?;
        self.add(pos, scaled)
    }
}
