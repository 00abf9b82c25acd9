//! The general training loop: any graph, named inputs, custom metrics, validation every N
//! steps, early stopping that restores the best weights, callbacks that stop a run.

mod common;

use kiln::learner::{Batch, Batches, Control, Event, FitOptions, Learner, Metric, Validate};
use kiln::{loss, nn, Cpu, Graph, Optimizer};

/// A regression stream: `x` in a fixed grid, target `sign · 3x + 1`, in batches of 8.
struct Line {
    sign: f32,
    batches: usize,
}

impl Batches for Line {
    fn start(&mut self, _epoch: usize) -> kiln::Result<usize> {
        Ok(self.batches)
    }
    fn batch(&mut self, i: usize) -> kiln::Result<Batch> {
        let x: Vec<f32> = (0..8).map(|k| ((i * 8 + k) as f32 / 20.0) - 1.0).collect();
        let y: Vec<f32> = x.iter().map(|v| self.sign * 3.0 * v + 1.0).collect();
        Ok(Batch::new(8).f32("x", x).f32("t", y))
    }
}

fn regression() -> (Graph, kiln::NodeId, kiln::NodeId) {
    let mut g = Graph::new();
    let x = g.input("x", [8, 1]).unwrap();
    let t = g.input("t", [8, 1]).unwrap();
    let lin = nn::Linear::new(&mut g, "lin", 1, 1).unwrap();
    let y = lin.forward(&mut g, x).unwrap();
    let l = loss::mse(&mut g, y, t).unwrap();
    let err = g.sub(y, t).unwrap();
    let err = g.abs(err).unwrap();
    let mae = g.mean_all(err).unwrap();
    (g, l, mae)
}

#[test]
fn any_graph_trains_with_custom_metrics_and_step_validation() {
    let (g, l, mae) = regression();
    let mut learner = Learner::new(&Cpu, g, l, vec![Metric::mean("mae", mae)], &Optimizer::sgd(0.3), 1)
        .unwrap()
        .evaluation(vec![Metric::mean("loss", l), Metric::mean("mae", mae)])
        .unwrap();
    let opts = FitOptions {
        epochs: 30,
        validate: Validate::EverySteps(4),
        progress: false,
        ..Default::default()
    };
    let mut seen = 0;
    let report = learner
        .fit(
            &opts,
            &mut Line { sign: 1.0, batches: 5 },
            Some(&mut Line { sign: 1.0, batches: 2 }),
            &mut |_, e| {
                if let Event::Step { .. } = e {
                    seen += 1;
                }
                Ok(Control::Continue)
            },
        )
        .unwrap();
    assert_eq!(seen, 150);
    assert_eq!(report.validation.len(), 150 / 4);
    assert!(report.validation.iter().all(|v| v.1 % 4 == 0));
    let last = &report.train.last().unwrap();
    assert!(last.get("mae").unwrap() < 0.05, "{last}");
    assert!(report.validation.last().unwrap().2.get("loss").unwrap() < 1e-3);
    assert_eq!(report.log.steps.len(), 150);
    assert_eq!(report.log.epochs.len(), 30);
}

#[test]
fn early_stopping_restores_the_best_weights_and_names_their_epoch() {
    // Training fits +3x + 1 while validation wants −3x + 1: validation only gets worse after the
    // first epoch, so the best weights are epoch 1's and patience 2 stops after epoch 3.
    let (g, l, _) = regression();
    let mut learner = Learner::new(&Cpu, g, l, vec![], &Optimizer::sgd(0.05), 1)
        .unwrap()
        .evaluation(vec![Metric::mean("loss", l)])
        .unwrap();
    let opts = FitOptions {
        epochs: 20,
        patience: Some(2),
        restore_best: true,
        progress: false,
        ..Default::default()
    };
    let mut val = Line { sign: -1.0, batches: 2 };
    let report = learner
        .fit(
            &opts,
            &mut Line { sign: 1.0, batches: 5 },
            Some(&mut val),
            &mut |_, _| Ok(Control::Continue),
        )
        .unwrap();
    assert!(report.stopped_early && report.restored_best);
    assert_eq!(report.train.len(), 3);
    let (epoch, _, best) = report.best.unwrap();
    assert_eq!(epoch, 1);
    let losses: Vec<f64> = report.validation.iter().map(|v| v.2.get("loss").unwrap()).collect();
    assert!(losses[1] > losses[0] && losses[2] > losses[1], "{losses:?}");
    // The weights now are epoch 1's: the validation loss is the best one again.
    let now = learner.evaluate(&mut val).unwrap().get("loss").unwrap();
    assert!((now - best).abs() < 1e-9, "{now} vs {best}");

    // Without restore_best the last weights stay.
    let (g, l, _) = regression();
    let mut learner = Learner::new(&Cpu, g, l, vec![], &Optimizer::sgd(0.05), 1)
        .unwrap()
        .evaluation(vec![Metric::mean("loss", l)])
        .unwrap();
    let opts = FitOptions {
        restore_best: false,
        ..opts
    };
    learner
        .fit(
            &opts,
            &mut Line { sign: 1.0, batches: 5 },
            Some(&mut val),
            &mut |_, _| Ok(Control::Continue),
        )
        .unwrap();
    assert!(learner.evaluate(&mut val).unwrap().get("loss").unwrap() > best + 1e-3);
}

#[test]
fn a_callback_can_stop_the_run_and_bad_options_are_errors() {
    let (g, l, _) = regression();
    let mut learner = Learner::new(&Cpu, g, l, vec![], &Optimizer::sgd(0.05), 1).unwrap();
    let opts = FitOptions {
        epochs: 10,
        progress: false,
        ..Default::default()
    };
    let r = learner
        .fit(&opts, &mut Line { sign: 1.0, batches: 5 }, None, &mut |l, e| {
            Ok(match e {
                Event::Step { step, .. } if *step == 7 => {
                    assert_eq!(l.train_program().updates(), 7);
                    Control::Stop
                }
                _ => Control::Continue,
            })
        })
        .unwrap();
    assert!(r.stopped_early);
    assert_eq!(r.log.steps.len(), 7);
    // Validation without an evaluation program, patience 0, an unknown monitored metric.
    let e = learner
        .fit(
            &opts,
            &mut Line { sign: 1.0, batches: 5 },
            Some(&mut Line { sign: 1.0, batches: 1 }),
            &mut |_, _| Ok(Control::Continue),
        )
        .unwrap_err();
    assert!(e.to_string().contains("evaluation program"), "{e}");
    let bad = FitOptions {
        patience: Some(0),
        ..opts.clone()
    };
    let e = learner
        .fit(&bad, &mut Line { sign: 1.0, batches: 5 }, None, &mut |_, _| {
            Ok(Control::Continue)
        })
        .unwrap_err();
    assert!(e.to_string().contains("patience"), "{e}");
    let mut learner = learner.evaluation(vec![Metric::mean("loss", l)]).unwrap();
    let bad = FitOptions {
        monitor: "accuracy".into(),
        ..opts
    };
    let e = learner
        .fit(
            &bad,
            &mut Line { sign: 1.0, batches: 5 },
            Some(&mut Line { sign: 1.0, batches: 1 }),
            &mut |_, _| Ok(Control::Continue),
        )
        .unwrap_err();
    assert!(e.to_string().contains("accuracy"), "{e}");
}
