"""What a training run carries from epoch to epoch, and what a checkpoint stores.

:class:`EarlyStopping` follows the monitored validation value of one stage and keeps a deep copy
of the best weights. :class:`TrainState` is the whole resumable state of a run: where it is
(stage, epoch), its history, the optimiser and scheduler states of the current stage, the early
stopping state, the weights, the RNG state and the fingerprint of the run. It converts to and
from a checkpoint made of plain values and tensors only, which
:func:`~mflows.training.checkpoint.load_checkpoint` reads with ``weights_only=True``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from mflows.training.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION
from mflows.training.history import History

__all__ = ["EarlyStopping", "TrainState", "copy_state"]


def copy_state(model: nn.Module) -> dict[str, Tensor]:
    """A deep copy of ``model.state_dict()`` (detached clones)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@dataclass
class EarlyStopping:
    """Early-stopping state of one stage.

    Attributes:
        monitor: the record key minimised (``"val_loss"``, or ``"val_monitor"`` where the stage
            names the losses to monitor).
        patience: stop after this many epochs without improvement (``None``: never stop early).
        best_value: best monitored value so far.
        best_epoch: global epoch (1-based) of the best value, ``None`` before the first epoch.
        best_state: deep copy of the weights after ``best_epoch``.
        bad_epochs: epochs since the last improvement.
    """

    monitor: str = "val_loss"
    patience: int | None = None
    best_value: float = math.inf
    best_epoch: int | None = None
    best_state: dict[str, Tensor] | None = None
    bad_epochs: int = 0

    def update(self, value: float, epoch: int, model: nn.Module) -> bool:
        """Records the value of ``epoch``; returns whether the stage should stop now."""
        if value < self.best_value:
            self.best_value, self.best_epoch, self.bad_epochs = float(value), int(epoch), 0
            self.best_state = copy_state(model)
        else:
            self.bad_epochs += 1
        return self.patience is not None and self.bad_epochs >= self.patience

    def restore(self, model: nn.Module) -> int | None:
        """Loads the best weights into ``model``; returns their epoch (``None``: none kept)."""
        if self.best_state is None:
            return None
        model.load_state_dict(self.best_state)
        return self.best_epoch

    def state_dict(self) -> dict[str, Any]:
        """Plain values and tensors."""
        return {
            "monitor": self.monitor,
            "patience": self.patience,
            "best_value": float(self.best_value),
            "best_epoch": self.best_epoch,
            "best_state": self.best_state,
            "bad_epochs": int(self.bad_epochs),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> EarlyStopping:
        """Inverse of :meth:`state_dict`."""
        return cls(**dict(state))


@dataclass
class TrainState:
    """The resumable state of a run; a checkpoint is :meth:`to_checkpoint` of it.

    Attributes:
        stage: index of the stage being run (``len(stages)`` once finished).
        epoch: epochs completed within that stage.
        finished: whether every stage has run.
        history: the per-epoch records so far.
        optimizers: ``state_dict()`` of each phase's optimiser in the current stage.
        schedulers: ``state_dict()`` of each phase's learning-rate scheduler.
        early_stopping: the current stage's early-stopping state (``None``: not monitored yet).
        model_state: the weights.
        rng: the global torch RNG state (informational: every epoch reseeds from the seed).
        fingerprint: what must match to resume (see :mod:`mflows.training.fingerprint`).
        model_config: ``model.config`` (lets a checkpoint be inspected without the run).
    """

    stage: int = 0
    epoch: int = 0
    finished: bool = False
    history: History = field(default_factory=History)
    optimizers: list[dict[str, Any]] = field(default_factory=list)
    schedulers: list[dict[str, Any]] = field(default_factory=list)
    early_stopping: EarlyStopping | None = None
    model_state: dict[str, Tensor] = field(default_factory=dict)
    rng: Tensor | None = None
    fingerprint: dict[str, Any] = field(default_factory=dict)
    model_config: dict[str, Any] | None = None

    def to_checkpoint(self) -> dict[str, Any]:
        """The checkpoint dict: plain values and tensors only."""
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "progress": {"stage": self.stage, "epoch": self.epoch, "finished": self.finished},
            "history": self.history.state_dict(),
            "optimizers": list(self.optimizers),
            "schedulers": [_plain_scheduler(s) for s in self.schedulers],
            "early_stopping": (
                None if self.early_stopping is None else self.early_stopping.state_dict()
            ),
            "model_state": self.model_state,
            "rng": {"torch": self.rng if self.rng is not None else torch.get_rng_state()},
            "fingerprint": self.fingerprint,
            "model_config": self.model_config,
        }

    @classmethod
    def from_checkpoint(cls, state: Mapping[str, Any]) -> TrainState:
        """Inverse of :meth:`to_checkpoint`."""
        progress = state["progress"]
        early = state.get("early_stopping")
        return cls(
            stage=int(progress["stage"]),
            epoch=int(progress["epoch"]),
            finished=bool(progress["finished"]),
            history=History.from_state_dict(state["history"]),
            optimizers=list(state["optimizers"]),
            schedulers=list(state["schedulers"]),
            early_stopping=None if early is None else EarlyStopping.from_state_dict(early),
            model_state=dict(state["model_state"]),
            rng=state.get("rng", {}).get("torch"),
            fingerprint=dict(state["fingerprint"]),
            model_config=state.get("model_config"),
        )


def _plain_scheduler(state: Mapping[str, Any]) -> dict[str, Any]:
    """A scheduler state without non-plain entries (e.g. a bound method some versions keep)."""
    return {k: v for k, v in state.items() if not callable(v)}
