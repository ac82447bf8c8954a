"""The one generic trainer that runs any :class:`~mflows.training.phases.Schedule`.

Behaviour (see "Training schemes" in docs/theory.md): Adam or AdamW per phase, cosine-annealed
learning rate per phase (stepped every batch), gradient clipping, a validation split with early
stopping that restores a DEEP COPY of the best weights, a tqdm progress bar, per-epoch losses in a
:class:`~mflows.training.history.History` (CSV, TensorBoard when installed), atomic checkpoints
every epoch that let an interrupted run resume to bit-identical weights, a
:class:`~mflows.errors.TrainingDivergedError` on non-finite losses or gradients, and data-parallel
training under ``torchrun`` (see :mod:`mflows.training.distributed`).

The loop is split in three levels: :meth:`Trainer.fit` runs the stages, :meth:`Trainer._run_stage`
the epochs of one stage (optimisers, early stopping, checkpoints, logs) and
:meth:`Trainer._run_epoch` the batches of one epoch. Everything a resumed run needs is in one
:class:`~mflows.training.state.TrainState`, which is what a checkpoint stores.

Determinism: the data order of epoch ``k`` is ``randperm`` from a generator seeded with
``(seed, k)``, and the global torch RNG (used e.g. by ``model.sample`` in OT phases) is re-seeded
from ``(seed, k, rank)`` at the start of every epoch inside :func:`torch.random.fork_rng`, so a run
resumed at epoch ``k`` sees exactly the randomness of an uninterrupted one and the caller's RNG is
left untouched.

Non-finite guard: every optimiser step computes one flag, "some loss term or the gradient norm is
not finite", on the device. Where the optimiser is fused (Adam/AdamW on CPU and CUDA) the flag is
handed to it as ``found_inf``, so a bad step is skipped on the device without waiting for the
host; the flag is read on the host every step on CPU (where reading costs nothing) and every
:data:`CHECK_EVERY` steps and at the end of each epoch elsewhere. Either way the weights are never
updated from a non-finite step, nothing non-finite is checkpointed, and the error names the first
bad batch.

Flat groups: while a stage trains, the parameters of each phase are views of one buffer and their
gradients views of another (:class:`~mflows.training.flat.FlatParameters`), so the optimiser, the
clipping and the zeroing are one kernel each instead of one per tensor. At the end of the stage
every parameter gets its own storage back; optimiser states are stored in torch's per-parameter
layout.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mflows import losses as L
from mflows.compile import compile_losses
from mflows.errors import (
    CheckpointError,
    InvalidArgumentError,
    ResumeMismatchError,
    TrainingDivergedError,
)
from mflows.training import defaults
from mflows.training import distributed as D
from mflows.training.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from mflows.training.fingerprint import describe_difference, model_fingerprint, tensor_fingerprint
from mflows.training.flat import FlatParameters, flattenable
from mflows.training.history import History
from mflows.training.options import check_optimizer_options
from mflows.training.phases import Phase, Schedule, Stage
from mflows.training.state import EarlyStopping, TrainState

__all__ = [
    "CHECK_EVERY",
    "History",
    "Trainer",
    "TrainingDivergedError",
    "compute_losses",
    "gradient_norm_summary",
]

#: Steps between two host reads of the non-finite flag on devices other than the CPU.
CHECK_EVERY = 32
#: Validation batches are this many training batches (losses that are means over samples only).
VALIDATION_BATCHES = 10
#: Losses whose value depends on the batch (a Sinkhorn divergence between two batches; nested
#: dropout assigns the truncation by position in the batch): validated at the training batch size.
BATCH_DEPENDENT_LOSSES = frozenset({"sinkhorn", "nested_mse"})

Batch = tuple[Tensor, "Tensor | None", "Tensor | None"]


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
    shared_u = None
    if {"mse", "latent_nll"} <= set(weights) and not torch.is_grad_enabled():
        # validation: the projection is decode(encode(x)) for every kind with a manifold, so
        # it and the latent loss share u
        if getattr(model, "has_manifold", False):
            shared_u = model.encode(x, context)
    if "nll" in weights:
        log_prob = model.log_prob(x, ctx)
        terms["nll"] = L.negative_log_likelihood(log_prob)
    if "mse" in weights:
        x_proj = model.project(x, context) if shared_u is None else model.decode(shared_u, context)
        terms["mse"] = L.reconstruction_error(x, x_proj)
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
        if shared_u is None:
            with torch.no_grad():
                u = model.encode(x, context).detach()
        else:
            u = shared_u
        # u comes from the model, not from the validated data: after a bad step it may be
        # non-finite, which must surface as a non-finite loss (a divergence), not as the input
        # error of the public ``latent_log_prob``; the flat internal method does not check.
        latent_log_prob = getattr(model, "_latent_log_prob", model.latent_log_prob)
        latent = latent_log_prob(u, ctx)
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
        raise InvalidArgumentError(
            f"phase {phase.name!r} trains the {phase.parameters} parameters, but this "
            f"{getattr(model, 'kind', type(model).__name__)} model has none"
        )
    return params


def _epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    return int(
        np.random.SeedSequence([int(seed), int(epoch), int(rank), 2003]).generate_state(1)[0]
    )


def _check_interval(device: torch.device) -> int:
    """Steps between host reads of the non-finite flag: every step on CPU (reading is free)."""
    return 1 if device.type == "cpu" else CHECK_EVERY


def _clip_gradients(params: list[nn.Parameter], clip: float | None) -> Tensor:
    """Clips the gradient norm to ``clip`` (``None``: no clipping); returns the norm before.

    Uses the multi-tensor (foreach) kernels wherever torch supports them (the default).
    """
    total_norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6
    if clip is None and total_norm is not None:
        return total_norm([p.grad for p in params if p.grad is not None])
    return torch.nn.utils.clip_grad_norm_(params, math.inf if clip is None else clip)


#: Models with at most this many parameter tensors compile with inductor's C++ wrapper on CPU.
CPP_WRAPPER_MAX_TENSORS = 200


def _small_cpu_graph(model: nn.Module) -> bool:
    """Whether inductor's C++ wrapper pays for ``model`` (docs/benchmarks.md, "Speed against an
    earlier revision"): it calls the graph's kernels and matrix products without Python in
    between, 1.05x per step on the power M-flow (120 tensors), but its C++ takes minutes to
    build for large graphs (30 min for the 40 -> 14 M-flow, 552 tensors, with no gain)."""
    params = list(model.parameters())
    return model_device(model).type == "cpu" and len(params) <= CPP_WRAPPER_MAX_TENSORS


#: Compiled training losses by model architecture (see _compiled_losses).
_COMPILED_LOSSES: dict[str, Callable[..., dict[str, Tensor]]] = {}


def _compiled_losses(model: nn.Module, options: dict[str, Any]) -> Callable[..., Any]:
    """The compiled losses for ``model``, shared by the trainers of models of one architecture.

    They skip torch's guards on module attributes (:func:`mflows.compile.compile_losses`,
    ``fixed_modules``), so their graphs must only see models that trace alike: models whose
    class, configuration, parameter shapes, dtype and device are the same (the weights are
    inputs of the graphs, not part of them). A model without an mflows ``config`` gets graphs
    of its own. Sharing also spares a second ``fit`` of such a model the compilation.
    """
    config = getattr(model, "config", None)
    if not isinstance(config, dict):
        return compile_losses(compute_losses, fixed_modules=True, **options)
    key = repr(
        (type(model).__module__, type(model).__qualname__, model_fingerprint(model),
         str(model_device(model)), repr(model), sorted(options.items(), key=str))
    )  # fmt: skip
    if key not in _COMPILED_LOSSES:
        _COMPILED_LOSSES[key] = compile_losses(compute_losses, fixed_modules=True, **options)
    return _COMPILED_LOSSES[key]


def _optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimiser's state in torch's layout for the phase's own parameters."""
    flat = optimizer._mflows_flat
    return optimizer.state_dict() if flat is None else flat.state_dict(optimizer)


def _load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    flat = optimizer._mflows_flat
    if flat is None:
        optimizer.load_state_dict(saved)
    else:
        flat.load_state_dict(optimizer, saved)


def _take(data: Batch, idx: Tensor) -> Batch:
    return tuple(None if t is None else t[idx] for t in data)  # type: ignore[return-value]


def _make_optimizer(name: str, params: list[nn.Parameter], lr: float, weight_decay: float):
    """Adam/AdamW, fused where the device supports it (else the multi-tensor version).

    Returns:
        ``(optimizer, fused)``.
    """
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    try:
        return cls(params, lr=lr, weight_decay=weight_decay, fused=True), True
    except (RuntimeError, ValueError):  # a device or dtype without a fused kernel
        foreach = True if params[0].device.type in ("cpu", "cuda") else None
        return cls(params, lr=lr, weight_decay=weight_decay, foreach=foreach), False


class _EpochLog:
    """Per-step rows ``(loss terms..., gradient norm)`` of one epoch, kept on the device."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, Phase, list[str], Tensor]] = []
        self.flags: list[Tensor] = []
        self.checked = 0

    def add(self, batch: int, phase: Phase, names: list[str], row: Tensor, bad: Tensor) -> None:
        """Logs one step: ``names`` label ``row``; ``bad`` is its 0-d non-finite flag."""
        self.rows.append((batch, phase, names, row))
        self.flags.append(bad)

    def first_bad(self) -> tuple[int, Phase, list[str], list[float]] | None:
        """The first unchecked non-finite row (one host read), or ``None``; marks all checked."""
        new = self.rows[self.checked :]
        self.checked = len(self.rows)
        if not new:
            return None
        pending = self.flags[len(self.rows) - len(new) :]
        flags = [bool(pending[0])] if len(pending) == 1 else torch.stack(pending).tolist()
        for (b, phase, names, row), flag in zip(new, flags):
            if flag:
                return b, phase, names, row.tolist()
        return None

    def summary(self, per_phase: bool) -> dict[str, float]:
        """``train_<term>`` (``train_loss`` for the total) averaged over the batches, and the
        median and largest gradient norm of the steps (:func:`gradient_norm_summary`)."""
        sums: dict[str, float] = {}
        norms: dict[str, Tensor] = {}
        by_phase: dict[str, tuple[list[str], list[Tensor]]] = {}
        for _, phase, names, row in self.rows:
            by_phase.setdefault(phase.name, (names, []))[1].append(row)
        for phase, (names, rows) in by_phase.items():
            stacked = torch.stack(rows).to(torch.float64)  # (steps, terms)
            norms[phase] = stacked[:, names.index("gradient_norm"), None]
            for k, v in zip(names, stacked.sum(0).tolist()):
                if k != "gradient_norm":
                    key = "train_loss" if k == "loss" else f"train_{k}"
                    sums[key] = sums.get(key, 0.0) + v
        n_batches = len({b for b, *_ in self.rows})
        out = {k: v / max(n_batches, 1) for k, v in sums.items()}
        out.update(gradient_norm_summary(norms, 1, per_phase)[0])
        return out


def gradient_norm_summary(
    norms: Mapping[str, Tensor], k: int, per_phase: bool
) -> list[dict[str, float]]:
    """Median and largest gradient norm (before clipping) of one epoch's steps, per model.

    Args:
        norms: phase name -> ``(steps, k)`` gradient norms of k models trained side by side.
        k: number of models.
        per_phase: name the keys by phase (``gradient_norm_max_<phase>``), for stages with
            several phases, whose gradients have different scales.

    Returns:
        One dict per model with ``gradient_norm_median`` and ``gradient_norm_max`` (per phase
        if asked). A largest norm far above the median marks steps that a few points dominate.
    """
    out: list[dict[str, float]] = [{} for _ in range(k)]
    for name, values in norms.items():
        values = values.to(torch.float64)
        # one host read for both (quantile rather than median: the mean of the middle two)
        median, largest = torch.stack([values.quantile(0.5, dim=0), values.amax(dim=0)]).tolist()
        suffix = f"_{name}" if per_phase else ""
        for j, member in enumerate(out):
            member[f"gradient_norm_median{suffix}"] = median[j]
            member[f"gradient_norm_max{suffix}"] = largest[j]
    return out


class Trainer:
    """Runs a :class:`~mflows.training.phases.Schedule` on a model.

    The defaults are those of :func:`mflows.training.fit` (:mod:`mflows.training.defaults`).

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

    Raises:
        InvalidArgumentError: an option out of range (see :mod:`mflows.training.options`).
    """

    def __init__(
        self,
        model: nn.Module,
        schedule: Schedule,
        *,
        batch_size: int = defaults.BATCH_SIZE,
        lr: float = defaults.LR,
        weight_decay: float = defaults.WEIGHT_DECAY,
        optimizer: str = defaults.OPTIMIZER,
        clip: float | None = defaults.CLIP,
        early_stopping: bool = defaults.EARLY_STOPPING,
        patience: int | None = None,
        seed: int = defaults.SEED,
        progress: bool = True,
        checkpoint_dir: str | Path | None = None,
        log_dir: str | Path | None = None,
        sinkhorn_options: Mapping[str, Any] | None = None,
        callback: Callable[[int, dict[str, Any]], None] | None = None,
        compile: bool | str = False,
    ):
        options = check_optimizer_options(
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            optimizer=optimizer,
            clip=clip,
            patience=patience,
            seed=seed,
        )
        self.model = model
        self.schedule = schedule
        self.batch_size: int = options["batch_size"]
        self.lr: float = options["lr"]
        self.weight_decay: float = options["weight_decay"]
        self.optimizer: str = options["optimizer"]
        self.clip: float | None = options["clip"]
        self.early_stopping = bool(early_stopping)
        self.patience: int | None = options["patience"]
        self.seed: int = options["seed"]
        self.progress = bool(progress)
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.sinkhorn_options = dict(sinkhorn_options or {})
        self.callback = callback
        # the training losses, compiled on request (falls back, with one warning, when not)
        self._losses = compute_losses
        if compile:
            options: dict[str, Any] = {} if compile is True else {"backend": str(compile)}
            if compile is True and _small_cpu_graph(model):
                options["options"] = {"cpp_wrapper": True}
            self._losses = _compiled_losses(model, options)
        self._epoch_info = (0, 0)  # (global epoch, batches) of the epoch running, for errors
        self._saved_epochs = 0  # epochs recorded in the last checkpoint written or resumed
        for stage in schedule.stages:  # fail early on phases without parameters
            for phase in stage.phases:
                _phase_parameters(model, phase)

    # ----------------------------------------------------------------------- run state
    @property
    def checkpoint_path(self) -> Path | None:
        """``checkpoint_dir / "checkpoint.pt"`` or ``None``."""
        return None if self.checkpoint_dir is None else self.checkpoint_dir / CHECKPOINT_NAME

    def fingerprint(self, train: Batch, val: Batch | None) -> dict[str, Any]:
        """What a checkpoint must match to be resumed: data, model, schedule and options."""
        names = ("x", "context", "scores")
        data: dict[str, Any] = {f"train.{k}": tensor_fingerprint(t) for k, t in zip(names, train)}
        if val is not None:
            data.update({f"val.{k}": tensor_fingerprint(t) for k, t in zip(names, val)})
        return {
            "data": data,
            "model": model_fingerprint(self.model),
            "schedule": self.schedule.describe(),
            "schedule_options": dict(self.schedule.options),
            "options": {
                "batch_size": self.batch_size,
                "lr": self.lr,
                "weight_decay": self.weight_decay,
                "optimizer": self.optimizer,
                "clip": self.clip,
                "early_stopping": self.early_stopping,
                "patience": self.patience,
                "seed": self.seed,
                "sinkhorn_options": {k: repr(v) for k, v in self.sinkhorn_options.items()},
                "world_size": D.world_size(),
            },
        }

    def _initial_state(self, train: Batch, val: Batch | None, resume: bool) -> TrainState:
        fingerprint = self.fingerprint(train, val)
        path = self.checkpoint_path
        if not (resume and path is not None and path.exists()):
            return TrainState(
                fingerprint=fingerprint, model_config=getattr(self.model, "config", None)
            )
        raw = load_checkpoint(path, map_location=model_device(self.model))
        try:
            state = TrainState.from_checkpoint(raw)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise CheckpointError(
                f"{path} is an mflows checkpoint with missing or malformed entries ({error!r}); "
                f"delete {path} (or its directory) to start over, or train with resume=False"
            ) from None
        diff = describe_difference(state.fingerprint, fingerprint)
        if diff:
            raise ResumeMismatchError(
                f"cannot resume from {path}: it was written by a different run ("
                + "; ".join(diff)
                + "); use another checkpoint directory, delete this one, or pass resume=False"
            )
        self.model.load_state_dict(state.model_state)
        self._saved_epochs = len(state.history.records)
        return state

    def _save(self, state: TrainState) -> None:
        """Writes ``state`` with the current weights (rank 0 only, when checkpointing)."""
        if self.checkpoint_path is None or not D.is_main_process():
            return
        state.model_state = self.model.state_dict()
        state.rng = torch.get_rng_state()
        save_checkpoint(state.to_checkpoint(), self.checkpoint_path)
        self._saved_epochs = len(state.history.records)

    def _last_good_message(self) -> str:
        path = self.checkpoint_path
        if path is None or not path.exists():
            return "; no checkpoint was written (pass checkpoint_dir to keep one)"
        when = self._saved_epochs
        after = f"after epoch {when}" if when else "written before the first epoch"
        return f"; the last good checkpoint is {path} ({after})"

    # ------------------------------------------------------------------------------ run
    def fit(self, train: Batch, val: Batch | None = None, *, resume: bool = False) -> History:
        """Trains on ``train = (x, context, scores)``, validating on ``val`` (same layout).

        Args:
            train: training tensors on the model's device (context / scores may be ``None``).
            val: validation tensors, or ``None`` for no validation (no early stopping).
            resume: continue from ``checkpoint_dir/checkpoint.pt`` when it exists.

        Returns:
            The :class:`History`; the model holds the final (best, with early stopping) weights.

        Raises:
            TrainingDivergedError: a loss or gradient norm became non-finite.
            ResumeMismatchError: the checkpoint to resume was written by a different run (other
                data, model, schedule or options); the message names what differs.
            CheckpointError: the checkpoint to resume is corrupt or not plain data.
        """
        D.broadcast_parameters(self.model)
        state = self._initial_state(train, val, resume)
        if state.finished:
            return state.history
        writer = self._tensorboard()
        device = model_device(self.model)
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                while state.stage < len(self.schedule.stages):
                    self._run_stage(state, train, val, writer)
        finally:
            if writer is not None:
                writer.close()
        return state.history

    def _global_epoch(self, stage: int, epoch_in_stage: int) -> int:
        """1-based epoch number over the whole schedule."""
        return sum(s.epochs for s in self.schedule.stages[:stage]) + epoch_in_stage + 1

    def _run_stage(self, state: TrainState, train: Batch, val: Batch | None, writer: Any) -> None:
        """Runs the remaining epochs of stage ``state.stage`` and advances ``state`` past it."""
        s = state.stage
        stage = self.schedule.stages[s]
        steps = len(D.shard_indices(torch.arange(len(train[0])), self.batch_size))
        optimizers, schedulers = self._make_optimizers(stage, steps)
        bar = None
        try:  # the finally clause gives the parameters of the flat groups their storage back
            for opt, saved in zip(optimizers, state.optimizers):
                _load_optimizer_state(opt, saved)
            for sch, saved in zip(schedulers, state.schedulers):
                sch.load_state_dict(saved)
            early = state.early_stopping
            if early is None and self.early_stopping and val is not None:
                monitor = "val_loss" if stage.monitor is None else "val_monitor"
                early = EarlyStopping(monitor=monitor, patience=self.patience)
            if s == 0 and state.epoch == 0 and not state.history.records:
                self._save(state)  # a checkpoint before the first step: "last good" from the start
            bar = _progress_bar(stage, state.epoch, self.progress and D.is_main_process(), s,
                                len(self.schedule.stages))  # fmt: skip
            for e in range(state.epoch, stage.epochs):
                epoch = self._global_epoch(s, e)
                tic = time.perf_counter()
                record = self._run_epoch(stage, s, e, optimizers, schedulers, train)
                if val is not None:
                    record.update(self._validate(stage, val))
                record["lr"] = optimizers[0].param_groups[0]["lr"]
                record["time"] = time.perf_counter() - tic
                state.history.records.append(record)
                state.history.wall_time += record["time"]
                stop = False
                if early is not None:
                    if not math.isfinite(record["val_loss"]):
                        raise TrainingDivergedError(
                            f"training diverged: non-finite validation loss "
                            f"{record['val_loss']} after epoch {epoch}" + self._last_good_message()
                        )
                    stop = early.update(record[early.monitor], epoch, self.model)
                last = stop or e == stage.epochs - 1
                if last:
                    self._end_stage(state, early)
                else:
                    state.epoch = e + 1
                    state.optimizers = [_optimizer_state(o) for o in optimizers]
                    state.schedulers = [c.state_dict() for c in schedulers]
                    state.early_stopping = early
                self._save(state)
                self._report(state.history, record, writer, bar)
                if self.callback is not None:
                    self.callback(epoch, record)
                if last:
                    break
        finally:
            if bar is not None:
                bar.close()
            for opt in optimizers:
                if opt._mflows_flat is not None:
                    opt._mflows_flat.release()

    def _end_stage(self, state: TrainState, early: EarlyStopping | None) -> None:
        """Restores the best weights of the stage and moves ``state`` to the next stage."""
        state.history.best_epoch = None if early is None else early.restore(self.model)
        state.stage += 1
        state.epoch = 0
        state.finished = state.stage == len(self.schedule.stages)
        state.optimizers, state.schedulers, state.early_stopping = [], [], None

    def _run_epoch(
        self,
        stage: Stage,
        s: int,
        e: int,
        optimizers: list[torch.optim.Optimizer],
        schedulers: list[Any],
        train: Batch,
    ) -> dict[str, Any]:
        """One epoch of training steps; returns its record (without validation)."""
        epoch = self._global_epoch(s, e)
        torch.manual_seed(_epoch_seed(self.seed, epoch, D.rank()))
        order_gen = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
        order = torch.randperm(len(train[0]), generator=order_gen)
        batches = D.shard_indices(order.to(train[0].device), self.batch_size)
        phases = stage.phases_in_epoch(e)
        indices = [stage.phases.index(p) for p in phases]
        every = _check_interval(train[0].device)
        log = _EpochLog()
        self._epoch_info = (epoch, len(batches))
        self.model.train()
        for b, idx in enumerate(batches):
            batch = _take(train, idx)
            for phase, i in zip(phases, indices):
                self._step(phase, optimizers[i], schedulers[i], batch, log, b)
            if (b + 1) % every == 0:
                self._check(log)
        self._check(log)
        record: dict[str, Any] = {
            "epoch": epoch,
            "stage": s,
            "phases": "+".join(p.name for p in phases),
        }
        record.update(log.summary(per_phase=len(stage.phases) > 1))
        record["val_loss"] = math.nan
        return record

    def _step(
        self,
        phase: Phase,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        batch: Batch,
        log: _EpochLog,
        b: int,
    ) -> None:
        """One optimiser step of ``phase``; logs ``(terms..., gradient norm)`` without host sync."""
        x, context, scores = batch
        # Only this phase's gradients are read below, so only they need clearing (cheaper than
        # walking the whole module); another phase clears its own before its backward pass.
        flat = optimizer._mflows_flat
        if flat is None:
            optimizer.zero_grad(set_to_none=True)
        else:
            flat.zero_grad()
        terms = self._losses(self.model, x, context, scores, phase.losses, self.sinkhorn_options)
        names = list(terms)
        values = D.reduce_mean(torch.stack([terms[k].detach() for k in names]), float(len(x)))
        terms["loss"].backward()
        if flat is not None:
            flat.gather_gradients()
        params = optimizer.param_groups[0]["params"]
        D.average_gradients(params)
        norm = _clip_gradients(params, self.clip)
        row = torch.cat([values, norm.reshape(1).to(values.dtype)])
        bad = torch.isfinite(row).all().logical_not()
        log.add(b, phase, [*names, "gradient_norm"], row, bad)
        if getattr(optimizer, "_mflows_fused", False):
            optimizer.found_inf = bad.to(torch.float32)  # the fused kernel skips a bad step
        elif bool(bad):
            self._check(log)
        optimizer.step()
        scheduler.step()

    def _check(self, log: _EpochLog) -> None:
        """Raises :class:`TrainingDivergedError` for the first non-finite step not yet checked."""
        bad = log.first_bad()
        if bad is None:
            return
        b, phase, names, values = bad
        epoch, n_batches = self._epoch_info
        terms = dict(zip(names, values))
        norm = terms.pop("gradient_norm")
        nonfinite = [k for k, v in terms.items() if not math.isfinite(v)]
        what = "loss" if nonfinite else "gradient norm"
        raise TrainingDivergedError(
            f"training diverged: non-finite {what} at epoch {epoch}, batch {b + 1}/{n_batches}, "
            f"phase {phase.name!r}: "
            + ", ".join(f"{k}={v:.6g}" for k, v in terms.items())
            + f", gradient norm={norm:.6g}"
            + (f" (non-finite: {', '.join(nonfinite)})" if nonfinite else "")
            + self._last_good_message()
        )

    def _validate(self, stage: Stage, val: Batch) -> dict[str, float]:
        """``val_loss``, ``val_<term>`` and (where the stage monitors some losses)
        ``val_monitor`` on the validation data; the model is left in training mode."""
        x = val[0]
        weights = stage.weights
        sums: Tensor | None = None
        names: list[str] = []
        n_local = 0
        self.model.eval()
        order = torch.arange(len(x), device=x.device)
        # Per-sample losses do not depend on the batch, and without gradients a larger batch
        # costs little memory: fewer, larger batches pay the per-operation overhead less often.
        size = self.batch_size
        if not BATCH_DEPENDENT_LOSSES & set(weights):
            size *= VALIDATION_BATCHES
        for idx in D.shard_indices(order, size):
            with torch.set_grad_enabled("score" in weights):
                terms = compute_losses(self.model, *_take(val, idx), weights, self.sinkhorn_options)
            names = sorted(terms)
            row = torch.stack([terms[k].detach().to(torch.float64) for k in names]) * len(idx)
            sums = row if sums is None else sums + row
            n_local += len(idx)
        self.model.train()
        local = sums / max(n_local, 1)
        values = dict(zip(names, D.reduce_mean(local, float(n_local)).tolist()))
        record = {"val_loss": values.pop("loss")}
        record.update({f"val_{k}": v for k, v in values.items()})
        if stage.monitor is not None:
            record["val_monitor"] = sum(weights[k] * values[k] for k in stage.monitor)
        return record

    def _make_optimizers(self, stage: Stage, steps_per_epoch: int):
        optimizers, schedulers = [], []
        groups = [_phase_parameters(self.model, phase) for phase in stage.phases]
        # one flat buffer per phase, unless two phases share a parameter
        ids = [id(p) for params in groups for p in params]
        flatten = len(set(ids)) == len(ids)
        for i, (phase, params) in enumerate(zip(stage.phases, groups)):
            flat = FlatParameters(params) if flatten and flattenable(params) else None
            lr = self.lr if phase.lr is None else float(phase.lr)
            opt, fused = _make_optimizer(
                self.optimizer, params if flat is None else [flat.parameter], lr, self.weight_decay
            )
            opt._mflows_fused = fused  # type: ignore[attr-defined]
            opt._mflows_flat = flat  # type: ignore[attr-defined]
            if len(stage.phases) > 1 and stage.alternate == "epoch":
                epochs = len(range(i, stage.epochs, len(stage.phases)))
            else:
                epochs = stage.epochs
            total_steps = max(1, epochs * steps_per_epoch)
            schedulers.append(torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps))
            optimizers.append(opt)
        return optimizers, schedulers

    # --------------------------------------------------------------------------- output
    def _report(self, history: History, record: dict[str, Any], writer: Any, bar: Any) -> None:
        """CSV files, TensorBoard scalars and the progress bar after an epoch."""
        if D.is_main_process():
            for directory in {d for d in (self.log_dir, self.checkpoint_dir) if d is not None}:
                history.to_csv(directory / "history.csv")
            if writer is not None:
                for k, v in record.items():
                    if isinstance(v, float) and math.isfinite(v):
                        writer.add_scalar(k, v, record["epoch"])
                writer.flush()
        if bar is not None:
            bar.set_postfix(train=f"{record['train_loss']:.4g}", val=f"{record['val_loss']:.4g}")
            bar.update(1)

    def _tensorboard(self):
        if self.log_dir is None or not D.is_main_process():
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional: mflows[tensorboard]
            return None
        return SummaryWriter(str(self.log_dir))


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
