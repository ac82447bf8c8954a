"""Cached 0-dim constant tensors for hot elementwise code.

``x * 2.0`` with a Python float wraps the number in a fresh tensor on every call and converts it
(``aten::to``, ``_to_copy``, ``copy_``): about 3x the cost of ``x * c`` with a ready 0-dim tensor
``c`` on small CPU tensors, where per-op overhead dominates. :func:`constant` returns such a
tensor, cached per value, dtype and device. It is created outside inference mode and without
gradient, so autograd may save it; 0-dim tensors broadcast and take part in type promotion like
Python scalars, so results are unchanged. While ``torch.compile`` traces, a fresh tensor is
returned (the compiler folds constants itself and must not see cached real tensors).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["constant"]

_CACHE: dict[tuple[float | int, torch.dtype, torch.device], Tensor] = {}


def constant(value: float | int, like: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """0-dim tensor holding ``value``, dtype (default: ``like``'s) and device of ``like``."""
    dtype = like.dtype if dtype is None else dtype
    if torch.compiler.is_compiling():
        return torch.tensor(value, dtype=dtype, device=like.device)
    key = (value, dtype, like.device)
    tensor = _CACHE.get(key)
    if tensor is None:
        with torch.inference_mode(False), torch.no_grad():
            tensor = torch.tensor(value, dtype=dtype, device=like.device)
        if len(_CACHE) < 4096:
            _CACHE[key] = tensor
    return tensor
