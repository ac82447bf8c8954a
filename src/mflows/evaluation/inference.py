r"""Posterior inference over the parameters theta and its scores.

The protocol is described in docs/theory.md, "Evaluation protocol".

Observed data :math:`x_1..x_N` (20 i.i.d. points at theta* in the paper) give the unnormalised
log posterior

.. math:: \log p(\theta | x) = \sum_i \log p(x_i | \theta) + \log \pi(\theta) + \mathrm{const},

which is sampled by MCMC (:mod:`mflows.evaluation.mcmc`) once with the model likelihood and once
with the simulator's true likelihood; the two sample sets are compared by MMD, and the model's
posterior density at theta* is estimated by a Gaussian KDE.

For manifold models whose outer flow f does not see theta (M-flow, M_e-flow, FOM, and PIE with an
unconditional manifold), :math:`\log p(x | \theta) = \log p_u(u | \theta) + c(x)` with
:math:`u = g^{-1}(x)` and :math:`c(x)` the theta-independent
:math:`-\frac{1}{2}\log\det J_g^T J_g` (or the off-manifold and :math:`\log|\det J_f^{-1}|` terms
of PIE). So u is computed once and each MCMC step only runs the inner flow h; likelihood
*differences* between theta values are exact.

References:
    Flows for simultaneous manifold learning and density estimation.
    J. Brehmer and K. Cranmer, NeurIPS 2020, arXiv:2003.13913.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Literal

import numpy as np
import torch
from scipy.special import logsumexp

from mflows import registry
from mflows.evaluation.mcmc import metropolis, slice_sample
from mflows.evaluation.metrics import model_dtype_device, to_numpy
from mflows.evaluation.mmd import mmd

__all__ = [
    "log_posterior_at",
    "model_log_likelihood_fn",
    "model_posterior_samples",
    "posterior_mmd",
    "sample_posterior",
    "torch_threads",
    "true_log_likelihood_fn",
    "true_posterior_samples",
    "uses_latent_shortcut",
]

LogFn = Callable[[np.ndarray], float]


@contextlib.contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Temporarily sets torch's intra-op thread count (``None``: leave it alone)."""
    if num_threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _outer_is_conditional(model: Any) -> bool:
    flag = getattr(model, "conditional_outer", None)
    if flag is None:
        flag = dict(getattr(model, "config", {}) or {}).get("conditional_outer", False)
    return bool(flag)


def uses_latent_shortcut(model: Any) -> bool:
    """Whether theta enters only the inner flow h, so that u = g^-1(x) can be cached."""
    caps = getattr(model, "capabilities", None)  # mflows.registry.Capabilities
    kind = getattr(model, "kind", None)
    if caps is None and kind in registry.KINDS:  # a stand-in that only names its kind
        caps = registry.capabilities(kind)
    latent = bool(caps is not None and caps.latent_likelihood)
    return latent and not _outer_is_conditional(model)


def model_log_likelihood_fn(
    model: Any,
    x_obs: Any,
    prior_log_prob: Callable[[np.ndarray], Any] | None = None,
    *,
    shortcut: bool | None = None,
) -> LogFn:
    r"""Unnormalised model log posterior, :math:`\sum_i \log p(x_i|\theta) + \log\pi(\theta)`.

    With the shortcut (default where valid, see :func:`uses_latent_shortcut`),
    :math:`u_i = g^{-1}(x_i)` is computed once and the function returns
    :math:`\sum_i \log p_u(u_i | \theta) + \log \pi(\theta)`, which differs from the full
    log-likelihood by a constant that does not depend on theta. Otherwise it calls the full
    ``model.log_prob(x, context=theta)``.

    Args:
        model: A conditional mflows model (``context_dim = p``).
        x_obs: Observed data, shape ``(N, *data_dim)``.
        prior_log_prob: Log prior of a ``(p,)`` array (``-inf`` outside the support), or
            ``None`` for a flat prior. The prior is evaluated first and the model is skipped
            where it is ``-inf``.
        shortcut: Force (``True``) or forbid (``False``) the cached-latent shortcut; ``None``
            chooses automatically. Forcing it on a model with a conditional outer flow raises.

    Returns:
        A function of theta, shape ``(p,)``, returning a float.
    """
    if shortcut is None:
        shortcut = uses_latent_shortcut(model)
    elif shortcut and not uses_latent_shortcut(model):
        raise ValueError(
            f"the latent shortcut needs a manifold model whose outer flow ignores theta; "
            f"got kind={getattr(model, 'kind', None)!r}, "
            f"conditional_outer={_outer_is_conditional(model)}"
        )
    dtype, device = model_dtype_device(model)
    x = torch.as_tensor(to_numpy(x_obs), dtype=dtype, device=device)
    num = x.shape[0]
    if shortcut:
        with torch.no_grad():
            # the encoder of these models never uses the context; pass a dummy one anyway so
            # models that validate the context do not complain
            dummy = torch.zeros(num, model.context_dim, dtype=dtype, device=device)
            data = model.encode(x, context=dummy)
        evaluate = model.latent_log_prob
    else:
        data = x
        evaluate = model.log_prob

    def log_posterior(theta: np.ndarray) -> float:
        log_prior = 0.0 if prior_log_prob is None else float(to_numpy(prior_log_prob(theta)).sum())
        if not np.isfinite(log_prior):
            return -np.inf
        context = torch.as_tensor(to_numpy(theta), dtype=dtype, device=device)
        context = context.reshape(1, -1).expand(num, -1)
        with torch.no_grad():
            value = float(evaluate(data, context=context).sum())
        return -np.inf if np.isnan(value) else value + log_prior

    return log_posterior


def true_log_likelihood_fn(dataset: Any, x_obs: Any, *, include_prior: bool = True) -> LogFn:
    r"""True log posterior :math:`\sum_i \log p^*(x_i|\theta) + \log\pi(\theta)` of a simulator.

    Uses ``dataset.log_density(x, theta)`` with theta broadcast to ``(N, p)`` and
    ``dataset.log_prior(theta)`` with theta of shape ``(1, p)``.
    """
    x = to_numpy(x_obs)

    def log_posterior(theta: np.ndarray) -> float:
        theta = to_numpy(theta).reshape(1, -1)
        log_prior = float(to_numpy(dataset.log_prior(theta)).sum()) if include_prior else 0.0
        if not np.isfinite(log_prior):
            return -np.inf
        thetas = np.broadcast_to(theta, (x.shape[0], theta.shape[1])).copy()
        value = float(to_numpy(dataset.log_density(x, thetas)).sum())
        return -np.inf if np.isnan(value) else value + log_prior

    return log_posterior


def sample_posterior(
    log_prob_fn: LogFn,
    theta0: Any,
    num_samples: int = 5000,
    burn_in: int = 100,
    sampler: Literal["metropolis", "slice"] = "metropolis",
    step: float = 0.15,
    seed: int | None = 0,
    progress: bool = False,
) -> np.ndarray:
    """Runs the chosen MCMC sampler; ``step`` is the Metropolis step or the slice width.

    Returns:
        Samples, shape ``(num_samples, p)``.
    """
    if sampler == "metropolis":
        return metropolis(log_prob_fn, theta0, num_samples, burn_in, step, seed, progress)
    if sampler == "slice":
        return slice_sample(
            log_prob_fn, theta0, num_samples, burn_in, width=step, seed=seed, progress=progress
        )
    raise ValueError(f"expected sampler in ('metropolis', 'slice'), got {sampler!r}")


def _default_theta0(dataset: Any, theta0: Any | None) -> np.ndarray:
    if theta0 is not None:
        return to_numpy(theta0).reshape(-1)
    default = getattr(dataset, "default_theta", None)
    if default is None:
        raise ValueError("pass theta0: the data set has no default_theta")
    return to_numpy(default).reshape(-1)


def true_posterior_samples(
    dataset: Any,
    x_obs: Any,
    num_samples: int = 5000,
    burn_in: int = 100,
    theta0: Any | None = None,
    sampler: Literal["metropolis", "slice"] = "metropolis",
    step: float = 0.15,
    seed: int | None = 0,
    progress: bool = False,
) -> np.ndarray:
    """MCMC samples from the true posterior of a simulated data set.

    Args:
        dataset: Data set with ``log_density(x, theta)``, ``log_prior(theta)`` and
            ``default_theta``.
        x_obs: Observed data, shape ``(N, d)``.
        num_samples: Samples after burn-in (5000 in the paper).
        burn_in: Discarded steps (100 in the paper).
        theta0: Starting point (``dataset.default_theta``, i.e. theta*, by default).
        sampler: ``"metropolis"`` (the paper's scoring, step 0.15) or ``"slice"``.
        step: Metropolis step size or slice width.
        seed: Seed of the chain.
        progress: Show a progress bar.

    Returns:
        Samples, shape ``(num_samples, p)``.
    """
    fn = true_log_likelihood_fn(dataset, x_obs)
    theta0 = _default_theta0(dataset, theta0)
    return sample_posterior(fn, theta0, num_samples, burn_in, sampler, step, seed, progress)


def model_posterior_samples(
    model: Any,
    x_obs: Any,
    prior_log_prob: Callable[[np.ndarray], Any] | None,
    theta0: Any,
    num_samples: int = 5000,
    burn_in: int = 100,
    sampler: Literal["metropolis", "slice"] = "metropolis",
    step: float = 0.15,
    seed: int | None = 0,
    progress: bool = False,
    shortcut: bool | None = None,
    num_threads: int | None = 1,
) -> np.ndarray:
    """MCMC samples from a model's posterior (see :func:`model_log_likelihood_fn`).

    Each MCMC step evaluates the model on the few observed points only, so thread hand-offs
    dominate on the CPU: sampling runs with ``num_threads`` torch threads (1 by default; the
    previous setting is restored afterwards, ``None`` leaves it alone). On a loaded 2-core
    machine this made a step of a small power-data M-flow about 15 times faster.

    Returns:
        Samples, shape ``(num_samples, p)``.
    """
    fn = model_log_likelihood_fn(model, x_obs, prior_log_prob, shortcut=shortcut)
    theta0 = to_numpy(theta0).reshape(-1)
    with torch_threads(num_threads):
        return sample_posterior(fn, theta0, num_samples, burn_in, sampler, step, seed, progress)


def posterior_mmd(
    model_samples: Any,
    true_samples: Any,
    bandwidth: float | None = None,
    *,
    unbiased: bool = True,
    squared: bool = True,
) -> float:
    """MMD between model and true posterior samples, as scored in the paper.

    The paper's metric: the unbiased (U-statistic) squared MMD with a Gaussian kernel whose
    bandwidth is the median distance over all pairs of the *true* posterior samples
    (docs/theory.md, "Evaluation protocol"; :func:`mflows.evaluation.mmd.mmd`). It can be
    slightly negative when the two posteriors agree.

    Args:
        model_samples: Samples of the model posterior, ``(S, p)``.
        true_samples: Samples of the true posterior, ``(S', p)``.
        bandwidth: Kernel width; ``None`` for the median heuristic on ``true_samples``.
        unbiased: ``False`` gives the biased V-statistic (clipped at 0) instead.
        squared: Return MMD^2 (default) or sqrt(max(MMD^2, 0)).
    """
    return mmd(
        model_samples,
        true_samples,
        "y" if bandwidth is None else bandwidth,
        unbiased=unbiased,
        squared=squared,
    )


def log_posterior_at(samples: Any, theta_true: Any, bandwidth: float = 0.15) -> float:
    r"""Log of a Gaussian KDE of posterior samples, evaluated at theta*.

    .. math::
        \log \hat p(\theta^*) = \log \frac{1}{S} \sum_s N(\theta^*; \theta_s, h^2 I_p)

    The paper scores the particle-physics posteriors this way with h = 0.15.

    Args:
        samples: MCMC samples, shape ``(S, p)`` (or ``(S,)``).
        theta_true: The true parameter point, shape ``(p,)``.
        bandwidth: Kernel standard deviation h.
    """
    s = to_numpy(samples)
    s = s[:, None] if s.ndim == 1 else s
    t = to_numpy(theta_true).reshape(1, -1)
    if t.shape[1] != s.shape[1]:
        raise ValueError(f"expected theta_true.shape == ({s.shape[1]},), got {t.shape[1:]}")
    p = s.shape[1]
    sq = np.sum((s - t) ** 2, axis=1)
    log_kernel = -0.5 * sq / bandwidth**2 - p * np.log(bandwidth) - 0.5 * p * np.log(2 * np.pi)
    return float(logsumexp(log_kernel) - np.log(s.shape[0]))
