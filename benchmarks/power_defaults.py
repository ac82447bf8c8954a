"""Steps the default M-flow needs on the power surface (issue: defaults that learn any manifold).

Trains ``make_model("mflow", 3, 2)`` with every option at its default and ``fit``'s defaults
(alternating M/D, batch 100) on the power data, and scores the mean reconstruction error
(clipped at 10) on 1,000 test points after every epoch, until it reaches ``--target`` or
``--epochs`` run out. Writes one JSON line per epoch (steps, seconds, error) to ``--out``.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/power_defaults.py --n 100000 --epochs 25 \\
        --out benchmarks/results/manifolds/power-defaults-steps.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import mflows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--target", type=float, default=0.003)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = mflows.data.get("power")
    x = data.load("train", n=args.n, seed=args.seed).x
    x_test = torch.as_tensor(data.load("test", n=1000).x)
    model = mflows.make_model("mflow", 3, 2, seed=args.seed)
    steps_per_epoch = -(-round(args.n * 0.75) // 100)
    start = time.process_time()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("")

    class Reached(Exception):
        pass

    def callback(epoch: int, record: dict) -> None:
        with torch.no_grad():
            err = (x_test - model.project(x_test)).norm(dim=-1).clamp(max=10).mean().item()
        row = {"epoch": epoch + 1, "steps": (epoch + 1) * steps_per_epoch,
               "cpu_s": time.process_time() - start, "reconstruction_error": err}  # fmt: skip
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(row, flush=True)
        if err <= args.target:
            raise Reached

    try:
        mflows.fit(model, x, algorithm="alternating", epochs=args.epochs, seed=args.seed,
                   progress=False, early_stopping=False, callback=callback)  # fmt: skip
    except Reached:
        print("target reached", flush=True)


if __name__ == "__main__":
    main()
