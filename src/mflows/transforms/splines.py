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
from mflows.transforms.constants import constant

__all__ = [
    "ElementwiseRQS",
    "packed_rational_quadratic_spline",
    "rational_quadratic_spline",
    "spline_param_count",
    "split_spline_params",
]


def spline_param_count(num_bins: int) -> int:
    """Number of unnormalised parameters per element: K widths, K heights, K - 1 derivatives."""
    return 3 * num_bins - 1


def _pair(index: Tensor) -> Tensor:
    """``[0, 1]`` in the dtype and on the device of ``index`` (cached)."""
    # Under compilation the cache is not read: a compiled graph would guard on its contents and
    # be compiled again once an eager call has filled it (one recompilation of every training
    # graph in the second epoch, after the first validation pass).
    if torch.compiler.is_compiling():
        return torch.arange(2, device=index.device)
    key = ("pair", index.device)
    pair = _PAIRS.get(key)
    if pair is None:
        with torch.inference_mode(False), torch.no_grad():
            pair = torch.arange(2, device=index.device)
        _PAIRS[key] = pair
    return pair


_PAIRS: dict[tuple[str, torch.device], Tensor] = {}


def _check(num_bins: int, num_derivs: int, min_bin_width: float, min_bin_height: float) -> None:
    if min_bin_width * num_bins > 1.0 or min_bin_height * num_bins > 1.0:
        raise ValueError("minimal bin width/height too large for the number of bins")
    if num_derivs != num_bins - 1:
        raise ValueError(f"expected {num_bins - 1} interior derivatives, got {num_derivs}")


def _clamp_unit(xi: Tensor) -> Tensor:
    """``xi`` clamped to [0, 1] in value, with the derivative of the unclamped ``xi``.

    Round-off can put the bin fraction a few ulp outside [0, 1] at the bounds (e.g. 1 + 4e-15 at
    x = B); a plain clamp would zero its derivative there and make the Jacobian (and the M-flow
    density) wrong at +-B. Works in forward and reverse mode (``detach`` drops tangents too).
    """
    return xi + (xi.clamp(0.0, 1.0) - xi).detach()


def _spline_core(
    x: Tensor,
    unnormalized_sizes: Tensor,
    unnormalized_derivatives: Tensor,
    inverse: bool,
    bound: float,
    min_bin_width: float,
    min_bin_height: float,
    min_derivative: float,
) -> tuple[Tensor, Tensor]:
    """The spline on ``x`` ``(*)`` with widths and heights stacked as ``(*, 2, K)``.

    Works in unit coordinates X = (x + B) / 2B, where the knots run from exactly 0 to exactly
    1 (the slopes, hence log |dy/dx|, are the same as in the original coordinates). Widths and
    heights share one softmax and one cumsum; knot positions and derivatives of the bin are
    read with one gather from a ``(*, 3, K + 1)`` table. This keeps the op count per call low,
    which dominates the cost at the small batch sizes of training.
    """
    num_bins = unnormalized_sizes.shape[-1]
    like = unnormalized_sizes
    sizes = torch.softmax(unnormalized_sizes, dim=-1)
    if min_bin_width == min_bin_height:
        low = constant(min_bin_width, like)
        sizes = low + constant(1.0 - min_bin_width * num_bins, like) * sizes
    else:
        mins = sizes.new_tensor([[min_bin_width], [min_bin_height]])
        sizes = mins + (1.0 - mins * num_bins) * sizes
    # knots in [0, 1] with exact endpoints: (*, 2, K + 1)
    knots = F.pad(F.pad(torch.cumsum(sizes[..., :-1], dim=-1), (1, 0)), (0, 1), value=1.0)
    # derivatives at the K + 1 knots, boundary ones exactly 1 (smooth join with the tails)
    shift = math.log(math.expm1(1.0 - min_derivative))
    inner = F.softplus(unnormalized_derivatives + constant(shift, like))
    inner = inner + constant(min_derivative - 1.0, like)
    derivs = F.pad(inner, (1, 1)) + constant(1.0, like)
    table = torch.cat([knots, derivs.unsqueeze(-2)], dim=-2)  # (*, 3, K + 1)

    scale = 2.0 * bound
    xu = torch.addcmul(constant(0.5, x), x, constant(1.0 / scale, x))
    xc = xu.clamp(0.0, 1.0)
    inside = xc == xu
    # bin index = number of interior knots <= x, in {0, ..., K - 1}; gather bins k and k + 1
    knots_in = table[..., 1 if inverse else 0, 1:-1]
    idx = (xc.unsqueeze(-1) >= knots_in).sum(dim=-1, keepdim=True)
    index = (idx + _pair(idx)).unsqueeze(-2).expand(*table.shape[:-1], 2)
    lo_hi = torch.gather(table, -1, index)  # (*, 3, 2)
    lo, hi = lo_hi[..., 0], lo_hi[..., 1]
    diff = hi - lo
    x_k, y_k, d_k = lo.unbind(-1)
    w_k, h_k, d_k1 = diff[..., 0], diff[..., 1], hi[..., 2]
    s_k = h_k / w_k
    two = constant(2.0, s_k)
    dsum = d_k + d_k1 - two * s_k

    if inverse:
        dy = xc - y_k
        a = h_k * (s_k - d_k) + dy * dsum
        b = h_k * d_k - dy * dsum
        c = -s_k * dy
        disc = (b.square() - constant(4.0, a) * a * c).clamp_min(0.0)
        xi = _clamp_unit(2.0 * c / (-b - disc.sqrt()))
        out = xi * w_k + x_k
    else:
        xi = _clamp_unit((xc - x_k) / w_k)
    one_minus = constant(1.0, xi) - xi
    xi1 = xi * one_minus
    denom = s_k + dsum * xi1
    xi2 = xi * xi
    deriv = (s_k * s_k) * (d_k1 * xi2 + two * s_k * xi1 + d_k * (one_minus * one_minus))
    logdet = torch.log((deriv / (denom * denom)).clamp_min(1e-30))
    if inverse:
        logdet = -logdet
    else:
        out = y_k + h_k * (s_k * xi2 + d_k * xi1) / denom

    y = torch.where(inside, torch.addcmul(constant(-bound, out), out, constant(scale, out)), x)
    logabsdet = logdet * inside
    return y, logabsdet


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
    _check(num_bins, unnormalized_derivatives.shape[-1], min_bin_width, min_bin_height)
    sizes = torch.stack([unnormalized_widths, unnormalized_heights], dim=-2)
    return _spline_core(
        x,
        sizes,
        unnormalized_derivatives,
        inverse,
        float(tail_bound),
        min_bin_width,
        min_bin_height,
        min_derivative,
    )


def packed_rational_quadratic_spline(
    x: Tensor, params: Tensor, num_bins: int, inverse: bool = False, tail_bound: float = 3.0
) -> tuple[Tensor, Tensor]:
    """:func:`rational_quadratic_spline` with ``(*, 3K - 1)`` parameters in one tensor.

    The layout is that of :func:`split_spline_params` (K widths, K heights, K - 1
    derivatives); the widths and heights are read as one ``(*, 2, K)`` view, without copies.
    """
    _check(num_bins, params.shape[-1] - 2 * num_bins, 1e-3, 1e-3)
    sizes = params[..., : 2 * num_bins].unflatten(-1, (2, num_bins))
    return _spline_core(
        x, sizes, params[..., 2 * num_bins :], inverse, float(tail_bound), 1e-3, 1e-3, 1e-3
    )


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
        zero_init_last: zero the context network's output layer (identity start).
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
        zero_init_last: bool = True,
    ):
        super().__init__()
        self.features = features
        self.num_bins = num_bins
        self.tail_bound = tail_bound
        self.context_features = context_features
        n_params = features * spline_param_count(num_bins)
        if context_features > 0:
            self.net = ResidualMLP(
                0, n_params, hidden_features, num_blocks, context_features, dropout=dropout,
                zero_init_last=zero_init_last,
            )  # fmt: skip
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
        params = self._params(x, context)
        y, ld = packed_rational_quadratic_spline(
            x, params, self.num_bins, inverse=inverse, tail_bound=self.tail_bound
        )
        return y, ld.sum(-1)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._spline(x, context, inverse=False)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._spline(y, context, inverse=True)
