"""Runner of the paper reproduction: trains and scores (experiment, model, seed) runs.

Usage (from the repository root)::

    python -m benchmarks.paper.run --experiment power --models all --seeds 0 1 2
    python -m benchmarks.paper.run --experiment sphere2 --models fom,mflow_alt --seeds 0 1 2 \\
        --max-minutes 60

A finished run (its JSON in the store, same budget) is skipped; an interrupted run resumes from
its last per-epoch checkpoint (bit-identical to an uninterrupted run); ``--max-minutes`` stops
cleanly between epochs, before the next epoch would pass the limit, so the runner can be left in
the background and restarted later with the same command. A run that another live runner holds
is skipped. One torch thread per process.

The protocol of each experiment is docs/protocol.md; the models are the paper's configurations
in ``mflows/configs/`` (:mod:`benchmarks.paper.experiments`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.paper.experiments import (
    EXPERIMENTS,
    Experiment,
    ModelSpec,
    config_dir,
    get_experiment,
)
from benchmarks.paper.store import (
    DIVERGED,
    FINISHED,
    Store,
    git_revision,
    machine_info,
)

__all__ = [
    "DeadlineReached",
    "RunOptions",
    "budget_of",
    "main",
    "resolve_config",
    "run_one",
    "same_config",
]


class DeadlineReached(Exception):
    """Raised between epochs when the next epoch would pass the runner's time limit."""


@dataclass(frozen=True)
class RunOptions:
    """Budget and environment of a runner invocation.

    Attributes:
        epochs: epochs (None: the configuration's).
        n_train: training samples (None: the configuration's).
        patience: early-stopping patience (None: the experiment's).
        mcmc_steps: posterior samples per chain (None: the experiment's).
        overrides: extra ``section.key=value`` overrides (e.g. evaluation sizes for smoke tests).
        device: ``cpu`` or ``cuda``.
        deadline: ``time.time()`` after which no new epoch or run starts (None: no limit).
        replace: rerun a stored run whose budget differs from this one.
    """

    epochs: int | None = None
    n_train: int | None = None
    patience: int | None = None
    mcmc_steps: int | None = None
    overrides: tuple[str, ...] = ()
    device: str = "cpu"
    deadline: float | None = None
    replace: bool = False


def same_config(saved: Any, current: Any) -> bool:
    """Whether a run's saved configuration is the current one. A field that a later version
    added (absent from the saved file) counts as equal when it is unset (``None``), so runs
    interrupted before an upgrade still resume."""
    if isinstance(saved, dict) and isinstance(current, dict):
        keys = set(saved) | set(current)
        return all(
            same_config(saved[k], current[k])
            if k in saved and k in current
            else (current.get(k) is None and k not in saved)
            for k in keys
        )
    return saved == current


def resolve_config(exp: Experiment, spec: ModelSpec, seed: int, options: RunOptions):
    """The :class:`~mflows.experiments.config.RunConfig` of one run: the paper's configuration
    file, the experiment's and model's overrides, the budget and the seed."""
    from mflows.experiments.config import apply_overrides, load_config

    config = load_config(config_dir() / f"{spec.config}.toml")
    overrides = [*exp.overrides, *spec.overrides]
    epochs = options.epochs if options.epochs is not None else exp.epochs
    n_train = options.n_train if options.n_train is not None else exp.n_train
    patience = options.patience if options.patience is not None else exp.patience
    mcmc = options.mcmc_steps if options.mcmc_steps is not None else exp.mcmc_steps
    if epochs is not None:
        overrides.append(f"training.epochs={epochs}")
    if n_train is not None:
        overrides.append(f"data.n_train={n_train}")
    if patience is not None:
        overrides.append(f"training.patience={patience}")
    if mcmc:  # 0: the data set has no posterior to sample (evaluation keeps its default)
        overrides.append(f"evaluation.mcmc_steps={mcmc}")
    overrides += [
        f"training.seed={seed}",
        f"evaluation.seed={seed + 1}",
        f"device={options.device}",
        *options.overrides,
    ]
    return apply_overrides(config, overrides)


def budget_of(config) -> dict[str, Any]:
    """The budget of a run: what must agree for a stored run to count as this run."""
    t, e = config.training, config.evaluation
    return {
        "epochs": t.epochs,
        "n_train": config.data.n_train,
        "patience": t.patience,
        "n_test": e.n_test,
        "n_generate": e.n_generate,
        "mcmc_steps": e.mcmc_steps,
    }


def _history_records(history) -> list[dict[str, Any]]:
    """The per-epoch records of a training history (numbers and strings only)."""
    keep = (int, float, str)
    return [{k: v for k, v in r.items() if isinstance(v, keep)} for r in history.records]


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _deadline_callback(
    store: Store, key: tuple[str, str, int], deadline: float | None, seconds_before: float
) -> Callable[[int, dict[str, Any]], None]:
    """Records progress after every epoch (after its checkpoint) and stops at the deadline."""
    state = {"start": time.perf_counter(), "last": time.perf_counter()}

    def callback(epoch: int, record: dict[str, Any]) -> None:
        now = time.perf_counter()
        last_epoch, state["last"] = now - state["last"], now
        store.write_progress(
            *key,
            {"epochs_done": epoch, "train_seconds": seconds_before + now - state["start"]},
        )
        if deadline is not None and time.time() + 1.1 * last_epoch > deadline:
            raise DeadlineReached(f"stopped after epoch {epoch}: time limit")

    return callback


def _train(store: Store, key: tuple[str, str, int], config, work: Path, deadline: float | None):
    """Trains (or resumes) the model of ``config``; returns (model, train seconds, history)."""
    from mflows.experiments.build import build_model, fit_options, get_dataset, load_split
    from mflows.training import fit

    dataset = get_dataset(config.data)
    batch = load_split(dataset, "train", config.data.n_train, config.data.seed)
    model = build_model(config, dataset)
    progress = store.read_progress(*key)
    seconds_before = float(progress.get("train_seconds", 0.0))
    history = fit(
        model,
        batch.x,
        context=batch.theta,
        scores=batch.scores if config.training.scandal is not None else None,
        progress=False,
        checkpoint_dir=work / "checkpoints",
        resume=True,
        device=config.device,
        callback=_deadline_callback(store, key, deadline, seconds_before),
        **fit_options(config.training),
    )
    seconds = float(store.read_progress(*key).get("train_seconds", seconds_before))
    return model, seconds, history, int(batch.x.shape[0])


def run_one(store: Store, exp: Experiment, spec: ModelSpec, seed: int, options: RunOptions) -> str:
    """Trains and scores one run unless it is stored; returns what happened.

    Returns:
        ``"skipped"`` (stored with this budget, or with another and no ``replace``),
        ``"finished"``, ``"diverged"`` (stored with status diverged) or ``"stopped"`` (time limit;
        the checkpoints stay in the work directory and the next call resumes).
    """
    from mflows.errors import TrainingDivergedError
    from mflows.evaluation.scoring import score_with_artifacts
    from mflows.experiments.build import get_dataset
    from mflows.experiments.config import config_to_dict
    from mflows.experiments.rundir import LOCK_FILE, lock_run
    from mflows.files import atomic_path
    from mflows.models import load

    config = resolve_config(exp, spec, seed, options)
    config.validate()
    budget = budget_of(config)
    key = (exp.name, spec.name, seed)
    name = f"{exp.name}/{spec.name}-seed{seed}"
    stored = store.read(*key)
    if stored is not None and stored.get("status") in (FINISHED, DIVERGED):
        if stored.get("budget") == budget:
            _log(f"{name}: stored ({stored['status']}), skipped")
            return "skipped"
        if not options.replace:
            _log(
                f"{name}: stored with another budget {stored.get('budget')}, skipped "
                "(replace=True reruns it)"
            )
            return "skipped"
    if options.deadline is not None and time.time() > options.deadline:
        return "stopped"

    work = store.work_dir(*key)
    config_dict = config_to_dict(config)
    with lock_run(work):
        config_file = work / "config.json"
        if config_file.is_file() and not same_config(
            json.loads(config_file.read_text()), config_dict
        ):
            _log(f"{name}: scratch of another configuration, starting afresh")
            for child in work.iterdir():
                if child.name != LOCK_FILE:
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        from mflows.files import atomic_write

        atomic_write(config_file, json.dumps(config_dict, indent=2) + "\n")
        progress = store.read_progress(*key)
        model_file = work / "model.pt"
        record: dict[str, Any] = {
            "experiment": exp.name,
            "model": spec.name,
            "label": spec.label,
            "seed": seed,
            "config": spec.config,
            "kind": config.model.kind,
            "algorithm": config.training.algorithm,
            "budget": budget,
            "git_revision": git_revision(),
            "machine": machine_info(config.device),
        }
        if options.overrides:
            record["overrides"] = list(options.overrides)
        if progress.get("trained") and model_file.is_file():
            _log(f"{name}: trained model found, scoring")
            model = load(model_file).to(config.device)
            train_seconds = float(progress["train_seconds"])
            n_train, epochs, best = progress["n_train"], progress["epochs"], progress["best_epoch"]
            history_records = progress.get("history", [])
        else:
            done = progress.get("epochs_done", 0)
            _log(
                f"{name}: training ({config.training.algorithm}, {budget}); "
                + (f"resuming after epoch {done}" if done else "fresh")
            )
            try:
                model, train_seconds, history, n_train = _train(
                    store, key, config, work, options.deadline
                )
            except DeadlineReached as stop:
                _log(f"{name}: {stop}")
                return "stopped"
            except TrainingDivergedError as error:
                record.update(
                    status=DIVERGED,
                    error=str(error),
                    metrics={},
                    wall_time_s=store.read_progress(*key).get("train_seconds"),
                )
                store.write(record)
                _log(f"{name}: diverged: {error}")
                return "diverged"
            epochs, best = len(history), getattr(history, "best_epoch", None)
            with atomic_path(model_file) as tmp:
                model.save(tmp)
            store.write_progress(
                *key,
                {
                    "trained": True,
                    "train_seconds": train_seconds,
                    "n_train": n_train,
                    "epochs": epochs,
                    "best_epoch": best,
                    "history": _history_records(history),
                },
            )
            history_records = _history_records(history)
        model.eval()
        score_options = config.evaluation.score_options()
        dataset = get_dataset(config.data)
        start = time.perf_counter()
        scored = score_with_artifacts(model, dataset, score_options, device=config.device)
        eval_seconds = time.perf_counter() - start
        metrics = {
            "dataset": dataset.name,
            "model": config.model.kind,
            "algorithm": config.training.algorithm,
            **scored.metrics,
        }
        extra = {}
        chain, truth = (
            scored.artifacts.get("posterior_model"),
            scored.artifacts.get("posterior_true"),
        )
        if chain is not None:
            extra["posterior_mean"] = chain.mean(0).tolist()
            extra["posterior_std"] = chain.std(0).tolist()
        if truth is not None:
            extra["true_posterior_mean"] = truth.mean(0).tolist()
            extra["true_posterior_std"] = truth.std(0).tolist()
        record.update(
            status=FINISHED,
            epochs=epochs,
            best_epoch=best,
            n_train=n_train,
            train_time_s=train_seconds,
            eval_time_s=eval_seconds,
            wall_time_s=train_seconds + eval_seconds,
            metrics=metrics,
            extra=extra,
            history=history_records,
            finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        path = store.write(record)
        for child in ("checkpoints",):
            shutil.rmtree(work / child, ignore_errors=True)
        _log(f"{name}: finished in {train_seconds:.0f} s + {eval_seconds:.0f} s -> {path}")
        _log(f"{name}: {json.dumps({k: v for k, v in metrics.items() if isinstance(v, float)})}")
    return "finished"


def _models(exp: Experiment, names: Sequence[str]) -> list[ModelSpec]:
    flat = [n.strip() for item in names for n in item.split(",") if n.strip()]
    if not flat or flat == ["all"]:
        return list(exp.models)
    return [exp.model(n) for n in flat]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.paper.run", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--experiment", required=True, choices=sorted(EXPERIMENTS))
    parser.add_argument(
        "--models",
        nargs="+",
        default=["all"],
        help="'all' or model names (space or comma separated)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=None, help="default: the paper's")
    parser.add_argument("--n-train", type=int, default=None, help="default: the paper's")
    parser.add_argument("--patience", type=int, default=None, help="default: the experiment's")
    parser.add_argument("--mcmc-steps", type=int, default=None, help="default: 5000 or none")
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="stop cleanly (between epochs) after this many minutes",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="extra configuration override (repeatable)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--root", default=None, help="store root (default benchmarks/results/paper)"
    )
    parser.add_argument(
        "--replace", action="store_true", help="rerun stored runs whose budget differs"
    )
    args = parser.parse_args(argv)

    import torch

    from mflows.errors import MflowsError, RunLockedError

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    torch.set_num_threads(args.threads)
    exp = get_experiment(args.experiment)
    try:
        models = _models(exp, args.models)
    except KeyError as error:
        parser.error(str(error.args[0]))
    store = Store(Path(args.root)) if args.root else Store()
    deadline = None if args.max_minutes is None else time.time() + 60 * args.max_minutes
    options = RunOptions(
        epochs=args.epochs,
        n_train=args.n_train,
        patience=args.patience,
        mcmc_steps=args.mcmc_steps,
        overrides=tuple(args.set),
        device=args.device,
        deadline=deadline,
        replace=args.replace,
    )
    counts: dict[str, int] = {}
    for seed in args.seeds:
        for spec in models:
            try:
                status = run_one(store, exp, spec, seed, options)
            except RunLockedError:  # another runner trains it; this one goes on to the next
                _log(f"{exp.name}/{spec.name}-seed{seed}: in use by another runner, skipped")
                status = "busy"
            except (MflowsError, ValueError) as error:  # this run only; nothing is stored
                _log(f"{exp.name}/{spec.name}-seed{seed}: error: {type(error).__name__}: {error}")
                status = "error"
            counts[status] = counts.get(status, 0) + 1
            if status == "stopped":
                _log(f"time limit reached; rerun the same command to continue ({counts})")
                return 3
    _log(f"done: {counts}")
    return 1 if counts.get("error") else 0


if __name__ == "__main__":
    sys.exit(main())
