"""Data sets of the paper behind one registry: ``get(name, **options)``, ``names()``, ``describe``.

Simulated (true manifold and density known where noted): ``spherical_gaussian``,
``conditional_spherical_gaussian``, ``power``, ``lorenz``, ``blobs`` (images). File-backed
(downloaded on first use into the data directory, see :mod:`mflows.data.download`): ``lhc40d``,
``gan2d``, ``gan64d``, ``celeba``, ``imagenet``.

Your own data: :func:`from_arrays` (see :mod:`mflows.data.arrays`).

Example:
    >>> from mflows import data
    >>> ds = data.get("power")
    >>> batch = ds.load("train", n=1000, seed=0)
    >>> batch.x.shape, batch.theta.shape
    ((1000, 3), (1000, 1))
"""

from __future__ import annotations

import inspect

from .arrays import ArrayDataset, from_arrays, load_array
from .base import Batch, Dataset, FileBackedDataset, SimulatedDataset
from .blobs import Blobs
from .download import DataNotAvailableError, data_dir
from .images import CelebA, GAN2d, GAN64d, ImageNet
from .lhc40d import LHC40d
from .lorenz import Lorenz
from .power import PolynomialSurface
from .spherical import ConditionalSphericalGaussian, SphericalGaussian

__all__ = [
    "ArrayDataset",
    "Batch",
    "Blobs",
    "CelebA",
    "ConditionalSphericalGaussian",
    "DataNotAvailableError",
    "Dataset",
    "FileBackedDataset",
    "GAN2d",
    "GAN64d",
    "ImageNet",
    "LHC40d",
    "Lorenz",
    "PolynomialSurface",
    "SimulatedDataset",
    "SphericalGaussian",
    "data_dir",
    "describe",
    "from_arrays",
    "get",
    "load_array",
    "names",
]

_REGISTRY: dict[str, type[Dataset]] = {
    cls.name: cls
    for cls in (
        SphericalGaussian,
        ConditionalSphericalGaussian,
        PolynomialSurface,
        Lorenz,
        LHC40d,
        GAN2d,
        GAN64d,
        CelebA,
        ImageNet,
        Blobs,
    )
}


def names() -> list[str]:
    """Names of all registered data sets."""
    return list(_REGISTRY)


def get(name: str, **options) -> Dataset:
    """The data set ``name`` built with ``options`` (e.g. ``n=2, d=3`` for the spherical sets,
    ``data_dir=...`` for file-backed and cached sets).

    Raises:
        ValueError: Unknown name or option.
    """
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown data set {name!r}; expected one of {names()}") from None
    try:
        inspect.signature(cls).bind(**options)
    except TypeError as error:
        raise ValueError(f"invalid options for data set {name!r}: {error}") from None
    return cls(**options)


def describe(name: str, **options) -> str:
    """Human-readable description of data set ``name``: dimensions, parameters, truth, files."""
    return get(name, **options).describe()
