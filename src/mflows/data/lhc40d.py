"""``lhc40d``: 40 observables of weak-boson-fusion Higgs production (n = 14, two parameters).

Files (from the original research code's Google Drive shares; no checksums were published, so
their SHA256 is recorded on first use, see :mod:`mflows.data.download`):

* ``x_train.npy`` ``(10^6, 40)``, ``theta_train.npy`` ``(10^6, 2)``, ``t_xz_train.npy``
  ``(10^6, 2)`` (joint scores for SCANDAL);
* ``x_test.npy``/``theta_test.npy`` at theta = (0, 0), ``x_test1.npy``/``theta_test1.npy`` at
  (0.5, 0), ``x_test2.npy``/``theta_test2.npy`` at (-1, -1).

Observables are standardised with the constants of ``resources/lhc40d.json``, which also holds
the feature names and the 26 weighted closure residuals used to score samples.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from typing import ClassVar

import numpy as np

from .base import Batch, FileBackedDataset, SeedLike, as_rng
from .download import google_drive_url

__all__ = ["LHC40d", "load_lhc_constants"]

_DRIVE_IDS = {
    "x_train.npy": "1VuG3HTtJHzzQi5KcltMUmxdoADAf34BO",
    "theta_train.npy": "1VZljWA63wMOXKAWvGMdMRdDE_TLmAMyV",
    "t_xz_train.npy": "190_Hdu2DLB4k8hKTnxrmmj5YgKt_whMA",
    "x_test.npy": "1J6lcVmyFYbRPx9R2GHfoQKKDtNbaD2sD",
    "theta_test.npy": "1O83YYSAbnkz2tESSKEhSXykspDLHHc6E",
    "x_test1.npy": "1aRtfaBrOP_XfYCwUaNHPlbDOmGjdbQn3",
    "theta_test1.npy": "100GEgVnIX7bEocTR_0Hyu-8xRDKDLjym",
    "x_test2.npy": "1X7SRFjIW2sv8gagyfyFs_iUmPG8mbrIe",
    "theta_test2.npy": "1vFJYdVzG22ARPuUw7hn-KBF05PRiFDst",
}


def load_lhc_constants() -> dict:
    """Feature names, means, stds and closure tests of ``resources/lhc40d.json``."""
    text = resources.files("mflows.data").joinpath("resources/lhc40d.json").read_text()
    return json.loads(text)


class LHC40d(FileBackedDataset):
    """Particle-physics observables (d = 40, n = 14, theta in R^2 with a standard normal prior).

    Splits: ``train`` and ``val`` (the last ``val_fraction`` of the training file) carry theta
    and joint scores; ``test``, ``test1`` and ``test2`` are the test sets at the parameter points
    in :attr:`test_thetas`.

    Attributes:
        features: The 40 feature names.
        means, stds: Standardisation constants, ``(40,)`` each; ``x = (raw - means) / stds``.
        closure_tests: The 26 weighted closure residuals (dicts; see the JSON description).
    """

    name = "lhc40d"
    data_dim = 40
    latent_dim = 14
    parameter_dim = 2
    urls: ClassVar[dict[str, str | None]] = {
        name: google_drive_url(file_id) for name, file_id in _DRIVE_IDS.items()
    }
    test_thetas: ClassVar[dict[str, tuple[float, float]]] = {
        "test": (0.0, 0.0),
        "test1": (0.5, 0.0),
        "test2": (-1.0, -1.0),
    }

    def __init__(
        self,
        data_dir: str | None = None,
        download: bool = True,
        progress: bool = True,
        val_fraction: float = 0.1,
    ) -> None:
        super().__init__(data_dir, download, progress, val_fraction)
        constants = load_lhc_constants()
        self.features: list[str] = list(constants["features"])
        self.means = np.asarray(constants["means"], dtype=np.float64)
        self.stds = np.asarray(constants["stds"], dtype=np.float64)
        self.closure_tests: list[dict] = list(constants["closure_tests"])
        self.default_theta = np.zeros(2)

    def standardise(self, x: np.ndarray) -> np.ndarray:
        """``(x - means) / stds``."""
        return (np.asarray(x, dtype=np.float64) - self.means) / self.stds

    def unstandardise(self, x: np.ndarray) -> np.ndarray:
        """``x * stds + means`` (raw physical units)."""
        return np.asarray(x, dtype=np.float64) * self.stds + self.means

    def load(self, split: str, n: int | None = None, seed: int = 0) -> Batch:
        """Loads ``split`` (``train``, ``val``, ``test``, ``test1``, ``test2``); first ``n`` rows.

        ``seed`` is unused: the files fix the data.
        """
        if split in ("train", "val"):
            arrays = self._fetch(["x_train.npy", "theta_train.npy", "t_xz_train.npy"])
            x, theta, scores = arrays.values()
            rows = self._head(self._train_val_rows(split, len(x)), n)
            scores = np.asarray(scores[rows], dtype=np.float32)
        elif split in self.test_thetas:
            suffix = split[len("test") :]
            arrays = self._fetch([f"x_test{suffix}.npy", f"theta_test{suffix}.npy"])
            x, theta = arrays.values()
            rows = self._head(slice(0, len(x)), n)
            scores = None
        else:
            raise ValueError(
                f"lhc40d: unknown split {split!r}, expected one of "
                f"('train', 'val', 'test', 'test1', 'test2')"
            )
        if x.ndim != 2 or x.shape[1] != 40:
            raise ValueError(f"lhc40d: expected x of shape (N, 40) in the files, got {x.shape}")
        x = self.standardise(x[rows]).astype(np.float32)
        theta = np.asarray(theta[rows], dtype=np.float32).reshape(len(x), 2)
        return Batch(x, theta, scores)

    def sample_prior(self, n: int, seed: SeedLike = None) -> np.ndarray:
        """Standard normal, ``(n, 2)``."""
        return as_rng(seed).standard_normal((n, 2))

    def log_prior(self, theta: np.ndarray) -> np.ndarray:
        """Standard normal log density in 2-d, ``(B,)``."""
        theta = np.asarray(theta, dtype=np.float64).reshape(-1, 2)
        return -0.5 * np.sum(theta**2, axis=1) - math.log(2.0 * math.pi)

    def _extra_description(self) -> list[str]:
        return [
            "splits: train, val (end of the training file), test at theta (0, 0), "
            "test1 at (0.5, 0), test2 at (-1, -1)",
            *super()._extra_description(),
        ]
