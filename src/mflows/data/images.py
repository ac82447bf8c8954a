"""Image data sets: ``gan2d``, ``gan64d`` (StyleGAN2 image manifolds), ``celeba``, ``imagenet``.

Each is a pair of uint8 ``.npy`` files, ``train.npy`` and ``test.npy``, with 64x64 RGB images as
``(N, 3, 64, 64)`` (or ``(N, 64, 64, 3)``, transposed on load); ``gan64d`` adds its parameter
in ``params_train.npy`` and ``params_test.npy`` ``(N,)`` or ``(N, 1)``. Download URLs are the
original research code's Google Drive shares (no published checksums: recorded on first use).

Loading returns float32 ``(N, 3, 64, 64)`` with values in ``[0, 256)``: uniform dequantisation
noise ``U[0, 1)`` is added to the training split (option ``dequantize``), CelebA training images
are flipped horizontally at random (option ``random_flips``), and ``rescale=True`` maps the
values to ``[-1, 1)`` by ``x / 128 - 1`` as the original code did.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from .base import Batch, FileBackedDataset, SeedLike, as_rng, split_rng
from .download import google_drive_url

__all__ = ["CelebA", "GAN2d", "GAN64d", "ImageNet"]

_DEQUANTIZE = ("train", "all", "none")


class _ImageDataset(FileBackedDataset):
    """Shared loader of the image data sets (see the module docstring).

    Args:
        dequantize: Add ``U[0, 1)`` noise to ``"train"`` only (default), ``"all"`` splits, or
            ``"none"``.
        random_flips: Flip training images horizontally with probability 1/2 (default: on for
            CelebA only).
        rescale: Map values from ``[0, 256)`` to ``[-1, 1)``.
        data_dir, download, progress, val_fraction: See
            :class:`~mflows.data.base.FileBackedDataset`.
    """

    data_dim = (3, 64, 64)
    default_flips = False
    drive_ids: ClassVar[dict[str, str]] = {}

    def __init__(
        self,
        dequantize: str = "train",
        random_flips: bool | None = None,
        rescale: bool = False,
        data_dir: str | None = None,
        download: bool = True,
        progress: bool = True,
        val_fraction: float = 0.1,
    ) -> None:
        super().__init__(data_dir, download, progress, val_fraction)
        if dequantize not in _DEQUANTIZE:
            raise ValueError(f"{self.name}: dequantize must be one of {_DEQUANTIZE}")
        self.dequantize = dequantize
        self.random_flips = self.default_flips if random_flips is None else bool(random_flips)
        self.rescale = bool(rescale)

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.urls = {name: google_drive_url(i) for name, i in cls.drive_ids.items()}

    def load(self, split: str, n: int | None = None, seed: int = 0) -> Batch:
        """Loads the first ``n`` images of ``split``; ``seed`` drives noise and flips."""
        self._check_split(split)
        source = "test" if split == "test" else "train"
        names = [f"{source}.npy"] + ([f"params_{source}.npy"] if self.parameter_dim else [])
        arrays = self._fetch(names)
        images = arrays[names[0]]
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ValueError(
                f"{self.name}: expected uint8 images of shape (N, 3, 64, 64) or (N, 64, 64, 3) "
                f"in {names[0]}, got {images.dtype} {images.shape}"
            )
        if split == "test":
            rows = self._head(slice(0, len(images)), n)
        else:
            rows = self._head(self._train_val_rows(split, len(images)), n)
        x = np.asarray(images[rows])
        if x.shape[1:] == (64, 64, 3):
            x = x.transpose(0, 3, 1, 2)
        if x.shape[1:] != self.data_dim:
            raise ValueError(f"{self.name}: expected images of shape (3, 64, 64), got {x.shape}")
        x = x.astype(np.float32)
        rng = split_rng(seed, split)
        if self.random_flips and split == "train":
            flip = rng.random(len(x)) < 0.5
            x[flip] = x[flip, :, :, ::-1]
        if self.dequantize == "all" or (self.dequantize == "train" and split == "train"):
            upper = np.nextafter(x + np.float32(1.0), x)  # keep x + u < x + 1 in float32
            x = np.minimum(x + rng.random(x.shape, dtype=np.float32), upper)
        if self.rescale:
            x = x / np.float32(128.0) - np.float32(1.0)
        theta = None
        if self.parameter_dim:
            theta = np.asarray(arrays[names[1]][rows], dtype=np.float32).reshape(len(x), -1)
        return Batch(np.ascontiguousarray(x), theta, None)


class GAN2d(_ImageDataset):
    """64x64 images from a StyleGAN2 generator varying 2 latents (n = 2)."""

    name = "gan2d"
    latent_dim = 2
    drive_ids: ClassVar[dict[str, str]] = {
        "train.npy": "1Plel_nOIYUu3E-KKDJ9-yVWPp5HcaGFo",
        "test.npy": "17NOhkhctMkPWvLOzR5L0WOYxAFlUebjd",
    }


class GAN64d(_ImageDataset):
    """64x64 images from a StyleGAN2 generator varying 64 latents, one parameter (n = 64)."""

    name = "gan64d"
    latent_dim = 64
    parameter_dim = 1
    drive_ids: ClassVar[dict[str, str]] = {
        "train.npy": "1TsrUWSCcuRjOsUSpCn_HvlzC-Cz3HOKS",
        "test.npy": "1gJuOOm9x5sNytuKmYqZ83-ieicfJsXj5",
        "params_train.npy": "1MmIAfT2uvAC7fuC92KxNRQJUAUxsnXZr",
        "params_test.npy": "1day5UUZBRxAfvQsmKxir8KL1RAYbsIY9",
    }

    @property
    def default_theta(self) -> np.ndarray:
        """The parameter point used for evaluation, ``(1,)`` zeros."""
        return np.zeros(1)

    def sample_prior(self, n: int, seed: SeedLike = None) -> np.ndarray:
        """Standard normal, ``(n, 1)``."""
        return as_rng(seed).standard_normal((n, 1))

    def log_prior(self, theta: np.ndarray) -> np.ndarray:
        """Standard normal log density, ``(B,)``."""
        theta = np.asarray(theta, dtype=np.float64).reshape(-1, 1)
        return -0.5 * theta[:, 0] ** 2 - 0.5 * math.log(2.0 * math.pi)


class CelebA(_ImageDataset):
    """CelebA-HQ downsampled to 64x64 (manifold dimension unknown); random flips in training."""

    name = "celeba"
    default_flips = True
    drive_ids: ClassVar[dict[str, str]] = {
        "train.npy": "1bcaqMKWzJ-2ca7HCQrUPwN61lfk115TO",
        "test.npy": "1WfE64z9FNgOnLliGshUDuCrGBfJSwf-t",
    }


class ImageNet(_ImageDataset):
    """ImageNet downsampled to 64x64 (manifold dimension unknown)."""

    name = "imagenet"
    drive_ids: ClassVar[dict[str, str]] = {
        "train.npy": "15AMmVSX-LDbP7LqC3R9Ns0RPbDI9301D",
        "test.npy": "1Me8EhsSwWbQjQ91vRG1emkIOCgDKK4yC",
    }
