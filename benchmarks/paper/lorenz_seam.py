"""Side study: does the seam of the Lorenz attractor make the M-flows' manifold training unstable?

Trains the manifold stage of the paper's Lorenz M-flow (``lorenz_mf_sequential``: reconstruction
loss only, the stage's cosine schedule over 50 epochs) for a few epochs on the paper's training
set with one part of it left out, and records per epoch the training and validation MSE (on the
kept points) and percentiles of the gradient norm of the steps (before clipping); at the end
every variant's model is scored on the same fresh attractor points (reconstruction error
``|x - x'|``, overall and by |x_0|, as :mod:`benchmarks.paper.lorenz_errors` splits it):

- ``none``: nothing left out (the paper's setting);
- ``seam``: the points with |x_0| < 0.3 (standardised units), where the two lobes' sheets meet;
- ``band``: the points with 0.6 <= |x_0| < 1.1, about as many, inside the lobes;
- ``random``: the same share of points, chosen at random.

``--loop plain`` runs the same stage as a plain PyTorch loop instead of mflows' trainer (a check
that the trainer is not the cause), and ``--huber DELTA`` trains that loop on a pseudo-Huber loss
of each point's distance (a robust loss as a remedy).

One JSON file per run under ``--root``; finished files are skipped; ``--summary`` prints them as
a table.

Usage (from the repository root)::

    python -m benchmarks.paper.lorenz_seam --variants none seam band random --seeds 0 1 \\
        --epochs 10 --root benchmarks/results/paper-lorenz/seam
    python -m benchmarks.paper.lorenz_seam --variants none --seeds 0 1 --epochs 10 \\
        --loop plain --huber 0.05
    python -m benchmarks.paper.lorenz_seam --summary
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from benchmarks.paper.experiments import config_dir
from benchmarks.paper.lorenz_errors import split_errors
from benchmarks.paper.store import git_revision, machine_info
from mflows.files import atomic_write

#: Left-out sets: (lower, upper) bounds of |x_0|, or ``None`` for a random subset of the size
#: of the seam's.
VARIANTS: dict[str, tuple[float, float] | None] = {
    "none": (0.0, 0.0),
    "seam": (0.0, 0.3),
    "band": (0.6, 1.1),
    "random": None,
}
CONFIG = "lorenz_mf_sequential"
#: Fresh attractor points every variant is scored on (reconstruction error by |x_0|).
TEST_POINTS = 4000
TEST_SEED = 7


def kept(x: np.ndarray, variant: str, seed: int) -> np.ndarray:
    """Boolean mask of the training points ``variant`` keeps."""
    bounds = VARIANTS[variant]
    if bounds is not None:
        lo, hi = bounds
        a = np.abs(x[:, 0])
        return ~((a >= lo) & (a < hi))
    share = 1 - kept(x, "seam", seed).mean()
    return np.random.default_rng([seed, 2024]).random(len(x)) >= share


class _Stop(Exception):
    pass


def pseudo_huber(squared_error: Tensor, delta: float | None) -> Tensor:
    """``2 delta^2 (sqrt(1 + e / delta^2) - 1)`` of each squared error ``e``: ``e`` for small
    errors, ``2 delta sqrt(e)`` for large ones, so one far-off point cannot dominate a step;
    ``delta=None`` is the squared error itself."""
    if delta is None:
        return squared_error
    return 2 * delta**2 * (torch.sqrt(1 + squared_error / delta**2) - 1)


def plain_loop(
    model, x: np.ndarray, config, epochs: int, seed: int, on_epoch, huber: float | None = None
) -> None:
    """The manifold stage written as a plain PyTorch loop, independent of mflows' trainer.

    AdamW with the configuration's learning rate and weight decay, the cosine schedule over the
    stage's 50 epochs, gradient-norm clipping, the same batch size and validation share; only
    the split and the batch order differ from the trainer's. Calls ``on_epoch(epoch, record,
    norms)`` after every epoch. ``huber``: train on :func:`pseudo_huber` of each point's squared
    error instead (the records keep the plain MSE).
    """
    t = config.training
    gen = torch.Generator().manual_seed(seed)
    data = torch.as_tensor(x, dtype=torch.float32)
    order = torch.randperm(len(data), generator=gen)
    n_val = round(t.validation_split * len(data))
    val, train = data[order[:n_val]], data[order[n_val:]]
    params = [p for p in model.manifold_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    steps = len(train) // t.batch_size
    stage_epochs = t.epochs // 2  # the sequential scheme's manifold half
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=stage_epochs * steps)
    for epoch in range(1, epochs + 1):
        batches = torch.randperm(len(train), generator=gen)
        losses, norms = [], []
        for i in range(steps):
            xb = train[batches[i * t.batch_size : (i + 1) * t.batch_size]]
            opt.zero_grad()
            squared = (xb - model.project(xb)).square().sum(-1)
            loss = pseudo_huber(squared, huber).mean()
            mse = squared.detach().mean()
            loss.backward()
            norms.append(float(torch.nn.utils.clip_grad_norm_(params, t.clip)))
            opt.step()
            schedule.step()
            losses.append(float(mse))
        with torch.no_grad():
            val_mse = float((val - model.project(val)).square().sum(-1).mean())
        on_epoch(epoch, {"train_mse": float(np.mean(losses)), "val_mse": val_mse}, norms)


def run(
    variant: str, seed: int, epochs: int, loop: str = "trainer", huber: float | None = None
) -> dict:
    """Trains the manifold stage for ``epochs`` epochs; returns the result record.

    ``loop``: ``"trainer"`` (mflows' ``fit``) or ``"plain"`` (:func:`plain_loop`)."""
    import mflows.training.trainer as trainer
    from mflows.experiments.build import build_model, fit_options, get_dataset, load_split
    from mflows.experiments.config import apply_overrides, load_config
    from mflows.training import fit

    config = apply_overrides(
        load_config(config_dir() / f"{CONFIG}.toml"), [f"training.seed={seed}"]
    )
    dataset = get_dataset(config.data)
    x = np.asarray(load_split(dataset, "train", config.data.n_train, config.data.seed).x)
    mask = kept(x, variant, seed)
    model = build_model(config, dataset)
    norms: list[float] = []
    clip = trainer._clip_gradients

    def recording_clip(params, limit):
        norm = clip(params, limit)
        norms.append(float(norm))
        return norm

    records: list[dict] = []
    start = time.perf_counter()

    def callback(epoch: int, record: dict, step_norms: list[float] | None = None) -> None:
        steps = np.asarray(norms if step_norms is None else step_norms)
        norms.clear()
        row = {k: v for k, v in record.items() if isinstance(v, (int, float))}
        row["gradient_norm_percentiles_50_90_99"] = np.percentile(steps, [50, 90, 99]).tolist()
        row["gradient_norm_max"] = float(steps.max())
        row["steps_above_clip"] = int((steps > config.training.clip).sum())
        records.append(row)
        print(
            f"  {variant} seed {seed} epoch {epoch}: val MSE {row['val_mse']:.5f}, "
            f"train MSE {row['train_mse']:.5f}, gradient norm median "
            f"{row['gradient_norm_percentiles_50_90_99'][0]:.3g}, "
            f"max {row['gradient_norm_max']:.3g}",
            flush=True,
        )
        if epoch >= epochs:
            raise _Stop

    if loop == "plain":
        try:
            plain_loop(model, x[mask], config, epochs, seed, callback, huber)
        except _Stop:
            pass
    else:
        trainer._clip_gradients = recording_clip
        try:
            fit(model, x[mask], progress=False, callback=callback, **fit_options(config.training))
        except _Stop:
            pass
        finally:
            trainer._clip_gradients = clip
    # every variant scored on the same fresh points, split by |x_0|
    test = np.asarray(dataset.sample(TEST_POINTS, seed=TEST_SEED), dtype=np.float32)
    model.eval()
    scores = split_errors(model, test, gradient_points=0)
    return {
        "experiment": "lorenz-seam",
        "config": CONFIG,
        "variant": variant,
        "loop": loop,
        "huber": huber,
        "left_out": VARIANTS[variant],
        "seed": seed,
        "epochs": epochs,
        "n_train_kept": int(mask.sum()),
        "share_left_out": float(1 - mask.mean()),
        "git_revision": git_revision(),
        "machine": machine_info(),
        "wall_time_s": time.perf_counter() - start,
        "test": scores,
        "history": records,
    }


def _loop_label(record: dict) -> str:
    loop = record.get("loop", "trainer")
    huber = record.get("huber")
    return loop if huber is None else f"{loop}, pseudo-Huber {huber:g}"


def summary(root: Path) -> str:
    """A markdown table of the stored runs under ``root``."""
    lines = [
        "| left out | loop | seed | kept | val MSE by epoch (kept points) "
        "| largest step gradient norm "
        "| test reco. error: all / \\|x0\\| < 0.3 / 0.3-0.6 / 0.6-1.0 / 1.0-1.5 / >= 1.5 |",
        "|---|---|---|---|---|---|---|",
    ]
    for path in sorted(root.glob("*-seed*.json")):
        r = json.loads(path.read_text())
        val = ", ".join(f"{row['val_mse']:.4f}" for row in r["history"])
        top = max(row["gradient_norm_max"] for row in r["history"])
        test = r["test"]
        bins = test["by_abs_x0"]
        near = (bins[0]["mean_reconstruction_error"] * bins[0]["points"]) + (
            bins[1]["mean_reconstruction_error"] * bins[1]["points"]
        )
        near /= bins[0]["points"] + bins[1]["points"]
        cells = [test["mean_reconstruction_error"], near] + [
            b["mean_reconstruction_error"] for b in bins[2:]
        ]
        lines.append(
            f"| {r['variant']} | {_loop_label(r)} | {r['seed']} | {r['n_train_kept']} "
            f"| {val} | {top:.3g} | " + " / ".join(f"{c:.4f}" for c in cells) + " |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.paper.lorenz_seam")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["none", "seam"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument(
        "--loop",
        choices=["trainer", "plain"],
        default="trainer",
        help="mflows' trainer, or the same stage as a plain PyTorch loop (a check of the trainer)",
    )
    parser.add_argument("--root", default="benchmarks/results/paper-lorenz/seam")
    parser.add_argument(
        "--summary", action="store_true", help="print the stored runs as a table and stop"
    )
    parser.add_argument(
        "--huber",
        type=float,
        default=None,
        help="plain loop only: train on the pseudo-Huber loss of each point's error, this delta",
    )
    args = parser.parse_args(argv)
    if args.huber is not None and args.loop != "plain":
        parser.error("--huber needs --loop plain")
    torch.set_num_threads(1)
    root = Path(args.root)
    if args.summary:
        print(summary(root))
        return 0
    for seed in args.seeds:
        for variant in args.variants:
            tag = variant if args.loop == "trainer" else f"{variant}-{args.loop}"
            if args.huber is not None:
                tag += f"-huber{args.huber:g}"
            out = root / f"{tag}-seed{seed}.json"
            if out.exists():
                print(f"{out}: done, skipped")
                continue
            record = run(variant, seed, args.epochs, args.loop, args.huber)
            out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(out, json.dumps(record, indent=2) + "\n")
            test = record["test"]
            far = [r for r in test["by_abs_x0"] if r["from"] >= 0.3]
            print(
                f"{out}: written; test reconstruction error {test['mean_reconstruction_error']:.4f}"
                f" (|x0| < 0.3: {test['by_abs_x0'][0]['mean_reconstruction_error']:.4f} / "
                f"{test['by_abs_x0'][1]['mean_reconstruction_error']:.4f}; "
                + ", ".join(
                    f"{r['from']}-{r['to']}: {r['mean_reconstruction_error']:.4f}" for r in far
                )
                + ")",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
