"""mflows: manifold-learning flows for simultaneous manifold learning and density estimation.

Public API (the contract of docs/interfaces.md)::

    model = mflows.make_model("mflow", data_dim=3, latent_dim=2)
    history = mflows.fit(model, x, algorithm="alternating", epochs=20)
    model.encode(x), model.decode(u), model.project(x), model.log_prob(x), model.sample(n)
    model.save(path); model = mflows.load(path)

Subpackages: :mod:`mflows.transforms` (bijections), :mod:`mflows.models`, :mod:`mflows.training`,
:mod:`mflows.data` (data sets with ground truth), :mod:`mflows.evaluation` (metrics, MCMC, FID,
plots, reports).

The subpackages and the names above are imported on first use, so ``import mflows`` (and the
command line's ``mflows --help``) does not load torch.

References:
    Flows for simultaneous manifold learning and density estimation.
    J. Brehmer and K. Cranmer, NeurIPS 2020, arXiv:2003.13913.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "DimensionEstimate",
    "History",
    "Model",
    "__version__",
    "data",
    "estimate_dimension",
    "evaluation",
    "fit",
    "fit_ensemble",
    "load",
    "make_model",
    "models",
    "training",
    "transforms",
]

_SUBMODULES = ("data", "evaluation", "models", "training", "transforms")
#: public name -> module that defines it.
_LAZY = {
    "Model": "mflows.models",
    "load": "mflows.models",
    "make_model": "mflows.models",
    "History": "mflows.training",
    "fit": "mflows.training",
    "fit_ensemble": "mflows.training",
    "DimensionEstimate": "mflows.dimension",
    "estimate_dimension": "mflows.dimension",
}

if TYPE_CHECKING:  # pragma: no cover
    from mflows import data, evaluation, models, training, transforms
    from mflows.dimension import DimensionEstimate, estimate_dimension
    from mflows.models import Model, load, make_model
    from mflows.training import History, fit, fit_ensemble


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        module = importlib.import_module(f"mflows.{name}")
        globals()[name] = module
        return module
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mflows' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
