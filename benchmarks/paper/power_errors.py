"""Where on the polynomial surface stored models reconstruct badly, point by point.

The spline couplings of the paper's power models are the identity outside their tail bound
(``|x| > 6``): a learned manifold can only bend inside that box. A fraction of a per cent of the
test points lies outside it in some coordinate, on the steep outer part of the surface. This
script splits the mean reconstruction error ``|x - project(x)|`` (clipped as ``mflows evaluate``
clips it) of stored models (``<root>/.work/power/<run>/model.pt``) on fresh test points: inside
and outside the tail bound, and by the distance ``sqrt(x1^2 + x2^2)`` from the centre. With
``--samples N`` it also splits the manifold distance of N generated samples (see
:func:`split_sample_distances`).

Usage (from the repository root)::

    python -m benchmarks.paper.power_errors mflow_alt-seed1 pae-seed1 \\
        --out benchmarks/results/paper-analysis/power-reconstruction.json
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
from mflows.evaluation.metrics import manifold_distances, reconstruction_errors
from mflows.evaluation.scoring import default_context, draw_samples
from mflows.files import atomic_write

DEFAULT_ROOT = Path("benchmarks/results/paper")
#: The tail bound of the paper's power models (configs power_*.toml).
TAIL_BOUND = 6.0
#: Upper edges of the bins of sqrt(x1^2 + x2^2).
RADIUS_EDGES = (1.0, 2.0, 3.0, 4.0, 5.0, float("inf"))


def split_errors(model, x: np.ndarray, theta: np.ndarray | None) -> dict:
    """Mean reconstruction error overall, inside and outside the tail bound, by radius."""
    xt = torch.as_tensor(x, dtype=model.dtype)
    ct = None if theta is None else torch.as_tensor(theta, dtype=model.dtype)
    with torch.no_grad():
        projected = model.project(xt, ct).double().numpy()
    error = reconstruction_errors(x, projected)
    outside = (np.abs(x) > TAIL_BOUND).any(axis=1)
    radius = np.linalg.norm(x[:, :2], axis=1)
    bins, lower = [], 0.0
    for upper in RADIUS_EDGES:
        inside = (radius >= lower) & (radius < upper)
        bins.append(
            {
                "from": lower,
                "to": upper if np.isfinite(upper) else None,
                "points": int(inside.sum()),
                "mean_error": float(error[inside].mean()) if inside.any() else None,
            }
        )
        lower = upper
    return {
        "mean_error": float(error.mean()),
        "median_error": float(np.median(error)),
        "fraction_outside_tail_bound": float(outside.mean()),
        "mean_error_inside_tail_bound": float(error[~outside].mean()),
        "mean_error_outside_tail_bound": float(error[outside].mean()) if outside.any() else None,
        "share_of_total_error_outside_tail_bound": float(error[outside].sum() / error.sum()),
        "by_radius": bins,
    }


def split_sample_distances(
    model, dataset, context: np.ndarray | None, train, n: int, seed: int = 0
) -> dict:
    """Distances of ``n`` generated samples to the true surface: mean, quantiles, and the share
    carried by samples whose latent lies outside the box of the central 99% of the training
    points' latents (where the inner flow puts mass that the manifold's training never saw)."""
    torch.manual_seed(seed)
    samples = draw_samples(model, n, context)
    distance = manifold_distances(samples, dataset)
    dtype = model.dtype
    with torch.no_grad():
        u_train = model.encode(
            torch.as_tensor(train.x, dtype=dtype), torch.as_tensor(train.theta, dtype=dtype)
        ).numpy()
        ctx = None if context is None else torch.as_tensor(np.tile(context, (n, 1)), dtype=dtype)
        u = model.encode(torch.as_tensor(samples, dtype=dtype), ctx).numpy()
    low, high = np.percentile(u_train, 0.5, axis=0), np.percentile(u_train, 99.5, axis=0)
    beyond = ((u < low) | (u > high)).any(axis=1)
    q50, q90, q99 = np.percentile(distance, [50, 90, 99])
    return {
        "mean_distance": float(distance.mean()),
        "median_distance": float(q50),
        "p90_distance": float(q90),
        "p99_distance": float(q99),
        "fraction_latent_beyond_training_box": float(beyond.mean()),
        "share_of_total_distance_latent_beyond_training_box": float(
            distance[beyond].sum() / distance.sum()
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.paper.power_errors")
    parser.add_argument("runs", nargs="+", help="stored runs, e.g. mflow_alt-seed1")
    parser.add_argument("--root", default=str(DEFAULT_ROOT), help="store root")
    parser.add_argument("--points", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument(
        "--samples", type=int, default=0,
        help="also split the manifold distance of this many generated samples (0: no)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    test = mflows.data.get("power").load("test", n=args.points, seed=args.seed)
    x = np.asarray(test.x, dtype=np.float64)
    theta = None if test.theta is None else np.asarray(test.theta, dtype=np.float64)
    store = Store(Path(args.root))
    dataset = mflows.data.get("power")
    train = dataset.load("train", n=5000, seed=0) if args.samples else None
    results = {}
    for run in args.runs:
        model = mflows.load(store.model_file("power", run))
        model.eval()
        r = results[run] = split_errors(model, x, theta)
        print(
            f"{run}: mean {r['mean_error']:.4f} (median {r['median_error']:.4f}); "
            f"{r['fraction_outside_tail_bound']:.2%} of the points beyond the tail bound: "
            f"{r['mean_error_outside_tail_bound']:.4f} there, "
            f"{r['share_of_total_error_outside_tail_bound']:.0%} of the total; inside "
            f"{r['mean_error_inside_tail_bound']:.4f}"
        )
        if args.samples:
            d = r["samples"] = split_sample_distances(
                model, dataset, default_context(dataset), train, args.samples
            )
            print(
                f"{run}: samples {d['mean_distance']:.4f} from the surface (median "
                f"{d['median_distance']:.4f}, p99 {d['p99_distance']:.4f}); latent beyond the "
                f"training box: {d['fraction_latent_beyond_training_box']:.1%} of the samples, "
                f"{d['share_of_total_distance_latent_beyond_training_box']:.0%} of the distance"
            )
    if args.out:
        payload = {
            "experiment": "power",
            "root": args.root,
            "points": args.points,
            "seed": args.seed,
            "tail_bound": TAIL_BOUND,
            "samples": args.samples,
            "results": results,
        }
        atomic_write(args.out, json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
