"""Sample, manifold, density and out-of-distribution metrics.

The scoring protocol is described in docs/theory.md, "Evaluation protocol".

All functions take NumPy arrays or tensors and return floats or NumPy arrays (float64). The
distance and reconstruction metrics are clipped at ``clip`` (10 by default) before averaging, as
in the paper's scoring of the polynomial-surface table, so that a few wild samples cannot
dominate the mean.

References:
    Flows for simultaneous manifold learning and density estimation.
    J. Brehmer and K. Cranmer, NeurIPS 2020, arXiv:2003.13913.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy.stats import rankdata

__all__ = [
    "ModelScores",
    "latent_mmd",
    "log_likelihood_stats",
    "manifold_distance",
    "manifold_distances",
    "mean_reconstruction_error",
    "model_dtype_device",
    "ood_auc",
    "reconstruction_error",
    "reconstruction_errors",
    "roc_auc",
    "score_samples",
    "to_numpy",
]


def to_numpy(x: Any) -> np.ndarray:
    """Converts a tensor or array-like to a float64 NumPy array (detached, on the CPU)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def model_dtype_device(model: Any) -> tuple[torch.dtype, torch.device]:
    """The dtype and device of a model's first parameter: where its inputs must go (the
    default dtype on the CPU for a model without parameters)."""
    params = list(model.parameters()) if hasattr(model, "parameters") else []
    if not params:
        return torch.get_default_dtype(), torch.device("cpu")
    return params[0].dtype, params[0].device


def manifold_distances(
    samples: Any,
    dataset: Any | Callable[[np.ndarray], Any],
    clip: float | None = 10.0,
) -> np.ndarray:
    r"""Per-sample distance of samples from the true manifold, clipped.

    Args:
        samples: Samples, shape ``(N, *data_dim)``.
        dataset: A data set with ``distance_to_manifold(x)`` or a callable ``x -> (N,)``.
        clip: Upper clip value (``None`` to disable).

    Returns:
        :math:`\min(\mathrm{dist}(x_i, M^*), \mathrm{clip})`, shape ``(N,)``.
    """
    fn = getattr(dataset, "distance_to_manifold", dataset)
    x = to_numpy(samples)
    dist = np.abs(to_numpy(fn(x))).reshape(x.shape[0])
    dist = np.where(np.isnan(dist), np.inf, dist)
    return dist if clip is None else np.minimum(dist, clip)


def manifold_distance(
    samples: Any,
    dataset: Any | Callable[[np.ndarray], Any],
    clip: float | None = 10.0,
) -> float:
    r"""Mean clipped distance of generated samples from the true manifold.

    .. math:: \frac{1}{N} \sum_i \min(\mathrm{dist}(x_i, M^*), \mathrm{clip})

    The paper scores 10^4 generated samples with ``clip = 10``. NaN distances count as ``clip``.
    """
    return float(np.mean(manifold_distances(samples, dataset, clip)))


def latent_mmd(
    samples: Any, dataset: Any, theta: Any | None = None, seed: int = 0
) -> dict[str, float]:
    r"""MMD between the true latents of generated images and samples of the true latent density.

    For data sets that know the latent parameters of any point (``dataset.latent_of(x)``, the
    parameters of its projection onto the true manifold) and can sample the latent density
    (``dataset.sample_latent(n, theta, seed)``): the unbiased MMD^2 with a Gaussian kernel whose
    width is the median distance within the true latents. It measures how well the density over
    the manifold is learned, whatever the distance of the samples from it. Non-finite samples
    are left out.

    Args:
        samples: Generated points, shape ``(N, *data_dim)``.
        dataset: The data set (with ``latent_of`` and ``sample_latent``).
        theta: Parameter point of the samples, ``(p,)``, or ``None``.
        seed: Seed of the true latent sample (as many points as finite samples).

    Returns:
        ``latent_mmd`` (MMD^2) and ``latent_mmd_reference``, the same statistic between two
        independent true samples of that size (its noise level).
    """
    from mflows.evaluation.mmd import median_distance, mmd

    x = to_numpy(samples)
    x = x[np.isfinite(x.reshape(len(x), -1)).all(axis=1)]
    if len(x) < 2:
        return {"latent_mmd": float("nan"), "latent_mmd_reference": float("nan")}
    z_model = dataset.latent_of(x)
    z_true = dataset.sample_latent(len(x), theta, seed=seed)
    z_other = dataset.sample_latent(len(x), theta, seed=seed + 1)
    width = median_distance(z_true)
    return {
        "latent_mmd": mmd(z_model, z_true, bandwidth=width),
        "latent_mmd_reference": mmd(z_other, z_true, bandwidth=width),
    }


def reconstruction_errors(x: Any, x_proj: Any, clip: float | None = 10.0) -> np.ndarray:
    r"""Per-sample reconstruction error :math:`\min(|x - x'|_2, \mathrm{clip})`.

    Args:
        x: Data, shape ``(N, *data_dim)``.
        x_proj: Projections x' = g(g^-1(x)), same shape.
        clip: Upper clip value (``None`` to disable).

    Returns:
        Euclidean norms over all non-batch dimensions, shape ``(N,)``. NaN counts as ``clip``.
    """
    x, x_proj = to_numpy(x), to_numpy(x_proj)
    if x.shape != x_proj.shape:
        raise ValueError(f"expected x_proj.shape == {x.shape}, got {x_proj.shape}")
    err = np.linalg.norm((x - x_proj).reshape(x.shape[0], -1), axis=1)
    err = np.where(np.isnan(err), np.inf, err)
    return err if clip is None else np.minimum(err, clip)


def mean_reconstruction_error(x: Any, x_proj: Any, clip: float | None = 10.0) -> float:
    r"""Mean clipped reconstruction distance :math:`\frac{1}{N}\sum_i \min(|x_i - x'_i|, c)`.

    The evaluation metric (a Euclidean distance, clipped); not the training loss
    ``mflows.losses.reconstruction_error`` (the mean squared error).
    """
    return float(np.mean(reconstruction_errors(x, x_proj, clip)))


#: former name of :func:`mean_reconstruction_error` (kept for compatibility).
reconstruction_error = mean_reconstruction_error


def log_likelihood_stats(model_logp: Any, true_logp: Any | None = None) -> dict[str, float]:
    r"""Summary of model log-likelihoods, optionally against the true log density.

    Non-finite model values (e.g. ``-inf``) are counted in ``num_nonfinite`` and left out of the
    averages; the comparison with the truth uses the pairs where both values are finite.

    Args:
        model_logp: Model log-likelihoods, shape ``(N,)``.
        true_logp: True log densities at the same points, shape ``(N,)``, or ``None``.

    Returns:
        ``mean``, ``std``, ``num_nonfinite`` and, with the truth, ``true_mean``,
        ``mean_abs_error`` :math:`\frac{1}{N}\sum |\log p - \log p^*|` and ``rmse``
        :math:`\sqrt{\frac{1}{N}\sum (\log p - \log p^*)^2}`.
    """
    logp = to_numpy(model_logp).reshape(-1)
    finite = np.isfinite(logp)
    nan = float("nan")
    stats = {
        "mean": float(np.mean(logp[finite])) if finite.any() else nan,
        "std": float(np.std(logp[finite])) if finite.any() else nan,
        "num_nonfinite": float(np.sum(~finite)),
    }
    if true_logp is not None:
        truth = to_numpy(true_logp).reshape(-1)
        if truth.shape != logp.shape:
            raise ValueError(f"expected true_logp.shape == {logp.shape}, got {truth.shape}")
        both = finite & np.isfinite(truth)
        diff = logp[both] - truth[both]
        stats["true_mean"] = float(np.mean(truth[np.isfinite(truth)])) if both.any() else nan
        stats["mean_abs_error"] = float(np.mean(np.abs(diff))) if both.any() else nan
        stats["rmse"] = float(np.sqrt(np.mean(diff**2))) if both.any() else nan
    return stats


def roc_auc(scores_in: Any, scores_out: Any) -> float:
    r"""Area under the ROC curve for separating in-distribution from OOD samples.

    Orientation: a **higher score means more out-of-distribution**. The AUC is the
    Mann-Whitney statistic

    .. math:: \mathrm{AUC} = P(s_{out} > s_{in}) + \tfrac{1}{2} P(s_{out} = s_{in}),

    computed from average ranks (ties count one half), in O(N log N). AUC = 1 means every OOD
    sample scores above every in-distribution sample, 0.5 means no separation. NaN scores are
    treated as ``+inf`` (maximally OOD).

    Args:
        scores_in: Scores of in-distribution samples, shape ``(N_in,)``.
        scores_out: Scores of OOD samples, shape ``(N_out,)``.
    """
    s_in, s_out = to_numpy(scores_in).reshape(-1), to_numpy(scores_out).reshape(-1)
    if s_in.size == 0 or s_out.size == 0:
        raise ValueError("roc_auc needs at least one in-distribution and one OOD score")
    scores = np.concatenate([s_in, s_out])
    scores = np.where(np.isnan(scores), np.inf, scores)
    ranks = rankdata(scores)  # average ranks for ties; inf compares equal to inf
    n_in, n_out = s_in.size, s_out.size
    u_stat = ranks[n_in:].sum() - n_out * (n_out + 1) / 2.0
    return float(u_stat / (n_in * n_out))


def ood_auc(
    log_prob_in: Any | None = None,
    log_prob_out: Any | None = None,
    recon_in: Any | None = None,
    recon_out: Any | None = None,
) -> dict[str, float]:
    """OOD detection AUC as scored in the paper (docs/theory.md, "Evaluation protocol").

    Two detectors: the negative log-likelihood (low likelihood = OOD) and the reconstruction
    error (large error = OOD). Manifold models (M-flow, M_e-flow, PAE, PIE's projection) pass
    both and the reported ``auc`` is the better of the two; AF (and the ambient PIE density)
    pass only log-likelihoods.

    Args:
        log_prob_in: Log-likelihood of test samples, shape ``(N_in,)``.
        log_prob_out: Log-likelihood of OOD samples, shape ``(N_out,)``.
        recon_in: Reconstruction error of test samples, shape ``(N_in,)``.
        recon_out: Reconstruction error of OOD samples, shape ``(N_out,)``.

    Returns:
        ``auc_log_likelihood`` and/or ``auc_reconstruction`` where given, and ``auc``, their
        maximum.
    """
    out: dict[str, float] = {}
    if (log_prob_in is None) != (log_prob_out is None):
        raise ValueError("pass both log_prob_in and log_prob_out, or neither")
    if (recon_in is None) != (recon_out is None):
        raise ValueError("pass both recon_in and recon_out, or neither")
    if log_prob_in is not None:
        out["auc_log_likelihood"] = roc_auc(-to_numpy(log_prob_in), -to_numpy(log_prob_out))
    if recon_in is not None:
        out["auc_reconstruction"] = roc_auc(recon_in, recon_out)
    if not out:
        raise ValueError("ood_auc needs log-likelihoods or reconstruction errors")
    out["auc"] = max(out.values())
    return out


class ModelScores(NamedTuple):
    """Per-sample model outputs used by the metrics (``None`` where the model has none)."""

    log_prob: np.ndarray | None  # (N,)
    reconstruction_error: np.ndarray | None  # (N,), unclipped
    projection: np.ndarray | None  # (N, *data_dim)


def score_samples(
    model: Any,
    x: Any,
    context: Any | None = None,
    batch_size: int = 1000,
    log_prob: bool = True,
    reconstruction: bool = True,
) -> ModelScores:
    """Evaluates a model's log-likelihood and projection on data in batches.

    Follows the model protocol of ``docs/interfaces.md``: ``log_prob`` is skipped for models
    without an exact density (``model.exact_density`` False, e.g. PAE) and the projection for
    models without a manifold (``model.has_manifold`` False, the ambient flow).

    Args:
        model: An mflows model.
        x: Data, shape ``(N, *data_dim)``.
        context: Parameters, shape ``(N, p)`` or ``(p,)`` (broadcast), or ``None``.
        batch_size: Samples per forward pass.
        log_prob: Whether to compute log-likelihoods.
        reconstruction: Whether to compute projections and reconstruction errors.
    """
    x = torch.as_tensor(to_numpy(x))
    dtype, device = model_dtype_device(model)
    x = x.to(dtype=dtype, device=device)
    ctx = None
    if context is not None:
        ctx = torch.as_tensor(to_numpy(context)).to(dtype=dtype, device=device)
        if ctx.dim() == 1:
            ctx = ctx.expand(x.shape[0], -1)
    do_proj = reconstruction and getattr(model, "has_manifold", True)
    log_prob = log_prob and getattr(model, "exact_density", True)
    logps, projs = [], []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size]
            cb = None if ctx is None else ctx[start : start + batch_size]
            if log_prob:
                logps.append(to_numpy(model.log_prob(xb, context=cb)))
            if do_proj:
                projs.append(to_numpy(model.project(xb, context=cb)))
    lp = np.concatenate(logps) if log_prob and logps else None
    proj = np.concatenate(projs).reshape(x.shape) if do_proj and projs else None
    err = reconstruction_errors(x, proj, clip=None) if proj is not None else None
    return ModelScores(lp, err, proj)
