"""Estimating the manifold dimension n from one training run (:func:`estimate_dimension`).

One M-flow with latent dimension ``max_dim`` is trained on the manifold (reconstruction) loss
with nested dropout: every training sample decodes only its first k latent coordinates, k drawn
with ``P(k) ~ decay^(k-1)`` from ``1..max_dim`` (the rest set to zero; loss ``nested_mse``). The
latent coordinates come out ordered by importance, and for every k the first k of them define a
k-dimensional manifold ``g_k(u) = f^-1(u_1..u_k, 0, ..., 0)``. Its reconstruction error on
held-out data, ``E_k = mean |x - g_k(u_1..k)|^2``, is the error curve; the chosen dimension is
read off it by one of the criteria below (see docs/guide.md, "Choosing the manifold dimension").

Criteria (``E_0`` is the total variance of the held-out data, the error of a 0-dimensional
"manifold" at the mean):

* ``"threshold"`` (default): the smallest k with ``E_k <= threshold * E_0`` (default 0.05),
  i.e. the k-manifold explains all but a fraction ``threshold`` of the variance (as PCA's
  explained variance, but for a curved manifold). Needs the noise off the manifold *and* the
  flow's fitting error at the true n below ``threshold`` of the variance (0.02-0.03 on the
  benchmark manifolds at the default budget), and the (n-1)-manifold above it.
* ``"ratio"``: the k with the largest drop ``E_(k-1) / E_k`` (an elbow on the log-error).
  Needs no threshold, but picks an early k when one coordinate explains most of the variance
  (the 2-sphere in R^9: ``E_1 / E_0 = 0.11``, ``E_2 / E_0 = 0.022`` gives 1), and on
  noise-free data ``E_d`` is exactly 0, so ``max_dim`` must stay below d.

The truncated manifold of dimension k is the manifold of an ordinary M-flow with latent
dimension k sharing the outer flow (:func:`truncate`), whose density can be trained next.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mflows.errors import InvalidArgumentError
from mflows.models import Model, make_model
from mflows.training import History, fit
from mflows.training.defaults import VALIDATION_SPLIT
from mflows.training.phases import Phase, Schedule, Stage
from mflows.validation import as_tensor

__all__ = [
    "CRITERIA",
    "DEFAULT_STEPS",
    "DimensionEstimate",
    "choose_dimension",
    "density_schedule",
    "estimate_dimension",
    "nested_schedule",
    "reconstruction_curve",
    "truncate",
]

#: optimiser steps of the one run when ``epochs`` is not given: 400 steps (2,000 points, 20
#: epochs) put the elbow of the 5-sphere in R^9 one dimension late, 2,000 found it (benchmarks).
DEFAULT_STEPS = 3000

#: criterion name -> default parameters.
CRITERIA: dict[str, dict[str, float]] = {
    "threshold": {"threshold": 0.05},
    "ratio": {},
}


@dataclass
class DimensionEstimate:
    """The result of :func:`estimate_dimension`.

    Attributes:
        dimension: the chosen manifold dimension n.
        errors: held-out reconstruction error ``E_k`` for k = 1 .. max_dim (``errors[k - 1]``).
        total_variance: ``E_0``, the held-out total variance (the error at k = 0).
        criterion: the criterion name (``"threshold"`` or ``"ratio"``).
        parameters: the criterion's parameters.
        model: the trained ordered M-flow (latent dimension max_dim); :func:`truncate` gives
            the model of any dimension k <= max_dim.
        history: its training history.
        wall_time: seconds spent (training and evaluating the curve).
    """

    dimension: int
    errors: list[float]
    total_variance: float
    criterion: str
    parameters: dict[str, float]
    model: Model
    history: History | None = None
    wall_time: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def max_dim(self) -> int:
        """The upper bound the model was trained with."""
        return len(self.errors)

    @property
    def relative_errors(self) -> list[float]:
        """``E_k / E_0`` for k = 1 .. max_dim."""
        return [e / self.total_variance for e in self.errors]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready), without the model."""
        return {
            "dimension": self.dimension,
            "max_dim": self.max_dim,
            "errors": list(self.errors),
            "relative_errors": self.relative_errors,
            "total_variance": self.total_variance,
            "criterion": self.criterion,
            "parameters": dict(self.parameters),
            "wall_time": self.wall_time,
            **self.extra,
        }


def density_schedule(epochs: int, lr: float | None = None) -> Schedule:
    """One density stage (``latent_nll`` on the inner flow h), the manifold kept fixed."""
    phase = Phase("density", "density", {"latent_nll": 1.0}, lr)
    return Schedule((Stage((phase,), int(epochs)),), "density-only", {"epochs": int(epochs)})


def nested_schedule(epochs: int, lr: float | None = None, decay: float = 0.8) -> Schedule:
    """One manifold stage on the nested-dropout reconstruction loss ``nested_mse``.

    ``decay`` (the model's ``nested_decay``, which the loss reads) is recorded in the schedule's
    options, so that a checkpoint of another decay is not resumed.
    """
    phase = Phase("manifold", "manifold", {"nested_mse": 1.0}, lr)
    options = {"epochs": int(epochs), "decay": float(decay)}
    return Schedule((Stage((phase,), int(epochs)),), "nested-dropout", options)


@torch.no_grad()
def reconstruction_curve(model: Model, x: Any, batch_size: int = 1000) -> list[float]:
    """``E_k = mean_i |x_i - g(u_i,1..k, 0)|^2`` for k = 1 .. ``model.latent_dim``.

    Args:
        model: an M-flow-like model (``encode`` / ``decode``).
        x: data ``(N, *data_dim)``.
        batch_size: points per forward pass.
    """
    was_training = model.training
    model.eval()
    x = as_tensor(x, "x", tuple(model.data_shape), dtype=model.dtype, device=model.device)
    m = model.latent_dim
    sums = torch.zeros(m, dtype=torch.float64)
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size]
        u = model.encode(xb)
        for k in range(1, m + 1):
            v = torch.cat([u[:, :k], u.new_zeros(len(u), m - k)], dim=1)
            diff = (xb - model.decode(v)).reshape(len(xb), -1)
            sums[k - 1] += diff.double().square().sum()
    model.train(was_training)
    return (sums / len(x)).tolist()


def choose_dimension(
    errors: list[float], total_variance: float, criterion: str = "threshold", **parameters: float
) -> int:
    """Applies a criterion (module docstring) to an error curve; returns the chosen k.

    Args:
        errors: ``E_k`` for k = 1 .. max_dim.
        total_variance: ``E_0``.
        criterion: ``"threshold"`` or ``"ratio"``.
        **parameters: the criterion's parameters (``threshold`` for ``"threshold"``).

    Returns:
        k in ``1..max_dim`` (``max_dim`` when no k meets the threshold).
    """
    params = _criterion_parameters(criterion, parameters)
    e = np.maximum(np.asarray(errors, dtype=np.float64), 1e-300)
    if criterion == "threshold":
        below = np.nonzero(e <= params["threshold"] * total_variance)[0]
        return int(below[0]) + 1 if len(below) else len(e)
    curve = np.concatenate([[max(float(total_variance), 1e-300)], e])
    drops = np.log(curve[:-1]) - np.log(curve[1:])
    return int(np.argmax(drops)) + 1


def _criterion_parameters(criterion: str, parameters: dict[str, float]) -> dict[str, float]:
    if criterion not in CRITERIA:
        raise InvalidArgumentError(
            f"unknown criterion {criterion!r}; expected one of {', '.join(CRITERIA)}"
        )
    unknown = sorted(set(parameters) - set(CRITERIA[criterion]))
    if unknown:
        raise InvalidArgumentError(
            f"criterion {criterion!r} takes no parameter(s) {', '.join(unknown)}"
        )
    params = {**CRITERIA[criterion], **{k: float(v) for k, v in parameters.items()}}
    if "threshold" in params and not 0.0 < params["threshold"] < 1.0:
        raise InvalidArgumentError(f"expected 0 < threshold < 1, got {params['threshold']}")
    return params


def _epochs_for_steps(n: int, options: dict[str, Any]) -> int:
    """Epochs for about :data:`DEFAULT_STEPS` steps on ``n`` points (less fit's validation)."""
    size = options["batch_size"]
    if not isinstance(size, int | np.integer) or size < 1:
        raise InvalidArgumentError(f"expected an integer batch_size >= 1, got {size!r}")
    split = float(options.get("validation_split", VALIDATION_SPLIT))
    batches = max(1, math.ceil(n * (1.0 - split) / int(size)))
    return max(1, math.ceil(DEFAULT_STEPS / batches))


def truncate(model: Model, n: int, **architecture: Any) -> Model:
    """The M-flow of dimension ``n`` whose manifold is the first n coordinates of ``model``.

    The outer flow is copied (``g_n(u) = f^-1(u, 0)``); the inner flow h is new (untrained):
    train it next with ``mflows.fit(m, x, schedule=density_schedule(epochs))``.

    Args:
        model: an M-flow from :func:`estimate_dimension`.
        n: the new latent dimension, ``1 <= n <= model.latent_dim``.
        **architecture: overrides of the saved architecture (e.g. ``inner_layers``).
    """
    config = getattr(model, "config", None)
    if getattr(model, "kind", None) != "mflow" or not config:
        raise InvalidArgumentError("truncate needs an M-flow built by make_model")
    if not 1 <= int(n) <= model.latent_dim:
        raise InvalidArgumentError(f"expected 1 <= n <= {model.latent_dim}, got n={n}")
    arch = {**config["architecture"], **architecture}
    new = make_model("mflow", config["data_dim"], int(n), config["context_dim"], **arch).to(
        dtype=model.dtype, device=model.device
    )
    new.outer.load_state_dict(model.outer.state_dict())
    return new


def estimate_dimension(
    x: Any,
    max_dim: int,
    *,
    epochs: int | None = None,
    batch_size: int = 100,
    lr: float = 1e-3,
    holdout: float = 0.2,
    decay: float = 0.8,
    criterion: str = "threshold",
    criterion_options: dict[str, float] | None = None,
    seed: int = 0,
    progress: bool = False,
    device: str | torch.device | None = None,
    fit_options: dict[str, Any] | None = None,
    **architecture: Any,
) -> DimensionEstimate:
    """Estimates the manifold dimension of ``x`` from one nested-dropout M-flow.

    Args:
        x: data ``(N, d)`` (vectors; images work too, with ``data_dim`` their shape).
        max_dim: upper bound on the dimension, ``1 <= max_dim <= d`` (below d on noise-free
            data with ``criterion="ratio"``).
        epochs: training epochs of the one run; default: enough epochs for
            :data:`DEFAULT_STEPS` optimiser steps (at least 1). The number of steps matters
            more than the data size: too few steps leave the higher coordinates under-trained
            and move the elbow up (docs/guide.md, "Choosing the manifold dimension").
        batch_size: batch size.
        lr: learning rate.
        holdout: fraction of ``x`` kept out of training to measure the error curve.
        decay: truncation distribution ``P(k) ~ decay^(k-1)``: 1 uniform, below 1 favours
            small k, above 1 large k; 0 decodes every sample at every k (``max_dim`` decodes
            per step). 0.8 recovered the 2-, 3- and 5-spheres and the power surface
            (docs/benchmarks.md).
        criterion: ``"threshold"`` or ``"ratio"`` (module docstring).
        criterion_options: its parameters (default :data:`CRITERIA`).
        seed: seed of the split, the initialisation, the data order and the truncations.
        progress: show a progress bar.
        device: training device.
        fit_options: further keyword arguments of :func:`mflows.fit`.
        **architecture: architecture options of :func:`mflows.make_model` (kind ``mflow``;
            defaults here: ``linear="lu"``, measured to order the coordinates far better than
            permutations, and ``tail_bound`` = 1.2 x the 99.9 % quantile of ``|x|``, at least
            3, so that the splines cover the data).

    Returns:
        A :class:`DimensionEstimate` (chosen n, error curve, criterion, trained model).

    Raises:
        InvalidArgumentError: bad ``max_dim``, ``holdout`` or criterion.
    """
    tic = time.perf_counter()
    params = _criterion_parameters(criterion, dict(criterion_options or {}))
    data = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    if data.ndim < 2:
        raise InvalidArgumentError(f"expected x of shape (N, d), got {tuple(data.shape)}")
    data = data.to(torch.get_default_dtype()) if not data.is_floating_point() else data
    shape = tuple(int(s) for s in data.shape[1:])
    size = math.prod(shape)
    if not isinstance(max_dim, int | np.integer) or not 1 <= int(max_dim) <= size:
        raise InvalidArgumentError(f"expected an integer 1 <= max_dim <= {size}, got {max_dim!r}")
    if not (0.0 <= float(decay) < math.inf):
        raise InvalidArgumentError(f"expected a finite decay >= 0, got {decay}")
    if not 0.0 < float(holdout) < 1.0:
        raise InvalidArgumentError(f"expected 0 < holdout < 1, got {holdout}")
    n_hold = round(len(data) * float(holdout))
    if n_hold < 1 or len(data) - n_hold < 4:
        raise InvalidArgumentError(f"too few samples ({len(data)}) for holdout={holdout}")
    perm = torch.from_numpy(np.random.default_rng([int(seed), 16]).permutation(len(data)))
    held, train = data[perm[:n_hold]], data[perm[n_hold:]]

    architecture.setdefault("seed", int(seed))
    architecture.setdefault("linear", "lu")
    # splines are linear outside [-B, B]: cover the data (the power surface reaches |x| ~ 7)
    reach = float(torch.quantile(train.reshape(-1).abs().double(), 0.999))
    architecture.setdefault("tail_bound", max(3.0, math.ceil(1.2 * reach)))
    data_dim: int | tuple[int, ...] = shape if len(shape) > 1 else shape[0]
    model = make_model("mflow", data_dim, int(max_dim), **architecture)
    model.nested_decay = float(decay)  # read by the nested_mse loss
    # No PCA start: it makes the first k coordinates a linear fit from step one, and the elbow
    # then favours the flat k-plane over a curved manifold of lower dimension (measured on the
    # 2-sphere in R^9, 10 epochs, seeds 0-2: chosen n = 2, 3, 2 without it; 3, 3, 3 with it).
    options = {
        "batch_size": batch_size, "lr": lr, "seed": seed, "progress": progress, "data_init": False
    }  # fmt: skip
    options.update(fit_options or {})
    if epochs is None:
        epochs = _epochs_for_steps(len(train), options)
    history = fit(
        model, train, schedule=nested_schedule(epochs, decay=decay), device=device, **options
    )
    errors = reconstruction_curve(model, held)
    flat = held.reshape(len(held), -1).double()
    total = float((flat - flat.mean(0)).square().sum(-1).mean())
    n = choose_dimension(errors, total, criterion, **params)
    return DimensionEstimate(
        dimension=n,
        errors=errors,
        total_variance=total,
        criterion=criterion,
        parameters=params,
        model=model,
        history=history,
        wall_time=time.perf_counter() - tic,
        extra={"epochs": int(epochs), "decay": float(decay), "n_samples": len(data)},
    )
