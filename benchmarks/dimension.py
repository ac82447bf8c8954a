"""Benchmark of :func:`mflows.estimate_dimension` (one nested-dropout run) on the test manifolds.

For every case (spherical Gaussians n = 2, 3, 5 in d = 9; the power surface n = 2 in d = 3):

1. one run: ``estimate_dimension(x, max_dim, epochs=E)`` (default E: ~3000 steps): chosen n,
   error curve, wall time;
2. the baseline: one M-flow per candidate n = 1 .. max_dim, each trained on the reconstruction
   loss for the same E epochs: held-out errors and total wall time;
3. the chosen n's model: the truncated ordered model's held-out reconstruction error against the
   model trained directly at the true n (step 2), and the final density model two ways, E_d
   density epochs each: (a) truncate the ordered model and train only its density; (b) train an
   M-flow at the chosen n from scratch (sequential: E manifold + E_d density epochs). Held-out
   reconstruction error and mean log-likelihood.

Writes ``benchmarks/results/dimension/<case>.json``. Command (1 thread):

    OMP_NUM_THREADS=1 python benchmarks/dimension.py --cases CASE   # default budget, ~3000 steps
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import mflows
from mflows.dimension import density_schedule, reconstruction_curve, truncate
from mflows.training.phases import Phase, Schedule, Stage

CASES: dict[str, dict[str, Any]] = {
    "sphere-n2-d9": {"name": "spherical_gaussian", "options": {"n": 2, "d": 9}, "n": 2, "max": 8},
    "sphere-n3-d9": {"name": "spherical_gaussian", "options": {"n": 3, "d": 9}, "n": 3, "max": 8},
    "sphere-n5-d9": {"name": "spherical_gaussian", "options": {"n": 5, "d": 9}, "n": 5, "max": 8},
    "power-n2-d3": {"name": "power", "options": {}, "n": 2, "max": 2},
}
ARCH = {"linear": "lu"}


def _manifold_schedule(epochs: int) -> Schedule:
    return Schedule((Stage((Phase("manifold", "manifold", {"mse": 1.0}),), epochs),))


def _error(model: Any, x: np.ndarray) -> float:
    return reconstruction_curve(model, x)[-1]


def _log_likelihood(model: Any, x: np.ndarray) -> float:
    with torch.no_grad():
        lp = model.log_prob(torch.as_tensor(x)).double()
    lp = lp[torch.isfinite(lp)]
    return float(lp.mean())


def run_case(
    case: str,
    epochs: int | None,
    density_epochs: int,
    samples: int,
    seed: int,
    decay: float = 0.8,
    scan: str = "all",
    final: bool = True,
) -> dict:
    spec = CASES[case]
    ds = mflows.data.get(spec["name"], **spec["options"])
    x = ds.load("train", samples, seed=seed).x
    x_test = ds.load("test", 1000, seed=seed).x
    d, true_n, max_dim = x.shape[1], spec["n"], spec["max"]
    var = float(((x_test - x_test.mean(0)) ** 2).sum(1).mean())
    fit_kw = {"progress": False, "seed": seed}

    est = mflows.estimate_dimension(x, max_dim, epochs=epochs, seed=seed, decay=decay, **ARCH)
    epochs = est.extra["epochs"]  # the default (None): about DEFAULT_STEPS steps
    arch = {**ARCH, "tail_bound": est.model.config["architecture"]["tail_bound"]}
    ordered_test = reconstruction_curve(est.model, x_test)
    result: dict[str, Any] = {
        "case": case,
        "true_n": true_n,
        "d": d,
        "max_dim": max_dim,
        "epochs": epochs,
        "samples": samples,
        "one_run": {**est.to_dict(), "test_relative_errors": [e / var for e in ordered_test]},
        "recovered": est.dimension == true_n,
    }

    per_k: list[dict[str, float]] = []
    total = 0.0
    candidates = range(1, max_dim + 1) if scan == "all" else [true_n]
    for k in candidates:
        model = mflows.make_model("mflow", d, k, seed=seed, **arch)
        tic = time.perf_counter()
        mflows.fit(model, x, schedule=_manifold_schedule(epochs), **fit_kw)
        seconds = time.perf_counter() - tic
        total += seconds
        per_k.append({"k": k, "seconds": seconds, "relative_error": _error(model, x_test) / var})
    if scan == "all":
        result["per_candidate"] = {"total_seconds": total, "models": per_k}
    else:  # one model at the true n; the scan's time estimated as max_dim such models
        total *= max_dim
        result["per_candidate"] = {"estimated_total_seconds": total, "models": per_k}
    result["speedup"] = total / est.wall_time
    direct = next(m for m in per_k if m["k"] == true_n)["relative_error"]
    chosen = ordered_test[est.dimension - 1] / var
    result["chosen_vs_direct"] = {
        "chosen_truncated_relative_error": chosen,
        "direct_true_n_relative_error": direct,
        "ratio": chosen / direct,
    }

    if not final:
        return result
    n = est.dimension
    truncated = truncate(est.model, n)
    tic = time.perf_counter()
    mflows.fit(truncated, x, schedule=density_schedule(density_epochs), **fit_kw)
    t_trunc = time.perf_counter() - tic
    scratch = mflows.make_model("mflow", d, n, seed=seed, **arch)
    tic = time.perf_counter()
    mflows.fit(scratch, x, algorithm="sequential", epochs=(epochs, density_epochs), **fit_kw)
    t_scratch = time.perf_counter() - tic
    result["final_model"] = {
        "n": n,
        "density_epochs": density_epochs,
        "truncated": {
            "seconds": t_trunc,
            "relative_error": _error(truncated, x_test) / var,
            "log_likelihood": _log_likelihood(truncated, x_test),
        },
        "scratch": {
            "seconds": t_scratch,
            "relative_error": _error(scratch, x_test) / var,
            "log_likelihood": _log_likelihood(scratch, x_test),
        },
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument(
        "--epochs", type=int, default=None, help="default: estimate_dimension's (~3000 steps)"
    )
    parser.add_argument("--density-epochs", type=int, default=10)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--decay", type=float, default=0.8, help="truncation distribution")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/dimension"))
    parser.add_argument(
        "--scan",
        choices=("all", "true"),
        default="all",
        help="baseline: one model per candidate n, or only the true n (scan time estimated)",
    )
    parser.add_argument("--no-final", action="store_true", help="skip the final-model comparison")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from mflows.files import atomic_write

    for case in args.cases:
        result = run_case(
            case,
            args.epochs,
            args.density_epochs,
            args.samples,
            args.seed,
            args.decay,
            args.scan,
            not args.no_final,
        )
        name = case if args.decay == 0.8 else f"{case}-decay{args.decay:g}"
        atomic_write(args.out / f"{name}.json", json.dumps(result, indent=2) + "\n")
        one = result["one_run"]
        scan_s = result["speedup"] * one["wall_time"]
        print(
            f"{case}: chosen n={one['dimension']} (true {result['true_n']}), "
            f"one run {one['wall_time']:.0f} s vs per-candidate "
            f"{scan_s:.0f} s ({args.scan}), chosen/direct error "
            f"{result['chosen_vs_direct']['ratio']:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
