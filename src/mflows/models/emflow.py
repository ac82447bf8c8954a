"""M_e-flow: an M-flow whose encoder is a separate, unrestricted network.

Decoder g(u) = f(u, 0) as for the M-flow, encoder e: R^d -> R^n a residual MLP (for images a
convolutional net, :class:`mflows.conv_nets.ConvEncoder`). The density is
the M-flow density at u = e(x):

    log p(x) = log p_u(u) - 1/2 log det(J_g(u)^T J_g(u)),   u = e(x),

i.e. the density of the point g(e(x)) of the manifold (``project``).

Read this with care: ``log_prob(x)`` is the manifold density at the projection g(e(x)), not at
x, and it is a normalised density on the manifold only where the encoder inverts the decoder,
e(g(u)) = u. The manifold density itself is ``latent_log_prob(u) - 1/2 log det(J_g^T J_g)`` at
the chart point u of g(u); ``log_prob(g(u))`` equals it only if e(g(u)) = u. An untrained M_e-flow
violates this, and its ``log_prob`` then need not integrate to 1 over its own manifold (one
audited example integrated to 7.9); training the reconstruction error drives e towards g^-1.

References:
    Flows for simultaneous manifold learning and density estimation.
    J. Brehmer and K. Cranmer, NeurIPS 2020, arXiv:2003.13913.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from mflows.models.mflow import ManifoldFlowBase
from mflows.transforms.base import Transform

__all__ = ["EMFlow"]


class EMFlow(ManifoldFlowBase):
    """M_e-flow; see the module docstring.

    ``log_prob(x)`` is the density of the manifold at the projection g(e(x)): normalised on the
    manifold only where e(g(u)) = u (module docstring).

    Args:
        outer: f as a transform ``x -> (u, v)`` on flat ``(B, d)`` vectors.
        encoder: a network ``(B, d) [, context (B, c)] -> (B, n)``; it receives the context
            when ``conditional_outer`` is True.
        inner: h as a transform ``u -> u~`` on ``(B, n)``.
        data_dim: d or ``(C, H, W)``.
        latent_dim: n.
        context_dim: dimension of theta.
        conditional_outer: whether the context enters f and e.
        config: rebuild information (set by ``make_model``).
    """

    kind = "emflow"

    def __init__(
        self,
        outer: Transform,
        encoder: nn.Module,
        inner: Transform,
        data_dim: int | tuple[int, ...],
        latent_dim: int,
        context_dim: int = 0,
        conditional_outer: bool = False,
        config: dict[str, Any] | None = None,
    ):
        super().__init__(outer, inner, data_dim, latent_dim, context_dim, conditional_outer, config)
        self.encoder = encoder

    def _encode(self, x: Tensor, context: Tensor | None) -> Tensor:
        standardizer = self.standardizer
        if standardizer is not None:  # the encoder sees the data as the outer flow does
            x = standardizer(x)[0]
        outer_context = self._outer_context(context)
        if outer_context is None:
            return self.encoder(x)
        return self.encoder(x, outer_context)

    def _log_prob(self, x: Tensor, context: Tensor | None) -> Tensor:
        return self._manifold_log_prob(self._encode(x, context), context)

    def _sample_log_prob(self, u: Tensor, x: Tensor, context: Tensor | None) -> Tensor:
        return self._manifold_log_prob(u, context)

    def manifold_parameters(self) -> list[nn.Parameter]:
        """Parameters of the outer flow f and the encoder e."""
        return list(self.outer.parameters()) + list(self.encoder.parameters())
