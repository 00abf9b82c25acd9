"""PyTorch reference-value generator for Kiln's tests.

What it is
    Computes forward values and gradients (via torch.autograd) for a set of
    activations, elementwise ops, row-wise softmaxes, losses and optimizer
    steps, all in float64, and writes them to tests/fixtures/pytorch.json.
    Kiln's Rust tests compare against that file, so the Rust side never needs
    Python or torch at test time.

How to run (from the repository root)
    python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch numpy
    /tmp/tv/bin/python tools/torch_reference.py

The output, tests/fixtures/pytorch.json, is committed as a fixture. Re-run
this script only to regenerate it (e.g. to add cases); the inputs are fixed
literals in this file, so the output only changes if torch's numerics do.

Conventions in the JSON
    * every array is flat, row-major; a "shape" key is given where needed;
    * floats are written at full float64 precision (json.dump of Python
      floats, which round-trips exactly), -0.0 is kept as -0.0;
    * for elementwise/row ops, "dy" is a fixed upstream gradient and
      "dx" = d(sum(y * dy)) / dx;
    * for losses, "value" uses reduction="mean" and "dinput" = d(value)/d(input);
    * integer class targets are written as floats.
"""

import json
import os

import torch
import torch.nn.functional as F

DT = torch.float64
torch.manual_seed(0)  # nothing below is random, but keep any future use fixed

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "pytorch.json")


def t(values, shape=None, grad=False):
    x = torch.tensor(values, dtype=DT)
    if shape is not None:
        x = x.reshape(shape)
    return x.requires_grad_(grad)


def flat(x):
    return [float(v) for v in x.detach().reshape(-1).tolist()]


def upstream(n, offset=0):
    """Deterministic upstream gradient with values in [0.5, 1.5] (not all 1,
    so a wrong index/broadcast in a backward pass shows up)."""
    return [0.5 + ((i + offset) * 7 % 11) / 10.0 for i in range(n)]


# ---------------------------------------------------------------------------
# unary
# ---------------------------------------------------------------------------

# Kinks and bounds, exactly: 0 and -0 (relu/abs/sign/leaky/elu kink), +-1
# (hardtanh bounds), -0.5 / 0.75 (clamp bounds) and their mirrors, and points
# just inside / outside +-1 to check the bound comparisons' strictness.
KINKS = [0.0, -0.0, 1.0, -1.0, -0.5, 0.75, 0.5, -0.75, 0.999, -0.999, 1.001, -1.001]
# Values just inside/outside the clamp bounds too.
CLAMP_EDGES = [-0.501, -0.499, 0.749, 0.751]
# A spread of ordinary, non-special values in [-3, 3] (13 of them).
ORDINARY = [-2.9, -2.3, -1.7, -1.3, -0.8, -0.3, -0.1, 0.2, 0.4, 0.9, 1.4, 2.3, 2.9]
# Saturation region for the squashing / smooth functions.
LARGE = [20.0, -20.0, 30.0, -30.0]
# softplus switches to the identity when beta*x > threshold (20): 20 itself is
# on the log1p side, 20.001 on the linear side.
SOFTPLUS_EDGE = [19.999, 20.001, -19.999]
# Strictly positive inputs for log/sqrt (0 is outside log's domain and has an
# infinite sqrt gradient, so it is left out).
POSITIVE = [1e-3, 0.1, 0.5, 0.75, 0.999, 1.0, 1.001, 1.3, 2.0, 2.9, 3.0, 10.0, 20.0]

BASE = KINKS + ORDINARY
NONZERO = [v for v in BASE if v != 0.0]  # reciprocal: drop +-0


def unary_cases():
    specs = [
        ("sigmoid", {}, torch.sigmoid, BASE + LARGE),
        ("tanh", {}, torch.tanh, BASE + LARGE),
        ("relu", {}, torch.relu, BASE),
        ("leaky_relu", {"negative_slope": 0.01}, lambda x: F.leaky_relu(x, 0.01), BASE),
        ("leaky_relu", {"negative_slope": 0.2}, lambda x: F.leaky_relu(x, 0.2), BASE),
        ("elu", {"alpha": 1.0}, lambda x: F.elu(x, alpha=1.0), BASE),
        ("elu", {"alpha": 0.5}, lambda x: F.elu(x, alpha=0.5), BASE),
        ("softplus", {"beta": 1.0, "threshold": 20.0}, lambda x: F.softplus(x, beta=1.0, threshold=20.0),
         BASE + LARGE + SOFTPLUS_EDGE),
        ("hardtanh", {"min": -1.0, "max": 1.0}, lambda x: F.hardtanh(x, -1.0, 1.0), BASE),
        ("clamp", {"min": -0.5, "max": 0.75}, lambda x: torch.clamp(x, -0.5, 0.75), BASE + CLAMP_EDGES),
        ("gelu", {"approximate": "none"}, lambda x: F.gelu(x, approximate="none"), BASE + LARGE),
        ("abs", {}, torch.abs, BASE),
        ("sign", {}, torch.sign, BASE),
        ("exp", {}, torch.exp, BASE),
        ("log", {}, torch.log, POSITIVE),
        ("sqrt", {}, torch.sqrt, POSITIVE),
        ("square", {}, torch.square, BASE),
        ("reciprocal", {}, torch.reciprocal, NONZERO),
        ("neg", {}, torch.neg, BASE),
    ]
    out = []
    for name, params, fn, xs in specs:
        x = t(xs, grad=True)
        dy = t(upstream(len(xs)))
        y = fn(x)
        (dx,) = torch.autograd.grad((y * dy).sum(), x)
        out.append({"name": name, "params": params, "x": flat(x), "y": flat(y), "dy": flat(dy), "dx": flat(dx)})
    return out


# ---------------------------------------------------------------------------
# prelu
# ---------------------------------------------------------------------------

def prelu_cases():
    out = []
    # NCHW with one slope per channel (axis 1). Exact zeros (and a -0.0) sit
    # at the kink; each channel has both signs so every slope gets a gradient.
    x1 = [0.0, -1.5, 2.0, -0.25,
          1.0, -0.0, -3.0, 0.5,
          -2.0, 0.75, 0.0, -0.1,
          -0.6, 1.2, -1.1, 0.0,
          2.5, -0.4, 0.3, -2.2,
          0.0, -0.9, 1.7, -0.05]
    w1 = [0.25, -0.1, 0.6]  # includes a negative slope
    # [4, 5] with a single shared slope (num_parameters=1).
    x2 = [0.0, -1.0, 1.0, -2.5, 0.3,
          -0.7, 2.0, -0.0, 0.01, -0.01,
          1.5, -1.5, 0.0, -3.0, 0.9,
          -0.2, 0.2, 2.7, -2.7, 0.0]
    w2 = [0.25]
    for shape, xs, ws in (([2, 3, 2, 2], x1, w1), ([4, 5], x2, w2)):
        x = t(xs, shape, grad=True)
        w = t(ws, grad=True)
        dy = t(upstream(len(xs)), shape)
        y = F.prelu(x, w)
        dx, dw = torch.autograd.grad((y * dy).sum(), (x, w))
        out.append({"x_shape": shape, "x": flat(x), "weight": flat(w), "y": flat(y), "dy": flat(dy),
                    "dx": flat(dx), "dweight": flat(dw)})
    return out


# ---------------------------------------------------------------------------
# binary maximum / minimum
# ---------------------------------------------------------------------------

def binary_cases():
    # Ties at indices 0, 3, 6, 9, 11 (incl. 0 vs -0, which compare equal);
    # the others alternate which operand is larger.
    a = [1.0, 2.0, -1.0, 0.5, -3.0, 4.0, 0.0, 0.25, -0.75, -2.0, 1.5, 7.0]
    b = [1.0, -2.0, 1.0, 0.5, 3.0, -4.0, -0.0, -0.25, 0.75, -2.0, -1.5, 7.0]
    out = []
    for name, fn in (("maximum", torch.maximum), ("minimum", torch.minimum)):
        ta, tb = t(a, grad=True), t(b, grad=True)
        dy = t(upstream(len(a)))
        y = fn(ta, tb)
        da, db = torch.autograd.grad((y * dy).sum(), (ta, tb))
        out.append({"name": name, "a": flat(ta), "b": flat(tb), "y": flat(y), "dy": flat(dy),
                    "da": flat(da), "db": flat(db)})
    return out


# ---------------------------------------------------------------------------
# row-wise softmax / log_softmax
# ---------------------------------------------------------------------------

def rows_cases():
    shape = [4, 6]
    xs = [0.1, -1.2, 2.3, 0.0, -0.5, 1.1,          # ordinary row
          50.0, 49.5, 51.0, 48.0, 50.25, 47.0,     # large values: needs max-subtraction
          1.0, 1.0, -1.0, 1.0, 0.5, -2.0,          # three-way tie for the max
          -3.0, -3.0, -3.0, -3.0, -3.0, -3.0]      # all equal: uniform output
    out = []
    for name, fn in (("softmax", lambda x: F.softmax(x, dim=-1)), ("log_softmax", lambda x: F.log_softmax(x, dim=-1))):
        x = t(xs, shape, grad=True)
        dy = t(upstream(len(xs)), shape)
        y = fn(x)
        (dx,) = torch.autograd.grad((y * dy).sum(), x)
        out.append({"name": name, "shape": shape, "x": flat(x), "y": flat(y), "dy": flat(dy), "dx": flat(dx)})
    return out


# ---------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------

def loss_entry(name, params, shape, inp, target, fn, target_dtype=DT):
    x = t(inp, shape, grad=True)
    tgt = torch.tensor(target, dtype=target_dtype)
    if target_dtype == DT:
        tgt = tgt.reshape(shape)
    value = fn(x, tgt)
    (dx,) = torch.autograd.grad(value, x)
    return {"name": name, "params": params, "shape": shape, "input": flat(x),
            "target": [float(c) for c in target], "value": float(value.detach()), "dinput": flat(dx)}


def weston_watkins(s, y, margin):
    """mean over rows of sum_{j != y} max(0, s_j - s_y + margin)."""
    s_y = s.gather(1, y.view(-1, 1))
    h = torch.clamp(s - s_y + margin, min=0.0)
    mask = torch.ones_like(s).scatter(1, y.view(-1, 1), 0.0)  # drop j == y
    return (h * mask).sum(dim=1).mean()


def loss_cases():
    out = []
    # Regression losses, [3, 4]. Index 5 has input == target exactly (l1's
    # kink: torch uses sign(0) = 0 there).
    reg_in = [0.5, -1.0, 2.0, 0.0, 1.5, 0.25, -0.3, 3.0, -2.0, 0.7, 1.1, -0.6]
    reg_tg = [0.0, -0.5, 2.5, 1.0, 1.0, 0.25, 0.3, 2.0, -1.0, -0.7, 1.0, 0.4]
    out.append(loss_entry("mse", {}, [3, 4], reg_in, reg_tg, F.mse_loss))
    out.append(loss_entry("l1", {}, [3, 4], reg_in, reg_tg, F.l1_loss))

    # Classification logits [5, 4] with integer targets; one row has large
    # logits (stability), one row is all equal.
    logits = [1.0, 2.0, 0.5, -1.0,
              0.0, 0.0, 0.0, 0.0,
              30.0, 31.0, 29.5, 28.0,
              -1.5, 0.3, 2.2, 0.9,
              0.4, -0.8, 1.6, -2.0]
    classes = [1, 3, 0, 2, 2]
    for ls in (0.0, 0.1):
        out.append(loss_entry("cross_entropy", {"label_smoothing": ls}, [5, 4], logits, classes,
                              lambda x, y, ls=ls: F.cross_entropy(x, y, label_smoothing=ls),
                              target_dtype=torch.long))

    # BCE with logits [3, 4]; targets include 0, 1 and 0.3 (soft target),
    # logits include 0 and large magnitudes (stable log-sum-exp form).
    bce_in = [0.0, 2.0, -2.0, 0.5, 25.0, -25.0, 1.3, -0.7, 0.0, 3.5, -1.1, 0.2]
    bce_tg = [0.0, 1.0, 0.3, 1.0, 0.0, 1.0, 0.3, 0.0, 1.0, 0.3, 1.0, 0.5]
    out.append(loss_entry("bce_with_logits", {}, [3, 4], bce_in, bce_tg, F.binary_cross_entropy_with_logits))

    # Multi-class hinge losses on [5, 4]. Some hinge terms are exactly 0 in
    # float64 (all values involved are dyadic): rows 0 (s_y=2, s_j=1) and 3
    # (s_y=1.5, s_j=0.5) for margin 1.0, row 4 (s_y=1, two s_j=0.5) for
    # margin 0.5. torch treats a hinge at exactly 0 as inactive (no gradient).
    # Row 1 has every term inactive; row 2 has every term active.
    mm_in = [1.0, 2.0, 0.5, -1.0,
             0.25, -0.5, 3.0, 0.125,
             -1.5, 0.3, 2.2, 0.9,
             1.5, 0.5, -2.0, 0.0,
             0.5, 1.0, -0.25, 0.5]
    mm_tg = [1, 2, 0, 0, 1]
    for p, margin in ((1, 1.0), (2, 0.5)):
        out.append(loss_entry("multi_margin", {"p": p, "margin": margin}, [5, 4], mm_in, mm_tg,
                              lambda x, y, p=p, m=margin: F.multi_margin_loss(x, y, p=p, margin=m),
                              target_dtype=torch.long))
    out.append(loss_entry("weston_watkins", {"margin": 1.0}, [5, 4], mm_in, mm_tg,
                          lambda x, y: weston_watkins(x, y, 1.0), target_dtype=torch.long))
    return out


# ---------------------------------------------------------------------------
# optimizers
# ---------------------------------------------------------------------------

P0 = [0.5, -1.2, 0.03, 2.0, -0.7, 1e-3]
# Three fixed gradients: mixed signs, magnitudes from 1e-3 to 2, and each
# coordinate's sign changes at least once across steps (exercises momentum
# and the centered variance).
GRADS = [
    [0.1, -2.0, 1e-3, 0.5, -0.03, 1.5],
    [-0.2, 1.0, 0.002, -0.5, 0.7, -1e-3],
    [0.05, -0.4, -1.2, 2.0, -0.01, 0.3],
]


def optimizer_cases():
    specs = [
        ("sgd", torch.optim.SGD, {"lr": 0.1}),
        ("sgd_wd", torch.optim.SGD, {"lr": 0.1, "weight_decay": 0.01}),
        ("momentum", torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
        ("nesterov", torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
        ("adagrad", torch.optim.Adagrad, {"lr": 0.1, "eps": 1e-10}),
        ("rmsprop", torch.optim.RMSprop, {"lr": 0.01, "alpha": 0.99, "eps": 1e-8}),
        ("rmsprop_momentum", torch.optim.RMSprop, {"lr": 0.01, "alpha": 0.99, "eps": 1e-8, "momentum": 0.9}),
        ("rmsprop_centered", torch.optim.RMSprop, {"lr": 0.01, "alpha": 0.99, "eps": 1e-8, "centered": True}),
        ("rmsprop_centered_momentum", torch.optim.RMSprop,
         {"lr": 0.01, "alpha": 0.99, "eps": 1e-8, "momentum": 0.9, "centered": True}),
        ("adam", torch.optim.Adam, {"lr": 0.01, "betas": [0.9, 0.999], "eps": 1e-8}),
        ("adam_wd", torch.optim.Adam, {"lr": 0.01, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01}),
        ("adamw", torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.05}),
    ]
    out = []
    for name, cls, kwargs in specs:
        p = torch.nn.Parameter(t(P0, [2, 3]))
        ctor = dict(kwargs)
        if "betas" in ctor:
            ctor["betas"] = tuple(ctor["betas"])
        opt = cls([p], **ctor)
        after = []
        for g in GRADS:
            p.grad = t(g, [2, 3])
            opt.step()
            after.append(flat(p))
        out.append({"name": name, "params": kwargs, "shape": [2, 3], "p0": list(P0),
                    "grads": [list(g) for g in GRADS], "after": after})
    return out


def main():
    data = {
        "torch": torch.__version__,
        "unary": unary_cases(),
        "prelu": prelu_cases(),
        "binary": binary_cases(),
        "rows": rows_cases(),
        "losses": loss_cases(),
        "optimizers": optimizer_cases(),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    print(f"wrote {os.path.normpath(OUT)} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
