"""The demo: an M-flow with alternating M/D training on the polynomial-surface mixture."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, NamedTuple

from mflows.experiments.config import (
    DataConfig,
    EvaluationConfig,
    ModelConfig,
    RunConfig,
    TrainingConfig,
)
from mflows.experiments.rundir import REPORT_FILE
from mflows.experiments.runs import evaluate_run, train_run

__all__ = ["DemoResult", "demo_config", "run_demo"]


class DemoResult(NamedTuple):
    """Where the demo wrote its run and what it measured."""

    run_dir: Path
    report: Path
    metrics: dict[str, Any]


def demo_config(quick: bool = False) -> RunConfig:
    """The demo: an M-flow with alternating M/D training on the polynomial-surface mixture.

    The full demo (2 x 10^4 samples, 5 + 5 spline couplings with 64 hidden units, 40 epochs,
    shortened MCMC chains) takes about 4-5 minutes on 2 busy CPU cores with one torch thread and
    reaches manifold distance ~0.005, reconstruction error ~0.005, OOD AUC ~0.97 and posterior
    MMD ~0.004 (paper, M-flow alternating: 0.002 / 0.003 / 0.986 / 0.020). ``quick`` is a
    seconds-long smoke test.
    """
    if quick:
        return RunConfig(
            data=DataConfig(name="power", n_train=600, seed=0),
            model=ModelConfig(
                kind="mflow", outer_layers=2, inner_layers=2, hidden_features=16, num_blocks=1,
                num_bins=6, tail_bound=6.0,
            ),
            training=TrainingConfig(
                algorithm="alternating", epochs=2, batch_size=100, lr=3e-3, weight_decay=1e-4,
                clip=1.0, validation_split=0.2,
            ),
            evaluation=EvaluationConfig(
                n_test=200, n_generate=500, n_observed=20, mcmc_steps=150, mcmc_burn_in=20,
                plot_resolution=20,
            ),
        )  # fmt: skip
    return RunConfig(
        data=DataConfig(name="power", n_train=20000, seed=0),
        model=ModelConfig(
            kind="mflow", outer_layers=5, inner_layers=5, hidden_features=64, num_blocks=2,
            num_bins=10, tail_bound=6.0, linear="permutation",
        ),
        training=TrainingConfig(
            algorithm="alternating", epochs=40, batch_size=100, lr=1e-3, weight_decay=1e-4,
            clip=1.0, validation_split=0.1,
        ),
        evaluation=EvaluationConfig(
            n_test=1000, n_generate=5000, n_observed=20, mcmc_steps=1000, mcmc_burn_in=100,
        ),
    )  # fmt: skip


def run_demo(
    out_dir: str | Path = "runs/demo",
    *,
    quick: bool = False,
    progress: bool = True,
    device: str | None = None,
) -> DemoResult:
    """Train, evaluate and report the demo run (see :func:`demo_config`)."""
    config = demo_config(quick)
    if device is not None:
        config = dataclasses.replace(config, device=device)
    run_dir = train_run(config, out_dir, progress=progress, overwrite=True)
    metrics = evaluate_run(run_dir, progress=progress)
    return DemoResult(Path(run_dir), Path(run_dir) / REPORT_FILE, metrics)
