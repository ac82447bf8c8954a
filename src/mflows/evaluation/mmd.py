r"""Maximum mean discrepancy with a Gaussian kernel.

.. math::
    k(a, b) = \exp\left(-\frac{|a - b|^2}{2 h^2}\right), \qquad
    \mathrm{MMD}^2 = E[k(x, x')] + E[k(y, y')] - 2 E[k(x, y)]

Two estimators from samples :math:`x_1..x_N` and :math:`y_1..y_M`:

* unbiased (U-statistic, the default): the within-sample means leave out i = j,

  .. math::
      \frac{1}{N(N-1)} \sum_{i \ne j} k(x_i, x_j) + \frac{1}{M(M-1)} \sum_{i \ne j} k(y_i, y_j)
      - \frac{2}{NM} \sum_{i, j} k(x_i, y_j);

  its expectation is the true MMD^2, so it can be slightly negative when the two distributions
  agree. This is the posterior metric of the paper's evaluation (docs/theory.md, "Evaluation
  protocol").
* biased (V-statistic, ``unbiased=False``): all pairs including i = j, clipped at 0; it is larger
  by about :math:`(1 - E k(x, x'))/N + (1 - E k(y, y'))/M`.

Everything is computed in float64, in row chunks so that memory stays bounded.

References:
    A Kernel Two-Sample Test.
    A. Gretton, K. Borgwardt, M. Rasch, B. Schölkopf and A. Smola, JMLR 2012.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from mflows.errors import InvalidArgumentError
from mflows.evaluation.metrics import to_numpy

__all__ = ["median_distance", "mmd"]

#: rows per block of pairwise distances (a block holds _CHUNK x N float64 values).
_CHUNK = 1024


def _as_tensor(x: Any, name: str) -> Tensor:
    t = torch.as_tensor(to_numpy(x), dtype=torch.float64)
    t = t.reshape(t.shape[0], -1) if t.dim() != 1 else t[:, None]
    if not bool(torch.isfinite(t).all()):
        raise InvalidArgumentError(f"{name} contains non-finite values (NaN or inf)")
    return t


def _squared_distances(a: Tensor, b: Tensor) -> Iterator[tuple[int, Tensor]]:
    """Yields ``(start, |a[start:stop, None] - b[None]|^2)`` blocks (exact, no Gram trick)."""
    for start in range(0, a.shape[0], _CHUNK):
        block = torch.cdist(
            a[start : start + _CHUNK], b, compute_mode="donot_use_mm_for_euclid_dist"
        )
        yield start, block.square()


def _pair_values(t: Tensor) -> Iterator[np.ndarray]:
    """Squared distances of all pairs i < j of ``t``, in row blocks (float64 arrays)."""
    num = t.shape[0]
    cols = torch.arange(num)[None, :]
    for start, block in _squared_distances(t, t):
        rows = torch.arange(start, start + block.shape[0])[:, None]
        yield block[cols > rows].numpy()


def _select_ranks(t: Tensor, ranks: tuple[int, ...], num_bins: int = 1 << 16) -> list[float]:
    """Exact order statistics (0-based ``ranks``) of the pairwise squared distances of ``t``.

    Memory stays O(_CHUNK x N) whatever N: a first pass finds the range, a second counts the
    values in ``num_bins`` equal bins, a third keeps only the values of the bins holding the
    wanted ranks, which are then sorted.
    """
    lo, hi = math.inf, -math.inf
    for values in _pair_values(t):
        if values.size:
            lo, hi = min(lo, float(values.min())), max(hi, float(values.max()))
    if not hi > lo:  # every pair at the same distance
        return [lo for _ in ranks]
    width = (hi - lo) / num_bins

    def bins(values: np.ndarray) -> np.ndarray:
        return np.minimum(((values - lo) / width).astype(np.int64), num_bins - 1)

    counts = np.zeros(num_bins, dtype=np.int64)
    for values in _pair_values(t):
        counts += np.bincount(bins(values), minlength=num_bins)
    cumulative = np.cumsum(counts)
    wanted = sorted({int(np.searchsorted(cumulative, r, side="right")) for r in ranks})
    kept = [values[np.isin(bins(values), wanted)] for values in _pair_values(t)]
    candidates = np.sort(np.concatenate(kept))
    # consecutive ranks lie in the same bin or in two bins with only empty bins between them,
    # so the sorted candidates are the order statistics from rank ``first`` on
    first = int(cumulative[wanted[0] - 1]) if wanted[0] > 0 else 0
    return [float(candidates[r - first]) for r in ranks]


def median_distance(x: Any, max_points: int | None = None, seed: int = 0) -> float:
    """Median Euclidean distance over all pairs i < j of ``x`` (the median heuristic).

    All N(N-1)/2 pairs are used (exactly, in bounded memory: a few seconds on one CPU thread for
    the 12.5M pairs of 5000 posterior samples), so the bandwidth does not depend on a random subset.

    Args:
        x: Points, shape ``(N, p)`` (or ``(N,)`` for scalars), N >= 2.
        max_points: Optionally use a random subset of this many points (fixed ``seed``);
            ``None`` (default) uses every pair.
        seed: Seed of the subset.
    """
    t = _as_tensor(x, "x")
    num = t.shape[0]
    if num < 2:
        raise InvalidArgumentError(f"median_distance needs at least 2 points, got {num}")
    if max_points is not None and num > max_points:
        if max_points < 2:
            raise InvalidArgumentError(f"expected max_points >= 2, got {max_points}")
        idx = np.random.default_rng(seed).choice(num, max_points, replace=False)
        t, num = t[torch.as_tensor(idx)], int(max_points)
    pairs = num * (num - 1) // 2
    # the median of the squared distances, then the square root; an even count averages the
    # two middle distances, as np.median of the distances does
    ranks = (pairs // 2,) if pairs % 2 else (pairs // 2 - 1, pairs // 2)
    middle = _select_ranks(t, ranks)
    return float(np.mean(np.sqrt(middle)))


def _kernel_sum(a: Tensor, b: Tensor, gamma: float, exclude_diagonal: bool = False) -> float:
    """sum_ij exp(-gamma |a_i - b_j|^2), leaving out i = j if ``exclude_diagonal`` (a is b)."""
    total = 0.0
    for start, block in _squared_distances(a, b):
        kernel = torch.exp(-gamma * block)
        if exclude_diagonal:
            rows = torch.arange(block.shape[0])
            kernel[rows, rows + start] = 0.0
        total += float(kernel.sum())
    return total


def mmd(
    x: Any,
    y: Any,
    bandwidth: float | Literal["x", "y"] | None = None,
    *,
    unbiased: bool = True,
    squared: bool = True,
) -> float:
    r"""Maximum mean discrepancy between two samples with a Gaussian kernel (module docstring).

    Args:
        x: First sample, shape ``(N, p)`` (or ``(N,)``).
        y: Second sample, shape ``(M, p)``.
        bandwidth: Kernel width h: a float, ``None`` for the median pairwise distance of the
            pooled sample, or ``"x"`` / ``"y"`` for the median distance within that sample (the
            paper uses the true posterior samples). Medians use all pairs
            (:func:`median_distance`).
        unbiased: The unbiased U-statistic (default; needs N, M >= 2, can be slightly negative)
            or, with False, the biased V-statistic clipped at 0.
        squared: Return MMD^2 (default) or sqrt(max(MMD^2, 0)).

    Returns:
        The (squared) MMD as a float.
    """
    a, b = _as_tensor(x, "x"), _as_tensor(y, "y")
    if a.shape[0] < 1 or b.shape[0] < 1:
        raise InvalidArgumentError(f"expected non-empty samples, got {a.shape[0]} and {b.shape[0]}")
    if a.shape[1] != b.shape[1]:
        raise InvalidArgumentError(f"expected y.shape[-1] == {a.shape[1]}, got {b.shape[1]}")
    if bandwidth is None:
        h = median_distance(torch.cat([a, b]))
    elif isinstance(bandwidth, str):
        if bandwidth not in ("x", "y"):
            raise InvalidArgumentError(
                f"expected bandwidth a float, None, 'x' or 'y', got {bandwidth!r}"
            )
        h = median_distance(a if bandwidth == "x" else b)
    else:
        h = float(bandwidth)
    if not (h > 0 and np.isfinite(h)):
        raise InvalidArgumentError(
            f"expected a positive finite bandwidth, got {h} (a median bandwidth is 0 when more "
            "than half of the pairs of points coincide; pass a bandwidth)"
        )
    gamma = 0.5 / h**2
    n, m = a.shape[0], b.shape[0]
    if unbiased:
        if n < 2 or m < 2:
            raise InvalidArgumentError(
                f"the unbiased MMD needs at least 2 samples in each set, got {n} and {m}"
            )
        kxx = _kernel_sum(a, a, gamma, exclude_diagonal=True) / (n * (n - 1))
        kyy = _kernel_sum(b, b, gamma, exclude_diagonal=True) / (m * (m - 1))
    else:
        kxx = _kernel_sum(a, a, gamma) / n**2
        kyy = _kernel_sum(b, b, gamma) / m**2
    kxy = _kernel_sum(a, b, gamma) / (n * m)
    value = kxx + kyy - 2.0 * kxy
    if not unbiased:
        value = max(value, 0.0)
    return value if squared else float(np.sqrt(max(value, 0.0)))
