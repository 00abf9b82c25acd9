"""PyTorch reference-value generator for Kiln's recurrent layers (and Embedding).

What it is
    Builds torch.nn.LSTM / GRU / RNN (tanh and relu) and torch.nn.Embedding
    modules in float64 on the CPU, runs them on fixed random inputs, and
    records the outputs and the gradients (via torch.autograd) of a scalar
    loss with respect to the input, the initial state and every parameter.
    Everything is written to tests/fixtures/torch_rnn.json, so a Kiln test can
    load PyTorch's parameters under their PyTorch state_dict names and layouts
    and compare its own outputs and gradients, without Python or torch at test
    time.

How to run (from the repository root)
    python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch numpy
    /tmp/tv/bin/python tools/torch_rnn_reference.py

The output, tests/fixtures/torch_rnn.json, is committed as a fixture. Re-run
this script only to regenerate it. Every random draw comes from a fixed seed
(torch.manual_seed for the module's own initialisation, a seeded
torch.Generator for inputs and loss weights), computation runs with one CPU
thread, so the output only changes if torch's numerics or its initialisers
change. The script also re-computes every case with plain tensor ops written
from PyTorch's documented equations (below) and asserts that both agree, so
the fixture documents exactly which equations Kiln must implement.

Cases (all time-major, batch_first=False, bias=True, dropout=0,
bidirectional=False)
    lstm          nn.LSTM(3, 4, num_layers=2), T=5, N=2, given h0 and c0
    gru           nn.GRU(3, 4, num_layers=2), T=5, N=2, given h0
    rnn_tanh      nn.RNN(3, 4, num_layers=2, nonlinearity="tanh"), T=5, N=2, given h0
    rnn_relu      nn.RNN(3, 4, num_layers=1, nonlinearity="relu"), T=4, N=3, no h0
    lstm_no_state nn.LSTM(2, 7, num_layers=1), T=17, N=1, no h0/c0
    embedding     nn.Embedding(6, 3), ids of shape (2, 4) with repeated ids

Shapes and layouts (PyTorch's own)
    x: (T, N, input_size); h0, c0, h_n, c_n: (num_layers, N, hidden_size);
    out: (T, N, hidden_size) = the top layer's h_t for every t.
    Parameters per layer k (k = 0 .. num_layers-1), G = gate count
    (LSTM 4, GRU 3, RNN 1):
        weight_ih_l{k}: (G*hidden, in_k)   in_0 = input_size, in_k = hidden
        weight_hh_l{k}: (G*hidden, hidden)
        bias_ih_l{k}:   (G*hidden,)
        bias_hh_l{k}:   (G*hidden,)
    Gate blocks are stacked along dim 0 in this order:
        LSTM: i, f, g, o
            i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)   (likewise f, o)
            g = tanh(W_ig x + b_ig + W_hg h + b_hg)
            c' = f * c + i * g ;  h' = o * tanh(c')
        GRU: r, z, n
            r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)   (likewise z)
            n = tanh(W_in x + b_in + r * (W_hn h + b_hn))   <- r multiplies
                                                              (W_hn h + b_hn)
            h' = (1 - z) * n + z * h
        RNN: h' = act(W_ih x + b_ih + W_hh h + b_hh), act = tanh or relu
    Embedding: weight (num_embeddings, embedding_dim), out[...] = weight[id].

Loss and gradients
    L = sum(out * w_out) + sum(h_n * w_h) [+ sum(c_n * w_c) for LSTM]
    with fixed weights w_out, w_h, w_c drawn uniformly from [0.5, 1.5] and
    stored in the file. "grads" holds dL/dx, dL/dh0 and dL/dc0 (only when the
    case gives an initial state) and dL/d<param> for every state_dict name.
    For the embedding, L = sum(out * w_out) and grads holds only "weight"
    (repeated ids accumulate).

Conventions in the JSON
    * every tensor is {"shape": [...], "data": [flat, row-major]};
    * floats are written at full float64 precision (json.dump of Python
      floats, which round-trips exactly);
    * keys that do not apply to a case (h0/c0 without an initial state, c0/
      c_n/w_c for GRU/RNN) are null; "ids" are integers.
"""

import json
import os

import torch
import torch.nn as nn

DT = torch.float64
torch.set_num_threads(1)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "torch_rnn.json")


def tensor_json(x):
    if x is None:
        return None
    x = x.detach()
    return {"shape": list(x.shape), "data": [float(v) for v in x.reshape(-1).tolist()]}


def uniform(gen, shape, lo, hi):
    return (torch.rand(shape, generator=gen, dtype=DT) * (hi - lo) + lo)


# ---------------------------------------------------------------------------
# independent re-implementation from the documented equations (self-check)
# ---------------------------------------------------------------------------

def manual_forward(kind, p, num_layers, x, h0, c0):
    """p: dict name -> tensor (requires_grad). Returns out, h_n, c_n."""
    T, N, _ = x.shape
    H = p["weight_hh_l0"].shape[1]
    layer_in = x
    hs, cs = [], []
    for k in range(num_layers):
        wih, whh = p[f"weight_ih_l{k}"], p[f"weight_hh_l{k}"]
        bih, bhh = p[f"bias_ih_l{k}"], p[f"bias_hh_l{k}"]
        h = h0[k] if h0 is not None else torch.zeros(N, H, dtype=DT)
        c = None
        if kind == "lstm":
            c = c0[k] if c0 is not None else torch.zeros(N, H, dtype=DT)
        outs = []
        for t in range(T):
            xt = layer_in[t]
            gi = xt @ wih.T + bih
            gh = h @ whh.T + bhh
            if kind == "lstm":
                a = gi + gh
                i = torch.sigmoid(a[:, 0:H])
                f = torch.sigmoid(a[:, H:2 * H])
                g = torch.tanh(a[:, 2 * H:3 * H])
                o = torch.sigmoid(a[:, 3 * H:4 * H])
                c = f * c + i * g
                h = o * torch.tanh(c)
            elif kind == "gru":
                r = torch.sigmoid(gi[:, 0:H] + gh[:, 0:H])
                z = torch.sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
                n = torch.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
                h = (1 - z) * n + z * h
            elif kind == "rnn_tanh":
                h = torch.tanh(gi + gh)
            elif kind == "rnn_relu":
                h = torch.relu(gi + gh)
            else:
                raise ValueError(kind)
            outs.append(h)
        layer_in = torch.stack(outs)
        hs.append(h)
        cs.append(c)
    out = layer_in
    h_n = torch.stack(hs)
    c_n = torch.stack(cs) if kind == "lstm" else None
    return out, h_n, c_n


def loss_of(out, h_n, c_n, w_out, w_h, w_c):
    L = (out * w_out).sum() + (h_n * w_h).sum()
    if c_n is not None:
        L = L + (c_n * w_c).sum()
    return L


def assert_close(name, a, b, tol=1e-12):
    err = (a.detach() - b.detach()).abs().max().item()
    assert err <= tol, f"{name}: torch module vs manual equations differ by {err}"


# ---------------------------------------------------------------------------
# recurrent cases
# ---------------------------------------------------------------------------

def rnn_case(name, kind, input_size, hidden_size, num_layers, T, N, with_state, seed):
    torch.manual_seed(seed)
    if kind == "lstm":
        m = nn.LSTM(input_size, hidden_size, num_layers=num_layers)
    elif kind == "gru":
        m = nn.GRU(input_size, hidden_size, num_layers=num_layers)
    else:
        nl = "tanh" if kind == "rnn_tanh" else "relu"
        m = nn.RNN(input_size, hidden_size, num_layers=num_layers, nonlinearity=nl)
    m = m.double()

    gen = torch.Generator().manual_seed(seed + 1000)
    x = uniform(gen, (T, N, input_size), -1.0, 1.0).requires_grad_(True)
    h0 = c0 = None
    if with_state:
        h0 = uniform(gen, (num_layers, N, hidden_size), -1.0, 1.0).requires_grad_(True)
        if kind == "lstm":
            c0 = uniform(gen, (num_layers, N, hidden_size), -1.0, 1.0).requires_grad_(True)
    w_out = uniform(gen, (T, N, hidden_size), 0.5, 1.5)
    w_h = uniform(gen, (num_layers, N, hidden_size), 0.5, 1.5)
    w_c = uniform(gen, (num_layers, N, hidden_size), 0.5, 1.5) if kind == "lstm" else None

    if kind == "lstm":
        out, (h_n, c_n) = m(x, (h0, c0)) if with_state else m(x)
    else:
        out, h_n = m(x, h0) if with_state else m(x)
        c_n = None
    L = loss_of(out, h_n, c_n, w_out, w_h, w_c)
    named = list(m.named_parameters())
    wrt = [x] + ([h0] if h0 is not None else []) + ([c0] if c0 is not None else []) + [p for _, p in named]
    grads = torch.autograd.grad(L, wrt)

    # self-check against the documented equations
    p2 = {n: p.detach().clone().requires_grad_(True) for n, p in named}
    x2 = x.detach().clone().requires_grad_(True)
    h02 = h0.detach().clone().requires_grad_(True) if h0 is not None else None
    c02 = c0.detach().clone().requires_grad_(True) if c0 is not None else None
    out2, h_n2, c_n2 = manual_forward(kind, p2, num_layers, x2, h02, c02)
    L2 = loss_of(out2, h_n2, c_n2, w_out, w_h, w_c)
    wrt2 = [x2] + ([h02] if h02 is not None else []) + ([c02] if c02 is not None else []) + [p2[n] for n, _ in named]
    grads2 = torch.autograd.grad(L2, wrt2)
    assert_close(f"{name} out", out, out2)
    assert_close(f"{name} h_n", h_n, h_n2)
    if c_n is not None:
        assert_close(f"{name} c_n", c_n, c_n2)
    for i, (g, g2) in enumerate(zip(grads, grads2)):
        assert_close(f"{name} grad #{i}", g, g2)

    sd = m.state_dict()
    assert list(sd.keys()) == [n for n, _ in named], (list(sd.keys()), [n for n, _ in named])

    gi = iter(grads)
    gjson = {"x": tensor_json(next(gi))}
    gjson["h0"] = tensor_json(next(gi)) if h0 is not None else None
    gjson["c0"] = tensor_json(next(gi)) if c0 is not None else None
    for n, _ in named:
        gjson[n] = tensor_json(next(gi))

    return {
        "kind": kind,
        "input_size": input_size,
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "T": T,
        "N": N,
        "seed": seed,
        "params": {n: tensor_json(p) for n, p in named},
        "x": tensor_json(x),
        "h0": tensor_json(h0),
        "c0": tensor_json(c0),
        "w_out": tensor_json(w_out),
        "w_h": tensor_json(w_h),
        "w_c": tensor_json(w_c),
        "out": tensor_json(out),
        "h_n": tensor_json(h_n),
        "c_n": tensor_json(c_n),
        "loss": float(L.item()),
        "grads": gjson,
    }


def embedding_case(seed):
    torch.manual_seed(seed)
    m = nn.Embedding(6, 3).double()
    ids = torch.tensor([[2, 4, 2, 0], [5, 4, 4, 1]], dtype=torch.long)  # 2 and 4 repeat; 3 unused
    gen = torch.Generator().manual_seed(seed + 1000)
    w_out = uniform(gen, (2, 4, 3), 0.5, 1.5)
    out = m(ids)
    L = (out * w_out).sum()
    (gw,) = torch.autograd.grad(L, [m.weight])

    # self-check: scatter-add of w_out rows into the used ids
    ref = torch.zeros(6, 3, dtype=DT)
    for i, idx in enumerate(ids.reshape(-1).tolist()):
        ref[idx] += w_out.reshape(-1, 3)[i]
    assert_close("embedding grad", gw, ref)
    assert_close("embedding out", out, m.weight.detach()[ids])

    return {
        "kind": "embedding",
        "num_embeddings": 6,
        "embedding_dim": 3,
        "seed": seed,
        "params": {"weight": tensor_json(m.weight)},
        "ids": {"shape": list(ids.shape), "data": [int(v) for v in ids.reshape(-1).tolist()]},
        "w_out": tensor_json(w_out),
        "out": tensor_json(out),
        "loss": float(L.item()),
        "grads": {"weight": tensor_json(gw)},
    }


def main():
    cases = {
        "lstm": rnn_case("lstm", "lstm", 3, 4, 2, 5, 2, True, seed=101),
        "gru": rnn_case("gru", "gru", 3, 4, 2, 5, 2, True, seed=102),
        "rnn_tanh": rnn_case("rnn_tanh", "rnn_tanh", 3, 4, 2, 5, 2, True, seed=103),
        "rnn_relu": rnn_case("rnn_relu", "rnn_relu", 3, 4, 1, 4, 3, False, seed=134),
        "lstm_no_state": rnn_case("lstm_no_state", "lstm", 2, 7, 1, 17, 1, False, seed=105),
        "embedding": embedding_case(seed=106),
    }
    data = {"torch": torch.__version__, "cases": cases}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    print(f"wrote {os.path.normpath(OUT)} ({os.path.getsize(OUT)} bytes)")
    for name, c in cases.items():
        print(f"  {name}: {', '.join(c['params'].keys())}")


if __name__ == "__main__":
    main()
