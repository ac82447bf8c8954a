"""mflows: manifold-learning flows for simultaneous manifold learning and density estimation.

Public API (SPEC §3)::

    model = mflows.make_model("mflow", data_dim=3, latent_dim=2)
    history = mflows.fit(model, x, algorithm="alternating", epochs=20)
    model.encode(x), model.decode(u), model.project(x), model.log_prob(x), model.sample(n)
    model.save(path); model = mflows.load(path)

Subpackages: :mod:`mflows.transforms` (bijections), :mod:`mflows.models`, :mod:`mflows.training`,
:mod:`mflows.data` (data sets with ground truth), :mod:`mflows.evaluation` (metrics, MCMC, FID,
plots, reports).

References:
    Flows for simultaneous manifold learning and density estimation.
    J. Brehmer and K. Cranmer, NeurIPS 2020, arXiv:2003.13913.
"""

from mflows import data, evaluation, models, training, transforms
from mflows.dimension import DimensionEstimate, estimate_dimension
from mflows.models import Model, load, make_model
from mflows.training import History, fit

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
    "load",
    "make_model",
    "models",
    "training",
    "transforms",
]
