"""Kiln's wgpu backend against Burn's on the same adapter, in one run: LeNet-5 training samples/s
(batch 64) and N×N f32 matmul GFLOP/s, each side's warm-up, and the ratios Kiln/Burn.

How to run (from the repository root; only the Python standard library is needed):
    cargo build --release --example mnist
    python3 tools/gpu_vs_burn.py --burn PATH/TO/burn-lenet [--matmul 256 512 1024] [--steps 50]

`--burn` is a release build of the pinned Burn 0.22.1 LeNet/matmul harness (`burn-lenet <backend>
[batch steps warmup]` and `burn-lenet <backend> matmul N...`, one JSON line per result). Burn
runs first (its warm-up JIT-compiles and autotunes its kernels: minutes on lavapipe), then Kiln:
the mnist example on `--device gpu` over at least 200 training steps (its JSON line's
`samples_per_s` and `first_step_s`), and `cargo bench --bench kernels` for the matmul sizes
(criterion's median throughput; Kiln autotunes each shape at prepare time). Set
`XDG_RUNTIME_DIR=/tmp` on headless machines to silence Mesa.
"""
import argparse, json, os, re, subprocess, sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def json_lines(out):
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")]


def run(cmd, **kw):
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r.stdout


def kiln_matmul(sizes):
    """GFLOP/s per size from criterion's `matmul/gpu*/N` throughput (median of its estimate)."""
    pattern = "matmul/gpu[^/]*/(" + "|".join(str(n) for n in sizes) + ")$"
    out = run(["cargo", "bench", "--bench", "kernels", "--", pattern], cwd=ROOT)
    got, name = {}, None
    for line in out.splitlines():
        m = re.match(r"\s*matmul/gpu[^/]*/(\d+)", line)
        if m:
            name = int(m.group(1))
        t = re.search(r"thrpt:\s*\[\S+ \S+ (\S+) (\S)elem/s", line)
        if t and name is not None and name not in got:
            got[name] = float(t.group(1)) * {"K": 1e-6, "M": 1e-3, "G": 1.0}[t.group(2)]
    return got


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--burn", required=True, help="the burn-lenet harness binary")
    ap.add_argument("--steps", type=int, default=50, help="timed LeNet training steps")
    ap.add_argument("--warmup", type=int, default=5, help="Burn's warm-up steps")
    ap.add_argument("--matmul", type=int, nargs="*", default=[256, 512, 1024])
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if not os.access(a.burn, os.X_OK):
        sys.exit(f"--burn {a.burn}: not an executable (build the pinned burn-lenet harness first)")
    exe = os.path.join(ROOT, "target", "release", "examples", "mnist")
    if not os.path.exists(exe):
        sys.exit(f"{exe} is missing: run `cargo build --release --example mnist` first")

    burn = json_lines(run([a.burn, "wgpu", "64", str(a.steps), str(a.warmup)]))[-1]
    burn_mm = {r["n"]: r for r in json_lines(run([a.burn, "wgpu", "matmul"] + [str(n) for n in a.matmul]))} if a.matmul else {}
    # Kiln's samples/s covers every training step of its run; at least 200 steps, so that its
    # steady state weighs as Burn's post-warm-up steps do.
    steps = max(a.steps + a.warmup, 200)
    kiln = json_lines(
        run([exe, "--device", "gpu", "--val", "0", "--seed", str(a.seed), "--limit", str(64 * steps)])
    )[-1]
    kiln_mm = kiln_matmul(a.matmul) if a.matmul else {}

    print(f"adapter: {kiln['adapter']} (Burn: {burn['adapter']})")
    print(
        f"LeNet-5 training, batch 64: Kiln {kiln['samples_per_s']:.1f} samples/s ({steps} steps), "
        f"Burn {burn['version']} {burn['samples_per_s']:.1f} samples/s ({a.steps} steps after {a.warmup})"
        f" -> Kiln/Burn {kiln['samples_per_s'] / burn['samples_per_s']:.2f}"
    )
    print(
        f"warm-up: Kiln first step {kiln['first_step_s']:.2f} s (compile, pipelines, autotune); "
        f"Burn {a.warmup} warm-up steps {burn['warmup_s']:.1f} s (JIT and autotune)"
    )
    result = {
        "kiln_samples_per_s": kiln["samples_per_s"],
        "burn_samples_per_s": burn["samples_per_s"],
        "lenet_ratio": round(kiln["samples_per_s"] / burn["samples_per_s"], 3),
        "kiln_first_step_s": kiln["first_step_s"],
        "burn_warmup_s": burn["warmup_s"],
        "matmul": {},
    }
    for n in a.matmul:
        k, b = kiln_mm.get(n), burn_mm.get(n, {}).get("gflops")
        if k is None or b is None:
            print(f"matmul {n}: missing (Kiln {k}, Burn {b})")
            continue
        print(f"matmul {n}x{n}x{n}: Kiln {k:.2f} GFLOP/s, Burn {b:.2f} GFLOP/s -> Kiln/Burn {k / b:.2f}")
        result["matmul"][n] = {"kiln_gflops": round(k, 3), "burn_gflops": b, "ratio": round(k / b, 3)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
