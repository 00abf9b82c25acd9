//! Checkpoints: a save and load round trip restores everything a run needs, resuming is
//! bit-exact on both backends, a file that does not fit the model is refused with every
//! difference named and nothing changed, and a process killed while saving never leaves a
//! torn file.

mod common;

use common::*;
use kiln::checkpoint::{self, CheckpointInfo};
use kiln::train::{FitConfig, Trainer};
use kiln::{backward, loss, nn, Backend, Cpu, Feed, Graph, Init, Optimizer, ParamStore, Program, Training};
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// A small MLP with Adam; returns the store after `steps` updates, and the graph pieces.
fn mlp<B: Backend>(b: &B, seed: u64, hidden: usize) -> (Graph, kiln::NodeId, kiln::Gradients, ParamStore<B>) {
    let mut g = Graph::new();
    let x = g.input("x", [8, 5]).unwrap();
    let y = g.labels("y", [8], 3).unwrap();
    let h = nn::Linear::new(&mut g, "l1", 5, hidden)
        .unwrap()
        .forward(&mut g, x)
        .unwrap();
    let h = g.relu(h).unwrap();
    let logits = nn::Linear::new(&mut g, "l2", hidden, 3)
        .unwrap()
        .forward(&mut g, h)
        .unwrap();
    let l = loss::cross_entropy(&mut g, logits, y).unwrap();
    let grads = backward(&mut g, l).unwrap();
    let store = ParamStore::new(b, &g, seed).unwrap();
    (g, l, grads, store)
}

fn weights<B: Backend>(s: &ParamStore<B>) -> Vec<Vec<f32>> {
    s.entries().iter().map(|e| s.get(&e.name).unwrap().data).collect()
}

#[test]
fn a_round_trip_restores_weights_state_and_counters() {
    let (g, l, grads, mut a) = mlp(&Cpu, 1, 16);
    let opt = Optimizer::adam(0.01);
    let mut p = Program::compile(&g, &mut a, &[l], Some(Training::new(&grads, &opt))).unwrap();
    let xs = values(2, 40, -1.0, 1.0);
    for _ in 0..3 {
        p.run(&[("x", Feed::F32(&xs)), ("y", Feed::Labels(&[0, 1, 2, 0, 1, 2, 0, 1]))])
            .unwrap();
    }
    let path = tmp("round.safetensors");
    let mut info = CheckpointInfo {
        model: "mlp".into(),
        epoch: 7,
        ..Default::default()
    };
    info.extra.insert("lr".into(), "0.01".into());
    checkpoint::save(&path, &a, &info).unwrap();
    let (_, _, _, mut b) = mlp(&Cpu, 99, 16);
    assert_ne!(weights(&a), weights(&b));
    let got = checkpoint::load(&path, &mut b, Some("mlp")).unwrap();
    assert_eq!(got, info);
    assert_eq!(weights(&a), weights(&b));
    assert_eq!(b.updates(), 3);
    for slot in 0..2 {
        assert_eq!(a.read_state(slot).unwrap(), b.read_state(slot).unwrap());
    }
    // The weights are readable by any safetensors reader under their own names.
    let (tensors, meta) = checkpoint::read(&path).unwrap();
    assert_eq!(tensors["l1.w"].data, a.get("l1.w").unwrap().data);
    assert_eq!(meta["model"], "mlp");
    assert_eq!(meta["kiln_version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn a_checkpoint_that_does_not_fit_is_refused_and_changes_nothing() {
    let (_, _, _, a) = mlp(&Cpu, 1, 16);
    let path = tmp("misfit.safetensors");
    let info = CheckpointInfo {
        model: "mlp".into(),
        ..Default::default()
    };
    checkpoint::save(&path, &a, &info).unwrap();
    // Another hidden size: shapes differ.
    let (_, _, _, mut b) = mlp(&Cpu, 2, 12);
    let before = weights(&b);
    let e = checkpoint::load(&path, &mut b, Some("mlp")).unwrap_err().to_string();
    assert!(
        e.contains("`l1.w` has shape [5, 16] in the file, [5, 12] in the model"),
        "{e}"
    );
    assert!(e.contains("`l2.w`"), "every difference is named: {e}");
    assert_eq!(weights(&b), before, "nothing was written");
    // Another model name.
    let (_, _, _, mut c) = mlp(&Cpu, 2, 16);
    let e = checkpoint::load(&path, &mut c, Some("lenet")).unwrap_err().to_string();
    assert!(e.contains("model `mlp`, not `lenet`"), "{e}");
    // A parameter the model lacks, and one it has that the file lacks.
    let mut g = Graph::new();
    g.param("l1.w", [5, 16], Init::Zeros).unwrap();
    g.param("other", [3], Init::Zeros).unwrap();
    let mut d = ParamStore::new(&Cpu, &g, 0).unwrap();
    let e = checkpoint::load(&path, &mut d, None).unwrap_err().to_string();
    assert!(
        e.contains("`other` is missing") && e.contains("`l2.b` is not a parameter of this model"),
        "{e}"
    );
    // A truncated file and a file that is not a checkpoint.
    let bytes = std::fs::read(&path).unwrap();
    let cut = tmp("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert!(checkpoint::load(&cut, &mut c, None).is_err());
    std::fs::write(&cut, b"not a checkpoint").unwrap();
    assert!(checkpoint::load(&cut, &mut c, None).is_err());
    assert!(checkpoint::load(Path::new("/nonexistent/kiln.safetensors"), &mut c, None).is_err());
}

/// LeNet on 256 MNIST images, 2 epochs straight against 1 epoch, save, a fresh trainer, load
/// and the second epoch: the weights are bit-identical.
fn resume_is_exact<B: Backend>(b: &B) {
    let (train, _) = kiln::data::load_mnist(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist"))).unwrap();
    let mut train = train.take(256);
    let (m, s) = train.stats();
    train.normalize(m, s);
    let opt = Optimizer::adam(1e-3);
    let trainer = || {
        Trainer::classifier(
            b,
            &train.sample_shape,
            10,
            32,
            &|g, x, _| nn::lenet5(g, x),
            None,
            &opt,
            3,
        )
        .unwrap()
    };
    let cfg = |epochs, start_epoch| FitConfig {
        epochs,
        seed: 4,
        progress: false,
        start_epoch,
        ..Default::default()
    };
    let mut straight = trainer();
    straight.fit(&train, None, &cfg(2, 0)).unwrap();

    let path = tmp(&format!("resume-{}.safetensors", b.info().backend));
    let mut first = trainer();
    first.fit(&train, None, &cfg(1, 0)).unwrap();
    first.save(&path, "lenet", 1).unwrap();
    drop(first);
    let mut second = trainer();
    let done = second.load(&path, "lenet").unwrap();
    assert_eq!(done, 1);
    second.fit(&train, None, &cfg(2, done)).unwrap();
    for e in straight.store().entries() {
        assert_eq!(
            second.store().get(&e.name).unwrap().data,
            straight.store().get(&e.name).unwrap().data,
            "{} after resuming",
            e.name
        );
    }
}

#[test]
fn resume_is_exact_cpu() {
    resume_is_exact(&Cpu);
}

#[test]
fn resume_is_exact_gpu() {
    let Some(gpu) = gpu() else { return };
    resume_is_exact(&gpu);
}

/// Run as a child process by `saving_is_atomic_under_kill`: save checkpoints whose every value
/// is the save's number, forever.
#[test]
#[ignore = "a helper process of saving_is_atomic_under_kill"]
fn checkpoint_writer_child() {
    let Ok(path) = std::env::var("KILN_CHECKPOINT_CHILD") else {
        return;
    };
    let mut g = Graph::new();
    g.param("big", [1 << 21], Init::Zeros).unwrap();
    g.param("small", [7], Init::Zeros).unwrap();
    let store = ParamStore::new(&Cpu, &g, 0).unwrap();
    for i in 1.. {
        store.set("big", &vec![i as f32; 1 << 21]).unwrap();
        store.set("small", &[i as f32; 7]).unwrap();
        let info = CheckpointInfo {
            model: "atomic".into(),
            epoch: i,
            ..Default::default()
        };
        checkpoint::save(Path::new(&path), &store, &info).unwrap();
    }
}

#[test]
fn saving_is_atomic_under_kill() {
    let path = tmp("atomic.safetensors");
    let _ = std::fs::remove_file(&path);
    let exe = std::env::current_exe().unwrap();
    let mut loaded = 0;
    // Kill at varied moments: during start-up, the first save, or any later one. Until a first
    // save has landed the wait doubles, so a loaded machine (slow start-up) still gets there.
    let mut base = 40u64;
    let mut round = 0u64;
    while loaded < 8 && round < 40 {
        let mut child = std::process::Command::new(&exe)
            .args(["--exact", "checkpoint_writer_child", "--ignored", "--nocapture"])
            .env("KILN_CHECKPOINT_CHILD", &path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(base + round * 37 % 200));
        child.kill().unwrap();
        child.wait().unwrap();
        round += 1;
        if !path.exists() {
            base = (base * 2).min(4000); // killed before the first save finished: no file, never a partial one
            continue;
        }
        let (t, meta) = checkpoint::read(&path).unwrap_or_else(|e| panic!("round {round}: a torn file: {e}"));
        let epoch: f32 = meta["epoch"].parse().unwrap();
        assert!(t["big"].data.iter().all(|&v| v == epoch), "round {round}: mixed saves");
        assert!(t["small"].data.iter().all(|&v| v == epoch));
        loaded += 1;
    }
    assert!(
        loaded >= 8,
        "only {loaded} of {round} killed children left a checkpoint to check"
    );
}

/// A LeNet-5 trained and saved by PyTorch (`tools/torch_lenet_safetensors.py export`, its names
/// and layout) evaluates in Kiln to the accuracy PyTorch measured, on both backends.
fn pytorch_lenet_imports<B: Backend>(b: &B) {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/torch_lenet.safetensors"
    ));
    let (_, mut test) = kiln::data::load_mnist(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist"))).unwrap();
    let opt = Optimizer::adam(1e-3);
    let mut t = Trainer::classifier(
        b,
        &test.sample_shape,
        10,
        500,
        &|g, x, _| nn::lenet5(g, x),
        None,
        &opt,
        0,
    )
    .unwrap();
    let meta = checkpoint::import(path, t.store(), nn::LENET5_TORCH_NAMES).unwrap();
    // PyTorch's normalisation constants, as it computed them.
    let (mean, std): (f32, f32) = (meta["mean"].parse().unwrap(), meta["std"].parse().unwrap());
    test.normalize(mean, std);
    let acc = t.evaluate(&test).unwrap().accuracy;
    let torch: f32 = meta["test_accuracy"].parse().unwrap();
    eprintln!("{}: PyTorch {torch}, Kiln {acc}", b.info().backend);
    assert!(
        (acc - torch).abs() <= 0.0005,
        "Kiln {acc} vs PyTorch {torch}: more than 0.05 points apart"
    );
    // A map that does not fit is refused with what differs.
    let bad: &[(&str, &str, bool)] = &[("c1.weight", "conv1.w", true)];
    let e = checkpoint::import(path, t.store(), bad).unwrap_err().to_string();
    assert!(
        e.contains("has shape [6, 1, 5, 5], `conv1.w` needs [5, 5, 1, 6]") && e.contains("`fc3.b` has no entry"),
        "{e}"
    );
}

#[test]
fn pytorch_lenet_imports_cpu() {
    pytorch_lenet_imports(&Cpu);
}

#[test]
fn pytorch_lenet_imports_gpu() {
    let Some(gpu) = gpu() else { return };
    pytorch_lenet_imports(&gpu);
}
