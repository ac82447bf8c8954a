"""Ambient flow (AF): a bijection f on R^d with a standard normal base.

p(x) = N(f^-1(x); 0, I_d) |det J_f^-1(x)|. There is no manifold: ``encode`` is the full
f^-1(x), ``decode`` is f, ``project`` is the identity and ``latent_dim`` is d.

The outer transform follows the transform contract in the normalising direction:
``outer(x) -> (z, log|det J_f^-1|)`` and ``outer.inverse(z) -> (x, .)``.

References:
    Flows for simultaneous manifold learning and density estimation.
    J. Brehmer and K. Cranmer, NeurIPS 2020, arXiv:2003.13913.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mflows.distributions import normal_log_prob
from mflows.models.base import Model
from mflows.transforms.base import Transform

__all__ = ["AmbientFlow"]


class AmbientFlow(Model):
    """Ambient flow; the context (if any) enters f.

    Args:
        outer: the flow f as a transform ``x -> z`` on flat ``(B, d)`` vectors.
        data_dim: d or ``(C, H, W)``.
        context_dim: dimension of theta (0: unconditional).
        config: rebuild information (set by ``make_model``).
    """

    kind = "af"

    def __init__(
        self,
        outer: Transform,
        data_dim: int | tuple[int, ...],
        context_dim: int = 0,
        config: dict[str, Any] | None = None,
    ):
        super().__init__(data_dim, 0, context_dim, config)
        self.latent_dim = self.data_size
        self.outer = outer
        self.inner = None

    def _encode(self, x: Tensor, context: Tensor | None) -> Tensor:
        return self.outer(x, context)[0]

    def _decode(self, u: Tensor, context: Tensor | None) -> Tensor:
        return self.outer.inverse(u, context)[0]

    def _project(self, x: Tensor, context: Tensor | None) -> Tensor:
        return x

    def _log_prob(self, x: Tensor, context: Tensor | None) -> Tensor:
        z, logabsdet = self.outer(x, context)
        return normal_log_prob(z) + logabsdet

    def manifold_parameters(self) -> list[nn.Parameter]:
        """All parameters of f."""
        return list(self.outer.parameters())

    def density_parameters(self) -> list[nn.Parameter]:
        """None: the ambient flow has no inner flow."""
        return []

    def project(self, x: Any, context: Any = None) -> Tensor:
        """The identity (an ambient flow has no manifold); inputs are still validated."""
        return super().project(x, context)

    def _latent_log_prob(self, u: Tensor, context: Tensor | None) -> Tensor:
        return normal_log_prob(u)

    def _sample_latent(self, num, context, generator) -> Tensor:
        return torch.randn(
            num, self.latent_dim, dtype=self.dtype, device=self.device, generator=generator
        )
