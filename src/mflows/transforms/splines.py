"""Rational-quadratic splines with linear tails.

References:
    Neural Spline Flows (Durkan, Bekasov, Murray, Papamakarios, 2019), arXiv:1906.04032.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from mflows.nets import ResidualMLP
from mflows.transforms.base import Transform

__all__ = [
    "ElementwiseRQS",
    "rational_quadratic_spline",
    "spline_param_count",
    "split_spline_params",
]


def spline_param_count(num_bins: int) -> int:
    """Number of unnormalised parameters per element: K widths, K heights, K - 1 derivatives."""
    return 3 * num_bins - 1


def _knots(unnormalized: Tensor, tail_bound: float, min_size: float) -> Tensor:
    """Knot positions ``(*, K + 1)`` from ``(*, K)`` logits, from -B to B (exact endpoints)."""
    num_bins = unnormalized.shape[-1]
    sizes = torch.softmax(unnormalized, dim=-1)
    sizes = min_size + (1.0 - min_size * num_bins) * sizes
    inner = 2.0 * tail_bound * torch.cumsum(sizes[..., :-1], dim=-1) - tail_bound
    lo = inner.new_full((*inner.shape[:-1], 1), -tail_bound)
    hi = inner.new_full((*inner.shape[:-1], 1), tail_bound)
    return torch.cat([lo, inner, hi], dim=-1)


def _gather(values: Tensor, index: Tensor) -> Tensor:
    return torch.gather(values, -1, index.unsqueeze(-1)).squeeze(-1)


def rational_quadratic_spline(
    x: Tensor,
    unnormalized_widths: Tensor,
    unnormalized_heights: Tensor,
    unnormalized_derivatives: Tensor,
    inverse: bool = False,
    tail_bound: float = 3.0,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
) -> tuple[Tensor, Tensor]:
    """Monotonic rational-quadratic spline on [-B, B] with identity tails outside.

    With knots (x_k, y_k), bin width w_k, height h_k, slope s_k = h_k / w_k, knot derivatives
    d_k and xi = (x - x_k) / w_k in bin k,

        y = y_k + h_k [s_k xi^2 + d_k xi (1 - xi)] / [s_k + (d_{k+1} + d_k - 2 s_k) xi (1 - xi)].

    The inverse solves the quadratic in xi with the numerically stable root
    xi = 2c / (-b - sqrt(b^2 - 4ac)). Boundary derivatives are fixed to 1 so the tails join
    smoothly. Interior derivatives are ``min_derivative + softplus(u + log(expm1(1 -
    min_derivative)))``, so all-zero parameters give the identity map.

    torch.func-safe: the spline is evaluated on clamped inputs for every element and the tail
    (identity) is selected with ``torch.where``; bins are found with a sum of comparisons;
    ``sqrt`` and ``log`` arguments are clamped, so unused branches stay finite.

    Args:
        x: Inputs ``(*)`` (or outputs when ``inverse``).
        unnormalized_widths: ``(*, K)``.
        unnormalized_heights: ``(*, K)``.
        unnormalized_derivatives: ``(*, K - 1)`` interior knot derivatives.
        inverse: Apply the inverse map.
        tail_bound: B; the spline acts on [-B, B].
        min_bin_width: Minimal bin width (fraction of 2B).
        min_bin_height: Minimal bin height (fraction of 2B).
        min_derivative: Minimal knot derivative.

    Returns:
        The transformed values ``(*)`` and the elementwise log |dy/dx| (of the map applied) ``(*)``.

    References:
        Neural Spline Flows (Durkan et al., 2019), arXiv:1906.04032.
    """
    num_bins = unnormalized_widths.shape[-1]
    if min_bin_width * num_bins > 1.0 or min_bin_height * num_bins > 1.0:
        raise ValueError("minimal bin width/height too large for the number of bins")
    if unnormalized_derivatives.shape[-1] != num_bins - 1:
        raise ValueError(
            f"expected {num_bins - 1} interior derivatives, "
            f"got {unnormalized_derivatives.shape[-1]}"
        )
    bound = float(tail_bound)
    xs = _knots(unnormalized_widths, bound, min_bin_width)
    ys = _knots(unnormalized_heights, bound, min_bin_height)
    shift = math.log(math.expm1(1.0 - min_derivative))
    inner_d = min_derivative + F.softplus(unnormalized_derivatives + shift)
    ones = inner_d.new_ones((*inner_d.shape[:-1], 1))
    derivs = torch.cat([ones, inner_d, ones], dim=-1)

    inside = (x >= -bound) & (x <= bound)
    xc = x.clamp(-bound, bound)
    knots_in = ys if inverse else xs
    # bin index = number of interior knots <= x, in {0, ..., K - 1}
    idx = (xc.unsqueeze(-1) >= knots_in[..., 1:-1]).sum(dim=-1)

    x_k = _gather(xs, idx)
    w_k = _gather(xs, idx + 1) - x_k
    y_k = _gather(ys, idx)
    h_k = _gather(ys, idx + 1) - y_k
    d_k = _gather(derivs, idx)
    d_k1 = _gather(derivs, idx + 1)
    s_k = h_k / w_k
    dsum = d_k + d_k1 - 2.0 * s_k

    if inverse:
        dy = xc - y_k
        a = h_k * (s_k - d_k) + dy * dsum
        b = h_k * d_k - dy * dsum
        c = -s_k * dy
        disc = (b.square() - 4.0 * a * c).clamp_min(0.0)
        xi_raw = 2.0 * c / (-b - disc.sqrt())
    else:
        xi_raw = (xc - x_k) / w_k
    # Round-off can put xi a few ulp outside [0, 1] at the bounds (e.g. 1 + 4e-15 at x = B).
    # Clamp the value but keep the derivative of the unclamped xi: a plain clamp would zero
    # the derivative there and make the Jacobian (and the M-flow density) wrong at +-B.
    xi = xi_raw.clamp(0.0, 1.0).detach() + (xi_raw - xi_raw.detach())
    if inverse:
        out = xi * w_k + x_k
    xi1 = xi * (1.0 - xi)
    denom = s_k + dsum * xi1
    deriv = s_k.square() * (d_k1 * xi.square() + 2.0 * s_k * xi1 + d_k * (1.0 - xi).square())
    logdet = torch.log(deriv.clamp_min(1e-30)) - 2.0 * torch.log(denom.clamp_min(1e-30))
    if inverse:
        logdet = -logdet
    else:
        out = y_k + h_k * (s_k * xi.square() + d_k * xi1) / denom

    y = torch.where(inside, out, x)
    logabsdet = torch.where(inside, logdet, torch.zeros_like(logdet))
    return y, logabsdet


def split_spline_params(params: Tensor, num_bins: int) -> tuple[Tensor, Tensor, Tensor]:
    """Splits ``(*, 3K - 1)`` into widths ``(*, K)``, heights ``(*, K)``, derivs ``(*, K - 1)``."""
    return (
        params[..., :num_bins],
        params[..., num_bins : 2 * num_bins],
        params[..., 2 * num_bins :],
    )


class ElementwiseRQS(Transform):
    """Elementwise rational-quadratic spline with free or context-dependent parameters.

    Used for one-dimensional flows (coupling needs at least two features). With
    ``context_features > 0`` the spline parameters are the output of a :class:`ResidualMLP` of
    the context; otherwise they are free parameters (zero-initialised: identity map).

    Args:
        features: Number of features d; acts on ``(B, d)``.
        context_features: Context size (0: free parameters).
        num_bins: Number of bins K.
        tail_bound: B.
        hidden_features: Width of the context network.
        num_blocks: Residual blocks of the context network.
        dropout: Dropout in the context network.
    """

    def __init__(
        self,
        features: int,
        context_features: int = 0,
        num_bins: int = 8,
        tail_bound: float = 3.0,
        hidden_features: int = 100,
        num_blocks: int = 2,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.features = features
        self.num_bins = num_bins
        self.tail_bound = tail_bound
        self.context_features = context_features
        n_params = features * spline_param_count(num_bins)
        if context_features > 0:
            self.net = ResidualMLP(
                0, n_params, hidden_features, num_blocks, context_features, dropout=dropout
            )
        else:
            self.params = torch.nn.Parameter(torch.zeros(n_params))

    def _params(self, x: Tensor, context: Tensor | None) -> Tensor:
        if self.context_features > 0:
            if context is None:
                raise ValueError(f"expected a context of shape (B, {self.context_features})")
            p = self.net(context.new_zeros(*context.shape[:-1], 0), context)
        else:
            p = self.params.expand(*x.shape[:-1], -1)
        return p.reshape(*x.shape, spline_param_count(self.num_bins))

    def _spline(self, x: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        w, h, d = split_spline_params(self._params(x, context), self.num_bins)
        y, ld = rational_quadratic_spline(x, w, h, d, inverse=inverse, tail_bound=self.tail_bound)
        return y, ld.sum(-1)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._spline(x, context, inverse=False)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._spline(y, context, inverse=True)
