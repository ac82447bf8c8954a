"""Data-aware initialisation of manifold flows: start the manifold at the best linear fit.

A freshly built M-flow, M_e-flow or PIE has an outer flow f that is the identity map, so its
manifold g(u) = f(u, 0) is the coordinate plane spanned by the first n features. Coupling layers
with fixed permutations can bend that plane but hardly rotate it, so a manifold that is not
aligned with the coordinate axes is learned badly. :func:`initialize_from_data` sets the first
invertible linear (LU) layer of the outer flow (in the direction x -> (u, v)) to

    z = D Q^T (y - mean),

where y is the data as that layer sees it, Q the principal directions of y (largest variance
first) and D = diag(1 / std) scales every principal coordinate to unit variance (floored, so
that a direction with no variance is not blown up). All other layers are the identity at this
point, so afterwards u = z[:, :n] are the leading principal coordinates and g(u) = f(u, 0) is the
best linear n-dimensional fit of the data (PCA): the training starts from a rotated plane and
only has to bend it.

An LU layer W = L U (unit lower L, upper U with positive diagonal) cannot represent every
matrix; the rows of D Q^T may be reordered within the u-block and within the v-block and have
their signs flipped without changing the plane, which suffices unless the data are aligned with
a coordinate subspace in a degenerate way. Then two LU layers share the matrix (a fixed mixing
in the first one). The result lives in the LU parameters, hence in ``state_dict``: a saved and
reloaded model is identical.

:func:`mflows.fit` calls this before training (``data_init=True``); it leaves alone models
without LU layers in a tabular outer flow (``linear="permutation"``, image models, AF, PAE,
FOM) and models whose first LU layer is no longer the identity (already initialised or trained).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mflows.transforms.base import CompositeTransform
from mflows.transforms.linear import LULinear

__all__ = ["InitReport", "fold_score", "initialize_from_data", "principal_frame"]

#: at most this many points enter the principal-component analysis (a fixed, evenly spaced subset).
MAX_POINTS = 50_000
#: principal standard deviations are floored at this fraction of the largest one.
STD_FLOOR = 1e-3
#: smallest acceptable |pivot| of the LU factorisation, relative to the largest row norm.
PIVOT_TOL = 1e-2


@dataclass(frozen=True)
class InitReport:
    """What :func:`initialize_from_data` did.

    Attributes:
        applied: whether the model was changed.
        reason: why not, or which layers were set.
        explained_variance: fraction of the variance in the first n principal directions.
        layers: indices (in the outer flow) of the LU layers that were set.
    """

    applied: bool
    reason: str
    explained_variance: float | None = None
    layers: tuple[int, ...] = ()


def principal_frame(y: Tensor, latent_dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """Mean, principal directions and standard deviations of ``y`` ``(N, d)`` (float64).

    Returns:
        ``mean (d,)``, ``directions (d, d)`` (columns, by decreasing variance, each with its
        largest-magnitude entry positive, so the result is deterministic) and ``std (d,)``.
    """
    y = y.detach().to(torch.float64)
    mean = y.mean(0)
    centred = y - mean
    _, s, vh = torch.linalg.svd(centred, full_matrices=True)
    directions = vh.T.contiguous()
    std = torch.zeros(y.shape[1], dtype=torch.float64)
    std[: s.numel()] = s / max(y.shape[0] - 1, 1) ** 0.5
    signs = torch.sign(directions.gather(0, directions.abs().argmax(0, keepdim=True)))
    directions = directions * torch.where(signs == 0, torch.ones_like(signs), signs)
    del latent_dim  # the frame does not depend on n; kept for a uniform signature
    return mean, directions, std


def _block_lu(w: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor, float] | None:
    """LU factorisation of ``s P w`` with row swaps only inside rows ``[:n]`` and ``[n:]``.

    Returns ``(rows, lower, upper, min_rel_pivot)`` where ``rows`` is the row order (with sign
    flips folded into ``upper``/``lower`` via the caller), or ``None`` when a pivot vanishes.
    """
    d = w.shape[0]
    a = w.clone()
    order = torch.arange(d)
    lower = torch.eye(d, dtype=w.dtype)
    scale = a.norm(dim=1).max().item()
    min_pivot = float("inf")
    for k in range(d):
        block = range(k, n) if k < n else range(k, d)
        best = max(block, key=lambda i: abs(a[i, k].item()))
        if best != k:
            a[[k, best]] = a[[best, k]]
            order[[k, best]] = order[[best, k]]
            lower[[k, best], :k] = lower[[best, k], :k]
        pivot = a[k, k].item()
        min_pivot = min(min_pivot, abs(pivot) / scale)
        if abs(pivot) < 1e-12 * scale:
            return None
        factors = a[k + 1 :, k] / pivot
        lower[k + 1 :, k] = factors
        a[k + 1 :] -= factors[:, None] * a[k]
    upper = torch.triu(a)
    return order, lower, upper, min_pivot


def _signed_lu(w: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor, float] | None:
    """Factorises a row-reordered, row-sign-flipped ``w`` as L U with positive diag(U).

    Returns ``(matrix, lower, upper, min_rel_pivot)`` with ``matrix = lower @ upper`` the
    reordered and sign-flipped ``w`` (same row spaces of its first n and last d - n rows).
    """
    result = _block_lu(w, n)
    if result is None:
        return None
    _, lower, upper, min_pivot = result
    signs = torch.sign(torch.diagonal(upper))
    # flipping row k of (L U) is D L D (still unit lower) times D U.
    lower = signs[:, None] * lower * signs[None, :]
    upper = signs[:, None] * upper
    return lower @ upper, lower, upper, min_pivot


def _mixing(d: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """A fixed, well-conditioned dense matrix in LU form (for degenerate alignments)."""
    g = torch.Generator().manual_seed(20_200_313)
    lower = torch.tril(torch.randn(d, d, generator=g, dtype=dtype), -1) * 0.5
    upper = torch.triu(torch.randn(d, d, generator=g, dtype=dtype), 1) * 0.5
    lower = lower + torch.eye(d, dtype=dtype)
    upper = upper + torch.eye(d, dtype=dtype)
    return lower, upper


@torch.no_grad()
def _set_lu(layer: LULinear, lower: Tensor, upper: Tensor, centre: Tensor | None) -> None:
    """Sets W = L U (diagonal floored at the layer's bound) and b = -W centre."""
    dtype = layer.lower.dtype
    diag = torch.diagonal(upper).clamp_min(layer.eps * 1.01)
    # eps + softplus(raw + shift) = diag  <=>  raw = softplus^-1(diag - eps) - shift
    excess = (diag - layer.eps).to(torch.float64)
    raw = excess + torch.log(-torch.expm1(-excess)) - layer._shift
    layer.lower.copy_(torch.tril(lower, -1).to(dtype))
    layer.upper.copy_(torch.triu(upper, 1).to(dtype))
    layer.raw_diag.copy_(raw.to(dtype))
    if layer.bias is not None:
        layer.bias.zero_()
        if centre is not None:
            weight = layer.weight().to(torch.float64)
            layer.bias.copy_(-(weight @ centre.to(weight)).to(dtype))


def _is_identity(layer: LULinear) -> bool:
    tensors = [layer.lower, layer.upper, layer.raw_diag]
    if layer.bias is not None:
        tensors.append(layer.bias)
    return all(bool(torch.all(t == 0)) for t in tensors)


def _subset(x: Tensor, max_points: int) -> Tensor:
    if x.shape[0] <= max_points:
        return x
    idx = torch.linspace(0, x.shape[0] - 1, max_points).round().long()
    return x[idx]


def fold_score(y: Tensor, tangent: Tensor, max_points: int = 2000) -> float:
    """How badly the data fold over a plane: small when they are a graph over it.

    ``tangent`` ``(d, n)`` spans the plane (through the mean). For every point, take its nearest
    neighbour in the in-plane coordinates and measure how far apart the two are in R^d; the
    mean of that distance, relative to the mean distance from the mean, is the score. Where the
    data are the graph of a function over the plane, neighbours in the plane are neighbours in
    R^d (score ~ the sampling density); where the plane sees the manifold edge-on or folded,
    distant points project next to each other (large score). An M-flow starting at a plane with
    a small score only has to bend it.
    """
    y = _subset(y.detach().to(torch.float64), max_points)
    centred = y - y.mean(0)
    q, _ = torch.linalg.qr(tangent.to(torch.float64))
    planar = torch.cdist(centred @ q, centred @ q)
    planar.fill_diagonal_(float("inf"))
    neighbour = planar.argmin(dim=1)
    spread = centred.norm(dim=1).mean().clamp_min(1e-300)
    return float((centred - centred[neighbour]).norm(dim=1).mean() / spread)


@torch.no_grad()
def initialize_from_data(
    model: nn.Module,
    x: Any,
    context: Any = None,
    *,
    whiten: bool = False,
    max_points: int = MAX_POINTS,
) -> InitReport:
    """Sets the manifold of a fresh M-flow / M_e-flow / PIE to the PCA plane of ``x``.

    Deterministic (no random numbers; the PCA uses at most ``max_points`` evenly spaced rows).

    Args:
        model: a model from :func:`mflows.make_model`.
        x: data ``(N, d)`` as the outer flow receives it (tensor or array).
        context: ``(N, context_dim)`` for conditional models (only used when the layers in front
            of the LU layer depend on it).
        whiten: scale each principal coordinate to unit variance (else only rotate and centre).
        max_points: at most this many rows enter the analysis.

    Returns:
        An :class:`InitReport`; ``applied`` is False (and the model untouched) when the model
        has no suitable LU layer or that layer is not the identity any more.
    """
    outer = getattr(model, "outer", None)
    latent_dim = getattr(model, "latent_dim", None)
    if getattr(model, "kind", None) not in ("mflow", "emflow", "pie"):
        return InitReport(False, f"kind {getattr(model, 'kind', None)!r} has no outer manifold")
    if len(getattr(model, "data_shape", ())) != 1 or not isinstance(outer, CompositeTransform):
        return InitReport(False, "image-shaped or non-tabular outer flow")
    layers = list(outer.transforms)
    lu_idx = [i for i, t in enumerate(layers) if isinstance(t, LULinear)]
    if not lu_idx:
        return InitReport(False, "the outer flow has no LU layer (linear != 'lu')")
    first = layers[lu_idx[0]]
    if not _is_identity(first):
        return InitReport(False, "the first LU layer is not the identity (already initialised)")

    dtype, device = model.dtype, model.device
    x = torch.as_tensor(x, dtype=dtype, device=device).reshape(-1, model.data_size)
    keep = _subset(torch.arange(x.shape[0]), max_points)
    y = x[keep]
    outer_context = None
    if context is not None and getattr(model, "conditional_outer", False):
        outer_context = torch.as_tensor(context, dtype=dtype, device=device)[keep]
    for t in layers[: lu_idx[0]]:
        y, _ = t(y, outer_context)
    if not torch.isfinite(y).all():
        return InitReport(False, "non-finite data")

    d, n = y.shape[1], int(latent_dim)
    mean, directions, std = principal_frame(y.cpu(), n)
    variance = std.square()
    explained = float(variance[:n].sum() / variance.sum().clamp_min(1e-300))
    # Keep the model's own starting plane (the first n coordinates) when the data fold over it
    # no more than over the PCA plane: e.g. a height field over two of the coordinates, whose
    # PCA plane is tilted and folds it (power surface, standardised: fold score 0.043 over the
    # coordinate plane, 0.081 over the PCA plane; a rotated sheet in R^4: 0.20 vs 0.039).
    identity = torch.eye(d, n, dtype=torch.float64)
    if fold_score(y.cpu(), identity) <= fold_score(y.cpu(), directions[:, :n]):
        return InitReport(
            False, "the data are a smooth graph over the initial plane already", explained
        )
    if whiten:
        floor = max(std.max().item(), 1e-12) * STD_FLOOR
        scale = 1.0 / std.clamp_min(floor)
    else:
        scale = torch.ones(d, dtype=torch.float64)
    w = scale[:, None] * directions.T  # rows: scaled principal directions, top block = u

    single = _signed_lu(w, n)
    if single is not None and (single[3] >= PIVOT_TOL or len(lu_idx) < 2):
        _, lower, upper, _ = single
        _set_lu(first, lower, upper, mean)
        return InitReport(True, "PCA frame in one LU layer", explained, (lu_idx[0],))
    if len(lu_idx) < 2:
        return InitReport(False, "the PCA frame has no LU factorisation", explained)
    second = layers[lu_idx[1]]
    if not _is_identity(second):
        return InitReport(False, "the second LU layer is not the identity", explained)
    # two layers: W = W2 W1 with W1 a fixed mixing, W2 = W W1^-1 factorised with block pivots.
    m_lower, m_upper = _mixing(d, torch.float64)
    mixing = m_lower @ m_upper
    double = _signed_lu(w @ torch.linalg.inv(mixing), n)
    if double is None:
        return InitReport(False, "the PCA frame has no LU factorisation", explained)
    _, lower2, upper2, _ = double
    _set_lu(first, m_lower, m_upper, mean)
    _set_lu(second, lower2, upper2, None)
    return InitReport(True, "PCA frame in two LU layers", explained, tuple(lu_idx[:2]))
