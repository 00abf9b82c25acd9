//! CI-fast checks that issue 11's training techniques have their effect on real MNIST images,
//! on the CPU backend (lavapipe trains LeNet at ~100 samples/s; the ops' GPU kernels are
//! checked against the CPU in tests/augment.rs and tests/every_op.rs):
//! - on-device augmentation raises LeNet-5's test accuracy when it trains on 256 images;
//! - a bagged ensemble of three LeNet-5s on 2,000 images is at least as accurate as its best
//!   member.
//!
//! Budgets were chosen from seeds 1–3 (`KILN_TECHNIQUE_SEEDS=1,2,3` runs them all; CI runs
//! seed 1): see each test for the margins measured.

use kiln::data::{load_mnist, Dataset};
use kiln::ensemble::{Bagging, Ensemble, Recipe};
use kiln::graph::Augment;
use kiln::train::{FitConfig, Trainer};
use kiln::{nn, Cpu, Graph, NodeId, Optimizer};
use std::path::Path;

/// The first `n_train` training and `n_test` test images, normalised with the training
/// subset's statistics, and the blank-pixel value after normalisation.
fn mnist(n_train: usize, n_test: usize) -> (Dataset, Dataset, f32) {
    let (train, test) = load_mnist(&Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist")).unwrap();
    let (mut train, mut test) = (train.take(n_train), test.take(n_test));
    let (mean, std) = train.stats();
    train.normalize(mean, std);
    test.normalize(mean, std);
    (train, test, -mean / std)
}

fn seeds() -> Vec<u64> {
    std::env::var("KILN_TECHNIQUE_SEEDS")
        .map(|s| {
            s.split(',')
                .map(|v| v.trim().parse().expect("KILN_TECHNIQUE_SEEDS: integers"))
                .collect()
        })
        .unwrap_or_else(|_| vec![1])
}

fn lenet(g: &mut Graph, x: NodeId, _: bool) -> kiln::Result<NodeId> {
    nn::lenet5(g, x)
}

/// LeNet-5 trained (Adam 2e-3, batch 64) with `aug` on `train` for `epochs`: test accuracy.
fn lenet_accuracy(train: &Dataset, test: &Dataset, aug: Augment, epochs: usize, seed: u64) -> f32 {
    let model = nn::augmented(lenet, aug);
    let opt = Optimizer::adam(2e-3);
    let mut t = Trainer::classifier(&Cpu, &[1, 28, 28], 10, 64, &model, None, &opt, seed).unwrap();
    let cfg = FitConfig {
        epochs,
        seed,
        progress: false,
        ..Default::default()
    };
    t.fit(train, None, &cfg).unwrap();
    t.evaluate_with(test, false, "test").unwrap().accuracy
}

#[test]
fn augmentation_helps_lenet_on_256_images() {
    // 256 images, 40 epochs (160 steps): without augmentation LeNet fits the training set
    // (100%) and overfits; with shifts of ±2 px, rotations of ±10°, contrast ±20%, brightness
    // ±0.1 sd and noise 0.1 sd it does not. On the first 2,000 test images, seeds 1, 2, 3:
    // 79.25 → 88.50%, 81.30 → 88.35%, 81.55 → 86.15% (+4.6 to +9.3 points; on all 10,000 test
    // images +3.8 to +7.0). Required: +2 points.
    let (train, test, fill) = mnist(256, 2000);
    let aug = Augment {
        shift: 2,
        rotate: 10.0,
        contrast: 0.2,
        brightness: 0.1,
        noise: 0.1,
        fill,
        ..Default::default()
    };
    for seed in seeds() {
        let plain = lenet_accuracy(&train, &test, Augment::default(), 40, seed);
        let augmented = lenet_accuracy(&train, &test, aug, 40, seed);
        eprintln!("seed {seed}: plain {plain:.4}, augmented {augmented:.4}");
        assert!(
            augmented >= plain + 0.02,
            "seed {seed}: augmentation did not help: test accuracy {augmented} vs {plain} without"
        );
    }
}

#[test]
fn a_bagged_ensemble_is_at_least_as_accurate_as_its_best_member() {
    // Three LeNet-5s on bootstrap resamples of 2,000 images, 3 epochs each (84–86% alone on
    // the first 2,000 test images). For seeds 1–5 the ensemble beat its best member by 0.65,
    // 1.35, 1.1, 2.15 and 1.85 points. At half the data (1,000 images) members were weaker and
    // further apart (66–77%) and a lucky member beat an ensemble of five once (seed 1), so the
    // budget is one where members are of similar quality, as bagging assumes; with it the
    // stronger claim (the best member, not the mean) holds with room.
    let (train, test, _) = mnist(2000, 2000);
    let recipe = Recipe {
        sample_shape: vec![1, 28, 28],
        classes: 10,
        batch: 64,
        model: &lenet,
        penalty: None,
        optimizer: Optimizer::adam(1e-3),
    };
    for seed in seeds() {
        let bagging = Bagging {
            members: 3,
            bootstrap: true,
            seed,
        };
        let fit = FitConfig {
            epochs: 3,
            seed,
            progress: false,
            ..Default::default()
        };
        let mut ens = Ensemble::train(&Cpu, &recipe, &train, &bagging, &fit).unwrap();
        let acc = ens.evaluate(&test).unwrap();
        eprintln!("seed {seed}: {acc:?}");
        assert!(
            acc.ensemble >= acc.best_member(),
            "seed {seed}: the ensemble ({}) is less accurate than its best member ({}): {:?}",
            acc.ensemble,
            acc.best_member(),
            acc.members
        );
        // The members really differ (bootstrap resamples and seeds), or averaging proves nothing.
        assert!(acc.members.windows(2).any(|w| w[0] != w[1]), "{:?}", acc.members);
    }
}
