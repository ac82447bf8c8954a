"""Coupling layers on flat vectors: rational-quadratic spline and affine.

A coupling layer splits x into an identity part x_a and a transformed part x_b and maps
y_a = x_a, y_b = tau(x_b; NN(x_a, c)); log|det J| = sum log|d tau / d x_b|.

References:
    Density estimation using Real NVP (Dinh, Sohl-Dickstein, Bengio, 2016), arXiv:1605.08803.
    Neural Spline Flows (Durkan et al., 2019), arXiv:1906.04032.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mflows.nets import ResidualMLP
from mflows.transforms.base import Transform
from mflows.transforms.splines import packed_rational_quadratic_spline, spline_param_count

__all__ = ["AffineCoupling", "Coupling", "RQSCoupling", "alternating_mask"]


def alternating_mask(features: int, parity: int = 0) -> Tensor:
    """Boolean mask ``(d,)``: True (transformed) where ``i % 2 == parity``."""
    return torch.arange(features) % 2 == parity


class Coupling(Transform):
    """Base coupling layer on ``(B, d)``: subclasses define ``_transform``.

    Args:
        features: d.
        mask: Boolean ``(d,)``, True for the features that are transformed (default:
            even indices). Needs at least one transformed and one identity feature.
        params_per_feature: Conditioner outputs per transformed feature.
        context_features, hidden_features, num_blocks, dropout: Conditioner
            (:class:`~mflows.nets.ResidualMLP`) settings.
    """

    def __init__(
        self,
        features: int,
        mask: Sequence[bool] | Tensor | None,
        params_per_feature: int,
        context_features: int = 0,
        hidden_features: int = 100,
        num_blocks: int = 2,
        dropout: float = 0.0,
        zero_init_last: bool = True,
    ):
        super().__init__()
        mask = alternating_mask(features) if mask is None else torch.as_tensor(mask, dtype=bool)
        if mask.shape != (features,):
            raise ValueError(f"expected mask.shape == ({features},), got {tuple(mask.shape)}")
        transform_idx = torch.nonzero(mask).flatten()
        identity_idx = torch.nonzero(~mask).flatten()
        if len(transform_idx) == 0 or len(identity_idx) == 0:
            raise ValueError("the coupling mask needs transformed and identity features")
        self.features = features
        self.params_per_feature = params_per_feature
        self.register_buffer("transform_idx", transform_idx)
        self.register_buffer("identity_idx", identity_idx)
        self.register_buffer("merge_idx", torch.argsort(torch.cat([identity_idx, transform_idx])))
        self.conditioner = ResidualMLP(
            len(identity_idx),
            len(transform_idx) * params_per_feature,
            hidden_features,
            num_blocks,
            context_features,
            dropout=dropout,
            zero_init_last=zero_init_last,
        )

    def _transform(self, xb: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        """Elementwise map of ``xb`` ``(B, m)`` given ``params`` ``(B, m, p)``."""
        raise NotImplementedError

    def _couple(self, x: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        xa = torch.index_select(x, -1, self.identity_idx)
        xb = torch.index_select(x, -1, self.transform_idx)
        params = self.conditioner(xa, context).unflatten(-1, (-1, self.params_per_feature))
        yb, ld = self._transform(xb, params, inverse)
        y = torch.index_select(torch.cat([xa, yb], dim=-1), -1, self.merge_idx)
        return y, ld.sum(-1)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(x, context, inverse=False)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(y, context, inverse=True)


class RQSCoupling(Coupling):
    """Rational-quadratic spline coupling (identity at init: zero-initialised conditioner).

    y_b = RQS(x_b; theta(x_a, c)), identity tails outside [-B, B].

    Args:
        features: d.
        mask: Transformed features (default alternating).
        context_features: Context size.
        hidden_features: Conditioner width.
        num_blocks: Conditioner residual blocks.
        num_bins: Spline bins K.
        tail_bound: B.
        dropout: Conditioner dropout.
        zero_init_last: zero the conditioner's output layer, so the coupling starts as the
            identity (False: PyTorch's default initialisation, a random start).

    References:
        Neural Spline Flows (Durkan et al., 2019), arXiv:1906.04032.
    """

    def __init__(
        self,
        features: int,
        mask: Sequence[bool] | Tensor | None = None,
        context_features: int = 0,
        hidden_features: int = 100,
        num_blocks: int = 2,
        num_bins: int = 8,
        tail_bound: float = 3.0,
        dropout: float = 0.0,
        zero_init_last: bool = True,
    ):
        super().__init__(
            features,
            mask,
            spline_param_count(num_bins),
            context_features,
            hidden_features,
            num_blocks,
            dropout,
            zero_init_last,
        )
        self.num_bins = num_bins
        self.tail_bound = tail_bound

    def _transform(self, xb: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        return packed_rational_quadratic_spline(
            xb, params, self.num_bins, inverse=inverse, tail_bound=self.tail_bound
        )


class AffineCoupling(Coupling):
    """Affine coupling with a bounded log-scale (identity at init).

    y_b = x_b exp(s) + t,  s = S tanh(s_raw / S), so |s| <= S (``scale_bound``).

    Args:
        features: d.
        mask: Transformed features (default alternating).
        context_features: Context size.
        hidden_features: Conditioner width.
        num_blocks: Conditioner residual blocks.
        dropout: Conditioner dropout.
        scale_bound: S, bound on the log-scale.
        zero_init_last: zero the conditioner's output layer (identity start).

    References:
        Density estimation using Real NVP (Dinh et al., 2016), arXiv:1605.08803.
    """

    def __init__(
        self,
        features: int,
        mask: Sequence[bool] | Tensor | None = None,
        context_features: int = 0,
        hidden_features: int = 100,
        num_blocks: int = 2,
        dropout: float = 0.0,
        scale_bound: float = 2.0,
        zero_init_last: bool = True,
    ):
        super().__init__(
            features, mask, 2, context_features, hidden_features, num_blocks, dropout,
            zero_init_last,
        )  # fmt: skip
        self.scale_bound = scale_bound

    def _transform(self, xb: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        log_scale = self.scale_bound * torch.tanh(params[..., 0] / self.scale_bound)
        shift = params[..., 1]
        if inverse:
            return (xb - shift) * torch.exp(-log_scale), -log_scale
        return xb * torch.exp(log_scale) + shift, log_scale
