"""The bijection contract shared by every transform in mflows.

Every transform is a :class:`torch.nn.Module` with two methods::

    forward(x, context=None) -> (y, logabsdet)
    inverse(y, context=None) -> (x, logabsdet)

``logabsdet`` is ``log |det J|`` of the map *just applied* (so for the inverse it is the
log-determinant of the inverse map), with shape ``(batch,)``. Inputs carry a leading batch
dimension; tabular transforms act on ``(B, d)``, image layers on ``(B, C, H, W)``. Every
transform accepts ``context`` (a ``(B, c)`` tensor or ``None``) and ignores it when it has no use
for it.

Transforms must be safe under ``torch.func`` (``vmap``, ``jacfwd``, ``jacrev``): no boolean-mask
indexing, no data-dependent Python branches, no in-place writes into fresh buffers.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor, nn

__all__ = ["CompositeTransform", "IdentityTransform", "InverseTransform", "Transform"]


def sum_except_batch(x: Tensor, num_batch_dims: int = 1) -> Tensor:
    """Sum over every dimension after the first ``num_batch_dims``."""
    return x.reshape(*x.shape[:num_batch_dims], -1).sum(-1)


class Transform(nn.Module):
    """Base class of all bijections: see the module docstring for the contract."""

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class IdentityTransform(Transform):
    """y = x, log|det J| = 0."""

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x, x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return y, y.new_zeros(y.shape[0])


class CompositeTransform(Transform):
    """Composition t_k o ... o t_1: ``forward`` applies the transforms in the given order."""

    def __init__(self, transforms: Iterable[Transform]):
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total = None
        for t in self.transforms:
            x, logabsdet = t(x, context)
            total = logabsdet if total is None else total + logabsdet
        return x, x.new_zeros(x.shape[0]) if total is None else total

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total = None
        for t in reversed(self.transforms):
            y, logabsdet = t.inverse(y, context)
            total = logabsdet if total is None else total + logabsdet
        return y, y.new_zeros(y.shape[0]) if total is None else total


class InverseTransform(Transform):
    """Swaps ``forward`` and ``inverse`` of a wrapped transform."""

    def __init__(self, transform: Transform):
        super().__init__()
        self.base = transform

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.base.inverse(x, context)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.base(y, context)
