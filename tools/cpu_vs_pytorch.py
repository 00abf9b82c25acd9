"""Kiln's CPU backend against PyTorch on the same machine, in one run: LeNet-5 (or the small
ResNet) training samples/s (batch 64, one epoch of the bundled MNIST, the mnist example's
recipe), and the ratio.

How to run (from the repository root; needs torch and numpy, and a release build of the example)
    cargo build --release --example mnist
    python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch numpy
    /tmp/tv/bin/python tools/cpu_vs_pytorch.py [--model lenet|resnet] [--rounds 2] [--threads 2] [--limit N]

`--model resnet` is the example's small ResNet: a 3×3 stem (16, no bias) with batch norm, ReLU
and 2×2 max pooling, a residual block of 16 and one of 32 at stride 2 (1×1 projection), global
average pooling and a linear layer; PyTorch's modules take their default initialisation (speed
only: the step's work is the same).

Each round runs Kiln (`target/release/examples/mnist --val 0 --device cpu`, its JSON line's
`samples_per_s`: training steps only) and PyTorch (the same recipe as
tools/torch_lenet_mnist.py, timing the training loop only), one right after the other so both
see the same machine state, which one goes first alternating from round to round. It prints
every measurement with its round's ratio, then the medians, their ratio (`ratio`) and the
median of the rounds' ratios (`median_round_ratio`: on a machine whose speed drifts between
rounds, the steadier of the two).
"""
import argparse, gzip, json, os, statistics, struct, subprocess, sys, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def idx(path):
    b = gzip.open(path).read()
    magic, = struct.unpack(">I", b[:4])
    nd = magic & 0xFF
    dims = struct.unpack(">" + "I" * nd, b[4:4 + 4 * nd])
    return np.frombuffer(b[4 + 4 * nd:], dtype=np.uint8).reshape(dims)


class LeNet(nn.Module):
    def __init__(s):
        super().__init__()
        s.c1 = nn.Conv2d(1, 6, 5, padding=2)
        s.c2 = nn.Conv2d(6, 16, 5)
        s.f1 = nn.Linear(400, 120)
        s.f2 = nn.Linear(120, 84)
        s.f3 = nn.Linear(84, 10)

    def forward(s, x):
        x = F.max_pool2d(F.relu(s.c1(x)), 2)
        x = F.max_pool2d(F.relu(s.c2(x)), 2)
        x = x.flatten(1)
        return s.f3(F.relu(s.f2(F.relu(s.f1(x)))))


class Block(nn.Module):
    def __init__(s, cin, cout, stride):
        super().__init__()
        s.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        s.b1 = nn.BatchNorm2d(cout)
        s.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        s.b2 = nn.BatchNorm2d(cout)
        s.proj = None
        if stride != 1 or cin != cout:
            s.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout))

    def forward(s, x):
        h = s.b2(s.c2(F.relu(s.b1(s.c1(x)))))
        return F.relu(h + (x if s.proj is None else s.proj(x)))


class ResNet(nn.Module):
    def __init__(s):
        super().__init__()
        s.stem = nn.Conv2d(1, 16, 3, 1, 1, bias=False)
        s.bn = nn.BatchNorm2d(16)
        s.b1 = Block(16, 16, 1)
        s.b2 = Block(16, 32, 2)
        s.fc = nn.Linear(32, 10)

    def forward(s, x):
        h = F.max_pool2d(F.relu(s.bn(s.stem(x))), 2)
        h = s.b2(s.b1(h))
        return s.fc(h.mean((2, 3)))


def torch_samples_per_s(model, xtr, ytr, n, seed):
    torch.manual_seed(seed)
    net = {"lenet": LeNet, "resnet": ResNet}[model]()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    perm = torch.randperm(n)
    steps = n // 64
    t = time.time()
    for i in range(steps):
        b = perm[i * 64:(i + 1) * 64]
        loss = F.cross_entropy(net(xtr[b]), ytr[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * 64 / (time.time() - t)


def kiln_samples_per_s(model, limit, seed):
    exe = os.path.join(ROOT, "target", "release", "examples", "mnist")
    if not os.path.exists(exe):
        sys.exit(f"{exe} is missing: run `cargo build --release --example mnist` first")
    cmd = [exe, "--val", "0", "--device", "cpu", "--seed", str(seed), "--model", model]
    if limit:
        cmd += ["--limit", str(limit)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["samples_per_s"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="train on the first N images only")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--model", choices=["lenet", "resnet"], default="lenet")
    a = ap.parse_args()
    if a.rounds < 1 or a.threads < 1 or a.limit < 0:
        sys.exit("--rounds and --threads must be at least 1, --limit at least 0")
    torch.set_num_threads(a.threads)
    d = os.path.join(ROOT, "data", "mnist")
    xtr = idx(os.path.join(d, "train-images-idx3-ubyte.gz")).astype(np.float32) / 255
    ytr = idx(os.path.join(d, "train-labels-idx1-ubyte.gz")).astype(np.int64)
    n = a.limit or len(ytr)
    m, s = xtr[:n].mean(), xtr[:n].std()
    xtr = torch.tensor((xtr[:n] - m) / s).unsqueeze(1)
    ytr = torch.tensor(ytr[:n])
    kiln, pt = [], []
    for r in range(a.rounds):
        # Which goes first alternates, so neither always runs on the machine the other warmed.
        if r % 2 == 0:
            kiln.append(kiln_samples_per_s(a.model, a.limit, a.seed))
            pt.append(torch_samples_per_s(a.model, xtr, ytr, n, a.seed))
        else:
            pt.append(torch_samples_per_s(a.model, xtr, ytr, n, a.seed))
            kiln.append(kiln_samples_per_s(a.model, a.limit, a.seed))
        print(f"round {r + 1} ({a.model}): Kiln CPU {kiln[-1]:,.0f} samples/s, PyTorch {torch.__version__} "
              f"({a.threads} threads) {pt[-1]:,.0f} samples/s, ratio {kiln[-1] / pt[-1]:.3f}", flush=True)
    k, p = statistics.median(kiln), statistics.median(pt)
    rounds = [x / y for x, y in zip(kiln, pt)]
    print(json.dumps({"model": a.model, "kiln_samples_per_s": round(k, 1), "pytorch_samples_per_s": round(p, 1),
                      "ratio": round(k / p, 3), "median_round_ratio": round(statistics.median(rounds), 3),
                      "images": n, "rounds": a.rounds, "torch": torch.__version__, "threads": a.threads}))


if __name__ == "__main__":
    main()
