"""Fixed permutations of the features of ``(B, d)`` vectors (log|det J| = 0)."""

from __future__ import annotations

import torch
from torch import Tensor

from mflows.transforms.base import Transform

__all__ = ["Permutation", "RandomPermutation", "ReversePermutation"]


class Permutation(Transform):
    """y = x[:, perm]; the inverse uses ``argsort(perm)``. Both are stored as buffers."""

    def __init__(self, permutation: Tensor):
        super().__init__()
        permutation = torch.as_tensor(permutation, dtype=torch.long)
        if not torch.equal(torch.sort(permutation).values, torch.arange(len(permutation))):
            raise ValueError("not a permutation of 0..d-1")
        self.register_buffer("permutation", permutation)
        self.register_buffer("inverse_permutation", torch.argsort(permutation))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return torch.index_select(x, -1, self.permutation), x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return torch.index_select(y, -1, self.inverse_permutation), y.new_zeros(y.shape[0])


class RandomPermutation(Permutation):
    """A random permutation of ``features`` (reproducible with ``seed``)."""

    def __init__(self, features: int, seed: int | None = None):
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        super().__init__(torch.randperm(features, generator=generator))


class ReversePermutation(Permutation):
    """Reverses the order of ``features``."""

    def __init__(self, features: int):
        super().__init__(torch.arange(features - 1, -1, -1))
