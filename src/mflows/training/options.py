"""Range checks of the training options, shared by :func:`~mflows.training.fit` and the trainer.

Every check raises :class:`~mflows.errors.InvalidArgumentError` (a ``ValueError``) naming the
argument, before any training starts.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from mflows.errors import InvalidArgumentError
from mflows.training.defaults import OPTIMIZERS

__all__ = [
    "check_epochs",
    "check_float",
    "check_int",
    "check_optimizer_options",
]


def check_int(value: Any, name: str, minimum: int | None = None, *, none: bool = False):
    """``value`` as an ``int`` (``bool`` and non-integral numbers refused), at least ``minimum``."""
    if value is None and none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidArgumentError(
            f"{name} must be an integer{' or None' if none else ''}, got {value!r}"
        )
    value = int(value)
    if minimum is not None and value < minimum:
        raise InvalidArgumentError(f"expected {name} >= {minimum}, got {value}")
    return value


def check_float(
    value: Any,
    name: str,
    *,
    positive: bool = False,
    nonnegative: bool = False,
    none: bool = False,
) -> float | None:
    """``value`` as a finite ``float``; optionally ``> 0`` or ``>= 0``; ``None`` if allowed."""
    if value is None and none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidArgumentError(
            f"{name} must be a real number{' or None' if none else ''}, got {value!r}"
        )
    value = float(value)
    if not math.isfinite(value):
        raise InvalidArgumentError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        hint = " (None switches it off)" if none else ""
        raise InvalidArgumentError(f"expected {name} > 0{hint}, got {value}")
    if nonnegative and value < 0:
        raise InvalidArgumentError(f"expected {name} >= 0, got {value}")
    return value


def check_epochs(epochs: Any) -> int | tuple[int, int]:
    """``epochs`` as a positive int or a pair of positive ints."""
    if isinstance(epochs, (tuple, list)):
        if len(epochs) != 2:
            raise InvalidArgumentError(
                f"epochs must be an integer or a pair (manifold_epochs, density_epochs), "
                f"got {epochs!r}"
            )
        return (check_int(epochs[0], "epochs[0]", 1), check_int(epochs[1], "epochs[1]", 1))
    return check_int(epochs, "epochs", 1)


def check_optimizer_options(
    *,
    batch_size: Any,
    lr: Any,
    weight_decay: Any,
    optimizer: Any,
    clip: Any,
    patience: Any,
    seed: Any,
) -> dict[str, Any]:
    """Checks the options of the optimisation loop and returns them normalised."""
    if optimizer not in OPTIMIZERS:
        raise InvalidArgumentError(
            f"optimizer must be one of {', '.join(map(repr, OPTIMIZERS))}, got {optimizer!r}"
        )
    return {
        "batch_size": check_int(batch_size, "batch_size", 1),
        "lr": check_float(lr, "lr", positive=True),
        "weight_decay": check_float(weight_decay, "weight_decay", nonnegative=True),
        "optimizer": optimizer,
        "clip": check_float(clip, "clip", positive=True, none=True),
        "patience": check_int(patience, "patience", 1, none=True),
        "seed": check_int(seed, "seed", 0),
    }
