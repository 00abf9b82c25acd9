//! Convergence: models that must learn, learn.

mod common;

use kiln::{backward, loss, nn, Cpu, Feed, Graph, Init, Optimizer, ParamStore, Program, Training};

#[test]
fn mlp_learns_xor() {
    let mut g = Graph::new();
    let x = g.input("x", [4, 2]).unwrap();
    let y = g.labels("y", [4], 2).unwrap();
    let l1 = nn::Linear::with_init(&mut g, "l1", 2, 16, Init::HeUniform, true).unwrap();
    let l2 = nn::Linear::new(&mut g, "l2", 16, 2).unwrap();
    let h = l1.forward(&mut g, x).unwrap();
    let h = g.relu(h).unwrap();
    let logits = l2.forward(&mut g, h).unwrap();
    let loss = loss::cross_entropy(&mut g, logits, y).unwrap();
    let grads = backward(&mut g, loss).unwrap();
    let mut store = ParamStore::new(&Cpu, &g, 3).unwrap();
    let opt = Optimizer::adam(0.03);
    let mut train = Program::compile(&g, &mut store, &[loss], Some(Training::new(&grads, &opt))).unwrap();
    let mut eval = Program::compile(&g, &mut store, &[logits], None).unwrap();
    let xs = [0., 0., 0., 1., 1., 0., 1., 1.];
    let ys = [0u32, 1, 1, 0];
    let feeds = [("x", Feed::F32(&xs)), ("y", Feed::Labels(&ys))];
    for _ in 0..400 {
        train.run(&feeds).unwrap();
    }
    let out = eval.run(&feeds).unwrap();
    assert_eq!(loss::accuracy(out.get(logits).unwrap(), &ys), 1.0);
}

/// Solve `A x = b` by Gaussian elimination with partial pivoting, in f64.
#[allow(clippy::needless_range_loop)]
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for c in 0..n {
        let p = (c..n).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs())).unwrap();
        a.swap(c, p);
        b.swap(c, p);
        for r in c + 1..n {
            let f = a[r][c] / a[c][c];
            for k in c..n {
                a[r][k] -= f * a[c][k];
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        x[r] = (b[r] - (r + 1..n).map(|k| a[r][k] * x[k]).sum::<f64>()) / a[r][r];
    }
    x
}

#[test]
#[allow(clippy::needless_range_loop)]
fn linear_regression_by_gradient_descent_matches_the_normal_equations() {
    let (n, d) = (64, 3);
    let feats = common::values(5, n * d, -1.0, 1.0);
    let noise = common::values(6, n, -0.1, 0.1);
    let true_w = [1.5, -2.0, 0.7];
    let ys: Vec<f32> = (0..n)
        .map(|i| (0..d).map(|j| feats[i * d + j] * true_w[j]).sum::<f32>() + 0.3 + noise[i])
        .collect();
    // Closed form with a bias column: w = (XᵀX)⁻¹ Xᵀy.
    let row = |i: usize| -> Vec<f64> { (0..d).map(|j| feats[i * d + j] as f64).chain([1.0]).collect() };
    let mut xtx = vec![vec![0.0; d + 1]; d + 1];
    let mut xty = vec![0.0; d + 1];
    for i in 0..n {
        let r = row(i);
        for a in 0..=d {
            xty[a] += r[a] * ys[i] as f64;
            for b in 0..=d {
                xtx[a][b] += r[a] * r[b];
            }
        }
    }
    let closed = solve(xtx, xty);

    let mut g = Graph::new();
    let x = g.input("x", [n, d]).unwrap();
    let y = g.input("y", [n, 1]).unwrap();
    let lin = nn::Linear::with_init(&mut g, "lin", d, 1, Init::Zeros, true).unwrap();
    let pred = lin.forward(&mut g, x).unwrap();
    let loss = loss::mse(&mut g, pred, y).unwrap();
    let grads = backward(&mut g, loss).unwrap();
    let mut store = ParamStore::new(&Cpu, &g, 0).unwrap();
    let opt = Optimizer::sgd(0.5);
    let mut train = Program::compile(&g, &mut store, &[loss], Some(Training::new(&grads, &opt))).unwrap();
    for _ in 0..3000 {
        train.run(&[("x", Feed::F32(&feats)), ("y", Feed::F32(&ys))]).unwrap();
    }
    let mut got = store.get("lin.w").unwrap().data;
    got.extend(store.get("lin.b").unwrap().data);
    let expected: Vec<f32> = closed.iter().map(|&v| v as f32).collect();
    common::assert_close(&got, &expected, 1e-4, 0.0);
}

#[test]
fn lenet_sizes_itself_to_the_images_and_refuses_what_it_cannot_take() {
    use kiln::{nn, Graph};
    for (h, w, features) in [(28, 28, 400), (32, 32, 576), (12, 20, 48)] {
        let mut g = Graph::new();
        let x = g.input("x", [2, 3, h, w]).unwrap();
        let y = nn::lenet5_for(&mut g, x, 7).unwrap();
        assert_eq!(g.shape(y).dims(), [2, 7]);
        let fc1 = g.param_node("fc1.w").unwrap();
        assert_eq!(g.shape(fc1).dims(), [features, 120], "{h}×{w}");
        assert_eq!(g.shape(g.param_node("conv1.w").unwrap()).dims(), [6, 3, 5, 5]);
    }
    let mut g = Graph::new();
    let x = g.input("x", [2, 1, 10, 28]).unwrap();
    let e = nn::lenet5_for(&mut g, x, 10).unwrap_err().to_string();
    assert!(e.contains("at least 12×12"), "{e}");
}

#[test]
fn datasets_check_their_parts() {
    use kiln::data::Dataset;
    assert!(Dataset::new(vec![0.0; 12], vec![0, 1, 2], vec![2, 2], 3).is_ok());
    let e = Dataset::new(vec![0.0; 12], vec![0, 1], vec![2, 2], 3)
        .unwrap_err()
        .to_string();
    assert!(e.contains("12 values are not 2 samples"), "{e}");
    let e = Dataset::new(vec![0.0; 12], vec![0, 5, 1], vec![2, 2], 3)
        .unwrap_err()
        .to_string();
    assert!(e.contains("sample 1 has label 5, outside the 3 classes"), "{e}");
}

#[test]
fn a_test_label_outside_the_training_classes_is_an_error_at_load() {
    let dir = std::env::temp_dir().join(format!("kiln-classes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let images = |n: u8| {
        let mut b = vec![0, 0, 8, 3, 0, 0, 0, n, 0, 0, 0, 2, 0, 0, 0, 2];
        b.extend(std::iter::repeat_n(7u8, 4 * n as usize));
        b
    };
    let labels = |l: &[u8]| {
        let mut b = vec![0, 0, 8, 1, 0, 0, 0, l.len() as u8];
        b.extend_from_slice(l);
        b
    };
    std::fs::write(dir.join("train-images-idx3-ubyte"), images(3)).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), labels(&[0, 1, 2])).unwrap();
    std::fs::write(dir.join("t10k-images-idx3-ubyte"), images(2)).unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), labels(&[1, 5])).unwrap();
    let e = kiln::data::load_mnist(&dir).unwrap_err().to_string();
    assert!(
        e.contains("t10k-labels-idx1-ubyte") && e.contains("label 5 of sample 1") && e.contains("3 classes"),
        "{e}"
    );
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), labels(&[1, 2])).unwrap();
    let (train, test) = kiln::data::load_mnist(&dir).unwrap();
    assert_eq!(
        (train.classes, test.classes, test.sample_shape.clone()),
        (3, 3, vec![1, 2, 2])
    );
}

/// The bundled table loads as described in data/README.md, and logistic regression on it (the
/// recipe of examples/logistic_regression.rs) beats the 58% majority baseline by far.
#[test]
fn logistic_regression_learns_the_bundled_breast_cancer_csv() {
    use kiln::data::{read_csv, CsvHeader};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/breast_cancer.csv");
    let table = read_csv(&path, CsvHeader::Auto).unwrap();
    assert_eq!((table.len(), table.columns), (569, 30));
    let names = table.names.clone().unwrap();
    assert_eq!(
        (names[0].as_str(), names[1].as_str(), names[30].as_str()),
        ("malignant", "mean_radius", "worst_fractal_dimension")
    );
    let data = table.classification(Some(2)).unwrap();
    assert_eq!(data.labels.iter().filter(|&&l| l == 1).count(), 212);
    let (mut train, mut test) = data.split(114, 1).unwrap();
    let (mean, std) = train.feature_stats();
    train.standardize(&mean, &std).unwrap();
    test.standardize(&mean, &std).unwrap();

    let mut g = Graph::new();
    let x = g.input("x", [train.len(), 30]).unwrap();
    let y = g.input("y", [train.len(), 1]).unwrap();
    let xt = g.input("xt", [test.len(), 30]).unwrap();
    let unit = nn::Linear::with_init(&mut g, "lr", 30, 1, Init::Zeros, true).unwrap();
    let z = unit.forward(&mut g, x).unwrap();
    let l = loss::bce_with_logits(&mut g, z, y).unwrap();
    let grads = backward(&mut g, l).unwrap();
    let zt = unit.forward(&mut g, xt).unwrap();
    let mut store = ParamStore::new(&Cpu, &g, 1).unwrap();
    let opt = Optimizer::adam(0.05);
    let mut step = Program::compile(&g, &mut store, &[l], Some(Training::new(&grads, &opt))).unwrap();
    let mut eval = Program::compile(&g, &mut store, &[zt], None).unwrap();
    let ty: Vec<f32> = train.labels.iter().map(|&v| v as f32).collect();
    for _ in 0..300 {
        step.run(&[("x", Feed::F32(&train.images)), ("y", Feed::F32(&ty))])
            .unwrap();
    }
    let out = eval.run(&[("xt", Feed::F32(&test.images))]).unwrap();
    let hits = out
        .get(zt)
        .unwrap()
        .data
        .iter()
        .zip(&test.labels)
        .filter(|(&z, &l)| (z >= 0.0) == (l == 1))
        .count();
    assert!(
        hits as f32 / test.len() as f32 >= 0.95,
        "{hits} of {} test rows right",
        test.len()
    );
}
