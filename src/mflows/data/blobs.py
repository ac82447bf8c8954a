"""``blobs``: RGB images of Gaussian blobs, an image manifold whose density is known exactly.

An image is rendered by a smooth function ``render(z)`` of ``n`` latent parameters in the box
``[-1, 1]^n`` (see docs/blobs.md). The parameters come in groups of four per blob,
``(x, y, hue, width)``; ``K = ceil(n / 4)`` blobs sit in the cells of a near-square grid, each
moving within the middle half of its own cell, so no two blobs can trade places and the renderer
is injective. Attributes beyond ``n`` are fixed at 0 (``n = 2``: one blob, its position only).
Pixel values (0..255 scale, float) are

    x[c, i, j] = b(c, i, j) + A * colour_k(hue)[c] * sum_k g(y_i; y_k, s_k) g(x_j; x_k, s_k)

with a smooth background ``b`` in ``[30, 85]``, ``A = 150`` and blob colours with every channel in
``[0.26, 0.84]``, so the rendered values stay inside ``(0, 256)`` and quantisation never clips.

Latent density: ``u = artanh(z)`` follows a two-component Gaussian mixture, so

    log p(z) = log sum_j w_j N(u; m_j, s_j^2 I) - sum_i log(1 - z_i^2),

exactly normalised on the open box. With ``conditional = p`` (1 or 2) the parameter theta in
``[-1, 1]^p`` changes the width (theta_0) and the mean (theta_1) of the second component.

Images are quantised to uint8 (``floor``, values ``v`` cover ``[v, v + 1)``) and loaded as float32
in ``[0, 256)`` with uniform dequantisation noise on the training split, exactly as the StyleGAN
image sets. The truth refers to the continuous renderer: the density on the manifold
``log p(z) - 1/2 log det(J^T J)`` (``J = d render / dz``), the distance of any image to the
manifold and its projection (Levenberg-Marquardt from a grid start and the box centre), and the
parameters of the projection (:meth:`Blobs.latent_of`).
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from typing import ClassVar

import numpy as np
import torch
from scipy.special import logsumexp

from mflows.errors import InvalidArgumentError

from .base import Batch, SeedLike, SimulatedDataset, as_rng, split_rng

__all__ = ["Blobs"]

SIZES = (16, 32, 64)
_DEQUANTIZE = ("train", "all", "none")
_ATTRIBUTES = 4  # x, y, hue, width per blob
_AMPLITUDE = 150.0
_LOG_2PI = math.log(2.0 * math.pi)
#: elements (batch x pixels x n) per block of Jacobian / grid computations.
_BLOCK = 4_000_000


class Blobs(SimulatedDataset):
    """Gaussian blobs rendered from n latent parameters (exact density, distance, projection).

    Args:
        n: Manifold dimension, 1 to 64 (default 2: one blob's position). Parameters are grouped
            as ``(x, y, hue, width)`` per blob, ``ceil(n / 4)`` blobs on a grid.
        size: Image side, 16, 32 or 64; images are ``(3, size, size)``.
        conditional: Number of parameters theta (0, 1 or 2) changing the latent density; prior
            uniform on ``[-1, 1]^p``, default theta 0.
        dequantize: Add ``U[0, 1)`` noise to ``"train"`` only (default), ``"all"`` splits, or
            ``"none"``.
        rescale: Map values from ``[0, 256)`` to ``[-1, 1)`` by ``x / 128 - 1``; the truth
            methods then take and return values (and distances) on that scale.
        data_dir: Ignored (simulated on the fly); accepted like the other data sets.
    """

    name = "blobs"
    split_sizes: ClassVar[dict[str, int]] = {"train": 10_000, "val": 1_000, "test": 1_000}
    #: the truth is a density on the manifold; there is no ambient density to compare with.
    ambient_density_known = False

    def __init__(
        self,
        n: int = 2,
        size: int = 32,
        conditional: int = 0,
        dequantize: str = "train",
        rescale: bool = False,
        data_dir: str | None = None,
    ) -> None:
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or not 1 <= n <= 64:
            raise InvalidArgumentError(f"blobs: expected an integer 1 <= n <= 64, got {n!r}")
        if isinstance(size, bool) or size not in SIZES:
            raise InvalidArgumentError(f"blobs: expected size in {SIZES}, got {size!r}")
        if isinstance(conditional, bool):
            conditional = int(conditional)
        if conditional not in (0, 1, 2):
            raise InvalidArgumentError(
                f"blobs: expected conditional 0, 1 or 2, got {conditional!r}"
            )
        if dequantize not in _DEQUANTIZE:
            raise InvalidArgumentError(f"blobs: dequantize must be one of {_DEQUANTIZE}")
        self.latent_dim = int(n)
        self.size = int(size)
        self.data_dim = (3, self.size, self.size)
        self.parameter_dim = int(conditional)
        self.default_theta = np.zeros(self.parameter_dim) if self.parameter_dim else None
        self.dequantize = dequantize
        self.rescale = bool(rescale)
        #: clip of the manifold distance and reconstruction error in scoring: an RMS of 10 levels
        #: per pixel (in the data's units), as the scale of images makes a clip of 10 meaningless.
        self.distance_clip = 10.0 * math.sqrt(3 * self.size**2) / (128.0 if self.rescale else 1.0)
        self._build_geometry()
        self._cache: OrderedDict[bytes, dict[str, np.ndarray]] = OrderedDict()

    # Geometry ------------------------------------------------------------------------------------

    def _build_geometry(self) -> None:
        n = self.latent_dim
        k = -(-n // _ATTRIBUTES)
        cols = math.ceil(math.sqrt(k))
        rows = -(-k // cols)
        idx = np.arange(k)
        cw, ch = 1.0 / cols, 1.0 / rows
        self.num_blobs = k
        self._centre = np.stack([(idx % cols + 0.5) * cw, (idx // cols + 0.5) * ch], 1)
        self._half_range = np.array([0.25 * cw, 0.25 * ch])
        self._width = 0.14 * min(cw, ch)
        golden = 0.5 * (math.sqrt(5.0) - 1.0)
        self._hue = 2.0 * math.pi * ((0.07 + golden * idx) % 1.0)
        sign = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
        self._means = np.stack([0.6 * sign, -0.6 * sign])  # (2, n), u-space
        grid = (np.arange(self.size) + 0.5) / self.size
        self._grid = torch.as_tensor(grid, dtype=torch.float64)
        yy, xx = np.meshgrid(grid, grid, indexing="ij")
        background = 30.0 + 30.0 * yy + 15.0 * xx
        self._background = torch.as_tensor(
            np.stack([background + 5.0 * c for c in range(3)]), dtype=torch.float64
        )

    def _attributes(self, z: torch.Tensor) -> torch.Tensor:
        """``(..., n)`` latents -> ``(..., K, 4)`` attributes, the missing ones at 0."""
        pad = self.num_blobs * _ATTRIBUTES - self.latent_dim
        if pad:
            z = torch.cat([z, z.new_zeros((*z.shape[:-1], pad))], dim=-1)
        return z.reshape(*z.shape[:-1], self.num_blobs, _ATTRIBUTES)

    def render(self, z: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The continuous renderer: ``(..., n)`` latents in ``[-1, 1]`` -> ``(..., 3, S, S)``.

        Pixel values on the 0..255 scale (before quantisation and any rescaling); float64 for
        NumPy input, the input's dtype for tensors. Pure torch: differentiable, ``torch.func``-safe.
        """
        if not isinstance(z, torch.Tensor):
            z = torch.as_tensor(np.asarray(z, dtype=np.float64))
        a = self._attributes(z)
        dtype = z.dtype
        centre = torch.as_tensor(self._centre, dtype=dtype)
        half = torch.as_tensor(self._half_range, dtype=dtype)
        pos = centre + half * a[..., :2]  # (..., K, 2)
        hue = torch.as_tensor(self._hue, dtype=dtype) + 0.5 * a[..., 2]
        width = self._width * torch.exp(0.3 * a[..., 3])  # (..., K)
        grid = self._grid.to(dtype)
        gx = torch.exp(-0.5 * ((grid - pos[..., 0:1]) / width[..., None]) ** 2)  # (..., K, S)
        gy = torch.exp(-0.5 * ((grid - pos[..., 1:2]) / width[..., None]) ** 2)
        colour = _hue_colour(hue)  # (..., K, 3)
        blobs = torch.einsum("...kc,...ki,...kj->...cij", colour, gy, gx)
        return self._background.to(dtype) + _AMPLITUDE * blobs

    def _render_flat(self, z: torch.Tensor) -> torch.Tensor:
        return self.render(z).reshape(*z.shape[:-1], -1)

    def jacobian(self, z: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``d render / dz`` of ``(B, n)`` latents, ``(B, 3 S S, n)`` float64 (0..255 scale)."""
        z = torch.as_tensor(np.asarray(z, dtype=np.float64)).reshape(-1, self.latent_dim)
        fn = torch.func.vmap(torch.func.jacfwd(self._render_flat))
        step = max(1, _BLOCK // (3 * self.size**2 * self.latent_dim))
        return torch.cat([fn(z[i : i + step]) for i in range(0, len(z), step)] or [z[:0]])

    def log_area_element(self, z: np.ndarray) -> np.ndarray:
        """``1/2 log det(J^T J)`` of the renderer at ``(B, n)`` latents, in the data's units."""
        z = np.asarray(z, dtype=np.float64).reshape(-1, self.latent_dim)
        out = np.empty(len(z))
        step = max(1, _BLOCK // (3 * self.size**2 * self.latent_dim))
        for i in range(0, len(z), step):
            jac = self.jacobian(z[i : i + step])
            out[i : i + step] = 0.5 * torch.linalg.slogdet(jac.mT @ jac)[1].numpy()
        if self.rescale:
            out -= self.latent_dim * math.log(128.0)
        return out

    # Latent density --------------------------------------------------------------------------

    def _mixture(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Weights ``(2,)``, means ``(B, 2, n)`` and widths ``(B, 2)`` in u-space for ``(B, p)``."""
        b = len(theta)
        means = np.broadcast_to(self._means, (b, 2, self.latent_dim)).copy()
        widths = np.tile(np.array([0.45, 0.25]), (b, 1))
        if self.parameter_dim >= 1:
            widths[:, 1] = 0.25 + 0.15 * theta[:, 0]
        if self.parameter_dim >= 2:
            means[:, 1] += 0.5 * theta[:, 1:2]
        return np.array([0.6, 0.4]), means, widths

    def log_latent_density(self, z: np.ndarray, theta: np.ndarray | None = None) -> np.ndarray:
        """``log p(z | theta)`` of ``(B, n)`` latents on the box, ``(B,)`` (-inf outside)."""
        z = np.asarray(z, dtype=np.float64).reshape(-1, self.latent_dim)
        weights, means, widths = self._mixture(self._theta_rows(theta, len(z)))
        inside = np.all(np.abs(z) < 1.0, axis=1)
        zc = np.where(inside[:, None], z, 0.0)
        u = np.arctanh(zc)
        n = self.latent_dim
        sq = np.sum((u[:, None, :] - means) ** 2, axis=2)  # (B, 2)
        log_comp = np.log(weights) - 0.5 * sq / widths**2 - n * np.log(widths) - 0.5 * n * _LOG_2PI
        log_p = logsumexp(log_comp, axis=1) - np.sum(np.log1p(-(zc**2)), axis=1)
        return np.where(inside, log_p, -np.inf)

    def sample_latent(
        self, n: int, theta: np.ndarray | None = None, seed: SeedLike = None
    ) -> np.ndarray:
        """Draws ``(n, latent_dim)`` latents from ``p(z | theta)``."""
        rng = as_rng(seed)
        weights, means, widths = self._mixture(self._theta_rows(theta, n))
        comp = (rng.random(n) < weights[1]).astype(int)
        noise = rng.standard_normal((n, self.latent_dim))
        rows = np.arange(n)
        u = means[rows, comp] + widths[rows, comp][:, None] * noise
        return np.clip(np.tanh(u), -1.0 + 1e-12, 1.0 - 1e-12)

    # Prior over theta --------------------------------------------------------------------------

    def sample_prior(self, n: int, seed: SeedLike = None) -> np.ndarray:
        """Uniform on ``[-1, 1]^p``, ``(n, p)`` (conditional sets only)."""
        self._need_parameters()
        return as_rng(seed).uniform(-1.0, 1.0, size=(n, self.parameter_dim))

    def log_prior(self, theta: np.ndarray) -> np.ndarray:
        """``-p log 2`` inside ``[-1, 1]^p``, ``-inf`` outside; shape ``(B,)``."""
        self._need_parameters()
        theta = np.asarray(theta, dtype=np.float64).reshape(-1, self.parameter_dim)
        inside = np.all(np.abs(theta) <= 1.0, axis=1)
        return np.where(inside, -self.parameter_dim * math.log(2.0), -np.inf)

    @property
    def has_truth(self) -> dict[str, bool]:
        """As for every data set, with the prior methods only when ``conditional > 0``."""
        truth = dict(super().has_truth)
        if not self.parameter_dim:
            truth["sample_prior"] = truth["log_prior"] = False
        return truth

    def _need_parameters(self) -> None:
        if not self.parameter_dim:
            raise NotImplementedError("blobs with conditional=0 has no parameters, hence no prior")

    # Images -----------------------------------------------------------------------------------

    def images_uint8(self, z: np.ndarray) -> np.ndarray:
        """Renders ``(B, n)`` latents and quantises them: ``floor``, uint8 ``(B, 3, S, S)``."""
        z = np.asarray(z, dtype=np.float64).reshape(-1, self.latent_dim)
        out = np.empty((len(z), *self.data_dim), dtype=np.uint8)
        step = max(1, _BLOCK // (3 * self.size**2))
        with torch.no_grad():
            for i in range(0, len(z), step):
                pixels = self.render(z[i : i + step]).numpy()
                out[i : i + step] = np.clip(np.floor(pixels), 0, 255).astype(np.uint8)
        return out

    def _to_float(self, images: np.ndarray, dequantize: bool, rng: np.random.Generator):
        x = images.astype(np.float32)
        if dequantize:
            upper = np.nextafter(x + np.float32(1.0), x)  # keep x + u < x + 1 in float32
            x = np.minimum(x + rng.random(x.shape, dtype=np.float32), upper)
        if self.rescale:
            x = x / np.float32(128.0) - np.float32(1.0)
        return np.ascontiguousarray(x)

    def load_uint8(
        self, split: str, n: int | None = None, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The stored form of ``split``: uint8 images, their latents and theta (or None)."""
        n, theta, rng = self._split_draw(split, n, seed)
        z = self.sample_latent(n, theta, rng)
        return self.images_uint8(z), z, theta

    def load(self, split: str, n: int | None = None, seed: int = 0) -> Batch:
        """``n`` images of ``split`` as float32 ``(n, 3, S, S)`` in ``[0, 256)`` (see module)."""
        images, _, theta = self.load_uint8(split, n, seed)
        rng = split_rng(seed + 1_000_003, split)  # dequantisation noise, own stream
        noisy = self.dequantize == "all" or (self.dequantize == "train" and split == "train")
        x = self._to_float(images, noisy, rng)
        return Batch(x, None if theta is None else theta.astype(np.float32), None)

    def sample(
        self,
        n: int,
        theta: np.ndarray | None = None,
        seed: SeedLike = None,
        dequantize: bool = True,
    ) -> np.ndarray:
        """``n`` images at ``theta`` like training data: quantised, dequantised, float32."""
        rng = as_rng(seed)
        z = self.sample_latent(n, theta, rng)
        return self._to_float(self.images_uint8(z), dequantize, rng)

    def sample_ood(self, n: int, seed: SeedLike = None) -> np.ndarray:
        """Images at the default theta with one extra blob anywhere, quantised like test data.

        The extra blob has a random grey-free colour, the first blob's width and amplitude 110.
        """
        rng = as_rng(seed)
        z = self.sample_latent(n, None, rng)
        with torch.no_grad():
            pixels = self.render(z).numpy()
        pos = rng.uniform(0.15, 0.85, size=(n, 2))
        colour = _hue_colour(torch.as_tensor(rng.uniform(0, 2 * math.pi, n))).numpy()
        grid = self._grid.numpy()
        gx = np.exp(-0.5 * ((grid - pos[:, :1]) / self._width) ** 2)
        gy = np.exp(-0.5 * ((grid - pos[:, 1:]) / self._width) ** 2)
        pixels = pixels + 110.0 * np.einsum("bc,bi,bj->bcij", colour, gy, gx)
        images = np.clip(np.floor(pixels), 0, 255).astype(np.uint8)
        return self._to_float(images, self.dequantize == "all", rng)

    # Truth: projection, distance, density ----------------------------------------------------

    def _pixels(self, x: np.ndarray) -> np.ndarray:
        """``(B, 3, S, S)`` or ``(B, 3 S S)`` data -> ``(B, 3 S S)`` float64 on the 0..255 scale."""
        x = np.asarray(x, dtype=np.float64)
        d = 3 * self.size**2
        if x.shape[1:] not in (self.data_dim, (d,)):
            raise InvalidArgumentError(
                f"blobs: expected images of shape (B, {', '.join(map(str, self.data_dim))}), "
                f"got {x.shape}"
            )
        x = x.reshape(len(x), d)
        return (x + 1.0) * 128.0 if self.rescale else x

    def _fit(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Projection of data ``x``: latents ``z`` and squared pixel distances (cached)."""
        pixels = self._pixels(x)
        digest = hashlib.blake2b(pixels.tobytes(), digest_size=16).digest()
        key = digest + str(pixels.shape).encode()
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        z, sq = project_latents(self, pixels)
        result = {"z": z, "sq": sq}
        self._cache[key] = result
        while len(self._cache) > 4:
            self._cache.popitem(last=False)
        return result

    def latent_of(self, x: np.ndarray) -> np.ndarray:
        """Latent parameters ``(B, n)`` of the projection of images ``x`` onto the manifold.

        ``render(latent_of(x))`` is :meth:`project_to_manifold` (before rescaling); the values
        lie in the closed box ``[-1, 1]^n`` (on its faces for images beyond the manifold's edge).
        """
        return self._fit(x)["z"].copy()

    def distance_to_manifold(self, x: np.ndarray) -> np.ndarray:
        """Euclidean distance of images to the rendered manifold, ``(B,)``, in the data's units
        (pixel levels on the 0..255 scale; divided by 128 with ``rescale``)."""
        dist = np.sqrt(np.maximum(self._fit(x)["sq"], 0.0))
        return dist / 128.0 if self.rescale else dist

    def project_to_manifold(self, x: np.ndarray) -> np.ndarray:
        """Nearest rendered image (continuous, not quantised), same shape and units as ``x``."""
        shape = np.shape(x)
        with torch.no_grad():
            pixels = self.render(self._fit(x)["z"]).numpy().reshape(shape)
        return pixels / 128.0 - 1.0 if self.rescale else pixels

    def log_density(self, x: np.ndarray, theta: np.ndarray | None = None) -> np.ndarray:
        """True log density on the manifold (w.r.t. its area) at the projection of ``x``, ``(B,)``.

        ``log p(z | theta) - 1/2 log det(J^T J)`` with ``z = latent_of(x)``; the data have no
        ambient density (they are rendered from n parameters), so this is what a model's density
        on its learned manifold is compared with. Area in the data's units.
        """
        fit = self._fit(x)
        if "log_area" not in fit:
            fit["log_area"] = self.log_area_element(fit["z"])
        return self.log_latent_density(fit["z"], theta) - fit["log_area"]

    def log_density_on_manifold(self, x: np.ndarray, theta: np.ndarray | None = None) -> np.ndarray:
        """Same as :meth:`log_density` (the truth is a density on the manifold)."""
        return self.log_density(x, theta)

    def _extra_description(self) -> list[str]:
        return [
            f"blobs: {self.num_blobs} (parameters x, y, hue, width each; n = {self.latent_dim})",
            f"dequantize: {self.dequantize}, rescale: {self.rescale}",
        ]


def _hue_colour(hue: torch.Tensor) -> torch.Tensor:
    """RGB colour ``(..., 3)`` of a hue angle: grey 0.55 plus a chroma vector of length 0.35."""
    a = torch.stack([torch.cos(hue - 2.0 * math.pi * c / 3.0) for c in range(3)], dim=-1)
    return 0.55 + 0.35 * math.sqrt(2.0 / 3.0) * a


# Projection ------------------------------------------------------------------------------------


def _squared_distance(ds: Blobs, z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.sum((ds._render_flat(z) - target) ** 2, dim=-1)


def _grid_start(ds: Blobs, x: torch.Tensor, points: int) -> torch.Tensor:
    """Blockwise grid search: per blob, position on a ``points x points`` grid, then hue and
    width on ``points`` values each, the other parameters at their current values."""
    n = ds.latent_dim
    z = x.new_zeros((len(x), n))
    values = torch.linspace(-1.0, 1.0, points + 2, dtype=x.dtype)[1:-1]
    gx, gy = torch.meshgrid(values, values, indexing="ij")
    pos = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    d = x.shape[1]
    for k in range(ds.num_blobs):
        base = k * _ATTRIBUTES
        for idx, cand in (
            ([base, base + 1], pos),
            ([base + 2], values[:, None]),
            ([base + 3], values[:, None]),
        ):
            keep = [i for i, j in enumerate(idx) if j < n]
            if not keep:
                continue
            idx = [idx[i] for i in keep]
            cand = cand[:, keep]
            step = max(1, _BLOCK // (d * len(cand)))
            for s in range(0, len(x), step):
                zb = z[s : s + step, None, :].repeat(1, len(cand), 1)
                zb[:, :, idx] = cand
                sq = _squared_distance(ds, zb, x[s : s + step, None, :])
                best = torch.argmin(sq, dim=1)
                z[s : s + step, idx] = cand[best]
    return z


def _levenberg_marquardt(
    ds: Blobs, x: torch.Tensor, z: torch.Tensor, iterations: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched Levenberg-Marquardt on ``|render(z) - x|^2`` with ``z`` clamped to the box.

    Images leave the batch once a step moves no parameter by more than 1e-9 (or the damping
    hits its ceiling), so the cost follows the slowest images only where they are.
    """

    def value_and_value(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = ds._render_flat(v)
        return flat, flat

    jac_fn = torch.func.vmap(torch.func.jacfwd(value_and_value, has_aux=True))
    z = z.clone()
    lam = x.new_full((len(x),), 1e-3)
    loss = _squared_distance(ds, z, x)
    eye = torch.eye(ds.latent_dim, dtype=x.dtype)
    active = torch.arange(len(x))
    for _ in range(iterations):
        if len(active) == 0:
            break
        za, xa, la = z[active], x[active], lam[active]
        jac, rendered = jac_fn(za)  # (A, D, n), (A, D)
        jtj = jac.mT @ jac
        g = (jac.mT @ (rendered - xa)[..., None])[..., 0]
        damp = la[:, None, None] * (torch.diagonal(jtj, dim1=1, dim2=2)[..., None] * eye + eye)
        delta = torch.linalg.solve(jtj + damp, -g)
        z_new = torch.clamp(za + delta, -1.0, 1.0)
        loss_new = _squared_distance(ds, z_new, xa)
        better = loss_new < loss[active]
        z[active] = torch.where(better[:, None], z_new, za)
        loss[active] = torch.where(better, loss_new, loss[active])
        la = torch.where(better, la / 3.0, la * 4.0).clamp(1e-9, 1e9)
        lam[active] = la
        done = (delta.abs().amax(1) < 1e-9) | (la >= 1e9)
        active = active[~done]
    return z, loss


def project_latents(
    ds: Blobs, pixels: np.ndarray, iterations: int = 40, grid_points: int = 9
) -> tuple[np.ndarray, np.ndarray]:
    """Latents ``(B, n)`` of the nearest rendered images and their squared distances ``(B,)``.

    Two starts per image, each refined by Levenberg-Marquardt: a blockwise grid search (per blob
    its position on a grid, then hue and width) and the centre of the box; the better wins.

    Args:
        ds: The data set.
        pixels: ``(B, 3 S S)`` float64 images on the 0..255 scale.
        iterations: Levenberg-Marquardt iterations per start.
        grid_points: Grid values per parameter of the grid start.
    """
    x_all = torch.as_tensor(pixels, dtype=torch.float64)
    n, d = ds.latent_dim, x_all.shape[1]
    z_out = np.empty((len(x_all), n))
    sq_out = np.empty(len(x_all))
    step = max(1, _BLOCK // (d * n))
    with torch.no_grad():
        for s in range(0, len(x_all), step):
            x = x_all[s : s + step]
            best_z, best = _levenberg_marquardt(ds, x, _grid_start(ds, x, grid_points), iterations)
            z0, loss0 = _levenberg_marquardt(ds, x, x.new_zeros((len(x), n)), iterations)
            take = loss0 < best
            z_out[s : s + step] = torch.where(take[:, None], z0, best_z).numpy()
            sq_out[s : s + step] = torch.where(take, loss0, best).numpy()
    return z_out, sq_out
