"""Pure loss functions of the training schemes (docs/theory.md, "Training schemes").

Every function maps tensors (model outputs and data) to a scalar tensor; none of them touches an
optimiser or decides which parameters train. Which losses apply to which parameters, with which
weights, is the business of the schedules in :mod:`mflows.training.phases`.

References:
    Flows for simultaneous manifold learning and density estimation.
    J. Brehmer and K. Cranmer, NeurIPS 2020, arXiv:2003.13913.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = [
    "negative_log_likelihood",
    "nested_reconstruction_error",
    "reconstruction_error",
    "score",
    "score_matching_error",
    "sinkhorn_divergence",
    "truncation_sizes",
]


def reconstruction_error(x: Tensor, x_projected: Tensor) -> Tensor:
    r"""Mean squared reconstruction error of the manifold phase.

    .. math:: L_{MSE} = \frac{1}{B} \sum_i \lVert x_i - x'_i \rVert^2

    Args:
        x: data, ``(B, *)``.
        x_projected: their projections ``g(g^-1(x))``, same shape.

    Returns:
        Scalar: squared distance summed over all non-batch dimensions, averaged over the batch.
    """
    diff = (x - x_projected).reshape(x.shape[0], -1)
    return diff.square().sum(-1).mean()


def truncation_sizes(
    batch: int, max_dim: int, decay: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """Random numbers of kept latent coordinates for nested dropout, ``(batch,)`` in ``1..m``.

    ``P(k) ~ decay^(k - 1)``: ``decay = 1`` is uniform, ``decay < 1`` favours small k,
    ``decay > 1`` large k.
    Drawn from ``generator`` (default: the global torch RNG, which the trainer seeds every epoch).
    """
    weights = float(decay) ** torch.arange(int(max_dim), dtype=torch.float64)
    return torch.multinomial(weights, int(batch), replacement=True, generator=generator) + 1


def nested_reconstruction_error(
    x: Tensor, u: Tensor, decode: Any, keep: Tensor | None, *, log: bool = False
) -> Tensor:
    r"""Reconstruction error with only the first ``keep[i]`` latent coordinates of sample i.

    Nested dropout: ``u`` is truncated per sample (coordinates ``keep[i]`` and beyond set to
    zero) before decoding, so training on random ``keep`` orders the coordinates by importance
    and the first k coordinates alone span the best k-dimensional manifold the decoder can reach.
    With ``log=True`` the batch errors are averaged per k and the loss is the mean over the k
    present of :math:`\log E_k`, so that every k counts by its relative error (measured worse
    for choosing the dimension: the nearly exact large-k terms then dominate and lock in a flat
    ordering; see docs/guide.md).

    .. math:: E_k = \frac{1}{|\{i: k_i = k\}|} \sum_{i: k_i = k}
              \lVert x_i - g(u_{i,1..k}, 0) \rVert^2, \qquad
              L = \operatorname{mean}_{k \text{ present}} \log E_k

    (``log=False``: :math:`L = \frac{1}{B} \sum_i \lVert x_i - g(u_{i,1..k_i}, 0) \rVert^2`.)

    Args:
        x: data, ``(B, *)``.
        u: their latent coordinates ``(B, m)``.
        decode: ``u -> x`` on ``(B, m)``.
        keep: ``(B,)`` integers in ``1..m``; ``None``: every sample at every k (``m`` decodes,
            the exact mean over k = 1..m).
        log: average the log of the per-k errors (see above).

    Returns:
        Scalar.
    """
    m = u.shape[-1]
    if keep is None:
        b = u.shape[0]
        keep = torch.arange(1, m + 1, device=u.device).repeat_interleave(b)
        u = u.repeat(m, *([1] * (u.dim() - 1)))
        x = x.repeat(m, *([1] * (x.dim() - 1)))
    keep = keep.to(u.device)
    mask = torch.arange(m, device=u.device) < keep.unsqueeze(-1)
    x_hat = decode(u * mask.to(u.dtype))
    squared = (x - x_hat).reshape(x.shape[0], -1).square().sum(-1)
    if not log:
        return squared.mean()
    onehot = torch.nn.functional.one_hot(keep - 1, m).to(squared.dtype)
    counts = onehot.sum(0)
    present = counts > 0
    per_k = (onehot * squared.unsqueeze(-1)).sum(0) / counts.clamp(min=1)
    tiny = torch.finfo(squared.dtype).tiny
    logs = torch.where(present, torch.log(per_k.clamp(min=tiny)), torch.zeros_like(per_k))
    return logs.sum() / present.sum()


def negative_log_likelihood(log_prob: Tensor) -> Tensor:
    r"""Negative log-likelihood :math:`-\frac{1}{B}\sum_i \log p(x_i)` of ``(B,)`` values."""
    return -log_prob.mean()


def score(log_prob: Tensor, context: Tensor, *, create_graph: bool = True) -> Tensor:
    r"""Model score :math:`t(x|\theta) = \nabla_\theta \log p(x|\theta)` per sample.

    Each row of ``log_prob`` depends only on its own row of ``context``, so the gradient of the
    batch sum gives every per-sample score at once.

    Args:
        log_prob: ``(B,)`` log densities computed from ``context``.
        context: ``(B, p)`` parameters with ``requires_grad=True``.
        create_graph: keep the graph so that a loss of the score can be back-propagated.

    Returns:
        ``(B, p)`` scores.
    """
    (grad,) = torch.autograd.grad(log_prob.sum(), context, create_graph=create_graph)
    return grad


def score_matching_error(model_score: Tensor, joint_score: Tensor) -> Tensor:
    r"""SCANDAL loss between the model score and the simulator's joint score.

    .. math:: L_{score} = \frac{1}{B} \sum_i \lVert t(x_i|\theta_i) - t(x_i, z_i|\theta_i) \rVert^2

    Args:
        model_score: ``(B, p)`` from :func:`score`.
        joint_score: ``(B, p)`` joint scores of the simulator.

    Returns:
        Scalar.

    References:
        Mining gold from implicit models to improve likelihood-free inference.
        J. Brehmer, G. Louppe, J. Pavez and K. Cranmer, PNAS 2020, arXiv:1805.12244.
    """
    return (model_score - joint_score).square().sum(-1).mean()


def sinkhorn_divergence(
    x: Tensor,
    y: Tensor,
    *,
    blur: float = 0.05,
    p: int = 2,
    scaling: float = 0.8,
    **options: Any,
) -> Tensor:
    r"""Debiased Sinkhorn divergence :math:`S_\varepsilon(\mu_x, \mu_y)` between two samples.

    Uses ``geomloss.SamplesLoss("sinkhorn")`` with uniform weights (the optional ``mflows[ot]``
    dependency, imported here lazily). Images are flattened to vectors.

    Args:
        x: generated samples, ``(B, *)``.
        y: data, ``(B', *)``.
        blur: entropic blur :math:`\varepsilon^{1/p}` in data units.
        p: exponent of the ground cost :math:`|x - y|^p / p`.
        scaling: epsilon-scaling factor of the annealing (closer to 1 = more accurate).
        options: further keyword arguments of ``SamplesLoss``.

    Returns:
        Scalar.

    Raises:
        ImportError: geomloss is not installed.

    References:
        Interpolating between optimal transport and MMD using Sinkhorn divergences.
        J. Feydy, T. Séjourné, F.-X. Vialard, S. Amari, A. Trouvé and G. Peyré, AISTATS 2019,
        arXiv:1810.08278.
    """
    try:
        from geomloss import SamplesLoss
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the optimal-transport training schemes need geomloss: pip install 'mflows[ot]'"
        ) from error
    options.setdefault("backend", "tensorized")
    loss = SamplesLoss("sinkhorn", p=p, blur=blur, scaling=scaling, **options)
    return loss(x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1))
