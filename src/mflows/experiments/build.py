"""From a :class:`RunConfig` to a data set, a model and the keyword arguments of ``fit``.

The model is built by :func:`mflows.models.make_model` with exactly the options that are set in
the configuration; the others take the factory's defaults, so the configured model is the model
``make_model`` builds from the same arguments.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mflows import registry
from mflows.errors import ConfigError, DataNotAvailableError, RunError
from mflows.experiments.config import DataConfig, ModelConfig, RunConfig, TrainingConfig

__all__ = [
    "build_model",
    "dataset_names",
    "describe_dataset",
    "fit_options",
    "get_dataset",
    "load_split",
    "model_architecture",
    "model_dims",
    "torch_device",
]


def torch_device(name: str):
    """The torch device ``name``, refusing ``cuda`` where CUDA is not available."""
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device = 'cuda' requested but CUDA is not available; use 'cpu'")
    return torch.device(name)


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


def fit_options(config: TrainingConfig) -> dict[str, Any]:
    """Keyword arguments of :func:`mflows.training.fit` for ``config``."""
    options = dataclasses.asdict(config)
    scandal = options.pop("scandal")
    options["scandal"] = scandal is not None
    if scandal is not None:
        options["scandal_weight"] = float(scandal)
    return options
