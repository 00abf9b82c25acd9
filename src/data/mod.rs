//! Datasets: the IDX format (MNIST and everything shaped like it), numeric CSV tables,
//! in-memory labelled sample sets, seeded shuffling, mini-batches, normalisation, validation
//! splits, bootstrap samples and k-fold splits.

mod csv;
mod idx;
mod resample;
pub mod text;

pub use csv::{load_csv_classification, parse_csv, read_csv, CsvHeader, CsvTable};
pub use idx::{parse_idx, read_idx, IdxArray};
pub use resample::Folds;

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

    /// The samples at `idx`, in that order; an index past the end is an error naming it and the
    /// dataset's length.
    pub fn select(&self, idx: &[usize]) -> Result<Dataset> {
        self.check_indices("Dataset::select", idx)?;
        Ok(self.select_checked(idx))
    }

    /// [`Dataset::select`] for indices already known to be in range.
    fn select_checked(&self, idx: &[usize]) -> Dataset {
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

    /// One pass for the largest index: enough to know every index is in range.
    fn check_indices(&self, op: &'static str, idx: &[usize]) -> Result<()> {
        match idx.iter().copied().max() {
            Some(m) if m >= self.len() => {
                // The first offender is the one to name; finding it is off the hot path.
                let (pos, bad) = idx
                    .iter()
                    .copied()
                    .enumerate()
                    .find(|&(_, i)| i >= self.len())
                    .unwrap_or((0, m));
                Err(Error::Invalid {
                    op,
                    reason: format!(
                        "index {bad} (position {pos} of {}) is out of range for a dataset of {} samples",
                        idx.len(),
                        self.len()
                    ),
                })
            }
            _ => Ok(()),
        }
    }

    /// The first `n` samples (all if fewer).
    pub fn take(&self, n: usize) -> Dataset {
        let idx: Vec<usize> = (0..n.min(self.len())).collect();
        self.select_checked(&idx)
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
        Ok((self.select_checked(rest), self.select_checked(held)))
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

    /// Mean and standard deviation of each of a sample's `sample_len` values across the samples
    /// (per feature, for tabular data; compute them on the training set). A constant feature
    /// gets a standard deviation of 1, so standardising only centres it.
    pub fn feature_stats(&self) -> (Vec<f32>, Vec<f32>) {
        let s = self.sample_len();
        let n = self.len().max(1) as f64;
        let mut mean = vec![0f64; s];
        for row in self.images.chunks(s) {
            mean.iter_mut().zip(row).for_each(|(m, &v)| *m += v as f64);
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0f64; s];
        for row in self.images.chunks(s) {
            for ((q, &v), m) in var.iter_mut().zip(row).zip(&mean) {
                *q += (v as f64 - m).powi(2);
            }
        }
        let std = var
            .iter()
            .map(|q| match (q / n).sqrt() as f32 {
                sd if sd > 1e-12 => sd,
                _ => 1.0,
            })
            .collect();
        (mean.iter().map(|&m| m as f32).collect(), std)
    }

    /// `x[j] ← (x[j] − mean[j]) / std[j]` for each value `j` of every sample, in place (with
    /// [`Dataset::feature_stats`] of the training set). `mean` and `std` must have `sample_len`
    /// entries, and every `std` must be positive.
    pub fn standardize(&mut self, mean: &[f32], std: &[f32]) -> Result<()> {
        let s = self.sample_len();
        if mean.len() != s || std.len() != s {
            return Err(Error::Invalid {
                op: "Dataset::standardize",
                reason: format!(
                    "{} means and {} deviations for samples of {s} values",
                    mean.len(),
                    std.len()
                ),
            });
        }
        if let Some((j, sd)) = std.iter().enumerate().find(|(_, &sd)| !(sd > 0.0 && sd.is_finite())) {
            return Err(Error::Invalid {
                op: "Dataset::standardize",
                reason: format!("standard deviation {sd} of value {j} is not a positive number"),
            });
        }
        for row in self.images.chunks_mut(s) {
            for ((v, m), sd) in row.iter_mut().zip(mean).zip(std) {
                *v = (*v - m) / sd;
            }
        }
        Ok(())
    }

    /// Copy samples `idx` into `x` and `y`: `y` holds one label per row and `x` one sample per
    /// row (`y.len() · sample_len` values), and `idx` at most `y.len()` indices; rows past
    /// `idx.len()` are zero-filled with label 0 (padding for a final partial batch). An index
    /// past the end, or buffers of the wrong size, are errors and leave `x` and `y` untouched.
    pub fn gather(&self, idx: &[usize], x: &mut [f32], y: &mut [u32]) -> Result<()> {
        let s = self.sample_len();
        if x.len() != y.len() * s || idx.len() > y.len() {
            return Err(Error::Invalid {
                op: "Dataset::gather",
                reason: format!(
                    "{} indices into buffers of {} values and {} labels; samples have {s} values",
                    idx.len(),
                    x.len(),
                    y.len()
                ),
            });
        }
        self.check_indices("Dataset::gather", idx)?;
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
        Ok(())
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

    fn ten() -> Dataset {
        Dataset::new((0..20).map(|v| v as f32).collect(), (0..10).collect(), vec![2], 10).unwrap()
    }

    #[test]
    fn select_checks_indices() {
        let d = ten();
        let s = d.select(&[9, 0, 9]).unwrap();
        assert_eq!(s.labels, [9, 0, 9]);
        assert_eq!(s.images, [18.0, 19.0, 0.0, 1.0, 18.0, 19.0]);
        let e = d.select(&[3, 10, 12]).unwrap_err().to_string();
        assert!(
            e.contains("index 10 (position 1 of 3)") && e.contains("dataset of 10 samples"),
            "{e}"
        );
        assert!(d.select(&[]).unwrap().is_empty());
    }

    #[test]
    fn feature_stats_standardize_each_column() {
        // Columns: 0, 2, 4, … (mean 9, sd √33) and 1, 3, 5, … ; then a constant column.
        let mut d = ten();
        let (m, sd) = d.feature_stats();
        assert_eq!(m, [9.0, 10.0]);
        assert!((sd[0] - 33f32.sqrt()).abs() < 1e-5 && sd[0] == sd[1], "{sd:?}");
        d.standardize(&m, &sd).unwrap();
        let (m2, sd2) = d.feature_stats();
        assert!(m2.iter().all(|v| v.abs() < 1e-6) && sd2.iter().all(|v| (v - 1.0).abs() < 1e-5));
        let c = Dataset::new(vec![3.0; 4], vec![0; 4], vec![1], 1).unwrap();
        assert_eq!(c.feature_stats(), (vec![3.0], vec![1.0]));
        assert!(d.standardize(&m, &[1.0]).is_err());
        assert!(d
            .standardize(&m, &[1.0, 0.0])
            .unwrap_err()
            .to_string()
            .contains("value 1"));
    }

    #[test]
    fn gather_checks_indices_and_buffers() {
        let d = ten();
        let (mut x, mut y) = (vec![-1f32; 6], vec![7u32; 3]);
        d.gather(&[4, 1], &mut x, &mut y).unwrap();
        assert_eq!(x, [8.0, 9.0, 2.0, 3.0, 0.0, 0.0]);
        assert_eq!(y, [4, 1, 0]);
        let e = d.gather(&[0, 10], &mut x, &mut y).unwrap_err().to_string();
        assert!(e.contains("index 10") && e.contains("dataset of 10 samples"), "{e}");
        // Untouched by the failed call.
        assert_eq!(y, [4, 1, 0]);
        assert!(d.gather(&[0, 1, 2, 3], &mut x, &mut y).is_err());
        assert!(d.gather(&[0], &mut x[..5], &mut y).is_err());
    }
}
