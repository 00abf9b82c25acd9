//! k-fold cross-validation and model selection with it: score a training recipe on each of
//! `k` folds (train on `k − 1`, score on the one held out), summarise the scores as mean ± sd,
//! and pick the best of several candidate recipes (an L2 weight, a dropout rate, ...).

use crate::data::{Dataset, Folds};
use crate::error::{invalid, Result};

/// A recipe's scores over the folds (higher is better).
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    /// The score on each fold's held-out samples, in fold order.
    pub folds: Vec<f32>,
    /// Their mean.
    pub mean: f32,
    /// Their sample standard deviation (`n − 1` in the divisor; 0 for one fold).
    pub sd: f32,
}

impl Score {
    /// The summary of `folds`.
    pub fn of(folds: Vec<f32>) -> Score {
        let n = folds.len().max(1) as f64;
        let mean = folds.iter().map(|&v| v as f64).sum::<f64>() / n;
        let ss = folds.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>();
        let sd = if folds.len() > 1 { (ss / (n - 1.0)).sqrt() } else { 0.0 };
        Score {
            folds,
            mean: mean as f32,
            sd: sd as f32,
        }
    }
}

/// Score one recipe by cross-validation: `score(fold, training, validation)` trains a model on
/// `training` and returns its score on `validation` (higher is better: an accuracy, or a
/// negated loss), for each fold of `folds` in turn.
pub fn cross_validate(
    data: &Dataset,
    folds: &Folds,
    mut score: impl FnMut(usize, &Dataset, &Dataset) -> Result<f32>,
) -> Result<Score> {
    let mut s = Vec::with_capacity(folds.k());
    for i in 0..folds.k() {
        let (train, val) = folds.split(data, i)?;
        let v = score(i, &train, &val)?;
        if !v.is_finite() {
            return invalid("cross_validate", format!("fold {i} scored {v}; scores must be finite"));
        }
        s.push(v);
    }
    Ok(Score::of(s))
}

/// The candidates with their cross-validated scores, and the winner.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection<C> {
    /// Each candidate and its score, in the order given.
    pub candidates: Vec<(C, Score)>,
    /// The position of the candidate with the highest mean score (the first, on a tie).
    pub best: usize,
}

impl<C> Selection<C> {
    /// The winning candidate.
    pub fn winner(&self) -> &C {
        &self.candidates[self.best].0
    }
}

/// Model selection by cross-validation: every candidate is scored on the same folds (the same
/// splits, so the comparison is paired) by `score(candidate, fold, training, validation)`, and
/// the one with the highest mean score wins.
pub fn select<C: Clone>(
    data: &Dataset,
    folds: &Folds,
    candidates: &[C],
    mut score: impl FnMut(&C, usize, &Dataset, &Dataset) -> Result<f32>,
) -> Result<Selection<C>> {
    if candidates.is_empty() {
        return invalid("select", "no candidates to choose from");
    }
    let mut scored = Vec::with_capacity(candidates.len());
    for c in candidates {
        let s = cross_validate(data, folds, |i, t, v| score(c, i, t, v))?;
        scored.push((c.clone(), s));
    }
    let best = scored
        .iter()
        .enumerate()
        .fold(0, |b, (i, (_, s))| if s.mean > scored[b].1.mean { i } else { b });
    Ok(Selection {
        candidates: scored,
        best,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_summarises_mean_and_sample_sd() {
        let s = Score::of(vec![0.8, 0.9, 1.0]);
        assert!((s.mean - 0.9).abs() < 1e-6 && (s.sd - 0.1).abs() < 1e-6, "{s:?}");
        assert_eq!(Score::of(vec![0.5]).sd, 0.0);
    }

    #[test]
    fn selection_scores_every_candidate_on_every_fold_and_picks_the_best() {
        let d = Dataset::new((0..20).map(|v| v as f32).collect(), vec![0; 20], vec![1], 1).unwrap();
        let folds = d.folds(4, 1).unwrap();
        let mut calls = vec![];
        // A candidate's score: the mean held-out value, shifted by the candidate.
        let sel = select(&d, &folds, &[0.0f32, 3.0, 1.0], |&c, i, t, v| {
            assert_eq!(t.len() + v.len(), 20);
            calls.push((c, i));
            Ok(c + v.images.iter().sum::<f32>() / v.len() as f32)
        })
        .unwrap();
        assert_eq!(calls.len(), 12);
        assert_eq!((sel.best, *sel.winner()), (1, 3.0));
        // Every candidate saw the same folds: their fold scores differ by the shift alone.
        let (a, b) = (&sel.candidates[0].1, &sel.candidates[1].1);
        assert!(a.folds.iter().zip(&b.folds).all(|(x, y)| (y - x - 3.0).abs() < 1e-5));
        // Held-out means average to the data's mean, 9.5.
        assert!((a.mean - 9.5).abs() < 1e-5, "{a:?}");
        assert!(select(&d, &folds, &[] as &[f32], |_, _, _, _| Ok(0.0)).is_err());
        let e = cross_validate(&d, &folds, |_, _, _| Ok(f32::NAN)).unwrap_err();
        assert!(e.to_string().contains("fold 0 scored NaN"), "{e}");
    }
}
