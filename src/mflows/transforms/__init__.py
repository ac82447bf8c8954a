"""Bijections with the contract ``forward(x, context) -> (y, logabsdet)`` (see ``base``)."""

from mflows.transforms.base import (
    CompositeTransform,
    IdentityTransform,
    InverseTransform,
    Transform,
)

__all__ = ["CompositeTransform", "IdentityTransform", "InverseTransform", "Transform"]
