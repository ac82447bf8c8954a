"""Where on the sphere stored models get the density wrong, point by point.

The true density of the spherical Gaussian on the sphere is the density of its angles divided by
the area element ``prod_i sin(c_i)^(n-i)`` of the polar angles ``c_1 .. c_{n-1}``, so it is
unbounded wherever a polar angle reaches 0 or pi (the "poles"), while a flow through a smooth
chart has a bounded density there. This script splits the mean absolute log-likelihood error of
stored models (``<root>/.work/<experiment>/<run>/model.pt``) on fresh test points by how close a
point is to that set: by the smallest ``|sin c_i|`` over the polar angles, and (for the exact
angle chart, whose azimuth wraps) by the distance of the azimuth to the wrap at 0 = 2 pi.

Usage (from the repository root)::

    python -m benchmarks.paper.sphere_errors --experiment sphere2 fom-seed0 fom_stereo-seed0
    python -m benchmarks.paper.sphere_errors --experiment sphere fom_stereo-seed0 \\
        --out benchmarks/results/paper-analysis/sphere-errors.json
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
from mflows.data.spherical import sphere_angles
from mflows.files import atomic_write

DEFAULT_ROOT = Path("benchmarks/results/paper")
#: Upper edges of the bins of the smallest |sin(polar angle)|.
SIN_EDGES = (0.1, 0.3, 0.6, 1.0)
#: Upper edges of the bins of the azimuth's distance to the wrap (radians).
SEAM_EDGES = (0.1, 0.3, 1.0, float(np.pi))

DIMENSIONS = {"sphere": (8, 9), "sphere2": (2, 3)}


def _bins(values: np.ndarray, error: np.ndarray, edges: Sequence[float]) -> list[dict]:
    rows, lower = [], 0.0
    for upper in edges:
        inside = (values >= lower) & (values <= upper if upper == edges[-1] else values < upper)
        rows.append(
            {
                "from": lower,
                "to": float(upper),
                "points": int(inside.sum()),
                "mean_abs_error": float(error[inside].mean()) if inside.any() else None,
            }
        )
        lower = float(upper)
    return rows


def split_errors(model, dataset, points: int, seed: int) -> dict:
    """Mean absolute error of ``model.log_prob`` overall and by position on the sphere."""
    x = dataset.sample(points, seed=seed)
    true = dataset.log_density_on_manifold(x)
    with torch.no_grad():
        got = model.log_prob(torch.as_tensor(x, dtype=model.dtype)).double().numpy()
    error = np.abs(got - true)
    n = dataset.latent_dim
    angles = sphere_angles(x[:, : n + 1])
    smallest_sin = np.abs(np.sin(angles[:, : n - 1])).min(axis=1)
    azimuth = angles[:, -1]
    seam = np.minimum(azimuth, 2 * np.pi - azimuth)
    far = smallest_sin >= 0.3
    return {
        "mean_abs_error": float(error.mean()),
        "median_abs_error": float(np.median(error)),
        "mean_signed_error": float((got - true).mean()),
        "fraction_with_smallest_sin_below_0.3": float(1 - far.mean()),
        "mean_abs_error_where_smallest_sin_at_least_0.3": float(error[far].mean()),
        "by_smallest_sin_of_polar_angles": _bins(smallest_sin, error, SIN_EDGES),
        "by_azimuth_distance_to_wrap": _bins(seam, error, SEAM_EDGES),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.paper.sphere_errors")
    parser.add_argument("runs", nargs="+", help="stored runs, e.g. fom_stereo-seed0")
    parser.add_argument("--experiment", choices=sorted(DIMENSIONS), default="sphere2")
    parser.add_argument("--root", default=str(DEFAULT_ROOT), help="store root")
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    n, d = DIMENSIONS[args.experiment]
    dataset = mflows.data.get("spherical_gaussian", n=n, d=d)
    store = Store(Path(args.root))
    results = {}
    for run in args.runs:
        model = mflows.load(store.model_file(args.experiment, run))
        r = results[run] = split_errors(model, dataset, args.points, args.seed)
        print(
            f"{run}: mean abs. error {r['mean_abs_error']:.3f} (median "
            f"{r['median_abs_error']:.3f}, signed mean {r['mean_signed_error']:+.3f}); "
            f"{r['fraction_with_smallest_sin_below_0.3']:.0%} of the points have a polar angle "
            f"with |sin| < 0.3; elsewhere {r['mean_abs_error_where_smallest_sin_at_least_0.3']:.3f}"
        )
        for row in r["by_smallest_sin_of_polar_angles"]:
            print(f"   min |sin| in [{row['from']:.1f}, {row['to']:.1f}): {row}")
        for row in r["by_azimuth_distance_to_wrap"]:
            print(f"   azimuth distance to wrap [{row['from']:.1f}, {row['to']:.2f}): {row}")
    if args.out:
        payload = {
            "experiment": args.experiment,
            "root": args.root,
            "points": args.points,
            "seed": args.seed,
            "results": results,
        }
        atomic_write(args.out, json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
