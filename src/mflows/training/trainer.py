"""The one generic trainer that runs any :class:`~mflows.training.phases.Schedule`.

Behaviour (SPEC §5): Adam or AdamW per phase, cosine-annealed learning rate per phase (stepped
every batch), gradient clipping, a validation split with early stopping that restores a DEEP COPY
of the best weights, a tqdm progress bar, per-epoch losses in a :class:`History` (CSV, TensorBoard
when installed), atomic checkpoints every epoch that let an interrupted run resume to bit-identical
weights, a :class:`TrainingDivergedError` on non-finite losses, and data-parallel training under
``torchrun`` (see :mod:`mflows.training.distributed`).

Determinism: the data order of epoch ``k`` is ``randperm`` from a generator seeded with
``(seed, k)``, and the global torch RNG (used e.g. by ``model.sample`` in OT phases) is re-seeded
from ``(seed, k, rank)`` at the start of every epoch inside :func:`torch.random.fork_rng`, so a run
resumed at epoch ``k`` sees exactly the randomness of an uninterrupted one and the caller's RNG is
left untouched.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mflows import losses as L
from mflows.errors import TrainingDivergedError
from mflows.training import distributed as D
from mflows.training.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    load_checkpoint,
    save_checkpoint,
)
from mflows.training.phases import Phase, Schedule, Stage

__all__ = ["History", "Trainer", "TrainingDivergedError", "compute_losses"]


@dataclass
class History:
    """Per-epoch record of a training run.

    Attributes:
        records: one dict per epoch with ``epoch`` (1-based, global), ``stage``, ``phases``,
            ``train_loss``, ``val_loss`` (NaN without validation), ``train_<term>`` and
            ``val_<term>`` for each loss term, ``lr`` (first phase) and ``time`` (seconds).
        best_epoch: epoch whose weights were kept by early stopping in the last stage (``None``
            without validation or early stopping). Early stopping minimises ``val_loss``, or
            ``val_monitor`` (the weighted sum of the stage's ``monitor`` losses) where a stage
            sets one.
        wall_time: seconds spent training (summed over resumed sessions).
    """

    records: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    wall_time: float = 0.0

    def __len__(self) -> int:
        return len(self.records)

    def column(self, name: str) -> list[float]:
        """Values of one column over the epochs (NaN where an epoch lacks it)."""
        return [r.get(name, math.nan) for r in self.records]

    @property
    def train_loss(self) -> list[float]:
        """Total training loss per epoch."""
        return self.column("train_loss")

    @property
    def val_loss(self) -> list[float]:
        """Total validation loss per epoch."""
        return self.column("val_loss")

    def to_csv(self, path: str | Path) -> Path:
        """Writes the records as CSV (one row per epoch, the union of the columns)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        columns: list[str] = []
        for r in self.records:
            columns.extend(k for k in r if k not in columns)
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(self.records)
        return path

    def state_dict(self) -> dict[str, Any]:
        """Plain-data state (stored in checkpoints)."""
        return {
            "records": [dict(r) for r in self.records],
            "best_epoch": self.best_epoch,
            "wall_time": self.wall_time,
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> History:
        """Inverse of :meth:`state_dict`."""
        return cls([dict(r) for r in state["records"]], state["best_epoch"], state["wall_time"])


def compute_losses(
    model: nn.Module,
    x: Tensor,
    context: Tensor | None,
    scores: Tensor | None,
    weights: Mapping[str, float],
    sinkhorn_options: Mapping[str, Any] | None = None,
) -> dict[str, Tensor]:
    """Evaluates the loss terms named in ``weights`` on one batch.

    Args:
        model: a model following the mflows protocol.
        x: ``(B, *data_dim)``.
        context: ``(B, p)`` or ``None``.
        scores: ``(B, p)`` joint scores (needed for ``score``).
        weights: loss name -> weight (see :mod:`mflows.training.phases`).
        sinkhorn_options: keyword arguments of :func:`mflows.losses.sinkhorn_divergence`.

    Returns:
        Dict of the unweighted terms and ``"loss"`` = sum of weight * term.
    """
    terms: dict[str, Tensor] = {}
    need_score = "score" in weights
    ctx = context
    if need_score:
        ctx = context.detach().clone().requires_grad_(True)
    log_prob = None
    if "nll" in weights:
        log_prob = model.log_prob(x, ctx)
        terms["nll"] = L.negative_log_likelihood(log_prob)
    if "mse" in weights:
        terms["mse"] = L.reconstruction_error(x, model.project(x, context))
    if "nested_mse" in weights:
        u = model.encode(x, context)
        if getattr(model, "nested_decay", 1.0) == 0:  # every k for every sample
            keep = None
        elif model.training:  # the global RNG, re-seeded by the Trainer every epoch
            keep = L.truncation_sizes(len(u), u.shape[-1], getattr(model, "nested_decay", 1.0))
        else:
            keep = torch.arange(len(u)) % u.shape[-1] + 1
        terms["nested_mse"] = L.nested_reconstruction_error(
            x, u, lambda v: model.decode(v, context), keep
        )
    if "latent_nll" in weights:
        with torch.no_grad():
            u = model.encode(x, context).detach()
        latent = model.latent_log_prob(u, ctx)
        terms["latent_nll"] = L.negative_log_likelihood(latent)
        if log_prob is None:
            log_prob = latent
    if "sinkhorn" in weights:
        generated = model.sample(x.shape[0], context)
        terms["sinkhorn"] = L.sinkhorn_divergence(generated, x, **dict(sinkhorn_options or {}))
    if need_score:
        model_score = L.score(log_prob, ctx, create_graph=torch.is_grad_enabled())
        terms["score"] = L.score_matching_error(model_score, scores)
    terms["loss"] = sum(float(weights[k]) * v for k, v in terms.items())
    return terms


def _phase_parameters(model: nn.Module, phase: Phase) -> list[nn.Parameter]:
    if phase.parameters == "manifold":
        params = list(model.manifold_parameters())
    elif phase.parameters == "density":
        params = list(model.density_parameters())
    else:
        seen: set[int] = set()
        params = []
        for p in [*model.manifold_parameters(), *model.density_parameters(), *model.parameters()]:
            if id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError(
            f"phase {phase.name!r} trains the {phase.parameters} parameters, but this "
            f"{getattr(model, 'kind', type(model).__name__)} model has none"
        )
    return params


def _epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    return int(
        np.random.SeedSequence([int(seed), int(epoch), int(rank), 2003]).generate_state(1)[0]
    )


def _copy_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class Trainer:
    """Runs a :class:`~mflows.training.phases.Schedule` on a model.

    Args:
        model: a model following the mflows protocol (docs/interfaces.md).
        schedule: the training scheme.
        batch_size: batch size (per process under ``torchrun``).
        lr: default learning rate of the phases.
        weight_decay: weight decay.
        optimizer: ``"adamw"`` or ``"adam"``.
        clip: maximum gradient norm (``None``: no clipping).
        early_stopping: restore the best weights (by validation loss) at the end of each stage.
        patience: stop a stage after this many epochs without improvement (``None``: never).
        seed: seed of data order and training randomness.
        progress: show a tqdm progress bar (rank 0 only).
        checkpoint_dir: directory of ``checkpoint.pt`` (and ``history.csv``), written every epoch.
        log_dir: directory of ``history.csv`` and TensorBoard events (when installed).
        sinkhorn_options: keyword arguments of :func:`mflows.losses.sinkhorn_divergence`.
        callback: called as ``callback(epoch, record)`` after every epoch (after the checkpoint).
    """

    def __init__(
        self,
        model: nn.Module,
        schedule: Schedule,
        *,
        batch_size: int = 100,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer: str = "adamw",
        clip: float | None = None,
        early_stopping: bool = True,
        patience: int | None = None,
        seed: int = 0,
        progress: bool = True,
        checkpoint_dir: str | Path | None = None,
        log_dir: str | Path | None = None,
        sinkhorn_options: Mapping[str, Any] | None = None,
        callback: Callable[[int, dict[str, Any]], None] | None = None,
    ):
        if optimizer not in ("adam", "adamw"):
            raise ValueError(f"optimizer must be 'adam' or 'adamw', got {optimizer!r}")
        if int(batch_size) < 1:
            raise ValueError(f"expected batch_size >= 1, got {batch_size}")
        if not (lr > 0):
            raise ValueError(f"expected lr > 0, got {lr}")
        if patience is not None and int(patience) < 1:
            raise ValueError(f"expected patience >= 1 or None, got {patience}")
        self.model = model
        self.schedule = schedule
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.optimizer = optimizer
        self.clip = None if clip is None else float(clip)
        self.early_stopping = bool(early_stopping)
        self.patience = None if patience is None else int(patience)
        self.seed = int(seed)
        self.progress = bool(progress)
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.sinkhorn_options = dict(sinkhorn_options or {})
        self.callback = callback
        for stage in schedule.stages:  # fail early on phases without parameters
            for phase in stage.phases:
                _phase_parameters(model, phase)

    # ----------------------------------------------------------------------------- helpers
    @property
    def checkpoint_path(self) -> Path | None:
        """``checkpoint_dir / "checkpoint.pt"`` or ``None``."""
        return None if self.checkpoint_dir is None else self.checkpoint_dir / CHECKPOINT_NAME

    def _fingerprint(self, n_train: int, n_val: int) -> dict[str, Any]:
        return {
            "schedule": self.schedule.describe(),
            "options": dict(self.schedule.options),
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "optimizer": self.optimizer,
            "clip": self.clip,
            "early_stopping": self.early_stopping,
            "patience": self.patience,
            "seed": self.seed,
            "n_train": n_train,
            "n_val": n_val,
            "world_size": D.world_size(),
        }

    def _make_optimizers(self, stage: Stage, steps_per_epoch: int):
        optimizers, schedulers = [], []
        cls = torch.optim.AdamW if self.optimizer == "adamw" else torch.optim.Adam
        for i, phase in enumerate(stage.phases):
            params = _phase_parameters(self.model, phase)
            lr = self.lr if phase.lr is None else float(phase.lr)
            opt = cls(params, lr=lr, weight_decay=self.weight_decay)
            if len(stage.phases) > 1 and stage.alternate == "epoch":
                epochs = len(range(i, stage.epochs, len(stage.phases)))
            else:
                epochs = stage.epochs
            total_steps = max(1, epochs * steps_per_epoch)
            schedulers.append(torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps))
            optimizers.append(opt)
        return optimizers, schedulers

    def _step(
        self,
        phase: Phase,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        batch: tuple[Tensor, Tensor | None, Tensor | None],
        where: str,
    ) -> dict[str, float]:
        x, context, scores = batch
        self.model.zero_grad(set_to_none=True)
        terms = compute_losses(self.model, x, context, scores, phase.losses, self.sinkhorn_options)
        names = list(terms)
        values = D.reduce_mean(torch.stack([terms[k].detach() for k in names]), float(len(x)))
        if not bool(torch.isfinite(values).all()):
            raise TrainingDivergedError(
                f"non-finite loss at {where}, phase {phase.name!r}: "
                + ", ".join(f"{k}={v:.6g}" for k, v in zip(names, values.tolist()))
                + self._last_good_message()
            )
        terms["loss"].backward()
        params = optimizer.param_groups[0]["params"]
        D.average_gradients(params)
        max_norm = math.inf if self.clip is None else self.clip
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        if not bool(torch.isfinite(norm)):
            raise TrainingDivergedError(
                f"non-finite gradient norm at {where}, phase {phase.name!r} "
                f"(loss={values[names.index('loss')].item():.6g})" + self._last_good_message()
            )
        optimizer.step()
        scheduler.step()
        return dict(zip(names, values.tolist()))

    def _last_good_message(self) -> str:
        path = self.checkpoint_path
        if path is not None and path.exists():
            return f"; the last good checkpoint is {path}"
        return ""

    def _validate(self, stage: Stage, data: tuple[Tensor, Tensor | None, Tensor | None]):
        x, context, scores = data
        weights = stage.weights
        sums: dict[str, float] = {}
        n_local = 0
        order = torch.arange(len(x), device=x.device)
        for idx in D.shard_indices(order, self.batch_size):
            batch = [None if t is None else t[idx] for t in (x, context, scores)]
            with torch.set_grad_enabled("score" in weights):
                terms = compute_losses(self.model, *batch, weights, self.sinkhorn_options)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(idx)
            n_local += len(idx)
        names = sorted(sums)
        local = torch.tensor(
            [sums[k] / max(n_local, 1) for k in names], dtype=torch.float64, device=x.device
        )
        values = D.reduce_mean(local, float(n_local)).tolist()
        return dict(zip(names, values))

    def _write_logs(self, history: History, record: dict[str, Any], writer: Any) -> None:
        for directory in {d for d in (self.log_dir, self.checkpoint_dir) if d is not None}:
            history.to_csv(directory / "history.csv")
        if writer is not None:
            for k, v in record.items():
                if isinstance(v, float) and math.isfinite(v):
                    writer.add_scalar(k, v, record["epoch"])
            writer.flush()

    def _tensorboard(self):
        if self.log_dir is None or not D.is_main_process():
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional: mflows[tensorboard]
            return None
        return SummaryWriter(str(self.log_dir))

    # -------------------------------------------------------------------------------- run
    def fit(
        self,
        train: tuple[Tensor, Tensor | None, Tensor | None],
        val: tuple[Tensor, Tensor | None, Tensor | None] | None = None,
        *,
        resume: bool = False,
    ) -> History:
        """Trains on ``train = (x, context, scores)``, validating on ``val`` (same layout).

        Args:
            train: training tensors on the model's device (context / scores may be ``None``).
            val: validation tensors, or ``None`` for no validation (no early stopping).
            resume: continue from ``checkpoint_dir/checkpoint.pt`` when it exists.

        Returns:
            The :class:`History`; the model holds the final (best, with early stopping) weights.

        Raises:
            TrainingDivergedError: a loss or gradient norm became non-finite.
            ValueError: the checkpoint to resume was written by a different run configuration.
        """
        model = self.model
        n_train = len(train[0])
        n_val = 0 if val is None else len(val[0])
        fingerprint = self._fingerprint(n_train, n_val)
        main = D.is_main_process()
        D.broadcast_parameters(model)

        history = History()
        start_stage, start_epoch = 0, 0
        resumed: dict[str, Any] | None = None
        path = self.checkpoint_path
        if resume and path is not None and path.exists():
            resumed = load_checkpoint(path, map_location=model_device(model))
            if resumed["fingerprint"] != fingerprint:
                diff = sorted(
                    k for k in fingerprint if resumed["fingerprint"].get(k) != fingerprint[k]
                )
                raise ValueError(
                    f"cannot resume from {path}: it was written by a run with different "
                    f"settings ({', '.join(diff)})"
                )
            model.load_state_dict(resumed["model_state"])
            history = History.from_state_dict(resumed["history"])
            progress = resumed["progress"]
            if progress["finished"]:
                return history
            start_stage, start_epoch = progress["stage"], progress["epoch_in_stage"]

        steps_per_epoch = len(D.shard_indices(torch.arange(n_train), self.batch_size))
        writer = self._tensorboard()
        epoch_offset = sum(s.epochs for s in self.schedule.stages[:start_stage])
        devices = [model_device(model)] if model_device(model).type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                for s in range(start_stage, len(self.schedule.stages)):
                    stage = self.schedule.stages[s]
                    optimizers, schedulers = self._make_optimizers(stage, steps_per_epoch)
                    best_val, best_state, best_epoch, bad = math.inf, None, None, 0
                    first = 0
                    if resumed is not None and s == start_stage:
                        for opt, st in zip(optimizers, resumed["optimizers"]):
                            opt.load_state_dict(st)
                        for sch, st in zip(schedulers, resumed["schedulers"]):
                            sch.load_state_dict(st)
                        p = resumed["progress"]
                        best_val, best_epoch, bad = p["best_val"], p["best_epoch"], p["bad"]
                        best_state = resumed["best_state"]
                        first = start_epoch
                    elif main and path is not None and s == 0:
                        self._save(history, fingerprint, s, 0, optimizers, schedulers, None, {})
                    bar = _progress_bar(
                        stage, first, self.progress and main, s, len(self.schedule.stages)
                    )
                    stop = False
                    for e in range(first, stage.epochs):
                        epoch = epoch_offset + e + 1
                        tic = time.perf_counter()
                        torch.manual_seed(_epoch_seed(self.seed, epoch, D.rank()))
                        order_gen = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
                        order = torch.randperm(n_train, generator=order_gen)
                        batches = D.shard_indices(order.to(train[0].device), self.batch_size)
                        phases = stage.phases_in_epoch(e)
                        sums: dict[str, float] = {}
                        model.train()
                        for b, idx in enumerate(batches):
                            batch = tuple(None if t is None else t[idx] for t in train)
                            for phase in phases:
                                i = stage.phases.index(phase)
                                where = f"epoch {epoch}, batch {b + 1}/{len(batches)}"
                                terms = self._step(
                                    phase, optimizers[i], schedulers[i], batch, where
                                )
                                for k, v in terms.items():
                                    key = "train_loss" if k == "loss" else f"train_{k}"
                                    sums[key] = sums.get(key, 0.0) + v
                        record: dict[str, Any] = {
                            "epoch": epoch,
                            "stage": s,
                            "phases": "+".join(p.name for p in phases),
                        }
                        record.update({k: v / len(batches) for k, v in sums.items()})
                        record["val_loss"] = math.nan
                        if val is not None:
                            model.eval()
                            vals = self._validate(stage, val)
                            record["val_loss"] = vals.pop("loss")
                            record.update({f"val_{k}": v for k, v in vals.items()})
                            if stage.monitor is not None:
                                w = stage.weights
                                record["val_monitor"] = sum(w[k] * vals[k] for k in stage.monitor)
                            model.train()
                        record["lr"] = optimizers[0].param_groups[0]["lr"]
                        record["time"] = time.perf_counter() - tic
                        history.records.append(record)
                        history.wall_time += record["time"]

                        monitor = self.early_stopping and val is not None
                        if monitor:
                            if not math.isfinite(record["val_loss"]):
                                raise TrainingDivergedError(
                                    f"non-finite validation loss {record['val_loss']} after "
                                    f"epoch {epoch}" + self._last_good_message()
                                )
                            current = record.get("val_monitor", record["val_loss"])
                            if current < best_val:
                                best_val, best_epoch, bad = current, epoch, 0
                                best_state = _copy_state(model)
                            else:
                                bad += 1
                            stop = self.patience is not None and bad >= self.patience
                        last = stop or e == stage.epochs - 1
                        if last:
                            if monitor and best_state is not None:
                                model.load_state_dict(best_state)
                                history.best_epoch = best_epoch
                            else:
                                history.best_epoch = None
                        if main and path is not None:
                            if last:
                                finished = s == len(self.schedule.stages) - 1
                                self._save(
                                    history, fingerprint, s + 1, 0, [], [], None, {}, finished
                                )
                            else:
                                self._save(
                                    history,
                                    fingerprint,
                                    s,
                                    e + 1,
                                    optimizers,
                                    schedulers,
                                    best_state,
                                    {"best_val": best_val, "best_epoch": best_epoch, "bad": bad},
                                )
                        if main:
                            self._write_logs(history, record, writer)
                        if bar is not None:
                            bar.set_postfix(
                                train=f"{record['train_loss']:.4g}", val=f"{record['val_loss']:.4g}"
                            )
                            bar.update(1)
                        if self.callback is not None:
                            self.callback(epoch, record)
                        if stop:
                            break
                    if bar is not None:
                        bar.close()
                    epoch_offset += stage.epochs
        finally:
            if writer is not None:
                writer.close()
        return history

    def _save(
        self,
        history: History,
        fingerprint: dict[str, Any],
        stage: int,
        epoch_in_stage: int,
        optimizers: list[Any],
        schedulers: list[Any],
        best_state: dict[str, Tensor] | None,
        early: dict[str, Any],
        finished: bool = False,
    ) -> None:
        state = {
            "format": CHECKPOINT_FORMAT,
            "version": 1,
            "model_state": _copy_state(self.model),
            "best_state": best_state,
            "optimizers": [o.state_dict() for o in optimizers],
            "schedulers": [s.state_dict() for s in schedulers],
            "progress": {
                "stage": stage,
                "epoch_in_stage": epoch_in_stage,
                "best_val": early.get("best_val", math.inf),
                "best_epoch": early.get("best_epoch"),
                "bad": early.get("bad", 0),
                "finished": finished,
            },
            "history": history.state_dict(),
            "rng": {"torch": torch.get_rng_state()},
            "fingerprint": fingerprint,
            "model_config": getattr(self.model, "config", None),
        }
        save_checkpoint(state, self.checkpoint_path)


def model_device(model: nn.Module) -> torch.device:
    """The device of a model (its ``device`` attribute, else that of its first tensor)."""
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    for t in [*model.parameters(), *model.buffers()]:
        return t.device
    return torch.device("cpu")


def _progress_bar(stage: Stage, first: int, enabled: bool, s: int, n_stages: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    label = stage.name if n_stages == 1 else f"[{s + 1}/{n_stages}] {stage.name}"
    return tqdm(total=stage.epochs, initial=first, desc=label, unit="epoch", leave=True)
