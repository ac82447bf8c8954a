"""Markov chain Monte Carlo samplers for low-dimensional posteriors over theta.

Both samplers take ``log_prob_fn``, a function of a ``(p,)`` float64 NumPy array returning a
float (a Python float, NumPy scalar or one-element tensor). ``-inf`` marks points outside the
prior support and is never accepted; NaN is treated as ``-inf``.

References:
    Slice sampling. R. M. Neal, Annals of Statistics 31(3), 2003.

    Equation of state calculations by fast computing machines.
    N. Metropolis, A. Rosenbluth, M. Rosenbluth, A. Teller and E. Teller, 1953.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from mflows.evaluation.metrics import to_numpy

__all__ = ["metropolis", "slice_sample"]

LogProbFn = Callable[[np.ndarray], Any]


def _evaluate(fn: LogProbFn, x: np.ndarray) -> float:
    value = float(to_numpy(fn(x.copy())).reshape(-1)[0])
    return -np.inf if np.isnan(value) else value


def _start(fn: LogProbFn, x0: Any) -> tuple[np.ndarray, float]:
    x = to_numpy(x0).reshape(-1).copy()
    logp = _evaluate(fn, x)
    if not np.isfinite(logp):
        raise ValueError(f"log_prob_fn(x0) must be finite to start the chain, got {logp}")
    return x, logp


def _progress(total: int, show: bool, desc: str):
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc)


def slice_sample(
    log_prob_fn: LogProbFn,
    x0: Any,
    num_samples: int,
    burn_in: int = 100,
    width: float | Any = 1.0,
    max_steps_out: int = 50,
    seed: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    r"""Coordinate-wise slice sampler with stepping out and shrinkage (Neal 2003).

    For each coordinate in turn: draw the slice level
    :math:`\log y = \log p(x) - E`, :math:`E \sim \mathrm{Exp}(1)`; place an interval of the
    given ``width`` at random around :math:`x_j`; step it out by ``width`` while its ends lie
    above the slice (at most ``max_steps_out`` steps per side); then draw uniformly from the
    interval, shrinking it towards :math:`x_j` after each rejected point. The chain is exactly
    invariant for p for any width; the width only affects efficiency.

    Args:
        log_prob_fn: Unnormalised log density of a ``(p,)`` array.
        x0: Starting point, shape ``(p,)``, with a finite log density.
        num_samples: Number of samples returned after burn-in.
        burn_in: Number of sweeps discarded first.
        width: Initial interval width, a float or one per coordinate ``(p,)``.
        max_steps_out: Maximum stepping-out steps per side.
        seed: Seed of the random generator.
        progress: Show a tqdm progress bar.

    Returns:
        Samples, shape ``(num_samples, p)``, float64.
    """
    rng = np.random.default_rng(seed)
    x, logp = _start(log_prob_fn, x0)
    p = x.size
    widths = np.broadcast_to(to_numpy(width), (p,)).copy()
    if np.any(widths <= 0):
        raise ValueError(f"expected positive widths, got {widths}")
    samples = np.empty((num_samples, p))
    bar = _progress(burn_in + num_samples, progress, "slice sampling")
    for it in range(burn_in + num_samples):
        for j in rng.permutation(p):
            level = logp - rng.exponential()
            w = widths[j]
            lower = x[j] - w * rng.uniform()
            upper = lower + w
            probe = x.copy()

            def logp_at(value: float, probe: np.ndarray = probe, j: int = j) -> float:
                probe[j] = value
                return _evaluate(log_prob_fn, probe)

            steps = 0
            while steps < max_steps_out and logp_at(lower) > level:
                lower -= w
                steps += 1
            steps = 0
            while steps < max_steps_out and logp_at(upper) > level:
                upper += w
                steps += 1
            while True:
                candidate = rng.uniform(lower, upper)
                logp_candidate = logp_at(candidate)
                if logp_candidate > level:
                    x[j], logp = candidate, logp_candidate
                    break
                if candidate < x[j]:
                    lower = candidate
                else:
                    upper = candidate
                if upper - lower < 1e-12 * max(1.0, abs(x[j])):
                    break  # numerically degenerate slice: keep the current point
        if it >= burn_in:
            samples[it - burn_in] = x
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return samples


def metropolis(
    log_prob_fn: LogProbFn,
    x0: Any,
    num_samples: int,
    burn_in: int = 100,
    step: float | Any = 0.15,
    seed: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    r"""Random-walk Metropolis sampler with a Gaussian proposal.

    Proposal :math:`x' = x + \sigma \odot \epsilon`, :math:`\epsilon \sim N(0, I)`, accepted with
    probability :math:`\min(1, p(x') / p(x))`. The paper's posterior scoring uses
    ``step = 0.15``, 100 burn-in steps and 5000 samples started at theta*.

    Args:
        log_prob_fn: Unnormalised log density of a ``(p,)`` array.
        x0: Starting point, shape ``(p,)``, with a finite log density.
        num_samples: Number of samples returned after burn-in (one per step, not thinned).
        burn_in: Number of steps discarded first.
        step: Proposal standard deviation, a float or one per coordinate ``(p,)``.
        seed: Seed of the random generator.
        progress: Show a tqdm progress bar.

    Returns:
        Samples, shape ``(num_samples, p)``, float64.
    """
    rng = np.random.default_rng(seed)
    x, logp = _start(log_prob_fn, x0)
    p = x.size
    sigma = np.broadcast_to(to_numpy(step), (p,)).copy()
    samples = np.empty((num_samples, p))
    bar = _progress(burn_in + num_samples, progress, "Metropolis")
    for it in range(burn_in + num_samples):
        proposal = x + sigma * rng.standard_normal(p)
        logp_proposal = _evaluate(log_prob_fn, proposal)
        if np.log(rng.uniform()) < logp_proposal - logp:
            x, logp = proposal, logp_proposal
        if it >= burn_in:
            samples[it - burn_in] = x
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return samples
