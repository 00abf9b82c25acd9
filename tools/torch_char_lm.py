"""Character-level LSTM language model on the Jargon File, in PyTorch: the reference for Kiln's
char-LM example, which implements exactly this recipe.

How to run (from the repository root; needs torch and numpy)
    python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch numpy
    /tmp/tv/bin/python tools/torch_char_lm.py [--steps 600] [--seed 1] [--threads 2]
        [--prompt "The "] [--temperature 0.8] [--sample-len 300]

Recipe
  Text
    data/jargon/jargon.txt.gz, gunzipped and decoded as UTF-8. Each character maps to one of 96
    symbol ids: id 0 = '\\n'; ids 1..=95 = ASCII 32..=126 (id = code - 31). Non-ASCII characters:
      '─' '═'                                  -> '-'
      '│'                                      -> '|'
      '┼' '├' '┤' '┬' '┴' '┌' '┐' '└' '┘'      -> '+'
      U+00A0 (no-break space)                  -> ' '
      '“' '”'                                  -> '"'
      '‘' '’' '´'                              -> "'"
      '—' (em dash) '−' (U+2212 minus)          -> '-'
      '·' '•'                                  -> '*'
      '\\t'                                     -> ' '
      '\\r'                                     dropped
      any other character                      -> '?'
    (In Jargon File 4.4.7 the '?' fallback catches 162 characters, e.g. '→', '©', accented
    letters and Greek letters; the file has no tabs or carriage returns.)
  Split
    n = number of symbols; n_val = n // 10; train = the first n - n_val symbols, val = the last n_val.
  Model
    Embedding(96, 64) -> LSTM(64, 256, num_layers=2), time-major (T, N, F), PyTorch's gate order
    (i, f, g, o) -> Linear(256, 96). PyTorch's default initialisation (Embedding N(0, 1), LSTM
    weights and both biases U(-1/sqrt(256), 1/sqrt(256)), Linear's default). torch.manual_seed(seed)
    before building the model; default seed 1.
  Batches (truncated BPTT)
    B = 32 lanes, T = 64. Lane length L = len(train) // 32; lane b = train[b*L:(b+1)*L].
    windows_per_pass = (L - 1) // 64. Step s (0-based) uses window w = s mod windows_per_pass,
    t0 = w*64: inputs lane[t0:t0+64], targets lane[t0+1:t0+65] for every lane, as (64, 32) tensors.
    The LSTM state (h, c) at the end of one window is the next window's initial state, detached
    (no gradient crosses windows); the state starts at zero and is reset to zero whenever w == 0.
  Loss and optimiser
    Mean cross-entropy over all 64*32 positions. Adam(lr=2e-3, default betas and eps), no LR
    schedule; gradients clipped to global norm 5 with clip_grad_norm_ (the pre-clip norm it returns
    is what the progress lines report). --steps steps (default 600).
  Metrics
    train_bpc = mean training loss over the last min(100, steps) steps / ln 2.
    val_bpc: val is cut into 32 lanes of length Lv = len(val) // 32; each lane predicts lane[1:]
    from lane[:-1], processed in windows of 64 steps with the state carried across windows
    (starting at zero, never reset), the final partial window included (shorter T), no gradient.
    val_bpc = (sum of the cross-entropy over every predicted symbol) / (number of predicted
    symbols) / ln 2.
  Sampling
    Starting from a zero state, feed the prompt (--prompt, default "The "), then repeatedly sample
    the next symbol from softmax(logits / temperature) (--temperature, default 0.8) with a
    torch.Generator seeded with the seed, feeding each sample back, for --sample-len (default 300)
    symbols. The prompt followed by the sampled text is printed to stdout.

Output
    A progress line every 50 steps (step, loss, pre-clip gradient norm, training chars/s) on stderr;
    the sample on stdout; then one JSON line: {"val_bpc", "train_bpc", "steps", "chars_per_s"
    (steps*64*32 / training seconds), "device", "seed"}.
"""
import argparse, gzip, json, math, os, sys, time

import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB = 96
EMBED, HIDDEN, LAYERS = 64, 256, 2
B, T = 32, 64
LR, CLIP = 2e-3, 5.0

MAP = {}
for ch in "─═—−":
    MAP[ch] = "-"
MAP["│"] = "|"
for ch in "┼├┤┬┴┌┐└┘":
    MAP[ch] = "+"
MAP["\u00a0"] = " "
MAP["“"] = MAP["”"] = '"'
for ch in "‘’´":
    MAP[ch] = "'"
MAP["·"] = MAP["•"] = "*"
MAP["\t"] = " "


def encode(text):
    ids = []
    for ch in text:
        if ch == "\r":
            continue
        ch = MAP.get(ch, ch)
        if ch == "\n":
            ids.append(0)
        elif 32 <= ord(ch) <= 126:
            ids.append(ord(ch) - 31)
        else:
            ids.append(ord("?") - 31)
    return ids


def decode(ids):
    return "".join("\n" if i == 0 else chr(i + 31) for i in ids)


class CharLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, EMBED)
        self.lstm = nn.LSTM(EMBED, HIDDEN, num_layers=LAYERS)
        self.out = nn.Linear(HIDDEN, VOCAB)

    def forward(self, x, state):  # x: (T, N) int64
        h, state = self.lstm(self.embed(x), state)
        return self.out(h), state


def zero_state(n):
    return (torch.zeros(LAYERS, n, HIDDEN), torch.zeros(LAYERS, n, HIDDEN))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--prompt", default="The ")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--sample-len", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                   "..", "data", "jargon", "jargon.txt.gz"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with gzip.open(args.data, "rb") as f:
        data = torch.tensor(encode(f.read().decode("utf-8")), dtype=torch.int64)
    n = len(data)
    n_val = n // 10
    train, val = data[: n - n_val], data[n - n_val:]
    L = len(train) // B
    lanes = train[: B * L].view(B, L).t().contiguous()  # (L, B): column b = lane b
    windows = (L - 1) // T
    print(f"{n} symbols: {len(train)} train ({windows} windows of {T} per pass over {B} lanes "
          f"of {L}), {len(val)} val", file=sys.stderr)

    torch.manual_seed(args.seed)
    model = CharLM()
    opt = torch.optim.Adam(model.parameters(), lr=LR)

    losses = []
    state = zero_state(B)
    t_start = time.perf_counter()
    t_last, s_last = t_start, 0
    for s in range(args.steps):
        w = s % windows
        if w == 0:
            state = zero_state(B)
        t0 = w * T
        x, y = lanes[t0: t0 + T], lanes[t0 + 1: t0 + T + 1]
        logits, state = model(x, state)
        state = (state[0].detach(), state[1].detach())
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP).item()
        opt.step()
        losses.append(loss.item())
        if (s + 1) % 50 == 0 or s + 1 == args.steps:
            now = time.perf_counter()
            cps = (s + 1 - s_last) * T * B / (now - t_last)
            t_last, s_last = now, s + 1
            print(f"step {s + 1:5d}  loss {losses[-1]:.4f}  grad_norm {gnorm:.3f}  "
                  f"{cps:,.0f} chars/s", file=sys.stderr)
    train_secs = time.perf_counter() - t_start
    k = min(100, args.steps)
    train_bpc = sum(losses[-k:]) / k / math.log(2)

    # Validation: 32 lanes of Lv, windows of 64 with carried state, final partial window included.
    Lv = len(val) // B
    vl = val[: B * Lv].view(B, Lv).t().contiguous()  # (Lv, B)
    total, count = 0.0, 0
    with torch.no_grad():
        state = zero_state(B)
        for t0 in range(0, Lv - 1, T):
            t1 = min(t0 + T, Lv - 1)
            logits, state = model(vl[t0:t1], state)
            total += F.cross_entropy(logits.reshape(-1, VOCAB), vl[t0 + 1: t1 + 1].reshape(-1),
                                     reduction="sum").item()
            count += (t1 - t0) * B
    val_bpc = total / count / math.log(2)

    # Sampling.
    gen = torch.Generator().manual_seed(args.seed)
    out = []
    with torch.no_grad():
        state = zero_state(1)
        logits, state = model(torch.tensor(encode(args.prompt)).view(-1, 1), state)
        last = logits[-1, 0]
        for _ in range(args.sample_len):
            p = torch.softmax(last / args.temperature, dim=-1)
            nxt = torch.multinomial(p, 1, generator=gen)
            out.append(nxt.item())
            logits, state = model(nxt.view(1, 1), state)
            last = logits[-1, 0]
    print(args.prompt + decode(out))

    print(json.dumps({
        "val_bpc": round(val_bpc, 4),
        "train_bpc": round(train_bpc, 4),
        "steps": args.steps,
        "chars_per_s": round(args.steps * T * B / train_secs),
        "device": f"cpu (PyTorch {torch.__version__}, {torch.get_num_threads()} threads)",
        "seed": args.seed,
    }))


if __name__ == "__main__":
    main()
