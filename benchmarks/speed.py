"""Speed: exact log-likelihood throughput and training steps per second of M-flows.

Two shapes, with the architectures of the paper (Brehmer and Cranmer 2020):

* ``power`` 3 -> 2: outer 5 and inner 5 spline couplings with permutations, 10 bins, tail
  bound 6, conditional on theta (p = 1);
* ``lhc40d`` 40 -> 14: outer 20 and inner 15 spline couplings with LU layers, 11 bins, tail
  bound 10, conditional on theta (p = 2).

Measured (random standard-normal inputs, float32, batch 100 for training):

* exact ``log_prob`` throughput in samples/s (no gradient; it includes the decoder Jacobian and
  log det(J^T J)) at ``--eval-batch`` samples per call;
* training steps per second through :func:`mflows.fit` (one step = one batch, including the
  data loader and optimiser): ``alternating`` (each batch one manifold step on the
  reconstruction MSE and one density step on the latent NLL) and ``likelihood`` (the
  simultaneous exact-likelihood step, NLL with log det(J^T J) + weighted MSE, back-propagated).

``--thread-policy`` instead measures the alternating M/D step (trainer-like, see
``compare_speed.py``) with 1 thread, 2 threads, torch's default and mflows' default
(:func:`mflows.threads.apply_default_policy`), each on an otherwise idle machine and next to one
busy-looping process (started here, bounded in time), each in a fresh subprocess.

Usage::

    .venv/bin/python benchmarks/speed.py                  # CPU
    .venv/bin/python benchmarks/speed.py --device cuda    # CUDA, where available
    .venv/bin/python benchmarks/speed.py --thread-policy  # thread counts, idle and busy
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import markdown_table, print_settings, write_json

from mflows.models import make_model
from mflows.training import fit

SHAPES: dict[str, dict[str, Any]] = {
    "power 3->2": {
        "d": 3,
        "n": 2,
        "p": 1,
        "arch": {
            "outer_layers": 5,
            "inner_layers": 5,
            "num_bins": 10,
            "tail_bound": 6.0,
            "linear": "permutation",
        },
    },
    "lhc40d 40->14": {
        "d": 40,
        "n": 14,
        "p": 2,
        "arch": {
            "outer_layers": 20,
            "inner_layers": 15,
            "num_bins": 11,
            "tail_bound": 10.0,
            "linear": "lu",
        },
    },
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def log_prob_throughput(model: Any, d: int, p: int, batch: int, repeats: int) -> float:
    """Samples per second of ``model.log_prob`` (no gradient), after one warm-up call."""
    device = model.device
    x = torch.randn(batch, d, device=device)
    ctx = torch.zeros(batch, p, device=device)
    with torch.no_grad():
        model.log_prob(x, context=ctx)
        _sync(device)
        tic = time.perf_counter()
        for _ in range(repeats):
            model.log_prob(x, context=ctx)
        _sync(device)
    return batch * repeats / (time.perf_counter() - tic)


def train_steps_per_second(model: Any, algorithm: str, d: int, p: int, steps: int) -> float:
    """Training batches (of 100) per second of :func:`mflows.fit`, after a warm-up fit."""
    device = model.device
    options = {
        "algorithm": algorithm,
        "epochs": 1,
        "batch_size": 100,
        "validation_split": 0.0,
        "early_stopping": False,
        "progress": False,
        "device": device,
    }
    warm_x, warm_c = torch.randn(200, d), torch.zeros(200, p)
    fit(model, warm_x, warm_c, **options)
    x, c = torch.randn(100 * steps, d), torch.zeros(100 * steps, p)
    _sync(device)
    tic = time.perf_counter()
    fit(model, x, c, **options)
    _sync(device)
    return steps / (time.perf_counter() - tic)


THREAD_MODES = ("1", "2", "torch default", "mflows default")


def _thread_worker(case: str, mode: str, steps: int) -> None:
    """Runs in a fresh process: sets the threads by ``mode``, times ``steps`` steps of ``case``."""
    from compare_speed import _Case

    from mflows.threads import apply_default_policy

    c = _Case(case, "trainer")
    if mode == "mflows default":
        apply_default_policy(c.model, 100)
    elif mode != "torch default":
        torch.set_num_threads(int(mode))
    c.once()
    c.once()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(steps):
        c.once()
    result = {
        "threads": torch.get_num_threads(),
        "wall": (time.perf_counter() - wall) / steps,
        "cpu": (time.process_time() - cpu) / steps,
    }
    print(json.dumps(result), flush=True)


def _busy(seconds: float) -> subprocess.Popen:
    code = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"
    return subprocess.Popen([sys.executable, "-c", code])


def thread_policy_benchmark(cases: list[str], steps: dict[str, int], repeats: int) -> str:
    """Table of steps/s per thread mode, idle and next to one busy process (median of repeats)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    rows = []
    for case in cases:
        for mode in THREAD_MODES:
            rates: dict[str, list[float]] = {"idle": [], "busy": []}
            threads = 0
            for _ in range(repeats):
                for load in ("idle", "busy"):
                    busy = _busy(600.0) if load == "busy" else None
                    try:
                        out = subprocess.run(
                            [
                                sys.executable,
                                __file__,
                                "--thread-worker",
                                case,
                                mode,
                                str(steps[case]),
                            ],
                            env=env,
                            capture_output=True,
                            text=True,
                            timeout=900,
                            check=True,
                        ).stdout
                    finally:
                        if busy is not None:
                            busy.kill()
                            busy.wait()
                    res = json.loads(out.strip().splitlines()[-1])
                    threads = res["threads"]
                    rates[load].append(1.0 / res["wall"])
            idle, loaded = statistics.median(rates["idle"]), statistics.median(rates["busy"])
            rows.append(
                [case, mode, str(threads), f"{idle:.2f}", f"{loaded:.2f}", f"{idle / loaded:.2f}x"]
            )
            print(rows[-1], file=sys.stderr, flush=True)
    header = [
        "case",
        "threads setting",
        "threads used",
        "steps/s idle",
        "steps/s busy",
        "slow-down",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--thread-worker":
        _thread_worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--eval-batch", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5, help="log_prob calls timed")
    parser.add_argument("--steps", type=int, default=20, help="training steps timed")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated subset")
    parser.add_argument("--out", default=None, help="write results (JSON) here")
    parser.add_argument(
        "--thread-policy", action="store_true", help="thread counts, idle and busy (see above)"
    )
    parser.add_argument("--thread-repeats", type=int, default=3)
    parser.add_argument("--thread-cases", default="alt power,alt 40->14")
    args = parser.parse_args()
    if args.thread_policy:
        steps = {"alt power": 30, "alt 40->14": 4}
        cases = [c.strip() for c in args.thread_cases.split(",") if c.strip()]
        print(thread_policy_benchmark(cases, steps, args.thread_repeats))
        return
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False")
    names = [s.strip() for s in args.shapes.split(",") if s.strip()]
    settings = {
        "device": str(device),
        "dtype": "float32",
        "log_prob batch": args.eval_batch,
        "log_prob calls timed": args.repeats,
        "training batch": 100,
        "training steps timed": args.steps,
        "shapes": ", ".join(names),
    }
    print_settings("Speed: exact likelihood and training steps", settings)

    rows, results = [], []
    for name in names:
        spec = SHAPES[name]
        d, n, p = spec["d"], spec["n"], spec["p"]
        model = make_model("mflow", d, n, context_dim=p, seed=0, **spec["arch"]).to(device)
        params = sum(t.numel() for t in model.parameters())
        model.eval()
        lp = log_prob_throughput(model, d, p, args.eval_batch, args.repeats)
        model.train()
        alt = train_steps_per_second(model, "alternating", d, p, args.steps)
        sim = train_steps_per_second(model, "likelihood", d, p, args.steps)
        result = {
            "shape": name,
            "device": str(device),
            "parameters": params,
            "log_prob_samples_per_s": lp,
            "alternating_steps_per_s": alt,
            "likelihood_steps_per_s": sim,
        }
        print(result, flush=True)
        results.append(result)
        rows.append([name, str(device), f"{params:,}", f"{lp:,.0f}", alt, sim])
    print()
    header = [
        "shape",
        "device",
        "parameters",
        f"exact log_prob (samples/s, batch {args.eval_batch})",
        "alternating M/D (steps/s)",
        "simultaneous exact likelihood (steps/s)",
    ]
    print(markdown_table(header, rows))
    write_json(args.out, {"settings": settings, "command": " ".join(sys.argv), "results": results})


if __name__ == "__main__":
    main()
