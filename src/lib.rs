//! # Kiln
//!
//! A deep-learning training engine. Models are computational graphs built once, differentiated
//! by a graph-to-graph reverse-mode pass, compiled once into a [`Program`] for a backend, and
//! then run step after step with named feeds and fetches. Parameters and optimiser state live on
//! the device in a [`ParamStore`] shared by every program compiled against it (a training step
//! and an evaluation pass over the same weights).
//!
//! ```
//! use kiln::{backward, loss, nn, Cpu, Feed, Graph, Optimizer, ParamStore, Program, Training};
//!
//! # fn main() -> kiln::Result<()> {
//! // XOR with a 2-8-1 MLP.
//! let mut g = Graph::new();
//! let x = g.input("x", [4, 2])?;
//! let y = g.input("y", [4, 1])?;
//! let l1 = nn::Linear::new(&mut g, "l1", 2, 8)?;
//! let l2 = nn::Linear::new(&mut g, "l2", 8, 1)?;
//! let h = l1.forward(&mut g, x)?;
//! let h = g.tanh(h)?;
//! let logits = l2.forward(&mut g, h)?;
//! let loss = loss::bce_with_logits(&mut g, logits, y)?;
//! let grads = backward(&mut g, loss)?;
//!
//! let mut store = ParamStore::new(&Cpu, &g, 42)?;
//! let opt = Optimizer::adam(0.05);
//! let mut train = Program::compile(&g, &mut store, &[loss], Some(Training::new(&grads, &opt)))?;
//! let xs = [0., 0., 0., 1., 1., 0., 1., 1.];
//! let ys = [0., 1., 1., 0.];
//! let mut last = f32::INFINITY;
//! for _ in 0..300 {
//!     let out = train.run(&[("x", Feed::F32(&xs)), ("y", Feed::F32(&ys))])?;
//!     last = out.scalar(loss)?;
//! }
//! assert!(last < 0.05, "loss {last}");
//! # Ok(())
//! # }
//! ```

pub mod adversarial;
pub mod autodiff;
pub mod backend;
pub mod checkpoint;
pub mod crossval;
pub mod data;
pub mod device;
pub mod ensemble;
mod error;
pub mod exec;
pub mod gradcheck;
pub mod graph;
pub mod image;
pub mod init;
pub mod learner;
pub mod loss;
pub mod metrics;
pub mod nn;
pub mod optim;
pub mod progress;
pub mod rng;
pub mod shape;
mod tensor;
pub mod train;

pub use autodiff::{backward, backward_scaled, gradients, Gradients};
pub use backend::{Backend, Cpu, DeviceInfo, Gpu};
pub use device::Device;
pub use error::{Error, Result};
pub use exec::{CompileOptions, Feed, LossScaling, Outputs, ParamStore, Plan, Program, Training};
pub use graph::{BinaryOp, Graph, NodeId, Op, ReduceOp, UnaryOp};
pub use init::Init;
pub use optim::{Clip, Optimizer, OptimizerKind, Schedule};
pub use shape::{DType, Shape};
pub use tensor::Tensor;

/// The README's example, compiled and run as a doc-test so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
