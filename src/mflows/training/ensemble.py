"""``mflows.fit_ensemble``: several independent models of one architecture trained at once.

The K members (one per seed) are trained in one process by vectorising over their stacked
weights: every loss is evaluated for all members by one :func:`torch.vmap` of
:func:`torch.func.functional_call`, so the per-op overhead that dominates small CPU steps is paid
once per step instead of K times. Nothing couples the members:

* each member is built from its own seed (``make(seed)``), gets its own validation split, data
  order and standardisation from its seed exactly as :func:`mflows.fit` with ``seed=seed``, and
  its own data-aware initialisation;
* the gradient of the summed member losses is, member by member, each member's own gradient;
  gradient clipping is per member (each member's gradient norm against ``clip``);
* Adam/AdamW is elementwise, so one optimiser over the stacked weights is K independent
  optimisers; the learning rate may differ per member;
* early stopping is per member: a member that stops keeps its best weights and takes no further
  steps (its updates are masked) while the others go on; each member has its own
  :class:`~mflows.training.history.History`.

A member trained here follows, up to floating-point rounding, the same trajectory as
``fit(make(seed), x, ..., seed=seed)``. Supported: schedules whose losses are ``nll``, ``mse``
and ``latent_nll`` (algorithms ``likelihood``, ``sequential``, ``alternating`` and ``pae``);
SCANDAL, nested dropout, the optimal-transport schemes, checkpoints/resume and ``torchrun`` are
not (use :func:`mflows.fit` per seed for those).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state

from mflows import losses as L
from mflows.errors import InvalidArgumentError, TrainingDivergedError
from mflows.threads import thread_policy
from mflows.training import defaults
from mflows.training import distributed as D
from mflows.training.fitting import _as_data, _check_options, _set_standardization
from mflows.training.history import History
from mflows.training.options import check_float, check_int
from mflows.training.phases import Phase, Schedule, Stage, check_algorithm, schedule_for
from mflows.training.trainer import (
    _epoch_seed,
    _phase_parameters,
    gradient_norm_summary,
    model_device,
)

__all__ = ["ENSEMBLE_ALGORITHMS", "ENSEMBLE_LOSSES", "fit_ensemble"]

#: Loss terms the vectorised trainer evaluates.
ENSEMBLE_LOSSES = ("nll", "mse", "latent_nll")
#: Algorithms whose schedules use only those losses (without SCANDAL).
ENSEMBLE_ALGORITHMS = ("likelihood", "sequential", "alternating", "pae")
#: What a member does when its loss or gradient becomes non-finite.
DIVERGENCE_POLICIES = ("raise", "stop")

_BETAS = (0.9, 0.999)
_EPS = 1e-8


class _Losses(nn.Module):
    """``forward(x, context)``: the stacked loss terms ``names`` of ``model`` on one batch."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.names: tuple[str, ...] = ()

    def forward(self, x: Tensor, context: Tensor | None) -> Tensor:
        model = self.model
        terms = []
        for name in self.names:
            if name == "nll":
                terms.append(L.negative_log_likelihood(model._log_prob(x, context)))
            elif name == "mse":
                terms.append(L.reconstruction_error(x, model._project(x, context)))
            else:  # latent_nll, at u = g^-1(x) computed without gradient
                with torch.no_grad():
                    u = model._encode(x, context).detach()
                terms.append(L.negative_log_likelihood(model._latent_log_prob(u, context)))
        return torch.stack(terms)


def _ordered(names: Sequence[str]) -> tuple[str, ...]:
    return tuple(k for k in ENSEMBLE_LOSSES if k in names)


class _Stack:
    """The K members' weights as flat ``(K, P)`` tensors, one per parameter group.

    A group is the set of parameters trained by the same phases; the per-member buffers
    (e.g. standardisation statistics, random permutations) are stacked, the identical ones shared.
    """

    def __init__(self, models: list[nn.Module], schedule: Schedule):
        self.models = models
        self.k = len(models)
        template = models[0]
        phase_of: dict[str, list[tuple[int, int]]] = {n: [] for n, _ in template.named_parameters()}
        ids = {id(p): n for n, p in template.named_parameters()}
        for s, stage in enumerate(schedule.stages):
            for i, phase in enumerate(stage.phases):
                for p in _phase_parameters(template, phase):
                    phase_of[ids[id(p)]].append((s, i))
        keys: dict[tuple, list[str]] = {}
        for name, where in phase_of.items():
            keys.setdefault(tuple(where), []).append(name)
        self.groups: list[list[str]] = list(keys.values())
        self.trained_by: list[set[tuple[int, int]]] = [set(k) for k in keys]
        self.shapes = {n: p.shape for n, p in template.named_parameters()}
        with torch.no_grad():
            self.flats = [
                torch.stack(
                    [torch.cat([m.get_parameter(n).reshape(-1) for n in names]) for m in models]
                ).detach()
                for names in self.groups
            ]
        _, buffers = stack_module_state(models)
        self.buffers: dict[str, Tensor] = {}
        for name, stacked in buffers.items():
            if not all(torch.equal(stacked[0], b) for b in stacked[1:]):
                self.buffers["model." + name] = stacked
        self.module = _Losses(copy.deepcopy(template)).train()
        self._vmapped = torch.vmap(self._member, in_dims=(0, 0, 0, 0), randomness="error")

    def groups_of(self, s: int, i: int) -> list[int]:
        """Indices of the groups that phase ``i`` of stage ``s`` trains."""
        return [g for g, by in enumerate(self.trained_by) if (s, i) in by]

    def _views(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for names, flat in zip(self.groups, self.flats):
            sizes = [math.prod(self.shapes[n]) for n in names]
            for n, part in zip(names, flat.split(sizes, dim=1)):
                out["model." + n] = part.reshape(self.k, *self.shapes[n])
        return out

    def _member(self, params: dict, buffers: dict, x: Tensor, context: Tensor | None) -> Tensor:
        return functional_call(self.module, {**params, **buffers}, (x, context), strict=False)

    def terms(self, names: tuple[str, ...], x: Tensor, context: Tensor | None) -> Tensor:
        """``(K, len(names))`` loss terms of the members on their batches ``x (K, B, d)``."""
        self.module.names = names
        if context is None:
            fn = torch.vmap(self._member, in_dims=(0, 0, 0, None), randomness="error")
            return fn(self._views(), self.buffers, x, None)
        return self._vmapped(self._views(), self.buffers, x, context)

    def write_back(self) -> None:
        """Copies every member's weights into its model."""
        with torch.no_grad():
            for names, flat in zip(self.groups, self.flats):
                sizes = [math.prod(self.shapes[n]) for n in names]
                for k, model in enumerate(self.models):
                    for n, part in zip(names, flat[k].split(sizes)):
                        model.get_parameter(n).copy_(part.reshape(self.shapes[n]))


class _Adam:
    """One Adam/AdamW per member on the rows of ``(K, P)`` tensors.

    Every member's step is torch's own (fused where the device has the kernel) functional
    Adam/AdamW on its rows, with its own learning rate, moments and step count, exactly as the
    optimiser of :func:`mflows.fit`; members not listed in a step are left untouched.
    """

    def __init__(self, flats: list[Tensor], k: int, weight_decay: float, decoupled: bool):
        self.flats = flats
        self.m = [torch.zeros_like(f) for f in flats]
        self.v = [torch.zeros_like(f) for f in flats]
        self.steps = [
            [torch.zeros((), dtype=torch.float32, device=f.device) for f in flats] for _ in range(k)
        ]
        self.t = 0  # steps of the phase (the learning-rate schedule's clock)
        self.weight_decay = weight_decay
        self.decoupled = decoupled
        self.fused: bool | None = True

    @torch.no_grad()
    def step(self, grads: list[Tensor], lrs: list[float], members: list[int]) -> None:
        """One step of the listed ``members`` with learning rates ``lrs`` (one per member)."""
        self.t += 1
        for j in members:
            args = (
                [f[j] for f in self.flats],
                [g[j] for g in grads],
                [m[j] for m in self.m],
                [v[j] for v in self.v],
                [],
                self.steps[j],
            )
            try:
                _adam_step(*args, self.fused, lrs[j], self.weight_decay, self.decoupled)
            except RuntimeError:
                if not self.fused:
                    raise
                self.fused = None  # a device or dtype without the fused kernel
                _adam_step(*args, self.fused, lrs[j], self.weight_decay, self.decoupled)


def _adam_step(params, grads, m, v, vmax, steps, fused, lr, weight_decay, decoupled) -> None:
    options = dict(
        amsgrad=False,
        beta1=_BETAS[0],
        beta2=_BETAS[1],
        lr=lr,
        weight_decay=weight_decay,
        eps=_EPS,
        maximize=False,
    )
    if fused is None:
        options["foreach"] = params[0].device.type in ("cpu", "cuda")
    else:
        options["fused"] = fused
    if decoupled:
        from torch.optim.adamw import adamw

        adamw(params, grads, m, v, vmax, steps, **options)
    else:
        from torch.optim.adam import adam

        adam(params, grads, m, v, vmax, steps, **options)


def _members(make: Any, seeds: list[int]) -> list[nn.Module]:
    """One fresh model per seed, from a builder ``make(seed)`` or a template model's config."""
    if isinstance(make, nn.Module):
        config = getattr(make, "config", None)
        if config is None:
            raise InvalidArgumentError(
                "fit_ensemble needs make_model's config to rebuild a model per seed; this model "
                "was assembled by hand: pass a builder make(seed) -> model instead"
            )
        from mflows.models import make_model

        arch = dict(config.get("architecture") or {})
        if isinstance(arch.get("chart"), str) and arch["chart"].startswith("custom:"):
            raise InvalidArgumentError(
                "a FOM with a custom chart cannot be rebuilt from its config: pass a builder "
                "make(seed) -> model instead"
            )
        template = make

        def make(seed: int) -> nn.Module:
            model = make_model(
                config["kind"],
                config["data_dim"],
                config["latent_dim"],
                config["context_dim"],
                **{**arch, "seed": seed},
            )
            return model.to(dtype=template.dtype, device=template.device)

    if not callable(make):
        raise InvalidArgumentError(
            f"make must be a model or a callable make(seed) -> model, got {type(make).__name__}"
        )
    models = [make(s) for s in seeds]
    first = models[0]
    if not isinstance(first, nn.Module):
        raise InvalidArgumentError(f"make(seed) must return a model, got {type(first).__name__}")
    shapes = {k: (v.shape, v.dtype) for k, v in first.state_dict().items()}
    for s, m in zip(seeds, models):
        if not isinstance(m, nn.Module) or type(m) is not type(first):
            raise InvalidArgumentError(
                f"make({s}) returned {type(m).__name__}, not one architecture"
            )
        if {k: (v.shape, v.dtype) for k, v in m.state_dict().items()} != shapes:
            raise InvalidArgumentError(
                f"make({s}) built another architecture than make({seeds[0]}): the members of an "
                "ensemble must have the same parameter shapes"
            )
    if len({id(m) for m in models}) != len(models):
        raise InvalidArgumentError("make(seed) must build a new model on every call")
    return models


def _check_ensemble_schedule(schedule: Schedule) -> None:
    for stage in schedule.stages:
        for phase in stage.phases:
            other = sorted(set(phase.losses) - set(ENSEMBLE_LOSSES))
            if other:
                raise InvalidArgumentError(
                    f"fit_ensemble does not support the loss(es) {', '.join(other)} (phase "
                    f"{phase.name!r}); it trains schedules of {', '.join(ENSEMBLE_LOSSES)} only, "
                    f"i.e. the algorithms {', '.join(ENSEMBLE_ALGORITHMS)} without SCANDAL; "
                    "train the others with mflows.fit, one seed at a time"
                )


def fit_ensemble(
    make: Callable[[int], nn.Module] | nn.Module,
    x: Any,
    context: Any = None,
    algorithm: str = "likelihood",
    *,
    seeds: Sequence[int],
    epochs: int | tuple[int, int] = defaults.EPOCHS,
    batch_size: int = defaults.BATCH_SIZE,
    lr: float | Sequence[float] = defaults.LR,
    weight_decay: float = defaults.WEIGHT_DECAY,
    optimizer: str = defaults.OPTIMIZER,
    clip: float | None = defaults.CLIP,
    validation_split: float = defaults.VALIDATION_SPLIT,
    early_stopping: bool = defaults.EARLY_STOPPING,
    patience: int | None = None,
    reconstruction_weight: float = defaults.RECONSTRUCTION_WEIGHT,
    alternate: str = defaults.ALTERNATE,
    progress: bool = True,
    device: str | torch.device | None = None,
    schedule: Schedule | None = None,
    callback: Callable[[int, int, dict[str, Any]], None] | None = None,
    data_init: bool = True,
    threads: int | None = None,
    standardize: bool = True,
    on_divergence: str = "raise",
) -> tuple[list[nn.Module], list[History]]:
    """Trains one model per seed at once, vectorised over the stacked weights (module docstring).

    Member ``k`` is ``make(seeds[k])`` trained as ``fit(make(seeds[k]), x, context, algorithm,
    seed=seeds[k], lr=lr[k], ...)`` would train it (same split, data order, initialisation,
    standardisation and early stopping; equal up to floating-point rounding), in about the wall
    time of a few single runs for small models.

    Args:
        make: a builder ``make(seed) -> model`` (e.g. ``lambda s: make_model(..., seed=s)``), or
            a model from :func:`mflows.make_model` whose architecture is rebuilt with each seed
            (its weights are not used).
        x: training data ``(N, *data_dim)``, tensor or array (shared by all members).
        context: ``(N, context_dim)`` parameters theta for conditional models.
        algorithm: ``"likelihood"``, ``"sequential"``, ``"alternating"`` or ``"pae"``
            (:data:`ENSEMBLE_ALGORITHMS`; others raise).
        seeds: one seed per member (init, validation split, data order); repeats are allowed
            (e.g. one seed with several learning rates).
        epochs, batch_size, weight_decay, optimizer, clip, validation_split, early_stopping,
        patience, reconstruction_weight, alternate, data_init, threads, standardize: as in
            :func:`mflows.fit`; ``clip`` applies to each member's own gradient norm, ``patience``
            stops each member on its own.
        lr: learning rate, one for all or one per member.
        progress: show a progress bar over the epochs.
        device: train on this device (default: the members').
        schedule: a custom :class:`~mflows.training.phases.Schedule` (losses ``nll``, ``mse``,
            ``latent_nll`` only) instead of ``algorithm``.
        callback: ``callback(member, epoch, record)`` after every epoch of each member still
            training (``member`` indexes ``seeds``).
        on_divergence: a member whose loss or gradient becomes non-finite: ``"raise"`` a
            :class:`~mflows.errors.TrainingDivergedError` (as :func:`mflows.fit`), or ``"stop"``
            that member only (the bad step is skipped; it keeps its best weights of the stage, or
            its last finite ones, and its last record gets ``diverged = 1.0``) while the others
            go on.

    Returns:
        ``(models, histories)``, one per seed, in the order of ``seeds``: ordinary models (save
        and load like any other) and their :class:`~mflows.training.history.History` (the
        records of :func:`mflows.fit`; ``time`` is the wall time of the whole ensemble's epoch).

    Raises:
        InvalidArgumentError: bad inputs or options (as :func:`mflows.fit`), an empty ``seeds``,
            ``lr`` of another length, an unsupported algorithm or loss, members of different
            architectures, or ``torchrun``.
        TrainingDivergedError: a member diverged with ``on_divergence="raise"``.
    """
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or not seeds:
        raise InvalidArgumentError(f"seeds must be a non-empty sequence of integers, got {seeds!r}")
    seeds = [check_int(s, f"seeds[{i}]", 0) for i, s in enumerate(seeds)]
    k = len(seeds)
    if isinstance(lr, Sequence) and not isinstance(lr, (str, bytes)):
        if len(lr) != k:
            raise InvalidArgumentError(f"expected one lr per seed ({k}), got {len(lr)}")
        lrs = [check_float(v, f"lr[{i}]", positive=True) for i, v in enumerate(lr)]
    else:
        lrs = [check_float(lr, "lr", positive=True)] * k
    if on_divergence not in DIVERGENCE_POLICIES:
        raise InvalidArgumentError(
            f"on_divergence must be one of {DIVERGENCE_POLICIES}, got {on_divergence!r}"
        )
    if D.world_size() > 1:
        raise InvalidArgumentError("fit_ensemble does not run under torchrun; use mflows.fit")
    options = _check_options(
        epochs=epochs,
        batch_size=batch_size,
        lr=lrs[0],
        weight_decay=weight_decay,
        optimizer=optimizer,
        clip=clip,
        validation_split=validation_split,
        patience=patience,
        reconstruction_weight=reconstruction_weight,
        scandal_weight=defaults.SCANDAL_WEIGHT,
        alternate=alternate,
        seed=seeds[0],
    )
    models = _members(make, seeds)
    model = models[0]
    if schedule is None:
        try:
            check_algorithm(algorithm, getattr(model, "kind", None))
        except InvalidArgumentError:
            raise
        except ValueError as error:
            raise InvalidArgumentError(str(error)) from None
        if algorithm not in ENSEMBLE_ALGORITHMS:
            raise InvalidArgumentError(
                f"fit_ensemble supports the algorithms {', '.join(ENSEMBLE_ALGORITHMS)}, got "
                f"{algorithm!r}; train it with mflows.fit, one seed at a time"
            )
        schedule = schedule_for(
            algorithm,
            model,
            epochs=options["epochs"],
            reconstruction_weight=options["reconstruction_weight"],
            alternate=alternate,
        )
    elif not isinstance(schedule, Schedule):
        raise InvalidArgumentError(f"schedule must be a Schedule, got {type(schedule).__name__}")
    _check_ensemble_schedule(schedule)

    data_shape = tuple(getattr(model, "data_shape", (model.data_dim,)))
    x = _as_data(x, "x", data_shape, None, model)
    n = x.shape[0]
    p = int(getattr(model, "context_dim", 0))
    if p == 0 and context is not None:
        raise InvalidArgumentError(
            "this model is unconditional (context_dim == 0) but got a context"
        )
    if p > 0:
        if context is None:
            raise InvalidArgumentError(
                f"this model is conditional: expected context of shape ({n}, {p})"
            )
        context = _as_data(context, "context", (p,), n, model)
    split = options["validation_split"]
    n_val = round(n * split)
    n_train = n - n_val
    if split > 0 and n_val < 1:
        raise InvalidArgumentError(
            f"too few samples ({n}) for validation_split={split}: no validation point"
        )
    if n_train < 2:
        raise InvalidArgumentError(
            f"too few samples ({n}) for validation_split={split}: {n_train} training points left"
        )

    if device is not None:
        for m in models:
            m.to(device)
    device = model_device(model)
    trains_manifold = any(ph.parameters != "density" for st in schedule.stages for ph in st.phases)
    train_idx, val_idx = [], []
    for seed, m in zip(seeds, models):
        perm = torch.from_numpy(np.random.default_rng([seed, 17]).permutation(n))
        train_idx.append(perm[:n_train])
        val_idx.append(perm[n_train:])
        _set_standardization(m, x, perm[:n_train], standardize)
        if data_init and trains_manifold:
            from mflows.initialization import initialize_from_data

            initialize_from_data(
                m, x[perm[:n_train]], None if context is None else context[perm[:n_train]]
            )

    def take(idx: list[Tensor]) -> tuple[Tensor, Tensor | None]:
        rows = torch.stack(idx)
        xs = x.reshape(n, -1)[rows].to(device)
        return xs, None if context is None else context[rows].to(device)

    run = _EnsembleRun(
        models,
        schedule,
        seeds=seeds,
        lrs=lrs,
        options=options,
        early_stopping=bool(early_stopping),
        on_divergence=on_divergence,
        progress=bool(progress),
        callback=callback,
    )
    val = take(val_idx) if n_val > 0 else None
    with thread_policy(model, options["batch_size"] * k, threads):
        histories = run.fit(take(train_idx), val)
    return models, histories


class _EnsembleRun:
    """The stage/epoch/step loops of :func:`fit_ensemble` over a :class:`_Stack`."""

    def __init__(
        self,
        models: list[nn.Module],
        schedule: Schedule,
        *,
        seeds: list[int],
        lrs: list[float],
        options: dict[str, Any],
        early_stopping: bool,
        on_divergence: str,
        progress: bool,
        callback: Callable[[int, int, dict[str, Any]], None] | None,
    ):
        self.schedule = schedule
        self.seeds = seeds
        self.options = options
        self.early_stopping = early_stopping
        self.on_divergence = on_divergence
        self.progress = progress
        self.callback = callback
        self.stack = _Stack(models, schedule)
        self.k = len(models)
        self.base_lr = [float(v) for v in lrs]
        self.histories = [History() for _ in models]
        self.diverged = [False] * self.k

    def fit(self, train: tuple[Tensor, Tensor | None], val: tuple[Tensor, Tensor | None] | None):
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.schedule.epochs, desc=f"{self.k} members", unit="epoch")
        try:
            for s, stage in enumerate(self.schedule.stages):
                self._run_stage(s, stage, train, val, bar)
        finally:
            if bar is not None:
                bar.close()
            self.stack.write_back()
            for m in self.stack.models:
                m.train()
        return self.histories

    def _run_stage(self, s: int, stage: Stage, train, val, bar) -> None:
        stack, k = self.stack, self.k
        n_train = train[0].shape[1]
        bs = self.options["batch_size"]
        steps = math.ceil(n_train / bs)
        decoupled = self.options["optimizer"] == "adamw"
        phase_groups = [stack.groups_of(s, i) for i in range(len(stage.phases))]
        optimizers = [
            _Adam([stack.flats[g] for g in gs], k, self.options["weight_decay"], decoupled)
            for gs in phase_groups
        ]
        total_steps = []
        for i in range(len(stage.phases)):
            if len(stage.phases) > 1 and stage.alternate == "epoch":
                epochs = len(range(i, stage.epochs, len(stage.phases)))
            else:
                epochs = stage.epochs
            total_steps.append(max(1, epochs * steps))
        monitored = self.early_stopping and val is not None
        monitor = "val_loss" if stage.monitor is None else "val_monitor"
        best_value = [math.inf] * k
        best_epoch: list[int | None] = [None] * k
        bad_epochs = [0] * k
        best = [f.clone() for f in stack.flats] if monitored else None
        active = [not d for d in self.diverged]
        first = sum(st.epochs for st in self.schedule.stages[:s])
        arange = torch.arange(k, device=train[0].device).unsqueeze(1)
        for e in range(stage.epochs):
            if not any(active):
                break
            epoch = first + e + 1
            tic = time.perf_counter()
            recording = list(active)
            gens = [torch.Generator().manual_seed(_epoch_seed(seed, epoch)) for seed in self.seeds]
            order = torch.stack([torch.randperm(n_train, generator=g) for g in gens])
            batches = order.to(train[0].device).split(bs, dim=1)
            phases = stage.phases_in_epoch(e)
            indices = [stage.phases.index(ph) for ph in phases]
            rows: dict[int, list[Tensor]] = {i: [] for i in indices}
            names_of: dict[int, list[str]] = {}
            for b, idx in enumerate(batches):
                xb = train[0][arange, idx]
                cb = None if train[1] is None else train[1][arange, idx]
                for phase, i in zip(phases, indices):
                    names, row, bad = self._step(
                        phase, stack.groups_of(s, i), optimizers[i], total_steps[i], xb, cb, active
                    )
                    names_of[i] = names
                    rows[i].append(row)
                    if any(bad):
                        self._diverged(bad, epoch, b + 1, len(batches), phase, names, row)
                        active = [a and not b for a, b in zip(active, bad)]
            lr_now = [lr * _cosine(optimizers[0].t, total_steps[0]) for lr in self.base_lr]
            # (steps, K, terms) per phase, stacked once for the means and the gradient norms
            stacked = {i: torch.stack(r).to(torch.float64) for i, r in rows.items()}
            means = _means(stacked, names_of, len(batches), k)
            norms = gradient_norm_summary(
                {
                    stage.phases[i].name: steps[:, :, names_of[i].index("gradient_norm")]
                    for i, steps in stacked.items()
                },
                k,
                per_phase=len(stage.phases) > 1,
            )
            vals = self._validate(stage, val) if val is not None else None
            elapsed = time.perf_counter() - tic
            improved = [False] * k
            for j in range(k):
                if not recording[j]:
                    continue
                record: dict[str, Any] = {
                    "epoch": epoch,
                    "stage": s,
                    "phases": "+".join(ph.name for ph in phases),
                }
                record.update(means[j])
                record.update(norms[j])
                record["val_loss"] = math.nan
                if vals is not None:
                    record.update(vals[j])
                record["lr"] = lr_now[j]
                record["time"] = elapsed
                history = self.histories[j]
                history.records.append(record)
                history.wall_time += elapsed
                if monitored and not self.diverged[j]:
                    if not math.isfinite(record["val_loss"]):
                        self._diverged_validation(j, epoch, record["val_loss"])
                        active[j] = False
                    elif record[monitor] < best_value[j]:
                        best_value[j], best_epoch[j], bad_epochs[j] = record[monitor], epoch, 0
                        improved[j] = True
                    else:
                        bad_epochs[j] += 1
                        patience = self.options["patience"]
                        if patience is not None and bad_epochs[j] >= patience:
                            active[j] = False
                if self.diverged[j]:
                    record["diverged"] = 1.0
                if self.callback is not None:
                    self.callback(j, epoch, record)
            if best is not None and any(improved):
                keep = torch.tensor(improved, device=best[0].device).unsqueeze(1)
                for g, flat in enumerate(stack.flats):
                    best[g].copy_(torch.where(keep, flat, best[g]))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(active=sum(active))
        for j in range(k):
            self.histories[j].best_epoch = best_epoch[j]
        if best is not None and any(b is not None for b in best_epoch):
            restore = torch.tensor([b is not None for b in best_epoch], device=best[0].device)
            for g, flat in enumerate(stack.flats):
                flat.copy_(torch.where(restore.unsqueeze(1), best[g], flat))

    def _step(
        self,
        phase: Phase,
        groups: list[int],
        optimizer: _Adam,
        total_steps: int,
        x: Tensor,
        context: Tensor | None,
        active: list[bool],
    ) -> tuple[list[str], Tensor, list[bool]]:
        """One step of ``phase`` for every member; returns names, ``(K, T)`` row, bad flags."""
        stack = self.stack
        names = _ordered(phase.losses)
        weights = torch.tensor(
            [phase.losses[n] for n in names], dtype=stack.flats[0].dtype, device=x.device
        )
        leaves = [stack.flats[g] for g in groups]
        for leaf in leaves:
            leaf.requires_grad_(True)
        try:
            terms = stack.terms(names, x, context)
            loss = terms @ weights
            grads = list(torch.autograd.grad(loss.sum(), leaves, allow_unused=True))
        finally:
            for leaf in leaves:
                leaf.requires_grad_(False)
        grads = [torch.zeros_like(f) if g is None else g for f, g in zip(leaves, grads)]
        # each member's gradient norm over the phase's parameters, clipped on its own
        norms = [torch.linalg.vector_norm(g, dim=1) for g in grads]
        norm = norms[0] if len(norms) == 1 else torch.linalg.vector_norm(torch.stack(norms), dim=0)
        clip = self.options["clip"]
        if clip is not None:
            coef = (clip / (norm + 1e-6)).clamp(max=1.0).unsqueeze(1)
            for g in grads:
                g.mul_(coef)
        row = torch.cat([terms.detach(), loss.detach().unsqueeze(1), norm.unsqueeze(1)], 1)
        finite = torch.isfinite(row).all(1).tolist()
        bad = [a and not f for a, f in zip(active, finite)]
        factor = _cosine(optimizer.t, total_steps)
        members = [j for j in range(self.k) if active[j] and not bad[j]]
        optimizer.step(grads, [lr * factor for lr in self.base_lr], members)
        return [*names, "loss", "gradient_norm"], row, bad

    def _diverged(
        self, bad: list[bool], epoch: int, batch: int, n_batches: int, phase: Phase, names, row
    ) -> None:
        """Stops (or raises for) the members flagged ``bad`` in a training step."""
        for j in [j for j, flag in enumerate(bad) if flag]:
            terms = dict(zip(names, row[j].tolist()))
            norm = terms.pop("gradient_norm")
            nonfinite = [k for k, v in terms.items() if not math.isfinite(v)]
            what = "loss" if nonfinite else "gradient norm"
            message = (
                f"training diverged: non-finite {what} of member {j} (seed {self.seeds[j]}) at "
                f"epoch {epoch}, batch {batch}/{n_batches}, phase {phase.name!r}: "
                + ", ".join(f"{k}={v:.6g}" for k, v in terms.items())
                + f", gradient norm={norm:.6g}"
            )
            if self.on_divergence == "raise":
                raise TrainingDivergedError(message)
            self.diverged[j] = True

    def _diverged_validation(self, j: int, epoch: int, value: float) -> None:
        if self.on_divergence == "raise":
            raise TrainingDivergedError(
                f"training diverged: non-finite validation loss {value} of member {j} (seed "
                f"{self.seeds[j]}) after epoch {epoch}"
            )
        self.diverged[j] = True

    @torch.no_grad()
    def _validate(self, stage: Stage, val: tuple[Tensor, Tensor | None]) -> list[dict[str, float]]:
        """Per member: ``val_loss``, ``val_<term>`` and ``val_monitor`` (as :func:`mflows.fit`)."""
        x, context = val
        weights = stage.weights
        names = _ordered(weights)
        w = torch.tensor([weights[n] for n in names], dtype=x.dtype, device=x.device)
        self.stack.module.eval()
        sums = None
        n_val = x.shape[1]
        for idx in torch.arange(n_val, device=x.device).split(self.options["batch_size"]):
            terms = self.stack.terms(names, x[:, idx], None if context is None else context[:, idx])
            row = torch.cat([terms, (terms @ w).unsqueeze(1)], 1).to(torch.float64) * len(idx)
            sums = row if sums is None else sums + row
        self.stack.module.train()
        out = []
        for values in (sums / n_val).tolist():
            record = {"val_loss": values[-1]}
            record.update({f"val_{n}": v for n, v in zip(names, values)})
            if stage.monitor is not None:
                record["val_monitor"] = sum(weights[n] * record[f"val_{n}"] for n in stage.monitor)
            out.append(record)
        return out


def _cosine(t: int, total: int) -> float:
    """Factor of the cosine-annealed learning rate after ``t`` of ``total`` steps."""
    return 0.5 * (1.0 + math.cos(math.pi * t / total))


def _means(
    stacked: dict[int, Tensor], names_of: dict[int, list[str]], n_batches: int, k: int
) -> list[dict[str, float]]:
    """Per member: ``train_<term>`` (``train_loss`` for the total) averaged over the batches,
    from each phase's ``(steps, K, terms)`` rows."""
    out: list[dict[str, float]] = [{} for _ in range(k)]
    for i, steps in stacked.items():
        totals = steps.sum(0).tolist()
        for j in range(k):
            for name, v in zip(names_of[i], totals[j]):
                if name != "gradient_norm":
                    key = "train_loss" if name == "loss" else f"train_{name}"
                    out[j][key] = out[j].get(key, 0.0) + v / max(n_batches, 1)
    return out
