"""Base densities of the flows: a standard normal and the narrow off-manifold normal of PIE."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["DiagonalNormal", "StandardNormal", "normal_log_prob"]

_LOG_2PI = math.log(2.0 * math.pi)


def normal_log_prob(z: Tensor, scale: float = 1.0) -> Tensor:
    """Log density of the isotropic normal N(0, scale^2 I) summed over the last dimension.

    log N(z; 0, s^2 I) = -1/2 |z|^2 / s^2 - k log s - k/2 log(2 pi), with k = z.shape[-1].

    Args:
        z: points, shape ``(*, k)``.
        scale: standard deviation s > 0.

    Returns:
        Log densities, shape ``(*,)``.
    """
    k = z.shape[-1]
    return -0.5 * (z / scale).square().sum(-1) - k * math.log(scale) - 0.5 * k * _LOG_2PI


class DiagonalNormal:
    """Isotropic normal N(0, scale^2 I_k) on R^k (PIE's off-manifold base, scale = epsilon).

    Args:
        features: dimension k.
        scale: standard deviation.
    """

    def __init__(self, features: int, scale: float = 1.0):
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.features = int(features)
        self.scale = float(scale)

    def log_prob(self, z: Tensor) -> Tensor:
        """``(B, k) -> (B,)`` log density."""
        return normal_log_prob(z, self.scale)

    def sample(
        self,
        num: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draws ``(num, k)`` samples (reparameterised: ``scale * eps``)."""
        eps = torch.randn(num, self.features, dtype=dtype, device=device, generator=generator)
        return self.scale * eps


class StandardNormal(DiagonalNormal):
    """Standard normal N(0, I_k), the base density of every flow in mflows."""

    def __init__(self, features: int):
        super().__init__(features, 1.0)
