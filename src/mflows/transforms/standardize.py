"""Elementwise standardisation z = (x - shift) / scale with the statistics stored as buffers.

Models put it as the first layer of the outer flow on the data side (docs/guide.md, "Data scale
and standardisation"), so that the decoder g includes the inverse map x = shift + scale * z and
``log_prob`` stays the density of the original x: the ambient log-determinant and the manifold
volume term log det(J_g^T J_g) both include it. The statistics are set once by
:meth:`Standardize.set_statistics` (``mflows.fit`` calls it on a fresh model) and saved with the
model (buffers ``shift``, ``scale`` and ``fitted``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mflows.errors import InvalidArgumentError
from mflows.transforms.base import Transform

__all__ = ["Standardize", "data_statistics"]

#: a feature whose standard deviation is below this fraction of the largest one (or exactly 0)
#: keeps scale 1 rather than being blown up.
RELATIVE_SCALE_FLOOR = 1e-6


def data_statistics(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-feature mean and standard deviation of ``(N, d)`` data, computed in float64.

    Features with a (numerically) zero spread get scale 1.
    """
    if x.dim() != 2 or x.shape[0] < 1:
        raise InvalidArgumentError(
            f"expected data of shape (N, d) with N >= 1, got {tuple(x.shape)}"
        )
    x64 = x.detach().to(torch.float64)
    mean = x64.mean(0)
    std = x64.std(0, unbiased=False) if x.shape[0] > 1 else torch.ones_like(mean)
    floor = RELATIVE_SCALE_FLOOR * float(std.max()) if std.numel() else 0.0
    std = torch.where(std > max(floor, 0.0), std, torch.ones_like(std))
    return mean, std


class Standardize(Transform):
    """z = (x - shift) / scale elementwise on ``(B, d)``; identity until statistics are set.

    ``forward`` (data to latent) has log|det J| = -sum(log scale); ``inverse`` the opposite.

    Args:
        features: d.
    """

    def __init__(self, features: int):
        super().__init__()
        self.features = int(features)
        self.register_buffer("shift", torch.zeros(self.features))
        self.register_buffer("scale", torch.ones(self.features))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`set_statistics` has been called (saved with the model)."""
        return bool(self.fitted)

    @torch.no_grad()
    def set_statistics(self, x: Any = None, *, shift: Any = None, scale: Any = None) -> None:
        """Sets shift and scale from data ``(N, d)`` (mean, std) or explicitly.

        Args:
            x: data; its per-feature mean and standard deviation are used.
            shift: explicit shift ``(d,)`` (instead of ``x``).
            scale: explicit positive scale ``(d,)`` (instead of ``x``).
        """
        if x is not None:
            if shift is not None or scale is not None:
                raise InvalidArgumentError("pass either data x or shift/scale, not both")
            x = torch.as_tensor(x)
            if x.dim() != 2 or x.shape[1] != self.features:
                raise InvalidArgumentError(
                    f"expected data of shape (N, {self.features}), got {tuple(x.shape)}"
                )
            shift, scale = data_statistics(x)
        shift = torch.zeros(self.features) if shift is None else torch.as_tensor(shift)
        scale = torch.ones(self.features) if scale is None else torch.as_tensor(scale)
        if shift.shape != (self.features,) or scale.shape != (self.features,):
            raise InvalidArgumentError(
                f"expected shift and scale of shape ({self.features},), got "
                f"{tuple(shift.shape)} and {tuple(scale.shape)}"
            )
        if not (torch.isfinite(shift).all() and torch.isfinite(scale).all() and (scale > 0).all()):
            raise InvalidArgumentError("shift must be finite and scale finite and > 0")
        self.shift.copy_(shift.to(self.shift))
        self.scale.copy_(scale.to(self.scale))
        self.fitted.fill_(True)

    def _logabsdet(self, x: Tensor) -> Tensor:
        return -torch.log(self.scale).sum().expand(x.shape[0])

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return (x - self.shift) / self.scale, self._logabsdet(x)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return y * self.scale + self.shift, -self._logabsdet(y)

    def extra_repr(self) -> str:
        return f"features={self.features}, fitted={self.is_fitted}"
