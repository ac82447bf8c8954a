"""Speed and equivalence benchmark of :func:`mflows.fit_ensemble` (several seeds at once).

Speed: wall time of ``fit_ensemble`` with K = 1, 2, 5 members against one :func:`mflows.fit`,
for the power M-flow of the paper (conditional, 3 -> 2, outer 5 + inner 5 spline couplings with
permutations, 10 bins, residual MLP conditioners of 100 units and 2 blocks, batch 100, AdamW,
alternating M/D every batch), on the same data for a fixed number of steps (``--n`` samples,
``--epochs`` epochs, validation included), 1 thread. The configurations are interleaved in
every round; medians over the rounds are reported, with steps/s counting one alternating step
(manifold + density) per batch and member.

Equivalence (``--check-epochs`` > 0): member k of a 5-member ensemble against a separate
``fit(make(seed_k), ..., seed=seed_k)``: final validation losses and the largest weight
difference.

Usage::

    .venv/bin/python benchmarks/ensemble.py                       # speed, 5 rounds
    .venv/bin/python benchmarks/ensemble.py --rounds 3 --check-epochs 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import mflows.data
from mflows import fit, fit_ensemble
from mflows.models import make_model


def make_power(seed: int, hidden: int = 100):
    """The paper's power M-flow."""
    return make_model(
        "mflow",
        3,
        2,
        context_dim=1,
        outer_layers=5,
        inner_layers=5,
        num_bins=10,
        tail_bound=6.0,
        hidden_features=hidden,
        num_blocks=2,
        linear="permutation",
        seed=seed,
    )


def options(epochs: int) -> dict:
    return dict(
        algorithm="alternating",
        epochs=epochs,
        batch_size=100,
        lr=1e-3,
        weight_decay=1e-4,
        clip=1.0,
        validation_split=0.25,
        progress=False,
    )


def time_fit(x, theta, epochs: int) -> tuple[float, float]:
    """(wall, CPU) seconds of one fit."""
    tic, cpu = time.perf_counter(), time.process_time()
    fit(make_power(0), x, theta, seed=0, **options(epochs))
    return time.perf_counter() - tic, time.process_time() - cpu


def time_ensemble(x, theta, epochs: int, k: int, threads: int = 1) -> tuple[float, float]:
    """(wall, CPU) seconds of one K-member fit_ensemble on ``threads`` intra-op threads."""
    tic, cpu = time.perf_counter(), time.process_time()
    fit_ensemble(make_power, x, theta, seeds=list(range(k)), threads=threads, **options(epochs))
    return time.perf_counter() - tic, time.process_time() - cpu


def check(x, theta, epochs: int, seeds: list[int]) -> list[dict]:
    models, histories = fit_ensemble(make_power, x, theta, seeds=seeds, **options(epochs))
    rows = []
    for seed, model, history in zip(seeds, models, histories):
        alone = make_power(seed)
        h = fit(alone, x, theta, seed=seed, **options(epochs))
        diff = max(
            (a.double() - b.double()).abs().max().item()
            for a, b in zip(alone.state_dict().values(), model.state_dict().values())
        )
        rows.append(
            {
                "seed": seed,
                "val_mse_ensemble": history.records[-1]["val_mse"],
                "val_mse_fit": h.records[-1]["val_mse"],
                "val_loss_ensemble": history.val_loss[-1],
                "val_loss_fit": h.val_loss[-1],
                "best_epoch": [history.best_epoch, h.best_epoch],
                "max_weight_difference": diff,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--n", type=int, default=4000, help="samples (75%% train: n*0.75/100 steps per epoch)"
    )
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--members", default="1,2,5")
    parser.add_argument("--check-epochs", type=int, default=0)
    parser.add_argument("--check-n", type=int, default=4000)
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--ensemble-threads",
        type=int,
        default=1,
        help="intra-op threads of fit_ensemble (fit keeps mflows' default, 1 for this model)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = mflows.data.get("power").load("train", n=args.n, seed=0)
    x, theta = data.x, data.theta
    steps = args.epochs * -(-round(args.n * 0.75) // 100)
    members = [int(k) for k in args.members.split(",")]
    runs = ["fit", *(f"K={k}" for k in members)]
    wall: dict[str, list[float]] = {r: [] for r in runs}
    cpu: dict[str, list[float]] = {r: [] for r in runs}
    time_ensemble(x, theta, 1, 1)  # warm up
    for r in range(args.rounds):
        for run in runs:
            if run == "fit":
                w, c = time_fit(x, theta, args.epochs)
            else:
                w, c = time_ensemble(x, theta, args.epochs, int(run[2:]), args.ensemble_threads)
            wall[run].append(w)
            cpu[run].append(c)
        print(
            f"round {r + 1}: "
            + ", ".join(f"{k} {wall[k][-1]:.2f}s wall {cpu[k][-1]:.2f}s cpu" for k in runs),
            flush=True,
        )
    result: dict = {
        "n": args.n,
        "epochs": args.epochs,
        "steps_per_member": steps,
        "ensemble_threads": args.ensemble_threads,
        "rows": [],
    }
    med = {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in runs}
    print(
        f"\n{steps} alternating steps per member, medians of {args.rounds} rounds, fit on 1 "
        f"thread, fit_ensemble on {args.ensemble_threads}"
    )
    print(
        "| run | wall s | wall spread | CPU s | CPU spread | member-steps/s (CPU) "
        "| wall / fit | CPU / fit |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for run in runs:
        k = 1 if run == "fit" else int(run[2:])
        w, c = med[run]
        row = {
            "run": run,
            "wall_s": w,
            "wall_spread": [min(wall[run]), max(wall[run])],
            "cpu_s": c,
            "cpu_spread": [min(cpu[run]), max(cpu[run])],
            "member_steps_per_cpu_s": k * steps / c,
            "wall_over_fit": w / med["fit"][0],
            "cpu_over_fit": c / med["fit"][1],
        }
        result["rows"].append(row)
        print(
            f"| {run} | {w:.2f} | {min(wall[run]):.2f}-{max(wall[run]):.2f} | {c:.2f} | "
            f"{min(cpu[run]):.2f}-{max(cpu[run]):.2f} | {row['member_steps_per_cpu_s']:.1f} | "
            f"{row['wall_over_fit']:.2f} | {row['cpu_over_fit']:.2f} |"
        )
    if args.check_epochs > 0:
        data = mflows.data.get("power").load("train", n=args.check_n, seed=1)
        rows = check(data.x, data.theta, args.check_epochs, [0, 1, 2, 3, 4])
        result["check"] = rows
        print(json.dumps(rows, indent=1))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
