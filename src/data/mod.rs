//! Datasets: the IDX format (MNIST and everything shaped like it), in-memory labelled image
//! sets, seeded shuffling, mini-batches, normalisation and validation splits.

mod idx;
pub mod text;

pub use idx::{parse_idx, read_idx, IdxArray};

use crate::error::{Error, Result};
use crate::rng::Rng;
use std::path::Path;

/// Labelled samples held in memory: `images` is `(n, sample_len)` row-major f32.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Sample values, `n · sample_len`.
    pub images: Vec<f32>,
    /// Class of each sample.
    pub labels: Vec<u32>,
    /// Shape of one sample, e.g. `[1, 28, 28]`.
    pub sample_shape: Vec<usize>,
    /// Number of classes.
    pub classes: usize,
}

impl Dataset {
    /// A dataset from its parts, checked: `images` holds `labels.len()` samples of
    /// `sample_shape`, and every label is below `classes` (an error names the first that is not).
    pub fn new(images: Vec<f32>, labels: Vec<u32>, sample_shape: Vec<usize>, classes: usize) -> Result<Dataset> {
        let per: usize = sample_shape.iter().product();
        if per == 0 || images.len() != labels.len() * per {
            return Err(Error::Invalid {
                op: "Dataset::new",
                reason: format!(
                    "{} values are not {} samples of shape {sample_shape:?}",
                    images.len(),
                    labels.len()
                ),
            });
        }
        if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l as usize >= classes) {
            return Err(Error::Invalid {
                op: "Dataset::new",
                reason: format!("sample {i} has label {l}, outside the {classes} classes"),
            });
        }
        Ok(Dataset {
            images,
            labels,
            sample_shape,
            classes,
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Elements per sample.
    pub fn sample_len(&self) -> usize {
        self.sample_shape.iter().product()
    }

    /// The samples at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> Dataset {
        let s = self.sample_len();
        let mut images = Vec::with_capacity(idx.len() * s);
        for &i in idx {
            images.extend_from_slice(&self.images[i * s..(i + 1) * s]);
        }
        Dataset {
            images,
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
            sample_shape: self.sample_shape.clone(),
            classes: self.classes,
        }
    }

    /// The first `n` samples (all if fewer).
    pub fn take(&self, n: usize) -> Dataset {
        let idx: Vec<usize> = (0..n.min(self.len())).collect();
        self.select(&idx)
    }

    /// Hold out `n` samples, chosen by a seeded shuffle, as a validation set:
    /// returns `(rest, held_out)`.
    pub fn split(&self, n: usize, seed: u64) -> Result<(Dataset, Dataset)> {
        if n >= self.len() {
            return Err(Error::Invalid {
                op: "split",
                reason: format!("cannot hold out {n} of {} samples", self.len()),
            });
        }
        let mut idx: Vec<usize> = (0..self.len()).collect();
        Rng::new(seed).shuffle(&mut idx);
        let (held, rest) = idx.split_at(n);
        Ok((self.select(rest), self.select(held)))
    }

    /// `x ← (x − mean) / std` in place.
    pub fn normalize(&mut self, mean: f32, std: f32) {
        for v in &mut self.images {
            *v = (*v - mean) / std;
        }
    }

    /// Mean and standard deviation over every value (compute them on the training set).
    pub fn stats(&self) -> (f32, f32) {
        let n = self.images.len().max(1) as f64;
        let mean = self.images.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = self.images.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        (mean as f32, var.sqrt().max(1e-12) as f32)
    }

    /// Copy samples `idx` into `x` and `y` (which must have room); rows past `idx.len()` are
    /// zero-filled with label 0 (padding for a final partial batch).
    pub fn gather(&self, idx: &[usize], x: &mut [f32], y: &mut [u32]) {
        let s = self.sample_len();
        for (row, (xr, yr)) in x.chunks_mut(s).zip(y.iter_mut()).enumerate() {
            match idx.get(row) {
                Some(&i) => {
                    xr.copy_from_slice(&self.images[i * s..(i + 1) * s]);
                    *yr = self.labels[i];
                }
                None => {
                    xr.fill(0.0);
                    *yr = 0;
                }
            }
        }
    }
}

/// Read an image set and its labels in IDX layout (gzipped or raw): images `(n, h, w)` of u8
/// scaled to `[0, 1]`, labels `(n)` of u8.
pub fn load_idx_pair(images: &Path, labels: &Path) -> Result<Dataset> {
    let im = read_idx(images)?;
    let lb = read_idx(labels)?;
    if im.dims.len() != 3 || lb.dims.len() != 1 {
        return Err(Error::Io(format!(
            "{} / {}: expected images (n, h, w) and labels (n), found dimensions {:?} and {:?}",
            images.display(),
            labels.display(),
            im.dims,
            lb.dims
        )));
    }
    if im.dims[0] != lb.dims[0] {
        return Err(Error::Io(format!(
            "{}: {} images but {} labels in {}",
            images.display(),
            im.dims[0],
            lb.dims[0],
            labels.display()
        )));
    }
    let labels: Vec<u32> = lb.data.iter().map(|&l| l as u32).collect();
    let classes = labels.iter().max().map_or(1, |&m| m as usize + 1);
    Ok(Dataset {
        images: im.data.iter().map(|&p| p as f32 / 255.0).collect(),
        labels,
        sample_shape: vec![1, im.dims[1], im.dims[2]],
        classes,
    })
}

/// Find `stem` or `stem.gz` in `dir`.
fn find(dir: &Path, stem: &str) -> Result<std::path::PathBuf> {
    for name in [format!("{stem}.gz"), stem.to_string()] {
        let p = dir.join(&name);
        if p.exists() {
            return Ok(p);
        }
    }
    Err(Error::Io(format!(
        "{}: neither {stem} nor {stem}.gz exists",
        dir.display()
    )))
}

/// MNIST (or any dataset in its IDX layout and file names) from a directory:
/// `(train, test)`, values in `[0, 1]`.
pub fn load_mnist(dir: &Path) -> Result<(Dataset, Dataset)> {
    let train = load_idx_pair(
        &find(dir, "train-images-idx3-ubyte")?,
        &find(dir, "train-labels-idx1-ubyte")?,
    )?;
    let mut test = load_idx_pair(
        &find(dir, "t10k-images-idx3-ubyte")?,
        &find(dir, "t10k-labels-idx1-ubyte")?,
    )?;
    if train.sample_shape != test.sample_shape {
        return Err(Error::Io(format!(
            "{}: train images are {:?} but test images {:?}",
            dir.display(),
            train.sample_shape,
            test.sample_shape
        )));
    }
    // The classes are the training set's; a test label beyond them is an error now, before any
    // training, not a failed feed after an epoch.
    let test_labels = find(dir, "t10k-labels-idx1-ubyte")?;
    if let Some((i, &l)) = test
        .labels
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= train.classes)
    {
        return Err(Error::Io(format!(
            "{}: label {l} of sample {i} is not among the {} classes of the training labels",
            test_labels.display(),
            train.classes
        )));
    }
    test.classes = train.classes;
    Ok((train, test))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_disjoint_and_seeded() {
        let d = Dataset {
            images: (0..10).map(|v| v as f32).collect(),
            labels: (0..10).collect(),
            sample_shape: vec![1],
            classes: 10,
        };
        let (a, b) = d.split(3, 1).unwrap();
        assert_eq!((a.len(), b.len()), (7, 3));
        let mut all: Vec<u32> = a.labels.iter().chain(&b.labels).copied().collect();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(d.split(3, 1).unwrap().1, b);
        assert!(d.split(10, 1).is_err());
    }
}
