"""From a :class:`RunConfig` to a data set, a model and the keyword arguments of ``fit``.

The model is built by :func:`mflows.models.make_model` with exactly the options that are set in
the configuration; the others take the factory's defaults, so the configured model is the model
``make_model`` builds from the same arguments.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from mflows import registry
from mflows.errors import ConfigError, DataNotAvailableError, RunError
from mflows.experiments.config import DataConfig, ModelConfig, RunConfig, TrainingConfig

__all__ = [
    "arrays_dataset",
    "build_model",
    "cache_files",
    "data_checksums",
    "dataset_names",
    "describe_dataset",
    "fit_options",
    "get_dataset",
    "load_split",
    "model_architecture",
    "model_dims",
    "resolve_device",
    "torch_device",
]


def resolve_device(name: str) -> str:
    """The concrete device of a device name: ``auto`` is ``cuda`` when a GPU is present, then
    ``mps`` (Apple), else ``cpu``; other names are checked to exist.

    Raises:
        ConfigError: for a malformed name, or a device that is not available here.
    """
    import torch

    from mflows.experiments.config import check_device_name

    check_device_name(name)
    mps = getattr(torch.backends, "mps", None)
    mps_ok = bool(mps is not None and mps.is_available())
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if mps_ok else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device = {name!r} requested but CUDA is not available here; use 'cpu' or 'auto'"
            )
        if ":" in name:
            index, count = int(name.split(":", 1)[1]), torch.cuda.device_count()
            if index >= count:
                raise ConfigError(
                    f"device = {name!r} requested but this machine has {count} CUDA device(s) "
                    f"(cuda:0 .. cuda:{count - 1})"
                )
    if name == "mps" and not mps_ok:
        raise ConfigError("device = 'mps' requested but MPS is not available; use 'cpu' or 'auto'")
    return name


def torch_device(name: str):
    """The torch device of a device name (see :func:`resolve_device`)."""
    import torch

    return torch.device(resolve_device(name))


def dataset_names() -> list[str]:
    """Names of the registered data sets."""
    from mflows import data

    return list(data.names())


def get_dataset(config: DataConfig):
    """Instantiate the data set of ``config`` (options that are ``None`` are left out).

    Raises:
        ConfigError: for an unknown name or options the data set does not take.
        DataNotAvailableError: for files that are missing.
    """
    from mflows import data
    from mflows.experiments.config import ARRAYS_NAME

    if config.name == ARRAYS_NAME:
        return arrays_dataset(config)
    names = dataset_names()
    if config.name not in names:
        raise ConfigError(f"unknown data set {config.name!r}; valid data sets: {', '.join(names)}")
    options = config.options()
    try:
        return data.get(config.name, **options)
    except DataNotAvailableError:
        raise
    except (TypeError, ValueError) as error:
        raise ConfigError(f"data set {config.name!r} with options {options}: {error}") from None
    except (OSError, RuntimeError) as error:
        raise RunError(f"data set {config.name!r}: {error}") from None


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def data_checksums(config: DataConfig) -> str:
    """The ``data.checksums`` value of your own data: ``key:sha256`` of each file, in order."""
    return ",".join(f"{key}:{file_sha256(path)}" for key, path in config.files().items())


def _check_checksums(config: DataConfig) -> None:
    recorded = dict(item.split(":", 1) for item in (config.checksums or "").split(",") if item)
    for key, path in config.files().items():
        if key in recorded and file_sha256(path) != recorded[key]:
            raise RunError(
                f"data file {path} (data.{key}) changed since the run was trained (SHA-256 "
                "differs); restore the original file, or train a new run on the new data"
            )


def arrays_dataset(config: DataConfig):
    """The data set of your own data files (``data.x_file`` and friends, see
    :func:`mflows.data.from_arrays`), after checking they did not change since training.

    Raises:
        DataNotAvailableError: a file is missing.
        RunError: a file changed since ``data.checksums`` was recorded.
        ConfigError: the arrays are unusable (the message says why, e.g. which rows hold NaN).
    """
    from mflows.data import from_arrays, load_array
    from mflows.errors import InvalidArgumentError

    files = config.files()
    for key, path in files.items():
        if not Path(path).is_file():
            raise DataNotAvailableError(f"data file {path} (data.{key}) does not exist")
    if config.checksums:
        _check_checksums(config)
    try:
        arrays = {
            key.removesuffix("_file"): load_array(path, key=_npz_key(key))
            for key, path in files.items()
        }
        name = Path(files["x_file"]).stem
        return from_arrays(**arrays, name=name, latent_dim=config.latent_dim)
    except InvalidArgumentError as error:
        where = ", ".join(f"{k.removesuffix('_file')} = {p}" for k, p in files.items())
        raise ConfigError(f"your data ({where}): {error}") from None


def _npz_key(field: str) -> str:
    """Inside an ``.npz`` holding several arrays, the array a file field reads."""
    return field.removesuffix("_file")


def cache_files(data_dir: str | None = None) -> list[Path]:
    """The simulation caches under the data directory (Lorenz trajectories, partial files)."""
    from mflows.data.download import dataset_dir

    directory = dataset_dir("lorenz", data_dir)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.startswith(("trajectories-", ".traj")))


def describe_dataset(name: str, data_dir: str | None = None) -> str:
    """Human-readable description of a data set (``mflows data describe``)."""
    return get_dataset(DataConfig(name=name, data_dir=data_dir)).describe()


def load_split(dataset, split: str, n: int | None, seed: int):
    """``dataset.load(split, n, seed)``; missing or corrupt files raise :class:`RunError`."""
    try:
        return dataset.load(split, n=n, seed=seed)
    except DataNotAvailableError:
        raise
    except (OSError, RuntimeError) as error:
        raise RunError(f"cannot load the {split} split of {dataset.name}: {error}") from None


def model_dims(config: ModelConfig, dataset) -> tuple[Any, int, int]:
    """``(data_dim, latent_dim, context_dim)`` of the model of ``config`` for ``dataset``.

    A model without a manifold (the ambient flow) has latent dimension d.
    """
    d = int(np.prod(dataset.data_dim))
    context_dim = int(dataset.parameter_dim or 0)
    if not registry.capabilities(config.kind).has_manifold:
        return dataset.data_dim, d, context_dim
    n = config.latent_dim if config.latent_dim is not None else dataset.latent_dim
    if n is None:
        raise ConfigError(
            f"data set {dataset.name} has no known manifold dimension: set model.latent_dim"
        )
    if not 0 < n < d:
        raise ConfigError(f"model.latent_dim must be in [1, {d - 1}] for {dataset.name}, got {n}")
    return dataset.data_dim, int(n), context_dim


def model_architecture(config: ModelConfig, dataset, seed: int | None = None) -> dict[str, Any]:
    """Keyword arguments of :func:`mflows.models.make_model` for ``config`` and ``dataset``.

    Only the options that are set and that the kind accepts are passed, plus ``seed``.
    """
    arch = config.architecture()
    arch["seed"] = seed
    caps = registry.capabilities(config.kind)
    if caps.prescribed_manifold and "chart" not in arch:
        if not dataset.name.endswith("spherical_gaussian"):
            raise ConfigError(
                f"model.kind = {config.kind!r} needs a prescribed chart (model.chart); mflows "
                f"provides the sphere chart for the spherical data sets, not for {dataset.name}"
            )
    return arch


def build_model(config: RunConfig, dataset):
    """Build the (untrained) model of ``config`` for ``dataset`` on ``config.device``."""
    import torch

    from mflows.models import make_model

    torch.manual_seed(config.training.seed)
    data_dim, latent_dim, context_dim = model_dims(config.model, dataset)
    arch = model_architecture(config.model, dataset, seed=config.training.seed)
    try:
        model = make_model(config.model.kind, data_dim, latent_dim, context_dim, **arch)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"cannot build model {config.model.kind!r}: {error}") from None
    return model.to(torch_device(config.device))


#: training algorithms that split ``epochs`` into a manifold stage and a density stage.
TWO_STAGE = ("sequential", "pae")


def fit_options(config: TrainingConfig) -> dict[str, Any]:
    """Keyword arguments of :func:`mflows.training.fit` for ``config``.

    The two-stage schemes (:data:`TWO_STAGE`) split ``epochs`` in halves; ``epochs = 1`` gives
    one epoch per stage (two in all), so ``--set training.epochs=1`` smoke tests work for every
    scheme.
    """
    options = dataclasses.asdict(config)
    if config.algorithm in TWO_STAGE and config.epochs < 2:
        options["epochs"] = (1, 1)  # one epoch per stage: the smallest run (smoke tests)
    scandal = options.pop("scandal")
    options["scandal"] = scandal is not None
    if scandal is not None:
        options["scandal_weight"] = float(scandal)
    return options
