"""M-flow (manifold-learning flow) and FOM (flow on a prescribed manifold).

M-flow: an outer flow f on R^d defines the decoder g(u) = f(u, 0) (zero padding, then f) and the
encoder g^-1(x) = first n coordinates of f^-1(x); an inner flow h on R^n carries the density.
The exact density on the manifold, evaluated at the projection x' = g(g^-1(x)), is

    log p_M(x) = log N(h^-1(u)) + log |det J_h^-1(u)| - 1/2 log det(J_g(u)^T J_g(u)),

with u = g^-1(x) and J_g the d x n decoder Jacobian (:mod:`mflows.jacobians`).

FOM replaces the learned g by a prescribed chart (:mod:`mflows.embeddings`); only h is trained.

References:
    Flows for simultaneous manifold learning and density estimation.
    J. Brehmer and K. Cranmer, NeurIPS 2020, arXiv:2003.13913.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from mflows.embeddings import pad, unpad
from mflows.errors import InvalidArgumentError
from mflows.jacobians import decoder_logdet
from mflows.models.base import Model
from mflows.transforms.base import Transform

__all__ = ["FOM", "MFlow", "ManifoldFlowBase"]


def _volume_logdet(model: Model, decode: Any, u: Tensor, context: Tensor | None) -> Tensor:
    """log det(J^T J) of ``decode`` at u with the model's Jacobian options."""
    return decoder_logdet(
        decode,
        u,
        context,
        chunk_size=model.jacobian_options.get("chunk_size"),
        mode=model.jacobian_options.get("mode", "auto"),
        method=model.logdet_method,
        out_features=model.data_size,
        jacobian_chunk=model.jacobian_options.get("jacobian_chunk"),
    )


class ManifoldFlowBase(Model):
    """Shared maths of models whose decoder is g(u) = f(u, 0) (M-flow, M_e-flow, PIE).

    Args:
        outer: f as a transform ``x -> (u, v)`` on flat ``(B, d)`` vectors.
        inner: h as a transform ``u -> u~`` on ``(B, n)`` (context always enters h).
        data_dim: d or ``(C, H, W)``.
        latent_dim: n.
        context_dim: dimension of theta.
        conditional_outer: whether the context also enters f.
        config: rebuild information (set by ``make_model``).
    """

    def __init__(
        self,
        outer: Transform,
        inner: Transform,
        data_dim: int | tuple[int, ...],
        latent_dim: int,
        context_dim: int = 0,
        conditional_outer: bool = False,
        config: dict[str, Any] | None = None,
    ):
        super().__init__(data_dim, latent_dim, context_dim, config)
        if not 0 < self.latent_dim <= self.data_size:
            raise InvalidArgumentError(
                f"expected 0 < latent_dim <= {self.data_size}, got latent_dim={latent_dim}"
            )
        self.outer = outer
        self.inner = inner
        self.conditional_outer = bool(conditional_outer)

    def _outer_context(self, context: Tensor | None) -> Tensor | None:
        return context if self.conditional_outer else None

    def _encode(self, x: Tensor, context: Tensor | None) -> Tensor:
        z, _ = self.outer(x, self._outer_context(context))
        return unpad(z, self.latent_dim)

    def _decode(self, u: Tensor, context: Tensor | None) -> Tensor:
        x, _ = self.outer.inverse(pad(u, self.data_size), self._outer_context(context))
        return x

    def _manifold_log_prob(self, u: Tensor, context: Tensor | None) -> Tensor:
        """log p_u(u) - 1/2 log det(J_g^T J_g) at u (``(B, n) -> (B,)``)."""
        logdet = _volume_logdet(self, self._decode, u, self._outer_context(context))
        return self._latent_log_prob(u, context) - 0.5 * logdet

    def manifold_parameters(self) -> list[nn.Parameter]:
        """Parameters of the outer flow f."""
        return list(self.outer.parameters())


class MFlow(ManifoldFlowBase):
    """M-flow: manifold g(u) = f(u, 0), encoder g^-1(x) = f^-1(x)[:n], density through h.

    ``log_prob(x)`` is the exact manifold density at the projection of x (module docstring).
    """

    kind = "mflow"

    def _log_prob(self, x: Tensor, context: Tensor | None) -> Tensor:
        return self._manifold_log_prob(self._encode(x, context), context)

    def _sample_log_prob(self, u: Tensor, x: Tensor, context: Tensor | None) -> Tensor:
        return self._manifold_log_prob(u, context)


class FOM(Model):
    """Flow on a prescribed manifold: a fixed chart g* and a learned inner flow h.

    log p(x) = log p_u(u) - 1/2 log det(J^T J), u = g*^-1(x), J = J_g*(u).

    Args:
        chart: a chart (see :mod:`mflows.embeddings`) with ``decode`` R^n -> R^d and ``encode``.
        inner: h as a transform ``u -> u~`` on ``(B, n)``.
        data_dim: d.
        latent_dim: n.
        context_dim: dimension of theta (enters h only).
        config: rebuild information (set by ``make_model``).
    """

    kind = "fom"

    def __init__(
        self,
        chart: Any,
        inner: Transform,
        data_dim: int,
        latent_dim: int,
        context_dim: int = 0,
        config: dict[str, Any] | None = None,
    ):
        super().__init__(data_dim, latent_dim, context_dim, config)
        for attribute in ("encode", "decode"):
            if not callable(getattr(chart, attribute, None)):
                raise InvalidArgumentError(
                    f"chart must have a callable {attribute}(); got {chart!r}"
                )
        self.chart = chart
        self.inner = inner

    def _encode(self, x: Tensor, context: Tensor | None) -> Tensor:
        return self.chart.encode(x)

    def _decode(self, u: Tensor, context: Tensor | None) -> Tensor:
        return self.chart.decode(u)

    def _log_prob(self, x: Tensor, context: Tensor | None) -> Tensor:
        u = self._encode(x, context)
        return self._chart_log_prob(u, context)

    def _chart_log_prob(self, u: Tensor, context: Tensor | None) -> Tensor:
        logdet = _volume_logdet(self, lambda ui, _: self.chart.decode(ui), u, None)
        return self._latent_log_prob(u, context) - 0.5 * logdet

    def _sample_log_prob(self, u: Tensor, x: Tensor, context: Tensor | None) -> Tensor:
        return self._chart_log_prob(u, context)

    def manifold_parameters(self) -> list[nn.Parameter]:
        """None: the manifold is prescribed."""
        return []
