//! A host-side tensor: what a program returns and what checkpoints hold.

use crate::error::{Error, Result};
use crate::shape::Shape;

/// A dense row-major f32 tensor on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Its shape.
    pub shape: Shape,
    /// Its elements, row-major.
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor from a shape and matching data.
    pub fn new(shape: impl Into<Shape>, data: Vec<f32>) -> Result<Self> {
        let shape = shape.into();
        if shape.numel() != data.len() {
            return Err(Error::Shape {
                op: "tensor",
                node: "host tensor".into(),
                shapes: vec![shape.0.clone()],
                reason: format!("{} elements given", data.len()),
            });
        }
        Ok(Tensor { shape, data })
    }

    /// The single value of a one-element tensor.
    pub fn scalar(&self) -> Result<f32> {
        match self.data.as_slice() {
            [v] => Ok(*v),
            _ => Err(Error::Invalid {
                op: "scalar",
                reason: format!("tensor of shape {:?} is not a scalar", self.shape),
            }),
        }
    }

    /// Index of the largest value in each row of a `(N, C)` tensor.
    pub fn argmax_rows(&self) -> Vec<usize> {
        let c = self.shape.dims().last().copied().unwrap_or(1).max(1);
        self.data
            .chunks(c)
            .map(|r| {
                r.iter()
                    .enumerate()
                    .fold(
                        (0, f32::NEG_INFINITY),
                        |(bi, bv), (i, &v)| {
                            if v > bv {
                                (i, v)
                            } else {
                                (bi, bv)
                            }
                        },
                    )
                    .0
            })
            .collect()
    }
}
