"""Embeddings between the manifold coordinates R^n and the data space R^d.

* :func:`pad` / :func:`unpad`: the zero padding R^n -> R^d, u -> (u, 0), and its left inverse
  (keep the first n coordinates) used by M-flows: g(u) = f(pad(u)), g^-1(x) = unpad(f^-1(x)).
* Charts for the flow on a prescribed manifold (FOM). A chart is any object with

  - ``latent_dim`` (n) and ``data_dim`` (d) attributes,
  - ``decode(u) -> x``: ``(B, n) -> (B, d)``, differentiable and ``torch.func``-safe (it is
    differentiated in forward mode (blocks of Jacobian columns) on batches of samples),
  - ``encode(x) -> u``: ``(B, d) -> (B, n)``, a left inverse, ``encode(decode(u)) == u`` on the
    chart's domain; ``decode(encode(x))`` is the point of the manifold that x is mapped to.

  :class:`SphereChart` is the unit n-sphere in hyperspherical coordinates,
  :class:`StereographicChart` the same sphere seen from one removed point (no seam). A chart
  that is a :class:`torch.nn.Module` moves with the model (``.to``, ``.double``); its
  parameters are not trained (a FOM has no trainable manifold parameters).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from mflows.errors import InvalidArgumentError

__all__ = ["SphereChart", "StereographicChart", "pad", "unpad"]


def pad(u: Tensor, features: int) -> Tensor:
    """Zero padding ``(B, n) -> (B, features)``: (u, 0)."""
    return torch.cat([u, u.new_zeros(*u.shape[:-1], features - u.shape[-1])], dim=-1)


def unpad(z: Tensor, features: int) -> Tensor:
    """Keeps the first ``features`` coordinates, ``(B, d) -> (B, features)``: the left inverse of
    :func:`pad` (not to be confused with :meth:`mflows.models.Model.project`, the projection of
    data onto the learned manifold)."""
    return z[..., :features]


class SphereChart(nn.Module):
    r"""The unit n-sphere S^n in R^{n+1}, zero padded to R^d, in hyperspherical coordinates.

    decode: angles phi = (phi_1, ..., phi_n), phi_1..phi_{n-1} in [0, pi], phi_n in [0, 2 pi):

        x_k = cos(phi_k) prod_{i<k} sin(phi_i)  (k = 1..n),   x_{n+1} = prod_{i<=n} sin(phi_i),

    and x_{n+2..d} = 0. encode: phi_k = atan2(|x_{k+1:n+1}|, x_k) for k < n and
    phi_n = atan2(x_{n+1}, x_n) mod 2 pi, so ``decode(encode(x))`` is the radial projection of
    (x_1..x_{n+1}) onto the sphere. The volume element is
    sqrt(det J^T J) = prod_{i=1}^{n-1} sin(phi_i)^(n-i).

    With ``unbounded=True`` the chart's coordinates are u in R^n with phi_i = pi sigmoid(u_i) for
    the polar angles and phi_n = 2 pi sigmoid(u_n) for the azimuth, so decode is a diffeomorphism
    from all of R^n onto the sphere (up to a null set) and a FOM built on it has a density that
    integrates to exactly 1 over the sphere. With plain angles (the original paper's FOM) the
    latent mass that the inner flow puts outside [0, pi]^(n-1) x [0, 2 pi) is lost: the density
    on the sphere is then normalised only once training has pushed all mass into that domain.

    With ``squash="normal"`` (``chart="sphere-probit"``) the angles are instead
    phi_i = pi Phi(u_i) and phi_n = 2 pi Phi(u_n), Phi the standard normal CDF. The difference
    is in the tails: a density on the angles that stays positive at the ends of their domain
    (the poles, where a polar angle is 0 or pi, and both sides of the azimuth's wrap) is, in
    logit coordinates, a density with exponential tails, which a flow with a Gaussian base and
    linear spline tails cannot produce; in probit coordinates it is a bounded multiple of the
    standard normal density (the uniform density on the angles is exactly N(0, I)).

    Args:
        latent_dim: n >= 1.
        data_dim: d >= n + 1.
        unbounded: use the unbounded coordinates described above (``make_model("fom")`` with
            ``chart="sphere"`` does); ``False`` keeps raw angles (``chart="sphere-angles"``).
        squash: the map from R onto the angle ranges when ``unbounded``: ``"logistic"``
            (``chart="sphere"``) or ``"normal"`` (``chart="sphere-probit"``).
    """

    #: clamp of the squashed coordinate phi / range in encode, so poles and the azimuth seam
    #: map to finite u.
    EPS = 1e-7

    def __init__(
        self, latent_dim: int, data_dim: int, unbounded: bool = False, squash: str = "logistic"
    ):
        super().__init__()
        if latent_dim < 1 or data_dim < latent_dim + 1:
            raise InvalidArgumentError(
                f"SphereChart needs 1 <= latent_dim < data_dim, got n={latent_dim}, d={data_dim}"
            )
        if squash not in ("logistic", "normal"):
            raise InvalidArgumentError(f"squash must be 'logistic' or 'normal', got {squash!r}")
        self.latent_dim = int(latent_dim)
        self.data_dim = int(data_dim)
        self.unbounded = bool(unbounded)
        self.squash = squash
        scale = torch.full((self.latent_dim,), math.pi, dtype=torch.float64)
        scale[-1] = 2 * math.pi
        self.register_buffer("scale", scale.to(torch.get_default_dtype()), persistent=False)

    def decode(self, u: Tensor) -> Tensor:
        """Coordinates ``(B, n)`` (angles, or logit angles if unbounded) -> sphere ``(B, d)``."""
        if self.unbounded:
            unit = torch.sigmoid(u) if self.squash == "logistic" else torch.special.ndtr(u)
            u = self.scale.to(u.dtype) * unit
        sin_prods = torch.cumprod(torch.cat([torch.ones_like(u[..., :1]), torch.sin(u)], -1), -1)
        cos_terms = torch.cat([torch.cos(u), torch.ones_like(u[..., :1])], -1)
        return pad(sin_prods * cos_terms, self.data_dim)

    def encode(self, x: Tensor) -> Tensor:
        """Points ``(B, d)`` -> coordinates ``(B, n)`` of their radial projection on the sphere."""
        n = self.latent_dim
        y = x[..., : n + 1]
        # The angles do not depend on |y|: divide by max |y_k| first, so that squaring cannot
        # overflow (|x| >= 1e20 in float32) or underflow (|x| <= 1e-16) below.
        scale = y.abs().amax(-1, keepdim=True)
        y = y / torch.where(scale > 0, scale, torch.ones_like(scale))
        # tail[k] = |y_{k:}|^2 in [0, n + 1]; clamp before sqrt so gradients stay finite at 0.
        tail = torch.flip(torch.cumsum(torch.flip(y.square(), [-1]), -1), [-1])
        tail_norm = torch.sqrt(tail[..., 1:].clamp_min(torch.finfo(y.dtype).tiny))
        angles = torch.atan2(tail_norm[..., : n - 1], y[..., : n - 1])
        last = torch.remainder(torch.atan2(y[..., n], y[..., n - 1]), 2 * math.pi)
        phi = torch.cat([angles, last.unsqueeze(-1)], -1)
        if not self.unbounded:
            return phi
        unit = phi / self.scale.to(phi.dtype)
        if self.squash == "logistic":
            return torch.logit(unit, eps=self.EPS)
        return torch.special.ndtri(unit.clamp(self.EPS, 1 - self.EPS))

    def extra_repr(self) -> str:
        return (
            f"latent_dim={self.latent_dim}, data_dim={self.data_dim}, "
            f"unbounded={self.unbounded}, squash={self.squash}"
        )


class StereographicChart(nn.Module):
    r"""The unit n-sphere S^n in R^{n+1}, zero padded to R^d, in stereographic coordinates.

    The chart covers the whole sphere except one point, the *pole* ``-c`` opposite a centre
    ``c``: with ``y' = Q y`` (``Q`` the Householder reflection that swaps ``c`` and the last axis
    ``e_{n+1}``),

        decode: y' = (2 u, 1 - |u|^2) / (1 + |u|^2),   encode: u = y'_{1..n} / (1 + y'_{n+1}),

    so ``u = 0`` is the centre and ``|u| -> inf`` the pole. Unlike hyperspherical angles it has
    no seam and no chart poles where the density on the sphere must vanish or blow up; a smooth
    density on the sphere becomes a smooth density on all of R^n. The volume element is
    ``sqrt(det J^T J) = (2 / (1 + |u|^2))^n``. ``encode`` maps x to the chart point of the radial
    projection of (x_1..x_{n+1}) onto the sphere (the off-sphere coordinates are dropped).

    The centre is a buffer saved with the model. :func:`mflows.fit` sets it once, before
    training a fresh model, to the mean direction of the training data (:meth:`fit_to_data`),
    so the removed pole falls where the data is sparsest; until then it is ``e_{n+1}``.

    Args:
        latent_dim: n >= 1.
        data_dim: d >= n + 1.
        center: optional centre direction in R^{n+1} (normalised; marks the chart as fitted).
    """

    def __init__(self, latent_dim: int, data_dim: int, center: Any = None):
        super().__init__()
        if latent_dim < 1 or data_dim < latent_dim + 1:
            raise InvalidArgumentError(
                "StereographicChart needs 1 <= latent_dim < data_dim, "
                f"got n={latent_dim}, d={data_dim}"
            )
        self.latent_dim = int(latent_dim)
        self.data_dim = int(data_dim)
        eye = torch.eye(self.latent_dim + 1, dtype=torch.get_default_dtype())
        self.register_buffer("rotation", eye)
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        if center is not None:
            self.set_center(center)

    @property
    def is_fitted(self) -> bool:
        """Whether the centre was set (by :meth:`set_center` or :meth:`fit_to_data`)."""
        return bool(self.fitted)

    @property
    def center(self) -> Tensor:
        """The centre ``c`` (``u = 0``), a unit vector in R^{n+1}; the pole is ``-c``."""
        return self.rotation[:, -1]

    @torch.no_grad()
    def set_center(self, center: Any) -> None:
        """Sets the centre direction ``c`` (any non-zero vector of R^{n+1})."""
        c = torch.as_tensor(center, dtype=torch.float64).reshape(-1)
        if c.numel() != self.latent_dim + 1 or not bool(torch.isfinite(c).all()):
            raise InvalidArgumentError(
                f"expected a finite centre of {self.latent_dim + 1} values, got {tuple(c.shape)}"
            )
        norm = float(c.norm())
        if norm == 0.0:
            raise InvalidArgumentError("the chart centre must be a non-zero vector")
        c = c / norm
        v = -c
        v[-1] += 1.0  # v = e_{n+1} - c
        q = torch.eye(self.latent_dim + 1, dtype=torch.float64)
        if float(v.norm()) > 1e-12:
            q = q - 2.0 * torch.outer(v, v) / v.dot(v)
        self.rotation.copy_(q.to(self.rotation))
        self.fitted.fill_(True)

    @torch.no_grad()
    def fit_to_data(self, x: Tensor) -> None:
        """Centres the chart at the mean direction of the points ``x`` ``(N, d)`` (radially
        projected onto the sphere first); keeps ``e_{n+1}`` if the points have no mean
        direction (mean of the unit vectors below 1e-3)."""
        y = x[..., : self.latent_dim + 1].double()
        y = y / y.norm(dim=-1, keepdim=True).clamp_min(1e-300)
        mean = y.mean(0)
        if float(mean.norm()) > 1e-3:
            self.set_center(mean)
        else:
            self.fitted.fill_(True)

    def decode(self, u: Tensor) -> Tensor:
        """Coordinates ``(B, n)`` -> points on the sphere ``(B, d)``."""
        s = u.square().sum(-1, keepdim=True)
        y = torch.cat([2.0 * u, 1.0 - s], -1) / (1.0 + s)
        return pad(y @ self.rotation.to(u.dtype), self.data_dim)  # Q symmetric: Q y' = y' Q

    def encode(self, x: Tensor) -> Tensor:
        """Points ``(B, d)`` -> coordinates ``(B, n)`` of their radial projection."""
        y = x[..., : self.latent_dim + 1]
        scale = y.abs().amax(-1, keepdim=True)  # as SphereChart.encode: no overflow in the norm
        y = y / torch.where(scale > 0, scale, torch.ones_like(scale))
        y = y / y.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(y.dtype).tiny)
        y = y @ self.rotation.to(y.dtype)
        denominator = (1.0 + y[..., -1:]).clamp_min(torch.finfo(y.dtype).tiny)
        return y[..., :-1] / denominator

    def extra_repr(self) -> str:
        return f"latent_dim={self.latent_dim}, data_dim={self.data_dim}"
