"""PIE (pseudo-invertible encoder): an ambient flow whose latent space is split.

f^-1(x) = (u, v): u in R^n goes through the inner flow h (base N(0, I_n)), v in R^{d-n} has the
narrow base N(0, eps^2 I). The density is the ambient one,

    log p(x) = log N(h^-1(u)) + log |det J_h^-1| + log N(v; 0, eps^2 I) + log |det J_f^-1(x)|,

and sampling sets v = 0, so samples lie on the manifold g(u) = f(u, 0). ``log_prob_manifold``
evaluates the M-flow density on that manifold. With ``conditional_outer=True`` the context
enters f as well as h (the original PIE); with False only h sees it ("PIE with an unconditional
manifold").

References:
    Flows for simultaneous manifold learning and density estimation.
    J. Brehmer and K. Cranmer, NeurIPS 2020, arXiv:2003.13913.
    Pseudo-invertible encoder. J. Beitler, I. Sosnovik, A. Smeulders, 2019, arXiv:1902.00066.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from mflows.distributions import normal_log_prob
from mflows.errors import InvalidArgumentError
from mflows.models.mflow import ManifoldFlowBase
from mflows.transforms.base import Transform

__all__ = ["PIE"]


class PIE(ManifoldFlowBase):
    """PIE; see the module docstring.

    Args:
        outer: f as a transform ``x -> (u, v)`` on flat ``(B, d)`` vectors.
        inner: h as a transform ``u -> u~`` on ``(B, n)``.
        data_dim: d or ``(C, H, W)``.
        latent_dim: n.
        context_dim: dimension of theta.
        epsilon: width of the off-manifold base density (0.01 by default).
        conditional_outer: whether the context also enters f (True: the original PIE).
        config: rebuild information (set by ``make_model``).
    """

    kind = "pie"

    def __init__(
        self,
        outer: Transform,
        inner: Transform,
        data_dim: int | tuple[int, ...],
        latent_dim: int,
        context_dim: int = 0,
        epsilon: float = 0.01,
        conditional_outer: bool = True,
        config: dict[str, Any] | None = None,
    ):
        super().__init__(outer, inner, data_dim, latent_dim, context_dim, conditional_outer, config)
        if epsilon <= 0:
            raise InvalidArgumentError(f"epsilon must be positive, got {epsilon}")
        self.epsilon = float(epsilon)

    def _log_prob(self, x: Tensor, context: Tensor | None) -> Tensor:
        z, logabsdet = self.outer(x, self._outer_context(context))
        u, v = z[:, : self.latent_dim], z[:, self.latent_dim :]
        return self._latent_log_prob(u, context) + normal_log_prob(v, self.epsilon) + logabsdet

    def log_prob_manifold(
        self, x: Any, context: Any = None, *, jacobian_chunk: int | None = None
    ) -> Tensor:
        """Exact density on PIE's manifold g(u) = f(u, 0) at the projection of x (M-flow formula).

        Args:
            x: ``(B, *data_dim)``.
            context: ``(B, context_dim)`` or ``None``.
            jacobian_chunk: decoder Jacobian columns per block, as in :meth:`Model.log_prob`.

        Returns:
            ``(B,)``.
        """
        x = self._check_x(x)
        context = self._check_context(context, x.shape[0])
        with self._jacobian_chunk_override(jacobian_chunk):
            logp = self._chunked(
                lambda xi, ci: self._manifold_log_prob(self._encode(xi, ci), ci), x, context
            )
        return self._checked("log_prob_manifold", logp, x, log_density=True)
