"""The per-epoch record of a training run (kept in memory, in checkpoints and as CSV)."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mflows.files import atomic_path

__all__ = ["History"]


@dataclass
class History:
    """Per-epoch record of a training run.

    Attributes:
        records: one dict per epoch with ``epoch`` (1-based, global), ``stage``, ``phases``,
            ``train_loss``, ``val_loss`` (NaN without validation), ``train_<term>`` and
            ``val_<term>`` for each loss term, ``lr`` (first phase) and ``time`` (seconds).
        best_epoch: epoch whose weights were kept by early stopping in the last stage (``None``
            without validation or early stopping). Early stopping minimises ``val_loss``, or
            ``val_monitor`` (the weighted sum of the stage's ``monitor`` losses) where a stage
            sets one.
        wall_time: seconds spent training (summed over resumed sessions).
    """

    records: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    wall_time: float = 0.0

    def __len__(self) -> int:
        return len(self.records)

    def column(self, name: str) -> list[float]:
        """Values of one column over the epochs (NaN where an epoch lacks it)."""
        return [r.get(name, math.nan) for r in self.records]

    @property
    def train_loss(self) -> list[float]:
        """Total training loss per epoch."""
        return self.column("train_loss")

    @property
    def val_loss(self) -> list[float]:
        """Total validation loss per epoch."""
        return self.column("val_loss")

    def to_csv(self, path: str | Path) -> Path:
        """Writes the records as CSV (one row per epoch, the union of the columns), atomically."""
        path = Path(path)
        columns: list[str] = []
        for r in self.records:
            columns.extend(k for k in r if k not in columns)
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(self.records)
        return path

    def state_dict(self) -> dict[str, Any]:
        """Plain-data state (stored in checkpoints)."""
        return {
            "records": [{k: _plain(v) for k, v in r.items()} for r in self.records],
            "best_epoch": self.best_epoch,
            "wall_time": float(self.wall_time),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> History:
        """Inverse of :meth:`state_dict`."""
        return cls([dict(r) for r in state["records"]], state["best_epoch"], state["wall_time"])


def _plain(value: Any) -> Any:
    """Numbers of numpy or torch as Python numbers (checkpoints hold plain types only)."""
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    return value
