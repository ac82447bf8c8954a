"""How well stored power models get the likelihood ratio in theta, point by point.

The posterior of the power experiment multiplies the model's likelihood ratios between theta
values over 20 observed points. This script measures, on ``--points`` fresh samples at theta = 0,
the error of ``log p(x|theta_a) - log p(x|theta_b)`` against the simulator's true value, for each
stored model (``<root>/.work/power/<model>-seed<k>/model.pt``), overall and on the points of the
mixture component that does not depend on theta (true ratio 0).

Usage (from the repository root)::

    python -m benchmarks.paper.ratios af-seed0 pie-seed0 mflow_alt-seed1 emflow_alt-seed0
    python -m benchmarks.paper.ratios af-seed0 --root benchmarks/results/paper-short \\
        --out benchmarks/results/paper-analysis/ratio-errors-short.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

import mflows
from benchmarks.paper.store import Store
from mflows.files import atomic_write

DEFAULT_ROOT = Path("benchmarks/results/paper")


def ratio_errors(
    model, dataset, points: int, theta_a: float, theta_b: float, seed: int
) -> dict[str, float]:
    """Mean and standard deviation of the per-point log-ratio error of ``model``."""
    x = dataset.sample(points, theta=np.zeros(1), seed=seed)
    a, b = np.full((points, 1), theta_a), np.full((points, 1), theta_b)
    true = dataset.log_density(x, a) - dataset.log_density(x, b)
    xt = torch.as_tensor(x, dtype=model.dtype)
    with torch.no_grad():
        got = model.log_prob(xt, context=torch.as_tensor(a, dtype=model.dtype))
        got = got - model.log_prob(xt, context=torch.as_tensor(b, dtype=model.dtype))
    error = got.double().numpy() - true
    fixed = np.abs(true) < 1e-3  # the theta-independent component
    return {
        "mean": float(error.mean()),
        "std": float(error.std()),
        "std_where_true_ratio_is_0": float(error[fixed].std()),
        "fraction_where_true_ratio_is_0": float(fixed.mean()),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.paper.ratios")
    parser.add_argument("runs", nargs="+", help="stored runs, e.g. af-seed0")
    parser.add_argument("--root", default=str(DEFAULT_ROOT), help="store root")
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--theta", type=float, nargs=2, default=(-0.5, 0.5))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    dataset = mflows.data.get("power")
    store = Store(Path(args.root))
    results = {}
    for run in args.runs:
        model = mflows.load(store.model_file("power", run))
        results[run] = ratio_errors(model, dataset, args.points, *args.theta, args.seed)
        r = results[run]
        print(
            f"{run}: log-ratio error mean {r['mean']:+.3f}, std {r['std']:.3f}; "
            f"where the true ratio is 0 ({r['fraction_where_true_ratio_is_0']:.0%} of the "
            f"points): std {r['std_where_true_ratio_is_0']:.3f}"
        )
    if args.out:
        payload = {
            "root": args.root,
            "points": args.points,
            "theta": list(args.theta),
            "seed": args.seed,
            "results": results,
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(Path(args.out), json.dumps(payload, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
