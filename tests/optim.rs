//! Each optimiser's update against a step computed by hand, in f64, from its published
//! equations, on every backend. The loss is `Σ c ⊙ w`, so the gradient is the constant `c` and
//! every step can be followed exactly.

mod common;

use common::{assert_close, backend_test};
use kiln::{backward, Backend, Graph, Init, Optimizer, ParamStore, Program, Schedule, Training};

const C: [f64; 4] = [0.5, -1.0, 2.0, -0.03];
const W0: [f64; 4] = [0.1, -0.2, 0.3, 0.4];

/// Run `steps` updates of `opt` on `loss = Σ c ⊙ w` and return `w` after each step.
fn run<B: Backend>(dev: &B, opt: &Optimizer, steps: usize, decay: bool) -> Vec<Vec<f32>> {
    let mut g = Graph::new();
    let w = g.param("w", [4], Init::Zeros).unwrap();
    g.set_decay("w", decay).unwrap();
    let c = g.input("c", [4]).unwrap();
    let p = g.mul(w, c).unwrap();
    let loss = g.sum_all(p).unwrap();
    let grads = backward(&mut g, loss).unwrap();
    let mut store = ParamStore::new(dev, &g, 0).unwrap();
    store.set("w", &W0.map(|v| v as f32)).unwrap();
    let mut prog = Program::compile(&g, &mut store, &[loss], Some(Training::new(&grads, opt))).unwrap();
    let cf = C.map(|v| v as f32);
    (0..steps)
        .map(|_| {
            prog.run(&[("c", kiln::Feed::F32(&cf))]).unwrap();
            store.get("w").unwrap().data
        })
        .collect()
}

fn check<B: Backend>(
    dev: &B,
    opt: Optimizer,
    decay: bool,
    reference: impl Fn(usize, &mut [f64; 4], &mut [[f64; 4]; 2]),
) {
    let got = run(dev, &opt, 5, decay);
    let mut w = W0;
    let mut state = [[0.0; 4]; 2];
    for (t, g) in got.iter().enumerate() {
        reference(t + 1, &mut w, &mut state);
        // f32 arithmetic on the device vs f64 here: a few ulps per step.
        assert_close(g, &w.map(|v| v as f32), 1e-6, 1e-5);
    }
}

backend_test!(fn sgd_and_weight_decay(dev) {
    let (lr, wd) = (0.1, 0.01);
    check(dev, Optimizer::sgd(lr as f32), false, |_, w, _| {
        for i in 0..4 {
            w[i] -= lr * C[i];
        }
    });
    check(dev, Optimizer::sgd(lr as f32).weight_decay(wd as f32), true, |_, w, _| {
        for i in 0..4 {
            w[i] -= lr * (C[i] + wd * w[i]);
        }
    });
    // Parameters not marked for decay are not decayed.
    check(dev, Optimizer::sgd(lr as f32).weight_decay(wd as f32), false, |_, w, _| {
        for i in 0..4 {
            w[i] -= lr * C[i];
        }
    });
});

backend_test!(fn momentum_and_nesterov(dev) {
    let (lr, mu) = (0.1, 0.9);
    check(dev, Optimizer::momentum(lr as f32, mu), false, |_, w, s| {
        for i in 0..4 {
            s[0][i] = mu * s[0][i] + C[i];
            w[i] -= lr * s[0][i];
        }
    });
    check(dev, Optimizer::nesterov(lr as f32, mu), false, |_, w, s| {
        for i in 0..4 {
            s[0][i] = mu * s[0][i] + C[i];
            w[i] -= lr * (C[i] + mu * s[0][i]);
        }
    });
});

backend_test!(fn adagrad_and_rmsprop(dev) {
    let lr = 0.1;
    check(dev, Optimizer::adagrad(lr as f32), false, |_, w, s| {
        for i in 0..4 {
            s[0][i] += C[i] * C[i];
            w[i] -= lr * C[i] / (s[0][i].sqrt() + 1e-10);
        }
    });
    check(dev, Optimizer::rmsprop(lr as f32), false, |_, w, s| {
        for i in 0..4 {
            s[0][i] = 0.99 * s[0][i] + 0.01 * C[i] * C[i];
            w[i] -= lr * C[i] / (s[0][i].sqrt() + 1e-8);
        }
    });
});

backend_test!(fn adam_with_bias_correction(dev) {
    let (lr, b1, b2, eps) = (0.1f64, 0.9f64, 0.999f64, 1e-8f64);
    // The first step of bias-corrected Adam moves every weight by lr·sign(g), whatever |g| is.
    let first = run(dev, &Optimizer::adam(lr as f32), 1, false);
    let expected: Vec<f32> = (0..4).map(|i| (W0[i] - lr * C[i].signum()) as f32).collect();
    assert_close(&first[0], &expected, 1e-6, 1e-5);
    check(dev, Optimizer::adam(lr as f32), false, |t, w, s| {
        for i in 0..4 {
            s[0][i] = b1 * s[0][i] + (1.0 - b1) * C[i];
            s[1][i] = b2 * s[1][i] + (1.0 - b2) * C[i] * C[i];
            let mh = s[0][i] / (1.0 - b1.powi(t as i32));
            let vh = s[1][i] / (1.0 - b2.powi(t as i32));
            w[i] -= lr * mh / (vh.sqrt() + eps);
        }
    });
});

backend_test!(fn adamw_decouples_weight_decay(dev) {
    let (lr, b1, b2, eps, wd) = (0.1f64, 0.9f64, 0.999f64, 1e-8f64, 0.05f64);
    check(dev, Optimizer::adamw(lr as f32, wd as f32), true, |t, w, s| {
        for i in 0..4 {
            w[i] -= lr * wd * w[i];
            s[0][i] = b1 * s[0][i] + (1.0 - b1) * C[i];
            s[1][i] = b2 * s[1][i] + (1.0 - b2) * C[i] * C[i];
            let mh = s[0][i] / (1.0 - b1.powi(t as i32));
            let vh = s[1][i] / (1.0 - b2.powi(t as i32));
            w[i] -= lr * mh / (vh.sqrt() + eps);
        }
    });
});

backend_test!(fn clipping_by_value_and_by_global_norm(dev) {
    let lr = 0.5;
    check(dev, Optimizer::sgd(lr as f32).clip_value(0.75), false, |_, w, _| {
        for i in 0..4 {
            w[i] -= lr * C[i].clamp(-0.75, 0.75);
        }
    });
    let norm = C.iter().map(|c| c * c).sum::<f64>().sqrt();
    check(dev, Optimizer::sgd(lr as f32).clip_norm(1.0), false, |_, w, _| {
        for i in 0..4 {
            w[i] -= lr * C[i] * (1.0 / (norm + 1e-6));
        }
    });
    // A norm already below the threshold is left alone.
    check(dev, Optimizer::sgd(lr as f32).clip_norm(100.0), false, |_, w, _| {
        for i in 0..4 {
            w[i] -= lr * C[i];
        }
    });
});

backend_test!(fn schedules_drive_the_learning_rate(dev) {
    let s = Schedule::StepDecay {
        lr: 0.1,
        every: 2,
        gamma: 0.5,
    };
    check(dev, Optimizer::sgd(0.0).schedule(s.clone()), false, |t, w, _| {
        let lr = 0.1 * 0.5f64.powi(((t - 1) / 2) as i32);
        for i in 0..4 {
            w[i] -= lr * C[i];
        }
    });
    let warm = Schedule::Constant(0.1).with_warmup(3);
    check(dev, Optimizer::sgd(0.0).schedule(warm), false, |t, w, _| {
        let lr = 0.1 * (t.min(3) as f64) / 3.0;
        for i in 0..4 {
            w[i] -= lr * C[i];
        }
    });
});

backend_test!(fn bad_hyperparameters_are_errors(dev) {
    let mut g = Graph::new();
    let w = g.param("w", [2], Init::Zeros).unwrap();
    let loss = g.sum_all(w).unwrap();
    let grads = backward(&mut g, loss).unwrap();
    let mut store = ParamStore::new(dev, &g, 0).unwrap();
    for opt in [
        Optimizer::momentum(0.1, 1.5),
        Optimizer::adam(0.1).weight_decay(-1.0),
        Optimizer::sgd(0.1).clip_norm(0.0),
    ] {
        let r = Program::compile(&g, &mut store, &[loss], Some(Training::new(&grads, &opt)));
        assert!(
            matches!(r, Err(kiln::Error::Invalid { .. })),
            "{opt:?} should be refused"
        );
    }
});
