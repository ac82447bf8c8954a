"""Paper reproduction: Table 2 of Brehmer & Cranmer (2020), mixture on a polynomial surface.

Trains every model of the paper's table (docs/theory.md, "Experiments") on the ``power`` data
set (d = 3, n = 2, one parameter theta with a uniform prior on [-1, 1]; training theta drawn from
the prior, every model conditional on theta as in the paper) and scores it with
:func:`mflows.evaluation.score`, the paper's protocol (docs/theory.md, "Evaluation"):

* manifold distance: mean over 10^4 samples generated at theta = 0 of min(distance, 10);
* reconstruction error: mean over 10^3 test points (theta = 0) of min(|x - x'|, 10);
* posterior MMD: 20 observed test points at theta* = 0; Gaussian Metropolis chains (step 0.15,
  started at theta*, 100 burn-in, then ``--posterior-samples`` samples, 5000 in the paper) on the
  model likelihood and on the true likelihood, both times the uniform prior; squared MMD with a
  Gaussian kernel whose bandwidth is the median pairwise distance of the true posterior samples;
* OOD AUC: 10^3 test points vs 10^3 OOD points (theta = 0 samples plus N(0, 0.1^2) noise); the
  better of the AUC from the log-likelihood at theta = 0 and the AUC from the reconstruction
  error (whichever the model has).

Architecture and training follow the paper's power settings (docs/theory.md): outer 5 and inner 5
rational-quadratic spline couplings with permutations (AF: 10), 10 bins, tail bound 6, residual
MLP conditioners with 100 units and 2 blocks (encoders/decoders 100 units, 5 blocks), batch 100,
AdamW lr 1e-3, weight decay 1e-4, clip 1, validation split 0.25 with early stopping to the best
weights, cosine decay. Only the number of training samples and epochs are reduced by the flags.

Usage::

    .venv/bin/python benchmarks/paper_power.py --quick                      # smoke test
    .venv/bin/python benchmarks/paper_power.py --n-train 10000 --epochs 10 --jobs 2 \\
        --out results/power.json
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
from mflows.evaluation.scoring import ScoreOptions, score_with_artifacts
from mflows.models import ARCHITECTURE_KEYS, make_model
from mflows.training import fit

#: name -> (label, kind, algorithm, extra architecture options)
MODELS: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    "af": ("AF", "af", "likelihood", {"outer_layers": 10}),
    "pie": ("PIE", "pie", "likelihood", {}),
    "pie_uncond": (
        "PIE (unconditional manifold)",
        "pie",
        "likelihood",
        {"conditional_outer": False},
    ),
    "pae": ("PAE", "pae", "pae", {}),
    "mflow_alt": ("M-flow alternating", "mflow", "alternating", {}),
    "mflow_seq": ("M-flow sequential", "mflow", "sequential", {}),
    "emflow_alt": ("M_e-flow alternating", "emflow", "alternating", {}),
    "emflow_seq": ("M_e-flow sequential", "emflow", "sequential", {}),
}

#: the paper's Table 2, median of 5 runs: manifold distance, reconstruction error, posterior
#: MMD, OOD AUC.
PAPER: dict[str, tuple[float | None, ...]] = {
    "af": (0.005, None, 0.071, 0.990),
    "pie": (0.035, 1.278, 0.131, 0.933),
    "pie_uncond": (0.006, 1.253, 0.075, 0.972),
    "pae": (0.002, 0.002, None, 0.990),
    "mflow_alt": (0.002, 0.003, 0.020, 0.986),
    "mflow_seq": (0.009, 0.013, 0.017, 0.961),
    "emflow_alt": (0.003, 0.003, 0.030, 0.985),
    "emflow_seq": (0.002, 0.002, 0.007, 0.987),
}

ARCHITECTURE = {
    "outer_layers": 5,
    "inner_layers": 5,
    "num_bins": 10,
    "tail_bound": 6.0,
    "hidden_features": 100,
    "num_blocks": 2,
    "linear": "permutation",
}

N_GENERATED = 10_000
N_TEST = 1_000
N_OBSERVED = 20
MCMC_STEP = 0.15
MCMC_BURN_IN = 100


def build(name: str, seed: int) -> torch.nn.Module:
    """The paper's model ``name`` for the power data, conditional on theta."""
    _, kind, _, extra = MODELS[name]
    arch = {**ARCHITECTURE, **extra, "seed": seed}
    arch = {k: v for k, v in arch.items() if k in ARCHITECTURE_KEYS[kind]}
    return make_model(kind, 3, None if kind == "af" else 2, context_dim=1, **arch)


def evaluate(model: Any, name: str, data: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Scores a trained model with :func:`mflows.evaluation.score` (the paper's protocol)."""
    model.eval()
    options = ScoreOptions(
        n_test=N_TEST,
        n_generate=N_GENERATED,
        n_observed=N_OBSERVED,
        mcmc_steps=args.posterior_samples,
        mcmc_burn_in=MCMC_BURN_IN,
        mcmc_step_size=MCMC_STEP,
        seed=args.seed,
    )
    with Timer() as t:
        scored = score_with_artifacts(model, data, options, device=args.device)
    out: dict[str, Any] = dict(scored.metrics)
    chain, truth = scored.artifacts.get("posterior_model"), scored.artifacts.get("posterior_true")
    if chain is not None:
        out["posterior_mean"], out["posterior_std"] = float(chain.mean()), float(chain.std())
    if truth is not None:
        out["true_posterior_mean"], out["true_posterior_std"] = (
            float(truth.mean()),
            float(truth.std()),
        )
    out["eval_time_s"] = t.seconds
    return out


def run_one(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Trains and scores one model in this process."""
    label, kind, algorithm, _ = MODELS[name]
    data = mflows.data.get("power")
    train = data.load("train", n=args.n_train, seed=args.seed)
    model = build(name, args.seed).to(args.device)
    print(f"[{name}] training {label} ({kind}, {algorithm}) ...", flush=True)
    with Timer() as t:
        history = fit(
            model,
            train.x,
            train.theta,
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
    result = {
        "model": name,
        "label": label,
        "kind": kind,
        "algorithm": algorithm,
        "train_time_s": t.seconds,
        "epochs_run": len(history),
        "best_epoch": getattr(history, "best_epoch", None),
    }
    result.update(evaluate(model, name, data, args))
    print(f"[{name}] {json.dumps(result)}", flush=True)
    return result


def run_parallel(names: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Runs each model in its own process, ``args.jobs`` at a time (``--job-timeout`` each)."""
    common = [
        "--n-train",
        str(args.n_train),
        "--epochs",
        str(args.epochs),
        "--seed",
        str(args.seed),
        "--posterior-samples",
        str(args.posterior_samples),
        "--threads",
        str(args.threads),
        "--device",
        args.device,
        "--jobs",
        "1",
        "--no-table",
    ]
    labels = {m: MODELS[m][0] for m in names}
    return run_models(__file__, names, common, labels, args.jobs, args.threads, args.job_timeout)


def table(results: list[dict[str, Any]]) -> str:
    """Ours next to the paper's numbers (Table 2 of the paper)."""
    header = [
        "model",
        "manifold dist. (ours)",
        "(paper)",
        "reco. error (ours)",
        "(paper)",
        "posterior MMD (ours)",
        "(paper)",
        "OOD AUC (ours)",
        "(paper)",
        "train (s)",
    ]
    rows = []
    for r in results:
        paper = PAPER[r["model"]]
        rows.append(
            [
                r["label"],
                r.get("manifold_distance"),
                paper[0],
                r.get("reconstruction_error"),
                paper[1],
                r.get("posterior_mmd"),
                paper[2],
                r.get("ood_auc"),
                paper[3],
                r.get("train_time_s"),
            ]
        )
    return markdown_table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=100_000, help="training samples (paper 1e5)")
    parser.add_argument("--epochs", type=int, default=50, help="epochs per model (paper 50)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--posterior-samples", type=int, default=5000, help="paper: 5000")
    parser.add_argument("--out", default=None, help="write results (JSON) here")
    parser.add_argument("--quick", action="store_true", help="tiny smoke-test budget")
    parser.add_argument("--jobs", type=int, default=1, help="models trained in parallel processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--job-timeout", type=float, default=None, help="kill a model after (s)")
    parser.add_argument("--no-table", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.n_train, args.epochs, args.posterior_samples = 2000, 2, 200
    torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")

    settings = {
        "models": ", ".join(names),
        "training samples": args.n_train,
        "epochs per model": args.epochs,
        "sequential / PAE epochs": "split in halves (manifold, density)",
        "posterior samples per chain": f"{args.posterior_samples} (paper 5000), burn-in 100",
        "generated samples / test points / OOD points": "10000 / 1000 / 1000",
        "seed": args.seed,
        "device": args.device,
        "parallel processes x threads": f"{args.jobs} x {args.threads}",
    }
    if not args.no_table:
        print_settings("Paper Table 2: mixture on a polynomial surface (power)", settings)
    with Timer() as t:
        if args.jobs > 1 and len(names) > 1:
            results = run_parallel(names, args)
        else:
            results = [run_one(n, args) for n in names]
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
