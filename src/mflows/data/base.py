"""The data-set protocol: :class:`Dataset`, its simulated flavour, and the :class:`Batch` it loads.

Every data set has ``name``, ``data_dim`` (an int, or ``(C, H, W)`` for images), ``latent_dim``
(the manifold dimension n, ``None`` when unknown), ``parameter_dim`` (0 when unconditional) and
``default_theta``, and loads NumPy ``float32`` batches with ``load(split, n=None, seed=0)``.
Simulated sets also ``sample``; where the truth is known they expose the true density, the
distance to the manifold, the projection onto it and out-of-distribution samples. Everything
not available raises :class:`NotImplementedError` with a message saying why.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import numpy as np

from mflows.errors import InvalidArgumentError

__all__ = [
    "SPLITS",
    "Batch",
    "Dataset",
    "FileBackedDataset",
    "SeedLike",
    "SimulatedDataset",
    "as_rng",
]

SeedLike = int | np.random.Generator | None

#: The splits every data set understands. Simulated sets draw each from its own random stream.
SPLITS = ("train", "val", "test")

#: The optional methods reported by :attr:`Dataset.has_truth`.
TRUTH_METHODS = (
    "sample",
    "sample_prior",
    "log_prior",
    "log_density",
    "distance_to_manifold",
    "project_to_manifold",
    "sample_ood",
)


class Batch(NamedTuple):
    """A batch of data loaded from a data set.

    Attributes:
        x: Data points, ``(N, d)`` or ``(N, C, H, W)``, float32.
        theta: Parameters the points were generated at, ``(N, p)`` float32, or ``None``.
        scores: Joint scores ``t(x, z | theta)``, ``(N, p)`` float32, or ``None``.
    """

    x: np.ndarray
    theta: np.ndarray | None = None
    scores: np.ndarray | None = None


def as_rng(seed: SeedLike) -> np.random.Generator:
    """A NumPy generator from an int seed, an existing generator (returned as is) or ``None``."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def split_rng(seed: int, split: str) -> np.random.Generator:
    """An independent random stream per ``(seed, split)``, so splits never share draws."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), SPLITS.index(split), 7919]))


def _as_float32(a: np.ndarray | None) -> np.ndarray | None:
    return None if a is None else np.ascontiguousarray(a, dtype=np.float32)


class Dataset:
    """Base class of all data sets; see the module docstring for the protocol.

    Subclasses set ``name``, ``data_dim``, ``latent_dim``, ``parameter_dim`` and
    ``default_theta`` and override the methods they can provide.
    """

    name: ClassVar[str] = "dataset"
    data_dim: int | tuple[int, int, int]
    latent_dim: int | None = None
    parameter_dim: int = 0
    default_theta: np.ndarray | None = None

    # Loading ---------------------------------------------------------------------------------

    def load(self, split: str, n: int | None = None, seed: int = 0) -> Batch:
        """Loads ``n`` points (all when ``None``) of ``split`` (``train``, ``val`` or ``test``)."""
        raise NotImplementedError(f"{self.name}: load() is not implemented")

    def files(self) -> list[str]:
        """Names of the files the data set needs on disk (empty for simulated sets)."""
        return []

    # Simulation and truth --------------------------------------------------------------------

    def sample(self, n: int, theta: np.ndarray | None = None, seed: SeedLike = None) -> np.ndarray:
        """Simulates ``n`` points, ``(n, d)`` float64 (at ``theta`` for conditional sets)."""
        raise NotImplementedError(
            f"{self.name} is not a simulator: use load() to read its files instead"
        )

    def sample_prior(self, n: int, seed: SeedLike = None) -> np.ndarray:
        """Draws ``(n, parameter_dim)`` parameters from the prior."""
        raise NotImplementedError(f"{self.name} has no parameters, hence no prior")

    def log_prior(self, theta: np.ndarray) -> np.ndarray:
        """Log prior density of ``(B, parameter_dim)`` parameters, ``(B,)``."""
        raise NotImplementedError(f"{self.name} has no parameters, hence no prior")

    def log_density(self, x: np.ndarray, theta: np.ndarray | None = None) -> np.ndarray:
        """True log density of ``(B, d)`` points, ``(B,)``."""
        raise NotImplementedError(f"the true density of {self.name} is not known")

    def distance_to_manifold(self, x: np.ndarray) -> np.ndarray:
        """Distance of ``(B, d)`` points from the true manifold, ``(B,)``."""
        raise NotImplementedError(f"the true manifold of {self.name} is not known in closed form")

    def project_to_manifold(self, x: np.ndarray) -> np.ndarray:
        """Projection of ``(B, d)`` points onto the true manifold, ``(B, d)``."""
        raise NotImplementedError(f"no cheap projection onto the manifold of {self.name}")

    def sample_ood(self, n: int, seed: SeedLike = None) -> np.ndarray:
        """Draws ``n`` out-of-distribution points, ``(n, d)``."""
        raise NotImplementedError(f"{self.name} defines no out-of-distribution samples")

    @property
    def has_truth(self) -> dict[str, bool]:
        """Which of the optional methods this data set provides."""
        return {m: getattr(type(self), m) is not getattr(Dataset, m) for m in TRUTH_METHODS}

    # Description -----------------------------------------------------------------------------

    def describe(self) -> str:
        """A human-readable summary: dimensions, parameters, available truth, files needed."""
        dim = self.data_dim
        dim_text = " x ".join(map(str, dim)) if isinstance(dim, tuple) else str(dim)
        latent = "unknown" if self.latent_dim is None else str(self.latent_dim)
        lines = [
            f"{self.name}: {(type(self).__doc__ or '').strip().splitlines()[0]}",
            f"  data dimension:     {dim_text}",
            f"  manifold dimension: {latent}",
            f"  parameters:         {self.parameter_dim}"
            + (
                f" (default theta {np.asarray(self.default_theta).tolist()})"
                if self.parameter_dim
                else ""
            ),
        ]
        truth = self.has_truth
        available = [k for k, v in truth.items() if v]
        missing = [k for k, v in truth.items() if not v]
        lines.append(f"  available:          {', '.join(available) or 'load only'}")
        lines.append(f"  not available:      {', '.join(missing) or '-'}")
        files = self.files()
        simulated = " (simulated)" if isinstance(self, SimulatedDataset) else ""
        lines.append(f"  files needed:       {', '.join(files) if files else 'none' + simulated}")
        lines.extend(f"  {line}" for line in self._extra_description())
        return "\n".join(lines)

    def _extra_description(self) -> list[str]:
        return []

    # Helpers ---------------------------------------------------------------------------------

    def _check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"{self.name}: unknown split {split!r}, expected one of {SPLITS}")

    def _theta_rows(self, theta: np.ndarray | float | None, n: int) -> np.ndarray:
        """``theta`` as an ``(n, parameter_dim)`` float64 array (default theta when ``None``)."""
        p = self.parameter_dim
        if p == 0:
            if theta is not None:
                raise ValueError(f"{self.name} is unconditional: expected theta=None")
            return np.zeros((n, 0))
        theta = self.default_theta if theta is None else theta
        theta = np.asarray(theta, dtype=np.float64)
        if theta.ndim == 0:
            theta = theta.reshape(1)
        if theta.shape == (p,):
            theta = np.broadcast_to(theta, (n, p))
        if theta.shape != (n, p):
            raise ValueError(
                f"{self.name}: expected theta.shape == ({p},) or ({n}, {p}), got {theta.shape}"
            )
        return theta

    def _check_x(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        d = self.data_dim
        if x.ndim != 2 or x.shape[1] != d:
            raise ValueError(f"{self.name}: expected x.shape == (B, {d}), got {x.shape}")
        return x


class SimulatedDataset(Dataset):
    """A data set simulated on the fly.

    ``load(split, n, seed)`` simulates with a random stream specific to ``(seed, split)``, so
    the splits never overlap and repeat exactly for the same seed. Conditional sets draw the
    train and val parameters from the prior and simulate the test split at ``default_theta``.
    """

    #: Default number of points per split when ``load`` gets ``n=None``.
    split_sizes: ClassVar[dict[str, int]] = {"train": 100_000, "val": 10_000, "test": 10_000}

    def load(self, split: str, n: int | None = None, seed: int = 0) -> Batch:
        n, theta, rng = self._split_draw(split, n, seed)
        x = self.sample(n, theta=theta, seed=rng)
        return Batch(_as_float32(x), _as_float32(theta), None)

    def _split_draw(
        self, split: str, n: int | None, seed: int
    ) -> tuple[int, np.ndarray | None, np.random.Generator]:
        """The size, parameters and random stream of ``split``: test points at the default
        theta, training and validation points at prior draws; the stream continues with the
        points themselves."""
        self._check_split(split)
        n = self.split_sizes[split] if n is None else int(n)
        if n < 0:
            raise InvalidArgumentError(f"{self.name}: expected n >= 0, got {n}")
        rng = split_rng(seed, split)
        theta = None
        if self.parameter_dim:
            if split == "test":
                theta = self._theta_rows(None, n)
            else:
                theta = self.sample_prior(n, seed=rng)
        return n, theta, rng


class FileBackedDataset(Dataset):
    """A data set read from ``.npy`` files in its directory (downloaded when missing).

    The files live in ``<data_dir>/<name>/`` (see :func:`mflows.data.download.data_dir`).
    Only the files a split needs are fetched and verified. Sets without a validation file carve
    the validation split off the end of the training file (``val_fraction`` of its rows), so
    ``train`` and ``val`` never overlap. ``load(split, n)`` returns the first ``n`` rows.

    Args:
        data_dir: Root data directory (default: ``MFLOWS_DATA_DIR`` or the user data dir).
        download: Whether to download missing files.
        progress: Whether to show download progress.
        val_fraction: Fraction of the training file used as the validation split.
    """

    #: File name -> download URL (or ``None``) for every file of the data set.
    urls: ClassVar[dict[str, str | None]] = {}
    #: File name -> known SHA256 digest (none are published for the paper's files).
    checksums: ClassVar[dict[str, str]] = {}

    def __init__(
        self,
        data_dir: str | None = None,
        download: bool = True,
        progress: bool = True,
        val_fraction: float = 0.1,
    ) -> None:
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"{self.name}: expected 0 <= val_fraction < 1, got {val_fraction}")
        self.data_dir = data_dir
        self.download = download
        self.progress = progress
        self.val_fraction = float(val_fraction)

    @property
    def directory(self):
        """The directory holding this data set's files."""
        from .download import dataset_dir

        return dataset_dir(self.name, self.data_dir)

    def files(self) -> list[str]:
        return list(self.urls)

    def _fetch(self, names: list[str]) -> dict[str, np.ndarray]:
        """Fetches and verifies ``names`` and opens them as (memory-mapped) arrays."""
        from .download import RemoteFile, fetch

        specs = [RemoteFile(n, self.urls.get(n), self.checksums.get(n)) for n in names]
        paths = fetch(
            self.name,
            specs,
            self.directory,
            download_missing=self.download,
            progress=self.progress,
        )
        return {name: np.load(path, mmap_mode="r") for name, path in paths.items()}

    def _train_val_rows(self, split: str, total: int) -> slice:
        """Rows of the training file that form ``split`` (``train`` or ``val``)."""
        num_val = round(self.val_fraction * total)
        if split == "val":
            if num_val == 0:
                raise ValueError(f"{self.name}: no validation split with val_fraction=0")
            return slice(total - num_val, total)
        return slice(0, total - num_val)

    @staticmethod
    def _head(rows: slice, n: int | None) -> slice:
        if n is None:
            return rows
        if n < 0:
            raise ValueError(f"expected n >= 0, got {n}")
        available = rows.stop - rows.start
        if n > available:
            raise ValueError(f"requested n={n} points but the split has only {available}")
        return slice(rows.start, rows.start + n)

    def _extra_description(self) -> list[str]:
        return [f"directory: {self.directory}"]
