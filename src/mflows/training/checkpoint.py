"""Atomic training checkpoints.

A checkpoint is a dict saved with :func:`torch.save`. It is written to a temporary file in the same
directory and moved into place with :func:`os.replace`, so a crash while writing never leaves a
truncated checkpoint: the previous one stays intact.

Contents written by the trainer (``format == "mflows-checkpoint"``): ``model_state``,
``best_state`` (deep copy of the best weights so far), ``optimizers`` and ``schedulers`` (states of
the current stage), ``progress`` (stage, epoch within the stage, global epoch, best validation loss,
best epoch, epochs without improvement, finished flag), ``history`` (per-epoch records),
``rng`` (the torch generator state), ``fingerprint`` (what must match to resume) and, for
convenience, ``model_config``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "load_checkpoint",
    "load_model_from_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "mflows-checkpoint"
CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Writes ``state`` to ``path`` atomically (temporary file + :func:`os.replace`).

    Args:
        state: the checkpoint dict.
        path: destination file; its directory is created if missing.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600 files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Reads a checkpoint written by :func:`save_checkpoint` (a file or a run directory).

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        ValueError: the file is not an mflows training checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an mflows training checkpoint")
    return state


def load_model_from_checkpoint(model: torch.nn.Module, path: str | Path, best: bool = False):
    """Loads the (last or best) weights of a checkpoint into ``model`` and returns it."""
    state = load_checkpoint(path)
    model.load_state_dict(state["best_state" if best else "model_state"])
    return model
