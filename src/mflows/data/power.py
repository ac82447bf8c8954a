"""``power``: a Gaussian mixture on a polynomial surface in R^3 with one parameter.

Latent ``z ~ 0.6 N((1, -1), 2^2 I) + 0.4 N((-1, 1), s(theta)^2 I)`` with
``s = 0.2 + 0.8 (0.5 + 0.5 theta)``, surface height
``f(z) = exp(-0.1 |z|^2) sum_k a_k z0^i_k z1^j_k`` (total degree <= 5), and
``x = R (z0, z1, f(z))`` with the coefficients ``a`` and the rotation ``R`` of
``resources/polynomial_surface_constants.json``. The density on the surface (w.r.t. its area) is

    p_M(x) = p(z | theta) / sqrt(1 + |grad f(z)|^2),

the square root being the area element ``sqrt(det J^T J)`` of the chart ``z -> x``. The original
research code omitted this factor and returned 0 instead of ``-inf`` off the surface.
"""

from __future__ import annotations

import json
import math
from importlib import resources

import numpy as np

from .base import SeedLike, SimulatedDataset, as_rng

__all__ = ["PolynomialSurface", "load_surface_constants"]

_LOG_2PI = math.log(2.0 * math.pi)


def load_surface_constants() -> dict:
    """The coefficients, exponents and rotation of the surface, as NumPy arrays."""
    text = (
        resources.files("mflows.data")
        .joinpath("resources/polynomial_surface_constants.json")
        .read_text()
    )
    raw = json.loads(text)
    return {
        "coefficients": np.asarray(raw["coefficients"], dtype=np.float64),
        "exponents": np.asarray(raw["exponents"], dtype=np.int64),
        "rotation": np.asarray(raw["rotation"], dtype=np.float64),
    }


class PolynomialSurface(SimulatedDataset):
    """Gaussian mixture on a polynomial surface in R^3 (d = 3, n = 2, theta in [-1, 1]).

    Args:
        tolerance: Largest offset from the surface at which :meth:`log_density` still counts a
            point as on the surface (float32 data carry offsets of about 1e-6).
    """

    name = "power"
    data_dim = 3
    latent_dim = 2
    parameter_dim = 1
    weights = (0.6, 0.4)
    suppression = 0.1

    def __init__(self, tolerance: float = 1e-5, data_dir=None) -> None:
        constants = load_surface_constants()
        self.coefficients = constants["coefficients"]
        self.exponents = constants["exponents"]
        self.rotation = constants["rotation"]
        self.tolerance = float(tolerance)
        self.default_theta = np.zeros(1)

    # The surface --------------------------------------------------------------------------------

    def _polynomial(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``P(z)`` ``(B,)`` and its gradient ``(B, 2)``."""
        i, j = self.exponents[:, 0], self.exponents[:, 1]
        top = int(self.exponents.max())
        # powers[:, k, a] = z_a^k, with a zero row for z^(-1) so that derivatives index cleanly
        powers = np.cumprod(
            np.concatenate([np.ones((len(z), 1, 2)), np.repeat(z[:, None], top, 1)], 1), 1
        )
        powers = np.concatenate([np.zeros((len(z), 1, 2)), powers], 1)
        p0, p1 = powers[:, 1:, 0], powers[:, 1:, 1]
        q0, q1 = powers[:, :-1, 0], powers[:, :-1, 1]  # z^(k-1)
        a = self.coefficients
        value = (p0[:, i] * p1[:, j]) @ a
        d0 = (q0[:, i] * p1[:, j]) @ (i * a)
        d1 = (p0[:, i] * q1[:, j]) @ (j * a)
        return value, np.stack([d0, d1], axis=1)

    def surface_height(self, z: np.ndarray) -> np.ndarray:
        """``f(z) = exp(-0.1 |z|^2) P(z)`` for ``(B, 2)`` latents, ``(B,)``."""
        z = np.asarray(z, dtype=np.float64)
        value, _ = self._polynomial(z)
        return np.exp(-self.suppression * np.sum(z**2, axis=1)) * value

    def surface_gradient(self, z: np.ndarray) -> np.ndarray:
        """``grad f(z) = exp(-0.1 |z|^2) (grad P - 0.2 z P)``, shape ``(B, 2)``."""
        z = np.asarray(z, dtype=np.float64)
        value, grad = self._polynomial(z)
        damp = np.exp(-self.suppression * np.sum(z**2, axis=1))[:, None]
        return damp * (grad - 2.0 * self.suppression * z * value[:, None])

    def log_area_element(self, z: np.ndarray) -> np.ndarray:
        """``log sqrt(1 + |grad f(z)|^2)``, the area element of ``z -> x``, shape ``(B,)``."""
        return 0.5 * np.log1p(np.sum(self.surface_gradient(z) ** 2, axis=1))

    def embed(self, z: np.ndarray) -> np.ndarray:
        """``x = R (z0, z1, f(z))`` for ``(B, 2)`` latents, ``(B, 3)``."""
        z = np.asarray(z, dtype=np.float64)
        return np.concatenate([z, self.surface_height(z)[:, None]], axis=1) @ self.rotation.T

    def chart(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Latent ``z`` ``(B, 2)`` and offset ``(R^T x)_2 - f(z)`` ``(B,)`` of points ``(B, 3)``."""
        x = self._check_x(x)
        back = x @ self.rotation
        z = back[:, :2]
        return z, back[:, 2] - self.surface_height(z)

    # Densities --------------------------------------------------------------------------------

    def _widths(self, theta: np.ndarray) -> np.ndarray:
        return 0.2 + 0.8 * (0.5 + 0.5 * theta[:, 0])

    def log_latent_density(self, z: np.ndarray, theta: np.ndarray | None = None) -> np.ndarray:
        """Log density of the mixture ``p(z | theta)`` for ``(B, 2)`` latents, ``(B,)``."""
        z = np.asarray(z, dtype=np.float64)
        s = self._widths(self._theta_rows(theta, len(z)))
        d_fix = np.sum((z - np.array([1.0, -1.0])) ** 2, axis=1)
        d_var = np.sum((z - np.array([-1.0, 1.0])) ** 2, axis=1)
        log_fix = math.log(self.weights[0]) - 0.5 * d_fix / 4.0 - math.log(4.0) - _LOG_2PI
        log_var = math.log(self.weights[1]) - 0.5 * d_var / s**2 - 2.0 * np.log(s) - _LOG_2PI
        return np.logaddexp(log_fix, log_var)

    def log_density_on_manifold(self, x: np.ndarray, theta: np.ndarray | None = None) -> np.ndarray:
        """``log p(z | theta) - log sqrt(1 + |grad f|^2)`` at ``z`` = first two of ``R^T x``."""
        z, _ = self.chart(x)
        return self.log_latent_density(z, theta) - self.log_area_element(z)

    def log_density(self, x: np.ndarray, theta: np.ndarray | None = None) -> np.ndarray:
        """True log density on the surface (w.r.t. its area); ``-inf`` off it, shape ``(B,)``.

        A point counts as on the surface when its offset is at most ``tolerance``.
        """
        z, offset = self.chart(x)
        log_p = self.log_latent_density(z, theta) - self.log_area_element(z)
        return np.where(np.abs(offset) <= self.tolerance, log_p, -np.inf)

    def distance_to_manifold(self, x: np.ndarray) -> np.ndarray:
        """``|(R^T x)_2 - f(z)|``: offset along the rotated height axis (as the paper scored it)."""
        return np.abs(self.chart(x)[1])

    def project_to_manifold(self, x: np.ndarray) -> np.ndarray:
        """Replaces the rotated-back height by ``f(z)``: ``R (z0, z1, f(z))``."""
        return self.embed(self.chart(x)[0])

    # Sampling ---------------------------------------------------------------------------------

    def sample_latent(
        self, n: int, theta: np.ndarray | None = None, seed: SeedLike = None
    ) -> np.ndarray:
        """Draws ``(n, 2)`` latents from the mixture."""
        rng = as_rng(seed)
        s = self._widths(self._theta_rows(theta, n))[:, None]
        second = rng.random(n)[:, None] < self.weights[1]
        noise = rng.standard_normal((n, 2))
        fixed = np.array([1.0, -1.0]) + 2.0 * noise
        variable = np.array([-1.0, 1.0]) + s * noise
        return np.where(second, variable, fixed)

    def sample(self, n: int, theta: np.ndarray | None = None, seed: SeedLike = None) -> np.ndarray:
        """Simulates ``(n, 3)`` points at ``theta`` (``(1,)`` or ``(n, 1)``; default 0)."""
        return self.embed(self.sample_latent(n, theta, seed))

    def sample_ood(self, n: int, seed: SeedLike = None) -> np.ndarray:
        """Samples at ``theta = 0`` plus ``N(0, 0.1^2 I)`` noise, ``(n, 3)``."""
        rng = as_rng(seed)
        return self.sample(n, None, rng) + 0.1 * rng.standard_normal((n, 3))

    def sample_prior(self, n: int, seed: SeedLike = None) -> np.ndarray:
        """Uniform on ``[-1, 1]``, ``(n, 1)``."""
        return as_rng(seed).uniform(-1.0, 1.0, size=(n, 1))

    def log_prior(self, theta: np.ndarray) -> np.ndarray:
        """``-log 2`` inside ``[-1, 1]``, ``-inf`` outside; shape ``(B,)``."""
        theta = np.asarray(theta, dtype=np.float64).reshape(-1, 1)
        return np.where(np.abs(theta[:, 0]) <= 1.0, -math.log(2.0), -np.inf)
