"""Gaussians on an n-sphere embedded in R^d: ``spherical_gaussian`` and its conditional version.

Sampling: angles ``phi_i ~ N(mu_i, sigma_i^2)`` wrapped to ``[0, 2 pi)``, a radius ``1 + eps_0``
and off-sphere coordinates ``eps_1 .. eps_{d-n-1}``, all ``eps ~ N(0, epsilon^2)``;
``x = ((1 + eps_0) S(phi), eps_1, ...)`` with the hyperspherical embedding

    S(phi)_1 = cos phi_1,  S(phi)_k = sin phi_1 ... sin phi_{k-1} cos phi_k,
    S(phi)_{n+1} = sin phi_1 ... sin phi_n,

whose area element is ``prod_{i=1}^{n-1} sin(phi_i)^(n-i)``.

The true density. Wrapped angles outside the canonical ranges (``[0, pi]`` for the polar angles
``phi_1 .. phi_{n-1}``, ``[0, 2 pi)`` for the azimuth ``phi_n``) land on the same sphere points as
canonical ones: flipping polar angle i (``phi_i -> -phi_i``) negates ``sin phi_i`` and hence all
later coordinates, which the antipodal map of the remaining sphere undoes
(``phi_j -> pi - phi_j`` for later polar angles, ``phi_n -> phi_n + pi``). These flips form the
group ``Z_2^(n-1)``; every point has exactly its ``2^(n-1)`` images as pre-images, each mapped with
unit Jacobian, so the density of the canonical angles ``c`` is

    p_c(c) = sum_{b in {0,1}^(n-1)} prod_i q_i(psi_i(c, b)),

with ``q_i`` the wrapped normal density and ``psi_i`` depending on ``b_i`` and the parity of the
earlier flips only: ``psi_i = (-1)^(m_i + b_i) c_i + pi m_i`` (polar), ``psi_n = c_n + pi m_n``,
``m_i = b_1 + ... + b_{i-1} mod 2``. The sum is a two-state forward recursion over i (linear in
n). The density of x in R^d follows with ``x = (r S(c), eps)``:

    log p(x) = log p_c(c) - log A(c) - n log r
               + log N(r - 1; 0, eps^2) + sum_k log N(eps_k; 0, eps^2),

with ``A(c)`` the area element; ``log p_c(c) - log A(c)`` alone is the density on the sphere.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp

from .base import SeedLike, SimulatedDataset, as_rng

__all__ = [
    "ConditionalSphericalGaussian",
    "SphericalGaussian",
    "log_area_element",
    "log_canonical_angle_density",
    "sphere_angles",
    "sphere_embedding",
]

_TWO_PI = 2.0 * math.pi
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def sphere_embedding(phi: np.ndarray) -> np.ndarray:
    """Hyperspherical embedding ``S: (*, n) angles -> (*, n + 1)`` points on the unit sphere."""
    phi = np.asarray(phi, dtype=np.float64)
    sin_prod = np.cumprod(np.sin(phi), axis=-1)
    prefix = np.concatenate([np.ones_like(phi[..., :1]), sin_prod[..., :-1]], axis=-1)
    return np.concatenate([prefix * np.cos(phi), sin_prod[..., -1:]], axis=-1)


def sphere_angles(y: np.ndarray) -> np.ndarray:
    """Canonical angles ``(*, n)`` of points ``(*, n + 1)`` (any radius): the inverse of S.

    Polar angles in ``[0, pi]``, the azimuth in ``[0, 2 pi)``.
    """
    y = np.asarray(y, dtype=np.float64)
    # tail[..., i] = |y[..., i+1:]|
    sq = y[..., ::-1] ** 2
    tail = np.sqrt(np.cumsum(sq, axis=-1))[..., ::-1][..., 1:]
    n = y.shape[-1] - 1
    polar = np.arctan2(tail[..., : n - 1], y[..., : n - 1])
    azimuth = np.mod(np.arctan2(y[..., n], y[..., n - 1]), _TWO_PI)
    return np.concatenate([polar, azimuth[..., None]], axis=-1)


def log_area_element(c: np.ndarray) -> np.ndarray:
    """``log prod_{i=1}^{n-1} sin(c_i)^(n-i)`` for angles ``(*, n)``, shape ``(*,)``."""
    c = np.asarray(c, dtype=np.float64)
    n = c.shape[-1]
    powers = np.arange(n - 1, 0, -1, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.sum(powers * np.log(np.abs(np.sin(c[..., : n - 1]))), axis=-1)


def _log_wrapped_normal(a: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Log density on ``[0, 2 pi)`` of ``N(mu, sigma^2)`` wrapped modulo ``2 pi`` (elementwise)."""
    a = np.mod(a, _TWO_PI)
    shifts = _TWO_PI * np.arange(-4, 5, dtype=np.float64)
    z = (a[..., None] + shifts - mu[..., None]) / sigma[..., None]
    return logsumexp(-0.5 * z**2, axis=-1) - np.log(sigma) - _LOG_SQRT_2PI


def log_canonical_angle_density(c: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Log density of canonical angles ``c`` ``(B, n)`` when ``phi ~ N(mu, sigma^2)`` is wrapped.

    Sums the wrapped-normal density over the ``2^(n-1)`` pre-images of each point (see the
    module docstring) with a two-state forward recursion over the flip parity.

    Args:
        c: Canonical angles, ``(B, n)``.
        mu, sigma: Means and widths of the unwrapped angles, broadcastable to ``(B, n)``.

    Returns:
        ``log p_c(c)``, shape ``(B,)``.
    """
    c = np.asarray(c, dtype=np.float64)
    mu = np.broadcast_to(mu, c.shape)
    sigma = np.broadcast_to(sigma, c.shape)
    n = c.shape[-1]
    log_even = np.zeros(c.shape[:-1])  # log-sum over flip patterns with even parity so far
    log_odd = np.full(c.shape[:-1], -np.inf)
    for i in range(n - 1):
        ci, mi, si = c[..., i], mu[..., i], sigma[..., i]
        keep_even = _log_wrapped_normal(ci, mi, si)  # parity 0, no flip: psi = c
        flip_even = _log_wrapped_normal(-ci, mi, si)  # parity 0, flip: psi = -c
        keep_odd = _log_wrapped_normal(math.pi - ci, mi, si)  # parity 1, no flip: pi - c
        flip_odd = _log_wrapped_normal(math.pi + ci, mi, si)  # parity 1, flip: pi + c
        log_even, log_odd = (
            np.logaddexp(log_even + keep_even, log_odd + flip_odd),
            np.logaddexp(log_even + flip_even, log_odd + keep_odd),
        )
    cn, mn, sn = c[..., -1], mu[..., -1], sigma[..., -1]
    return np.logaddexp(
        log_even + _log_wrapped_normal(cn, mn, sn),
        log_odd + _log_wrapped_normal(cn + math.pi, mn, sn),
    )


def _log_normal(x: np.ndarray, sigma: float) -> np.ndarray:
    return -0.5 * (x / sigma) ** 2 - math.log(sigma) - _LOG_SQRT_2PI


class _SphericalBase(SimulatedDataset):
    """Shared machinery of the spherical data sets; subclasses define the angle distribution."""

    def __init__(self, n: int = 8, d: int = 9, epsilon: float = 0.01, data_dir=None) -> None:
        if not (isinstance(n, int | np.integer) and n >= 1):
            raise ValueError(f"{self.name}: expected an integer n >= 1, got {n!r}")
        if not (isinstance(d, int | np.integer) and d > n):
            raise ValueError(f"{self.name}: expected an integer d > n = {n}, got {d!r}")
        if not epsilon > 0:
            raise ValueError(f"{self.name}: expected epsilon > 0, got {epsilon!r}")
        self.latent_dim = int(n)
        self.data_dim = int(d)
        self.epsilon = float(epsilon)

    def _angle_parameters(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Means and widths ``(B, n)`` of the unwrapped angles for ``(B, p)`` parameters."""
        raise NotImplementedError

    def _embed(self, phi: np.ndarray, eps: np.ndarray) -> np.ndarray:
        r = 1.0 + eps[:, :1]
        return np.concatenate([r * sphere_embedding(phi), eps[:, 1:]], axis=1)

    def _draw_angles(self, n: int, theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        mu, sigma = self._angle_parameters(theta)
        return np.mod(rng.normal(mu, sigma, size=(n, self.latent_dim)), _TWO_PI)

    def sample(self, n: int, theta: np.ndarray | None = None, seed: SeedLike = None) -> np.ndarray:
        """Simulates ``(n, d)`` points (at ``theta``, default ``default_theta``, if conditional)."""
        rng = as_rng(seed)
        theta = self._theta_rows(theta, n)
        phi = self._draw_angles(n, theta, rng)
        eps = rng.normal(0.0, self.epsilon, size=(n, self.data_dim - self.latent_dim))
        return self._embed(phi, eps)

    def sample_ood(self, n: int, seed: SeedLike = None) -> np.ndarray:
        """Data angles; off-sphere coordinates (radius offset included) ~ U(-3 eps, 0)."""
        rng = as_rng(seed)
        phi = self._draw_angles(n, self._theta_rows(None, n), rng)
        eps = rng.uniform(-3.0 * self.epsilon, 0.0, size=(n, self.data_dim - self.latent_dim))
        return self._embed(phi, eps)

    def _split(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = self._check_x(x)
        y = x[:, : self.latent_dim + 1]
        return y, np.linalg.norm(y, axis=1), x[:, self.latent_dim + 1 :]

    def log_density(self, x: np.ndarray, theta: np.ndarray | None = None) -> np.ndarray:
        """Exact log density of ``(B, d)`` points in R^d, ``(B,)`` (formula in the module doc)."""
        y, r, rest = self._split(x)
        c = sphere_angles(y)
        mu, sigma = self._angle_parameters(self._theta_rows(theta, len(c)))
        with np.errstate(divide="ignore"):
            return (
                log_canonical_angle_density(c, mu, sigma)
                - log_area_element(c)
                - self.latent_dim * np.log(r)
                + _log_normal(r - 1.0, self.epsilon)
                + np.sum(_log_normal(rest, self.epsilon), axis=1)
            )

    def log_density_on_manifold(self, x: np.ndarray, theta: np.ndarray | None = None) -> np.ndarray:
        """Log density on the unit sphere (w.r.t. its area) at the projection of x, ``(B,)``."""
        y, _, _ = self._split(x)
        c = sphere_angles(y)
        mu, sigma = self._angle_parameters(self._theta_rows(theta, len(c)))
        with np.errstate(divide="ignore"):
            return log_canonical_angle_density(c, mu, sigma) - log_area_element(c)

    def distance_to_manifold(self, x: np.ndarray) -> np.ndarray:
        """``sqrt((|x_{1..n+1}| - 1)^2 + |x_{n+2..d}|^2)``, shape ``(B,)``."""
        _, r, rest = self._split(x)
        return np.sqrt((r - 1.0) ** 2 + np.sum(rest**2, axis=1))

    def project_to_manifold(self, x: np.ndarray) -> np.ndarray:
        """Nearest point of the sphere: ``(x_{1..n+1} / |x_{1..n+1}|, 0, ..., 0)``."""
        y, r, rest = self._split(x)
        return np.concatenate([y / r[:, None], np.zeros_like(rest)], axis=1)

    def _extra_description(self) -> list[str]:
        return [f"epsilon (off-manifold noise): {self.epsilon}"]


class SphericalGaussian(_SphericalBase):
    """Wrapped Gaussian on an n-sphere in R^d with Gaussian off-manifold noise.

    Angles ``phi_i ~ N(pi/2, (pi/4)^2)`` wrapped to ``[0, 2 pi)``; see :mod:`mflows.data.spherical`.

    Args:
        n: Sphere dimension (manifold dimension), default 8.
        d: Data dimension, ``d > n``, default 9.
        epsilon: Standard deviation of the radius offset and off-sphere coordinates.
    """

    name = "spherical_gaussian"

    def _angle_parameters(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        shape = (len(theta), self.latent_dim)
        return np.full(shape, 0.5 * math.pi), np.full(shape, 0.25 * math.pi)


class ConditionalSphericalGaussian(_SphericalBase):
    """Wrapped Gaussian on an n-sphere whose widths and last mean depend on theta in [-1, 1]^2.

    Widths ``0.1 pi + (0.5 + 0.5 theta_0) 0.3 pi`` for all angles; means ``pi/2`` except the
    last, ``0.5 pi + (0.5 + 0.5 theta_1) pi``. Uniform prior on ``[-1, 1]^2``.

    Args:
        n: Sphere dimension, default 8.
        d: Data dimension, ``d > n``, default 9.
        epsilon: Standard deviation of the radius offset and off-sphere coordinates.
    """

    name = "conditional_spherical_gaussian"
    parameter_dim = 2

    def __init__(self, n: int = 8, d: int = 9, epsilon: float = 0.01, data_dir=None) -> None:
        super().__init__(n, d, epsilon, data_dir)
        self.default_theta = np.zeros(2)

    def _angle_parameters(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = self.latent_dim
        width = 0.1 * math.pi + (0.5 + 0.5 * theta[:, :1]) * 0.3 * math.pi
        sigma = np.broadcast_to(width, (len(theta), n)).copy()
        mu = np.full((len(theta), n), 0.5 * math.pi)
        mu[:, -1] = 0.5 * math.pi + (0.5 + 0.5 * theta[:, 1]) * math.pi
        return mu, sigma

    def sample_prior(self, n: int, seed: SeedLike = None) -> np.ndarray:
        """Uniform on ``[-1, 1]^2``, ``(n, 2)``."""
        return as_rng(seed).uniform(-1.0, 1.0, size=(n, 2))

    def log_prior(self, theta: np.ndarray) -> np.ndarray:
        """``-2 log 2`` inside ``[-1, 1]^2``, ``-inf`` outside; shape ``(B,)``."""
        theta = np.asarray(theta, dtype=np.float64).reshape(-1, 2)
        inside = np.all(np.abs(theta) <= 1.0, axis=1)
        return np.where(inside, -2.0 * math.log(2.0), -np.inf)
