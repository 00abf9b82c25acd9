//! The augmentation op (`Graph::augment`, issue 11 part 2): each transformation does what it
//! says to every image of a batch, draws are reproducible per (seed, step) and fresh from step
//! to step, the two backends make identical integer choices, misuse is an error, and the
//! `nn::augmented` wrapper acts in training only. (Whether it helps a model learn is measured
//! in `tests/augment_effect.rs` and by `examples/augment.rs`.)

mod common;

use common::{backend_test, check_close, values};
use kiln::graph::Augment;
use kiln::{backward, Backend, Cpu, Error, Graph, Init, ParamStore, Program};

/// `aug` applied to `images` `(n, c, h, w)` on `dev`, as the training step with seed `seed` and
/// position `step` draws it.
fn run<B: Backend>(dev: &B, images: &[f32], shape: [usize; 4], aug: Augment, seed: u64, step: u64) -> Vec<f32> {
    let mut g = Graph::new();
    let x = g.input("x", shape.to_vec()).unwrap();
    let y = g.augment(x, aug).unwrap();
    let mut store = ParamStore::new(dev, &g, 0).unwrap();
    let mut p = Program::compile(&g, &mut store, &[y], None).unwrap();
    p.set_seed(seed);
    // A program's step is `updates + 1` (one micro-batch per update).
    p.set_updates(step - 1);
    p.run(&[("x", kiln::Feed::F32(images))])
        .unwrap()
        .get(y)
        .unwrap()
        .data
        .clone()
}

/// Distinct values per position (no two pixels alike), so a moved pixel can be traced.
fn distinct_images(n: usize, c: usize, h: usize, w: usize) -> Vec<f32> {
    (0..n * c * h * w).map(|i| 1.0 + i as f32 * 1e-3).collect()
}

/// The plane of image `i`, channel `ch`.
fn plane(v: &[f32], [_, c, h, w]: [usize; 4], i: usize, ch: usize) -> &[f32] {
    let s = h * w;
    &v[(i * c + ch) * s..(i * c + ch + 1) * s]
}

backend_test!(fn translation_moves_each_image_within_the_shift(dev) {
    let shape = [64, 2, 9, 7];
    let [n, c, h, w] = shape;
    let fill = -7.0;
    let x = distinct_images(n, c, h, w);
    let aug = Augment { shift: 2, fill, ..Default::default() };
    let y = run(dev, &x, shape, aug, 5, 3);
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..n {
        // The one (dx, dy) that explains every pixel of both channels exactly.
        let fits: Vec<(isize, isize)> = (-2..=2)
            .flat_map(|dy| (-2..=2).map(move |dx| (dx, dy)))
            .filter(|&(dx, dy)| {
                (0..c).all(|ch| {
                    let (src, out) = (plane(&x, shape, i, ch), plane(&y, shape, i, ch));
                    (0..h * w).all(|p| {
                        let (sy, sx) = ((p / w) as isize - dy, (p % w) as isize - dx);
                        let inside = sy >= 0 && sx >= 0 && sy < h as isize && sx < w as isize;
                        out[p] == if inside { src[sy as usize * w + sx as usize] } else { fill }
                    })
                })
            })
            .collect();
        assert_eq!(fits.len(), 1, "image {i}: no single shift within ±2 explains it ({fits:?})");
        seen.insert(fits[0]);
    }
    // 64 draws from 25 shifts: all but a few appear (P(a given shift missing) = (24/25)⁶⁴ ≈ 7%).
    assert!(seen.len() >= 18, "only {} distinct shifts in 64 images: {seen:?}", seen.len());
});

backend_test!(fn flip_mirrors_about_half_of_the_images(dev) {
    let shape = [200, 1, 5, 6];
    let [n, _, h, w] = shape;
    let x = distinct_images(n, 1, h, w);
    let y = run(dev, &x, shape, Augment { flip: true, ..Default::default() }, 1, 1);
    let mut flipped = 0;
    for i in 0..n {
        let (src, out) = (plane(&x, shape, i, 0), plane(&y, shape, i, 0));
        let mirror: Vec<f32> = (0..h * w).map(|p| src[(p / w) * w + (w - 1 - p % w)]).collect();
        if out == mirror {
            flipped += 1;
        } else {
            assert_eq!(out, src, "image {i} is neither itself nor its mirror");
        }
    }
    // Binomial(200, ½): sd ≈ 7; 70..=130 is more than 4 sd either side.
    assert!((70..=130).contains(&flipped), "{flipped} of 200 flipped");
});

backend_test!(fn contrast_and_brightness_are_one_affine_map_per_image(dev) {
    let shape = [100, 2, 4, 5];
    let [n, c, h, w] = shape;
    let x = values(3, n * c * h * w, -1.0, 2.0);
    let (center, bmax, cmax) = (0.2, 0.3, 0.5);
    let aug = Augment { brightness: bmax, contrast: cmax, center, ..Default::default() };
    let y = run(dev, &x, shape, aug, 9, 4);
    let (mut cs, mut bs) = (vec![], vec![]);
    for i in 0..n {
        let (src, out) = (plane(&x, shape, i, 0), plane(&y, shape, i, 0));
        // Solve y = c·(x − center) + center + b from two pixels, then check every pixel of
        // both channels.
        let cf = (out[1] - out[0]) / (src[1] - src[0]);
        let b = out[0] - cf * (src[0] - center) - center;
        for ch in 0..c {
            let (src, out) = (plane(&x, shape, i, ch), plane(&y, shape, i, ch));
            let want: Vec<f32> = src.iter().map(|&v| cf * (v - center) + center + b).collect();
            check_close(out, &want, 1e-4, 1e-4).unwrap_or_else(|e| panic!("image {i}, channel {ch}: {e}"));
        }
        assert!((1.0 - cmax - 1e-4..=1.0 + cmax + 1e-4).contains(&cf), "image {i}: contrast {cf}");
        assert!((-bmax - 1e-4..=bmax + 1e-4).contains(&b), "image {i}: brightness {b}");
        cs.push(cf);
        bs.push(b);
    }
    // Uniform draws fill their ranges.
    let spread = |v: &[f32]| v.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let ((clo, chi), (blo, bhi)) = (spread(&cs), spread(&bs));
    assert!(clo < 0.6 && chi > 1.4, "contrast range {clo}..{chi}");
    assert!(blo < -0.24 && bhi > 0.24, "brightness range {blo}..{bhi}");
});

backend_test!(fn noise_has_mean_zero_and_the_asked_deviation(dev) {
    let shape = [64, 1, 28, 28];
    let n: usize = shape.iter().product();
    let x = values(4, n, 0.0, 1.0);
    let sigma = 0.5;
    let y = run(dev, &x, shape, Augment { noise: sigma, ..Default::default() }, 2, 7);
    let d: Vec<f64> = y.iter().zip(&x).map(|(a, b)| (a - b) as f64).collect();
    let mean = d.iter().sum::<f64>() / n as f64;
    let sd = (d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
    // 50,176 samples: the standard error of the mean is 0.5/224 ≈ 0.0022, of the sd ≈ 0.0016.
    assert!(mean.abs() < 0.01, "noise mean {mean}");
    assert!((sd - sigma as f64).abs() < 0.01, "noise sd {sd}");
    let max = d.iter().fold(0f64, |m, v| m.max(v.abs()));
    assert!(max <= 6.0 * sigma as f64 + 1e-4 && max > 1.5, "largest noise {max}");
});

/// The orientation (degrees) of a plane's mass: half the angle of its second-moment ellipse.
fn orientation(p: &[f32], w: usize) -> (f64, f64) {
    let (mut m, mut mx, mut my) = (0f64, 0f64, 0f64);
    for (i, &v) in p.iter().enumerate() {
        let v = v.max(0.0) as f64;
        m += v;
        mx += v * (i % w) as f64;
        my += v * (i / w) as f64;
    }
    let (cx, cy) = (mx / m, my / m);
    let (mut sxx, mut syy, mut sxy) = (0f64, 0f64, 0f64);
    for (i, &v) in p.iter().enumerate() {
        let v = v.max(0.0) as f64;
        let (dx, dy) = ((i % w) as f64 - cx, (i / w) as f64 - cy);
        sxx += v * dx * dx;
        syy += v * dy * dy;
        sxy += v * dx * dy;
    }
    (0.5 * (2.0 * sxy).atan2(sxx - syy).to_degrees(), m)
}

backend_test!(fn rotation_turns_a_bar_by_at_most_the_limit(dev) {
    // A horizontal bar through the centre of 29×29 images, turned by up to ±30°.
    let shape = [60, 1, 29, 29];
    let [n, _, h, w] = shape;
    let mut x = vec![0f32; n * h * w];
    for i in 0..n {
        for col in 4..=24 {
            x[i * h * w + 14 * w + col] = 1.0;
        }
    }
    let y = run(dev, &x, shape, Augment { rotate: 30.0, ..Default::default() }, 3, 2);
    let mut angles = vec![];
    for i in 0..n {
        let (a, mass) = orientation(plane(&y, shape, i, 0), w);
        // Bilinear resampling of a 1-pixel bar keeps its mass (it spreads, it does not leak).
        assert!((mass - 21.0).abs() < 0.5, "image {i}: mass {mass}");
        assert!(a.abs() <= 30.5, "image {i}: turned by {a:.2}°, more than 30°");
        angles.push(a);
    }
    let (lo, hi) = angles.iter().fold((f64::MAX, f64::MIN), |(l, h), &a| (l.min(a), h.max(a)));
    assert!(lo < -20.0 && hi > 20.0, "angles only span {lo:.1}°..{hi:.1}°");
});

backend_test!(fn draws_repeat_for_a_step_and_change_with_step_and_seed(dev) {
    let shape = [8, 3, 10, 10];
    let x = values(8, shape.iter().product(), 0.0, 1.0);
    let aug = Augment {
        shift: 3,
        flip: true,
        rotate: 15.0,
        brightness: 0.1,
        contrast: 0.2,
        noise: 0.05,
        ..Default::default()
    };
    let a = run(dev, &x, shape, aug, 1, 10);
    assert_eq!(a, run(dev, &x, shape, aug, 1, 10), "a rerun of the same step draws the same");
    assert_ne!(a, run(dev, &x, shape, aug, 1, 11), "the next step draws afresh");
    assert_ne!(a, run(dev, &x, shape, aug, 2, 10), "another seed draws differently");
});

#[test]
fn the_backends_make_identical_choices() {
    let Some(gpu) = common::gpu() else { return };
    // Translation and flip only: pure data movement, so the two backends must agree bit for bit
    // (every choice is an integer hash). Odd sizes, and more than one workgroup of elements.
    let shape = [37, 3, 13, 11];
    let x = values(11, shape.iter().product(), -1.0, 1.0);
    let aug = Augment {
        shift: 4,
        flip: true,
        fill: 0.5,
        ..Default::default()
    };
    for step in [1, 2, 1000] {
        assert_eq!(
            run(&Cpu, &x, shape, aug, 7, step),
            run(&gpu, &x, shape, aug, 7, step),
            "step {step}"
        );
    }
    // Everything on: the same draws through float arithmetic that a shader compiler may fuse
    // differently (a multiply-add), so within tests/parity.rs's tolerance.
    let all = Augment {
        rotate: 40.0,
        brightness: 0.3,
        contrast: 0.4,
        noise: 0.2,
        center: 0.1,
        ..aug
    };
    let (c, g) = (run(&Cpu, &x, shape, all, 7, 3), run(&gpu, &x, shape, all, 7, 3));
    check_close(&g, &c, 1e-4, 1e-3).unwrap();
}

#[test]
fn misuse_is_an_error() {
    let mut g = Graph::new();
    let x = g.input("x", [2, 1, 8, 6]).unwrap();
    let bad = [
        (
            Augment {
                shift: 6,
                ..Default::default()
            },
            "shift 6 must be below the image size 8×6",
        ),
        (
            Augment {
                rotate: 46.0,
                ..Default::default()
            },
            "rotate must be in [0, 45], got 46",
        ),
        (
            Augment {
                rotate: -1.0,
                ..Default::default()
            },
            "rotate must be in [0, 45]",
        ),
        (
            Augment {
                contrast: 1.5,
                ..Default::default()
            },
            "contrast must be in [0, 1]",
        ),
        (
            Augment {
                noise: f32::NAN,
                ..Default::default()
            },
            "noise must be a finite number ≥ 0, got NaN",
        ),
        (
            Augment {
                brightness: f32::INFINITY,
                ..Default::default()
            },
            "brightness must be a finite number",
        ),
        (
            Augment {
                fill: f32::NAN,
                shift: 1,
                ..Default::default()
            },
            "fill must be finite",
        ),
    ];
    for (aug, want) in bad {
        let e = g.augment(x, aug).unwrap_err().to_string();
        assert!(e.contains(want), "{aug:?}: {e}");
    }
    // Not images.
    let flat = g.input("flat", [2, 48]).unwrap();
    let e = g
        .augment(
            flat,
            Augment {
                flip: true,
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("expected images (N, C, H, W)"), "{e}");
    // The identity adds nothing.
    assert_eq!(g.augment(x, Augment::default()).unwrap(), x);
    // No gradient flows through it: augmenting a tensor computed from parameters fails at
    // backward, naming the op.
    let w = g.param("w", [2, 1, 8, 6], Init::Zeros).unwrap();
    let h = g.mul(x, w).unwrap();
    let a = g
        .augment(
            h,
            Augment {
                shift: 1,
                ..Default::default()
            },
        )
        .unwrap();
    let loss = g.sum_all(a).unwrap();
    match backward(&mut g, loss) {
        Err(Error::NotDifferentiable(m)) => assert!(m.contains("augment"), "{m}"),
        other => panic!("expected NotDifferentiable, got {other:?}"),
    }
}

#[test]
fn the_wrapper_augments_in_training_only() {
    let base = |g: &mut Graph, x: kiln::NodeId, _: bool| kiln::nn::lenet5(g, x);
    let model = kiln::nn::augmented(
        base,
        Augment {
            shift: 2,
            ..Default::default()
        },
    );
    let count = |g: &Graph| {
        g.nodes()
            .iter()
            .filter(|n| matches!(n.op, kiln::Op::Augment { .. }))
            .count()
    };
    let mut g = Graph::new();
    let x = g.input("x", [4, 1, 28, 28]).unwrap();
    model(&mut g, x, false).unwrap();
    assert_eq!(count(&g), 0, "evaluation sees the data as it is");
    model(&mut g, x, true).unwrap();
    assert_eq!(count(&g), 1, "training augments");
}
