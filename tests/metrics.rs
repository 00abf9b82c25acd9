//! `Trainer::fit` with a metrics directory: the CSV files hold a header and one row per step and
//! per epoch, matching the History; the SVG curves are well-formed XML with the drawn series.

use kiln::data::Dataset;
use kiln::nn;
use kiln::rng::Rng;
use kiln::train::{FitConfig, Trainer};
use kiln::{Cpu, Optimizer};
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("kiln-metrics-{}-{name}", std::process::id()))
}

/// Two Gaussian blobs in 4-D, labels 0 and 1.
fn blobs(n: usize, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    let labels: Vec<u32> = (0..n).map(|i| (i % 2) as u32).collect();
    let images = labels
        .iter()
        .flat_map(|&l| {
            (0..4)
                .map(|_| rng.normal() + if l == 1 { 1.5 } else { -1.5 })
                .collect::<Vec<_>>()
        })
        .collect();
    Dataset::new(images, labels, vec![4], 2).unwrap()
}

fn trainer() -> Trainer<Cpu> {
    Trainer::classifier(
        &Cpu,
        &[4],
        2,
        16,
        &|g, x, _| nn::Linear::new(g, "fc", 4, 2)?.forward(g, x),
        None,
        &Optimizer::adam(0.05),
        1,
    )
    .unwrap()
}

/// The `<polyline>`s of an SVG, as (stroke colour, number of points).
fn polylines(svg: &str) -> Vec<(String, usize)> {
    let doc = roxmltree::Document::parse(svg).expect("well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    doc.descendants()
        .filter(|n| n.tag_name().name() == "polyline")
        .map(|n| {
            let stroke = n.attribute("stroke").unwrap_or("").to_string();
            (stroke, n.attribute("points").unwrap_or("").split_whitespace().count())
        })
        .collect()
}

fn texts(svg: &str) -> String {
    let doc = roxmltree::Document::parse(svg).unwrap();
    doc.descendants()
        .filter(|n| n.tag_name().name() == "text")
        .filter_map(|n| n.text())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("|")
}

#[test]
fn fit_writes_csv_and_svg_metrics() {
    let (train, val) = (blobs(160, 1), blobs(40, 2));
    let dir = tmp("run");
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = FitConfig {
        epochs: 3,
        seed: 5,
        progress: false,
        metrics: Some(dir.join("nested")),
        ..Default::default()
    };
    let hist = trainer().fit(&train, Some(&val), &cfg).unwrap();
    let dir = dir.join("nested");
    let steps = 160 / 16;
    assert_eq!((hist.log.steps.len(), hist.log.epochs.len()), (3 * steps, 3));

    let csv = std::fs::read_to_string(dir.join("steps.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows[0], ["epoch", "step", "loss", "samples_per_s", "learning_rate"]);
    assert_eq!(rows.len(), 1 + 3 * steps);
    for (i, r) in rows[1..].iter().enumerate() {
        assert_eq!(r.len(), 5, "{r:?}");
        assert_eq!(
            (r[0], r[1]),
            ((i / steps + 1).to_string().as_str(), (i + 1).to_string().as_str())
        );
        let loss: f32 = r[2].parse().unwrap();
        assert_eq!(loss, hist.log.steps[i].loss);
        assert!(r[3].parse::<f64>().unwrap() > 0.0 && r[4] == "0.05", "{r:?}");
    }
    let csv = std::fs::read_to_string(dir.join("epochs.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(
        rows[0],
        [
            "epoch",
            "step",
            "train_loss",
            "train_accuracy",
            "validation_loss",
            "validation_accuracy",
            "seconds"
        ]
    );
    assert_eq!(rows.len(), 4);
    for (e, r) in rows[1..].iter().enumerate() {
        assert_eq!(
            (r[0], r[1]),
            ((e + 1).to_string().as_str(), ((e + 1) * steps).to_string().as_str())
        );
        assert_eq!(r[4].parse::<f32>().unwrap(), hist.validation[e].loss);
        assert_eq!(r[5].parse::<f32>().unwrap(), hist.validation[e].accuracy);
    }
    // The blobs are separable: the model learned, and the curves show it.
    assert!(hist.validation[2].accuracy > 0.9, "{:?}", hist.validation);

    let loss = std::fs::read_to_string(dir.join("loss.svg")).unwrap();
    let lines = polylines(&loss);
    // The per-step curve (light blue) has a point per step; the epoch means a staircase of two
    // points per epoch; validation a point per epoch.
    assert!(lines.contains(&("#78A0DC".into(), 3 * steps)), "{lines:?}");
    assert!(lines.contains(&("#143CA0".into(), 6)), "{lines:?}");
    assert!(lines.contains(&("#DC5A14".into(), 3)), "{lines:?}");
    let t = texts(&loss);
    assert!(
        t.contains("Loss") && t.contains("step") && t.contains("validation loss"),
        "{t}"
    );
    let acc = std::fs::read_to_string(dir.join("accuracy.svg")).unwrap();
    let lines = polylines(&acc);
    assert!(
        lines.contains(&("#143CA0".into(), 3)) && lines.contains(&("#DC5A14".into(), 3)),
        "{lines:?}"
    );
    let t = texts(&acc);
    assert!(
        t.contains("Accuracy") && t.contains("accuracy (%)") && t.contains("epoch"),
        "{t}"
    );
    // Atomic writes leave no temporary files behind.
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["accuracy.svg", "epochs.csv", "loss.svg", "steps.csv"]);
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

#[test]
fn a_metrics_path_that_is_a_file_fails_before_training() {
    let file = tmp("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let mut t = trainer();
    let cfg = FitConfig {
        epochs: 1,
        progress: false,
        metrics: Some(file.clone()),
        ..Default::default()
    };
    let e = t.fit(&blobs(32, 1), None, &cfg).unwrap_err().to_string();
    assert!(e.contains("exists and is not a directory"), "{e}");
    // Nothing was trained.
    assert_eq!(t.train_program().updates(), 0);
    std::fs::remove_file(&file).unwrap();
}
