"""Base density of the flows: the isotropic normal (standard, or PIE's narrow off-manifold one)."""

from __future__ import annotations

import math

from torch import Tensor

__all__ = ["normal_log_prob"]

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
