"""Move LeNet-5 weights between PyTorch and Kiln through safetensors files.

This uses the same LeNet-5 recipe as tools/torch_lenet_mnist.py: the bundled MNIST data in
data/mnist/*.gz (gzipped IDX), normalisation by the mean and standard deviation of all 60,000
training images, PyTorch's default initialisation, Adam lr 1e-3, batch 64, one shuffle per epoch,
and the final partial batch dropped.

    python3 tools/torch_lenet_safetensors.py export OUT.safetensors [SEED]
        Trains the PyTorch LeNet-5 for 1 epoch with torch.manual_seed(SEED) (default 1), finds its
        test accuracy on the 10,000 test images, and writes its state_dict to OUT in float32 under
        PyTorch's own names (c1.weight, c1.bias, ..., f3.bias). The file's metadata (all strings):
        torch (torch.__version__), test_accuracy (correct / 10000, repr of the Python float),
        test_correct, mean and std (the normalisation constants, repr of float(numpy float32)),
        and seed.

    python3 tools/torch_lenet_safetensors.py import KILN.safetensors
        Loads a checkpoint written by Kiln (conv1.w, conv1.b, ..., fc3.b) into the PyTorch LeNet-5
        through the NAME_MAP below and prints its test accuracy and number of correct test images,
        using the same normalisation. Other tensors in the file (optimizer.state0.* and so on)
        are ignored.

Needs torch, numpy and safetensors (pip install safetensors).
"""
import gzip, os, struct, sys
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

# PyTorch name, Kiln name, transpose? Kiln's conv weights have PyTorch's layout (O, C, KH, KW);
# Kiln's linear weights are (in, out), the transpose of PyTorch's (out, in). The Rust side
# documents the same map.
NAME_MAP = [
    ("c1.weight", "conv1.w", False),
    ("c1.bias",   "conv1.b", False),
    ("c2.weight", "conv2.w", False),
    ("c2.bias",   "conv2.b", False),
    ("f1.weight", "fc1.w",   True),
    ("f1.bias",   "fc1.b",   False),
    ("f2.weight", "fc2.w",   True),
    ("f2.bias",   "fc2.b",   False),
    ("f3.weight", "fc3.w",   True),
    ("f3.bias",   "fc3.b",   False),
]


def idx(path):
    b = gzip.open(path).read()
    magic, = struct.unpack(">I", b[:4]); nd = magic & 0xff
    dims = struct.unpack(">" + "I" * nd, b[4:4 + 4 * nd])
    return np.frombuffer(b[4 + 4 * nd:], dtype=np.uint8).reshape(dims)


def load_mnist():
    """Normalised train and test tensors, plus the mean and std used (numpy float32 scalars)."""
    d = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "mnist") + os.sep
    xtr = idx(d + "train-images-idx3-ubyte.gz").astype(np.float32) / 255; ytr = idx(d + "train-labels-idx1-ubyte.gz").astype(np.int64)
    xte = idx(d + "t10k-images-idx3-ubyte.gz").astype(np.float32) / 255; yte = idx(d + "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    m, s = xtr.mean(), xtr.std()
    xtr = torch.tensor((xtr - m) / s).unsqueeze(1); xte = torch.tensor((xte - m) / s).unsqueeze(1)
    return xtr, torch.tensor(ytr), xte, torch.tensor(yte), m, s


class LeNet(nn.Module):
    def __init__(s):
        super().__init__()
        s.c1 = nn.Conv2d(1, 6, 5, padding=2); s.c2 = nn.Conv2d(6, 16, 5)
        s.f1 = nn.Linear(400, 120); s.f2 = nn.Linear(120, 84); s.f3 = nn.Linear(84, 10)
    def forward(s, x):
        x = F.max_pool2d(F.relu(s.c1(x)), 2); x = F.max_pool2d(F.relu(s.c2(x)), 2)
        x = x.flatten(1); return s.f3(F.relu(s.f2(F.relu(s.f1(x)))))


def test_correct(net, xte, yte):
    with torch.no_grad():
        return int((net(xte).argmax(1) == yte).sum().item())


def export(out, seed):
    xtr, ytr, xte, yte, m, s = load_mnist()
    torch.manual_seed(seed)
    net = LeNet(); opt = torch.optim.Adam(net.parameters(), 1e-3)
    perm = torch.randperm(60000)
    for i in range(0, 60000 - 63, 64):
        b = perm[i:i + 64]
        loss = F.cross_entropy(net(xtr[b]), ytr[b])
        opt.zero_grad(); loss.backward(); opt.step()
    correct = test_correct(net, xte, yte)
    acc = correct / len(yte)
    state = {k: v.detach().to(torch.float32).contiguous() for k, v in net.state_dict().items()}
    assert sorted(state) == sorted(t for t, _, _ in NAME_MAP), sorted(state)
    save_file(state, out, metadata={
        "torch": torch.__version__,
        "test_accuracy": repr(acc),
        "test_correct": str(correct),
        "mean": repr(float(m)),
        "std": repr(float(s)),
        "seed": str(seed),
    })
    print(f"torch seed {seed}, 1 epoch: test accuracy {acc!r} ({correct}/{len(yte)}) -> {out}")


def import_kiln(path):
    _, _, xte, yte, _, _ = load_mnist()
    net = LeNet()
    state = {}
    with safe_open(path, framework="pt") as f:
        for torch_name, kiln_name, transpose in NAME_MAP:
            t = f.get_tensor(kiln_name)
            assert t.dtype == torch.float32, f"{kiln_name}: {t.dtype}"
            state[torch_name] = t.t().contiguous() if transpose else t
    net.load_state_dict(state)  # strict: checks every name and shape
    correct = test_correct(net, xte, yte)
    print(f"kiln checkpoint {path}: test accuracy {correct / len(yte)!r} ({correct}/{len(yte)})")


if __name__ == "__main__":
    if len(sys.argv) in (3, 4) and sys.argv[1] == "export":
        export(sys.argv[2], int(sys.argv[3]) if len(sys.argv) == 4 else 1)
    elif len(sys.argv) == 3 and sys.argv[1] == "import":
        import_kiln(sys.argv[2])
    else:
        sys.exit(__doc__)
