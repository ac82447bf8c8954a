"""Fingerprints that tie a checkpoint to its run: data, model, schedule and options.

Resuming compares the fingerprint stored in the checkpoint with the one of the new call and
refuses (:class:`~mflows.errors.ResumeMismatchError`) when anything differs, naming what: a
checkpoint written for other data, another model or another schedule would otherwise silently
hand back weights that belong to a different run.

The data are fingerprinted by shape, dtype and a SHA-256 of a deterministic sample of rows (up to
:data:`SAMPLE_ROWS`, evenly spaced, as float64 bytes), cheap for any data size.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["SAMPLE_ROWS", "describe_difference", "model_fingerprint", "tensor_fingerprint"]

#: Rows hashed per tensor.
SAMPLE_ROWS = 1000


def tensor_fingerprint(t: Tensor | None) -> dict[str, Any] | None:
    """Shape, dtype and a hash of up to :data:`SAMPLE_ROWS` evenly spaced rows of ``t``."""
    if t is None:
        return None
    n = int(t.shape[0])
    k = min(n, SAMPLE_ROWS)
    idx = torch.linspace(0, max(n - 1, 0), k).round().long() if k else torch.zeros(0).long()
    rows = t.detach()[idx.to(t.device)].to("cpu", torch.float64).contiguous()
    digest = hashlib.sha256(rows.numpy().tobytes()).hexdigest()
    return {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""), "sha256": digest}


def model_fingerprint(model: nn.Module) -> dict[str, Any]:
    """``model.config`` without the initialisation seed, the dtype, and the parameter shapes.

    The seed is left out on purpose: resuming restores the weights, so a model rebuilt with
    another initialisation seed resumes the same run.
    """
    config = copy.deepcopy(getattr(model, "config", None))
    if isinstance(config, dict) and isinstance(config.get("architecture"), dict):
        config["architecture"].pop("seed", None)
        # an option added later, at its default: checkpoints written before it still resume
        if config["architecture"].get("identity_init") is True:
            del config["architecture"]["identity_init"]
    shapes = hashlib.sha256(
        repr([(k, tuple(v.shape)) for k, v in model.state_dict().items()]).encode()
    ).hexdigest()
    dtype = next((str(p.dtype) for p in model.parameters()), None)
    return {"config": _plain(config), "dtype": dtype, "parameter_shapes": shapes}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return repr(value)


def _differences(old: Any, new: Any, prefix: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append(f"{name} (only in {'the checkpoint' if key in old else 'this call'})")
            else:
                out.extend(_differences(old[key], new[key], name))
        return out
    if old == new:
        return []
    if isinstance(old, (dict, list)) or isinstance(new, (dict, list)):
        if len(repr(old)) + len(repr(new)) > 120:
            return [f"{prefix}"]
    return [f"{prefix}: {old!r} in the checkpoint, {new!r} now"]


def describe_difference(old: dict[str, Any], new: dict[str, Any], limit: int = 6) -> list[str]:
    """Human-readable differences between two fingerprints (empty when they match)."""
    out = []
    items = _differences(old, new, "")
    for item in items:
        if ".sha256:" in item:  # hashes say nothing to a reader
            tensor = item.split(".sha256:")[0]
            if any(
                i.startswith(f"{tensor}.shape") or i.startswith(f"{tensor}.dtype") for i in items
            ):
                continue
            item = tensor + " (same shape, different values)"
        elif ".parameter_shapes:" in item:
            item = item.split(":")[0] + " (different parameter shapes)"
        out.append(item)
    if len(out) > limit:
        out = [*out[:limit], f"... {len(out) - limit} more"]
    return out
