"""``mflows.fit``: validate the inputs, build the schedule, split the data, run the trainer."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mflows.training import distributed as D
from mflows.training.phases import Schedule, check_algorithm, schedule_for
from mflows.training.trainer import History, Trainer, model_device
from mflows.validation import as_tensor

__all__ = ["fit"]


def _as_data(a: Any, name: str, shape: tuple[int, ...], n: int | None, model: nn.Module) -> Tensor:
    t = as_tensor(a, name, shape, dtype=model.dtype, device="cpu")
    if n is not None and t.shape[0] != n:
        raise ValueError(
            f"expected {name} of shape ({n}, {', '.join(map(str, shape))}) to match x, "
            f"got {tuple(t.shape)}"
        )
    return t


def fit(
    model: nn.Module,
    x: Any,
    context: Any = None,
    algorithm: str = "likelihood",
    *,
    scores: Any = None,
    scandal: bool = False,
    scandal_weight: float = 1.0,
    epochs: int | tuple[int, int] = 50,
    batch_size: int = 100,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    optimizer: str = "adamw",
    clip: float | None = 1.0,
    validation_split: float = 0.25,
    early_stopping: bool = True,
    patience: int | None = None,
    reconstruction_weight: float = 1000.0,
    alternate: str = "batch",
    seed: int = 0,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    log_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    schedule: Schedule | None = None,
    sinkhorn_options: Mapping[str, Any] | None = None,
    callback: Callable[[int, dict[str, Any]], None] | None = None,
    data_init: bool = True,
) -> History:
    """Trains ``model`` on ``x`` with one of the schemes of SPEC §5.

    Args:
        model: a model from :func:`mflows.make_model` (or any object following its protocol).
        x: training data ``(N, *data_dim)``, tensor or array.
        context: ``(N, context_dim)`` parameters theta for conditional models.
        algorithm: ``"likelihood"``, ``"sequential"``, ``"alternating"``, ``"pae"``, ``"ot"`` or
            ``"ot-alternating"`` (see :mod:`mflows.training.phases`).
        scores: ``(N, context_dim)`` joint scores, needed with ``scandal=True``.
        scandal: add the SCANDAL score loss to every likelihood phase.
        scandal_weight: weight of the score loss.
        epochs: total epochs; for ``sequential``/``pae`` also ``(manifold, density)``.
        batch_size: batch size (per process under ``torchrun``).
        lr: learning rate (cosine-annealed to 0 over each phase).
        weight_decay: (decoupled, for AdamW) weight decay.
        optimizer: ``"adamw"`` or ``"adam"``.
        clip: gradient-norm clipping threshold (``None``: off).
        validation_split: fraction of ``x`` held out for validation (0: none).
        early_stopping: restore the weights with the best validation loss at the end of each
            stage (a deep copy is kept).
        patience: also stop a stage after this many epochs without improvement.
        reconstruction_weight: weight of the MSE in simultaneous M-flow likelihood training.
        alternate: alternate phases every ``"batch"`` or every ``"epoch"``.
        seed: seed of the validation split, data order and training randomness.
        progress: show a progress bar.
        checkpoint_dir: write ``checkpoint.pt`` and ``history.csv`` there every epoch.
        resume: continue the run saved in ``checkpoint_dir`` (bit-identical to not stopping).
        log_dir: write ``history.csv`` (and TensorBoard events, when installed) there.
        device: train on this device (default: the model's; ``cuda:LOCAL_RANK`` under torchrun
            with NCCL).
        schedule: a custom :class:`~mflows.training.phases.Schedule` instead of ``algorithm``.
        sinkhorn_options: keyword arguments of :func:`mflows.losses.sinkhorn_divergence`.
        callback: ``callback(epoch, record)`` after every epoch.
        data_init: start the manifold of a fresh M-flow / M_e-flow / PIE with LU layers at the
            PCA plane of the training data (:func:`mflows.initialization.initialize_from_data`;
            models already trained or without LU layers are left alone).

    Returns:
        The :class:`~mflows.training.trainer.History`; ``model`` is trained in place.

    Raises:
        ValueError: bad inputs (non-finite data, too few samples for the validation split,
            mis-shaped context or scores, an algorithm that does not fit the model, an unknown
            algorithm) before any training.
        ImportError: an OT scheme without geomloss installed.
        TrainingDivergedError: a loss became NaN or infinite.
    """
    kind = getattr(model, "kind", None)
    if schedule is None:
        check_algorithm(algorithm, kind, scandal=scandal)
    elif not isinstance(schedule, Schedule):
        raise ValueError(f"schedule must be a Schedule, got {type(schedule).__name__}")
    if not 0.0 <= float(validation_split) < 1.0:
        raise ValueError(f"expected 0 <= validation_split < 1, got {validation_split}")

    data_shape = tuple(getattr(model, "data_shape", (model.data_dim,)))
    x = _as_data(x, "x", data_shape, None, model)
    n = x.shape[0]
    p = int(getattr(model, "context_dim", 0))
    if p == 0:
        if context is not None:
            raise ValueError("this model is unconditional (context_dim == 0) but got a context")
    else:
        if context is None:
            raise ValueError(f"this model is conditional: expected context of shape ({n}, {p})")
        context = _as_data(context, "context", (p,), n, model)
    if scandal:
        if p == 0:
            raise ValueError("scandal=True needs a conditional model (context_dim > 0)")
        if scores is None:
            raise ValueError(f"scandal=True needs scores of shape ({n}, {p}), got None")
        scores = _as_data(scores, "scores", (p,), n, model)
    else:
        scores = None

    n_val = round(n * float(validation_split))
    n_train = n - n_val
    if validation_split > 0 and n_val < 1:
        raise ValueError(
            f"too few samples ({n}) for validation_split={validation_split}: no validation point"
        )
    if n_train < max(2, D.world_size()):
        raise ValueError(
            f"too few samples ({n}) for validation_split={validation_split}: "
            f"{n_train} training points left"
        )

    if schedule is None:
        schedule = schedule_for(
            algorithm,
            model,
            epochs=epochs,
            reconstruction_weight=reconstruction_weight,
            scandal=scandal,
            scandal_weight=scandal_weight,
            alternate=alternate,
        )
    if any("sinkhorn" in ph.losses for st in schedule.stages for ph in st.phases):
        try:
            import geomloss  # noqa: F401
        except ImportError as error:
            raise ImportError(
                "the optimal-transport training schemes need geomloss: pip install 'mflows[ot]'"
            ) from error

    device = D.init_distributed(device)
    if device is not None:
        model.to(device)
    device = model_device(model)

    perm = torch.from_numpy(np.random.default_rng([int(seed), 17]).permutation(n))
    train_idx, val_idx = perm[:n_train], perm[n_train:]

    def take(idx: Tensor):
        return tuple(None if t is None else t[idx].to(device) for t in (x, context, scores))

    trainer = Trainer(
        model,
        schedule,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        optimizer=optimizer,
        clip=clip,
        early_stopping=early_stopping,
        patience=patience,
        seed=seed,
        progress=progress,
        checkpoint_dir=checkpoint_dir,
        log_dir=log_dir,
        sinkhorn_options=sinkhorn_options,
        callback=callback,
    )
    if data_init and not resume:
        from mflows.initialization import initialize_from_data

        initialize_from_data(model, x[train_idx], None if context is None else context[train_idx])
    val = take(val_idx) if n_val > 0 else None
    return trainer.fit(take(train_idx), val, resume=resume)
