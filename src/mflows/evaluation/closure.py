r"""Closure test for the ``lhc40d`` particle-physics data (the sample-quality metric).

The 40 observables of an event are redundant: the transverse momenta, pseudorapidities, energies
and pair sums are functions of the 4-momenta. A generated event lies on the physical manifold
exactly when every relation holds. The closure score of an event undoes the standardisation,
computes the weighted absolute residual of each relation, clips it to [0, 10] and averages over
the relations (26 for lhc40d); the score of a sample set is the mean over events.

Residual kinds (indices into the 40 features, from ``closure_tests``):

* ``pt``:       :math:`|x_t - \sqrt{p_x^2 + p_y^2}|`
* ``eta``:      :math:`|x_t - \eta|`, :math:`\eta = -\frac{1}{2}\log\frac{1-\cos\vartheta}
  {1+\cos\vartheta} = \operatorname{asinh}(p_z / p_T)`, :math:`\cos\vartheta = p_z / |p|`
* ``on_shell``: :math:`|x_t - \sqrt{|p|^2 + m^2}|` with m = x[mass], or 0 without a mass entry
* ``sum``:      :math:`|x_t - x_a - x_b|`
* ``delta``:    :math:`|\,|x_t| - |x_a - x_b|\,|`

References:
    Flows for simultaneous manifold learning and density estimation.
    J. Brehmer and K. Cranmer, NeurIPS 2020, arXiv:2003.13913.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mflows.evaluation.metrics import to_numpy

__all__ = ["closure_residuals", "closure_score", "closure_scores", "dataset_closure_score"]

_KINDS = ("pt", "eta", "on_shell", "sum", "delta")


def _residual(x: np.ndarray, test: Mapping[str, Any]) -> np.ndarray:
    kind = test["kind"]
    target = x[:, test["target"]]
    if kind == "pt":
        return np.abs(target - np.hypot(x[:, test["px"]], x[:, test["py"]]))
    if kind == "eta":
        pt = np.hypot(x[:, test["px"]], x[:, test["py"]])
        with np.errstate(divide="ignore", invalid="ignore"):
            eta = np.arcsinh(x[:, test["pz"]] / pt)
        return np.abs(target - eta)
    if kind == "on_shell":
        p2 = x[:, test["px"]] ** 2 + x[:, test["py"]] ** 2 + x[:, test["pz"]] ** 2
        mass = x[:, test["mass"]] if test.get("mass") is not None else 0.0
        return np.abs(target - np.sqrt(p2 + mass**2))
    if kind == "sum":
        return np.abs(target - x[:, test["a"]] - x[:, test["b"]])
    if kind == "delta":
        return np.abs(np.abs(target) - np.abs(x[:, test["a"]] - x[:, test["b"]]))
    raise ValueError(f"unknown closure test kind {kind!r}; expected one of {_KINDS}")


def closure_residuals(
    x: Any,
    means: Sequence[float] | np.ndarray,
    stds: Sequence[float] | np.ndarray,
    features: Sequence[str],
    closure_tests: Sequence[Mapping[str, Any]],
) -> np.ndarray:
    """Weighted residuals clipped to [0, 10], shape ``(N, len(closure_tests))``.

    Args:
        x: Standardised events, shape ``(N, F)`` with F = ``len(features)`` (40 for lhc40d).
        means: Per-feature means of the standardisation, shape ``(F,)``.
        stds: Per-feature standard deviations, shape ``(F,)``.
        features: Feature names (used to check the width of ``x``).
        closure_tests: Dicts with ``kind``, ``target``, ``weight`` and the kind's indices.

    Non-finite residuals (e.g. eta of a zero-momentum particle) count as the maximum, 10.
    """
    z = to_numpy(x)
    num_features = len(features)
    if z.ndim != 2 or z.shape[1] != num_features:
        raise ValueError(f"expected x.shape == (N, {num_features}), got {tuple(z.shape)}")
    raw = z * to_numpy(stds).reshape(1, -1) + to_numpy(means).reshape(1, -1)
    columns = []
    for test in closure_tests:
        with np.errstate(invalid="ignore", over="ignore"):
            r = float(test["weight"]) * _residual(raw, test)
        r = np.where(np.isfinite(r), r, 10.0)
        columns.append(np.clip(r, 0.0, 10.0))
    return np.stack(columns, axis=1)


def closure_scores(
    x: Any,
    means: Sequence[float] | np.ndarray,
    stds: Sequence[float] | np.ndarray,
    features: Sequence[str],
    closure_tests: Sequence[Mapping[str, Any]],
) -> np.ndarray:
    """Per-event closure score: the mean clipped weighted residual, shape ``(N,)``."""
    return closure_residuals(x, means, stds, features, closure_tests).mean(axis=1)


def closure_score(
    x: Any,
    means: Sequence[float] | np.ndarray,
    stds: Sequence[float] | np.ndarray,
    features: Sequence[str],
    closure_tests: Sequence[Mapping[str, Any]],
) -> float:
    """Closure score of a set of events: the mean of :func:`closure_scores` (0 = exact)."""
    return float(closure_scores(x, means, stds, features, closure_tests).mean())


def dataset_closure_score(x: Any, dataset: Any) -> float:
    """:func:`closure_score` with the constants of an lhc40d ``Dataset``.

    Uses the data set's ``means``, ``stds``, ``features`` and ``closure_tests`` attributes.
    """
    return closure_score(x, dataset.means, dataset.stds, dataset.features, dataset.closure_tests)
