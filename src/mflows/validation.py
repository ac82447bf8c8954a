"""Input checks shared by the public entry points of mflows.

Public methods validate at the boundary and trust their inputs inside. Every check raises
:class:`~mflows.errors.InvalidArgumentError` (a :class:`ValueError`) with a message naming the
expected shape, e.g. ``expected x.shape[-1] == 40, got 39``. NumPy arrays (and anything
:func:`torch.as_tensor` accepts) are converted to tensors with the dtype and device of the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mflows.errors import InvalidArgumentError

__all__ = ["as_tensor", "check_context", "check_num_samples", "shape_str"]


def shape_str(shape: Sequence[int]) -> str:
    """Formats a trailing shape as ``(B, 3, 8, 8)``."""
    return "(" + ", ".join(["B", *(str(int(s)) for s in shape)]) + ")"


def _to_tensor(x: Any, name: str) -> Tensor:
    if isinstance(x, Tensor):
        return x
    if x is None:
        raise InvalidArgumentError(f"{name} is required, got None")
    try:
        array = np.asarray(x)
    except Exception as error:  # pragma: no cover - exotic inputs
        raise InvalidArgumentError(
            f"{name} must be a tensor or an array, got {type(x).__name__}"
        ) from error
    if array.dtype == object:
        raise InvalidArgumentError(f"{name} must be a numeric tensor or array, got dtype object")
    return torch.as_tensor(array)


def as_tensor(
    x: Any,
    name: str,
    trailing_shape: Sequence[int],
    *,
    dtype: torch.dtype,
    device: torch.device | str,
    batched: bool = True,
) -> Tensor:
    """Converts ``x`` to a checked floating-point tensor.

    Args:
        x: a tensor, NumPy array or nested sequence of shape ``(B, *trailing_shape)``
            (or ``trailing_shape`` alone when ``batched`` is False).
        name: the argument name used in error messages.
        trailing_shape: the expected shape after the batch dimension.
        dtype: floating dtype of the result (the model's dtype).
        device: device of the result (the model's device).
        batched: whether a leading batch dimension is required.

    Returns:
        The tensor with dtype ``dtype`` on ``device``.

    Raises:
        ValueError: wrong number of dimensions, wrong trailing shape, non-float dtype or
            non-finite values.
    """
    t = _to_tensor(x, name)
    trailing = tuple(int(s) for s in trailing_shape)
    expected_ndim = len(trailing) + (1 if batched else 0)
    expected = shape_str(trailing) if batched else str(trailing)
    if not (t.is_floating_point()):
        raise InvalidArgumentError(
            f"{name} must have a floating-point dtype, got {t.dtype} (expected shape {expected})"
        )
    if t.dim() != expected_ndim:
        raise InvalidArgumentError(
            f"expected {name} of shape {expected} ({expected_ndim} dims), "
            f"got {tuple(t.shape)} ({t.dim()} dims)"
        )
    got = tuple(t.shape[t.dim() - len(trailing) :])
    if got != trailing:
        if len(trailing) == 1:
            raise InvalidArgumentError(f"expected {name}.shape[-1] == {trailing[0]}, got {got[0]}")
        raise InvalidArgumentError(f"expected {name} of shape {expected}, got {tuple(t.shape)}")
    t = t.to(dtype=dtype, device=device)
    # a data-dependent check would break a compiled graph (and warn on every compilation); a
    # compiled training step sees batches that fit() has already checked once
    if not torch.compiler.is_compiling() and not bool(torch.isfinite(t).all()):
        raise InvalidArgumentError(f"{name} contains non-finite values (NaN or inf)")
    return t


def check_context(
    context: Any,
    context_dim: int,
    batch_size: int | None,
    *,
    dtype: torch.dtype,
    device: torch.device | str,
    allow_single: bool = False,
) -> Tensor | None:
    """Checks the conditioning variable ``context`` (theta) of a model.

    Args:
        context: ``None`` for an unconditional model, else ``(B, context_dim)``; with
            ``allow_single`` also ``(context_dim,)``, broadcast to ``(batch_size, context_dim)``.
        context_dim: the model's context dimension (0 = unconditional).
        batch_size: the batch size the context must match (``None`` skips this check).
        dtype: floating dtype of the result.
        device: device of the result.
        allow_single: accept a single unbatched context vector.

    Returns:
        ``None`` for unconditional models, else a ``(batch_size, context_dim)`` tensor.

    Raises:
        ValueError: context missing for a conditional model, given to an unconditional one,
            mis-shaped, non-float or non-finite.
    """
    if context_dim == 0:
        if context is not None:
            raise InvalidArgumentError(
                "this model is unconditional (context_dim == 0) but got a context"
            )
        return None
    if context is None:
        raise InvalidArgumentError(
            f"this model is conditional: expected context of shape (B, {context_dim}), got None"
        )
    t = _to_tensor(context, "context")
    if allow_single and t.dim() == 1:
        t = as_tensor(t, "context", (context_dim,), dtype=dtype, device=device, batched=False)
        return t.expand(batch_size if batch_size is not None else 1, context_dim)
    t = as_tensor(t, "context", (context_dim,), dtype=dtype, device=device)
    if batch_size is not None and t.shape[0] != batch_size:
        raise InvalidArgumentError(
            f"expected context of shape ({batch_size}, {context_dim}) to match the batch, "
            f"got {tuple(t.shape)}"
        )
    return t


def check_num_samples(num: Any) -> int:
    """Checks a number of samples: a non-negative integer."""
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 0:
        raise InvalidArgumentError(f"expected num to be a non-negative integer, got {num!r}")
    return int(num)
