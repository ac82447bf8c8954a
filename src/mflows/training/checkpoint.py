"""Training checkpoints: atomic writes, safe reads.

A checkpoint is a dict of plain Python values (``dict``, ``list``, ``str``, numbers, ``None``)
and tensors, written atomically with :func:`mflows.files.atomic_torch_save` (a crash while writing
leaves the previous checkpoint intact) and read back with ``torch.load(..., weights_only=True)``,
so that a crafted file cannot run code when it is loaded: anything but plain data is refused with
a :class:`~mflows.errors.CheckpointError`.

What the trainer stores is described by :class:`~mflows.training.state.TrainState`.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from mflows.errors import CheckpointError
from mflows.files import atomic_torch_save

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "CHECKPOINT_VERSION",
    "load_checkpoint",
    "load_model_from_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "mflows-checkpoint"
CHECKPOINT_VERSION = 2
CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Writes ``state`` (plain values and tensors) to ``path`` atomically.

    Args:
        state: the checkpoint dict.
        path: destination file; its directory is created if missing.

    Returns:
        The path written.
    """
    return atomic_torch_save(state, path)


def _advice(path: Path) -> str:
    return f"delete {path} (or its directory) to start over, or train with resume=False"


def _load_failure(path: Path, error: Exception) -> str:
    """The message for a checkpoint ``torch.load`` could not read with ``weights_only=True``."""
    text = str(error)
    if isinstance(error, (PermissionError, IsADirectoryError)):
        return f"{path} cannot be read ({error}); check its permissions, or {_advice(path)}"
    refused = [line.strip() for line in text.splitlines() if "GLOBAL" in line]
    if isinstance(error, pickle.UnpicklingError) and refused:
        return (
            f"{path} holds more than plain data and tensors, so it was not written by mflows "
            f"and was not loaded ({refused[0]}); {_advice(path)}"
        )
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = lines[-1] if isinstance(error, pickle.UnpicklingError) and lines else text.strip()
    return (
        f"{path} is truncated or corrupt ({type(error).__name__}: {detail[:200]}); {_advice(path)}"
    )


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Reads a checkpoint written by :func:`save_checkpoint` (a file or a run directory).

    Only plain data and tensors are unpickled (``weights_only=True``): loading never runs code.

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        CheckpointError: the file is truncated or corrupt, holds something other than plain data,
            is not an mflows training checkpoint, or was written by another format version.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # any failure to read it means the file is unusable
        raise CheckpointError(_load_failure(path, error)) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an mflows training checkpoint; {_advice(path)}")
    if state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} was written by another version of mflows (checkpoint format "
            f"{state.get('version')!r}, this version reads {CHECKPOINT_VERSION}); {_advice(path)}"
        )
    return state


def load_model_from_checkpoint(model: torch.nn.Module, path: str | Path, best: bool = False):
    """Loads the last (or, with ``best``, the best so far) weights of a checkpoint into ``model``.

    Falls back to the last weights when the checkpoint holds no best weights (yet).
    """
    state = load_checkpoint(path)
    weights = state["model_state"]
    if best:
        early = state.get("early_stopping") or {}
        weights = early.get("best_state") or weights
    model.load_state_dict(weights)
    return model
