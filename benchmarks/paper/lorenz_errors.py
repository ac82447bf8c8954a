"""Where stored Lorenz manifold models reconstruct badly, and why their training is unstable.

The Lorenz attractor is not an embedded surface: near the plane x_0 = 0 (standardised units)
the sheets of its two lobes meet and merge, while the manifold of an M-flow is the image of a
plane under a diffeomorphism of R^3. This script takes stored models
(``<root>/.work/lorenz/<run>/model.pt``), draws fresh points of the attractor and reports, overall
and binned by |x_0|:

- the reconstruction error ``|x - g(g^-1(x))|`` (as ``mflows evaluate`` scores it);
- the largest singular value of the encoder's Jacobian ``d g^-1 / dx`` (how fast the latent
  coordinate moves with the point);
- the norm of each point's gradient of the reconstruction loss ``|x - x'|^2`` with respect to the
  manifold parameters (what one point contributes to a training step).

Usage (from the repository root)::

    python -m benchmarks.paper.lorenz_errors mflow_seq-seed0 pae-seed0 \\
        --root benchmarks/results/paper-full \\
        --out benchmarks/results/paper-analysis/lorenz-errors.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

import mflows
from benchmarks.paper.store import Store
from mflows.files import atomic_write

DEFAULT_ROOT = Path("benchmarks/results/paper-full")
#: Upper edges of the bins of |x_0| (standardised units).
SEAM_EDGES = (0.1, 0.3, 0.6, 1.0, 1.5, float("inf"))


def encoder_top_singular_values(model: nn.Module, x: Tensor) -> np.ndarray:
    """Largest singular value of the Jacobian of ``model.encode`` at each row of ``x``."""
    top = []
    for xi in x:
        jac = torch.autograd.functional.jacobian(lambda p: model.encode(p[None])[0], xi)
        top.append(float(torch.linalg.matrix_norm(jac, ord=2)))
    return np.asarray(top)


def reconstruction_gradient_norms(model: nn.Module, x: Tensor) -> np.ndarray:
    """Norm of the gradient of ``|x_i - project(x_i)|^2`` in the manifold parameters, per point."""
    params = [p for p in model.manifold_parameters() if p.requires_grad]
    norms = []
    for xi in x:
        loss = (xi[None] - model.project(xi[None])).square().sum()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        norms.append(float(torch.sqrt(sum(g.square().sum() for g in grads if g is not None))))
    return np.asarray(norms)


def _bins(values: np.ndarray, columns: dict[str, np.ndarray], edges: Sequence[float]) -> list:
    rows, lower = [], 0.0
    for upper in edges:
        inside = (values >= lower) & (values < upper)
        row: dict = {"from": lower, "to": float(upper), "points": int(inside.sum())}
        for name, column in columns.items():
            row[f"mean_{name}"] = float(column[inside].mean()) if inside.any() else None
        rows.append(row)
        lower = float(upper)
    return rows


def split_errors(model: nn.Module, x: np.ndarray, gradient_points: int) -> dict:
    """The three quantities of the module docstring on ``x``, overall and by |x_0|."""
    xt = torch.as_tensor(x, dtype=torch.float32)
    with torch.no_grad():
        error = (xt - model.project(xt)).norm(dim=-1).double().numpy()
    seam = np.abs(x[:, 0])
    result: dict = {
        "points": len(x),
        "mean_reconstruction_error": float(error.mean()),
        "median_reconstruction_error": float(np.median(error)),
        "by_abs_x0": _bins(seam, {"reconstruction_error": error}, SEAM_EDGES),
    }
    m = min(gradient_points, len(x))
    if m == 0:
        return result
    top = encoder_top_singular_values(model, xt[:m])
    grad = reconstruction_gradient_norms(model, xt[:m])
    order = np.argsort(-grad)
    worst = order[: max(1, m // 100)]  # the top 1 % of the per-point gradients
    result.update(
        {
            "gradient_points": m,
            "gradient_norm_percentiles_50_90_99": np.percentile(grad, [50, 90, 99]).tolist(),
            "gradient_norm_max": float(grad.max()),
            "share_of_squared_gradient_norm_in_top_1_percent": float(
                (grad[worst] ** 2).sum() / (grad**2).sum()
            ),
            "top_1_percent_fraction_with_abs_x0_below_0.3": float((seam[worst] < 0.3).mean()),
            "fraction_with_abs_x0_below_0.3": float((seam[:m] < 0.3).mean()),
            "encoder_top_singular_value_median": float(np.median(top)),
            "encoder_top_singular_value_median_in_top_1_percent": float(np.median(top[worst])),
            "corr_log_gradient_log_singular_value": float(
                np.corrcoef(np.log(grad + 1e-30), np.log(top + 1e-30))[0, 1]
            ),
            "gradient_by_abs_x0": _bins(
                seam[:m],
                {"gradient_norm": grad, "encoder_top_singular_value": top},
                SEAM_EDGES,
            ),
        }
    )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.paper.lorenz_errors")
    parser.add_argument("runs", nargs="+", help="stored runs, e.g. mflow_seq-seed0")
    parser.add_argument("--root", default=str(DEFAULT_ROOT), help="store root")
    parser.add_argument("--points", type=int, default=4000, help="points for the errors")
    parser.add_argument(
        "--gradient-points", type=int, default=1000, help="points for gradients and Jacobians"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    dataset = mflows.data.get("lorenz")
    x = np.asarray(dataset.sample(args.points, seed=args.seed), dtype=np.float32)
    store = Store(Path(args.root))
    results = {}
    for run in args.runs:
        model = mflows.load(store.model_file("lorenz", run))
        r = results[run] = split_errors(model, x, args.gradient_points)
        print(
            f"{run}: reconstruction error {r['mean_reconstruction_error']:.4f} "
            f"(median {r['median_reconstruction_error']:.4f})"
        )
        for row in r["by_abs_x0"]:
            print(f"   |x0| in [{row['from']:.1f}, {row['to']:.1f}): {row}")
        if "gradient_norm_max" in r:
            p50, p90, p99 = r["gradient_norm_percentiles_50_90_99"]
            print(
                f"   per-point gradient norm: median {p50:.3g}, 90% {p90:.3g}, 99% {p99:.3g}, "
                f"max {r['gradient_norm_max']:.3g}; the top 1% carry "
                f"{r['share_of_squared_gradient_norm_in_top_1_percent']:.0%} of the squared "
                f"norm, {r['top_1_percent_fraction_with_abs_x0_below_0.3']:.0%} of them have "
                f"|x0| < 0.3 ({r['fraction_with_abs_x0_below_0.3']:.0%} of all points); encoder "
                "Jacobian's top singular value: median "
                f"{r['encoder_top_singular_value_median']:.3g}, "
                f"{r['encoder_top_singular_value_median_in_top_1_percent']:.3g} in the top 1%"
            )
            for row in r["gradient_by_abs_x0"]:
                print(f"   |x0| in [{row['from']:.1f}, {row['to']:.1f}): {row}")
    if args.out:
        payload = {
            "experiment": "lorenz",
            "root": args.root,
            "points": args.points,
            "gradient_points": args.gradient_points,
            "seed": args.seed,
            "results": results,
        }
        atomic_write(args.out, json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
