"""Models: ambient flow, FOM, PIE, M-flow, M_e-flow and PAE behind one interface.

Build them with :func:`make_model`, read saved ones with :func:`load`; the interface is
documented on :class:`Model` and in docs/interfaces.md.
"""

from mflows.models.ambient import AmbientFlow
from mflows.models.base import Model
from mflows.models.emflow import EMFlow
from mflows.models.factory import ARCHITECTURE_KEYS, KINDS, default_architecture, load, make_model
from mflows.models.mflow import FOM, ManifoldFlowBase, MFlow
from mflows.models.pae import PAE
from mflows.models.pie import PIE

__all__ = [
    "ARCHITECTURE_KEYS",
    "FOM",
    "KINDS",
    "PAE",
    "PIE",
    "AmbientFlow",
    "EMFlow",
    "MFlow",
    "ManifoldFlowBase",
    "Model",
    "default_architecture",
    "load",
    "make_model",
]
