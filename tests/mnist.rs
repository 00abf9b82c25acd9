//! CI-fast end-to-end check: LeNet-5 trained on a few thousand real MNIST images classifies the
//! test set far above chance (10%).

use kiln::data::load_mnist;
use kiln::nn;
use kiln::train::{FitConfig, Trainer};
use kiln::{Cpu, Graph, NodeId, Optimizer};
use std::path::Path;

mod common;

fn lenet(g: &mut Graph, x: NodeId, _train: bool) -> kiln::Result<NodeId> {
    nn::lenet5(g, x)
}

/// Train LeNet on the first `n_train` MNIST images and return (accuracy before, after) on the
/// first `n_test` test images.
fn lenet_learns<B: kiln::Backend>(backend: &B, n_train: usize, epochs: usize, n_test: usize) -> (f32, f32) {
    let (train, test) = load_mnist(&Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist")).unwrap();
    assert_eq!(
        (train.len(), test.len(), train.sample_shape.clone()),
        (60_000, 10_000, vec![1, 28, 28])
    );
    let (mut train, mut test) = (train.take(n_train), test.take(n_test));
    let (mean, std) = train.stats();
    train.normalize(mean, std);
    test.normalize(mean, std);
    let opt = Optimizer::adam(2e-3);
    let mut t = Trainer::classifier(backend, &[1, 28, 28], 10, 64, &lenet, None, &opt, 1).unwrap();
    let before = t.evaluate(&test).unwrap();
    let hist = t
        .fit(
            &train,
            None,
            &FitConfig {
                epochs,
                seed: 1,
                patience: None,
                progress: false,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(hist.train.last().unwrap().loss < 2.0);
    (before.accuracy, t.evaluate(&test).unwrap().accuracy)
}

#[test]
fn lenet_learns_mnist_on_the_cpu() {
    let (before, after) = lenet_learns(&Cpu, 4000, 2, 2000);
    assert!(before < 0.3, "an untrained net is near chance: {before}");
    assert!(after > 0.85, "LeNet after 2 epochs on 4000 images: {after}");
}

#[test]
fn lenet_learns_mnist_on_the_gpu() {
    // lavapipe runs LeNet at ~100 samples/s, so CI trains on 4000 images for one epoch.
    let Some(gpu) = common::gpu() else { return };
    let (before, after) = lenet_learns(&gpu, 4000, 1, 1000);
    assert!(before < 0.3, "an untrained net is near chance: {before}");
    assert!(after > 0.8, "LeNet after 62 steps on 4000 images: {after}");
}

#[test]
fn corrupt_dataset_files_are_errors() {
    let dir = std::env::temp_dir().join(format!("kiln-corrupt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A truncated image file and a label file that is not IDX at all.
    std::fs::write(
        dir.join("train-images-idx3-ubyte"),
        [0u8, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28, 1, 2, 3],
    )
    .unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), b"not an idx file").unwrap();
    let e = load_mnist(&dir).unwrap_err().to_string();
    assert!(e.contains("train-images-idx3-ubyte") && e.contains("truncated"), "{e}");
    std::fs::write(
        dir.join("train-images-idx3-ubyte"),
        [0u8, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 7],
    )
    .unwrap();
    let e = load_mnist(&dir).unwrap_err().to_string();
    assert!(e.contains("magic"), "{e}");
    std::fs::write(dir.join("train-labels-idx1-ubyte.gz"), [0x1f, 0x8b, 1, 2, 3]).unwrap();
    std::fs::remove_file(dir.join("train-labels-idx1-ubyte")).unwrap();
    let e = load_mnist(&dir).unwrap_err().to_string();
    assert!(e.contains("gzip"), "{e}");
    let e = load_mnist(&dir.join("missing")).unwrap_err().to_string();
    assert!(e.contains("neither"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
