//! Shapes, element types, strides and NumPy broadcasting rules.

use std::fmt;

/// The element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum DType {
    /// IEEE binary32: parameters, optimiser state, and activations by default.
    #[default]
    F32,
    /// IEEE binary16 (the `half` crate on the host): activations and gradients in mixed
    /// precision. Kernels compute in f32 and round when they store.
    F16,
    /// Unsigned 32-bit integers: class labels, argmax indices, token ids.
    U32,
}

impl DType {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::F16 => 2,
        }
    }

    /// `f32`, `f16` or `u32`.
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::U32 => "u32",
        }
    }

    /// Whether arithmetic ops take it.
    pub const fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16)
    }

    /// Bytes of `n` elements.
    pub const fn bytes(self, n: usize) -> usize {
        n * self.size()
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The shape of a dense, row-major tensor. A scalar has rank 0.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(pub Vec<usize>);

impl Shape {
    /// Build a shape from its dimensions.
    pub fn new(dims: impl Into<Vec<usize>>) -> Self {
        Shape(dims.into())
    }

    /// The rank-0 shape of a scalar.
    pub fn scalar() -> Self {
        Shape(Vec::new())
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.0
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// Number of elements (1 for a scalar).
    pub fn numel(&self) -> usize {
        self.0.iter().product()
    }

    /// Row-major strides, in elements.
    pub fn strides(&self) -> Vec<usize> {
        let mut s = vec![1; self.0.len()];
        for i in (0..self.0.len().saturating_sub(1)).rev() {
            s[i] = s[i + 1] * self.0[i + 1];
        }
        s
    }

    /// The size of dimension `i`, counted from the end when negative.
    pub fn dim(&self, i: isize) -> Option<usize> {
        let r = self.0.len() as isize;
        let i = if i < 0 { r + i } else { i };
        if (0..r).contains(&i) {
            Some(self.0[i as usize])
        } else {
            None
        }
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl From<&[usize]> for Shape {
    fn from(d: &[usize]) -> Self {
        Shape(d.to_vec())
    }
}

impl<const N: usize> From<[usize; N]> for Shape {
    fn from(d: [usize; N]) -> Self {
        Shape(d.to_vec())
    }
}

impl From<Vec<usize>> for Shape {
    fn from(d: Vec<usize>) -> Self {
        Shape(d)
    }
}

/// The NumPy broadcast of two shapes, or `None` if they do not broadcast.
///
/// Shapes are aligned at their last dimension; each pair of sizes must be equal or one of them 1.
pub fn broadcast_shapes(a: &Shape, b: &Shape) -> Option<Shape> {
    let r = a.rank().max(b.rank());
    let mut out = vec![0; r];
    for (i, o) in out.iter_mut().enumerate() {
        let da = if i + a.rank() >= r { a.0[i + a.rank() - r] } else { 1 };
        let db = if i + b.rank() >= r { b.0[i + b.rank() - r] } else { 1 };
        *o = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(Shape(out))
}

/// Strides that read `from` as if it had been broadcast to `to` (0 on broadcast dimensions).
///
/// `from` must broadcast to `to`; the result has `to.rank()` entries.
pub fn broadcast_strides(from: &Shape, to: &Shape) -> Vec<usize> {
    let s = from.strides();
    let off = to.rank() - from.rank();
    (0..to.rank())
        .map(|i| if i < off || from.0[i - off] == 1 { 0 } else { s[i - off] })
        .collect()
}

/// The axes of `to` along which `from` was broadcast; summing over them undoes the broadcast.
pub fn broadcast_axes(from: &Shape, to: &Shape) -> Vec<usize> {
    let off = to.rank() - from.rank();
    (0..to.rank())
        .filter(|&i| i < off || (from.0[i - off] == 1 && to.0[i] != 1))
        .collect()
}

/// The same index space with fewer axes: size-1 axes dropped, and each axis merged into the
/// one before it where every operand steps over both as over one (`s[i] = s[i+1]·dims[i+1]`).
/// Returns at least one axis. Fewer axes mean less index arithmetic per element: the GPU kernels
/// split each linear index into coordinates with one integer division per axis, and the CPU
/// backend's odometer advances one counter per axis.
pub(crate) fn coalesce<const K: usize>(dims: &[usize], strides: [&[usize]; K]) -> (Vec<usize>, [Vec<usize>; K]) {
    let mut d: Vec<usize> = Vec::with_capacity(dims.len());
    let mut s: [Vec<usize>; K] = std::array::from_fn(|_| Vec::with_capacity(dims.len()));
    for (ax, &dim) in dims.iter().enumerate() {
        if dim == 1 {
            continue;
        }
        let merges = !d.is_empty() && (0..K).all(|k| s[k][s[k].len() - 1] == strides[k][ax] * dim);
        if merges {
            *d.last_mut().expect("non-empty") *= dim;
            for (sk, st) in s.iter_mut().zip(&strides) {
                *sk.last_mut().expect("non-empty") = st[ax];
            }
        } else {
            d.push(dim);
            for (sk, st) in s.iter_mut().zip(&strides) {
                sk.push(st[ax]);
            }
        }
    }
    if d.is_empty() {
        d.push(1);
        for sk in &mut s {
            sk.push(0);
        }
    }
    (d, s)
}

/// [`coalesce`] for a number of operands known only at run time.
pub(crate) fn coalesce_dyn(dims: &[usize], strides: &[&[usize]]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let mut d: Vec<usize> = Vec::with_capacity(dims.len());
    let mut s: Vec<Vec<usize>> = vec![Vec::with_capacity(dims.len()); strides.len()];
    for (ax, &dim) in dims.iter().enumerate() {
        if dim == 1 {
            continue;
        }
        if !d.is_empty() && s.iter().zip(strides).all(|(sk, st)| sk[sk.len() - 1] == st[ax] * dim) {
            *d.last_mut().expect("non-empty") *= dim;
            for (sk, st) in s.iter_mut().zip(strides) {
                *sk.last_mut().expect("non-empty") = st[ax];
            }
        } else {
            d.push(dim);
            for (sk, st) in s.iter_mut().zip(strides) {
                sk.push(st[ax]);
            }
        }
    }
    if d.is_empty() {
        d.push(1);
        s.iter_mut().for_each(|sk| sk.push(0));
    }
    (d, s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        let a = Shape::from([4, 1, 3]);
        let b = Shape::from([5, 1]);
        assert_eq!(broadcast_shapes(&a, &b), Some(Shape::from([4, 5, 3])));
        assert_eq!(broadcast_shapes(&Shape::from([2, 3]), &Shape::from([3, 2])), None);
        assert_eq!(broadcast_strides(&b, &Shape::from([4, 5, 3])), vec![0, 1, 0]);
        assert_eq!(broadcast_axes(&b, &Shape::from([4, 5, 3])), vec![0, 2]);
        assert_eq!(Shape::from([2, 3, 4]).strides(), vec![12, 4, 1]);
        assert_eq!(Shape::scalar().numel(), 1);
    }
}
