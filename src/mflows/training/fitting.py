"""``mflows.fit``: validate the inputs, build the schedule, split the data, run the trainer.

(The module is called ``fitting`` so that ``mflows.training.fit`` is always the function.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mflows.errors import InvalidArgumentError
from mflows.threads import thread_policy
from mflows.training import defaults
from mflows.training import distributed as D
from mflows.training.checkpoint import CHECKPOINT_NAME
from mflows.training.options import check_epochs, check_float, check_optimizer_options
from mflows.training.phases import ALTERNATIONS, Schedule, check_algorithm, schedule_for
from mflows.training.trainer import History, Trainer, model_device
from mflows.validation import as_tensor

__all__ = ["fit"]


def _as_data(a: Any, name: str, shape: tuple[int, ...], n: int | None, model: nn.Module) -> Tensor:
    try:
        t = as_tensor(a, name, shape, dtype=model.dtype, device="cpu")
    except InvalidArgumentError:
        raise
    except (ValueError, TypeError) as error:
        raise InvalidArgumentError(str(error)) from None
    if n is not None and t.shape[0] != n:
        raise InvalidArgumentError(
            f"expected {name} of shape ({n}, {', '.join(map(str, shape))}) to match x, "
            f"got {tuple(t.shape)}"
        )
    return t


def _set_standardization(model: nn.Module, x: Tensor, idx: Tensor, standardize: bool) -> None:
    """Sets the statistics of ``model.standardizer`` once, from the training split ``x[idx]``."""
    if not isinstance(standardize, (bool, np.bool_)):
        raise InvalidArgumentError(f"expected standardize True or False, got {standardize!r}")
    layer = getattr(model, "standardizer", None)
    if layer is None or layer.is_fitted:
        return
    if standardize:
        layer.set_statistics(x[idx].reshape(len(idx), -1))
    else:
        layer.set_statistics(shift=None, scale=None)  # identity, recorded as decided


def _set_chart(model: nn.Module, x: Tensor, idx: Tensor) -> None:
    """Fits a data-dependent chart (a FOM's stereographic centre) once, from ``x[idx]``."""
    chart = getattr(model, "chart", None)
    if chart is not None and hasattr(chart, "fit_to_data") and not chart.is_fitted:
        chart.fit_to_data(x[idx].reshape(len(idx), -1))


def _check_options(**options: Any) -> dict[str, Any]:
    """Range checks of :func:`fit`'s options (:class:`InvalidArgumentError`), normalised."""
    alternate = options.pop("alternate")
    if alternate not in ALTERNATIONS:
        raise InvalidArgumentError(
            f"alternate must be one of {', '.join(map(repr, ALTERNATIONS))}, got {alternate!r}"
        )
    split = check_float(options.pop("validation_split"), "validation_split")
    if not 0.0 <= split < 1.0:
        raise InvalidArgumentError(f"expected 0 <= validation_split < 1, got {split}")
    return {
        "epochs": check_epochs(options.pop("epochs")),
        "validation_split": split,
        "reconstruction_weight": check_float(
            options.pop("reconstruction_weight"), "reconstruction_weight", nonnegative=True
        ),
        "scandal_weight": check_float(
            options.pop("scandal_weight"), "scandal_weight", nonnegative=True
        ),
        **check_optimizer_options(**options),
    }


def _with_hflips(losses: Callable[..., Any]) -> Callable[..., Any]:
    """``losses`` evaluated on the batch with each image flipped left-right with probability
    1/2 (global RNG, which the trainer seeds every epoch)."""

    def flipped(model: nn.Module, x: Tensor, *args: Any, **kwargs: Any) -> Any:
        flip = torch.rand(x.shape[0], device=x.device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return losses(model, x, *args, **kwargs)

    return flipped


def fit(
    model: nn.Module,
    x: Any,
    context: Any = None,
    algorithm: str = "likelihood",
    *,
    scores: Any = None,
    scandal: bool = False,
    scandal_weight: float = defaults.SCANDAL_WEIGHT,
    epochs: int | tuple[int, int] = defaults.EPOCHS,
    batch_size: int = defaults.BATCH_SIZE,
    lr: float = defaults.LR,
    weight_decay: float = defaults.WEIGHT_DECAY,
    optimizer: str = defaults.OPTIMIZER,
    clip: float | None = defaults.CLIP,
    validation_split: float = defaults.VALIDATION_SPLIT,
    early_stopping: bool = defaults.EARLY_STOPPING,
    patience: int | None = None,
    reconstruction_weight: float = defaults.RECONSTRUCTION_WEIGHT,
    alternate: str = defaults.ALTERNATE,
    seed: int = defaults.SEED,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    log_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    schedule: Schedule | None = None,
    sinkhorn_options: Mapping[str, Any] | None = None,
    callback: Callable[[int, dict[str, Any]], None] | None = None,
    data_init: bool = True,
    threads: int | None = None,
    compile: bool | str = False,
    standardize: bool = True,
    augment: str | None = None,
) -> History:
    """Trains ``model`` on ``x`` with one of the training schemes (docs/theory.md,
    "Training schemes").

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
        resume: continue the run saved in ``checkpoint_dir`` (bit-identical to not stopping);
            refused when the checkpoint was written for other data (shape and a hash of a
            sample of rows), another model configuration, schedule or options.
        log_dir: write ``history.csv`` (and TensorBoard events, when installed) there.
        device: train on this device (default: the model's; ``cuda:LOCAL_RANK`` under torchrun
            with NCCL).
        schedule: a custom :class:`~mflows.training.phases.Schedule` instead of ``algorithm``.
        sinkhorn_options: keyword arguments of :func:`mflows.losses.sinkhorn_divergence`.
        callback: ``callback(epoch, record)`` after every epoch.
        data_init: start the manifold of a fresh M-flow / M_e-flow / PIE with LU layers at the
            PCA plane of the training data (:func:`mflows.initialization.initialize_from_data`;
            models already trained or without LU layers are left alone). Independently, fresh
            ActNorm layers of image flows always get their data-dependent start
            (:func:`mflows.transforms.images.init_actnorm`).
        threads: CPU threads of torch during training. ``None``: the user's setting
            (``torch.set_num_threads``, ``OMP_NUM_THREADS``) if any, else mflows' policy (one
            thread for models whose step is too small to gain from more, see
            :mod:`mflows.threads`); the previous count is restored afterwards.
        compile: compile the training losses with :func:`torch.compile` (falls back to eager,
            with one warning, where compilation fails). Pays off on long runs only: the first
            steps take minutes to compile. A string names the ``torch.compile`` backend
            (e.g. ``"aot_eager"``, quick to compile, for checks).
        standardize: set the model's standardisation (``model.standardizer``: mean and standard
            deviation of the training split) if it has not been set yet; False fixes it at the
            identity (raw data space). Statistics once set are never changed by ``fit``
            (resuming and further training keep them; docs/guide.md, "Data scale and
            standardisation").
        augment: ``"hflip"`` flips each training image horizontally with probability 1/2,
            drawn anew every step (from the per-epoch seeded RNG, so runs repeat and resume
            exactly); the validation data are never changed. ``None``: no augmentation.

    Returns:
        The :class:`~mflows.training.trainer.History`; ``model`` is trained in place.

    Raises:
        InvalidArgumentError: (a ``ValueError``) bad inputs, before any training: non-finite
            data, too few samples for the validation split, mis-shaped context or scores, an
            algorithm that does not fit the model or an unknown one, an option out of range
            (``lr`` not finite and > 0, ``clip`` <= 0, negative ``weight_decay`` or
            ``reconstruction_weight``, ``epochs``/``batch_size``/``patience`` not integers >= 1,
            ``validation_split`` outside [0, 1)).
        ImportError: an OT scheme without geomloss installed.
        TrainingDivergedError: a loss or gradient became NaN or infinite; the message names the
            epoch, the batch, the non-finite terms and the last good checkpoint.
        ResumeMismatchError: ``resume=True`` with a checkpoint written for other data, another
            model, schedule or options (the message names what differs).
        CheckpointError: the checkpoint to resume is corrupt or holds more than plain data.
    """
    kind = getattr(model, "kind", None)
    if schedule is None:
        try:
            check_algorithm(algorithm, kind, scandal=scandal)
        except InvalidArgumentError:
            raise
        except ValueError as error:
            raise InvalidArgumentError(str(error)) from None
    elif not isinstance(schedule, Schedule):
        raise InvalidArgumentError(f"schedule must be a Schedule, got {type(schedule).__name__}")
    options = _check_options(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        optimizer=optimizer,
        clip=clip,
        validation_split=validation_split,
        patience=patience,
        reconstruction_weight=reconstruction_weight,
        scandal_weight=scandal_weight,
        alternate=alternate,
        seed=seed,
    )
    validation_split = options.pop("validation_split")

    data_shape = tuple(getattr(model, "data_shape", (model.data_dim,)))
    if augment not in (None, "hflip") or (augment and len(data_shape) != 3):
        raise InvalidArgumentError(
            f"augment must be None or 'hflip' (images only), got {augment!r} for data of "
            f"shape {data_shape}"
        )
    x = _as_data(x, "x", data_shape, None, model)
    n = x.shape[0]
    p = int(getattr(model, "context_dim", 0))
    if p == 0:
        if context is not None:
            raise InvalidArgumentError(
                "this model is unconditional (context_dim == 0) but got a context"
            )
    else:
        if context is None:
            raise InvalidArgumentError(
                f"this model is conditional: expected context of shape ({n}, {p})"
            )
        context = _as_data(context, "context", (p,), n, model)
    if scandal:
        if p == 0:
            raise InvalidArgumentError("scandal=True needs a conditional model (context_dim > 0)")
        if scores is None:
            raise InvalidArgumentError(f"scandal=True needs scores of shape ({n}, {p}), got None")
        scores = _as_data(scores, "scores", (p,), n, model)
    else:
        scores = None

    n_val = round(n * float(validation_split))
    n_train = n - n_val
    if validation_split > 0 and n_val < 1:
        raise InvalidArgumentError(
            f"too few samples ({n}) for validation_split={validation_split}: no validation point"
        )
    if n_train < max(2, D.world_size()):
        raise InvalidArgumentError(
            f"too few samples ({n}) for validation_split={validation_split}: "
            f"{n_train} training points left"
        )

    if schedule is None:
        schedule = schedule_for(
            algorithm,
            model,
            epochs=options.pop("epochs"),
            reconstruction_weight=options.pop("reconstruction_weight"),
            scandal=scandal,
            scandal_weight=options.pop("scandal_weight"),
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

    perm = torch.from_numpy(np.random.default_rng([options["seed"], 17]).permutation(n))
    train_idx, val_idx = perm[:n_train], perm[n_train:]
    # resume=True without a checkpoint yet (the command line's way) is a fresh run
    resuming = (
        resume and checkpoint_dir is not None and (Path(checkpoint_dir) / CHECKPOINT_NAME).exists()
    )
    if not resuming:
        _set_standardization(model, x, train_idx, standardize)  # else: the checkpoint's
        _set_chart(model, x, train_idx)

    def take(idx: Tensor):
        return tuple(None if t is None else t[idx].to(device) for t in (x, context, scores))

    trainer = Trainer(
        model,
        schedule,
        batch_size=options["batch_size"],
        lr=options["lr"],
        weight_decay=options["weight_decay"],
        optimizer=options["optimizer"],
        clip=options["clip"],
        early_stopping=early_stopping,
        patience=options["patience"],
        seed=options["seed"],
        progress=progress,
        checkpoint_dir=checkpoint_dir,
        log_dir=log_dir,
        sinkhorn_options=sinkhorn_options,
        callback=callback,
        compile=compile,
    )
    trains_manifold = any(
        phase.parameters != "density" for stage in schedule.stages for phase in stage.phases
    )
    if data_init and trains_manifold and not resuming:
        # after the standardisation: the PCA sees the data as the LU layer does
        from mflows.initialization import initialize_from_data

        initialize_from_data(model, x[train_idx], None if context is None else context[train_idx])
    if trains_manifold and not resuming:
        # image flows: fresh ActNorm layers start at zero mean, unit variance on training data
        # (part of the layer, as in Glow and the paper; independent of the PCA start)
        from mflows.transforms.images import init_actnorm

        init_actnorm(model, x[train_idx], None if context is None else context[train_idx])
    if augment == "hflip":
        trainer._losses = _with_hflips(trainer._losses)  # training steps only, not validation
    val = take(val_idx) if n_val > 0 else None
    with thread_policy(model, options["batch_size"], threads):
        return trainer.fit(take(train_idx), val, resume=resume)
