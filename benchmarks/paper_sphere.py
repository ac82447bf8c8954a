"""Paper reproduction: the spherical Gaussian (Brehmer & Cranmer 2020, section 4.1).

Trains AF, FOM, PIE and M-flow on ``spherical_gaussian`` (an n-sphere in R^d with Gaussian
angles and off-manifold noise of width epsilon; defaults n = 8, d = 9, epsilon = 0.01) and
reports:

* manifold distance: mean over 10^4 generated samples of min(distance to the sphere, 10);
* reconstruction error: mean over 10^3 test points of min(|x - x'|, 10) (AF: none);
* log-likelihood error: mean over the 10^3 test points of |log p_model - log p_true|, where
  for the manifold models (FOM, M-flow) ``log p_model = model.log_prob(x)`` (the model density on
  its manifold at its projection of x) and ``log p_true = log_density_on_manifold`` at the true
  projection of x onto the sphere (a density w.r.t. the sphere's area), and for AF and PIE both
  are ambient densities in R^d (``log_density``, which includes the off-manifold Gaussian).

The paper shows these results as figures (no table), so no paper numbers are printed.
Architecture: outer 5 and inner 5 rational-quadratic spline couplings with permutations, 8 bins,
tail bound 3, residual MLP conditioners (100 units, 2 blocks); AF 10 couplings; FOM uses the
exact sphere chart. Training: batch 100, AdamW lr 1e-3, weight decay 1e-4, clip 1, validation
split 0.25; AF, FOM and PIE by maximum likelihood, M-flow by alternating M/D training.

Usage::

    .venv/bin/python benchmarks/paper_sphere.py --quick
    .venv/bin/python benchmarks/paper_sphere.py --n-train 10000 --epochs 10 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Timer,
    markdown_table,
    print_settings,
    run_models,
    write_json,
)

import mflows.data
from mflows.evaluation.scoring import ScoreOptions, score
from mflows.models import ARCHITECTURE_KEYS, make_model
from mflows.training import fit

#: name -> (label, kind, algorithm, density compared against)
MODELS: dict[str, tuple[str, str, str, str]] = {
    "af": ("AF", "af", "likelihood", "ambient"),
    "fom": ("FOM", "fom", "likelihood", "on manifold"),
    "pie": ("PIE", "pie", "likelihood", "ambient"),
    "mflow": ("M-flow (alternating)", "mflow", "alternating", "on manifold"),
}

ARCHITECTURE = {  # outer_layers: the factory's default (5, AF 10)
    "inner_layers": 5,
    "num_bins": 8,
    "tail_bound": 3.0,
    "hidden_features": 100,
    "num_blocks": 2,
    "linear": "permutation",
}

N_GENERATED = 10_000
N_TEST = 1_000


def build(name: str, d: int, n: int, seed: int) -> torch.nn.Module:
    """Model ``name`` for an n-sphere in R^d (unconditional)."""
    kind = MODELS[name][1]
    arch = {**ARCHITECTURE, "seed": seed}
    arch = {k: v for k, v in arch.items() if k in ARCHITECTURE_KEYS[kind]}
    return make_model(kind, d, None if kind == "af" else n, **arch)


def run_one(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Trains and scores one model in this process."""
    label, kind, algorithm, _ = MODELS[name]
    data = mflows.data.get("spherical_gaussian", n=args.n, d=args.d, epsilon=args.epsilon)
    train = data.load("train", n=args.n_train, seed=args.seed)
    model = build(name, args.d, args.n, args.seed).to(args.device)
    print(f"[{name}] training {label} ({kind}, {algorithm}) ...", flush=True)
    with Timer() as t:
        history = fit(
            model,
            train.x,
            algorithm=algorithm,
            epochs=args.epochs,
            batch_size=100,
            lr=1e-3,
            weight_decay=1e-4,
            clip=1.0,
            validation_split=0.25,
            seed=args.seed,
            progress=False,
            device=args.device,
        )
    out: dict[str, Any] = {
        "model": name,
        "label": label,
        "kind": kind,
        "algorithm": algorithm,
        "train_time_s": t.seconds,
        "epochs_run": len(history),
    }
    model.eval()
    options = ScoreOptions(n_test=N_TEST, n_generate=N_GENERATED, seed=args.seed, mcmc_steps=0)
    with Timer() as t:
        out.update(score(model, data, options, device=args.device))
    # which density was compared is chosen by the model's capabilities
    out["density_compared"] = out.get("log_likelihood_reference")
    out["eval_time_s"] = t.seconds
    print(f"[{name}] {json.dumps(out)}", flush=True)
    return out


def run_parallel(names: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Runs each model in its own process, ``args.jobs`` at a time."""
    common = [
        *("--n-train", str(args.n_train), "--epochs", str(args.epochs)),
        *("--seed", str(args.seed), "--threads", str(args.threads), "--device", args.device),
        *("--n", str(args.n), "--d", str(args.d), "--epsilon", str(args.epsilon)),
        *("--jobs", "1", "--no-table"),
    ]
    labels = {m: MODELS[m][0] for m in names}
    return run_models(__file__, names, common, labels, args.jobs, args.threads, args.job_timeout)


def table(results: list[dict[str, Any]]) -> str:
    """Markdown table of the results."""
    header = [
        "model",
        "manifold distance",
        "reco. error",
        "log-lik. compared",
        "mean log p (model)",
        "mean log p (true)",
        "mean abs. log-lik. error",
        "train (s)",
    ]
    rows = [
        [
            r["label"],
            r.get("manifold_distance"),
            r.get("reconstruction_error"),
            r.get("density_compared"),
            r.get("log_likelihood"),
            r.get("true_log_likelihood"),
            r.get("log_likelihood_mae"),
            r.get("train_time_s"),
        ]
        for r in results
    ]
    return markdown_table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=100_000, help="training samples")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset")
    parser.add_argument("--n", type=int, default=8, help="sphere dimension")
    parser.add_argument("--d", type=int, default=9, help="data dimension")
    parser.add_argument("--epsilon", type=float, default=0.01, help="off-manifold noise width")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write results (JSON) here")
    parser.add_argument("--quick", action="store_true", help="tiny smoke-test budget")
    parser.add_argument("--jobs", type=int, default=1, help="models trained in parallel processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--job-timeout", type=float, default=None, help="kill a model after (s)")
    parser.add_argument("--no-table", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.n_train, args.epochs = 2000, 2
    torch.set_num_threads(args.threads)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    settings = {
        "data": f"spherical_gaussian n={args.n} d={args.d} epsilon={args.epsilon}",
        "models": ", ".join(names),
        "training samples": args.n_train,
        "epochs per model": args.epochs,
        "generated samples / test points": "10000 / 1000",
        "seed": args.seed,
        "device": args.device,
        "parallel processes x threads": f"{args.jobs} x {args.threads}",
    }
    if not args.no_table:
        print_settings("Paper: spherical Gaussian", settings)
    with Timer() as t:
        if args.jobs > 1 and len(names) > 1:
            results = run_parallel(names, args)
        else:
            results = [run_one(m, args) for m in names]
    write_json(
        args.out,
        {
            "settings": settings,
            "command": " ".join(sys.argv),
            "wall_time_s": t.seconds,
            "results": results,
        },
    )
    if not args.no_table:
        print()
        print(table(results))
        print(f"\nwall time {t.seconds:.0f} s")


if __name__ == "__main__":
    main()
