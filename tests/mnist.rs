//! CI-fast end-to-end check: LeNet-5 trained on a few thousand real MNIST images classifies the
//! test set far above chance (10%).

use kiln::data::load_mnist;
use kiln::nn::{self, Conv2d, Linear};
use kiln::train::{FitConfig, Trainer};
use kiln::{Cpu, Graph, NodeId, Optimizer};
use std::path::Path;

fn lenet(g: &mut Graph, x: NodeId, _train: bool) -> kiln::Result<NodeId> {
    let c1 = Conv2d::new(g, "conv1", 1, 6, 5, 1, 2)?;
    let c2 = Conv2d::new(g, "conv2", 6, 16, 5, 1, 0)?;
    let f1 = Linear::new(g, "fc1", 400, 120)?;
    let f2 = Linear::new(g, "fc2", 120, 84)?;
    let f3 = Linear::new(g, "fc3", 84, 10)?;
    let h = c1.forward(g, x)?;
    let h = g.relu(h)?;
    let h = g.max_pool2d(h, [2, 2], [2, 2], [0, 0])?;
    let h = c2.forward(g, h)?;
    let h = g.relu(h)?;
    let h = g.max_pool2d(h, [2, 2], [2, 2], [0, 0])?;
    let h = nn::flatten(g, h)?;
    let h = f1.forward(g, h)?;
    let h = g.relu(h)?;
    let h = f2.forward(g, h)?;
    let h = g.relu(h)?;
    f3.forward(g, h)
}

#[test]
fn lenet_learns_mnist_from_a_few_thousand_images() {
    let (train, test) = load_mnist(&Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist")).unwrap();
    assert_eq!(
        (train.len(), test.len(), train.sample_shape.clone()),
        (60_000, 10_000, vec![1, 28, 28])
    );
    let (mut train, mut test) = (train.take(4000), test.take(2000));
    let (mean, std) = train.stats();
    train.normalize(mean, std);
    test.normalize(mean, std);
    let opt = Optimizer::adam(2e-3);
    let mut t = Trainer::classifier(&Cpu, &[1, 28, 28], 10, 50, &lenet, None, &opt, 1).unwrap();
    let before = t.evaluate(&test).unwrap();
    let hist = t
        .fit(
            &train,
            None,
            &FitConfig {
                epochs: 2,
                seed: 1,
                patience: None,
                progress: false,
            },
        )
        .unwrap();
    let after = t.evaluate(&test).unwrap();
    assert!(hist.train[1].loss < hist.train[0].loss);
    assert!(before.accuracy < 0.3, "an untrained net is near chance: {before:?}");
    assert!(after.accuracy > 0.85, "LeNet after 2 epochs on 4000 images: {after:?}");
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
