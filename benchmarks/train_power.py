"""Quality benchmark: M-flow with alternating M/D training on the power data (polynomial surface).

Paper setup (docs/theory.md, "Experiments"): conditional M-flow (h sees theta, f does not),
outer 5 and inner 5 rational-quadratic spline couplings with permutations, 10 bins, tail bound
6, residual MLP conditioners (100 units, 2 blocks), 10^5 training samples, batch 100, AdamW lr
1e-3, weight decay 1e-4, gradient clip 1, validation split 0.25, cosine decay, alternating M/D
every batch.

Metrics as the paper scored the power table (:func:`mflows.evaluation.score`):

* reconstruction error = mean over 10^3 test points of min(|x - project(x)|, 10),
* manifold distance = mean over 10^4 generated samples (at theta = 0) of min(distance, 10).

Targets: reconstruction error <= 0.003 and manifold distance <= 0.005.

Usage::

    .venv/bin/python benchmarks/train_power.py                         # full (paper) run
    .venv/bin/python benchmarks/train_power.py --n 10000 --epochs 5    # quick run
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import mflows.data
from mflows.evaluation.scoring import ScoreOptions, score
from mflows.models import make_model
from mflows.training import History, fit, load_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="training samples")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--alternate", default="batch", choices=("batch", "epoch"))
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-dir", default=None)
    parser.add_argument("--log-dir", default=None, help="history.csv (+ TensorBoard) here")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument(
        "--evaluate-checkpoint",
        default=None,
        help="skip training: evaluate the last weights of this (possibly unfinished) checkpoint",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = mflows.data.get("power")
    train = data.load("train", n=args.n, seed=args.seed)
    model = make_model(
        "mflow",
        3,
        2,
        context_dim=1,
        outer_layers=5,
        inner_layers=5,
        num_bins=10,
        tail_bound=6.0,
        hidden_features=args.hidden,
        num_blocks=2,
        linear="permutation",
        seed=args.seed,
    ).to(args.device)

    if args.evaluate_checkpoint:
        state = load_checkpoint(args.evaluate_checkpoint)
        model.load_state_dict(state["model_state"])
        history = History.from_state_dict(state["history"])
        train_time = history.wall_time
    else:
        tic = time.perf_counter()
        history = fit(
            model,
            train.x,
            train.theta,
            algorithm="alternating",
            alternate=args.alternate,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            weight_decay=1e-4,
            clip=1.0,
            validation_split=0.25,
            seed=args.seed,
            progress=args.progress,
            checkpoint_dir=args.checkpoint_dir,
            log_dir=args.log_dir,
            resume=args.resume,
        )
        train_time = time.perf_counter() - tic

    model.eval()
    options = ScoreOptions(n_test=1000, n_generate=10_000, seed=args.seed, mcmc_steps=0)
    metrics = score(model, data, options, device=args.device)
    reco, distance = metrics["reconstruction_error"], metrics["manifold_distance"]

    result = {
        "n_train": args.n,
        "epochs_run": len(history),
        "best_epoch": history.best_epoch,
        "train_time_s": round(train_time, 1),
        "threads": args.threads,
        "device": str(model.device),
        "final_val_loss": history.val_loss[-1] if len(history) else None,
        "finished": bool(args.evaluate_checkpoint is None or state["progress"]["finished"]),
        "reconstruction_error": reco,
        "manifold_distance": distance,
        "targets_met": reco <= 0.003 and distance <= 0.005,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
