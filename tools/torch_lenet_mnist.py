# The mnist example's LeNet-5 recipe in PyTorch, for comparing Kiln's accuracy with a mainstream
# framework's over many seeds: the same bundled data, normalisation by the training set's mean
# and standard deviation, PyTorch's default initialisation (which nn::lenet5 reproduces), Adam
# lr 1e-3, batch 64, a fresh shuffle per epoch with the final partial batch dropped.
#
#   python3 tools/torch_lenet_mnist.py 1,2,3 [EPOCHS]     # needs torch and numpy
#
# Prints per seed the test accuracy and the mean training loss over the run's batches.
import gzip, os, struct, sys, time
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F

def idx(path):
    b = gzip.open(path).read()
    magic, = struct.unpack(">I", b[:4]); nd = magic & 0xff
    dims = struct.unpack(">" + "I" * nd, b[4:4 + 4 * nd])
    return np.frombuffer(b[4 + 4 * nd:], dtype=np.uint8).reshape(dims)

d = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "mnist") + os.sep
xtr = idx(d + "train-images-idx3-ubyte.gz").astype(np.float32) / 255; ytr = idx(d + "train-labels-idx1-ubyte.gz").astype(np.int64)
xte = idx(d + "t10k-images-idx3-ubyte.gz").astype(np.float32) / 255; yte = idx(d + "t10k-labels-idx1-ubyte.gz").astype(np.int64)
m, s = xtr.mean(), xtr.std()
xtr = torch.tensor((xtr - m) / s).unsqueeze(1); xte = torch.tensor((xte - m) / s).unsqueeze(1)
ytr = torch.tensor(ytr); yte = torch.tensor(yte)

class LeNet(nn.Module):
    def __init__(s):
        super().__init__()
        s.c1 = nn.Conv2d(1, 6, 5, padding=2); s.c2 = nn.Conv2d(6, 16, 5)
        s.f1 = nn.Linear(400, 120); s.f2 = nn.Linear(120, 84); s.f3 = nn.Linear(84, 10)
    def forward(s, x):
        x = F.max_pool2d(F.relu(s.c1(x)), 2); x = F.max_pool2d(F.relu(s.c2(x)), 2)
        x = x.flatten(1); return s.f3(F.relu(s.f2(F.relu(s.f1(x)))))

epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 1
for seed in [int(a) for a in sys.argv[1].split(",")]:
    torch.manual_seed(seed)
    net = LeNet(); opt = torch.optim.Adam(net.parameters(), 1e-3)
    t = time.time()
    tot = 0.0; nb = 0
    for ep in range(epochs):
        perm = torch.randperm(60000)
        for i in range(0, 60000 - 63, 64):
            b = perm[i:i + 64]
            loss = F.cross_entropy(net(xtr[b]), ytr[b])
            opt.zero_grad(); loss.backward(); opt.step(); tot += loss.item(); nb += 1
    with torch.no_grad():
        acc = (net(xte).argmax(1) == yte).float().mean().item()
    print(f"torch seed {seed} epochs {epochs}: test accuracy {acc*100:.2f}% train loss {tot/nb:.4f}  ({time.time()-t:.0f}s)", flush=True)
