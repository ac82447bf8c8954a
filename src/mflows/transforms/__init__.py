"""Bijections with the contract ``forward(x, context) -> (y, logabsdet)`` (see ``base``)."""

from mflows.transforms.base import (
    CompositeTransform,
    IdentityTransform,
    InverseTransform,
    Transform,
)
from mflows.transforms.builders import make_tabular_flow
from mflows.transforms.coupling import AffineCoupling, Coupling, RQSCoupling, alternating_mask
from mflows.transforms.images import (
    ActNorm,
    ImageRQSCoupling,
    InvertibleConv1x1,
    MultiscaleFlow,
    Squeeze,
    make_image_flow,
)
from mflows.transforms.linear import LULinear
from mflows.transforms.permutations import Permutation, RandomPermutation, ReversePermutation
from mflows.transforms.splines import ElementwiseRQS, rational_quadratic_spline
from mflows.transforms.standardize import Standardize

__all__ = [
    "ActNorm",
    "AffineCoupling",
    "CompositeTransform",
    "Coupling",
    "ElementwiseRQS",
    "IdentityTransform",
    "ImageRQSCoupling",
    "InverseTransform",
    "InvertibleConv1x1",
    "LULinear",
    "MultiscaleFlow",
    "Permutation",
    "RQSCoupling",
    "RandomPermutation",
    "ReversePermutation",
    "Squeeze",
    "Standardize",
    "Transform",
    "alternating_mask",
    "make_image_flow",
    "make_tabular_flow",
    "rational_quadratic_spline",
]
