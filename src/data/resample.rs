//! Resampling a dataset: bootstrap samples (for bagging) and k-fold splits, plain or
//! stratified (for cross-validation). Every draw is seeded.

use super::Dataset;
use crate::error::{invalid, Result};
use crate::rng::Rng;

/// `k` disjoint validation sets that together hold every sample once; fold `i` trains on the
/// other `k − 1`. Made by [`Dataset::folds`] or [`Dataset::stratified_folds`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Folds {
    validation: Vec<Vec<usize>>,
    len: usize,
}

impl Folds {
    /// The number of folds.
    pub fn k(&self) -> usize {
        self.validation.len()
    }

    /// The samples fold `i` holds out (sorted).
    pub fn validation(&self, i: usize) -> &[usize] {
        &self.validation[i]
    }

    /// The samples fold `i` trains on (sorted): every other fold's.
    pub fn training(&self, i: usize) -> Vec<usize> {
        let mut held = vec![false; self.len];
        for &s in &self.validation[i] {
            held[s] = true;
        }
        (0..self.len).filter(|&s| !held[s]).collect()
    }

    /// `(training, validation)` of fold `i` of `data` (the dataset the folds were made from).
    pub fn split(&self, data: &Dataset, i: usize) -> Result<(Dataset, Dataset)> {
        if data.len() != self.len {
            return invalid(
                "Folds::split",
                format!(
                    "the folds were made for {} samples, the dataset has {}",
                    self.len,
                    data.len()
                ),
            );
        }
        if i >= self.k() {
            return invalid("Folds::split", format!("fold {i} of {}", self.k()));
        }
        Ok((data.select(&self.training(i))?, data.select(&self.validation[i])?))
    }
}

impl Dataset {
    /// A bootstrap sample: as many samples as the dataset, drawn uniformly with replacement
    /// (about 63% of the samples appear, some several times).
    pub fn bootstrap(&self, seed: u64) -> Dataset {
        let mut rng = Rng::new(seed);
        let idx: Vec<usize> = (0..self.len()).map(|_| rng.below(self.len())).collect();
        self.select_checked(&idx)
    }

    /// `k` folds of a seeded shuffle, sizes differing by at most one.
    pub fn folds(&self, k: usize, seed: u64) -> Result<Folds> {
        self.check_k("Dataset::folds", k)?;
        let mut order: Vec<usize> = (0..self.len()).collect();
        Rng::new(seed).shuffle(&mut order);
        Ok(deal(order, k, self.len()))
    }

    /// `k` folds that keep each class's share: each class's samples are shuffled (seeded) and
    /// dealt round the folds in turn, continuing from fold to fold across classes, so every
    /// fold holds each class's count to within one and fold sizes differ by at most one.
    pub fn stratified_folds(&self, k: usize, seed: u64) -> Result<Folds> {
        self.check_k("Dataset::stratified_folds", k)?;
        let mut rng = Rng::new(seed);
        let mut order = Vec::with_capacity(self.len());
        for class in 0..self.classes as u32 {
            let mut members: Vec<usize> = (0..self.len()).filter(|&i| self.labels[i] == class).collect();
            rng.shuffle(&mut members);
            order.extend(members);
        }
        Ok(deal(order, k, self.len()))
    }

    fn check_k(&self, op: &'static str, k: usize) -> Result<()> {
        if k < 2 || k > self.len() {
            return invalid(
                op,
                format!("k must be between 2 and the {} samples, got {k}", self.len()),
            );
        }
        Ok(())
    }
}

/// Deal `order` round `k` folds: sample `order[j]` goes to fold `j mod k`.
fn deal(order: Vec<usize>, k: usize, len: usize) -> Folds {
    let mut validation = vec![Vec::with_capacity(len / k + 1); k];
    for (j, s) in order.into_iter().enumerate() {
        validation[j % k].push(s);
    }
    for v in &mut validation {
        v.sort_unstable();
    }
    Folds { validation, len }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 23 samples: 12 of class 0, 8 of class 1, 3 of class 2; sample i's value is i.
    fn data() -> Dataset {
        let labels: Vec<u32> = (0..23)
            .map(|i| {
                if i < 12 {
                    0
                } else if i < 20 {
                    1
                } else {
                    2
                }
            })
            .collect();
        Dataset::new((0..23).map(|v| v as f32).collect(), labels, vec![1], 3).unwrap()
    }

    fn check_partition(f: &Folds, n: usize) {
        let mut all: Vec<usize> = (0..f.k()).flat_map(|i| f.validation(i).to_vec()).collect();
        all.sort_unstable();
        assert_eq!(all, (0..n).collect::<Vec<_>>(), "every sample in exactly one fold");
        let sizes: Vec<usize> = (0..f.k()).map(|i| f.validation(i).len()).collect();
        assert!(
            sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
            "{sizes:?}"
        );
        for i in 0..f.k() {
            let mut t = f.training(i);
            t.extend(f.validation(i));
            t.sort_unstable();
            assert_eq!(
                t,
                (0..n).collect::<Vec<_>>(),
                "fold {i}: training and validation partition"
            );
        }
    }

    #[test]
    fn folds_partition_the_samples() {
        let d = data();
        for k in [2, 5, 23] {
            check_partition(&d.folds(k, 1).unwrap(), 23);
            check_partition(&d.stratified_folds(k, 1).unwrap(), 23);
        }
        assert_eq!(d.folds(5, 1).unwrap(), d.folds(5, 1).unwrap());
        assert_ne!(d.folds(5, 1).unwrap(), d.folds(5, 2).unwrap());
        for k in [0, 1, 24] {
            assert!(d.folds(k, 1).is_err() && d.stratified_folds(k, 1).is_err(), "k = {k}");
        }
        let (t, v) = d.folds(5, 3).unwrap().split(&d, 2).unwrap();
        assert_eq!(t.len() + v.len(), 23);
        assert!(v.images.iter().all(|x| !t.images.contains(x)));
        assert!(d.folds(5, 3).unwrap().split(&d, 5).is_err());
        assert!(d.folds(5, 3).unwrap().split(&d.take(10), 0).is_err());
    }

    #[test]
    fn stratified_folds_keep_each_class_share() {
        let d = data();
        let f = d.stratified_folds(4, 7).unwrap();
        for i in 0..4 {
            let count = |c: u32| f.validation(i).iter().filter(|&&s| d.labels[s] == c).count();
            // 12, 8 and 3 samples over 4 folds: 3 each of class 0, 2 each of class 1, 0 or 1 of class 2.
            assert_eq!((count(0), count(1)), (3, 2), "fold {i}");
            assert!(count(2) <= 1, "fold {i}");
        }
    }

    #[test]
    fn bootstrap_draws_with_replacement() {
        let d = Dataset::new((0..1000).map(|v| v as f32).collect(), vec![0; 1000], vec![1], 1).unwrap();
        let b = d.bootstrap(5);
        assert_eq!(b.len(), 1000);
        let mut distinct = b.images.clone();
        distinct.sort_by(f32::total_cmp);
        distinct.dedup();
        // 1 − 1/e ≈ 63.2% distinct; the sd over draws is about 1.2%.
        assert!((580..=690).contains(&distinct.len()), "{} distinct", distinct.len());
        assert_eq!(b, d.bootstrap(5));
        assert_ne!(b, d.bootstrap(6));
    }
}
